//! The authorization policy: the one place that decides who may do what.
//!
//! An [`Actor`] is whoever makes a request: a user signed in with a browser
//! session (all scopes of their role) or an API token (the token's scopes,
//! never more than its creator's role). [`Actor::authorize`] answers for an
//! [`Action`]; HTTP handlers call it and nothing else. Tenant isolation is not
//! decided here but by [`crate::TenantScope`]: an actor can only
//! ever name objects inside its own tenant.
//!
//! | role     | read | write (sites, packages, bundles) | delete sites | users & others' tokens |
//! |----------|------|----------------------------------|--------------|------------------------|
//! | viewer   | yes  | no                               | no           | no                     |
//! | operator | yes  | yes                              | no           | no                     |
//! | admin    | yes  | yes                              | yes          | yes (not owners)       |
//! | owner    | yes  | yes                              | yes          | yes                    |
//!
//! Every user may manage their own API tokens.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::{TenantId, UserId};
use crate::scope::TenantScope;

/// A user's role inside their tenant. Ordered: `Viewer < Operator < Admin < Owner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything in the tenant.
    Viewer,
    /// Viewer, plus creates and changes sites and packages and downloads bundles.
    Operator,
    /// Operator, plus deletes sites and manages users (except owners).
    Admin,
    /// Everything, including managing owners.
    Owner,
}

impl Role {
    /// All roles, lowest first.
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Operator, Role::Admin, Role::Owner];

    /// The lowercase name used in the API and database.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}: expected viewer, operator, admin or owner"))
    }
}

/// What an API token may be used for, on top of its creator's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read-only actions.
    Read,
    /// Creating and changing sites, packages, bundles.
    Write,
    /// User and token administration, deleting sites.
    Admin,
}

impl Scope {
    /// All scopes.
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Write, Scope::Admin];

    /// The lowercase name used in the API and database.
    pub fn as_str(&self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown scope {s:?}: expected read, write or admin"))
    }
}

/// A set of [`Scope`]s (tiny, so a bit set).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ScopeSet(u8);

impl ScopeSet {
    /// Every scope (browser sessions).
    pub const ALL: ScopeSet = ScopeSet(0b111);

    /// A set from a list.
    pub fn from_scopes(scopes: impl IntoIterator<Item = Scope>) -> Self {
        Self(scopes.into_iter().fold(0, |bits, s| bits | Self::bit(s)))
    }

    fn bit(scope: Scope) -> u8 {
        match scope {
            Scope::Read => 1,
            Scope::Write => 2,
            Scope::Admin => 4,
        }
    }

    /// Whether `scope` is in the set.
    pub fn contains(&self, scope: Scope) -> bool {
        self.0 & Self::bit(scope) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// The scopes in the set, in order.
    pub fn to_vec(&self) -> Vec<Scope> {
        Scope::ALL
            .into_iter()
            .filter(|s| self.contains(*s))
            .collect()
    }

    /// Space-separated names, as stored in the database (`"read write"`).
    pub fn to_text(&self) -> String {
        self.to_vec()
            .iter()
            .map(Scope::as_str)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Parses the stored form written by [`ScopeSet::to_text`].
    pub fn parse_text(text: &str) -> Result<Self, String> {
        text.split_whitespace()
            .map(Scope::from_str)
            .collect::<Result<Vec<_>, _>>()
            .map(Self::from_scopes)
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.to_vec()).finish()
    }
}

/// Everything the API lets someone do, for the policy to decide on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// List and read edge sites and their leaf servers.
    ReadSites,
    /// Create and update edge sites, regenerate config.
    WriteSites,
    /// Delete an edge site.
    DeleteSites,
    /// Download a site bundle (contains private keys).
    DownloadBundle,
    /// List and read collector packages.
    ReadPackages,
    /// Create, revoke and download collector packages.
    WritePackages,
    /// List and read users of the tenant.
    ReadUsers,
    /// Create, change and delete users.
    ManageUsers,
    /// Create, list and revoke one's own API tokens.
    ManageOwnTokens,
    /// List and revoke any API token of the tenant.
    ManageAllTokens,
    /// Read ingested data, alerts, health.
    ReadData,
    /// Acknowledge alerts.
    WriteAlerts,
    /// Create, list and delete alert webhooks (they send data out of the platform).
    ManageWebhooks,
    /// List and read the devices registered at edge sites.
    ReadDevices,
    /// Register and revoke devices, and issue their certificates.
    WriteDevices,
}

