//! Authentication: passwords, API tokens and browser sessions, and the
//! extractor that turns a request into an [`Actor`].
//!
//! * Passwords are hashed with Argon2id (default parameters) on a blocking
//!   thread; a login for an unknown user still spends one verification so
//!   timing does not reveal which e-mails exist.
//! * API tokens look like `srt_<id>_<secret>`. The id locates the row; only
//!   SHA-256 of the 256-bit random secret is stored (a slow hash adds nothing
//!   for secrets of that entropy) and compared in constant time.
//! * Sessions are a random cookie (`sr_session`, `HttpOnly`, `SameSite=Strict`)
//!   whose SHA-256 is the row key. Unsafe methods with a session must also
//!   send the session's CSRF token in `X-CSRF-Token`.
//!
//! The extractor records `tenant_id` and `user_id` on the request span.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{Method, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serviceradar_domain::policy::{Actor, ScopeSet};
use serviceradar_domain::{ApiTokenId, validate::Password};
use serviceradar_store::StoreError;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::error::ApiError;
use crate::app::AppState;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "sr_session";
/// Header carrying the CSRF token for session-authenticated writes.
pub const CSRF_HEADER: &str = "x-csrf-token";
const TOKEN_PREFIX: &str = "srt_";

/// Hashes a password with Argon2id (blocking; call from `spawn_blocking`).
pub fn hash_password(password: &Password) -> Result<String, ApiError> {
    Argon2::default()
        .hash_password(password.expose().as_bytes())
        .map(|hash: PasswordHash| hash.to_string())
        .map_err(|e| ApiError::internal(format!("password hashing failed: {e}")))
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

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let auth = authenticate(parts, state).await?;
        let span = tracing::Span::current();
        span.record("tenant_id", tracing::field::display(auth.actor.tenant_id));
        span.record("user_id", tracing::field::display(auth.actor.user_id));
        Ok(auth)
    }
}

async fn authenticate(parts: &Parts, state: &AppState) -> Result<Authenticated, ApiError> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let text = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| ApiError::unauthorized("Authorization must be `Bearer <api token>`"))?;
        return authenticate_token(text.trim(), state).await;
    }
    if let Some(cookie) = session_cookie(&parts.headers) {
        return authenticate_session(parts, &cookie, state).await;
    }
    Err(ApiError::unauthorized(
        "sign in, or send an API token as `Authorization: Bearer <token>`",
    ))
}

async fn authenticate_token(text: &str, state: &AppState) -> Result<Authenticated, ApiError> {
    let invalid = || ApiError::unauthorized("invalid API token");
    let (id, secret) = parse_token(text).ok_or_else(invalid)?;
    let record = match state.store.token_record(id).await {
        Ok(record) => record,
        Err(StoreError::NotFound) => return Err(invalid()),
        Err(e) => return Err(e.into()),
    };
    let presented = sha256_hex(secret);
    if !bool::from(presented.as_bytes().ct_eq(record.secret_hash.as_bytes())) {
        return Err(invalid());
    }
    if record.token.revoked_at.is_some() {
        return Err(ApiError::unauthorized("this API token has been revoked"));
    }
    if record.token.expires_at <= now_ms() {
        return Err(ApiError::unauthorized("this API token has expired"));
    }
    state
        .store
        .touch_token(id, record.token.last_used_at)
        .await?;
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

async fn authenticate_session(
    parts: &Parts,
    cookie: &str,
    state: &AppState,
) -> Result<Authenticated, ApiError> {
    let session = match state.store.session(&sha256_hex(cookie)).await {
        Ok(session) => session,
        Err(StoreError::NotFound) => {
            return Err(ApiError::unauthorized(
                "your session has expired; sign in again",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        let sent = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !bool::from(sent.as_bytes().ct_eq(session.csrf_token.as_bytes())) {
            return Err(ApiError::forbidden(
                "missing or wrong X-CSRF-Token header for a session request",
            ));
        }
    }
    Ok(Authenticated {
        actor: Actor {
            tenant_id: session.tenant_id,
            user_id: session.user_id,
            role: session.role,
            scopes: ScopeSet::ALL,
        },
        credential: Credential::Session,
    })
}

/// The session cookie's value, if present.
pub fn session_cookie(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_string())
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
