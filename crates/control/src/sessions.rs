//! Browser sessions: sign in (tenant, e-mail, password), sign out, and who
//! the caller is. The cookie and CSRF token are random; only the cookie's
//! SHA-256 is stored.

use serde::Deserialize;
use serviceradar_auth::{
    Authenticated, Credential, random_token, sha256_hex, verify_password_blocking,
};
use serviceradar_domain::Secret;
use serviceradar_domain::resources::{Tenant, User};
use serviceradar_domain::validate::Email;
use serviceradar_store::{StoreError, now_ms};

use crate::{Control, ControlError};

/// A sign-in attempt.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// Tenant slug.
    pub tenant: String,
    /// E-mail.
    pub email: String,
    /// Password.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub password: Secret,
}

/// A new session: the cookie value and CSRF token exist only here and in
/// the response that sets them.
#[derive(Debug)]
pub struct NewSession {
    /// The signed-in user.
    pub user: User,
    /// The session cookie's value.
    pub cookie: Secret,
    /// The CSRF token to send with every write of this session.
    pub csrf_token: Secret,
    /// Expiry (Unix ms).
    pub expires_at: i64,
    /// Cookie lifetime in seconds.
    pub max_age_secs: i64,
}

impl Control {
    /// Signs in. Unknown tenants, users and wrong passwords are one answer,
    /// and take as long (a dummy hash is verified for unknown users).
    pub async fn login(
        &self,
        input: &Login,
        source: Option<std::net::IpAddr>,
    ) -> Result<NewSession, ControlError> {
        let throttle = &self.inner.throttle;
        let account = format!("{}/{}", input.tenant, input.email.trim());
        if let Err(retry_after) = throttle.check(&account, source) {
            tracing::info!("sign-in throttled");
            metrics::counter!("serviceradar_login_throttled_total").increment(1);
            return Err(ControlError::Throttled { retry_after });
        }
        let email = Email::parse(&input.email)
            .map(|e| e.to_string())
            .unwrap_or_default();
        let record = match self.store().login_record(&input.tenant, &email).await {
            Ok(record) => Some(record),
            Err(StoreError::NotFound) => None,
            Err(e) => return Err(e.into()),
        };
        let permit = throttle.hashing_permit().await;
        let valid = verify_password_blocking(
            input.password.clone(),
            record.as_ref().map(|r| r.password_hash.clone()),
        )
        .await?;
        drop(permit);
        let Some(record) = record.filter(|_| valid) else {
            throttle.failed(&account, source);
            tracing::info!("failed login");
            metrics::counter!("serviceradar_login_failures_total").increment(1);
            return Err(ControlError::Unauthorized(
                "wrong tenant, e-mail or password".into(),
            ));
        };
        throttle.succeeded(&account);
        let cookie = random_token(32);
        let csrf_token = random_token(24);
        let max_age_secs = i64::from(self.settings().sessions.session_hours) * 3600;
        let expires_at = now_ms() + max_age_secs * 1000;
        self.store()
            .create_session(&sha256_hex(&cookie), &record.user, &csrf_token, expires_at)
            .await?;
        tracing::info!(tenant_id = %record.user.tenant_id, user_id = %record.user.id, "signed in");
        Ok(NewSession {
            user: record.user,
            cookie: Secret::new(cookie),
            csrf_token: Secret::new(csrf_token),
            expires_at,
            max_age_secs,
        })
    }

    /// Ends the session whose cookie is `cookie` (tokens are revoked, not signed out).
    pub async fn logout(
        &self,
        auth: &Authenticated,
        cookie: Option<&str>,
    ) -> Result<(), ControlError> {
        if auth.credential != Credential::Session {
            return Err(ControlError::BadRequest(
                "logout ends browser sessions; revoke tokens instead".into(),
            ));
        }
        if let Some(cookie) = cookie {
            self.store().delete_session(&sha256_hex(cookie)).await?;
        }
        Ok(())
    }

    /// The caller's tenant.
    pub async fn my_tenant(&self, auth: &Authenticated) -> Result<Tenant, ControlError> {
        Ok(self.store().tenant(auth.actor.tenant_id).await?)
    }
}
