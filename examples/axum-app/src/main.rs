//! An axum app whose sign-out holds, on signoff's sessions.
//!
//! Read it top to bottom: the setup in `main`, then one handler per page.
//! What signoff does for you is in three places:
//!
//! - [`Deployment::open`] opens the store (SQLite here, Redis or PostgreSQL
//!   by URL) with its cache, revocation bus and purge loop;
//! - [`WebSessions::layer`] checks each request's session once and makes
//!   every answer to a signed-in browser `no-store`;
//! - the extractors: a handler that takes [`SignedIn`] runs only for a live
//!   session, and one that takes [`CsrfForm`] only for a form this site's
//!   own page sent.
//!
//! Users are the ones `signoff user add NAME --db URL` makes on the same
//! store.
//!
//! ```sh
//! signoff user add alice --db sqlite://app.db
//! signoff-example --listen 127.0.0.1:3000 --db sqlite://app.db
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Router, ServiceExt as _};
use clap::Parser;
use serde::Deserialize;
use signoff::web::{ClientAddr, CsrfForm, IntentForm, Proof, SignedIn, WebOptions, WebSessions};
use signoff::{CookiePolicy, Deployment, DeploymentOptions, Policy};
use tower_layer::Layer as _;

/// The command line.
#[derive(Parser)]
#[command(name = "signoff-example", about = "An axum app on signoff's sessions")]
struct Args {
    /// Address to listen on (port 0: any free port; the first line printed
    /// says which).
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// The store: sqlite://PATH (default), redis://HOST or postgres://HOST/DB.
    /// Users come from `signoff user add NAME --db` on the same store.
    #[arg(long, default_value = "sqlite://signoff.db")]
    db: String,
    /// The address users reach the app at (what forms must come from; by
    /// default each request's own). Over https the session cookie is
    /// `__Host-` and `Secure`; plain http is for a loopback address only.
    #[arg(long)]
    public_url: Option<String>,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    if let Err(e) = run(args).await {
        eprintln!("signoff-example: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let bound = listener.local_addr()?;
    let public_url = args
        .public_url
        .as_deref()
        .map(|u| u.trim_end_matches('/').to_owned());
    let https = public_url
        .as_deref()
        .is_some_and(|u| u.to_ascii_lowercase().starts_with("https://"));
    if !https && !bound.ip().is_loopback() {
        return Err(format!(
            "{bound} is not a loopback address: serve it over https (behind a TLS proxy) \
             and pass --public-url https://…, so the session cookie is Secure"
        )
        .into());
    }

    // 1. The store, its cache and revocation bus, in one call.
    let cookie = if https {
        CookiePolicy::default()
    } else {
        CookiePolicy::insecure_loopback()
    };
    let mut options = DeploymentOptions::default();
    options.policy = Policy::builder().cookie(cookie).build()?;
    let deployment = Deployment::open_with(&args.db, options).await?;

    // 2. The sessions of this app, and where its pages are.
    let mut web_options = WebOptions::default();
    web_options.login_path = "/login".into();
    web_options.after_sign_in = "/dashboard".into();
    // Without --public-url, forms must come from the origin each request
    // was sent to (its Host).
    web_options.public_origin = public_url.clone();
    let web = WebSessions::with_options(&deployment, web_options);
    // Behind one `Arc`: axum clones the state for every request.
    let app = Arc::new(App {
        web: web.clone(),
        accounts: deployment.accounts.clone(),
    });

    // 3. The routes, then the layer around all of them: around the whole
    //    router, so each request passes it once (`router.layer(...)` works
    //    too, wrapping every route on its own).
    let router = Router::new()
        .route("/", get(|| async { Redirect::to("/dashboard") }))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/dashboard", get(dashboard))
        .route("/dashboard/other", get(other_page))
        .route("/sessions", get(sessions_page))
        .route("/sessions/end", post(end_session))
        .with_state(app)
        .merge(web.routes());
    let app = web.layer().layer(router);

    let shown = public_url.unwrap_or_else(|| format!("http://{bound}"));
    println!("signoff-example listening on {shown}");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}

/// What the handlers share.
#[derive(Clone)]
struct App {
    web: WebSessions,
    accounts: signoff::Accounts,
}

type State = axum::extract::State<Arc<App>>;

// ---- Sign-in ---------------------------------------------------------

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    next: &'a str,
    failed: bool,
}

#[derive(Deserialize)]
struct Next {
    next: Option<String>,
}

async fn login_page(Query(q): Query<Next>) -> Response {
    let next = q.next.as_deref().unwrap_or("/dashboard");
    page(
        StatusCode::OK,
        &LoginPage {
            next,
            failed: false,
        },
    )
}

#[derive(Default, Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    next: Option<String>,
}

