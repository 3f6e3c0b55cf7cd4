//! `signoff demo`: the gateway in front of a small built-in app, with a
//! demo user, on one SQLite file. Nothing to set up.

use std::path::PathBuf;

use anyhow::{Context, Result};
use askama::Template;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use clap::Args;
use rand::distributions::{Alphanumeric, DistString};
use signoff::{AccountError, Actor};

use super::serve;
use crate::backend;
use crate::config::{
    AccessFile, ListenOptions, LoginFile, Options, ProxyOptions, SessionOptions, StoreOptions,
    TokenModeOptions,
};

/// `signoff demo` flags.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: String,
    /// The database: sqlite://PATH or a file path
    #[arg(long, default_value = "sqlite://signoff-demo.db", value_name = "URL")]
    pub db: String,
    /// Sign out after this long without a request [default: 30m]
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// PEM certificate chain: serve the demo over HTTPS
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// The demo user's login name.
pub const DEMO_USER: &str = "demo";

/// The demo app's home page. Every demo page records each `pageshow`, so
/// a person (or a browser test) can see whether the page came from the
/// back/forward cache (`templates/demo/base.html`).
#[derive(Template)]
#[template(path = "demo/home.html")]
struct HomePage;

/// A page anyone may see.
#[derive(Template)]
#[template(path = "demo/public.html")]
struct PublicPage;

/// A page behind signoff, showing who signoff says is signed in.
#[derive(Template)]
#[template(path = "demo/private.html")]
struct PrivatePage<'a> {
    which: &'a str,
    user: &'a str,
    csrf: &'a str,
}

/// A demo page as HTML.
fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => (http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn home() -> Response {
    render(&HomePage)
}

async fn public() -> Response {
    (
        [(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=60"),
        )],
        render(&PublicPage),
    )
        .into_response()
}

fn private(which: &str, headers: &HeaderMap) -> Response {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let user = get("x-signoff-user");
    let csrf = get("x-signoff-csrf");
    let page = render(&PrivatePage {
        which,
        user: &user,
        csrf: &csrf,
    });
    (
        // What a careless app sends; signoff replaces it with no-store.
        [(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=3600"),
        )],
        page,
    )
        .into_response()
}

/// The demo's access rules: `/admin` is for the group `admins`, which the
/// demo user is not in, so the demo shows a refusal too; everything else
/// as without rules.
fn demo_access() -> Result<AccessFile> {
    Ok(toml::from_str(
        r#"
        default = "signed_in"
        [[rule]]
        name = "admins only"
        path_prefix = "/admin"
        groups = ["admins"]
        "#,
    )?)
}

/// The built-in upstream app. It compresses its pages like many real
/// servers do (Caddy's `encode zstd gzip`, recent Node): zstd first.
pub fn upstream_app() -> Router {
    Router::new()
        .route("/", get(home))
        .route("/public", get(public))
        .route(
            "/private/a",
            get(|h: HeaderMap| async move { private("A", &h) }),
        )
        .route(
            "/private/b",
            get(|h: HeaderMap| async move { private("B", &h) }),
        )
        // Reached only by members of `admins` (the demo's access rule).
        .route(
            "/admin",
            get(|h: HeaderMap| async move { private("admin", &h) }),
        )
        .route("/api/me", get(api_me))
        .layer(axum::middleware::from_fn(compress_like_a_real_server))
}

/// The coding a server that prefers zstd, then br, then gzip picks from
/// `Accept-Encoding` (an entry with `q=0` is a refusal).
fn preferred_coding(headers: &HeaderMap) -> Option<&'static str> {
    let accepted: Vec<(String, bool)> = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|entry| {
            let mut parts = entry.split(';');
            let coding = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    == Some(0.0)
            });
            (coding, !refused)
        })
        .collect();
    ["zstd", "br", "gzip"]
        .into_iter()
        .find(|c| accepted.iter().any(|(name, ok)| name == c && *ok))
}

