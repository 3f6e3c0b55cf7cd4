//! Sign-in with a real OpenID provider (panva's oidc-provider, run with
//! Node; tests/support/oidc.rs), and logout both ways (docs/oidc.md):
//! the code flow with PKCE through the provider's own login form, the user
//! and groups reaching the app, login CSRF and replays refused, the
//! provider's back-channel logout refused at once on two nodes, and a
//! signoff sign-out that ends the provider's session too.

mod support;

use support::oidc::{OidcProvider, ProviderAgent};
use support::services::{self, free_port};
use support::{get, post_form, seen, Gateway, Reply, Upstream};

const HTML: (&str, &str) = ("accept", "text/html");

/// A provider whose client points at signoff on `port`.
fn provider_for(port: u16) -> Option<OidcProvider> {
    let origin = format!("http://127.0.0.1:{port}");
    OidcProvider::start(
        &format!("{origin}/.signoff/oidc/callback"),
        &format!("{origin}/.signoff/oidc/backchannel-logout"),
        &format!("{origin}/.signoff/signed-out"),
    )
}

/// A node on `db` at `port`, signing in with `provider` (scopes for
/// groups too).
fn node(
    dir: tempfile::TempDir,
    db: &str,
    port: u16,
    provider: &OidcProvider,
    upstream: &Upstream,
    extra: &[&str],
) -> Gateway {
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, &provider.client_secret).unwrap();
    let secret = secret.display().to_string();
    let listen = format!("127.0.0.1:{port}");
    let public = format!("http://127.0.0.1:{port}");
    let mut args = vec![
        "--listen",
        listen.as_str(),
        "--public-url",
        public.as_str(),
        "--oidc-issuer",
        provider.issuer.as_str(),
        "--oidc-client-id",
        provider.client_id.as_str(),
        "--oidc-client-secret-file",
        secret.as_str(),
        "--oidc-scopes",
        "profile,email,groups",
        "--oidc-name",
        "Test ID",
    ];
    args.extend_from_slice(extra);
    Gateway::start_on(dir, db, Some(&upstream.url()), &args)
}

/// The value a `Set-Cookie` of `reply` gives `name`.
fn set_cookie(reply: &Reply, name: &str) -> Option<String> {
    reply.new_cookie(name)
}

/// Signs in at signoff through the provider (as `login`, with `agent`'s
/// provider cookies): the session token.
async fn sign_in(
    gw: &Gateway,
    provider: &OidcProvider,
    agent: &mut ProviderAgent,
    login: &str,
) -> String {
    let start = get(
        &gw.url("/.signoff/oidc/start?provider=default&next=%2Fecho"),
        &[HTML],
    )
    .await;
    assert_eq!(start.status, 303, "{}", start.text());
    let pending = set_cookie(&start, "signoff-oidc").expect("a pending sign-in cookie");
    let authorize = start.header("location").unwrap().to_owned();
    assert!(authorize.starts_with(&provider.issuer), "{authorize}");
    for must in [
        "code_challenge_method=S256",
        "state=",
        "nonce=",
        "scope=openid",
    ] {
        assert!(authorize.contains(must), "{must} in {authorize}");
    }
    let callback = provider.sign_in_by_http(agent, &authorize, login).await;
    assert!(
        callback.starts_with(&gw.url("/.signoff/oidc/callback?")),
        "{callback}"
    );
    let back = get(&callback, &[("cookie", &format!("signoff-oidc={pending}"))]).await;
    assert_eq!(back.status, 303, "{}", back.text());
    assert_eq!(back.header("location"), Some("/echo"));
    // Replayed, the callback finds nothing: the pending sign-in is gone.
    let again = get(&callback, &[("cookie", &format!("signoff-oidc={pending}"))]).await;
    assert_eq!(again.status, 400, "a callback works once");
    set_cookie(&back, "signoff").expect("a session")
}

async fn alive(gw: &Gateway, token: &str) -> bool {
    let r = get(
        &gw.url("/page"),
        &[("cookie", &format!("signoff={token}")), HTML],
    )
    .await;
    match r.status {
        200 => true,
        303 => false,
        other => panic!("{other}: {}", r.text()),
    }
}