impl Action {
    /// Every action (for exhaustive tests).
    pub const ALL: [Action; 15] = [
        Action::ReadSites,
        Action::WriteSites,
        Action::DeleteSites,
        Action::DownloadBundle,
        Action::ReadPackages,
        Action::WritePackages,
        Action::ReadUsers,
        Action::ManageUsers,
        Action::ManageOwnTokens,
        Action::ManageAllTokens,
        Action::ReadData,
        Action::WriteAlerts,
        Action::ManageWebhooks,
        Action::ReadDevices,
        Action::WriteDevices,
    ];

    /// The lowest role allowed to do this.
    pub fn minimum_role(&self) -> Role {
        match self {
            Action::ReadSites
            | Action::ReadPackages
            | Action::ReadData
            | Action::ReadDevices
            | Action::ManageOwnTokens => Role::Viewer,
            Action::WriteSites
            | Action::DownloadBundle
            | Action::WritePackages
            | Action::WriteDevices
            | Action::WriteAlerts => Role::Operator,
            Action::DeleteSites
            | Action::ReadUsers
            | Action::ManageUsers
            | Action::ManageAllTokens
            | Action::ManageWebhooks => Role::Admin,
        }
    }

    /// The token scope this action needs.
    pub fn required_scope(&self) -> Scope {
        match self {
            Action::ReadSites | Action::ReadPackages | Action::ReadData | Action::ReadDevices => {
                Scope::Read
            }
            Action::WriteSites
            | Action::DownloadBundle
            | Action::WritePackages
            | Action::WriteDevices
            | Action::WriteAlerts => Scope::Write,
            Action::DeleteSites
            | Action::ReadUsers
            | Action::ManageUsers
            | Action::ManageAllTokens
            | Action::ManageOwnTokens
            | Action::ManageWebhooks => Scope::Admin,
        }
    }
}

/// Why the policy said no. Maps to HTTP 403.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The actor's role is too low.
    #[error("your role ({have}) does not allow this; it needs {need} or higher")]
    Role {
        /// The actor's role.
        have: Role,
        /// The minimum role.
        need: Role,
    },
    /// The token lacks a scope.
    #[error("this API token lacks the {0:?} scope")]
    Scope(Scope),
    /// A role may not grant a role above its own, and only owners manage owners.
    #[error("you cannot grant or manage the {0} role")]
    RoleAssignment(Role),
}

/// Who is making a request, after authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The tenant the actor belongs to.
    pub tenant_id: TenantId,
    /// The user (a token acts for the user who created it).
    pub user_id: UserId,
    /// The user's role.
    pub role: Role,
    /// Scopes in force: all for sessions, the token's for API tokens.
    pub scopes: ScopeSet,
}

impl Actor {
    /// The scope for queries made on this actor's behalf.
    pub fn scope(&self) -> TenantScope {
        TenantScope::for_actor(self.tenant_id)
    }

    /// Decides whether this actor may perform `action`.
    pub fn authorize(&self, action: Action) -> Result<(), Denied> {
        let need = action.minimum_role();
        if self.role < need {
            return Err(Denied::Role {
                have: self.role,
                need,
            });
        }
        let scope = action.required_scope();
        // Managing one's own tokens with a session is always allowed; with a
        // token it needs the admin scope, so a leaked read token cannot mint
        // itself a write token.
        if !self.scopes.contains(scope) {
            return Err(Denied::Scope(scope));
        }
        Ok(())
    }

