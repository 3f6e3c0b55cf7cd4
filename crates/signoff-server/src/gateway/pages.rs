//! signoff's own pages: plain HTML that works without JavaScript, with a
//! strict Content-Security-Policy of their own.
//!
//! Every page is an auto-escaping template in `templates/` (on the shared
//! `base.html`, which shows the operator's [`Branding`]), filled from a page
//! model here; every page links the stylesheet, [`STYLESHEET`], served at
//! `{prefix}/signoff.css`, and the operator's branding stylesheets; the
//! sessions page also loads `{prefix}/signoff.js` (the files pages load
//! are served by `assets.rs`).
//!
//! An operator may replace a whole page with a Jinja template of the
//! `--template-dir` (checked at start in `config/branding.rs`); such an
//! override gets the page model serialised (see [`Page`]) and is served
//! under the same headers and CSP as the built-in page.

use askama::Template;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use minijinja::value::Serde;
use serde::Serialize;

use crate::config::Branding;

/// The stylesheet of every signoff page.
pub const STYLESHEET: &str = include_str!("../../templates/signoff.css");

/// The CSP of every signoff page: styles and images (the logo) only from
/// this origin, no scripts; forms post only to this origin; no framing.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// The CSP of a page that loads `{prefix}/signoff.js`: [`CSP`] with scripts
/// from this origin (files only: no inline script, no `eval`).
const CSP_WITH_SCRIPT: &str = concat!(
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; ",
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
);

/// A "Sign in with …" link of the login page (docs/oidc.md).
#[derive(Debug, Clone, Serialize)]
pub struct ProviderLink {
    /// `PREFIX/oidc/start?provider=ID&next=…`.
    pub href: String,
    /// The provider's name as the button says it.
    pub name: String,
}

/// The login form. `next` is kept in a hidden field.
#[derive(Template, Serialize)]
#[template(path = "login.html")]
pub struct LoginPage<'a> {
    pub prefix: &'a str,
    #[serde(skip)]
    pub brand: &'a Branding,
    pub next: &'a str,
    pub username: &'a str,
    pub error: Option<&'a str>,
    /// Sign in with these providers.
    pub providers: &'a [ProviderLink],
    /// Whether the password form is shown.
    pub password: bool,
    /// "Remember this device for …" is offered, for this long (as people
    /// say it); `None`: remembering is off and no checkbox is shown.
    pub remember: Option<&'a str>,
}

/// The confirmation asked by `GET /logout`, which itself changes nothing.
#[derive(Template, Serialize)]
#[template(path = "logout.html")]
pub struct LogoutPage<'a> {
    pub prefix: &'a str,
    #[serde(skip)]
    pub brand: &'a Branding,
    pub csrf: Option<&'a str>,
}

/// After logout.
#[derive(Template, Serialize)]
#[template(path = "signed_out.html")]
pub struct SignedOutPage<'a> {
    pub prefix: &'a str,
    #[serde(skip)]
    pub brand: &'a Branding,
}

/// A plain message: errors and refusals.
#[derive(Template, Serialize)]
#[template(path = "message.html")]
pub struct MessagePage<'a> {
    pub prefix: &'a str,
    #[serde(skip)]
    pub brand: &'a Branding,
    pub heading: &'a str,
    pub text: &'a str,
}

/// A request an access rule refuses: who is signed in (if anyone), and
/// a form to sign out and in as someone else.
#[derive(Template, Serialize)]
#[template(path = "forbidden.html")]
pub struct ForbiddenPage<'a> {
    pub prefix: &'a str,
    #[serde(skip)]
    pub brand: &'a Branding,
    pub user: Option<&'a str>,
    pub csrf: Option<&'a str>,
}

/// A sign-in form refused for its origin: which origin was expected,
/// which arrived (as the client sent it: escaped like everything else),
/// and what fixes it.
#[derive(Template, Serialize)]
#[template(path = "sign_in_refused.html")]
pub struct SignInRefusedPage<'a> {
    pub prefix: &'a str,
    #[serde(skip)]
    pub brand: &'a Branding,
    pub expected: &'a str,
    pub arrived: &'a str,
    pub fix: &'a str,
}

/// The signed-in user's sessions, the current one first.
#[derive(Template, Serialize)]
#[template(path = "sessions.html")]
pub struct SessionsPage<'a> {
    pub prefix: &'a str,
    #[serde(skip)]
    pub brand: &'a Branding,
    pub user: &'a str,
    pub csrf: &'a str,
    pub rows: Vec<SessionRow>,
    /// How many sessions the last action signed out, if any.
    pub ended: Option<u32>,
}

