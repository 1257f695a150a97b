//! The layers every HTTP request to `serviceradar-core` passes through, in
//! one place so the API, the web UI and the probes share them: a request id
//! (kept from the caller or made, echoed back), an `http_request` span with
//! the matched route (tenant and user filled in once authenticated),
//! credentials kept out of logs, a 1 MiB body limit, a 30 s timeout, a caught
//! panic answered 500, and the request counter and latency histogram by
//! method, route and status.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::MatchedPath;
use axum::http::{HeaderName, Request, Response, StatusCode, header};
use tower::{Layer, Service, ServiceBuilder};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 1024 * 1024;
/// Longest a request may take before it is answered 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// `router` with the shared layers around it.
///
/// The layers are composed into one [`ServiceBuilder`] stack and given to
/// the router once. `Router::layer` boxes each layer it is given around
/// every route, and axum clones a route's whole chain of boxes for every
/// request: eight layers given one by one were eight boxes allocated, cloned
/// and freed per request (BENCHMARKS.md, issue 15). They are still route
/// layers, run after routing, so the span and the metrics see the matched
/// route.
///
/// Outermost first: the panic catcher; the request id, set and echoed; the
/// credentials marked sensitive; the span and access log; the metrics; the
/// body limit; the timeout. A 408 or a 413 is therefore logged and counted
/// like any other answer.
pub fn layered(router: Router) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    router.layer(
        ServiceBuilder::new()
            .layer(CatchPanicLayer::new())
            .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
            .layer(PropagateRequestIdLayer::new(request_id))
            .layer(SetSensitiveRequestHeadersLayer::new([
                header::AUTHORIZATION,
                header::COOKIE,
            ]))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(|req: &Request<_>| {
                        let route = req
                            .extensions()
                            .get::<MatchedPath>()
                            .map_or_else(|| req.uri().path(), |p| p.as_str());
                        let request_id = req
                            .headers()
                            .get("x-request-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("");
                        tracing::info_span!("http_request", method = %req.method(), route = %route,
                            request_id = %request_id, tenant_id = tracing::field::Empty,
                            user_id = tracing::field::Empty)
                    })
                    .on_request(())
                    .on_response(
                        tower_http::trace::DefaultOnResponse::new().level(tracing::Level::INFO),
                    ),
            )
            .layer(HttpMetricsLayer)
            .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                REQUEST_TIMEOUT,
            )),
    )
}

/// Counts each request and records its latency by method and matched route
/// (the pattern, so the label is bounded; `unmatched` for a 404 of no
/// route), and the counter also by status.
#[derive(Clone, Copy)]
struct HttpMetricsLayer;

impl<S> Layer<S> for HttpMetricsLayer {
    type Service = HttpMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpMetrics { inner }
    }
}

/// The service [`HttpMetricsLayer`] puts around a route.
#[derive(Clone)]
struct HttpMetrics<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for HttpMetrics<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let start = Instant::now();
        let method = req.method().to_string();
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await?;
            let status = response.status().as_u16().to_string();
            metrics::counter!("http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
                .increment(1);
            metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
                .record(start.elapsed().as_secs_f64());
            Ok(response)
        })
    }
}
