//! `.creds` files: a user JWT and the user's seed in the layout every NATS client
//! and nats-server (`leafnodes.remotes[].credentials`) reads.
//!
//! Why: the leaf authenticates to the hub with such a file, shipped in the site
//! bundle. It contains the seed, so it is built in a zeroizing buffer and checked
//! for consistency (the seed must be the key the JWT was issued to) before it is
//! handed out: a mismatched creds file fails only later, at the edge, far from here.

use std::fmt;
use std::ops::Deref;

use zeroize::Zeroizing;

use super::{JwtError, KeyKind, NKey, claim_type, decode_claims};

/// The text of a `.creds` file. It contains a seed: `Debug` does not show it, and
/// the memory is wiped on drop. Write it out with [`CredsFile::as_str`].
pub struct CredsFile(Zeroizing<String>);

impl CredsFile {
    /// The file's text (JWT and seed).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for CredsFile {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CredsFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CredsFile(<redacted>)")
    }
}

/// Builds a `.creds` file from a user JWT and that user's seed (`SU...`).
///
/// Fails if the JWT does not decode as a user JWT or the seed's public key is not
/// the JWT's subject. The result holds the seed: it is wiped from memory on drop.
pub fn creds_file(user_jwt: &str, user_seed: &str) -> Result<CredsFile, JwtError> {
    let claims = decode_claims(user_jwt)?;
    if claim_type(&claims) != Some("user") {
        return Err(JwtError::InvalidClaim {
            field: "type",
            reason: "a creds file needs a user JWT".into(),
        });
    }
    let key = NKey::from_seed_of_kind(user_seed, KeyKind::User)?;
    if claims.get("sub").and_then(|v| v.as_str()) != Some(key.public_key().as_str()) {
        return Err(JwtError::InvalidClaim {
            field: "sub",
            reason: "the seed does not belong to the JWT's user".into(),
        });
    }
    let seed = user_seed.trim();
    let mut out = Zeroizing::new(String::with_capacity(user_jwt.len() + seed.len() + 400));
    out.push_str("-----BEGIN NATS USER JWT-----\n");
    out.push_str(user_jwt);
    out.push_str("\n------END NATS USER JWT------\n\n");
    out.push_str("************************* IMPORTANT *************************\n");
    out.push_str("NKEY Seed printed below can be used to sign and prove identity.\n");
    out.push_str("NKEYs are sensitive and should be treated as secrets.\n\n");
    out.push_str("-----BEGIN USER NKEY SEED-----\n");
    out.push_str(seed);
    out.push_str("\n------END USER NKEY SEED------\n\n");
    out.push_str("*************************************************************\n");
    Ok(CredsFile(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::UserClaims;

    #[test]
    fn creds_layout() {
        let acct = NKey::generate(KeyKind::Account);
        let user = NKey::generate(KeyKind::User);
        let jwt = UserClaims::new(&user.public_key(), "leaf")
            .sign(&acct)
            .unwrap();
        let seed = user.seed().unwrap();
        let creds = creds_file(&jwt, &seed).unwrap();
        let lines: Vec<&str> = creds.lines().collect();
        assert_eq!(lines[0], "-----BEGIN NATS USER JWT-----");
        assert_eq!(lines[1], jwt);
        assert_eq!(lines[2], "------END NATS USER JWT------");
        let seed_at = lines
            .iter()
            .position(|l| *l == "-----BEGIN USER NKEY SEED-----")
            .unwrap();
        assert_eq!(lines[seed_at + 1], seed.as_str());
        assert_eq!(lines[seed_at + 2], "------END USER NKEY SEED------");
        assert!(!format!("{creds:?}").contains(seed.as_str()));
    }

    #[test]
    fn mismatched_seed_is_rejected() {
        let acct = NKey::generate(KeyKind::Account);
        let user = NKey::generate(KeyKind::User);
        let other = NKey::generate(KeyKind::User);
        let jwt = UserClaims::new(&user.public_key(), "leaf")
            .sign(&acct)
            .unwrap();
        assert!(creds_file(&jwt, &other.seed().unwrap()).is_err());
        assert!(creds_file(&jwt, &acct.seed().unwrap()).is_err());
        assert!(creds_file("garbage", &user.seed().unwrap()).is_err());
    }
}