/// One session on the sessions page, its times already formatted.
#[derive(Serialize)]
pub struct SessionRow {
    pub handle: String,
    pub current: bool,
    pub device: String,
    pub ip: String,
    pub created: Moment,
    pub seen: Moment,
    /// When a remembered session ends, if it is one.
    pub remembered_until: Option<String>,
}

/// A time as a page shows it: `<time datetime="{machine}"
/// title="{absolute}">{relative}</time>`; `signoff.js` rewrites the words in
/// the reader's language and time zone.
#[derive(Serialize)]
pub struct Moment {
    /// RFC 3339, UTC.
    pub machine: String,
    /// `2026-11-21 14:16 UTC`.
    pub absolute: String,
    /// `3 minutes ago`.
    pub relative: String,
}

impl Moment {
    /// `at`, seen from `now`.
    pub fn of(at: signoff::Timestamp, now: signoff::Timestamp) -> Self {
        Self {
            machine: crate::display::rfc3339(at),
            absolute: crate::display::time(at),
            relative: crate::display::ago(at, now),
        }
    }
}

/// The password re-entry form; `next` is kept in a hidden field.
#[derive(Template, Serialize)]
#[template(path = "reauth.html")]
pub struct ReauthPage<'a> {
    pub prefix: &'a str,
    #[serde(skip)]
    pub brand: &'a Branding,
    pub user: &'a str,
    pub csrf: &'a str,
    pub next: &'a str,
    pub error: Option<&'a str>,
}

/// The password change form.
#[derive(Template, Serialize)]
#[template(path = "password.html")]
pub struct PasswordPage<'a> {
    pub prefix: &'a str,
    #[serde(skip)]
    pub brand: &'a Branding,
    pub user: &'a str,
    pub csrf: &'a str,
    /// The shortest password accepted.
    pub min: usize,
    pub notice: Option<&'a str>,
    pub error: Option<&'a str>,
}

/// One of the page models above: a built-in template, and the name and
/// context an override of it (`--template-dir`) gets.
pub trait Page: Template + Serialize {
    /// Its name: the override is `NAME.html`.
    const NAME: &'static str;
    /// Its Content-Security-Policy, the same for its override: [`CSP`], or
    /// [`CSP_WITH_SCRIPT`] for a page whose template loads `signoff.js`.
    const CSP: &'static str = CSP;
    fn prefix(&self) -> &str;
    fn brand(&self) -> &Branding;

    /// What an override sees: the model's fields, and `brand`.
    fn context(&self) -> minijinja::Value {
        minijinja::context! {
            brand => Serde(BrandView::of(self.prefix(), self.brand())),
            ..minijinja::Value::from(Serde(self))
        }
    }
}

macro_rules! page {
    ($model:ident, $name:literal) => {
        page!($model, $name, CSP);
    };
    ($model:ident, $name:literal, $csp:ident) => {
        impl Page for $model<'_> {
            const NAME: &'static str = $name;
            const CSP: &'static str = $csp;
            fn prefix(&self) -> &str {
                self.prefix
            }
            fn brand(&self) -> &Branding {
                self.brand
            }
        }
    };
}

page!(LoginPage, "login");
page!(LogoutPage, "logout");
page!(SignedOutPage, "signed_out");
page!(MessagePage, "message");
page!(SignInRefusedPage, "sign_in_refused");
page!(ForbiddenPage, "forbidden");
// sessions.html loads signoff.js (times in the reader's language).
page!(SessionsPage, "sessions", CSP_WITH_SCRIPT);
page!(ReauthPage, "reauth");
page!(PasswordPage, "password");

/// `brand` in an override's context: the name, and the URLs the built-in
/// pages link.
#[derive(Serialize)]
struct BrandView<'a> {
    name: &'a str,
    /// The logo's URL, if there is a logo.
    logo: Option<String>,
    /// The stylesheets' URLs, in order: signoff's, the accent's if any,
    /// extra.css if any.
    stylesheets: Vec<String>,
    /// `#rrggbb`, if given.
    accent: Option<&'a str>,
}

impl<'a> BrandView<'a> {
    fn of(prefix: &str, brand: &'a Branding) -> Self {
        let mut stylesheets = vec![format!("{prefix}/signoff.css")];
        if let Some(accent) = &brand.accent {
            stylesheets.push(format!("{prefix}/brand.css?v={}", accent.version()));
        }
        if let Some(extra) = &brand.extra_css {
            stylesheets.push(format!("{prefix}/brand/extra.css?v={}", extra.version));
        }
        Self {
            name: &brand.name,
            logo: brand
                .logo
                .as_ref()
                .map(|logo| format!("{prefix}/brand/logo?v={}", logo.version)),
            stylesheets,
            accent: brand.accent.as_ref().map(|a| a.as_str()),
        }
    }
}

