//! The files signoff's pages load from its own origin: the stylesheet (or
//! the operator's replacement from `--template-dir`), the accent
//! stylesheet, the operator's extra stylesheet and logo, and the sessions
//! page's script. Each is the same for everyone and keeps its own
//! `Cache-Control` ([`StaticAsset`]). The logo and `extra.css` carry a hash
//! of their bytes in their URL and `brand.css` its colour, so they are
//! cached for a year; the stylesheet (built-in or the operator's) and the
//! script are cached for a day.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::pages::STYLESHEET;
use super::{AppState, Gateway};
use crate::config::LogoKind;

/// The script of the sessions page: times in the reader's language.
pub const SCRIPT: &str = include_str!("../../templates/signoff.js");

/// The CSP of an SVG logo opened by itself: no script, no requests, a
/// sandbox, so a hostile SVG can do nothing in signoff's origin.
pub const SVG_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; sandbox";

/// A day: for the built-in files, whose URLs do not change with a release.
const DAY: &str = "public, max-age=86400";
/// A year: for files whose URL carries a hash of their bytes.
const YEAR: &str = "public, max-age=31536000, immutable";

/// Marks a response that is the same for everyone and keeps its own
/// `Cache-Control` (signoff's other responses are `no-store`).
#[derive(Clone, Copy)]
pub struct StaticAsset;

/// The asset family's routes; the operator's files only when given.
pub(super) fn routes(gw: &Gateway) -> Router<Arc<Gateway>> {
    let p = &gw.settings.prefix;
    let brand = &gw.settings.branding;
    let mut routes = Router::new()
        .route(&format!("{p}/signoff.css"), get(stylesheet))
        .route(&format!("{p}/signoff.js"), get(script));
    if brand.accent.is_some() {
        routes = routes.route(&format!("{p}/brand.css"), get(accent_stylesheet));
    }
    if brand.extra_css.is_some() {
        routes = routes.route(&format!("{p}/brand/extra.css"), get(extra_stylesheet));
    }
    if brand.logo.is_some() {
        routes = routes.route(&format!("{p}/brand/logo"), get(logo));
    }
    routes
}

/// `body` as a static asset of this type, cached this long.
fn asset(body: impl IntoResponse, content_type: &'static str, cache: &'static str) -> Response {
    let mut response = body.into_response();
    response.extensions_mut().insert(StaticAsset);
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// `GET /signoff.css`: the built-in stylesheet, or the template
/// directory's; the same bytes for the life of the process, so browsers
/// may keep it a day (a new release is at most a day stale).
async fn stylesheet(State(gw): AppState) -> Response {
    let css = match &gw.settings.branding.stylesheet {
        Some(own) => own.to_string(),
        None => STYLESHEET.to_owned(),
    };
    asset(css, "text/css; charset=utf-8", DAY)
}

/// `GET /signoff.js`.
async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8", DAY)
}

/// `{prefix}/brand.css`: the accent colour, checked at start.
#[derive(Template)]
#[template(path = "brand.css", escape = "none")]
struct AccentStylesheet<'a> {
    accent: &'a str,
    on_accent: &'a str,
}

/// `GET /brand.css`.
async fn accent_stylesheet(State(gw): AppState) -> Response {
    let Some(accent) = &gw.settings.branding.accent else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let page = AccentStylesheet {
        accent: accent.as_str(),
        on_accent: accent.text_on(),
    };
    match page.render() {
        Ok(css) => asset(css, "text/css; charset=utf-8", YEAR),
        Err(e) => {
            tracing::error!(error = %e, "the accent stylesheet could not be rendered");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// `GET /brand/extra.css`.
async fn extra_stylesheet(State(gw): AppState) -> Response {
    match &gw.settings.branding.extra_css {
        Some(extra) => asset(extra.text.to_string(), "text/css; charset=utf-8", YEAR),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `GET /brand/logo`: the operator's logo with its checked type; an SVG
/// also with [`SVG_CSP`].
async fn logo(State(gw): AppState) -> Response {
    let Some(logo) = &gw.settings.branding.logo else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut response = asset(logo.bytes.clone(), logo.kind.content_type(), YEAR);
    if logo.kind == LogoKind::Svg {
        response.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(SVG_CSP),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accent_stylesheet_holds_only_the_checked_colour() {
        let brand = crate::config::BrandingOptions {
            brand_accent: Some("#C0FFEE".to_owned()),
            ..Default::default()
        }
        .check()
        .unwrap();
        let accent = brand.accent.unwrap();
        let css = AccentStylesheet {
            accent: accent.as_str(),
            on_accent: accent.text_on(),
        }
        .render()
        .unwrap();
        assert!(css.contains("--accent: #c0ffee;"), "{css}");
        assert!(css.contains("--on-accent: #000000;"), "{css}");
        let (_comment, code) = css.split_once("*/").unwrap();
        assert_eq!(
            code.trim(),
            ":root {\n  --accent: #c0ffee;\n  --on-accent: #000000;\n}",
            "{css}"
        );
    }

    #[test]
    fn the_script_uses_intl_and_nothing_from_elsewhere() {
        assert!(SCRIPT.contains("Intl.RelativeTimeFormat(lang"));
        assert!(SCRIPT.contains("Intl.DateTimeFormat(lang"));
        assert!(SCRIPT.contains("navigator.language"));
        for banned in [
            "http:",
            "https:",
            "eval(",
            "innerHTML",
            "fetch(",
            "XMLHttpRequest",
        ] {
            assert!(!SCRIPT.contains(banned), "{banned}");
        }
    }

    #[test]
    fn an_svg_logo_cannot_run_script() {
        assert!(SVG_CSP.contains("default-src 'none'") && SVG_CSP.contains("sandbox"));
        assert!(!SVG_CSP.contains("script-src"));
    }
}
