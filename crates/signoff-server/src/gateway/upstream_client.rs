//! The pooled client towards the upstream: plain HTTP, or HTTPS checked
//! against the system's roots or `--upstream-ca` (docs/gateway.md,
//! "HTTPS upstreams"). HTTP/1.1 either way, so upgrades (WebSocket) go
//! through the same client.

use anyhow::{bail, Result};
use axum::body::Body;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio_rustls::rustls::{self, RootCertStore};

use crate::config::Settings;
use crate::outbound;

/// The client every proxied request goes through.
pub(super) type UpstreamClient = Client<HttpsConnector<HttpConnector>, Body>;

/// A client for `settings.upstream`: the roots are read only for an
/// `https://` upstream (an `http://` one never uses TLS).
pub(super) fn build(settings: &Settings) -> Result<UpstreamClient> {
    let https = settings
        .upstream
        .as_ref()
        .is_some_and(|u| u.scheme_str() == Some("https"));
    let roots = if https {
        roots(settings)?
    } else {
        RootCertStore::empty()
    };
    if let Some(upstream) = &settings.upstream {
        tracing::info!(
            %upstream,
            connect_timeout = %humantime::format_duration(settings.upstream_connect_timeout),
            timeout = %humantime::format_duration(settings.upstream_timeout),
            tunnel_idle_timeout = %humantime::format_duration(settings.tunnel_idle_timeout),
            "upstream time limits"
        );
    }
    let connector = outbound::connector(roots, settings.upstream_connect_timeout)?;
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .build(connector))
}

/// `--upstream-ca`'s certificates, else the system's roots.
fn roots(settings: &Settings) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    if let Some(ca) = &settings.upstream_ca {
        let (added, ignored) = roots.add_parsable_certificates(ca.certs.iter().cloned());
        if added == 0 {
            bail!(
                "--upstream-ca {}: none of its {ignored} certificate(s) can be used as a \
                 root; give the PEM certificate of the CA that signed the upstream's certificate",
                ca.path.display()
            );
        }
        tracing::info!(ca = %ca.path.display(), roots = added, "the upstream's certificate is checked against --upstream-ca only");
        return Ok(roots);
    }
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(error = %e, "a system root certificate could not be read");
    }
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        bail!(
            "--upstream is https:// but no system root certificates could be loaded \
             (install the ca-certificates package, or give the CA that signed the \
             upstream's certificate with --upstream-ca FILE)"
        );
    }
    tracing::info!(
        roots = added,
        "the upstream's certificate is checked against the system's roots"
    );
    Ok(roots)
}

/// The TLS error behind a failed upstream request, if it is one (a
/// certificate that could not be verified, a handshake failure).
pub(super) fn tls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // `io::Error::source` skips the error it wraps (hyper-rustls wraps
        // tokio-rustls's io::Error in another): look inside instead.
        current = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

/// Logs why an upstream request failed; a certificate that could not be
/// verified says so, with rustls's reason, and names `--upstream-ca`.
pub(super) fn log_failure(settings: &Settings, e: &(dyn std::error::Error + 'static)) {
    let upstream = settings
        .upstream
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    match tls_error(e) {
        Some(
            tls @ (rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::UnsupportedNameType),
        ) => {
            let against = match &settings.upstream_ca {
                Some(ca) => format!("--upstream-ca {}", ca.path.display()),
                None => "the system's root certificates".to_owned(),
            };
            tracing::error!(
                %upstream,
                "the upstream's TLS certificate could not be verified ({tls}) against {against}; \
                 if a private CA signed it, give that CA's PEM certificate with \
                 --upstream-ca FILE (SIGNOFF_UPSTREAM_CA, upstream_ca), and check that the \
                 certificate names the host in --upstream"
            );
        }
        Some(tls) => {
            tracing::error!(%upstream, reason = %tls, "TLS with the upstream failed ({tls})");
        }
        None => tracing::warn!(%upstream, error = %e, "upstream request failed"),
    }
}