#[tokio::test]
async fn sign_in_with_a_real_provider_and_logout_both_ways() {
    let Some(upstream) = Upstream::start() else {
        return;
    };
    let port = free_port();
    let Some(provider) = provider_for(port) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("signoff.db").display());
    let gw = node(dir, &db, port, &provider, &upstream, &[]);

    // The login page offers the provider beside the password form.
    let page = get(&gw.url("/.signoff/login?next=%2Fpage"), &[HTML]).await;
    assert!(
        page.text().contains("Sign in with Test ID"),
        "{}",
        page.text()
    );
    assert!(
        page.text()
            .contains("oidc/start?provider=default&#38;next=%2Fpage"),
        "{}",
        page.text()
    );

    let mut agent = ProviderAgent::new();
    let carol = sign_in(&gw, &provider, &mut agent, "carol").await;
    let echo = get(&gw.url("/echo"), &[("cookie", &format!("signoff={carol}"))]).await;
    assert_eq!(seen(&echo, "x-signoff-user"), ["carol"]);
    assert_eq!(seen(&echo, "x-signoff-groups"), ["admins,staff"]);
    assert_eq!(seen(&echo, "x-signoff-email"), ["carol@example.com"]);
    // The provider did not say when the password was typed: no time is
    // claimed for it, so no `fresh` rule passes on this sign-in alone.
    assert!(seen(&echo, "x-signoff-auth-time").is_empty());
    // Re-authentication goes to the provider, which must ask for the
    // password now (prompt=login, max_age=0) and say so (auth_time).
    let reauth = get(
        &gw.url("/.signoff/reauth?next=%2Fecho"),
        &[("cookie", &format!("signoff={carol}")), HTML],
    )
    .await;
    assert_eq!(reauth.status, 303, "{}", reauth.text());
    let start = get(&gw.url(reauth.header("location").unwrap()), &[HTML]).await;
    let pending = set_cookie(&start, "signoff-oidc").unwrap();
    let authorize = start.header("location").unwrap().to_owned();
    assert!(
        authorize.contains("prompt=login") && authorize.contains("max_age=0"),
        "{authorize}"
    );
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let callback = provider
        .sign_in_by_http(&mut agent, &authorize, "carol")
        .await;
    let back = get(&callback, &[("cookie", &format!("signoff-oidc={pending}"))]).await;
    assert_eq!(back.status, 303, "{}", back.text());
    let carol = set_cookie(&back, "signoff").unwrap();
    let echo = get(&gw.url("/echo"), &[("cookie", &format!("signoff={carol}"))]).await;
    let at: u64 = seen(&echo, "x-signoff-auth-time")[0].parse().unwrap();
    assert!(
        at + 60 >= before,
        "the password time is the provider's, just now"
    );

    // Login CSRF: a callback without this browser's pending sign-in, or
    // with another state, signs nobody in.
    let start = get(&gw.url("/.signoff/oidc/start?provider=default"), &[HTML]).await;
    let pending = set_cookie(&start, "signoff-oidc").unwrap();
    let authorize = start.header("location").unwrap().to_owned();
    let callback = provider
        .sign_in_by_http(&mut agent, &authorize, "carol")
        .await;
    let foreign = get(&callback, &[]).await;
    assert_eq!(foreign.status, 400, "no pending sign-in in this browser");
    let code = callback
        .split("code=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let forged = get(
        &gw.url(&format!("/.signoff/oidc/callback?code={code}&state=forged")),
        &[("cookie", &format!("signoff-oidc={pending}"))],
    )
    .await;
    assert_eq!(forged.status, 400, "a foreign state");
    assert!(set_cookie(&forged, "signoff").is_none());
    // That pending sign-in is used up: its real state fails now too.
    let late = get(&callback, &[("cookie", &format!("signoff-oidc={pending}"))]).await;
    assert_eq!(late.status, 400);

    // The provider ends carol's session there: its back-channel logout
    // ends hers here, at once.
    let sids = provider.end_sessions_of("carol").await;
    assert!(!sids.is_empty());
    assert!(
        !alive(&gw, &carol).await,
        "refused at once after the back-channel logout"
    );

    // A signoff sign-out ends the provider's session too (RP-initiated
    // logout), so the next sign-in asks for the password again.
    let mut agent = ProviderAgent::new();
    let bob = sign_in(&gw, &provider, &mut agent, "bob").await;
    // Chromium holds a form's redirects to its page's `form-action`: the
    // sign-out form may lead on to the provider.
    let logout_page = get(
        &gw.url("/.signoff/logout"),
        &[("cookie", &format!("signoff={bob}"))],
    )
    .await;
    let csp = logout_page.header("content-security-policy").unwrap();
    assert!(
        csp.contains(&format!("form-action 'self' {}", provider.issuer)),
        "{csp}"
    );
    let out = post_form(
        &gw.url("/.signoff/logout"),
        &[],
        &[
            ("cookie", &format!("signoff={bob}")),
            ("origin", &gw.origin),
        ],
    )
    .await;
    assert_eq!(out.status, 303, "{}", out.text());
    let end_session = out.header("location").unwrap().to_owned();
    assert!(
        end_session.starts_with(&provider.url("/session/end")),
        "{end_session}"
    );
    assert!(end_session.contains("id_token_hint="));
    assert!(out.header("clear-site-data").is_some());
    assert!(!alive(&gw, &bob).await);
    let done = provider.end_session_by_http(&mut agent, &end_session).await;
    assert_eq!(done.status, 303, "{}", done.text());
    assert_eq!(
        done.header("location")
            .map(|l| l.starts_with(&gw.url("/.signoff/signed-out"))),
        Some(true)
    );
    let start = get(&gw.url("/.signoff/oidc/start?provider=default"), &[HTML]).await;
    let authorize = start.header("location").unwrap().to_owned();
    let first = agent.get(&authorize).await;
    let login_form = match first.status {
        200 => first.text(),
        _ => {
            let next = first.header("location").unwrap().to_owned();
            let next = if next.starts_with('/') {
                provider.url(&next)
            } else {
                next
            };
            agent.get(&next).await.text()
        }
    };
    assert!(
        login_form.contains("name=\"login\""),
        "the provider asks for the password again: {login_form:.400}"
    );
}

