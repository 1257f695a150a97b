//! Auth callout messages: the authorization request nats-server sends to an
//! account's external authorization service, and the signed response.
//!
//! Why: an account with [`ExternalAuthorization`](super::ExternalAuthorization)
//! hands every connection of its users (except the service's own) to a
//! service, with what the connection presented: its user JWT, the nonce it
//! signed, and its TLS certificate chains as the server verified them. The
//! service answers with a user JWT for the account the connection belongs in,
//! or an error. That is how a leaf's certificate (whose SPIFFE id names its
//! tenant and site) is bound to the account it lands in: nats-server alone
//! lets the JWT choose the account and only checks that the certificate
//! chains to the configured CA.
//!
//! Format (nats-io/jwt v2 `authorization_claims.go`): the request is a JWT of
//! type `authorization_request` signed by the server's key (`N...`), audience
//! `nats-authorization-request`, subject the account; its `nats` object holds
//! `server_id`, `user_nkey` (the key the response must be issued to),
//! `client_info`, `connect_opts` and `client_tls`. The response is a JWT of
//! type `authorization_response` signed by the account, subject `user_nkey`,
//! audience the server id, with either `jwt` (the user) or `error`.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

use super::{JwtError, KeyKind, NKey, Signed, check_public_key, encode_for};

/// Subject the server sends authorization requests to, in the account.
pub const AUTH_CALLOUT_SUBJECT: &str = "$SYS.REQ.USER.AUTH";

/// TLS state of the connection being authorized.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ClientTls {
    /// TLS version (`1.3`).
    #[serde(default)]
    pub version: String,
    /// Chains the server verified, each leaf-first, as PEM certificates.
    #[serde(default)]
    pub verified_chains: Vec<Vec<String>>,
    /// The peer's certificates when the server verified none.
    #[serde(default)]
    pub certs: Vec<String>,
}

/// The request's claims, read once, straight into these types.
#[derive(Deserialize)]
struct RequestClaims {
    #[serde(default)]
    iss: String,
    #[serde(default)]
    sub: String,
    #[serde(default)]
    exp: Option<i64>,
    nats: RequestNats,
}

#[derive(Deserialize)]
struct RequestNats {
    #[serde(default, rename = "type")]
    kind: String,
    server_id: ServerId,
    user_nkey: String,
    #[serde(default)]
    client_info: ClientInfo,
    #[serde(default)]
    connect_opts: ConnectOpts,
    #[serde(default)]
    client_tls: Option<ClientTls>,
}

#[derive(Deserialize)]
struct ServerId {
    #[serde(default)]
    name: String,
    id: String,
}

#[derive(Default, Deserialize)]
struct ClientInfo {
    #[serde(default)]
    host: String,
    #[serde(default)]
    id: u64,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    nonce: String,
}

#[derive(Default, Deserialize)]
struct ConnectOpts {
    #[serde(default)]
    jwt: String,
    #[serde(default)]
    sig: String,
    #[serde(default)]
    name: String,
}

/// A verified authorization request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationRequest {
    /// The account the request was made in (the JWT's subject).
    pub account: String,
    /// Public key of the server asking (the audience of the response).
    pub server_id: String,
    /// Name of that server.
    pub server_name: String,
    /// The user key the response must be issued to.
    pub user_nkey: String,
    /// Connection kind: `Client`, `Leafnode`, ...
    pub client_kind: String,
    /// Remote address of the connection.
    pub client_host: String,
    /// The server's id of the connection (`cid`), which its monitoring and
    /// `$SYS.REQ.SERVER.{id}.KICK` name it by.
    pub client_id: u64,
    /// The nonce the server sent the connection.
    pub nonce: String,
    /// The user JWT the connection presented.
    pub user_jwt: String,
    /// The connection's signature of the nonce (base64).
    pub signed_nonce: String,
    /// The connection's name (`server_name` of a leaf).
    pub client_name: String,
    /// TLS state, when the connection is TLS.
    pub tls: Option<ClientTls>,
}

