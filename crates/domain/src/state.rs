//! State machines of the managed resources (seeds 001 and 003).
//!
//! Each status type has `apply(event)`, which returns the next status or an
//! [`IllegalTransition`]. Stores persist a status only after `apply` accepted
//! the move, so the database never holds a state the rules do not allow.
//!
//! ```text
//! EdgeSite        pending --agent seen--> active --timeout--> offline --agent seen--> active
//! NatsLeafServer  pending --provisioned--> provisioned --connected--> connected <--> disconnected
//! Package         created --> downloaded --> installed;  any live state --> revoked;
//!                 created | downloaded --> expired
//! Alert           open --> acknowledged --> resolved;  open --> resolved
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A transition the state machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {event} a {machine} that is {from}")]
pub struct IllegalTransition {
    /// Which machine ("edge site", "leaf server", ...).
    pub machine: &'static str,
    /// The current state.
    pub from: &'static str,
    /// The rejected event.
    pub event: &'static str,
}

macro_rules! status_enum {
    ($(#[$doc:meta])* $name:ident, $machine:literal { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every state.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The lowercase name used in the API and database.
            pub fn as_str(&self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            fn illegal(&self, event: &'static str) -> IllegalTransition {
                IllegalTransition { machine: $machine, from: self.as_str(), event }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| format!("unknown {} status {s:?}", $machine))
            }
        }
    };
}

status_enum!(
    /// Status of an edge site.
    SiteStatus, "edge site" {
        /// Registered, no agent has reported yet.
        Pending => "pending",
        /// An agent reported recently.
        Active => "active",
        /// No agent contact within the timeout.
        Offline => "offline",
    }
);

/// Events that move an [`SiteStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteEvent {
    /// An agent of the site contacted the gateway.
    AgentSeen,
    /// No agent contact within the configured timeout.
    ContactTimedOut,
}

impl SiteStatus {
    /// The status after `event`.
    pub fn apply(self, event: SiteEvent) -> Result<Self, IllegalTransition> {
        use SiteStatus::*;
        match (self, event) {
            (Pending | Active | Offline, SiteEvent::AgentSeen) => Ok(Active),
            (Active, SiteEvent::ContactTimedOut) => Ok(Offline),
            (Pending | Offline, SiteEvent::ContactTimedOut) => Err(self.illegal("time out")),
        }
    }
}

status_enum!(
    /// Status of a site's NATS leaf server.
    LeafStatus, "leaf server" {
        /// Created with the site; certificates and config not yet issued.
        Pending => "pending",
        /// Certificates, credentials and config exist; the leaf has not connected yet.
        Provisioned => "provisioned",
        /// The leaf is connected to the hub.
        Connected => "connected",
        /// The leaf was connected and lost the link.
        Disconnected => "disconnected",
    }
);

/// Events that move a [`LeafStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafEvent {
    /// The provisioning job stored certificates and config.
    Provisioned,
    /// The leaf's link to the hub is up.
    LinkUp,
    /// The leaf's link to the hub is down.
    LinkDown,
}

impl LeafStatus {
    /// The status after `event`.
    pub fn apply(self, event: LeafEvent) -> Result<Self, IllegalTransition> {
        use LeafStatus::*;
        match (self, event) {
            (Pending, LeafEvent::Provisioned) => Ok(Provisioned),
            // Re-provisioning (renewal, regenerate config) keeps a live leaf's status.
            (Provisioned | Connected | Disconnected, LeafEvent::Provisioned) => Ok(self),
            (Provisioned | Connected | Disconnected, LeafEvent::LinkUp) => Ok(Connected),
            (Connected | Disconnected, LeafEvent::LinkDown) => Ok(Disconnected),
            (Pending, LeafEvent::LinkUp) => Err(self.illegal("connect")),
            (Pending | Provisioned, LeafEvent::LinkDown) => Err(self.illegal("disconnect")),
        }
    }
}

status_enum!(
    /// Status of a collector (or onboarding) package.
    PackageStatus, "package" {
        /// Created, not yet downloaded.
        Created => "created",
        /// The bundle was downloaded.
        Downloaded => "downloaded",
        /// The collector reported in from the edge.
        Installed => "installed",
        /// Its download window passed before installation.
        Expired => "expired",
        /// Revoked by an operator; its credentials no longer work.
        Revoked => "revoked",
    }
);

/// Events that move a [`PackageStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageEvent {
    /// The bundle was downloaded.
    Download,
    /// The collector was installed and reported in.
    Install,
    /// The download window passed.
    Expire,
    /// An operator revoked the package.
    Revoke,
}

impl PackageStatus {
    /// The status after `event`.
    pub fn apply(self, event: PackageEvent) -> Result<Self, IllegalTransition> {
        use PackageEvent::*;
        use PackageStatus::*;
        match (self, event) {
            (Created | Downloaded, Download) => Ok(Downloaded),
            (Downloaded | Installed, Install) => Ok(Installed),
            (Created | Downloaded, Expire) => Ok(Expired),
            (Created | Downloaded | Installed, Revoke) => Ok(Revoked),
            (_, Download) => Err(self.illegal("download")),
            (_, Install) => Err(self.illegal("install")),
            (_, Expire) => Err(self.illegal("expire")),
            (_, Revoke) => Err(self.illegal("revoke")),
        }
    }
}

status_enum!(
    /// Status of an alert.
    AlertStatus, "alert" {
        /// Raised and nobody has acknowledged it yet (the condition holds).
        Open => "open",
        /// A person acknowledged it.
        Acknowledged => "acknowledged",
        /// The condition cleared (automatically or by hand).
        Resolved => "resolved",
    }
);

