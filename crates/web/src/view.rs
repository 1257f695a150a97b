//! Presentation helpers shared by the pages: the page chrome (tenant, role,
//! CSRF token, which controls the role may use), times as "3 min ago" with
//! the exact UTC time, and status badges that carry a word as well as a
//! colour.

use serviceradar_domain::Actor;
use serviceradar_domain::policy::Action;
use std::fmt;

use time::OffsetDateTime;

use crate::session::Viewer;

/// What every signed-in page shows around its content.
pub struct Chrome {
    /// The role's name.
    pub role: String,
    /// The session's CSRF token (hidden form fields, `meta` for scripts).
    pub csrf: String,
    /// Which section of the navigation is current.
    pub section: &'static str,
    /// Which controls to render.
    pub can: Can,
}

/// The controls a role may use (the use-cases check again).
#[derive(Debug, Clone, Copy)]
pub struct Can {
    /// Create sites, edit them, regenerate configs.
    pub write_sites: bool,
    /// Delete sites.
    pub delete_sites: bool,
    /// Download site bundles.
    pub download: bool,
    /// Create, revoke and download collector packages.
    pub write_packages: bool,
    /// Acknowledge and resolve alerts.
    pub write_alerts: bool,
    /// Manage users.
    pub manage_users: bool,
    /// Manage webhooks.
    pub manage_webhooks: bool,
}

impl Can {
    /// What `actor` may do, by the one policy.
    pub fn of(actor: &Actor) -> Self {
        let may = |action| actor.authorize(action).is_ok();
        Self {
            write_sites: may(Action::WriteSites),
            delete_sites: may(Action::DeleteSites),
            download: may(Action::DownloadBundle),
            write_packages: may(Action::WritePackages),
            write_alerts: may(Action::WriteAlerts),
            manage_users: may(Action::ManageUsers),
            manage_webhooks: may(Action::ManageWebhooks),
        }
    }
}

impl Chrome {
    /// The chrome for `viewer` in `section`.
    pub fn new(viewer: &Viewer, section: &'static str) -> Self {
        Self {
            role: viewer.auth.actor.role.to_string(),
            csrf: viewer.csrf.expose().to_string(),
            section,
            can: Can::of(&viewer.auth.actor),
        }
    }
}

/// A point in time as a page shows it: formatted straight into the page
/// when rendered (a list page shows two per row, so no intermediate strings).
#[derive(Debug, Clone, Copy)]
pub struct When {
    ms: i64,
    now_ms: i64,
}

impl When {
    /// `ms` (Unix milliseconds) relative to `now_ms`.
    pub fn at(ms: i64, now_ms: i64) -> Self {
        Self { ms, now_ms }
    }

    /// An optional time, `None` when absent.
    pub fn maybe(ms: Option<i64>, now_ms: i64) -> Option<Self> {
        ms.map(|ms| Self::at(ms, now_ms))
    }

    /// "3 min ago", "in 20 days".
    pub fn relative(&self) -> Relative {
        Relative::between(self.ms, self.now_ms)
    }

    /// "2026-11-28 22:41:08 UTC" (the hover text).
    pub fn exact(&self) -> Stamp {
        Stamp {
            ms: self.ms,
            iso: false,
        }
    }

    /// RFC 3339, for `<time datetime>` and the script's refresh.
    pub fn iso(&self) -> Stamp {
        Stamp {
            ms: self.ms,
            iso: true,
        }
    }
}

/// A UTC time to the second, as RFC 3339 (`2026-11-28T22:41:08Z`) or as
/// people read it (`2026-11-28 22:41:08 UTC`).
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    ms: i64,
    iso: bool,
}

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let instant = OffsetDateTime::from_unix_timestamp(self.ms.div_euclid(1000))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let (year, month, day) = instant.to_calendar_date();
        let (hour, minute, second) = instant.to_hms();
        let Ok(year) = u16::try_from(year) else {
            return write!(f, "{instant}");
        };
        if year > 9999 {
            return write!(f, "{instant}");
        }
        // "YYYY-MM-DDTHH:MM:SSZ" filled in place: this runs twice per row.
        let mut out = *b"0000-00-00T00:00:00Z";
        let two = |out: &mut [u8; 20], at: usize, n: u8| {
            out[at] = b'0' + n / 10;
            out[at + 1] = b'0' + n % 10;
        };
        two(&mut out, 0, (year / 100) as u8);
        two(&mut out, 2, (year % 100) as u8);
        two(&mut out, 5, u8::from(month));
        two(&mut out, 8, day);
        two(&mut out, 11, hour);
        two(&mut out, 14, minute);
        two(&mut out, 17, second);
        let text = std::str::from_utf8(&out).map_err(|_| fmt::Error)?;
        if self.iso {
            f.write_str(text)
        } else {
            f.write_str(&text[..10])?;
            f.write_str(" ")?;
            f.write_str(&text[11..19])?;
            f.write_str(" UTC")
        }
    }
}

