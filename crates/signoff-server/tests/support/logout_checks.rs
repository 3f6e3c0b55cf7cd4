//! The HTTP-level checks of a sign-out that holds, written once and run
//! against every app that makes that promise: the gateway, and the axum
//! example app on the library (tests/logout_checks.rs). Each check drives
//! the app only through its pages, as a browser or an attacker would.

use std::time::Duration;

use super::{cookie_named, get, post_form, Reply};

/// An app under the checks: where its pages are and who may sign in.
pub struct Target {
    /// e.g. `http://127.0.0.1:40123`
    pub origin: String,
    /// The login form's action (`/.signoff/login`, `/login`).
    pub login_path: &'static str,
    /// The sign-out form's action.
    pub logout_path: &'static str,
    /// A page only a signed-in user sees, and text it shows them.
    pub private_path: &'static str,
    pub private_marker: &'static str,
    /// The session cookie's name.
    pub cookie: &'static str,
    pub user: String,
    pub password: String,
}

impl Target {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }

    fn cookie_header(&self, token: &str) -> String {
        format!("{}={token}", self.cookie)
    }

    /// Signs in (sending `planted` as the cookie, if any) with `next`;
    /// the reply.
    async fn sign_in_reply(&self, planted: Option<&str>, next: Option<&str>) -> Reply {
        let mut form = vec![
            ("username", self.user.as_str()),
            ("password", self.password.as_str()),
        ];
        if let Some(next) = next {
            form.push(("next", next));
        }
        let planted = planted.map(|t| self.cookie_header(t));
        let mut headers = vec![("origin", self.origin.as_str())];
        if let Some(c) = &planted {
            headers.push(("cookie", c.as_str()));
        }
        post_form(&self.url(self.login_path), &form, &headers).await
    }

    /// Signs in; the session token.
    pub async fn sign_in(&self) -> String {
        let reply = self.sign_in_reply(None, None).await;
        assert_eq!(reply.status, 303, "sign-in failed: {}", reply.text());
        reply
            .new_cookie(self.cookie)
            .expect("sign-in sets the session cookie")
    }

    /// The private page with `token`'s cookie.
    async fn private(&self, token: &str) -> Reply {
        get(
            &self.url(self.private_path),
            &[
                ("cookie", &self.cookie_header(token)),
                ("accept", "text/html"),
            ],
        )
        .await
    }

    /// Whether `token` still opens the private page.
    async fn opens(&self, token: &str) -> bool {
        let r = self.private(token).await;
        r.status == 200 && r.text().contains(self.private_marker)
    }

    /// Signs out the holder of `token` with a same-origin form.
    async fn sign_out(&self, token: &str) -> Reply {
        post_form(
            &self.url(self.logout_path),
            &[],
            &[
                ("cookie", &self.cookie_header(token)),
                ("origin", &self.origin),
                ("sec-fetch-site", "same-origin"),
            ],
        )
        .await
    }
}

/// Runs every check against `target`.
pub async fn all(target: &Target) {
    replay_after_sign_out(target).await;
    fixation(target).await;
    forged_sign_out(target).await;
    no_store(target).await;
    cookie_flags_and_clear_site_data(target).await;
    open_redirects(target).await;
    in_flight_requests_do_not_resurrect(target).await;
}

/// A cookie captured before sign-out is refused afterwards.
pub async fn replay_after_sign_out(t: &Target) {
    let token = t.sign_in().await;
    assert!(
        t.opens(&token).await,
        "the private page opens when signed in"
    );
    let out = t.sign_out(&token).await;
    assert_eq!(out.status, 303, "sign-out: {}", out.text());
    let replay = t.private(&token).await;
    assert_ne!(replay.status, 200, "a captured cookie works after sign-out");
    assert!(!replay.text().contains(t.private_marker));
}

/// A token held before sign-in (planted by an attacker, or the victim's
/// own older one) is worthless after it, and sign-in issues a new one.
pub async fn fixation(t: &Target) {
    let planted = t.sign_in().await;
    let reply = t.sign_in_reply(Some(&planted), None).await;
    assert_eq!(reply.status, 303);
    let fresh = reply.new_cookie(t.cookie).expect("a new session cookie");
    assert_ne!(fresh, planted, "sign-in kept the token it was sent");
    assert!(
        !t.opens(&planted).await,
        "the planted token survived sign-in"
    );
    assert!(t.opens(&fresh).await);
    // A made-up value is not adopted either.
    let made_up = "x".repeat(43);
    let reply = t.sign_in_reply(Some(&made_up), None).await;
    assert_ne!(
        reply.new_cookie(t.cookie).as_deref(),
        Some(made_up.as_str())
    );
}