impl AuthorizationRequest {
    /// The client's certificate and the certificate that issued it (PEM),
    /// from the first chain nats-server verified; `None` when it verified
    /// no chain of at least two certificates.
    pub fn verified_leaf_and_issuer(&self) -> Option<(&str, &str)> {
        match self.tls.as_ref()?.verified_chains.first()?.as_slice() {
            [leaf, issuer, ..] => Some((leaf, issuer)),
            _ => None,
        }
    }

    /// Decodes a request token: its signature must verify against its issuer,
    /// a server key, and it must be an unexpired `authorization_request`.
    pub fn decode(token: &str) -> Result<Self, JwtError> {
        let signed = Signed::split(token)?;
        let claims: RequestClaims = serde_json::from_slice(&signed.claims)?;
        check_public_key("request issuer", &claims.iss, KeyKind::Server)?;
        signed.verify(&claims.iss)?;
        if claims.nats.kind != "authorization_request" {
            return Err(JwtError::InvalidClaim {
                field: "type",
                reason: "not an authorization request".into(),
            });
        }
        if let Some(exp) = claims.exp
            && exp < super::now()
        {
            return Err(JwtError::InvalidClaim {
                field: "exp",
                reason: "the authorization request has expired".into(),
            });
        }
        let (account, nats) = (claims.sub, claims.nats);
        check_public_key("server id", &nats.server_id.id, KeyKind::Server)?;
        check_public_key("user_nkey", &nats.user_nkey, KeyKind::User)?;
        Ok(Self {
            account,
            server_id: nats.server_id.id,
            server_name: nats.server_id.name,
            user_nkey: nats.user_nkey,
            client_kind: nats.client_info.kind,
            client_host: nats.client_info.host,
            client_id: nats.client_info.id,
            nonce: nats.client_info.nonce,
            user_jwt: nats.connect_opts.jwt,
            signed_nonce: nats.connect_opts.sig,
            client_name: nats.connect_opts.name,
            tls: nats.client_tls,
        })
    }
}

#[derive(Serialize)]
struct ResponseNats<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    jwt: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'static str,
    version: u8,
}

/// The signed response to `request`: `Ok(user_jwt)` admits the connection as
/// that user (whose subject must be `request.user_nkey`), `Err(reason)`
/// refuses it. `account` is the key of the account the request came from.
pub fn authorization_response(
    account: &NKey,
    request: &AuthorizationRequest,
    outcome: Result<&str, &str>,
) -> Result<String, JwtError> {
    account.expect_kind(KeyKind::Account)?;
    let (jwt, error) = match outcome {
        Ok(jwt) => (Some(jwt), None),
        Err(reason) => (
            None,
            Some(if reason.is_empty() { "denied" } else { reason }),
        ),
    };
    let nats = ResponseNats {
        jwt,
        error,
        kind: "authorization_response",
        version: 2,
    };
    encode_for(
        account,
        &request.user_nkey,
        Some(&request.server_id),
        "authorization",
        None,
        None,
        &nats,
    )
}

