//! Authentication: passwords, API tokens and browser sessions, turning a
//! presented credential into an [`Authenticated`] caller the policy can judge.
//! No HTTP here: the `http` crate reads headers and cookies and calls these.
//!
//! * Passwords are hashed with Argon2id (default parameters) on a blocking
//!   thread; a login for an unknown user still spends one verification so
//!   timing does not reveal which e-mails exist.
//! * API tokens look like `srt_<id>_<secret>`. The id locates the row; only
//!   SHA-256 of the 256-bit random secret is stored (a slow hash adds nothing
//!   for secrets of that entropy) and compared in constant time.
//! * Sessions are a random cookie (`sr_session`, `HttpOnly`, `SameSite=Strict`)
//!   whose SHA-256 is the row key. Unsafe methods with a session must also
//!   send the session's CSRF token.

#![forbid(unsafe_code)]

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serviceradar_domain::policy::{Actor, ScopeSet};
use serviceradar_domain::{ApiTokenId, Secret, validate::Password};
use serviceradar_store::{Store, StoreError};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "sr_session";
/// Header carrying the CSRF token for session-authenticated writes.
pub const CSRF_HEADER: &str = "x-csrf-token";
const TOKEN_PREFIX: &str = "srt_";

/// Session settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSettings {
    /// Session lifetime in hours.
    pub session_hours: u32,
    /// Mark the session cookie `Secure`.
    pub secure_cookies: bool,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            session_hours: 12,
            secure_cookies: false,
        }
    }
}

/// Why a credential was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No valid credential (401); the message says which and what to do.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A session write without its CSRF token (403).
    #[error("missing or wrong X-CSRF-Token header for a session request")]
    CsrfMismatch,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Password hashing failed (or its blocking task died).
    #[error("password hashing failed: {0}")]
    Hashing(String),
}

/// Hashes a password with Argon2id (blocking; call from `spawn_blocking`).
pub fn hash_password(password: &Password) -> Result<String, AuthError> {
    Argon2::default()
        .hash_password(password.expose().as_bytes())
        .map(|hash: PasswordHash| hash.to_string())
        .map_err(|e| AuthError::Hashing(e.to_string()))
}

/// Hashes a password on a blocking thread (Argon2 is deliberately slow).
pub async fn hash_password_blocking(password: Password) -> Result<String, AuthError> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| AuthError::Hashing(format!("hashing task failed: {e}")))?
}

/// Checks a password against a stored PHC string on a blocking thread;
/// `None` (unknown user) verifies against a dummy hash so both take as long.
pub async fn verify_password_blocking(
    password: Secret,
    phc: Option<String>,
) -> Result<bool, AuthError> {
    let known = phc.is_some();
    let phc = phc.unwrap_or_else(|| dummy_password_hash().to_string());
    let valid = tokio::task::spawn_blocking(move || verify_password(password.expose(), &phc))
        .await
        .map_err(|e| AuthError::Hashing(format!("verify task failed: {e}")))?;
    Ok(known && valid)
}

/// Checks a password against a stored Argon2 PHC string (blocking).
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).ok().is_some_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// A hash to verify against when the user does not exist, so the login takes
/// as long either way.
pub fn dummy_password_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        Argon2::default()
            .hash_password(b"serviceradar-dummy-password")
            .map(|h: PasswordHash| h.to_string())
            .unwrap_or_default()
    })
}

/// `n` random bytes, base64url.
pub fn random_token(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// SHA-256 hex of a secret.
pub fn sha256_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A freshly minted API token: the string to hand out once, and its stored hash.
pub struct MintedToken {
    /// Token id.
    pub id: ApiTokenId,
    /// The full token string (`srt_<id>_<secret>`); shown once.
    pub token: String,
    /// SHA-256 of the secret half.
    pub secret_hash: String,
}

/// Mints a new API token.
pub fn mint_token() -> MintedToken {
    let id = ApiTokenId::new();
    let secret = random_token(32);
    MintedToken {
        id,
        token: format!("{TOKEN_PREFIX}{}_{secret}", id.0.simple()),
        secret_hash: sha256_hex(&secret),
    }
}

/// Splits a token string into id and secret; `None` if malformed.
fn parse_token(text: &str) -> Option<(ApiTokenId, &str)> {
    let rest = text.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let id = uuid::Uuid::try_parse(id).ok()?;
    (!secret.is_empty() && secret.len() <= 128).then_some((ApiTokenId(id), secret))
}

/// How the actor authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// An API token.
    Token(ApiTokenId),
    /// A browser session (by cookie hash).
    Session,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// Who it is and what they may do.
    pub actor: Actor,
    /// How they proved it.
    pub credential: Credential,
}

