//! Where signoff listens and the URL browsers use: address, public URL,
//! TLS files.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::ArgAction;

use super::TlsFiles;

section! {
    /// Listening address, public URL and TLS.
    pub struct ListenOptions {
        /// Address to listen on [default: 127.0.0.1:8080] [file: listen]
        #[arg(long, env = "SIGNOFF_LISTEN", value_name = "ADDR", display_order = 1)]
        pub listen: Option<String>,
        /// The URL browsers use to reach signoff, e.g. https://app.example.com;
        /// sets the cookie's security and the origin that state changes must
        /// come from [default: http://LISTEN] [file: public_url]
        #[arg(long, env = "SIGNOFF_PUBLIC_URL", value_name = "URL", display_order = 2)]
        pub public_url: Option<String>,
        /// PEM certificate chain: serve HTTPS with it [file: tls_cert]
        #[arg(
            long,
            env = "SIGNOFF_TLS_CERT",
            value_name = "PATH",
            requires = "tls_key",
            display_order = 7
        )]
        pub tls_cert: Option<PathBuf>,
        /// PEM private key for --tls-cert [file: tls_key]
        #[arg(
            long,
            env = "SIGNOFF_TLS_KEY",
            value_name = "PATH",
            requires = "tls_cert",
            display_order = 8
        )]
        pub tls_key: Option<PathBuf>,
        /// Allow a plain-HTTP public URL on a non-loopback address (the session
        /// cookie then travels unencrypted) [file: allow_insecure_http]
        #[arg(long, env = "SIGNOFF_ALLOW_INSECURE_HTTP", value_name = "BOOL",
              num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set,
              display_order = 9)]
        pub allow_insecure_http: Option<bool>,
    }
}

impl ListenOptions {
    /// The TLS files, if both are given.
    pub(super) fn tls(&self) -> Result<Option<TlsFiles>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            })),
            (None, None) => Ok(None),
            _ => bail!("--tls-cert and --tls-key go together"),
        }
    }
}

/// Returns (origin, is_https, host).
pub(super) fn parse_public_url(text: &str) -> Result<(String, bool, String)> {
    // Messages show the URL without a password it may hold.
    let shown = signoff::store::redact_url(text);
    let uri: http::Uri = text
        .parse()
        .with_context(|| format!("--public-url {shown:?} is not a URL"))?;
    let secure = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => bail!("--public-url {shown}: expected http:// or https://"),
    };
    let Some(authority) = uri.authority() else {
        bail!("--public-url {shown}: no host");
    };
    if authority.as_str().contains('@') {
        bail!("--public-url {shown}: user info is not allowed");
    }
    if !matches!(uri.path(), "" | "/") {
        bail!("--public-url {shown}: signoff must be at the root of its origin (no path)");
    }
    let scheme = if secure { "https" } else { "http" };
    let default_port = if secure { 443 } else { 80 };
    let host = authority.host().to_ascii_lowercase();
    let origin = match authority.port_u16() {
        Some(port) if port != default_port => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    };
    Ok((origin, secure, host))
}

/// Whether a host name is a loopback address (`localhost`, 127/8, ::1).
pub use signoff::web::origin::is_loopback_host;