/// Whether `signed_nonce` (base64url or standard base64) is `user`'s
/// signature of `nonce`: proof the connection holds the user's seed.
pub fn verify_signed_nonce(user: &str, nonce: &str, signed_nonce: &str) -> bool {
    let Ok(key) = nkeys::KeyPair::from_public_key(user) else {
        return false;
    };
    let trimmed = signed_nonce.trim_end_matches('=');
    let Ok(signature) = URL_SAFE_NO_PAD
        .decode(trimmed)
        .or_else(|_| STANDARD.decode(signed_nonce))
    else {
        return false;
    };
    !nonce.is_empty() && key.verify(nonce.as_bytes(), &signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::{decode_claims, encode};

    fn request_token(server: &NKey, account: &str, user_nkey: &str) -> String {
        let nats = serde_json::json!({
            "server_id": {"name": "hub", "host": "127.0.0.1", "id": server.public_key()},
            "user_nkey": user_nkey,
            "client_info": {"host": "10.0.0.7", "id": 42, "kind": "Leafnode", "nonce": "abc"},
            "connect_opts": {"jwt": "eyJ...", "sig": "c2ln", "name": "leaf-1", "protocol": 1},
            "client_tls": {"version": "1.3", "verified_chains": [["A", "B"]]},
            "type": "authorization_request",
            "version": 2,
        });
        encode(
            server,
            account,
            "",
            None,
            Some(super::super::now() + 60),
            &nats,
        )
        .unwrap()
    }

    #[test]
    fn a_server_signed_request_decodes() {
        let server = NKey::generate(KeyKind::Server);
        let account = NKey::generate(KeyKind::Account);
        let user = NKey::generate(KeyKind::User);
        let request = AuthorizationRequest::decode(&request_token(
            &server,
            &account.public_key(),
            &user.public_key(),
        ))
        .unwrap();
        assert_eq!(request.account, account.public_key());
        assert_eq!(request.server_id, server.public_key());
        assert_eq!(request.user_nkey, user.public_key());
        assert_eq!(request.client_kind, "Leafnode");
        assert_eq!(request.client_host, "10.0.0.7");
        assert_eq!(request.client_id, 42);
        assert_eq!(request.nonce, "abc");
        assert_eq!(request.client_name, "leaf-1");
        let tls = request.tls.unwrap();
        assert_eq!(tls.verified_chains, vec![vec!["A", "B"]]);
    }

    #[test]
    fn requests_not_signed_by_a_server_are_rejected() {
        let account = NKey::generate(KeyKind::Account);
        let user = NKey::generate(KeyKind::User);
        // Signed by an account key: anyone holding one could forge requests.
        let forged = request_token(&account, &account.public_key(), &user.public_key());
        assert!(AuthorizationRequest::decode(&forged).is_err());
        assert!(AuthorizationRequest::decode("not.a.jwt").is_err());
    }

    #[test]
    fn responses_carry_the_user_or_the_error() {
        let server = NKey::generate(KeyKind::Server);
        let account = NKey::generate(KeyKind::Account);
        let user = NKey::generate(KeyKind::User);
        let request = AuthorizationRequest::decode(&request_token(
            &server,
            &account.public_key(),
            &user.public_key(),
        ))
        .unwrap();
        let ok = decode_claims(&authorization_response(&account, &request, Ok("eyJuser")).unwrap())
            .unwrap();
        assert_eq!(ok["sub"], user.public_key());
        assert_eq!(ok["aud"], server.public_key());
        assert_eq!(ok["iss"], account.public_key());
        assert_eq!(ok["nats"]["type"], "authorization_response");
        assert_eq!(ok["nats"]["jwt"], "eyJuser");
        assert!(ok["nats"].get("error").is_none());
        let denied =
            decode_claims(&authorization_response(&account, &request, Err("no")).unwrap()).unwrap();
        assert_eq!(denied["nats"]["error"], "no");
        assert!(denied["nats"].get("jwt").is_none());
        assert!(authorization_response(&user, &request, Err("no")).is_err());
    }

    #[test]
    fn nonce_signatures_are_checked() {
        let user = NKey::generate(KeyKind::User);
        let other = NKey::generate(KeyKind::User);
        let sig = user.sign(b"nonce-1").unwrap();
        let url = URL_SAFE_NO_PAD.encode(&sig);
        let std = STANDARD.encode(&sig);
        assert!(verify_signed_nonce(&user.public_key(), "nonce-1", &url));
        assert!(verify_signed_nonce(&user.public_key(), "nonce-1", &std));
        assert!(!verify_signed_nonce(&user.public_key(), "nonce-2", &url));
        assert!(!verify_signed_nonce(&other.public_key(), "nonce-1", &url));
        assert!(!verify_signed_nonce(&user.public_key(), "", &url));
        assert!(!verify_signed_nonce(&user.public_key(), "nonce-1", "!!"));
    }
}
