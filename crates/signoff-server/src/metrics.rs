//! `PREFIX/metrics`: counters in the Prometheus text format. Counts only:
//! no user names, handles, digests or addresses.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use signoff::revocation::BusStats;
use signoff::{CachedStore, SessionStore};

/// The gateway's local session cache.
pub type LocalCache = CachedStore<Arc<dyn SessionStore>>;

/// Where the figures come from.
#[derive(Default)]
pub struct Sources {
    /// `sqlite`, `redis` or `postgres`.
    pub store: &'static str,
    /// The local session cache, if on.
    pub cache: Option<Arc<LocalCache>>,
    /// The revocation bus, if the store has one.
    pub bus: Option<Arc<BusStats>>,
    /// Client connections.
    pub connections: Option<Arc<crate::listener::ConnectionStats>>,
}

/// Counters the gateway keeps itself.
#[derive(Debug, Default)]
pub struct Counters {
    /// Store calls that failed (each answered 503 or reported as failed).
    pub store_errors: AtomicU64,
}

fn line(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

/// The exposition text.
pub fn render(sources: &Sources, counters: &Counters) -> String {
    let mut out = String::with_capacity(2048);
    let _ = writeln!(out, "# HELP signoff_store_info The session store in use.");
    let _ = writeln!(out, "# TYPE signoff_store_info gauge");
    let _ = writeln!(out, "signoff_store_info{{backend=\"{}\"}} 1", sources.store);
    line(
        &mut out,
        "signoff_store_errors_total",
        "counter",
        "Store calls that failed; the request was refused (503) or reported as failed.",
        counters.store_errors.load(Ordering::Relaxed),
    );
    if let Some(c) = &sources.connections {
        for (name, kind, help, value) in [
            ("open", "gauge", "Client connections open now.", &c.open),
            (
                "max",
                "gauge",
                "The cap on open client connections.",
                &c.max,
            ),
            (
                "shed_total",
                "counter",
                "Connections closed at the cap to make room; none had carried a live session.",
                &c.shed,
            ),
            (
                "refused_total",
                "counter",
                "New connections closed at once: at the cap, with none that could be shed.",
                &c.refused,
            ),
            (
                "timed_out_total",
                "counter",
                "Connections closed for taking too long: TLS handshake, first request, or idle.",
                &c.timed_out,
            ),
        ] {
            let name = format!("signoff_connections_{name}");
            line(&mut out, &name, kind, help, value.load(Ordering::Relaxed));
        }
    }
    if let Some(cache) = &sources.cache {
        let stats = cache.stats();
        line(
            &mut out,
            "signoff_session_cache_hits_total",
            "counter",
            "Session checks answered from this node's memory.",
            stats.hits(),
        );
        line(
            &mut out,
            "signoff_session_cache_misses_total",
            "counter",
            "Session checks not answered from memory (not cached or too old); each read the store, except the shared ones.",
            stats.misses(),
        );
        line(
            &mut out,
            "signoff_session_cache_shared_total",
            "counter",
            "Missed session checks that took the answer of another check's store read of the same session instead of reading.",
            stats.shared(),
        );
        line(&mut out, "signoff_session_cache_bypassed_total", "counter",
            "Session checks that read the store because the cache was not trusted (revocation bus down).",
            stats.bypassed());
        line(
            &mut out,
            "signoff_session_cache_entries",
            "gauge",
            "Sessions cached on this node.",
            cache.len(),
        );
        line(
            &mut out,
            "signoff_session_cache_trusted",
            "gauge",
            "1 if the cache may answer, 0 while every check reads the store.",
            u8::from(cache.is_trusted()),
        );
    }
    if let Some(bus) = &sources.bus {
        line(
            &mut out,
            "signoff_bus_connected",
            "gauge",
            "1 while subscribed to the revocation bus and hearing heartbeats.",
            u8::from(bus.connected()),
        );
        line(
            &mut out,
            "signoff_bus_invalidations_total",
            "counter",
            "Session changes announced on the bus and applied here.",
            bus.invalidations(),
        );
        line(
            &mut out,
            "signoff_bus_heartbeats_total",
            "counter",
            "Heartbeats heard from any node.",
            bus.heartbeats(),
        );
        line(&mut out, "signoff_bus_losses_total", "counter",
            "Times the bus was lost; each empties the cache and stops trusting it until resubscribed.",
            bus.losses());
        line(
            &mut out,
            "signoff_bus_publish_errors_total",
            "counter",
            "Heartbeats this node could not publish.",
            bus.publish_errors(),
        );
        line(
            &mut out,
            "signoff_bus_lag_seconds",
            "gauge",
            "Publish-to-delivery time of this node's latest heartbeat.",
            bus.last_lag().as_secs_f64(),
        );
        line(
            &mut out,
            "signoff_bus_lag_max_seconds",
            "gauge",
            "Largest publish-to-delivery time of this node's heartbeats since start.",
            bus.max_lag().as_secs_f64(),
        );
    }
    out
}
