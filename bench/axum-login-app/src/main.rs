//! signoff-example's sign-in and private page on axum-login +
//! tower-sessions, sessions in SQLite (tower-sessions-sqlx-store), laid
//! out as axum-login's own sqlite example: a backend, `AuthSession` in the
//! login handler, `login_required!` over the private routes. One user,
//! from the command line; the sessions are in the SQLite file.
//!
//! ```sh
//! axum-login-app --listen 127.0.0.1:3002 --db sessions.db --user alice --password secret
//! ```

use std::net::SocketAddr;

use axum::http::StatusCode;
use axum::{
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
    Form, Router,
};
use axum_login::{login_required, AuthManagerLayerBuilder, AuthUser, AuthnBackend, UserId};
use clap::Parser;
use serde::Deserialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool};
use time::Duration;
use tower_sessions::{Expiry, SessionManagerLayer};
use tower_sessions_sqlx_store::SqliteStore;

#[derive(Parser)]
struct Args {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:3002")]
    listen: SocketAddr,
    /// The SQLite file of the sessions (made if missing).
    #[arg(long, default_value = "sessions.db")]
    db: String,
    /// The one user's name.
    #[arg(long, env = "APP_USER")]
    user: String,
    /// And password.
    #[arg(long, env = "APP_PASSWORD")]
    password: String,
}

#[derive(Clone)]
struct User {
    id: i64,
    username: String,
    pw_hash: String,
}

// Not derived: keeps the hash out of logs, as axum-login's example does.
impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .finish()
    }
}

impl AuthUser for User {
    type Id = i64;

    fn id(&self) -> i64 {
        self.id
    }

    // A new password ends the sessions made with the old one.
    fn session_auth_hash(&self) -> &[u8] {
        self.pw_hash.as_bytes()
    }
}

#[derive(Clone, Deserialize)]
struct Credentials {
    username: String,
    password: String,
    next: Option<String>,
}

/// The one user, held in memory: each request's cost is the session's.
#[derive(Clone)]
struct Backend {
    user: User,
}

impl AuthnBackend for Backend {
    type User = User;
    type Credentials = Credentials;
    type Error = std::convert::Infallible;

    async fn authenticate(&self, creds: Credentials) -> Result<Option<User>, Self::Error> {
        let ok = creds.username == self.user.username
            && password_auth::verify_password(&creds.password, &self.user.pw_hash).is_ok();
        Ok(ok.then(|| self.user.clone()))
    }

    async fn get_user(&self, id: &UserId<Self>) -> Result<Option<User>, Self::Error> {
        Ok((*id == self.user.id).then(|| self.user.clone()))
    }
}

type AuthSession = axum_login::AuthSession<Backend>;

async fn login(mut auth: AuthSession, Form(creds): Form<Credentials>) -> Response {
    let user = match auth.authenticate(creds.clone()).await {
        Ok(Some(user)) => user,
        Ok(None) => return StatusCode::UNAUTHORIZED.into_response(),
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    if auth.login(&user).await.is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    // Only a path on this site.
    let next = creds
        .next
        .filter(|n| n.starts_with('/') && !n.starts_with("//"));
    Redirect::to(next.as_deref().unwrap_or("/dashboard")).into_response()
}

// Behind `login_required!`: the session always has its user here.
async fn dashboard(auth: AuthSession) -> Response {
    match auth.user {
        Some(user) => axum_login_app::dashboard(&user.username),
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();

    let options = SqliteConnectOptions::new()
        .filename(&args.db)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal);
    let session_store = SqliteStore::new(SqlitePool::connect_with(options).await?);
    session_store.migrate().await?;
    let session_layer = SessionManagerLayer::new(session_store)
        .with_secure(false)
        .with_expiry(Expiry::OnInactivity(Duration::days(1)));

    let user = User {
        id: 1,
        username: args.user,
        pw_hash: password_auth::generate_hash(&args.password),
    };
    let auth_layer = AuthManagerLayerBuilder::new(Backend { user }, session_layer).build();

    let app = Router::new()
        .route("/dashboard", get(dashboard))
        .route_layer(login_required!(Backend, login_url = "/login"))
        .route("/login", post(login))
        .layer(auth_layer);

    let listener = axum_login_app::listen(args.listen).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