/// Authenticates an API token (`srt_<id>_<secret>`), recording its use.
pub async fn authenticate_token(store: &Store, text: &str) -> Result<Authenticated, AuthError> {
    let invalid = AuthError::Unauthorized("invalid API token");
    let Some((id, secret)) = parse_token(text) else {
        return Err(invalid);
    };
    let record = match store.token_record(id).await {
        Ok(record) => record,
        Err(StoreError::NotFound) => return Err(invalid),
        Err(e) => return Err(e.into()),
    };
    let presented = sha256_hex(secret);
    if !bool::from(presented.as_bytes().ct_eq(record.secret_hash.as_bytes())) {
        return Err(invalid);
    }
    if record.token.revoked_at.is_some() {
        return Err(AuthError::Unauthorized("this API token has been revoked"));
    }
    if record.token.expires_at <= now_ms() {
        return Err(AuthError::Unauthorized("this API token has expired"));
    }
    store.touch_token(id, record.token.last_used_at).await?;
    Ok(Authenticated {
        actor: Actor {
            tenant_id: record.token.tenant_id,
            user_id: record.token.user_id,
            role: record.role,
            scopes: record.token.scopes,
        },
        credential: Credential::Token(id),
    })
}

/// Authenticates a session cookie. `csrf` is `None` for safe methods (GET,
/// HEAD, OPTIONS) and otherwise the CSRF token the request sent (`Some("")`
/// when absent), which must equal the session's.
pub async fn authenticate_session(
    store: &Store,
    cookie: &str,
    csrf: Option<&str>,
) -> Result<Authenticated, AuthError> {
    let (auth, token) = session_with_csrf(store, cookie).await?;
    if let Some(sent) = csrf
        && !bool::from(sent.as_bytes().ct_eq(token.expose().as_bytes()))
    {
        return Err(AuthError::CsrfMismatch);
    }
    Ok(auth)
}

/// Authenticates a session cookie for a safe request and returns the
/// session's CSRF token with it, for a server-rendered page to embed in its
/// forms (the web UI); writes go through [`authenticate_session`].
pub async fn session_with_csrf(
    store: &Store,
    cookie: &str,
) -> Result<(Authenticated, Secret), AuthError> {
    let session = match store.session(&sha256_hex(cookie)).await {
        Ok(session) => session,
        Err(StoreError::NotFound) => {
            return Err(AuthError::Unauthorized(
                "your session has expired; sign in again",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let auth = Authenticated {
        actor: Actor {
            tenant_id: session.tenant_id,
            user_id: session.user_id,
            role: session.role,
            scopes: ScopeSet::ALL,
        },
        credential: Credential::Session,
    };
    Ok((auth, Secret::new(session.csrf_token)))
}

/// Current Unix time in milliseconds (the store's clock, so stored and
/// compared times agree).
pub use serviceradar_store::now_ms;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_parse_and_hash() {
        let minted = mint_token();
        let (id, secret) = parse_token(&minted.token).unwrap();
        assert_eq!(id, minted.id);
        assert_eq!(sha256_hex(secret), minted.secret_hash);
        assert!(!minted.token.contains(&minted.secret_hash));
    }

    proptest::proptest! {
        /// Any text: parsing answers without panicking, and accepts only
        /// `srt_<uuid>_<1-128 bytes>`.
        #[test]
        fn token_parsing_accepts_only_the_token_shape(text in r"(srt_)?\PC{0,200}") {
            if let Some((id, secret)) = parse_token(&text) {
                proptest::prop_assert!(text.starts_with(TOKEN_PREFIX));
                proptest::prop_assert!(!secret.is_empty() && secret.len() <= 128);
                proptest::prop_assert!(text.contains(&id.0.simple().to_string()) || text.contains(&id.0.to_string()));
            }
        }

        /// A minted token with anything appended or cut off no longer names
        /// the same secret.
        #[test]
        fn a_tampered_token_does_not_verify(cut in 1usize..40, extra in "[A-Za-z0-9_-]{1,20}") {
            let minted = mint_token();
            let longer = format!("{}{extra}", minted.token);
            if let Some((_, secret)) = parse_token(&longer) {
                proptest::prop_assert_ne!(sha256_hex(secret), minted.secret_hash.clone());
            }
            let shorter = &minted.token[..minted.token.len() - cut];
            if let Some((_, secret)) = parse_token(shorter) {
                proptest::prop_assert_ne!(sha256_hex(secret), minted.secret_hash.clone());
            }
        }
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        for bad in [
            "",
            "srt_",
            "srt_x_y",
            "abc",
            "srt_0190a2b4c0d07e8f9a0b1c2d3e4f5a6b_",
            "Bearer x",
        ] {
            assert!(parse_token(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn passwords_verify() {
        let pw = Password::parse("correct horse battery staple").unwrap();
        let hash = hash_password(&pw).unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery staple", &hash));
        assert!(!verify_password("wrong horse battery staple", &hash));
        assert!(!verify_password("x", "not a hash"));
    }
}
