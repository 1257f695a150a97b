//! Presentation helpers shared by the pages: the page chrome (tenant, role,
//! CSRF token, which controls the role may use), times as "3 min ago" with
//! the exact UTC time, and status badges that carry a word as well as a
//! colour.

use serviceradar_domain::Actor;
use serviceradar_domain::policy::Action;
use time::OffsetDateTime;
use time::macros::format_description;

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

/// A point in time as a page shows it.
pub struct When {
    /// "3 min ago", "in 20 days".
    pub relative: String,
    /// "2026-11-28 22:41:08 UTC" (the hover text).
    pub exact: String,
    /// RFC 3339, for `<time datetime>` and the script's refresh.
    pub iso: String,
}

impl When {
    /// `ms` (Unix milliseconds) relative to `now_ms`.
    pub fn at(ms: i64, now_ms: i64) -> Self {
        let instant = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let exact = instant
            .format(format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
            ))
            .unwrap_or_default();
        let iso = instant
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        Self {
            relative: relative(ms, now_ms),
            exact,
            iso,
        }
    }

    /// An optional time, `None` when absent.
    pub fn maybe(ms: Option<i64>, now_ms: i64) -> Option<Self> {
        ms.map(|ms| Self::at(ms, now_ms))
    }
}

/// "just now", "3 min ago", "2 h ago", "5 days ago"; "in 20 days" ahead.
pub fn relative(ms: i64, now_ms: i64) -> String {
    let delta = (now_ms - ms) / 1000;
    let (secs, future) = if delta < 0 {
        (-delta, true)
    } else {
        (delta, false)
    };
    let amount = if secs < 45 {
        return if future { "in a moment" } else { "just now" }.to_string();
    } else if secs < 3600 {
        format!("{} min", (secs + 30) / 60)
    } else if secs < 86_400 {
        format!("{} h", (secs + 1800) / 3600)
    } else {
        let days = (secs + 43_200) / 86_400;
        format!("{days} day{}", if days == 1 { "" } else { "s" })
    };
    if future {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
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
            "active" | "connected" | "resolved" | "installed" | "ok" => "good",
            "provisioned" | "acknowledged" | "downloaded" | "created" => "warn",
            "offline" | "disconnected" | "revoked" | "expired" | "fail" | "open" => "bad",
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
        assert_eq!(When::at(0, 0).exact, "1970-01-01 00:00:00 UTC");
        assert_eq!(When::at(0, 0).iso, "1970-01-01T00:00:00Z");
    }
}
