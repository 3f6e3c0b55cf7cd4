//! The connection to the upstream: the CA an HTTPS upstream's certificate
//! is checked against, and how long connecting, answering and an idle
//! tunnel may take.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateDer;

use super::parse_duration;

section! {
    /// The connection to the upstream.
    pub struct UpstreamOptions {
        /// PEM file with the CA certificate(s) an https:// upstream's
        /// certificate must chain to, instead of the system's roots
        /// [file: upstream_ca]
        #[arg(long, env = "SIGNOFF_UPSTREAM_CA", value_name = "PATH", display_order = 36)]
        pub upstream_ca: Option<PathBuf>,
        /// Longest a TCP connection to the upstream may take to open, e.g. 5s
        /// [default: 5s] [file: upstream_connect_timeout]
        #[arg(long, env = "SIGNOFF_UPSTREAM_CONNECT_TIMEOUT", value_name = "DURATION",
              display_order = 37)]
        pub upstream_connect_timeout: Option<String>,
        /// Longest the upstream may take to send its response headers (504
        /// beyond), e.g. 60s [default: 60s] [file: upstream_timeout]
        #[arg(long, env = "SIGNOFF_UPSTREAM_TIMEOUT", value_name = "DURATION", display_order = 38)]
        pub upstream_timeout: Option<String>,
        /// A WebSocket with no bytes either
        /// way for this long is closed, e.g. 15m [default: 15m]
        /// [file: tunnel_idle_timeout]
        #[arg(long, env = "SIGNOFF_TUNNEL_IDLE_TIMEOUT", value_name = "DURATION",
              display_order = 39)]
        pub tunnel_idle_timeout: Option<String>,
    }
}

/// The CA certificates given with `--upstream-ca`, read at start.
#[derive(Debug, Clone)]
pub struct UpstreamCa {
    /// The file they came from (for messages).
    pub path: PathBuf,
    /// The certificates, at least one.
    pub certs: Vec<CertificateDer<'static>>,
}

/// The upstream connection settings, checked.
pub(super) struct UpstreamLimits {
    pub upstream_ca: Option<UpstreamCa>,
    pub upstream_connect_timeout: Duration,
    pub upstream_timeout: Duration,
    pub tunnel_idle_timeout: Duration,
}

impl UpstreamOptions {
    /// `https` says whether the upstream is an `https://` URL.
    pub(super) fn check(self, https: bool) -> Result<UpstreamLimits> {
        let duration = |given: &Option<String>, flag: &str, default: Duration| match given {
            Some(t) => parse_duration(t).with_context(|| flag.to_owned()),
            None => Ok(default),
        };
        let upstream_connect_timeout = duration(
            &self.upstream_connect_timeout,
            "--upstream-connect-timeout",
            Duration::from_secs(5),
        )?;
        let upstream_timeout = duration(
            &self.upstream_timeout,
            "--upstream-timeout",
            Duration::from_secs(60),
        )?;
        let tunnel_idle_timeout = duration(
            &self.tunnel_idle_timeout,
            "--tunnel-idle-timeout",
            Duration::from_secs(15 * 60),
        )?;
        let upstream_ca = match self.upstream_ca {
            Some(path) if https => Some(read_ca(&path)?),
            Some(path) => bail!(
                "--upstream-ca {}: only an https:// upstream is checked against a CA; \
                 give --upstream https://HOST:PORT, or leave --upstream-ca out",
                path.display()
            ),
            None => None,
        };
        Ok(UpstreamLimits {
            upstream_ca,
            upstream_connect_timeout,
            upstream_timeout,
            tunnel_idle_timeout,
        })
    }
}

/// Reads one or more PEM certificates; missing, unreadable, malformed or
/// empty is an error that says what was expected.
fn read_ca(path: &Path) -> Result<UpstreamCa> {
    let shown = path.display();
    let text = std::fs::read(path)
        .with_context(|| format!("--upstream-ca {shown}: cannot read the file"))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            anyhow::anyhow!("--upstream-ca {shown}: not a PEM certificate file ({e:?})")
        })?;
    if certs.is_empty() {
        bail!(
            "--upstream-ca {shown}: no certificate in the file; expected one or more \
             PEM blocks \"-----BEGIN CERTIFICATE-----\" (the CA that signed the upstream's \
             certificate)"
        );
    }
    Ok(UpstreamCa {
        path: path.to_owned(),
        certs,
    })
}
