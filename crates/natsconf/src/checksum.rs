//! Checksums of rendered configs.
//!
//! Why: the control plane stores the checksum of every config it renders; the edge
//! reports the checksum of the file it runs with, and a mismatch is drift (a hand
//! edit, a stale bundle). The format names its algorithm so it can change later.

use sha2::{Digest, Sha256};

/// `sha256:<64 lowercase hex digits>` of the exact bytes of `text`.
pub fn config_checksum(text: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())))
}

/// Whether `checksum` (as produced by [`config_checksum`]) matches `text`.
/// Comparison is case-insensitive in the hex digits.
pub fn checksum_matches(text: &str, checksum: &str) -> bool {
    config_checksum(text).eq_ignore_ascii_case(checksum.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        assert_eq!(
            config_checksum(""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            config_checksum("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn any_change_is_drift() {
        let a = config_checksum("port: 4222\n");
        assert_ne!(a, config_checksum("port: 4222"));
        assert_ne!(a, config_checksum("port: 4223\n"));
        assert!(checksum_matches("port: 4222\n", &a));
        assert!(checksum_matches(
            "port: 4222\n",
            &a.to_uppercase().replace("SHA256", "sha256")
        ));
        assert!(!checksum_matches("port: 4223\n", &a));
    }
}
