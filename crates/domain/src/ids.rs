//! Typed identifiers. Every resource id is a UUID (v7, so ids sort by creation
//! time) wrapped in its own type: the compiler refuses a `SiteId` where a
//! `TenantId` is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new, time-ordered (UUID v7) id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// The underlying UUID.
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }
    };
}

id_type!(
    /// Identifies a tenant (a customer organisation).
    TenantId
);
id_type!(
    /// Identifies a user account.
    UserId
);
id_type!(
    /// Identifies an edge site.
    EdgeSiteId
);
id_type!(
    /// Identifies the NATS leaf server of an edge site.
    LeafServerId
);
id_type!(
    /// Identifies a collector package.
    PackageId
);
id_type!(
    /// Identifies an API token (the public half of the token string).
    ApiTokenId
);
id_type!(
    /// Identifies a durable background job.
    JobId
);
id_type!(
    /// Identifies a browser session.
    SessionId
);
id_type!(
    /// Identifies a device registered at an edge site (its certificate's
    /// SPIFFE id and common name carry it).
    DeviceId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_roundtrip_through_text_and_json() {
        let id = EdgeSiteId::new();
        assert_eq!(id.to_string().parse::<EdgeSiteId>().unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<EdgeSiteId>(&json).unwrap(), id);
    }

    #[test]
    fn new_ids_sort_by_creation() {
        let a = TenantId::new();
        let b = TenantId::new();
        assert!(a < b);
    }
}
