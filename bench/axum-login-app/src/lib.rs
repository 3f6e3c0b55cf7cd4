//! What both binaries share: signoff-example's private page (its own
//! templates, see askama.toml) and the listening line.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

/// signoff-example's `PrivatePage`, field for field.
#[derive(Template)]
#[template(path = "private.html")]
pub struct PrivatePage<'a> {
    pub title: &'a str,
    pub user: &'a str,
    pub csrf: String,
}

/// The page for `user`. Neither app here has a CSRF token: a fixed one
/// of the length signoff's keeps the page the same size.
pub fn dashboard(user: &str) -> Response {
    let page = PrivatePage {
        title: "Dashboard",
        user,
        csrf: "x".repeat(43),
    };
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Binds ADDR (port 0: any free one) and says where, as the script waits for.
pub async fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    Ok(listener)
}
