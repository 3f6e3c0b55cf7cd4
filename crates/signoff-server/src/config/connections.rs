//! Connection time limits and the connection cap.

use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::parse_duration;

section! {
    /// Connection time limits and cap.
    pub struct ConnectionOptions {
        /// Longest a client may take from connecting to the end of its first
        /// request's headers (TLS handshake included), and to send a form or
        /// JSON body to signoff's own pages, e.g. 10s [default: 10s] [file: client_timeout]
        #[arg(long, env = "SIGNOFF_CLIENT_TIMEOUT", value_name = "DURATION", display_order = 33)]
        pub client_timeout: Option<String>,
        /// Longest a connection may stay open with no request in progress
        /// (HTTP/1 keep-alive, HTTP/2 with no open stream), e.g. 60s
        /// [default: 60s] [file: keepalive_timeout]
        #[arg(long, env = "SIGNOFF_KEEPALIVE_TIMEOUT", value_name = "DURATION", display_order = 34)]
        pub keepalive_timeout: Option<String>,
        /// Most client connections open at once; beyond it the oldest
        /// connection that has not shown a live session is closed
        /// [default: from the file-descriptor limit] [file: max_connections]
        #[arg(long, env = "SIGNOFF_MAX_CONNECTIONS", value_name = "N", display_order = 35)]
        pub max_connections: Option<usize>,
    }
}

/// How long clients may take, and how many may be connected. Every phase
/// of a connection is bounded, so silent clients cannot pile up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// From accept to the end of the first request's headers (TLS
    /// handshake included); also the deadline for a body sent to
    /// signoff's own endpoints.
    pub client_timeout: Duration,
    /// Longest a connection stays open with no request in progress.
    pub keepalive_timeout: Duration,
    /// Most open client connections; `None`: derived from the
    /// file-descriptor limit at start.
    pub max_connections: Option<usize>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            client_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            max_connections: None,
        }
    }
}

impl ConnectionOptions {
    pub(super) fn check(self) -> Result<ConnectionLimits> {
        let mut limits = ConnectionLimits::default();
        if let Some(t) = &self.client_timeout {
            limits.client_timeout = parse_duration(t).context("--client-timeout")?;
        }
        if let Some(t) = &self.keepalive_timeout {
            limits.keepalive_timeout = parse_duration(t).context("--keepalive-timeout")?;
        }
        if limits.client_timeout > Duration::from_secs(300) {
            bail!("--client-timeout: at most 5m");
        }
        if limits.keepalive_timeout > Duration::from_secs(3600) {
            bail!("--keepalive-timeout: at most 1h");
        }
        if self.max_connections == Some(0) {
            bail!("--max-connections 0: expected at least 1 (leave it out for the default)");
        }
        limits.max_connections = self.max_connections;
        Ok(limits)
    }
}
