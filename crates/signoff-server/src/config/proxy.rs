//! The upstream and what passes to it: public paths, trusted proxies, the
//! guard, body size, signoff's own prefix.

use std::net::IpAddr;

use anyhow::{bail, Context, Result};
use clap::ArgAction;
use ipnet::IpNet;

section! {
    /// The upstream and the proxying to it.
    pub struct ProxyOptions {
        /// The app to protect, e.g. http://127.0.0.1:5000 or https://app.internal
        /// (scheme, host and port, no path); without it signoff serves
        /// forward-auth only (for nginx, Caddy, Traefik) and answers 404
        /// outside its prefix [file: upstream]
        #[arg(long, env = "SIGNOFF_UPSTREAM", value_name = "URL", display_order = 0)]
        pub upstream: Option<String>,
        /// Paths that need no session: `/x/` matches everything under /x/, any
        /// other entry matches exactly; repeat or separate with commas
        /// [file: public_paths]
        #[arg(
            long = "public-path",
            env = "SIGNOFF_PUBLIC_PATHS",
            value_name = "PATH",
            value_delimiter = ',',
            display_order = 10
        )]
        pub public_paths: Option<Vec<String>>,
        /// Proxies (IPs or CIDRs) whose X-Forwarded-For is believed; repeat or
        /// separate with commas [file: trusted_proxies]
        #[arg(
            long = "trusted-proxy",
            env = "SIGNOFF_TRUSTED_PROXIES",
            value_name = "CIDR",
            value_delimiter = ',',
            display_order = 11
        )]
        pub trusted_proxies: Option<Vec<String>>,
        /// Inject the back-button guard script into upstream HTML [default: true] [file: inject_guard]
        #[arg(long, env = "SIGNOFF_INJECT_GUARD", value_name = "BOOL",
              num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set,
              display_order = 12)]
        pub inject_guard: Option<bool>,
        /// Send a private page whose Content-Encoding the guard cannot read
        /// without the guard, instead of refusing it with 502 [default: false]
        /// [file: allow_unguarded_html]
        #[arg(long, env = "SIGNOFF_ALLOW_UNGUARDED_HTML", value_name = "BOOL",
              num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set,
              display_order = 13)]
        pub allow_unguarded_html: Option<bool>,
        /// Largest request body passed to the upstream, in bytes (413 beyond)
        /// [default: 67108864 (64 MiB)] [file: max_body_bytes]
        #[arg(long, env = "SIGNOFF_MAX_BODY_BYTES", value_name = "BYTES", display_order = 16)]
        pub max_body_bytes: Option<u64>,
        /// URL prefix of signoff's own pages [default: /.signoff] [file: prefix]
        #[arg(long, env = "SIGNOFF_PREFIX", value_name = "PATH", display_order = 17)]
        pub prefix: Option<String>,
    }
}

pub(super) fn parse_upstream(text: &str) -> Result<http::Uri> {
    // Messages show the URL without a password it may hold.
    let shown = signoff::store::redact_url(text);
    let uri: http::Uri = text
        .parse()
        .with_context(|| format!("--upstream {shown:?} is not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => bail!("--upstream {shown}: expected http://HOST:PORT or https://HOST:PORT"),
    }
    if uri.host().is_none_or(str::is_empty) {
        bail!("--upstream {shown}: no host");
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        bail!("--upstream {shown}: a user or password in the URL is not supported; give scheme, host and port only");
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        let origin = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or("http"),
            uri.authority().map_or("", |a| a.as_str())
        );
        bail!(
            "--upstream {shown}: a path is not supported; give scheme, host and port only \
             (--upstream {origin}). signoff passes each path through unchanged, so serve the \
             app under the same path it has in the public URL: for JupyterLab at \
             https://example.com/lab/, run it with --ServerApp.base_url=/lab/ and give \
             --upstream http://127.0.0.1:8888 (docs/gateway.md, \"Apps under a sub-path\")"
        );
    }
    Ok(uri)
}

pub(super) fn public_paths(paths: Vec<String>) -> Result<Vec<String>> {
    paths
        .into_iter()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .map(|p| {
            if !p.starts_with('/') || p.contains(['?', '#', '\\']) || p.contains("..") {
                bail!("public path {p:?}: expected an absolute path such as /static/ or /health");
            }
            Ok(p)
        })
        .collect()
}

pub(super) fn trusted_proxies(proxies: &[String]) -> Result<Vec<IpNet>> {
    proxies
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<IpNet>()
                .or_else(|_| p.parse::<IpAddr>().map(IpNet::from))
                .with_context(|| format!("trusted proxy {p:?}: expected an IP or a CIDR"))
        })
        .collect()
}

pub(super) fn prefix(given: &str) -> Result<String> {
    let prefix = given.trim_end_matches('/').to_owned();
    if !prefix.starts_with('/')
        || prefix.len() < 2
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
    {
        bail!("prefix {given:?}: expected a path such as /.signoff");
    }
    Ok(prefix)
}