/// Events that move an [`AlertStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertEvent {
    /// A person acknowledged the alert.
    Acknowledge,
    /// The condition cleared.
    Resolve,
}

impl AlertStatus {
    /// The status after `event`.
    pub fn apply(self, event: AlertEvent) -> Result<Self, IllegalTransition> {
        use AlertStatus::*;
        match (self, event) {
            (Open, AlertEvent::Acknowledge) => Ok(Acknowledged),
            (Open | Acknowledged, AlertEvent::Resolve) => Ok(Resolved),
            (Acknowledged | Resolved, AlertEvent::Acknowledge) => Err(self.illegal("acknowledge")),
            (Resolved, AlertEvent::Resolve) => Err(self.illegal("resolve")),
        }
    }
}

status_enum!(
    /// Status of a device registered at an edge site (issue 16).
    DeviceStatus, "device" {
        /// May get certificates and connect.
        Active => "active",
        /// Revoked by an operator: no certificate, no renewal, no connection.
        Revoked => "revoked",
    }
);

/// Events that move a [`DeviceStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceEvent {
    /// An operator revoked the device.
    Revoke,
}

impl DeviceStatus {
    /// The status after `event`.
    pub fn apply(self, event: DeviceEvent) -> Result<Self, IllegalTransition> {
        match (self, event) {
            (DeviceStatus::Active, DeviceEvent::Revoke) => Ok(DeviceStatus::Revoked),
            (DeviceStatus::Revoked, DeviceEvent::Revoke) => Err(self.illegal("revoke")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_transitions() {
        assert_eq!(
            DeviceStatus::Active.apply(DeviceEvent::Revoke),
            Ok(DeviceStatus::Revoked)
        );
        assert!(DeviceStatus::Revoked.apply(DeviceEvent::Revoke).is_err());
    }

    #[test]
    fn edge_site_transitions() {
        use SiteEvent::*;
        use SiteStatus::*;
        let cases = [
            (Pending, AgentSeen, Some(Active)),
            (Pending, ContactTimedOut, None),
            (Active, AgentSeen, Some(Active)),
            (Active, ContactTimedOut, Some(Offline)),
            (Offline, AgentSeen, Some(Active)),
            (Offline, ContactTimedOut, None),
        ];
        for (from, event, to) in cases {
            assert_eq!(from.apply(event).ok(), to, "{from} {event:?}");
        }
    }

    #[test]
    fn leaf_server_transitions() {
        use LeafEvent::{LinkDown, LinkUp, Provisioned as Provision};
        use LeafStatus::*;
        let cases = [
            (Pending, Provision, Some(Provisioned)),
            (Pending, LinkUp, None),
            (Pending, LinkDown, None),
            (Provisioned, Provision, Some(Provisioned)),
            (Provisioned, LinkUp, Some(Connected)),
            (Provisioned, LinkDown, None),
            (Connected, Provision, Some(Connected)),
            (Connected, LinkUp, Some(Connected)),
            (Connected, LinkDown, Some(Disconnected)),
            (Disconnected, Provision, Some(Disconnected)),
            (Disconnected, LinkUp, Some(Connected)),
            (Disconnected, LinkDown, Some(Disconnected)),
        ];
        for (from, event, to) in cases {
            assert_eq!(from.apply(event).ok(), to, "{from} {event:?}");
        }
    }

    #[test]
    fn package_transitions() {
        use PackageEvent::*;
        use PackageStatus::*;
        let expected = |from, event| -> Option<PackageStatus> {
            match (from, event) {
                (Created | Downloaded, Download) => Some(Downloaded),
                (Downloaded | Installed, Install) => Some(Installed),
                (Created | Downloaded, Expire) => Some(Expired),
                (Created | Downloaded | Installed, Revoke) => Some(Revoked),
                _ => None,
            }
        };
        for &from in PackageStatus::ALL {
            for event in [Download, Install, Expire, Revoke] {
                assert_eq!(
                    from.apply(event).ok(),
                    expected(from, event),
                    "{from} {event:?}"
                );
            }
        }
        // Terminal states stay terminal.
        for terminal in [Expired, Revoked] {
            for event in [Download, Install, Expire, Revoke] {
                assert!(terminal.apply(event).is_err());
            }
        }
        // Created cannot jump straight to installed.
        assert!(Created.apply(Install).is_err());
    }

    #[test]
    fn alert_transitions() {
        use AlertEvent::*;
        use AlertStatus::*;
        assert_eq!(Open.apply(Acknowledge), Ok(Acknowledged));
        assert_eq!(Open.apply(Resolve), Ok(Resolved));
        assert_eq!(Acknowledged.apply(Resolve), Ok(Resolved));
        assert!(Acknowledged.apply(Acknowledge).is_err());
        assert!(Resolved.apply(Acknowledge).is_err());
        assert!(Resolved.apply(Resolve).is_err());
    }

    #[test]
    fn illegal_transitions_explain_themselves() {
        let err = PackageStatus::Revoked
            .apply(PackageEvent::Download)
            .unwrap_err();
        assert_eq!(err.to_string(), "cannot download a package that is revoked");
    }

    #[test]
    fn status_names_roundtrip() {
        for s in SiteStatus::ALL {
            assert_eq!(s.as_str().parse::<SiteStatus>().unwrap(), *s);
        }
        for s in LeafStatus::ALL {
            assert_eq!(s.as_str().parse::<LeafStatus>().unwrap(), *s);
        }
        for s in PackageStatus::ALL {
            assert_eq!(s.as_str().parse::<PackageStatus>().unwrap(), *s);
        }
        for s in AlertStatus::ALL {
            assert_eq!(s.as_str().parse::<AlertStatus>().unwrap(), *s);
        }
    }
}