/// Sign-out cannot be forged: a GET ends nothing, nor does a POST
/// without the CSRF token from another site's page.
pub async fn forged_sign_out(t: &Target) {
    let token = t.sign_in().await;
    let c = t.cookie_header(&token);
    let by_get = get(&t.url(t.logout_path), &[("cookie", &c)]).await;
    assert!(by_get.new_cookie(t.cookie).is_none());
    assert!(t.opens(&token).await, "a GET signed the user out");
    for headers in [
        vec![("cookie", c.as_str()), ("origin", "https://evil.example")],
        vec![
            ("cookie", c.as_str()),
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "cross-site"),
        ],
        vec![("cookie", c.as_str()), ("sec-fetch-site", "same-site")],
    ] {
        let forged = post_form(&t.url(t.logout_path), &[], &headers).await;
        assert_eq!(forged.status, 403, "forged sign-out {headers:?}");
        assert!(t.opens(&token).await, "a forged sign-out ended the session");
    }
    // A wrong token from a page that hides its origin is refused too.
    let forged = post_form(
        &t.url(t.logout_path),
        &[("csrf", "not-the-token")],
        &[("cookie", &c), ("origin", "null")],
    )
    .await;
    assert_eq!(forged.status, 403);
    assert!(t.opens(&token).await);
}

/// Private pages, and the sign-in and sign-out answers, are `no-store`.
pub async fn no_store(t: &Target) {
    let signed_in = t.sign_in_reply(None, None).await;
    assert_eq!(signed_in.header("cache-control"), Some("no-store"));
    let token = signed_in.new_cookie(t.cookie).unwrap();
    let page = t.private(&token).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("cache-control"), Some("no-store"));
    let out = t.sign_out(&token).await;
    assert_eq!(out.header("cache-control"), Some("no-store"));
}

/// The cookie is `HttpOnly` and `SameSite`, and sign-out expires it with
/// the attributes it was set with, and sends `Clear-Site-Data`.
pub async fn cookie_flags_and_clear_site_data(t: &Target) {
    let signed_in = t.sign_in_reply(None, None).await;
    let set = cookie_named(&signed_in, t.cookie).expect("Set-Cookie on sign-in");
    let attrs = attributes(&set);
    assert!(attrs.iter().any(|a| a == "httponly"), "{set}");
    assert!(
        attrs
            .iter()
            .any(|a| a == "samesite=lax" || a == "samesite=strict"),
        "{set}"
    );
    if t.origin.starts_with("https://") {
        assert!(attrs.iter().any(|a| a == "secure"), "{set}");
    }
    let token = signed_in.new_cookie(t.cookie).unwrap();
    let out = t.sign_out(&token).await;
    let expired = cookie_named(&out, t.cookie).expect("Set-Cookie on sign-out");
    assert!(
        expired.to_ascii_lowercase().contains("max-age=0"),
        "{expired}"
    );
    let keep = |a: &&String| {
        a.starts_with("path=") || a.starts_with("samesite=") || *a == "httponly" || *a == "secure"
    };
    let set_kept: Vec<_> = attrs.iter().filter(keep).collect();
    let expired_attrs = attributes(&expired);
    let expired_kept: Vec<_> = expired_attrs.iter().filter(keep).collect();
    assert_eq!(set_kept, expired_kept, "{set} / {expired}");
    let csd = out.header("clear-site-data").unwrap_or_default();
    assert!(csd.contains("\"cookies\""), "Clear-Site-Data: {csd}");
}

/// The attributes of a `Set-Cookie` value, lower case, in order.
fn attributes(set_cookie: &str) -> Vec<String> {
    set_cookie
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .filter(|a| !a.starts_with("max-age") && !a.starts_with("expires"))
        .collect()
}

/// `next` never sends the browser off-site.
pub async fn open_redirects(t: &Target) {
    for next in [
        "//evil.example/",
        "/\\evil.example/",
        "/%2F%2Fevil.example/",
        "%2F%2Fevil.example",
        "/%5Cevil.example",
        "/%252F%252Fevil.example",
        "https://evil.example/",
        "javascript:alert(1)",
        "/\t/evil.example",
        "\\\\evil.example",
    ] {
        let reply = t.sign_in_reply(None, Some(next)).await;
        assert_eq!(reply.status, 303, "next {next:?}");
        let to = reply.header("location").unwrap_or_default();
        assert!(
            to.starts_with('/') && !to.starts_with("//") && !to.contains("evil"),
            "next {next:?} sent the browser to {to:?}"
        );
    }
    let reply = t.sign_in_reply(None, Some("/somewhere?x=1")).await;
    assert_eq!(reply.header("location"), Some("/somewhere?x=1"));
}

/// Requests under way when the user signs out cannot bring the session
/// back (a last-seen write that lands after the delete must not recreate
/// the record).
pub async fn in_flight_requests_do_not_resurrect(t: &Target) {
    let token = t.sign_in().await;
    let mut running = Vec::new();
    for _ in 0..24 {
        let url = t.url(t.private_path);
        let c = t.cookie_header(&token);
        running.push(tokio::spawn(async move {
            for _ in 0..4 {
                get(&url, &[("cookie", &c)]).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(t.sign_out(&token).await.status, 303);
    for r in running {
        r.await.unwrap();
    }
    for _ in 0..3 {
        assert!(
            !t.opens(&token).await,
            "a request under way at sign-out brought the session back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