/// Sample contexts of the page `name` (of `config::branding::PAGE_NAMES`):
/// every optional part present, then every one absent. An override is
/// rendered with each at start.
pub fn sample_contexts(name: &str, brand: &Branding) -> Vec<minijinja::Value> {
    let prefix = "/.signoff";
    let moment = || Moment {
        machine: "2026-11-21T14:13:26Z".to_owned(),
        absolute: "2026-11-21 14:13 UTC".to_owned(),
        relative: "3 minutes ago".to_owned(),
    };
    let row = |current, remembered: Option<&str>| SessionRow {
        handle: "h".to_owned(),
        current,
        device: "Firefox 128 on Linux".to_owned(),
        ip: "127.0.0.1".to_owned(),
        created: moment(),
        seen: moment(),
        remembered_until: remembered.map(str::to_owned),
    };
    let each = |full: bool| -> Option<minijinja::Value> {
        let some = |text: &'static str| full.then_some(text);
        Some(match name {
            "login" => LoginPage {
                prefix,
                brand,
                next: "/",
                username: "ann",
                error: some("Wrong user name or password."),
                remember: some("30 days"),
                providers: &[],
                password: true,
            }
            .context(),
            "logout" => LogoutPage {
                prefix,
                brand,
                csrf: some("csrf"),
            }
            .context(),
            "signed_out" => SignedOutPage { prefix, brand }.context(),
            "message" => MessagePage {
                prefix,
                brand,
                heading: "Heading",
                text: "Text.",
            }
            .context(),
            "sign_in_refused" => SignInRefusedPage {
                prefix,
                brand,
                expected: "https://example.com",
                arrived: "http://example.com",
                fix: "Fix.",
            }
            .context(),
            "forbidden" => ForbiddenPage {
                prefix,
                brand,
                user: full.then_some("ann"),
                csrf: some("csrf"),
            }
            .context(),
            "sessions" => SessionsPage {
                prefix,
                brand,
                user: "ann",
                csrf: "csrf",
                rows: if full {
                    vec![row(true, Some("2026-12-21 14:13 UTC")), row(false, None)]
                } else {
                    Vec::new()
                },
                ended: full.then_some(2),
            }
            .context(),
            "reauth" => ReauthPage {
                prefix,
                brand,
                user: "ann",
                csrf: "csrf",
                next: "/",
                error: some("Wrong password."),
            }
            .context(),
            "password" => PasswordPage {
                prefix,
                brand,
                user: "ann",
                csrf: "csrf",
                min: 12,
                notice: some("Password changed."),
                error: some("Too short."),
            }
            .context(),
            _ => return None,
        })
    };
    [true, false].into_iter().filter_map(each).collect()
}

/// A page (one of the models above) rendered with signoff's own headers
/// (its CSP is the page's, [`Page::CSP`]): its override if the template
/// directory has one, else the built-in.
pub fn render<P: Page>(status: StatusCode, page: &P) -> Response {
    render_with_csp(status, page, P::CSP)
}

/// The override of `page`, if there is one and it renders. One that fails
/// (checked at start, so it should not) is logged, and the built-in page
/// served instead.
fn render_override<P: Page>(page: &P) -> Option<String> {
    let overrides = page.brand().overrides.as_ref()?;
    match overrides.render(P::NAME, page.context())? {
        Ok(html) => Some(html),
        Err(e) => {
            // The kind and place only: the detail could quote the context.
            // At ERROR once per page: a client requesting the failing page
            // again and again must not flood the log.
            if first_failure_of(P::NAME) {
                tracing::error!(
                    page = P::NAME,
                    kind = %e.kind(),
                    line = e.line().unwrap_or(0),
                    "a page override of --template-dir could not be rendered; \
                     the built-in page is served instead (logged once per page)"
                );
            } else {
                tracing::debug!(page = P::NAME, "a page override failed again");
            }
            None
        }
    }
}

/// Whether this is the first failed render of `page`'s override in this
/// process.
fn first_failure_of(page: &'static str) -> bool {
    static FAILED: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut failed = FAILED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if failed.contains(&page) {
        false
    } else {
        failed.push(page);
        true
    }
}