    /// Whether this actor may give `role` to someone, or change/delete a user
    /// who has `role`. Admins manage everyone but owners; owners manage all.
    pub fn authorize_role_management(&self, role: Role) -> Result<(), Denied> {
        self.authorize(Action::ManageUsers)?;
        if role > self.role || (role == Role::Owner && self.role != Role::Owner) {
            return Err(Denied::RoleAssignment(role));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(role: Role, scopes: ScopeSet) -> Actor {
        Actor {
            tenant_id: TenantId::new(),
            user_id: UserId::new(),
            role,
            scopes,
        }
    }

    /// The expected answer for every role x action with a full-scope session,
    /// written out as a table so a change to the policy shows up here.
    #[test]
    fn every_role_and_action_with_a_session() {
        use Action::*;
        let table: &[(Action, [bool; 4])] = &[
            //               viewer operator admin owner
            (ReadSites, [true, true, true, true]),
            (WriteSites, [false, true, true, true]),
            (DeleteSites, [false, false, true, true]),
            (DownloadBundle, [false, true, true, true]),
            (ReadPackages, [true, true, true, true]),
            (WritePackages, [false, true, true, true]),
            (ReadUsers, [false, false, true, true]),
            (ManageUsers, [false, false, true, true]),
            (ManageOwnTokens, [true, true, true, true]),
            (ManageAllTokens, [false, false, true, true]),
            (ReadData, [true, true, true, true]),
            (WriteAlerts, [false, true, true, true]),
            (ManageWebhooks, [false, false, true, true]),
            (ReadDevices, [true, true, true, true]),
            (WriteDevices, [false, true, true, true]),
        ];
        assert_eq!(
            table.len(),
            Action::ALL.len(),
            "every action is in the table"
        );
        for (action, expected) in table {
            for (role, allowed) in Role::ALL.into_iter().zip(expected) {
                let got = actor(role, ScopeSet::ALL).authorize(*action).is_ok();
                assert_eq!(got, *allowed, "{role} {action:?}");
            }
        }
    }

    /// The expected answer for every role x token scope set x action, written
    /// out by hand (not computed with the policy's own formula). Each row is
    /// one action; its four strings are the roles viewer, operator, admin,
    /// owner; each string's four characters are the scope sets {}, {read},
    /// {read, write}, {read, write, admin}: `Y` allowed, `-` denied.
    #[test]
    fn token_scopes_restrict_every_action() {
        let table: [(Action, [&str; 4]); 15] = [
            (Action::ReadSites, ["-YYY", "-YYY", "-YYY", "-YYY"]),
            (Action::WriteSites, ["----", "--YY", "--YY", "--YY"]),
            (Action::DeleteSites, ["----", "----", "---Y", "---Y"]),
            (Action::DownloadBundle, ["----", "--YY", "--YY", "--YY"]),
            (Action::ReadPackages, ["-YYY", "-YYY", "-YYY", "-YYY"]),
            (Action::WritePackages, ["----", "--YY", "--YY", "--YY"]),
            (Action::ReadUsers, ["----", "----", "---Y", "---Y"]),
            (Action::ManageUsers, ["----", "----", "---Y", "---Y"]),
            (Action::ManageOwnTokens, ["---Y", "---Y", "---Y", "---Y"]),
            (Action::ManageAllTokens, ["----", "----", "---Y", "---Y"]),
            (Action::ReadData, ["-YYY", "-YYY", "-YYY", "-YYY"]),
            (Action::WriteAlerts, ["----", "--YY", "--YY", "--YY"]),
            (Action::ManageWebhooks, ["----", "----", "---Y", "---Y"]),
            (Action::ReadDevices, ["-YYY", "-YYY", "-YYY", "-YYY"]),
            (Action::WriteDevices, ["----", "--YY", "--YY", "--YY"]),
        ];
        let sets = [
            ScopeSet::default(),
            ScopeSet::from_scopes([Scope::Read]),
            ScopeSet::from_scopes([Scope::Read, Scope::Write]),
            ScopeSet::ALL,
        ];
        assert_eq!(table.len(), Action::ALL.len(), "every action has a row");
        for (action, by_role) in table {
            for (role, row) in Role::ALL.into_iter().zip(by_role) {
                for (scopes, cell) in sets.into_iter().zip(row.chars()) {
                    let allowed = actor(role, scopes).authorize(action).is_ok();
                    assert_eq!(allowed, cell == 'Y', "{role} {action:?} {scopes:?}");
                }
            }
        }
    }

    #[test]
    fn a_read_token_cannot_write_even_for_an_owner() {
        let token = actor(Role::Owner, ScopeSet::from_scopes([Scope::Read]));
        assert!(token.authorize(Action::ReadSites).is_ok());
        assert_eq!(
            token.authorize(Action::WriteSites),
            Err(Denied::Scope(Scope::Write))
        );
    }

    #[test]
    fn role_management_never_escalates() {
        for manager in Role::ALL {
            for target in Role::ALL {
                let ok = actor(manager, ScopeSet::ALL)
                    .authorize_role_management(target)
                    .is_ok();
                let expected = manager >= Role::Admin
                    && target <= manager
                    && (target != Role::Owner || manager == Role::Owner);
                assert_eq!(ok, expected, "{manager} managing {target}");
            }
        }
    }

    #[test]
    fn names_roundtrip() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        let set = ScopeSet::from_scopes([Scope::Admin, Scope::Read]);
        assert_eq!(set.to_text(), "read admin");
        assert_eq!(ScopeSet::parse_text("read admin").unwrap(), set);
        assert!(ScopeSet::parse_text("read root").is_err());
    }
}
