//! The agent's one interface to the gateway, and its dial-out gRPC + mTLS
//! implementation. The runner only sees [`Transport`], so a gateway-initiated
//! mode (seed 004) can be added as a second implementation.

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use serviceradar_proto::v1::agent_gateway_client::AgentGatewayClient;
use serviceradar_proto::v1::{
    AgentMessage, ControlMessage, GetConfigRequest, GetConfigResponse, HelloRequest, HelloResponse,
    PushResultsResponse, PushStatusRequest, PushStatusResponse, RenewRequest, RenewResponse,
    ResultsChunk,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::config::GatewayTarget;

/// What the agent asks of the gateway.
pub trait Transport: Send {
    /// Registration.
    fn hello(
        &mut self,
        req: HelloRequest,
    ) -> impl Future<Output = Result<HelloResponse, tonic::Status>> + Send;
    /// Config polling.
    fn get_config(
        &mut self,
        req: GetConfigRequest,
    ) -> impl Future<Output = Result<GetConfigResponse, tonic::Status>> + Send;
    /// Check results.
    fn push_status(
        &mut self,
        req: PushStatusRequest,
    ) -> impl Future<Output = Result<PushStatusResponse, tonic::Status>> + Send;
    /// A chunked upload.
    fn push_results(
        &mut self,
        chunks: Vec<ResultsChunk>,
    ) -> impl Future<Output = Result<PushResultsResponse, tonic::Status>> + Send;
    /// Certificate renewal (CSRs in, certificates out).
    fn renew(
        &mut self,
        req: RenewRequest,
    ) -> impl Future<Output = Result<RenewResponse, tonic::Status>> + Send;
    /// Opens the control stream: `outbound` carries the agent's messages
    /// (the first one with the identity claim), the answer the gateway's.
    /// A transport without one answers `UNIMPLEMENTED` and the agent keeps
    /// polling its config.
    fn control_stream(
        &mut self,
        outbound: tokio::sync::mpsc::Receiver<AgentMessage>,
    ) -> impl Future<Output = Result<tonic::Streaming<ControlMessage>, tonic::Status>> + Send {
        let _ = outbound;
        async { Err(tonic::Status::unimplemented("no control stream")) }
    }
}

/// Dials out to the gateway over gRPC with the agent's client certificate.
#[derive(Clone)]
pub struct GrpcTransport {
    client: AgentGatewayClient<Channel>,
}

impl GrpcTransport {
    /// The endpoint for `target` (reads the certificate files).
    pub fn endpoint(target: &GatewayTarget) -> anyhow::Result<Endpoint> {
        let read = |p: &std::path::Path| {
            std::fs::read(p).with_context(|| format!("reading {}", p.display()))
        };
        let cert = read(&target.cert)?;
        let key = read(&target.key)?;
        let ca = read(&target.ca)?;
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .identity(Identity::from_pem(cert, key));
        if let Some(name) = &target.tls_name {
            tls = tls.domain_name(name.clone());
        }
        Ok(Endpoint::from_shared(target.url.clone())
            .context("invalid gateway URL")?
            .tls_config(tls)
            .context("TLS settings")?
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .http2_keep_alive_interval(Duration::from_secs(60))
            .keep_alive_while_idle(true))
    }

    /// Connects (TLS handshake included).
    pub async fn connect(target: &GatewayTarget) -> anyhow::Result<Self> {
        let channel = Self::endpoint(target)?
            .connect()
            .await
            .with_context(|| format!("connecting to {}", target.url))?;
        Ok(Self::from_channel(channel))
    }

    /// Over an existing channel.
    pub fn from_channel(channel: Channel) -> Self {
        Self {
            client: AgentGatewayClient::new(channel),
        }
    }
}

impl Transport for GrpcTransport {
    async fn hello(&mut self, req: HelloRequest) -> Result<HelloResponse, tonic::Status> {
        Ok(self.client.hello(req).await?.into_inner())
    }

    async fn get_config(
        &mut self,
        req: GetConfigRequest,
    ) -> Result<GetConfigResponse, tonic::Status> {
        Ok(self.client.get_config(req).await?.into_inner())
    }

    async fn push_status(
        &mut self,
        req: PushStatusRequest,
    ) -> Result<PushStatusResponse, tonic::Status> {
        Ok(self.client.push_status(req).await?.into_inner())
    }

    async fn push_results(
        &mut self,
        chunks: Vec<ResultsChunk>,
    ) -> Result<PushResultsResponse, tonic::Status> {
        Ok(self
            .client
            .push_results(tokio_stream_iter(chunks))
            .await?
            .into_inner())
    }

    async fn renew(&mut self, req: RenewRequest) -> Result<RenewResponse, tonic::Status> {
        Ok(self.client.renew_certificates(req).await?.into_inner())
    }

    async fn control_stream(
        &mut self,
        outbound: tokio::sync::mpsc::Receiver<AgentMessage>,
    ) -> Result<tonic::Streaming<ControlMessage>, tonic::Status> {
        // A stream, unlike the unary calls, has no overall deadline.
        let mut request = tonic::Request::new(ReceiverStream(outbound));
        request.set_timeout(Duration::from_secs(365 * 86_400));
        Ok(self.client.control_stream(request).await?.into_inner())
    }
}

/// The agent's half of the control stream, over a channel.
struct ReceiverStream(tokio::sync::mpsc::Receiver<AgentMessage>);

impl futures_core::Stream for ReceiverStream {
    type Item = AgentMessage;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// A stream over a vector, without pulling in `tokio-stream`.
fn tokio_stream_iter(chunks: Vec<ResultsChunk>) -> impl futures_core::Stream<Item = ResultsChunk> {
    IterStream(chunks.into_iter())
}

struct IterStream(std::vec::IntoIter<ResultsChunk>);

impl futures_core::Stream for IterStream {
    type Item = ResultsChunk;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::task::Poll::Ready(self.0.next())
    }
}
