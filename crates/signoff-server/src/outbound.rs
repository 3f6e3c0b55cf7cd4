//! The HTTPS client signoff uses towards other services it does not run:
//! an OpenID provider (gateway/oidc/provider.rs) and the app `signoff
//! check` audits (check/visitor.rs); and the connector under the upstream
//! client (gateway/upstream_client.rs). Certificates are checked against the
//! system's roots; HTTP/1.1; no cookies or redirects of its own (each user
//! handles those).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

/// A client whose requests carry a whole body.
pub type OutboundClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client that gives up connecting after `connect_timeout`.
pub fn client(connect_timeout: Duration) -> Result<OutboundClient> {
    let connector = connector(system_roots(), connect_timeout)?;
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// The system's root certificates (those that parse).
pub fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(found.certs);
    roots
}

/// HTTP or HTTPS (checked against `roots`), HTTP/1.1, no Nagle delay; the
/// connector the upstream client (gateway/upstream_client.rs) builds on
/// too.
pub fn connector(
    roots: RootCertStore,
    connect_timeout: Duration,
) -> Result<HttpsConnector<HttpConnector>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS set-up")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}
