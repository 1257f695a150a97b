//! A private key pair that wipes itself.
//!
//! `rcgen::KeyPair` keeps a DER copy of the private key and prints a redacted
//! `Debug`, but does not zeroize on drop. Every key this crate generates or
//! loads goes through [`SecretKeyPair`], so the copy is wiped when it is dropped
//! and all keys are ECDSA P-256 unless loaded from an existing PEM.

use std::fmt;

use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use zeroize::{Zeroize, Zeroizing};

/// An `rcgen` key pair that zeroizes its serialized private key on drop.
pub(crate) struct SecretKeyPair(KeyPair);

impl SecretKeyPair {
    /// Generates a fresh ECDSA P-256 key pair.
    pub(crate) fn generate() -> Result<Self, rcgen::Error> {
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map(Self)
    }

    /// Loads a PKCS#8 (or SEC1) PEM private key.
    pub(crate) fn from_pem(pem: &str) -> Result<Self, rcgen::Error> {
        KeyPair::from_pem(pem).map(Self)
    }

    /// The private key as PKCS#8 PEM.
    pub(crate) fn key_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(self.0.serialize_pem())
    }

    /// The wrapped key pair, for signing.
    pub(crate) fn key_pair(&self) -> &KeyPair {
        &self.0
    }
}

impl Drop for SecretKeyPair {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SecretKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKeyPair(...)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_p256_and_roundtrip_through_pem() {
        let key = SecretKeyPair::generate().expect("generate");
        assert_eq!(key.key_pair().algorithm(), &PKCS_ECDSA_P256_SHA256);
        let pem = key.key_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let again = SecretKeyPair::from_pem(&pem).expect("reload");
        assert_eq!(
            again.key_pair().public_key_raw(),
            key.key_pair().public_key_raw()
        );
    }

    #[test]
    fn debug_is_redacted() {
        let key = SecretKeyPair::generate().expect("generate");
        assert_eq!(format!("{key:?}"), "SecretKeyPair(...)");
    }
}