fn render_with_csp<P: Page>(status: StatusCode, page: &P, csp: &'static str) -> Response {
    let rendered = match render_override(page) {
        Some(html) => Ok(html),
        None => page.render(),
    };
    let mut response = match rendered {
        Ok(html) => (status, html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a page could not be rendered");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered\n",
            )
                .into_response()
        }
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Branding from a template directory holding these files.
    fn branding_with(files: &[(&str, &str)]) -> Branding {
        branding_of(files, crate::config::BrandingOptions::default())
    }

    fn branding_of(files: &[(&str, &str)], options: crate::config::BrandingOptions) -> Branding {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        crate::config::BrandingOptions {
            template_dir: Some(dir.path().to_owned()),
            ..options
        }
        .check()
        .unwrap()
    }

    fn headers_of(r: &Response) -> Vec<(String, String)> {
        let mut h: Vec<(String, String)> = r
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        h.sort();
        h
    }

    #[test]
    fn an_override_replaces_the_page_escaped_and_under_the_same_headers() {
        let brand = branding_with(&[(
            "sessions.html",
            "<h1>Mine</h1><p>{{ user }}</p>{% for s in rows %}<li>{{ s.device }}</li>{% endfor %}\
             <link href=\"{{ brand.stylesheets[0] }}\">",
        )]);
        let page = |brand| SessionsPage {
            prefix: "/.signoff",
            brand,
            user: "<script>alert(1)</script>",
            csrf: "c",
            rows: vec![SessionRow {
                handle: "h".to_owned(),
                current: true,
                device: "\"'><b>".to_owned(),
                ip: "127.0.0.1".to_owned(),
                created: Moment::of(
                    signoff::Timestamp::from_millis(0),
                    signoff::Timestamp::from_millis(0),
                ),
                seen: Moment::of(
                    signoff::Timestamp::from_millis(0),
                    signoff::Timestamp::from_millis(0),
                ),
                remembered_until: None,
            }],
            ended: None,
        };
        let html = render_override(&page(&brand)).unwrap();
        assert_eq!(
            html,
            "<h1>Mine</h1><p>&lt;script&gt;alert(1)&lt;&#x2f;script&gt;</p>\
             <li>&quot;&#x27;&gt;&lt;b&gt;</li><link href=\"&#x2f;.signoff&#x2f;signoff.css\">"
        );
        // The same headers as the built-in page: an override cannot loosen
        // the CSP.
        let plain = Branding::default();
        let built_in = render(StatusCode::OK, &page(&plain));
        let overridden = render(StatusCode::OK, &page(&brand));
        assert_eq!(headers_of(&overridden), headers_of(&built_in));
        assert_eq!(
            overridden.headers()["content-security-policy"],
            CSP_WITH_SCRIPT
        );
        // Pages without an override stay built in.
        assert!(render_override(&SignedOutPage {
            prefix: "/.signoff",
            brand: &brand,
        })
        .is_none());
    }

    #[test]
    fn brand_gives_an_override_its_name_and_urls() {
        let options = crate::config::BrandingOptions {
            brand_name: Some("Acme".to_owned()),
            brand_accent: Some("#123".to_owned()),
            ..Default::default()
        };
        let brand = branding_of(
            &[
            ("logo.svg", "<svg xmlns=\"http://www.w3.org/2000/svg\"/>"),
            ("extra.css", "h1{}"),
            (
                "signed_out.html",
                "{{ brand.name }}|{{ brand.logo }}|{{ brand.accent }}|{{ brand.stylesheets | join(\" \") }}",
            ),
        ],
            options,
        );
        let html = render_override(&SignedOutPage {
            prefix: "/p",
            brand: &brand,
        })
        .unwrap();
        let logo = brand.logo.as_ref().unwrap().version.clone();
        let extra = brand.extra_css.as_ref().unwrap().version.clone();
        assert_eq!(
            html,
            format!(
                "Acme|&#x2f;p&#x2f;brand&#x2f;logo?v={logo}|#112233|&#x2f;p&#x2f;signoff.css \
                 &#x2f;p&#x2f;brand.css?v=112233 &#x2f;p&#x2f;brand&#x2f;extra.css?v={extra}"
            )
        );
    }

    #[test]
    fn an_override_that_fails_at_request_time_gives_the_built_in_page() {
        // Passes the start (the samples' user is not "boom"), fails later.
        let brand = branding_with(&[(
            "login.html",
            "{% if username == \"boom\" %}{{ nope }}{% endif %}override",
        )]);
        let page = |username| LoginPage {
            prefix: "/.signoff",
            brand: &brand,
            next: "/",
            username,
            error: None,
            remember: None,
            providers: &[],
            password: true,
        };
        assert_eq!(render_override(&page("ann")).unwrap(), "override");
        assert!(render_override(&page("boom")).is_none());
        let r = render(StatusCode::OK, &page("boom"));
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-security-policy"], CSP);
    }

    #[test]
    fn escape_covers_markup_and_quotes() {
        let brand = Branding::default();
        let html = MessagePage {
            prefix: "/.signoff",
            brand: &brand,
            heading: "h",
            text: "<a href=\"x\" onclick='y'>&</a>",
        }
        .render()
        .unwrap();
        assert!(
            html.contains("&#60;a href=&#34;x&#34; onclick=&#39;y&#39;&#62;&#38;&#60;/a&#62;"),
            "{html}"
        );
    }

    #[test]
    fn login_page_escapes_what_the_client_sent() {
        let brand = Branding::default();
        let html = LoginPage {
            prefix: "/.signoff",
            brand: &brand,
            next: "/\"><script>x</script>",
            username: "<b>",
            error: Some("<i>"),
            remember: Some("<u>"),
            providers: &[],
            password: true,
        }
        .render()
        .unwrap();
        assert!(!html.contains("<script>x"), "{html}");
        assert!(!html.contains("<b>") && !html.contains("<i>"), "{html}");
        assert!(html.contains("name=\"username\"") && html.contains("name=\"password\""));
        assert!(
            html.contains("<label for=\"username\">") && html.contains("<label for=\"password\">")
        );
        assert!(!html.contains("<u>"), "{html}");
    }

    #[test]
    fn the_remember_checkbox_is_shown_only_when_offered() {
        let brand = Branding::default();
        let page = |remember| {
            LoginPage {
                prefix: "/.signoff",
                brand: &brand,
                next: "/",
                username: "",
                error: None,
                remember,
                providers: &[],
                password: true,
            }
            .render()
            .unwrap()
        };
        let off = page(None);
        assert!(!off.contains("remember"), "{off}");
        let on = page(Some("30 days"));
        assert!(
            on.contains(
                "<label class=\"check\"><input id=\"remember\" name=\"remember\" \
                 type=\"checkbox\" value=\"1\"> Remember this device for 30 days</label>\n\
                 <button type=\"submit\">"
            ),
            "{on}"
        );
    }

    /// Every page, with `evil` in each field a user or client controls.
    fn every_page(evil: &str) -> Vec<(&'static str, String)> {
        every_page_of(evil, &Branding::default())
    }

    /// Every page, with `evil` in each field and this branding.
    fn every_page_of(evil: &str, brand: &Branding) -> Vec<(&'static str, String)> {
        let moment = || Moment {
            machine: evil.to_owned(),
            absolute: evil.to_owned(),
            relative: evil.to_owned(),
        };
        let row = |current| SessionRow {
            handle: "h".to_owned(),
            current,
            device: evil.to_owned(),
            ip: evil.to_owned(),
            created: moment(),
            seen: moment(),
            remembered_until: Some(evil.to_owned()),
        };
        vec![
            (
                "login",
                LoginPage {
                    prefix: "/.signoff",
                    brand,
                    next: evil,
                    username: evil,
                    error: Some(evil),
                    remember: Some(evil),
                    providers: &[ProviderLink {
                        href: evil.to_owned(),
                        name: evil.to_owned(),
                    }],
                    password: true,
                }
                .render(),
            ),
            (
                "logout",
                LogoutPage {
                    prefix: "/.signoff",
                    brand,
                    csrf: Some(evil),
                }
                .render(),
            ),
            (
                "signed out",
                SignedOutPage {
                    prefix: "/.signoff",
                    brand,
                }
                .render(),
            ),
            (
                "message",
                MessagePage {
                    prefix: "/.signoff",
                    brand,
                    heading: evil,
                    text: evil,
                }
                .render(),
            ),
            (
                "sign-in refused",
                SignInRefusedPage {
                    prefix: "/.signoff",
                    brand,
                    expected: "http://127.0.0.1:8080",
                    arrived: evil,
                    fix: evil,
                }
                .render(),
            ),
            (
                "sessions",
                SessionsPage {
                    prefix: "/.signoff",
                    brand,
                    user: evil,
                    csrf: evil,
                    rows: vec![row(true), row(false)],
                    ended: Some(2),
                }
                .render(),
            ),
            (
                "reauth",
                ReauthPage {
                    prefix: "/.signoff",
                    brand,
                    user: evil,
                    csrf: evil,
                    next: evil,
                    error: Some(evil),
                }
                .render(),
            ),
            (
                "password",
                PasswordPage {
                    prefix: "/.signoff",
                    brand,
                    user: evil,
                    csrf: evil,
                    min: 8,
                    notice: Some(evil),
                    error: Some(evil),
                }
                .render(),
            ),
        ]
        .into_iter()
        .map(|(name, html)| (name, html.unwrap()))
        .collect()
    }

    #[test]
    fn every_page_escapes_what_users_and_clients_control() {
        let evil = "\"'><script>alert(1)</script>";
        for (name, html) in every_page(evil) {
            // The sessions page's own script file is the one script tag.
            let html = html.replace(OWN_SCRIPT, "");
            assert!(!html.contains("<script"), "{name}: {html}");
            assert!(!html.contains("'>"), "{name}: {html}");
        }
        let sessions = &every_page("<script>")[5].1;
        assert!(
            sessions.contains("<b>&#60;script&#62;</b> (this device)"),
            "{sessions}"
        );
    }

    #[test]
    fn every_page_links_the_stylesheet_and_has_no_inline_style() {
        for (name, html) in every_page("x") {
            assert!(html.starts_with("<!doctype html>\n"), "{name}: {html}");
            assert_eq!(
                html.matches("<link rel=\"stylesheet\" href=\"/.signoff/signoff.css\">")
                    .count(),
                1,
                "{name}: {html}"
            );
            let lower = html.to_ascii_lowercase();
            assert!(
                !lower.contains("style=") && !lower.contains("<style"),
                "{name}: {html}"
            );
        }
        assert!(CSP.contains("style-src 'self';") && !CSP.contains("unsafe-inline"));
    }

    const OWN_SCRIPT: &str = "<script src=\"/.signoff/signoff.js\" defer></script>";

    #[test]
    fn every_page_shows_the_brand_and_is_one_landmarked_document() {
        let brand = Branding {
            name: "Acme <Wiki>".to_owned(),
            ..Branding::default()
        };
        for (name, html) in every_page_of("x", &brand) {
            assert!(html.contains("<html lang=\"en\">"), "{name}: {html}");
            assert!(
                html.contains(" · Acme &#60;Wiki&#62;</title>"),
                "{name}: {html}"
            );
            assert!(
                html.contains("<p class=\"brand\"><span>Acme &#60;Wiki&#62;</span></p>"),
                "{name}: {html}"
            );
            assert_eq!(html.matches("<h1>").count(), 1, "{name}: {html}");
            for landmark in [
                "<header class=\"site\">",
                "<main>",
                "<footer class=\"site\">",
            ] {
                assert_eq!(html.matches(landmark).count(), 1, "{name}: {landmark}");
            }
            assert!(
                html.contains("<p>Protected by signoff</p>"),
                "{name}: {html}"
            );
            // No operator files given: none linked.
            assert!(!html.contains("/brand"), "{name}: {html}");
        }
        let login = &every_page_of("x", &Branding::default())[0].1;
        assert!(
            login.contains("<title>Sign in · signoff</title>"),
            "{login}"
        );
    }

    #[test]
    fn operator_files_are_linked_by_the_hash_of_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("logo.png"), b"\x89PNG\r\n\x1a\n....").unwrap();
        std::fs::write(dir.path().join("extra.css"), "h1{}").unwrap();
        let brand = crate::config::BrandingOptions {
            brand_accent: Some("#123".to_owned()),
            template_dir: Some(dir.path().to_owned()),
            ..Default::default()
        }
        .check()
        .unwrap();
        let logo = brand.logo.as_ref().unwrap().version.clone();
        let extra = brand.extra_css.as_ref().unwrap().version.clone();
        assert_eq!(logo.len(), 16);
        for (name, html) in every_page_of("x", &brand) {
            assert!(
                html.contains(&format!(
                    "<img src=\"/.signoff/brand/logo?v={logo}\" alt=\"\"><span>signoff</span>"
                )),
                "{name}: {html}"
            );
            assert!(
                html.contains("<link rel=\"stylesheet\" href=\"/.signoff/brand.css?v=112233\">"),
                "{name}: {html}"
            );
            assert!(
                html.contains(&format!(
                    "<link rel=\"stylesheet\" href=\"/.signoff/brand/extra.css?v={extra}\">"
                )),
                "{name}: {html}"
            );
        }
    }

    #[test]
    fn the_csp_allows_no_inline_code_and_scripts_only_on_the_sessions_page() {
        for csp in [CSP, CSP_WITH_SCRIPT] {
            assert!(
                !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
                "{csp}"
            );
            assert!(csp.contains("style-src 'self';") && csp.contains("img-src 'self';"));
            assert!(csp.starts_with("default-src 'none';"), "{csp}");
        }
        assert!(!CSP.contains("script-src"));
        assert!(CSP_WITH_SCRIPT.contains("script-src 'self';"));
        for (name, html) in every_page("x") {
            assert_eq!(html.contains(OWN_SCRIPT), name == "sessions", "{name}");
        }
    }

    #[test]
    fn session_times_are_time_elements_with_the_utc_time_in_the_title() {
        let brand = Branding::default();
        let now = signoff::Timestamp::from_millis(1_795_270_586_000);
        let then = signoff::Timestamp::from_millis(1_795_270_586_000 - 180_000);
        let html = SessionsPage {
            prefix: "/.signoff",
            brand: &brand,
            user: "ann",
            csrf: "c",
            rows: vec![SessionRow {
                handle: "h".to_owned(),
                current: true,
                device: "Firefox 128 on Linux".to_owned(),
                ip: "127.0.0.1".to_owned(),
                created: Moment::of(then, now),
                seen: Moment::of(now, now),
                remembered_until: None,
            }],
            ended: None,
        }
        .render()
        .unwrap();
        assert!(
            html.contains(
                "Signed in from 127.0.0.1 <time datetime=\"2026-11-21T14:13:26Z\" \
                 title=\"2026-11-21 14:13 UTC\">3 minutes ago</time>; last seen \
                 <time datetime=\"2026-11-21T14:16:26Z\" title=\"2026-11-21 14:16 UTC\">just now</time>"
            ),
            "{html}"
        );
    }

    #[test]
    fn an_error_is_an_alert_that_its_fields_point_to() {
        let brand = Branding::default();
        let html = LoginPage {
            prefix: "/.signoff",
            brand: &brand,
            next: "/",
            username: "ann",
            error: Some("Wrong user name or password."),
            remember: None,
            providers: &[],
            password: true,
        }
        .render()
        .unwrap();
        assert!(html.contains("<p class=\"error\" id=\"form-error\" role=\"alert\">"));
        assert_eq!(
            html.matches("aria-describedby=\"form-error\"").count(),
            2,
            "{html}"
        );
        let calm = LoginPage {
            prefix: "/.signoff",
            brand: &brand,
            next: "/",
            username: "",
            error: None,
            remember: None,
            providers: &[],
            password: true,
        }
        .render()
        .unwrap();
        assert!(!calm.contains("aria-describedby") && !calm.contains("aria-invalid"));
    }

    #[test]
    fn the_stylesheet_needs_nothing_from_elsewhere_and_has_both_schemes() {
        for banned in ["url(", "@import", "http:", "https:", "@font-face"] {
            assert!(!STYLESHEET.contains(banned), "{banned}");
        }
        assert!(STYLESHEET.contains("@media (prefers-color-scheme: dark)"));
        assert!(STYLESHEET.contains(":focus-visible"));
        assert!(STYLESHEET.contains("font-family: system-ui"));
    }

    #[test]
    fn a_failing_override_is_logged_once_per_page() {
        // Names no other test renders through a failing override.
        assert!(first_failure_of("test-page-a"));
        assert!(!first_failure_of("test-page-a"));
        assert!(!first_failure_of("test-page-a"));
        assert!(first_failure_of("test-page-b"));
    }

    #[test]
    fn the_checkbox_sits_on_its_label_line() {
        let html = &every_page("x")[7].1;
        assert!(
            html.contains("<label class=\"check\"><input id=\"keep_others\""),
            "{html}"
        );
        assert!(
            STYLESHEET.contains("label.check") && STYLESHEET.contains("input[type=\"checkbox\"]")
        );
    }

    /// Element names that make a string literal HTML markup.
    const TAGS: &[&str] = &[
        "!doctype", "a", "b", "body", "br", "button", "code", "div", "em", "footer", "form", "h1",
        "h2", "h3", "head", "header", "html", "i", "iframe", "img", "input", "label", "li", "link",
        "main", "meta", "nav", "ol", "option", "p", "pre", "script", "section", "select", "small",
        "span", "strong", "style", "table", "td", "textarea", "th", "title", "tr", "ul",
    ];

    /// Calls that build text from pieces.
    const BUILDERS: &[&str] = &[
        "format!(",
        "format_args!(",
        "write!(",
        "writeln!(",
        "concat!(",
        "push_str(",
    ];

    /// Does this text hold an HTML tag (`<p>`, `</b>`, `<input type=…`)?
    fn has_tag(text: &str) -> bool {
        let lower = text.to_ascii_lowercase();
        lower.match_indices('<').any(|(at, _)| {
            let rest = &lower[at + 1..];
            let rest = rest.strip_prefix('/').unwrap_or(rest);
            TAGS.iter().any(|tag| {
                rest.strip_prefix(tag).is_some_and(|after| {
                    after
                        .chars()
                        .next()
                        .is_some_and(|c| !c.is_ascii_alphanumeric() && c != '-' && c != '_')
                })
            })
        })
    }

    /// Does a raw string literal (`r"…"`, `r#"…"#`) start at `i`?
    fn raw_string_at(bytes: &[u8], i: usize) -> bool {
        let hashes = bytes[i + 1..].iter().take_while(|&&b| b == b'#').count();
        let after_word = i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        !after_word && bytes.get(i + 1 + hashes) == Some(&b'"')
    }

    /// The string literals inside the call whose `(` is at the start of `code`.
    fn literals_in_call(code: &str) -> Vec<String> {
        let bytes = code.as_bytes();
        let mut found = Vec::new();
        let mut depth = 0usize;
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                b'r' if raw_string_at(bytes, i) => {
                    let hashes = bytes[i + 1..].iter().take_while(|&&b| b == b'#').count();
                    let start = i + 1 + hashes + 1;
                    let end_marker = format!("\"{}", "#".repeat(hashes));
                    let end = code[start..]
                        .find(&end_marker)
                        .map_or(code.len(), |e| start + e);
                    found.push(code[start..end].to_owned());
                    i = end + end_marker.len();
                    continue;
                }
                b'"' => {
                    let mut text = String::new();
                    let mut j = i + 1;
                    while j < bytes.len() && bytes[j] != b'"' {
                        if bytes[j] == b'\\' {
                            j += 1;
                        }
                        text.push(char::from(bytes[j]));
                        j += 1;
                    }
                    found.push(text);
                    i = j + 1;
                    continue;
                }
                b'\'' => {
                    // A char literal ('"', '\'') or a lifetime.
                    if bytes.get(i + 1) == Some(&b'\\') {
                        i += 3;
                        while i < bytes.len() && bytes[i] != b'\'' {
                            i += 1;
                        }
                    } else if bytes.get(i + 2) == Some(&b'\'') {
                        i += 2;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        found
    }

    /// The HTML-building calls in one file's code (its test module left out:
    /// tests build upstream pages as input).
    fn markup_built_in(source: &str) -> Vec<String> {
        let code = source.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
        let code: String = code
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let mut found = Vec::new();
        for builder in BUILDERS {
            for (at, _) in code.match_indices(builder) {
                let call = &code[at + builder.len() - 1..];
                found.extend(
                    literals_in_call(call)
                        .into_iter()
                        .filter(|l| has_tag(l))
                        .map(|l| format!("{builder}{l:?}")),
                );
            }
        }
        found
    }

    fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn the_markup_finder_finds_markup_and_nothing_else() {
        for html in [
            r#"let x = format!("<p class=\"error\">{}</p>", e);"#,
            r#"out.push_str("<li>");"#,
            r#"write!(f, "{a}</b>")?;"#,
            r#"let t = format!("<!doctype html>\n<html lang=\"en\">");"#,
            r##"let t = format!(r#"<input type="hidden" value="{v}">"#);"##,
            r#"let t = format!("{}", x.map(|c| '"').then("<br>"));"#,
            r#"let t = format!("{}{}", '\'', "<br>");"#,
        ] {
            assert_eq!(markup_built_in(html).len(), 1, "{html}");
        }
        for plain in [
            r#"let x = format!("Vec<u8> is {} < {}", a, b);"#,
            r#"let x = format!("{a}<{b}> <T> <paragraph> <a-b> <>");"#,
            r#"tracing::info!("a CSP in a <meta> tag must allow this hash");"#,
            "// format!(\"<p>\") in a comment",
            "#[cfg(test)]\nmod tests {\n    fn f() { format!(\"<html>{t}\"); }\n}",
        ] {
            assert_eq!(markup_built_in(plain), Vec::<String>::new(), "{plain}");
        }
    }

    /// Pages come from auto-escaping templates only: no HTML is built by
    /// string formatting anywhere in this crate.
    #[test]
    fn no_markup_is_built_by_string_formatting() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        assert!(files.len() > 10, "{files:?}");
        let found: Vec<String> = files
            .iter()
            .flat_map(|path| {
                let text = std::fs::read_to_string(path).unwrap();
                markup_built_in(&text)
                    .into_iter()
                    .map(move |call| format!("{}: {call}", path.display()))
            })
            .collect();
        assert!(
            found.is_empty(),
            "HTML belongs in templates/ (auto-escaping), not in string formatting:\n{}",
            found.join("\n")
        );
    }
}
