//! The monitoring server: an agent's counters, liveness and readiness over HTTP.
//!
//! `GET /metrics` answers Flume's JSON reporting format, `GET /metrics/prometheus` the Prometheus
//! text format, `GET /health` whether the agent runs and `GET /ready` whether it is ready for
//! traffic (as Kubernetes' liveness and readiness probes ask them), `GET /tap` live events. The server is built from
//! [`ROUTES`], one configurator per group of routes, so that a new group is one more entry.

use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};

use crate::metrics::{ComponentState, Metrics};

/// What every route of the monitoring server reads (as `web::Data<Monitor>`).
#[derive(Debug)]
pub struct Monitor {
    /// The agent's name (the `agent` label of the Prometheus output).
    pub agent: String,
    /// The agent's counters and component states.
    pub metrics: Arc<Metrics>,
}

/// Registers one group of routes on the monitoring server's `App` (handlers also reach the
/// [`Monitor`] as `web::Data<Monitor>`).
pub type Routes = fn(&mut web::ServiceConfig, &Monitor);

/// Every group of routes the monitoring server serves.
pub const ROUTES: &[Routes] = &[metrics_routes, health_routes, tap_routes];

/// Starts the monitoring server on `bind` (`host:port`) in the current actix system, serving
/// [`ROUTES`] over `metrics`; answers its handle (stop it with `handle.stop(true)`).
///
/// # Errors
/// The I/O error when `bind` cannot be listened on (in use, not an address of this host).
pub fn serve(bind: &str, agent: &str, metrics: Arc<Metrics>) -> std::io::Result<ServerHandle> {
    let monitor = web::Data::new(Monitor { agent: agent.to_string(), metrics });
    let server = HttpServer::new(move || {
        let app = App::new().app_data(monitor.clone());
        ROUTES.iter().fold(app, |app, routes| app.configure(|config| routes(config, &monitor)))
    })
    .workers(1)
    // A tap whose client stopped reading cannot finish its stream: it must not hold the stop.
    .shutdown_timeout(2)
    .disable_signals()
    .bind(bind)?;
    let addrs: Vec<String> = server.addrs().iter().map(|a| a.to_string()).collect();
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    tracing::info!(
        bind = %addrs.join(","),
        "monitoring served: /metrics, /metrics/prometheus, /health, /ready, /tap"
    );
    Ok(handle)
}

/// `GET /metrics` (Flume's JSON) and `GET /metrics/prometheus` (text format 0.0.4).
fn metrics_routes(config: &mut web::ServiceConfig, _: &Monitor) {
    config
        .route(
            "/metrics",
            web::get().to(|m: web::Data<Monitor>| async move {
                HttpResponse::Ok().content_type("application/json").body(m.metrics.to_json().to_string())
            }),
        )
        .route(
            "/metrics/prometheus",
            web::get().to(|m: web::Data<Monitor>| async move {
                HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(m.metrics.to_prometheus(&m.agent))
            }),
        );
}

/// `GET /health`: 200 `ok` while the agent runs. `GET /ready`: 200 `ready`, or 503 with the
/// reasons (see [`readiness`]), one per line.
fn health_routes(config: &mut web::ServiceConfig, _: &Monitor) {
    config
        .route("/health", web::get().to(|| async { HttpResponse::Ok().content_type("text/plain").body("ok\n") }))
        .route(
            "/ready",
            web::get().to(|m: web::Data<Monitor>| async move {
                match readiness(&m.metrics) {
                    Ok(()) => HttpResponse::Ok().content_type("text/plain").body("ready\n"),
                    Err(reasons) => HttpResponse::ServiceUnavailable()
                        .content_type("text/plain")
                        .body(reasons.iter().map(|r| format!("{r}\n")).collect::<String>()),
                }
            }),
        );
}

/// `GET /tap`: live events leaving sources and entering sinks ([`crate::tap`]).
fn tap_routes(config: &mut web::ServiceConfig, monitor: &Monitor) {
    crate::tap::routes(monitor.metrics.clone())(config);
}

/// Whether the agent is ready for traffic: every component started (none is still `starting`),
/// none failed (a channel whose storage does not open) and the agent is not stopping.
///
/// # Errors
/// The reasons it is not, one per component, as `CHANNEL.c1: failed: channel storage at DIR
/// failed (I/O): ...` or `SOURCE.r1: starting`.
pub fn readiness(metrics: &Metrics) -> Result<(), Vec<String>> {
    let mut reasons = Vec::new();
    if metrics.is_stopping() {
        reasons.push("the agent is stopping".to_string());
    }
    for (key, counters) in metrics.snapshot() {
        match counters.state().snapshot() {
            (ComponentState::Starting, _) => reasons.push(format!("{key}: starting")),
            (ComponentState::Failed, reason) => {
                reasons.push(format!("{key}: failed: {}", reason.as_deref().unwrap_or("see the log")))
            }
            _ => {}
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_every_component_started_and_no_channel_failed() {
        let m = Metrics::new();
        m.source("r1");
        m.channel("c1").state.set_because(ComponentState::Failed, &"lock held");
        m.sink("k1").state.set(ComponentState::Running);
        let reasons = readiness(&m).unwrap_err();
        assert_eq!(reasons, ["CHANNEL.c1: failed: lock held", "SOURCE.r1: starting"]);
        m.source("r1").state.set(ComponentState::Running);
        m.channel("c1").state.set(ComponentState::Running);
        assert_eq!(readiness(&m), Ok(()));
        m.sink("k1").state.set_because(ComponentState::Restarting, &"disk full");
        assert_eq!(readiness(&m), Ok(()), "a restarting sink has started");
        m.agent_stopping();
        assert_eq!(readiness(&m).unwrap_err(), ["the agent is stopping"]);
    }
}
