//! A string holding key material or credentials.
//!
//! Bundle inputs include private keys and NATS credentials. Wrapping them keeps
//! them out of `Debug` output (and so out of logs and panic messages) and wipes
//! the memory when the input is dropped.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// Secret text (a PEM private key, a `.creds` file): `Debug` prints `"..."`,
/// the buffer is zeroized on drop.
#[derive(Clone, Default, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SecretText(String);

impl SecretText {
    /// Wraps `text`.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The secret itself; only for writing it into a bundle.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretText {
    fn from(text: String) -> Self {
        Self(text)
    }
}

impl From<&str> for SecretText {
    fn from(text: &str) -> Self {
        Self(text.to_owned())
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretText(\"...\")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_secret() {
        let s = SecretText::from("-----BEGIN PRIVATE KEY-----");
        assert_eq!(format!("{s:?}"), "SecretText(\"...\")");
        assert_eq!(s.expose(), "-----BEGIN PRIVATE KEY-----");
    }
}
