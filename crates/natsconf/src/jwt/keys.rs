//! Typed nkey pairs for the identities this crate signs with or for.
//!
//! Why: an `nkeys::KeyPair` of the wrong kind (a user key signing an account JWT)
//! produces a token nats-server rejects only at connect time. [`NKey`] carries its
//! kind so signers check it up front, and its `Debug` shows the kind and public key,
//! never the seed.

use std::fmt;

use zeroize::Zeroizing;

use super::JwtError;

/// The kinds of nkey this crate works with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// Operator keys (public keys start with `O`, seeds with `SO`).
    Operator,
    /// Account keys (`A...`, `SA...`).
    Account,
    /// User keys (`U...`, `SU...`).
    User,
    /// Server keys (`N...`): nats-server signs auth callout requests with one.
    Server,
}

impl KeyKind {
    pub(crate) fn from_nkeys(kind: &nkeys::KeyPairType) -> Option<Self> {
        match kind {
            nkeys::KeyPairType::Operator => Some(Self::Operator),
            nkeys::KeyPairType::Account => Some(Self::Account),
            nkeys::KeyPairType::User => Some(Self::User),
            nkeys::KeyPairType::Server => Some(Self::Server),
            _ => None,
        }
    }

    fn to_nkeys(self) -> nkeys::KeyPairType {
        match self {
            Self::Operator => nkeys::KeyPairType::Operator,
            Self::Account => nkeys::KeyPairType::Account,
            Self::User => nkeys::KeyPairType::User,
            Self::Server => nkeys::KeyPairType::Server,
        }
    }

    /// `operator`, `account` or `user`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operator => "operator",
            Self::Account => "account",
            Self::User => "user",
            Self::Server => "server",
        }
    }
}

/// An ed25519 nkey pair of a known [`KeyKind`].
#[derive(Clone)]
pub struct NKey {
    kind: KeyKind,
    pair: nkeys::KeyPair,
}

impl NKey {
    /// A fresh random key pair.
    pub fn generate(kind: KeyKind) -> Self {
        Self {
            kind,
            pair: nkeys::KeyPair::new(kind.to_nkeys()),
        }
    }

    /// Restores a key pair from its seed (`SO...`, `SA...` or `SU...`).
    pub fn from_seed(seed: &str) -> Result<Self, JwtError> {
        let pair = nkeys::KeyPair::from_seed(seed.trim())?;
        let kind =
            KeyKind::from_nkeys(&pair.key_pair_type()).ok_or_else(|| JwtError::WrongKeyKind {
                expected: "operator, account or user",
                found: format!("{:?}", pair.key_pair_type()),
            })?;
        Ok(Self { kind, pair })
    }

    /// Restores a key pair from a seed that must be of `kind`.
    pub fn from_seed_of_kind(seed: &str, kind: KeyKind) -> Result<Self, JwtError> {
        let key = Self::from_seed(seed)?;
        key.expect_kind(kind)?;
        Ok(key)
    }

    /// The key's kind.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The public key (safe to show, store and log).
    pub fn public_key(&self) -> String {
        self.pair.public_key()
    }

    /// The private seed, wiped from this copy's memory when dropped. Store it sealed.
    pub fn seed(&self) -> Result<Zeroizing<String>, JwtError> {
        Ok(Zeroizing::new(self.pair.seed()?))
    }

    /// Signs raw bytes (for example a server nonce).
    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>, JwtError> {
        Ok(self.pair.sign(data)?)
    }

    pub(crate) fn expect_kind(&self, kind: KeyKind) -> Result<(), JwtError> {
        if self.kind == kind {
            Ok(())
        } else {
            Err(JwtError::WrongKeyKind {
                expected: kind.as_str(),
                found: self.kind.as_str().to_owned(),
            })
        }
    }
}

impl fmt::Debug for NKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NKey")
            .field("kind", &self.kind)
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_roundtrip_and_kind() {
        for kind in [KeyKind::Operator, KeyKind::Account, KeyKind::User] {
            let key = NKey::generate(kind);
            let seed = key.seed().unwrap();
            let restored = NKey::from_seed(&seed).unwrap();
            assert_eq!(restored.kind(), kind);
            assert_eq!(restored.public_key(), key.public_key());
        }
        let user = NKey::generate(KeyKind::User);
        let seed = user.seed().unwrap();
        assert!(NKey::from_seed_of_kind(&seed, KeyKind::Account).is_err());
        assert!(NKey::from_seed("SUnotaseed").is_err());
    }

    #[test]
    fn debug_never_shows_the_seed() {
        let key = NKey::generate(KeyKind::User);
        let seed = key.seed().unwrap();
        let debug = format!("{key:?}");
        assert!(!debug.contains(seed.as_str()));
        assert!(!debug.contains(&seed[2..10]));
        assert!(debug.contains(&key.public_key()));
    }
}
