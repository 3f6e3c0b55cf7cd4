//! Security headers: `Strict-Transport-Security` and the `Clear-Site-Data`
//! sent at logout.

use anyhow::{bail, Context, Result};

/// Default `Clear-Site-Data` values sent at logout. `prefetchCache` and
/// `prerenderCache` stop Chromium from showing a page it prerendered
/// before logout; other browsers ignore them.
pub const DEFAULT_CLEAR_SITE_DATA: [&str; 5] = [
    "cache",
    "cookies",
    "storage",
    "prefetchCache",
    "prerenderCache",
];
const CLEAR_SITE_DATA_VALUES: [&str; 7] = [
    "cache",
    "cookies",
    "storage",
    "executionContexts",
    "prefetchCache",
    "prerenderCache",
    "*",
];

section! {
    /// Security headers.
    pub struct HeaderOptions {
        /// Strict-Transport-Security value sent on every answer, or "off"
        /// [default: max-age=31536000 when signoff serves TLS itself, else off]
        /// [file: hsts]
        #[arg(long, env = "SIGNOFF_HSTS", value_name = "VALUE", display_order = 14)]
        pub hsts: Option<String>,
        /// Clear-Site-Data values sent at logout, comma-separated
        /// [default: cache,cookies,storage,prefetchCache,prerenderCache] [file: clear_site_data]
        #[arg(
            long,
            env = "SIGNOFF_CLEAR_SITE_DATA",
            value_name = "LIST",
            value_delimiter = ',',
            display_order = 15
        )]
        pub clear_site_data: Option<Vec<String>>,
    }
}

/// The `Strict-Transport-Security` value: off unless signoff serves TLS
/// itself or one is given, and only for an HTTPS public URL.
pub(super) fn hsts_header(
    value: Option<&str>,
    secure: bool,
    tls: bool,
) -> Result<Option<http::HeaderValue>> {
    let value = match value.map(str::trim) {
        Some(v) if v.is_empty() || v.eq_ignore_ascii_case("off") => return Ok(None),
        Some(v) => v,
        None if tls => "max-age=31536000",
        None => return Ok(None),
    };
    let has_max_age = value.split(';').any(|d| {
        d.trim().split_once('=').is_some_and(|(n, v)| {
            n.trim().eq_ignore_ascii_case("max-age")
                && !v.is_empty()
                && v.trim().bytes().all(|b| b.is_ascii_digit())
        })
    });
    if !has_max_age {
        bail!("--hsts {value:?}: expected a value such as max-age=31536000 (with optional ; includeSubDomains), or off");
    }
    if !secure {
        bail!("--hsts: the public URL is plain HTTP, and browsers take HSTS only over HTTPS; leave it off or use an https public URL");
    }
    http::HeaderValue::from_str(value)
        .map(Some)
        .with_context(|| format!("--hsts {value:?}: not a valid header value"))
}

pub(super) fn clear_site_data_header(values: Option<Vec<String>>) -> Result<Option<String>> {
    let values = match values {
        None => DEFAULT_CLEAR_SITE_DATA
            .iter()
            .map(|v| v.to_string())
            .collect(),
        Some(v) => v,
    };
    let mut out = Vec::new();
    for value in values {
        let value = value.trim().trim_matches('"');
        if value.is_empty() || value == "none" {
            continue;
        }
        if !CLEAR_SITE_DATA_VALUES.contains(&value) {
            bail!(
                "clear_site_data {value:?}: expected some of {}, or none",
                CLEAR_SITE_DATA_VALUES.join(", ")
            );
        }
        out.push(format!("\"{value}\""));
    }
    Ok((!out.is_empty()).then(|| out.join(", ")))
}