/// A sign-in form has no session to prove intent with: it is refused
/// only when a browser says another site sent it (login CSRF).
impl IntentForm for LoginForm {
    const PROOF: Proof = Proof::NotForeign;
}

async fn login(
    axum::extract::State(app): State,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    CsrfForm(form): CsrfForm<LoginForm>,
) -> Response {
    match app
        .accounts
        .authenticate(&form.username, &form.password)
        .await
    {
        // A new session, its cookie, and a 303 to `next` if it is a path
        // on this site; refused if the account was disabled meanwhile.
        Ok(user) => {
            app.web
                .sign_in_account(&headers, client, &app.accounts, &user, form.next.as_deref())
                .await
        }
        Err(_) => {
            let next = form.next.as_deref().unwrap_or("/dashboard");
            page(StatusCode::UNAUTHORIZED, &LoginPage { next, failed: true })
        }
    }
}

// ---- Sign-out --------------------------------------------------------

#[derive(Default, Deserialize)]
struct LogoutForm {
    csrf: Option<String>,
}

/// A sign-out needs the session's CSRF token or a browser saying this
/// site sent it; a GET never signs anyone out.
impl IntentForm for LogoutForm {
    const PROOF: Proof = Proof::TokenOrSameOrigin;

    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

async fn logout(
    axum::extract::State(app): State,
    headers: HeaderMap,
    CsrfForm(_): CsrfForm<LogoutForm>,
) -> Response {
    // Deletes the session everywhere, expires the cookie, sends
    // Clear-Site-Data, and goes to the login page.
    app.web.sign_out(&headers).await
}

// ---- Private pages ---------------------------------------------------

#[derive(Template)]
#[template(path = "private.html")]
struct PrivatePage<'a> {
    title: &'a str,
    user: &'a str,
    csrf: String,
}

async fn dashboard(who: SignedIn) -> Response {
    private(&who, "Dashboard")
}

async fn other_page(who: SignedIn) -> Response {
    private(&who, "Other page")
}

fn private(who: &SignedIn, title: &str) -> Response {
    page(
        StatusCode::OK,
        &PrivatePage {
            title,
            user: &who.user,
            csrf: signoff::csrf::token_for(&who.token),
        },
    )
}

// ---- The sessions page -----------------------------------------------

struct SessionRow {
    device: String,
    ip: String,
    handle: String,
    current: bool,
}

#[derive(Template)]
#[template(path = "sessions.html")]
struct SessionsPage<'a> {
    user: &'a str,
    csrf: String,
    sessions: Vec<SessionRow>,
}

async fn sessions_page(axum::extract::State(app): State, who: SignedIn) -> Response {
    let Some(user_id) = &who.session.user_id else {
        return StatusCode::FORBIDDEN.into_response();
    };
    let sessions = match app.web.sessions().list_for_user(user_id).await {
        Ok(list) => list,
        Err(_) => return unavailable(),
    };
    let rows = sessions
        .into_iter()
        .map(|s| SessionRow {
            device: s
                .user_agent
                .clone()
                .unwrap_or_else(|| "unknown device".into()),
            ip: s.ip.clone().unwrap_or_else(|| "an unknown address".into()),
            current: s.handle == who.session.handle,
            handle: s.handle.to_string(),
        })
        .collect();
    page(
        StatusCode::OK,
        &SessionsPage {
            user: &who.user,
            csrf: signoff::csrf::token_for(&who.token),
            sessions: rows,
        },
    )
}

#[derive(Default, Deserialize)]
struct EndForm {
    csrf: Option<String>,
    handle: String,
}

/// Ending a session takes the session's CSRF token.
impl IntentForm for EndForm {
    const PROOF: Proof = Proof::Token;

    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

async fn end_session(
    axum::extract::State(app): State,
    who: SignedIn,
    CsrfForm(form): CsrfForm<EndForm>,
) -> Response {
    match app.web.end_other(&who, &form.handle).await {
        Ok(_) => Redirect::to("/sessions").into_response(),
        Err(_) => unavailable(),
    }
}

// ---- Rendering -------------------------------------------------------

fn page(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "The session store is unavailable. Try again in a moment.\n",
    )
        .into_response()
}
