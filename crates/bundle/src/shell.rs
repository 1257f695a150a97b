//! Escaping for values that end up in generated shell scripts.
//!
//! Generated scripts are static text plus one block of variable assignments;
//! every value in that block goes through [`quote`], which wraps it in single
//! quotes (inside which bash interprets nothing: no `$()`, backticks, `${}` or
//! `\`). A single quote in the value is written as `'\''`. Control characters,
//! newlines included, are refused so that one assignment is always one line.

use crate::BundleError;

/// Quotes `value` as one bash word that expands to exactly `value`.
///
/// ```
/// use serviceradar_bundle::shell::quote;
/// assert_eq!(quote("it's $(x)")?, r#"'it'\''s $(x)'"#);
/// # Ok::<(), serviceradar_bundle::BundleError>(())
/// ```
pub fn quote(value: &str) -> Result<String, BundleError> {
    if value.chars().any(char::is_control) {
        return Err(BundleError::InvalidText {
            field: "shell value",
            reason: "control characters (including newlines) cannot be put into a script",
        });
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn quotes_plain_and_hostile_values() {
        assert_eq!(quote("").expect("quote"), "''");
        assert_eq!(quote("abc").expect("quote"), "'abc'");
        assert_eq!(quote("a'b").expect("quote"), r"'a'\''b'");
        assert!(quote("a\nb").is_err());
        assert!(quote("a\0b").is_err());
    }

    #[test]
    fn bash_reads_back_exactly_the_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("pwned");
        let hostile = format!(
            r#"O'Brien "HQ" $(touch {m}) `touch {m}` ${{HOME}} \ \' ''"#,
            m = marker.display()
        );
        let script = format!("v={}\nprintf '%s' \"$v\"", quote(&hostile).expect("quote"));
        let out = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .output()
            .expect("bash");
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout), hostile);
        assert!(!marker.exists());
    }
}