async fn compress_like_a_real_server(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder, ZstdEncoder};
    use tokio::io::AsyncReadExt as _;
    let coding = preferred_coding(req.headers());
    let mut response = next.run(req).await;
    response
        .headers_mut()
        .append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    let Some(coding) = coding.filter(|_| is_html) else {
        return response;
    };
    let (mut parts, body) = response.into_parts();
    let Ok(page) = axum::body::to_bytes(body, 1024 * 1024).await else {
        return (http::StatusCode::INTERNAL_SERVER_ERROR, "page too large").into_response();
    };
    let mut out = Vec::new();
    let done = match coding {
        "zstd" => ZstdEncoder::new(&page[..]).read_to_end(&mut out).await,
        "br" => BrotliEncoder::new(&page[..]).read_to_end(&mut out).await,
        _ => GzipEncoder::new(&page[..]).read_to_end(&mut out).await,
    };
    if done.is_err() {
        return (
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "compression failed",
        )
            .into_response();
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding));
    Response::from_parts(parts, axum::body::Body::from(out))
}

/// For API clients (token mode): who signoff says is calling.
async fn api_me(headers: HeaderMap) -> Response {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let body = serde_json::json!({
        "user": get("x-signoff-user"),
        "session": get("x-signoff-session"),
    });
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

/// Creates the demo user, or gives it a new password (ending its sessions).
async fn demo_user(db: &str) -> Result<String> {
    let store = backend::open_db(db, false).await?;
    let accounts = store.accounts();
    let password = Alphanumeric.sample_string(&mut rand::thread_rng(), 16);
    match accounts.add_user(DEMO_USER, &password).await {
        Ok(_) => {}
        Err(AccountError::NameTaken) => {
            let user = accounts.set_password(DEMO_USER, &password).await?;
            accounts.enable(DEMO_USER).await?;
            store
                .cli_sessions()?
                .end_all_for_user(&user.id, None, Actor::Operator, "password_change")
                .await?;
        }
        Err(e) => return Err(e.into()),
    }
    store.close().await;
    Ok(password)
}

/// Runs the demo until Ctrl-C.
pub async fn run(args: DemoArgs) -> Result<()> {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot start the demo app")?;
    let upstream_addr = upstream.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(upstream, upstream_app()).await {
            tracing::error!(error = %e, "the demo app stopped");
        }
    });
    let password = demo_user(&args.db).await?;
    let settings = Options {
        listen: ListenOptions {
            listen: Some(args.listen),
            tls_cert: args.tls_cert,
            tls_key: args.tls_key,
            ..ListenOptions::default()
        },
        proxy: ProxyOptions {
            upstream: Some(format!("http://{upstream_addr}")),
            public_paths: Some(vec!["/".to_owned(), "/public".to_owned()]),
            max_body_bytes: Some(1024 * 1024),
            ..ProxyOptions::default()
        },
        sessions: SessionOptions {
            idle_timeout: args.idle_timeout,
            ..SessionOptions::default()
        },
        store: StoreOptions {
            db: Some(args.db),
            ..StoreOptions::default()
        },
        // Token mode too, so `examples/token-client.sh` has something to talk to.
        tokens: TokenModeOptions {
            tokens: Some(true),
            ..TokenModeOptions::default()
        },
        ..Options::default()
    }
    .check(&LoginFile::default(), Some(&demo_access()?), &[])?;
    serve::run(settings, None, |at| {
        println!("signoff demo is running at {}/", at.public);
        println!("  user:     {DEMO_USER}");
        println!("  password: {password}");
        println!("Sign in, open the private pages, sign out, press Back. Ctrl-C stops.");
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_app_prefers_zstd_like_real_servers() {
        let pick = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_str(value).unwrap(),
            );
            preferred_coding(&h)
        };
        assert_eq!(pick("gzip, deflate, br, zstd"), Some("zstd"));
        assert_eq!(pick("gzip, deflate, br"), Some("br"));
        assert_eq!(pick("gzip, zstd;q=0"), Some("gzip"));
        assert_eq!(pick("deflate"), None);
        assert_eq!(preferred_coding(&HeaderMap::new()), None);
    }

    #[test]
    fn the_demo_home_page_links_to_sign_in_and_out() {
        let html = HomePage.render().unwrap();
        assert!(
            html.contains(
                "<a id=\"sign-in\" href=\"/.signoff/login?next=%2Fprivate%2Fa\">Sign in</a>"
            ),
            "{html}"
        );
        assert!(
            html.contains("<a id=\"sign-out\" href=\"/.signoff/logout\">Sign out</a>"),
            "{html}"
        );
    }
}
