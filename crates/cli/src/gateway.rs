//! The CLI's one call to the agent gateway: the hub's last refusal of this
//! site's leaf, as the control plane's leaf authorization callout recorded
//! it. The box has no API credential; it asks over its agent's mTLS identity
//! (the gateway answers for the site in the certificate only).

use std::time::Duration;

use serviceradar_proto::v1::LeafRefusalRequest;
use serviceradar_proto::v1::agent_gateway_client::AgentGatewayClient;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::files::{Identity, Layout};

/// The recorded refusal (the callout's reason, Unix ms); `Ok(None)` when
/// none is on record; `Err` says why the gateway could not be asked (this
/// box has no agent identity, the gateway is unreachable, it refused).
pub async fn leaf_refusal(
    identity: &Identity,
    layout: &Layout,
) -> Result<Option<(String, i64)>, String> {
    let url = identity
        .gateway_url
        .as_deref()
        .ok_or("this box has no agent identity")?;
    let read = |name: &str| {
        std::fs::read(layout.cert(name))
            .map_err(|e| format!("{}: {e}", layout.cert(name).display()))
    };
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("root-ca.pem")?))
        .identity(tonic::transport::Identity::from_pem(
            read("agent.pem")?,
            read("agent-key.pem")?,
        ));
    let channel = Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("gateway URL {url}: {e}"))?
        .tls_config(tls)
        .map_err(|e| format!("TLS settings: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("cannot reach the gateway at {url}: {e:?}"))?;
    let reply = AgentGatewayClient::new(channel)
        .leaf_refusal(LeafRefusalRequest { claim: None })
        .await
        .map_err(|s| format!("the gateway answered {:?}: {}", s.code(), s.message()))?
        .into_inner();
    Ok(reply.refused.then_some((reply.reason, reply.refused_at_ms)))
}
