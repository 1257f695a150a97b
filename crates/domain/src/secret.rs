//! [`Secret`]: text that must never leak: passwords in requests, one-time
//! token and webhook secrets in responses, session cookies and CSRF tokens,
//! secrets given on the command line.
//!
//! It serializes and deserializes as a plain string (so it can travel in the
//! one response that shows it), prints `...` in `Debug` (so a `?field` in a
//! log line, a panic or a derived `Debug` of a containing type shows nothing),
//! and is wiped from memory when dropped. Read it with [`Secret::expose`].

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

/// Secret text; see the module documentation.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps `text`.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The secret text, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("...")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Self {
        Self(text)
    }
}

impl From<&str> for Secret {
    fn from(text: &str) -> Self {
        Self(text.to_owned())
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Self(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_text_and_serde_keeps_it() {
        let secret = Secret::new("hunter2-hunter2");
        assert_eq!(format!("{secret:?}"), "...");
        assert_eq!(format!("{:?}", Some(&secret)), "Some(...)");
        let json = serde_json::to_string(&secret).unwrap();
        assert_eq!(json, "\"hunter2-hunter2\"");
        let back: Secret = serde_json::from_str(&json).unwrap();
        assert_eq!(back.expose(), "hunter2-hunter2");
    }
}
