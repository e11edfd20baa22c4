//! Logs, request ids and metrics.
//!
//! The request id lives in a task-local for the duration of a request so code far from the HTTP
//! edge (the outbox, error rendering) can stamp it without threading it through every call.

use crate::config::{LogFormat, Settings};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::io::IsTerminal;
use std::sync::OnceLock;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// Runs `fut` with `id` as the current request id.
pub async fn with_request_id<F: std::future::Future>(id: String, fut: F) -> F::Output {
    REQUEST_ID.scope(id, fut).await
}

/// The id of the request being served, if any.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Installs the global subscriber. `RUST_LOG`, when set, wins over the configured level.
pub fn init_tracing(settings: &Settings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.log_level));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match settings.log_format {
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json().flatten_event(true).with_current_span(true))
            .try_init(),
        // Colour codes only for a person at a terminal: in a file or a log collector they are noise.
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().compact().with_ansi(std::io::stdout().is_terminal()))
            .try_init(),
    };
    // A second init (tests, embedded use) keeps the first subscriber.
    let _ = result;
}

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder (installed on first use; metrics are global by nature).
pub fn metrics_handle() -> &'static PrometheusHandle {
    PROMETHEUS.get_or_init(|| {
        let latency_buckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
        let recorder =
            PrometheusBuilder::new().set_buckets(&latency_buckets).expect("static buckets are valid").build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; our handle then just sees nothing.
        let _ = metrics::set_global_recorder(recorder);
        describe_metrics();
        handle
    })
}

fn describe_metrics() {
    metrics::describe_counter!("http_requests_total", "HTTP requests by method, route and status");
    metrics::describe_histogram!(
        "http_request_duration_seconds",
        metrics::Unit::Seconds,
        "HTTP request latency by route"
    );
    metrics::describe_counter!("events_delivered_total", "Events delivered to a consumer");
    metrics::describe_counter!("events_failed_total", "Event deliveries that failed and will be retried");
    metrics::describe_gauge!("events_lag", "Outbox rows a consumer has not processed yet");
    metrics::describe_counter!("rate_limited_total", "Requests refused by the rate limiter");
}