/// How long ago (or ahead) a time is, in words: "just now", "3 min ago",
/// "2 h ago", "5 days ago"; "in 20 days" ahead.
#[derive(Debug, Clone, Copy)]
pub struct Relative {
    secs: i64,
    future: bool,
}

impl Relative {
    fn between(ms: i64, now_ms: i64) -> Self {
        let delta = (now_ms - ms) / 1000;
        Self {
            secs: delta.abs(),
            future: delta < 0,
        }
    }
}

impl fmt::Display for Relative {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.secs;
        if secs < 45 {
            return f.write_str(if self.future {
                "in a moment"
            } else {
                "just now"
            });
        }
        if self.future {
            f.write_str("in ")?;
        }
        if secs < 3600 {
            write!(f, "{} min", (secs + 30) / 60)?;
        } else if secs < 86_400 {
            write!(f, "{} h", (secs + 1800) / 3600)?;
        } else {
            let days = (secs + 43_200) / 86_400;
            write!(f, "{days} day{}", if days == 1 { "" } else { "s" })?;
        }
        if self.future {
            Ok(())
        } else {
            f.write_str(" ago")
        }
    }
}

/// [`Relative`] as a string.
pub fn relative(ms: i64, now_ms: i64) -> String {
    Relative::between(ms, now_ms).to_string()
}

/// A status badge: the word, and a CSS class for its colour.
pub struct Badge {
    /// The status word.
    pub word: String,
    /// `good`, `warn`, `bad` or `idle`.
    pub tone: &'static str,
}

impl Badge {
    /// The badge of a status word (site, leaf, alert or package status).
    pub fn of(word: &str) -> Self {
        let tone = match word {
            "active" | "connected" | "resolved" | "installed" | "ok" | "succeeded"
            | "reachable" => "good",
            "provisioned" | "acknowledged" | "downloaded" | "created" => "warn",
            "offline" | "disconnected" | "revoked" | "expired" | "fail" | "failed" | "open"
            | "unreachable" => "bad",
            _ => "idle",
        };
        Self {
            word: word.to_string(),
            tone,
        }
    }
}

impl Badge {
    /// An alert's badge: unresolved and unacknowledged alerts are `bad`
    /// whatever the first state is called.
    pub fn alert(status: serviceradar_domain::state::AlertStatus) -> Self {
        use serviceradar_domain::state::AlertStatus;
        let tone = if status == AlertStatus::Resolved {
            "good"
        } else if status == AlertStatus::Acknowledged {
            "warn"
        } else {
            "bad"
        };
        Self {
            word: status.to_string(),
            tone,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_naturally() {
        let now = 10_000_000_000;
        assert_eq!(relative(now - 5_000, now), "just now");
        assert_eq!(relative(now - 180_000, now), "3 min ago");
        assert_eq!(relative(now - 2 * 3_600_000, now), "2 h ago");
        assert_eq!(relative(now - 86_400_000, now), "1 day ago");
        assert_eq!(relative(now + 20 * 86_400_000, now), "in 20 days");
    }

    #[test]
    fn exact_time_is_utc() {
        assert_eq!(
            When::at(0, 0).exact().to_string(),
            "1970-01-01 00:00:00 UTC"
        );
        assert_eq!(When::at(0, 0).iso().to_string(), "1970-01-01T00:00:00Z");
        // 2026-11-28 22:41:08.999 UTC: seconds are truncated, not rounded.
        let ms = 1_795_905_668_999;
        assert_eq!(When::at(ms, 0).iso().to_string(), "2026-11-28T22:41:08Z");
        assert_eq!(
            When::at(ms, 0).exact().to_string(),
            "2026-11-28 22:41:08 UTC"
        );
        // Before 1970: the second it falls in.
        assert_eq!(When::at(-1, 0).iso().to_string(), "1969-12-31T23:59:59Z");
    }
}