#[tokio::test]
async fn a_provider_user_cannot_take_a_local_users_name() {
    let Some(upstream) = Upstream::start() else {
        return;
    };
    let port = free_port();
    let Some(provider) = provider_for(port) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("signoff.db").display());
    support::add_user(&db, "carol", support::PASSWORD);
    let gw = node(dir, &db, port, &provider, &upstream, &[]);
    let start = get(&gw.url("/.signoff/oidc/start?provider=default"), &[HTML]).await;
    let pending = set_cookie(&start, "signoff-oidc").unwrap();
    let mut agent = ProviderAgent::new();
    let callback = provider
        .sign_in_by_http(&mut agent, start.header("location").unwrap(), "carol")
        .await;
    let r = get(&callback, &[("cookie", &format!("signoff-oidc={pending}"))]).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("a local account of this site has that"));
    assert!(set_cookie(&r, "signoff").is_none());
}

#[tokio::test]
async fn redis_a_provider_logout_is_refused_at_once_on_the_other_node() {
    provider_logout_on_two_nodes(services::shared_redis().map(|base| {
        let prefix = services::unique("signoff-test-oidc-");
        (format!("{base}?prefix={prefix}"), base, prefix)
    }))
    .await;
}

#[tokio::test]
async fn postgres_a_provider_logout_is_refused_at_once_on_the_other_node() {
    provider_logout_on_two_nodes(services::shared_postgres().map(|base| {
        let schema = services::unique("signoff_t_oidc_");
        (format!("{base}?schema={schema}"), base, schema)
    }))
    .await;
}

/// Node A receives the provider's back-channel logout; node B, which
/// holds the session in its cache, refuses it at once.
async fn provider_logout_on_two_nodes(store: Option<(String, String, String)>) {
    let Some((db, _base, _name)) = store else {
        return;
    };
    let Some(upstream) = Upstream::start() else {
        return;
    };
    let (port_a, port_b) = (free_port(), free_port());
    let Some(provider) = provider_for(port_a) else {
        return;
    };
    let a = node(
        tempfile::tempdir().unwrap(),
        &db,
        port_a,
        &provider,
        &upstream,
        &[],
    );
    let b = node(
        tempfile::tempdir().unwrap(),
        &db,
        port_b,
        &provider,
        &upstream,
        &["--cache-staleness", "30s"],
    );
    let mut agent = ProviderAgent::new();
    let carol = sign_in(&a, &provider, &mut agent, "carol").await;
    assert!(alive(&b, &carol).await);
    provider.end_sessions_of("carol").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
    while alive(&b, &carol).await {
        assert!(
            std::time::Instant::now() < deadline,
            "node B still lets the session in 500 ms after the provider's logout"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
