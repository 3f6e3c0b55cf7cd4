//! Signing in and out of an app as a person would, and each check of
//! `signoff check` with the evidence that decided it. A check reports only
//! what it saw: when what it saw does not decide, it says "could not tell".

use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use url::Url;

use super::back_button::{Logout, Outcome, Scene};
use super::browser::Engine;
use super::framework::Framework;
use super::page::{refresh_url, says_other_sessions, says_sign_out, Form, Page};
use super::visitor::{path_of, Ask, Exchange, Jar, SetCookie, Site, Web, OTHER_SITE};
use super::{Finding, Plan, Verdict};

/// The parameter names apps use to send the user on after sign-in
/// (compared without regard to case).
const REDIRECT_PARAMS: &[&str] = &[
    "next",
    "return_to",
    "returnto",
    "returnurl",
    "return_url",
    "redirect",
    "redirect_to",
    "redirectto",
    "redirect_uri",
    "redirect_url",
    "callbackurl",
    "continue",
    "destination",
    "goto",
    "from",
    "return",
    "url",
    "rd",
    "r",
];

/// Values of `next` that browsers would follow off-site when an app
/// redirects to them unchecked. `APP` stands for the app's own host and
/// port (they defeat allow-lists that only check a prefix).
const OFF_SITE: &[&str] = &[
    "//evil.example/",
    "///evil.example/",
    " //evil.example/",
    "/\\evil.example/",
    "\\/evil.example/",
    "\\\\evil.example/",
    "/\t/evil.example/",
    "https://evil.example/",
    "http:evil.example",
    "https:/\\evil.example",
    "https://APP@evil.example/",
    "https://APP.evil.example/",
    "/%2F%2Fevil.example/",
    "%2F%2Fevil.example",
    "/%5Cevil.example",
    "/%5C%5Cevil.example",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "data:text/html,signoff-check",
];

/// Words that mark a control or link `check` must never use: it signs in
/// and out, and changes nothing else.
const DESTRUCTIVE: &[&str] = &[
    "delete",
    "remove",
    "close",
    "deactivate",
    "revoke",
    "reset",
    "disable",
    "cancel",
    "erase",
    "destroy",
    "unsubscribe",
    "terminate",
    "kill",
];

/// Whether `text` (a control's text or address) names something
/// destructive.
fn destructive(text: &str) -> bool {
    let t = text.to_lowercase();
    DESTRUCTIVE.iter().any(|w| t.contains(w))
}

/// Where apps often list a user's sessions.
const WELL_KNOWN_SESSIONS_PAGES: &[&str] = &[
    "/.signoff/sessions",
    "/account/sessions",
    "/settings/sessions",
    "/sessions",
    "/account/security",
];

/// How to sign out, as found on the signed-in page.
#[derive(Debug, Clone)]
enum Control {
    Form { action: Url, form: Form },
    Link { url: Url },
}

impl Control {
    /// `POST /logout (form)`, for evidence.
    fn describe(&self) -> String {
        match self {
            Control::Form { action, form } => {
                format!("{} {} (a form)", form.method, path_of(action))
            }
            Control::Link { url } => format!("GET {} (a link)", path_of(url)),
        }
    }

    /// The request a person's click sends.
    fn click(&self) -> Ask {
        match self {
            Control::Form { action, form } if form.method == "POST" => {
                Ask::post(action.clone(), form.submission(), Site::Own)
            }
            Control::Form { action, form } => {
                let mut url = action.clone();
                url.query_pairs_mut()
                    .clear()
                    .extend_pairs(form.submission());
                Ask::get(url, Site::Own)
            }
            Control::Link { url } => Ask::get(url.clone(), Site::Own),
        }
    }

    fn url(&self) -> &Url {
        match self {
            Control::Form { action, .. } => action,
            Control::Link { url } => url,
        }
    }
}

/// What the first sign-in taught.
struct Learned {
    login_page: Url,
    /// The cookies sign-in set or changed: the session (CSRF cookies left
    /// out).
    session: Vec<SetCookie>,
    /// The private page, signed in, and what is on it.
    private: Exchange,
    page: Page,
    /// Text only the signed-in page shows (the user's name), when there is.
    marker: Option<String>,
    /// Text a person sees only on the signed-in page: the user's name, else
    /// a line the login page lacks.
    private_text: Option<String>,
    /// The login form's user name field.
    user_field: String,
    control: Option<Control>,
    /// The parameter that carries where to go after sign-in.
    redirect_param: String,
}

/// One run against one app.
pub struct Run<'p> {
    plan: &'p Plan,
    pub web: Web,
    pub framework: Framework,
    protected: Url,
    learned: Option<Learned>,
    /// Every session the run signed in, to sign each out at the end: an
    /// app that limits sessions per user must not lose the user's own.
    opened: Mutex<Vec<Jar>>,
}

impl<'p> Run<'p> {
    /// Visits the protected page, finds the login form and signs in once.
    pub async fn start(plan: &'p Plan) -> Result<Run<'p>> {
        if !matches!(plan.url.scheme(), "http" | "https") {
            bail!("{}: give an http:// or https:// URL", plan.url);
        }
        let web = Web::new(plan.url.clone(), plan.timeout, plan.password.as_deref())?;
        let mut protected = match &plan.protected {
            Some(p) => plan
                .url
                .join(p)
                .with_context(|| format!("--protected {p:?}"))?,
            None => plan.url.clone(),
        };
        if !web.same_origin(&protected) {
            bail!("--protected must be a page of {}", web.origin());
        }
        let mut anonymous = Jar::default();
        let visit = web
            .follow(
                Ask::get(protected.clone(), Site::AddressBar),
                &mut anonymous,
            )
            .await
            .with_context(|| format!("cannot reach {}", plan.url))?;
        let mut run = Run {
            plan,
            web,
            framework: Framework::Unknown,
            protected: protected.clone(),
            learned: None,
            opened: Mutex::new(Vec::new()),
        };
        let (Some(user), Some(_)) = (&plan.user, &plan.password) else {
            let page = Page::read(&visit.last().expect("one exchange").body, None)?;
            run.framework = Framework::detect(&visit, &page, "");
            return Ok(run);
        };
        let last = visit.last().expect("one exchange");
        let login_page = match &plan.login {
            Some(l) => {
                let url = plan.url.join(l).with_context(|| format!("--login {l:?}"))?;
                if !run.web.same_origin(&url) {
                    bail!("--login must be a page of {}", run.web.origin());
                }
                url
            }
            None if Page::read(&last.body, None)?.asks_for_password() => last.url.clone(),
            None => bail!(
                "no login form (a form with a password field) at {}, where {} led: \
                 give --login PATH, or --protected with a page that needs sign-in",
                path_of(&last.url),
                path_of(&protected)
            ),
        };
        let mut jar = anonymous.clone();
        let (login_form, before, signed_in) = run.sign_in(&mut jar, &login_page, None).await?;
        let opened = run
            .web
            .follow(Ask::get(protected.clone(), Site::Own), &mut jar)
            .await?;
        let private = opened.last().expect("one exchange").clone();
        let page = Page::read(&private.body, plan.logout.as_deref())?;
        if private.status != 200 || page.asks_for_password() {
            let said = signed_in
                .iter()
                .map(Exchange::summary)
                .collect::<Vec<_>>()
                .join("; ");
            bail!(
                "signing in as {user:?} did not open {}: it answered {} after {said}. \
                 Check the user name and password, or give --login and --protected",
                path_of(&protected),
                private.status
            );
        }
        protected = private.url.clone();
        run.protected = protected.clone();
        let marker = (private.body.contains(user.as_str()) && !last.body.contains(user.as_str()))
            .then(|| user.clone());
        let login_shown = Page::read(&last.body, None)?;
        let private_text = marker
            .clone()
            .filter(|m| page.text.contains(m.as_str()))
            .or_else(|| page.own_line(&[&login_shown]));
        let user_field = login_form
            .user_field()
            .map(|f| f.name.clone())
            .unwrap_or_default();
        let session = run
            .session_cookies(&jar, &before, &visit, &signed_in)
            .await?;
        let control = control(&page, &private.url, plan.logout.is_some());
        if plan.logout.is_some() && control.is_none() {
            bail!(
                "--logout {:?} matches no form or link on {}",
                plan.logout.as_deref().unwrap_or_default(),
                path_of(&private.url)
            );
        }
        // The redirect parameter as the app spells it: a field of the login
        // form, or a parameter of the login page's or the form's address.
        let action_query: Vec<String> = login_page
            .join(&login_form.action)
            .map(|u| u.query_pairs().map(|(k, _)| k.into_owned()).collect())
            .unwrap_or_default();
        let redirect_param = login_form
            .fields
            .iter()
            .map(|f| f.name.clone())
            .chain(login_page.query_pairs().map(|(k, _)| k.into_owned()))
            .chain(action_query)
            .find(|n| REDIRECT_PARAMS.iter().any(|p| p.eq_ignore_ascii_case(n)))
            .unwrap_or_else(|| "next".to_owned());
        let mut seen = visit.clone();
        seen.extend(signed_in);
        seen.push(private.clone());
        run.framework = Framework::detect(&seen, &Page::read(&last.body, None)?, &login_form.label);
        run.opened
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(jar.clone());
        run.learned = Some(Learned {
            login_page,
            session,
            private,
            page,
            marker,
            private_text,
            user_field,
            control,
            redirect_param,
        });
        // The protected page must not open without signing in.
        let (open, ex) = run.opens(&Jar::default()).await?;
        if open {
            bail!(
                "{} opens without signing in ({}): give --protected with a page that needs \
                 sign-in",
                path_of(&protected),
                ex.summary()
            );
        }
        Ok(run)
    }

    /// Signs in with `jar`, from `login` (with `redirect` added to its
    /// query and to the form's own field of that name). The login form as
    /// found, the jar just before the password was sent, and the answers
    /// to the sign-in (its redirects followed on the app's origin).
    async fn sign_in(
        &self,
        jar: &mut Jar,
        login: &Url,
        redirect: Option<(&str, &str)>,
    ) -> Result<(Form, Jar, Vec<Exchange>)> {
        let mut url = login.clone();
        if let Some((name, value)) = redirect {
            with_param(&mut url, name, value);
        }
        let shown = self.web.follow(Ask::get(url, Site::Own), jar).await?;
        let at = shown.last().expect("one exchange");
        let page = Page::read(&at.body, None)?;
        let form = page
            .login_form()
            .cloned()
            .ok_or_else(|| anyhow!("no login form at {} ({})", path_of(&at.url), at.summary()))?;
        let user_field = form.user_field().map(|f| f.name.clone()).ok_or_else(|| {
            anyhow!(
                "the login form at {} has no user name field",
                path_of(&at.url)
            )
        })?;
        let password_field = form.password_field().expect("a login form").name.clone();
        let mut fields = form.submission();
        for (name, value) in &mut fields {
            if *name == user_field {
                value.clone_from(self.plan.user.as_ref().expect("a user"));
            } else if *name == password_field {
                value.clone_from(self.plan.password.as_ref().expect("a password"));
            } else if let Some((param, v)) = redirect {
                if name == param {
                    *value = v.to_owned();
                }
            }
        }
        let mut action = at
            .url
            .join(&form.action)
            .with_context(|| format!("the login form's action {:?}", form.action))?;
        if let Some((name, value)) = redirect {
            if action.query_pairs().any(|(k, _)| k == name) {
                with_param(&mut action, name, value);
            }
        }
        if !self.web.same_origin(&action) {
            bail!(
                "the login form at {} sends the password to another origin ({action}): \
                 `signoff check` signs in only on the app it checks",
                path_of(&at.url)
            );
        }
        let before = jar.clone();
        let ask = if form.method == "POST" {
            Ask::post(action, fields, Site::Own)
        } else {
            let mut url = action;
            url.query_pairs_mut().clear().extend_pairs(fields);
            Ask::get(url, Site::Own)
        };
        let answers = self.web.follow(ask, jar).await?;
        Ok((form, before, answers))
    }

    fn learned(&self) -> &Learned {
        self.learned.as_ref().expect("signed in at start")
    }

    /// A fresh visitor, signed in (seen to open the protected page); its
    /// cookies.
    async fn fresh_session(&self) -> Result<Jar> {
        let mut jar = Jar::default();
        let login = self.learned().login_page.clone();
        let (_, _, answers) = self.sign_in(&mut jar, &login, None).await?;
        self.signed_in_or_say_why(&jar, &answers).await?;
        Ok(jar)
    }

    /// `Ok` when `jar` opens the protected page after a sign-in; else why
    /// not (a wrong password, or a limit on sign-ins per minute).
    async fn signed_in_or_say_why(&self, jar: &Jar, answers: &[Exchange]) -> Result<()> {
        self.opened
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(jar.clone());
        let (open, ex) = self.opens(jar).await?;
        if open {
            return Ok(());
        }
        let said = answers
            .iter()
            .map(Exchange::summary)
            .collect::<Vec<_>>()
            .join("; ");
        bail!(
            "signing in again did not open {} ({}) after {said}: the app may limit sign-ins \
             per minute",
            path_of(&self.protected),
            ex.summary()
        )
    }

    /// The cookies that carry the session: those the protected page needs
    /// (each left out in turn), else those sign-in set or changed; with
    /// the `Set-Cookie` that set each (at sign-in, or before it).
    async fn session_cookies(
        &self,
        jar: &Jar,
        before: &Jar,
        visit: &[Exchange],
        signed_in: &[Exchange],
    ) -> Result<Vec<SetCookie>> {
        let mut last_set: Vec<SetCookie> = Vec::new();
        for c in visit
            .iter()
            .chain(signed_in)
            .flat_map(Exchange::set_cookies)
            .filter(|c| !c.removes)
        {
            last_set.retain(|s| s.name != c.name);
            last_set.push(c);
        }
        let mut needed = Vec::new();
        for (name, _) in jar.0.iter().take(10) {
            let mut without = jar.clone();
            without.0.retain(|(n, _)| n != name);
            if !self.opens(&without).await?.0 {
                needed.push(name.clone());
            }
        }
        let names: Vec<String> = if needed.is_empty() {
            signed_in
                .iter()
                .flat_map(Exchange::set_cookies)
                .filter(|c| !c.removes && before.get(&c.name) != Some(c.value.as_str()))
                .map(|c| c.name)
                .filter(|n| {
                    let l = n.to_ascii_lowercase();
                    !l.contains("csrf") && !l.contains("xsrf")
                })
                .collect()
        } else {
            needed
        };
        let mut session: Vec<SetCookie> = Vec::new();
        for name in names {
            if session.iter().any(|c| c.name == name) {
                continue;
            }
            match last_set.iter().find(|c| c.name == name) {
                Some(c) => session.push(c.clone()),
                None => bail!(
                    "the session cookie {name} was not set by the app over HTTP (a page \
                     script set it?): `signoff check` audits cookies the server sets"
                ),
            }
        }
        if session.is_empty() {
            bail!(
                "signing in set no cookie: `signoff check` audits cookie sessions, and this \
                 app keeps its session some other way"
            );
        }
        Ok(session)
    }

    /// Whether `cookies` open the private page; the answer.
    async fn opens(&self, cookies: &Jar) -> Result<(bool, Exchange)> {
        let mut jar = cookies.clone();
        let ex = self
            .web
            .send(
                &Ask::get(self.protected.clone(), Site::Own),
                &mut jar,
                false,
            )
            .await?;
        // A page that is busy or broken says nothing about the session: it
        // must not count as a refusal (a pass for replay, fixation, idle).
        if ex.status == 429 || ex.status >= 500 {
            bail!(
                "{}: the app could not answer, so whether the session is alive is not known",
                ex.summary()
            );
        }
        let page = Page::read(&ex.body, None)?;
        let marker_ok = self
            .learned
            .as_ref()
            .and_then(|l| l.marker.as_deref())
            .is_none_or(|m| ex.body.contains(m));
        Ok((
            (200..300).contains(&ex.status) && !page.asks_for_password() && marker_ok,
            ex,
        ))
    }

    /// The sign-out control as the private page shows it to the holder
    /// of `jar` (its tokens are this session's).
    async fn control_for(&self, jar: &mut Jar) -> Result<Control> {
        let ex = self
            .web
            .send(&Ask::get(self.protected.clone(), Site::Own), jar, true)
            .await?;
        let page = Page::read(&ex.body, self.plan.logout.as_deref())?;
        let control = control(&page, &ex.url, self.plan.logout.is_some())
            .ok_or_else(|| anyhow!("the sign-out control is not on {}", ex.summary()))?;
        if !self.web.same_origin(control.url()) {
            bail!(
                "the sign-out control leads to another origin ({}): `signoff check` signs out \
                 only on the app it checks",
                control.url().origin().ascii_serialization()
            );
        }
        Ok(control)
    }

    /// Signs the holder of `jar` out as a person would: the sign-out
    /// control of the private page, as it is for this session. The
    /// cookies as they were just before the click, and the answers.
    async fn sign_out(&self, jar: &mut Jar) -> Result<(Jar, Vec<Exchange>)> {
        let control = self.control_for(jar).await?;
        let copied = jar.clone();
        let answers = self.web.follow(control.click(), jar).await?;
        Ok((copied, answers))
    }

    /// Every check, in the report's order.
    pub async fn all(&self) -> Result<Vec<Finding>> {
        let Some(learned) = &self.learned else {
            return Ok(CHECKS
                .iter()
                .map(|(id, title)| Finding {
                    id,
                    title,
                    verdict: Verdict::NotRun,
                    seen: "needs an account: give --user NAME and the password on stdin \
                           (--password-stdin)"
                        .into(),
                    evidence: vec![],
                    fix: None,
                })
                .collect());
        };
        // A check that cannot finish (the budget, an app that stops
        // answering) says so; the others still run.
        let (mut all, control_works) = match self.replay_and_logout().await {
            Ok(found) => found,
            Err(e) => (
                ["replay", "logout-cookie", "clear-site-data"]
                    .into_iter()
                    .map(|id| unsure(id, &e))
                    .collect(),
                None,
            ),
        };
        all.push(
            self.fixation()
                .await
                .unwrap_or_else(|e| unsure("fixation", &e)),
        );
        all.push(
            self.forged_logout(control_works)
                .await
                .unwrap_or_else(|e| unsure("forged-logout", &e)),
        );
        all.push(no_store(learned));
        all.push(self.back_button().await);
        all.push(cookie_flags(learned, self.https()));
        all.push(
            self.open_redirect()
                .await
                .unwrap_or_else(|e| unsure("open-redirect", &e)),
        );
        all.push(
            self.other_sessions()
                .await
                .unwrap_or_else(|e| unsure("other-sessions", &e)),
        );
        all.extend(self.token_mode().await);
        // Late: --end-session-command may end every session of the user.
        let server_ended = self.server_ended_back().await;
        all.insert(
            all.iter()
                .position(|f| f.id == "back-button")
                .map_or(all.len(), |i| i + 1),
            server_ended,
        );
        // Last: it waits, and the first session may end meanwhile.
        all.push(
            self.idle()
                .await
                .unwrap_or_else(|e| unsure("idle-timeout", &e)),
        );
        self.sign_out_everything().await;
        for f in &mut all {
            f.seen = self.web.scrub(&f.seen);
            for e in &mut f.evidence {
                *e = self.web.scrub(e);
            }
            if f.verdict == Verdict::Fail {
                f.fix = Some(self.framework.fix(f.id));
            }
        }
        Ok(all)
    }

    fn https(&self) -> bool {
        self.protected.scheme() == "https"
    }
}

/// The checks, in order, with their titles.
pub const CHECKS: &[(&str, &str)] = &[
    (
        "replay",
        "A cookie copied before sign-out is refused after it",
    ),
    (
        "logout-cookie",
        "Sign-out expires the session cookie as it was set",
    ),
    ("clear-site-data", "Sign-out sends Clear-Site-Data"),
    (
        "fixation",
        "A cookie from before sign-in is useless after it",
    ),
    ("forged-logout", "Another site cannot sign the user out"),
    ("no-store", "Signed-in pages are no-store"),
    ("back-button", "Back shows nothing private after sign-out"),
    (
        "server-ended-back",
        "Back shows nothing after the session ends on the server",
    ),
    (
        "cookie-flags",
        "The session cookie is HttpOnly, SameSite, Secure",
    ),
    ("open-redirect", "`next` cannot send the user off-site"),
    (
        "other-sessions",
        "The user can sign out their other sessions",
    ),
    ("idle-timeout", "Sessions end after an idle time"),
    (
        "token-after-logout",
        "An access token is refused right after logout",
    ),
    ("refresh-reuse", "A refresh token works once"),
];

/// The finding of a browser scene: `clean` says what a clean one saw.
fn scene_finding(id: &'static str, outcome: Outcome, clean: String) -> Finding {
    match outcome {
        Outcome::Clean { steps } => finding(id, Verdict::Pass, clean, steps),
        Outcome::Leaked { leaks, steps } => finding(id, Verdict::Fail, leaks.join("; "), steps),
        Outcome::Unsure { why, steps } => finding(id, Verdict::CouldNotTell, why, steps),
    }
}

/// The finding of a check that could not finish.
fn unsure(id: &'static str, e: &anyhow::Error) -> Finding {
    finding(id, Verdict::CouldNotTell, format!("{e:#}"), vec![])
}

/// Sets `name` to `value` in `url`'s query, in place of any it had.
fn with_param(url: &mut Url, name: &str, value: &str) {
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair(name, value);
}

fn title(id: &str) -> &'static str {
    CHECKS
        .iter()
        .find(|(i, _)| *i == id)
        .map(|(_, t)| *t)
        .expect("a known check")
}

fn finding(
    id: &'static str,
    verdict: Verdict,
    seen: impl Into<String>,
    evidence: Vec<String>,
) -> Finding {
    Finding {
        id,
        title: title(id),
        verdict,
        seen: seen.into(),
        evidence,
        fix: None,
    }
}

/// The sign-out control on `page`: what `--logout` selected, else a form
/// or link whose text or address says "log out" / "sign out".
fn control(page: &Page, at: &Url, selector: bool) -> Option<Control> {
    let form = |f: &Form| {
        Some(Control::Form {
            action: at.join(&f.action).ok()?,
            form: f.clone(),
        })
    };
    let link = |href: &str| {
        Some(Control::Link {
            url: at.join(href).ok()?,
        })
    };
    if selector {
        return page
            .forms
            .iter()
            .find(|f| f.selected)
            .and_then(form)
            .or_else(|| {
                page.links
                    .iter()
                    .find(|l| l.selected)
                    .and_then(|l| link(&l.href))
            });
    }
    page.forms
        .iter()
        .filter(|f| !destructive(&f.text) && !destructive(&f.action))
        .find(|f| says_sign_out(&f.text) || (f.text.trim().is_empty() && says_sign_out(&f.action)))
        .or_else(|| {
            page.forms
                .iter()
                .filter(|f| !destructive(&f.text) && !destructive(&f.action))
                .find(|f| says_sign_out(&f.action))
        })
        .and_then(form)
        .or_else(|| {
            page.links
                .iter()
                .filter(|l| !destructive(&l.text) && !destructive(&l.href))
                .find(|l| says_sign_out(&l.text) || says_sign_out(&l.href))
                .and_then(|l| link(&l.href))
        })
}

impl Run<'_> {
    /// Signs out as a person would, then: does the cookie copied before
    /// still open the page (replay), was the cookie expired as it was set,
    /// and was Clear-Site-Data sent. Also whether the control was seen to
    /// end a session (`None`: no control, or it could not be tried).
    async fn replay_and_logout(&self) -> Result<(Vec<Finding>, Option<bool>)> {
        let l = self.learned();
        let ids = ["replay", "logout-cookie", "clear-site-data"];
        let Some(control) = &l.control else {
            let why = format!(
                "no sign-out control (a form or link saying log out / sign out) on {}: \
                 give --logout SELECTOR",
                path_of(&l.private.url)
            );
            let all = ids
                .into_iter()
                .map(|id| finding(id, Verdict::CouldNotTell, why.clone(), vec![]))
                .collect();
            return Ok((all, None));
        };
        let mut jar = self.fresh_session().await?;
        let (copied, out) = self.sign_out(&mut jar).await?;
        let mut evidence: Vec<String> = vec![format!("signed out with {}", control.describe())];
        evidence.extend(out.iter().map(Exchange::summary));
        let (still_in, after) = self.opens(&jar).await?;
        if still_in {
            let why = format!(
                "signing out with {} did not sign out: the private page still opens with \
                 the browser's cookies ({})",
                control.describe(),
                after.summary()
            );
            evidence.push(after.summary());
            let all = ids
                .into_iter()
                .map(|id| finding(id, Verdict::CouldNotTell, why.clone(), evidence.clone()))
                .collect();
            return Ok((all, Some(false)));
        }
        let (replayed, answer) = self.opens(&copied).await?;
        let mut replay_evidence = evidence.clone();
        replay_evidence.push(format!(
            "{} with the cookies copied before sign-out",
            answer.summary()
        ));
        let replay = if replayed {
            finding(
                "replay",
                Verdict::Fail,
                format!(
                    "the cookie copied before sign-out still opens {} afterwards",
                    path_of(&self.protected)
                ),
                replay_evidence,
            )
        } else {
            finding(
                "replay",
                Verdict::Pass,
                format!(
                    "the copied cookie is refused after sign-out ({})",
                    answer.summary()
                ),
                replay_evidence,
            )
        };

        // The cookie: every session cookie expired in its own slot, or
        // replaced by a value that opens nothing (a new anonymous session).
        let sets: Vec<SetCookie> = out.iter().flat_map(Exchange::set_cookies).collect();
        let mut problems = Vec::new();
        let mut notes = Vec::new();
        let mut cookie_evidence = Vec::new();
        for set_at_sign_in in &l.session {
            let name = &set_at_sign_in.name;
            cookie_evidence.push(format!(
                "at sign-in: Set-Cookie: {}",
                set_at_sign_in.redacted()
            ));
            let last = sets.iter().rev().find(|s| s.name == *name);
            match last {
                None => problems.push(format!("{name} is not expired: the browser keeps it")),
                Some(s) => {
                    cookie_evidence.push(format!("at sign-out: Set-Cookie: {}", s.redacted()));
                    if !s.same_slot(set_at_sign_in) {
                        problems.push(format!(
                            "{name} is {} with Path {:?} and Domain {:?}, but was set with Path \
                             {:?} and Domain {:?}: the browser keeps the original",
                            if s.removes { "expired" } else { "set again" },
                            s.path,
                            s.domain,
                            set_at_sign_in.path,
                            set_at_sign_in.domain
                        ));
                    } else if (name.starts_with("__Host-") || name.starts_with("__Secure-"))
                        && !s.secure
                    {
                        problems.push(format!(
                            "{name} is expired without Secure: browsers ignore that"
                        ));
                    } else if !s.removes {
                        // A new value: fine if it is a session of nobody.
                        let mut only_new = Jar::default();
                        only_new.set(name, &s.value);
                        if self.opens(&only_new).await?.0 {
                            problems.push(format!(
                                "{name} is set to a new value that is still signed in"
                            ));
                        } else {
                            notes.push(format!("{name} replaced by a new, signed-out value"));
                        }
                    }
                }
            }
        }
        let logout_cookie = if problems.is_empty() {
            let how = if notes.is_empty() {
                format!(
                    "{} expired with the attributes it was set with",
                    names(&l.session)
                )
            } else {
                notes.join("; ")
            };
            finding("logout-cookie", Verdict::Pass, how, cookie_evidence)
        } else {
            finding(
                "logout-cookie",
                Verdict::Fail,
                problems.join("; "),
                cookie_evidence,
            )
        };

        let csd: Vec<(String, String)> = out
            .iter()
            .filter_map(|e| Some((e.summary(), e.header("clear-site-data")?.to_owned())))
            .collect();
        let clears_cookies = csd
            .iter()
            .any(|(_, v)| v.contains("\"cookies\"") || v.contains("\"*\""));
        let clear_site_data = match (clears_cookies, csd.first()) {
            (true, Some((at, v))) => finding(
                "clear-site-data",
                Verdict::Pass,
                format!("Clear-Site-Data: {v}"),
                vec![at.clone()],
            ),
            (false, Some((at, v))) => finding(
                "clear-site-data",
                Verdict::Fail,
                format!("Clear-Site-Data: {v}, without \"cookies\""),
                vec![at.clone()],
            ),
            (_, None) => finding(
                "clear-site-data",
                Verdict::Fail,
                "no Clear-Site-Data header on the sign-out answers",
                out.iter().map(Exchange::summary).collect(),
            ),
        };
        Ok((vec![replay, logout_cookie, clear_site_data], Some(true)))
    }

    /// A cookie held before sign-in (the visitor's own, or one an
    /// attacker planted) must not be signed in by it.
    async fn fixation(&self) -> Result<Finding> {
        let l = self.learned();
        let mut evidence = Vec::new();
        let mut failed = Vec::new();
        // A new visitor's cookies from just before the password was sent,
        // against the session that sign-in made.
        // As a visitor arrives: at the protected page (where Spring, Tomcat
        // and Django make the session), then the login page.
        let mut jar = Jar::default();
        self.web
            .follow(Ask::get(self.protected.clone(), Site::AddressBar), &mut jar)
            .await?;
        let (_, before_login, answers) = self.sign_in(&mut jar, &l.login_page, None).await?;
        self.signed_in_or_say_why(&jar, &answers).await?;
        if before_login.0.is_empty() {
            evidence.push("the login page set no cookie before sign-in".to_owned());
        } else {
            let (open, ex) = self.opens(&before_login).await?;
            evidence.push(format!(
                "{} with the cookies held just before signing in",
                ex.summary()
            ));
            if open {
                failed.push("the cookies held before sign-in are signed in by it".to_owned());
            }
        }
        // A made-up session cookie, planted before sign-in.
        let planted = format!("signoffcheck{:032x}", rand::random::<u128>());
        let mut jar = Jar::default();
        for c in &l.session {
            jar.set(&c.name, &planted);
        }
        let mut planted_jar = jar.clone();
        self.web
            .follow(Ask::get(self.protected.clone(), Site::AddressBar), &mut jar)
            .await?;
        let (_, _, answers) = self.sign_in(&mut jar, &l.login_page, None).await?;
        self.signed_in_or_say_why(&jar, &answers).await?;
        for c in &l.session {
            if jar.get(&c.name) == Some(planted.as_str()) {
                failed.push(format!("sign-in kept the planted {} value", c.name));
            }
        }
        // Only the planted values, as the attacker holds them.
        planted_jar.0.retain(|(_, v)| *v == planted);
        let (open, ex) = self.opens(&planted_jar).await?;
        evidence.push(format!(
            "{} with a made-up {} planted before sign-in",
            ex.summary(),
            names(&l.session)
        ));
        if open {
            failed.push("a planted cookie is signed in by the victim's sign-in".to_owned());
        }
        Ok(if failed.is_empty() {
            finding(
                "fixation",
                Verdict::Pass,
                "sign-in gives a new session: cookies from before it open nothing",
                evidence,
            )
        } else {
            finding("fixation", Verdict::Fail, failed.join("; "), evidence)
        })
    }

    /// Another site's page makes the browser send what it can without
    /// knowing the user's tokens: a GET to the sign-out address, and for a
    /// POST control a POST of the form's public fields from a foreign
    /// origin. A field whose value differs between two sessions is a
    /// token, which the other site cannot know, so it is left out.
    async fn forged_logout(&self, control_works: Option<bool>) -> Result<Finding> {
        let l = self.learned();
        if control_works != Some(true) {
            return Ok(finding(
                "forged-logout",
                Verdict::CouldNotTell,
                "the sign-out control was not seen to end a session (see replay), so a \
                 forgery that ends nothing would prove nothing",
                vec![],
            ));
        }
        // The control as two different sessions see it.
        let mut victim = self.fresh_session().await?;
        let mine = self.control_for(&mut victim).await?;
        let mut other = self.fresh_session().await?;
        let theirs = self.control_for(&mut other).await?;
        let mut evidence = vec![format!("the sign-out control: {}", mine.describe())];
        let tokenish = |name: &str| {
            let n = name.to_ascii_lowercase();
            ["csrf", "xsrf", "token", "nonce", "authenticity"]
                .iter()
                .any(|w| n.contains(w))
        };
        let public_query = |a: &Url, b: &Url| -> Vec<(String, String)> {
            let theirs: Vec<(String, String)> =
                b.query_pairs().map(|(k, v)| (k.into(), v.into())).collect();
            a.query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .filter(|(k, v)| !tokenish(k) && theirs.iter().any(|(tk, tv)| tk == k && tv == v))
                .collect()
        };
        let mut forgeries: Vec<(&str, Ask)> = Vec::new();
        match (&mine, &theirs) {
            (
                Control::Form { action, form },
                Control::Form {
                    action: other_action,
                    form: other_form,
                },
            ) if action.path() == other_action.path() => {
                let public: Vec<(String, String)> = form
                    .submission()
                    .into_iter()
                    .filter(|(k, v)| {
                        !tokenish(k)
                            && other_form
                                .submission()
                                .iter()
                                .any(|(ok, ov)| ok == k && ov == v)
                    })
                    .collect();
                // The action's own query, less what differs between sessions.
                let mut post_to = action.clone();
                post_to.set_query(None);
                let query = public_query(action, other_action);
                if !query.is_empty() {
                    post_to.query_pairs_mut().extend_pairs(query);
                }
                let mut with_public = post_to.clone();
                if form.method == "GET" && !public.is_empty() {
                    with_public.query_pairs_mut().extend_pairs(public.clone());
                }
                forgeries.push((
                    "a GET from another site (a link, an <img>)",
                    Ask::get(with_public, Site::Foreign),
                ));
                if form.method == "POST" {
                    forgeries.push((
                        "a POST of the form's public fields from another site",
                        Ask::post(post_to, public, Site::Foreign),
                    ));
                }
            }
            (Control::Link { url: a }, Control::Link { url: b }) if a.path() == b.path() => {
                let mut url = a.clone();
                url.set_query(None);
                let query = public_query(a, b);
                if !query.is_empty() {
                    url.query_pairs_mut().extend_pairs(query);
                }
                forgeries.push((
                    "a GET from another site (a link, an <img>)",
                    Ask::get(url, Site::Foreign),
                ));
            }
            _ => {
                return Ok(finding(
                    "forged-logout",
                    Verdict::CouldNotTell,
                    "the sign-out control differs from one session to the next in more than \
                     its tokens; another site could not guess it",
                    evidence,
                ))
            }
        }
        // What browsers send cross-site: SameSite=Strict cookies never,
        // Lax ones only with a top-level GET.
        let all_strict = l.session.iter().all(|c| same_site(c) == Some("strict"));
        let all_lax_or_strict = l
            .session
            .iter()
            .all(|c| matches!(same_site(c), Some("strict" | "lax")));
        let mut ended = Vec::new();
        let mut blunted = Vec::new();
        let mut first = Some(victim);
        for (what, ask) in forgeries {
            let mut jar = match first.take() {
                Some(j) => j,
                None => self.fresh_session().await?,
            };
            let ex = self.web.send(&ask, &mut jar, true).await?;
            let (open, after) = self.opens(&jar).await?;
            evidence.push(format!(
                "{} from {OTHER_SITE} ({what}), then {}",
                ex.summary(),
                after.summary()
            ));
            if !open {
                let is_get = ask.method == http::Method::GET;
                if all_strict || (!is_get && all_lax_or_strict) {
                    blunted.push(what);
                } else {
                    ended.push(what);
                }
            }
        }
        Ok(if !ended.is_empty() {
            finding(
                "forged-logout",
                Verdict::Fail,
                format!("{} signs the user out", ended.join(", and ")),
                evidence,
            )
        } else if !blunted.is_empty() {
            finding(
                "forged-logout",
                Verdict::Pass,
                format!(
                    "{} would sign the user out, but browsers do not send the session cookie \
                     with it (SameSite); a page on a sibling subdomain still could",
                    blunted.join(", and ")
                ),
                evidence,
            )
        } else {
            finding(
                "forged-logout",
                Verdict::Pass,
                "forged sign-outs from another site left the session alone",
                evidence,
            )
        })
    }

    /// Signs in with each off-site value of the redirect parameter and
    /// reads where the app sends the browser: `Location`, and a
    /// `<meta http-equiv="refresh">` on the page sign-in ends on.
    async fn open_redirect(&self) -> Result<Finding> {
        let l = self.learned();
        let param = l.redirect_param.as_str();
        let app = self.protected.host_str().unwrap_or("localhost").to_owned()
            + &self
                .protected
                .port()
                .map(|p| format!(":{p}"))
                .unwrap_or_default();
        // First a harmless value: does the app honour the parameter at all?
        let probe = "/signoff-check-next";
        let mut jar = Jar::default();
        let (_, _, answers) = self
            .sign_in(&mut jar, &l.login_page, Some((param, probe)))
            .await?;
        self.signed_in_or_say_why(&jar, &answers).await?;
        let honoured = answers
            .iter()
            .filter_map(|e| e.location().or_else(|| refresh_target(e)))
            .any(|u| u.path() == probe);
        let mut evidence = Vec::new();
        let mut off_site = Vec::new();
        let mut refused = 0;
        let mut untried = Vec::new();
        for vector in OFF_SITE {
            let vector = vector.replace("APP", &app);
            let mut jar = Jar::default();
            let tried = async {
                let (_, _, answers) = self
                    .sign_in(&mut jar, &l.login_page, Some((param, &vector)))
                    .await?;
                // Off-site is off-site, signed in or not.
                if let Some(left) = self.off_site(&answers) {
                    return anyhow::Ok(Some(left));
                }
                self.signed_in_or_say_why(&jar, &answers).await?;
                anyhow::Ok(None)
            }
            .await;
            match tried {
                Ok(None) => {}
                Ok(Some((summary, to))) => {
                    off_site.push(format!("{param}={vector:?} → {to}"));
                    evidence.push(summary);
                }
                Err(e) => {
                    // Refused for this value (the browser stays on the
                    // site), or refusing every sign-in now (not tried)?
                    if self.fresh_session().await.is_ok() {
                        refused += 1;
                        evidence.push(format!(
                            "{param}={vector:?}: sign-in refused, and one without it right \
                             after worked"
                        ));
                    } else {
                        untried.push(format!("{param}={vector:?}: {e:#}"));
                    }
                }
            }
        }
        evidence.extend(untried.iter().cloned());
        Ok(if !off_site.is_empty() {
            finding(
                "open-redirect",
                Verdict::Fail,
                format!(
                    "sign-in sends the browser off-site: {}",
                    off_site.join("; ")
                ),
                evidence,
            )
        } else if !honoured {
            finding(
                "open-redirect",
                Verdict::CouldNotTell,
                format!(
                    "sign-in did not follow `{param}` even to a plain path, so the off-site \
                     values were not exercised (a parameter of another name, or a redirect \
                     made by a script, is not seen)"
                ),
                evidence,
            )
        } else if !untried.is_empty() {
            finding(
                "open-redirect",
                Verdict::CouldNotTell,
                format!(
                    "no value that was tried left the site, but {} of {} could not be tried",
                    untried.len(),
                    OFF_SITE.len()
                ),
                evidence,
            )
        } else {
            finding(
                "open-redirect",
                Verdict::Pass,
                format!(
                    "`{param}` is followed for a path, and none of {} off-site values left \
                     the site{}",
                    OFF_SITE.len(),
                    match refused {
                        0 => String::new(),
                        n => format!(" ({n} of them made the sign-in fail)"),
                    }
                ),
                evidence,
            )
        })
    }

    /// Token mode (`--token-login`): an access token refused right after
    /// logout, and a refresh token that works once.
    async fn token_mode(&self) -> Vec<Finding> {
        let ids = ["token-after-logout", "refresh-reuse"];
        let Some(login) = &self.plan.token_login else {
            return ids
                .into_iter()
                .map(|id| {
                    finding(
                        id,
                        Verdict::NotRun,
                        "give --token-login URL (where an API client signs in) to check it",
                        vec![],
                    )
                })
                .collect();
        };
        let tokens = match self.token_urls(login) {
            Ok(t) => t,
            Err(e) => return ids.into_iter().map(|id| unsure(id, &e)).collect(),
        };
        vec![
            self.token_after_logout(&tokens)
                .await
                .unwrap_or_else(|e| unsure("token-after-logout", &e)),
            self.refresh_reuse(&tokens)
                .await
                .unwrap_or_else(|e| unsure("refresh-reuse", &e)),
        ]
    }

    /// The token endpoints: `--token-login`, and `--token-refresh` and
    /// `--token-logout` or, next to a signoff `…/api/login`, signoff's own.
    fn token_urls(&self, login: &str) -> Result<TokenUrls> {
        let on_app = |flag: &str, text: &str| -> Result<Url> {
            let url = self
                .plan
                .url
                .join(text)
                .with_context(|| format!("{flag} {text:?}"))?;
            if !self.web.same_origin(&url) {
                bail!("{flag} must be an address of {}", self.web.origin());
            }
            Ok(url)
        };
        let login = on_app("--token-login", login)?;
        let signoff_prefix = login.path().strip_suffix("/api/login").map(str::to_owned);
        let sibling = |path: &str| -> Option<String> {
            signoff_prefix.as_ref().map(|p| format!("{p}{path}"))
        };
        let refresh = match (self.plan.token_refresh.clone(), sibling("/token")) {
            (Some(r), _) | (None, Some(r)) => Some(on_app("--token-refresh", &r)?),
            (None, None) => None,
        };
        let logout = match (self.plan.token_logout.clone(), sibling("/api/logout")) {
            (Some(l), _) | (None, Some(l)) => Some(on_app("--token-logout", &l)?),
            (None, None) => None,
        };
        Ok(TokenUrls {
            login,
            refresh,
            logout,
        })
    }

    /// Signs in as an API client: the access token and the refresh token
    /// (if the app gives one).
    async fn token_sign_in(&self, urls: &TokenUrls) -> Result<(String, Option<String>, String)> {
        let body = serde_json::json!({
            "username": self.plan.user.as_deref().unwrap_or_default(),
            "password": self.plan.password.as_deref().unwrap_or_default(),
        });
        let ex = self
            .web
            .send(
                &Ask::post_json(urls.login.clone(), body),
                &mut Jar::default(),
                false,
            )
            .await?;
        tokens_in(&ex).ok_or_else(|| {
            anyhow!(
                "signing in at --token-login gave no access_token ({}): it takes JSON                  {{\"username\", \"password\"}} and answers {{\"access_token\", \"refresh_token\"}}",
                ex.summary()
            )
        })
        .map(|(access, refresh)| (access, refresh, ex.summary()))
    }

    /// Whether `token` opens the protected page.
    async fn bearer_opens(&self, token: &str) -> Result<(bool, Exchange)> {
        let ask = Ask::get(self.protected.clone(), Site::AddressBar).with_bearer(token);
        let ex = self.web.send(&ask, &mut Jar::default(), false).await?;
        let page = Page::read(&ex.body, None)?;
        Ok((
            (200..300).contains(&ex.status) && !page.asks_for_password(),
            ex,
        ))
    }

    async fn token_after_logout(&self, urls: &TokenUrls) -> Result<Finding> {
        let id = "token-after-logout";
        let Some(logout) = &urls.logout else {
            return Ok(finding(
                id,
                Verdict::NotRun,
                "give --token-logout URL (where an API client signs out) to check it",
                vec![],
            ));
        };
        let (access, refresh, signed_in) = self.token_sign_in(urls).await?;
        let mut evidence = vec![format!("signed in: {signed_in}")];
        let (open, ex) = self.bearer_opens(&access).await?;
        evidence.push(format!("{} with the access token", ex.summary()));
        if !open {
            return Ok(finding(
                id,
                Verdict::CouldNotTell,
                format!(
                    "the access token does not open {} even before logout",
                    path_of(&self.protected)
                ),
                evidence,
            ));
        }
        let form = refresh
            .map(|r| vec![("refresh_token".to_owned(), r)])
            .unwrap_or_default();
        let ask = Ask::post(logout.clone(), form, Site::AddressBar).with_bearer(&access);
        let out = self.web.send(&ask, &mut Jar::default(), false).await?;
        evidence.push(format!("{} (logout with the access token)", out.summary()));
        if !(200..300).contains(&out.status) {
            return Ok(finding(
                id,
                Verdict::CouldNotTell,
                format!("the token logout answered {}", out.status),
                evidence,
            ));
        }
        let (open, after) = self.bearer_opens(&access).await?;
        evidence.push(format!("{} with the same access token", after.summary()));
        Ok(if open {
            finding(
                id,
                Verdict::Fail,
                "the access token still opens the page after logout (until it expires)",
                evidence,
            )
        } else {
            finding(
                id,
                Verdict::Pass,
                format!(
                    "the access token is refused right after logout ({})",
                    after.summary()
                ),
                evidence,
            )
        })
    }

    async fn refresh_reuse(&self, urls: &TokenUrls) -> Result<Finding> {
        let id = "refresh-reuse";
        let Some(refresh_url) = &urls.refresh else {
            return Ok(finding(
                id,
                Verdict::NotRun,
                "give --token-refresh URL (where an API client refreshes) to check it",
                vec![],
            ));
        };
        let (_, refresh, signed_in) = self.token_sign_in(urls).await?;
        let mut evidence = vec![format!("signed in: {signed_in}")];
        let Some(first) = refresh else {
            return Ok(finding(
                id,
                Verdict::NotApplicable,
                "the sign-in gave no refresh_token",
                evidence,
            ));
        };
        let use_it = |token: &str| {
            Ask::post(
                refresh_url.clone(),
                vec![
                    ("grant_type".to_owned(), "refresh_token".to_owned()),
                    ("refresh_token".to_owned(), token.to_owned()),
                ],
                Site::AddressBar,
            )
        };
        let once = self
            .web
            .send(&use_it(&first), &mut Jar::default(), false)
            .await?;
        evidence.push(format!("{} (the refresh token, first use)", once.summary()));
        let Some((_, second)) = tokens_in(&once) else {
            return Ok(finding(
                id,
                Verdict::CouldNotTell,
                format!("the first refresh gave no new tokens ({})", once.summary()),
                evidence,
            ));
        };
        let again = self
            .web
            .send(&use_it(&first), &mut Jar::default(), false)
            .await?;
        evidence.push(format!(
            "{} (the same refresh token again)",
            again.summary()
        ));
        if tokens_in(&again).is_some() {
            return Ok(finding(
                id,
                Verdict::Fail,
                "the same refresh token works twice: a stolen copy keeps working",
                evidence,
            ));
        }
        // Reuse is theft: the token issued in its place should be dead too.
        let mut seen = format!("a used refresh token is refused ({})", again.summary());
        if let Some(second) = second {
            let after = self
                .web
                .send(&use_it(&second), &mut Jar::default(), false)
                .await?;
            evidence.push(format!(
                "{} (the token issued in its place)",
                after.summary()
            ));
            if tokens_in(&after).is_none() {
                seen.push_str(", and the reuse also ended the token issued in its place");
            }
        }
        Ok(finding(id, Verdict::Pass, seen, evidence))
    }

    /// The first answer that sends the browser to another origin (by
    /// `Location`, a `Refresh` header or a meta refresh), as browsers
    /// follow them: `javascript:` and `data:` targets are not followed.
    fn off_site(&self, answers: &[Exchange]) -> Option<(String, Url)> {
        answers.iter().find_map(|e| {
            let to = e.location().or_else(|| refresh_target(e))?;
            let off = matches!(to.scheme(), "http" | "https") && !self.web.same_origin(&to);
            off.then(|| (e.summary(), to))
        })
    }

    /// Signs out every session the run signed in (errors are ignored: many
    /// are already gone).
    async fn sign_out_everything(&self) {
        // Its own share of the budget, kept aside for it.
        self.web.allow_the_reserve();
        let opened = std::mem::take(&mut *self.opened.lock().unwrap_or_else(|e| e.into_inner()));
        for mut jar in opened {
            if matches!(self.opens(&jar).await, Ok((true, _))) {
                let _ = self.sign_out(&mut jar).await;
            }
        }
    }

    /// The browser scene of this app, when there is one to play: `Err`
    /// holds the finding that says why not.
    fn scene(&self, id: &'static str) -> Result<(Engine, Scene<'_>), Finding> {
        let l = self.learned();
        let Some(engine) = self.plan.browser else {
            return Err(finding(
                id,
                Verdict::NotRun,
                "--browser none: give --browser chromium or firefox to check it",
                vec![],
            ));
        };
        if let Err(e) = engine.available() {
            return Err(finding(
                id,
                Verdict::NotRun,
                format!("{e:#}; or give --browser none"),
                vec![],
            ));
        }
        let Some(control) = &l.control else {
            return Err(finding(
                id,
                Verdict::CouldNotTell,
                format!(
                    "no sign-out control on {}: give --logout SELECTOR",
                    path_of(&l.private.url)
                ),
                vec![],
            ));
        };
        let Some(private_text) = &l.private_text else {
            return Err(finding(
                id,
                Verdict::CouldNotTell,
                format!(
                    "found no text that {} shows only when signed in, to look for",
                    path_of(&l.private.url)
                ),
                vec![],
            ));
        };
        let logout = match control {
            Control::Form { action, .. } => Logout::Form(action),
            Control::Link { url } => Logout::Link(url),
        };
        Ok((
            engine,
            Scene {
                login: &l.login_page,
                user_field: &l.user_field,
                user: self.plan.user.as_deref().unwrap_or_default(),
                password: self.plan.password.as_deref().unwrap_or_default(),
                protected: &self.protected,
                private_text,
                logout,
            },
        ))
    }

    /// Back and Forward after signing out, in a real browser.
    async fn back_button(&self) -> Finding {
        let (engine, scene) = match self.scene("back-button") {
            Ok(s) => s,
            Err(f) => return f,
        };
        let text = scene.private_text.to_owned();
        let clean = format!(
            "in {} with its back/forward cache on, Back twice and Forward twice after sign-out \
             never showed {text:?}",
            engine.title()
        );
        scene_finding("back-button", scene.after_sign_out(engine).await, clean)
    }

    /// Back after the session ended on the server only.
    async fn server_ended_back(&self) -> Finding {
        let Some(command) = self.plan.end_session_command.as_deref() else {
            return finding(
                "server-ended-back",
                Verdict::NotRun,
                "give --end-session-command CMD (a command that ends the user's sessions on \
                 the server) to check it",
                vec![],
            );
        };
        let (engine, scene) = match self.scene("server-ended-back") {
            Ok(s) => s,
            Err(f) => return f,
        };
        let still_open = |jar: Jar| async move { self.opens(&jar).await.map(|(open, _)| open) };
        let clean = format!(
            "in {}, Back after the session ended on the server showed nothing private",
            engine.title()
        );
        let seen = scene.after_server_end(engine, command, still_open).await;
        scene_finding("server-ended-back", seen, clean)
    }

    /// A control that ends the user's other sessions: on the private
    /// page, on a page it links to that sounds like sessions or account
    /// security, or at a well-known address.
    async fn other_sessions(&self) -> Result<Finding> {
        let l = self.learned();
        let signed_in = self.fresh_session().await?;
        let mut evidence = Vec::new();
        let mut found = other_sessions_control(&l.page, &l.private.url)
            .map(|(text, control)| (text, control, l.private.url.clone()));
        if found.is_none() {
            // Only links that sound like a page about sessions, never one
            // that sounds like it changes something.
            let linked = l.page.links.iter().filter(|a| {
                let words = format!("{} {}", a.text, a.href).to_ascii_lowercase();
                ["session", "security", "account", "device"]
                    .iter()
                    .any(|w| words.contains(w))
                    && !destructive(&words)
                    && !says_sign_out(&words)
                    && !says_other_sessions(&words)
            });
            let mut candidates: Vec<Url> = Vec::new();
            for href in linked
                .map(|a| a.href.as_str())
                .chain(WELL_KNOWN_SESSIONS_PAGES.iter().copied())
            {
                let Ok(url) = l.private.url.join(href) else {
                    continue;
                };
                if self.web.same_origin(&url) && !candidates.contains(&url) && url != l.private.url
                {
                    candidates.push(url);
                }
            }
            for url in candidates.into_iter().take(8) {
                let mut jar = signed_in.clone();
                let ex = self
                    .web
                    .send(&Ask::get(url, Site::Own), &mut jar, false)
                    .await?;
                evidence.push(ex.summary());
                if ex.status != 200 {
                    continue;
                }
                let page = Page::read(&ex.body, None)?;
                if page.asks_for_password() {
                    continue;
                }
                if let Some((text, control)) = other_sessions_control(&page, &ex.url) {
                    found = Some((text, control, ex.url.clone()));
                    break;
                }
            }
        }
        let Some((text, _, page_url)) = found else {
            return Ok(finding(
                "other-sessions",
                Verdict::CouldNotTell,
                format!(
                    "no control to end other sessions on {}, the pages it links to about \
                     sessions or the account, or the usual addresses (another page may have \
                     one)",
                    path_of(&l.private.url)
                ),
                evidence,
            ));
        };
        // Use it, as the user would, from one session with another one
        // signed in elsewhere: the other one must end.
        let other = self.fresh_session().await?;
        let mut mine = signed_in.clone();
        let page = self
            .web
            .send(&Ask::get(page_url.clone(), Site::Own), &mut mine, true)
            .await?;
        let Some((_, control)) = other_sessions_control(&Page::read(&page.body, None)?, &page.url)
        else {
            bail!(
                "the control to end other sessions is gone from {}",
                page.summary()
            );
        };
        if !self.web.same_origin(control.url()) {
            bail!("the control to end other sessions leads to another origin");
        }
        let answers = self.web.follow(control.click(), &mut mine).await?;
        evidence.push(format!("used {:?}: {}", shorten(&text), control.describe()));
        evidence.extend(answers.iter().map(Exchange::summary));
        let (other_open, seen) = self.opens(&other).await?;
        evidence.push(format!("{} with the other session", seen.summary()));
        Ok(if other_open {
            finding(
                "other-sessions",
                Verdict::Fail,
                format!(
                    "{:?} on {} did not end the user's other session",
                    shorten(&text),
                    path_of(&page_url)
                ),
                evidence,
            )
        } else {
            finding(
                "other-sessions",
                Verdict::Pass,
                format!(
                    "{:?} on {} ended the user's other session (seen)",
                    shorten(&text),
                    path_of(&page_url)
                ),
                evidence,
            )
        })
    }

    /// With `--idle`, waits that long (and a second) and tries the
    /// session again.
    async fn idle(&self) -> Result<Finding> {
        let Some(idle) = self.plan.idle else {
            return Ok(finding(
                "idle-timeout",
                Verdict::NotRun,
                "give --idle SECONDS (your app's idle limit) to check it",
                vec![],
            ));
        };
        let jar = self.fresh_session().await?;
        let wait = idle + Duration::from_secs(1);
        tokio::time::sleep(wait).await;
        let (open, ex) = self.opens(&jar).await?;
        let evidence = vec![format!("{} after {}s idle", ex.summary(), wait.as_secs())];
        Ok(if open {
            finding(
                "idle-timeout",
                Verdict::Fail,
                format!(
                    "the session still opens the page after {}s idle",
                    wait.as_secs()
                ),
                evidence,
            )
        } else {
            finding(
                "idle-timeout",
                Verdict::Pass,
                format!("the session ended within {}s idle", wait.as_secs()),
                evidence,
            )
        })
    }
}

/// Where token mode signs in, refreshes and signs out.
struct TokenUrls {
    login: Url,
    refresh: Option<Url>,
    logout: Option<Url>,
}

/// `access_token` and `refresh_token` of a 2xx JSON answer.
fn tokens_in(ex: &Exchange) -> Option<(String, Option<String>)> {
    if !(200..300).contains(&ex.status) {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&ex.body).ok()?;
    let access = v.get("access_token")?.as_str()?.to_owned();
    let refresh = v
        .get("refresh_token")
        .and_then(|r| r.as_str())
        .map(str::to_owned);
    Some((access, refresh))
}

/// A form or link on `page` that offers to end the user's other sessions,
/// with its text.
fn other_sessions_control(page: &Page, at: &Url) -> Option<(String, Control)> {
    page.forms
        .iter()
        .find(|f| says_other_sessions(&f.text))
        .and_then(|f| {
            Some((
                f.text.trim().to_owned(),
                Control::Form {
                    action: at.join(&f.action).ok()?,
                    form: f.clone(),
                },
            ))
        })
        .or_else(|| {
            page.links
                .iter()
                .find(|a| says_other_sessions(&a.text))
                .and_then(|a| {
                    Some((
                        a.text.trim().to_owned(),
                        Control::Link {
                            url: at.join(&a.href).ok()?,
                        },
                    ))
                })
        })
}

/// A cookie's `SameSite`, lower case.
fn same_site(c: &SetCookie) -> Option<&'static str> {
    match c
        .same_site
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("strict") => Some("strict"),
        Some("lax") => Some("lax"),
        Some("none") => Some("none"),
        _ => None,
    }
}

/// Where a `Refresh` header or a page's `<meta http-equiv="refresh">`
/// sends the browser.
fn refresh_target(e: &Exchange) -> Option<Url> {
    let to = match e.header("refresh").and_then(refresh_url) {
        Some(to) => to,
        None => Page::read(&e.body, None).ok()?.refresh?,
    };
    e.url.join(&to).ok()
}

/// The names of some cookies, for sentences.
fn names(cookies: &[SetCookie]) -> String {
    cookies
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn no_store(l: &Learned) -> Finding {
    let cc = l.private.header("cache-control").unwrap_or("");
    let evidence = vec![format!(
        "{}, signed in: Cache-Control: {}",
        l.private.summary(),
        if cc.is_empty() { "(none)" } else { cc }
    )];
    let no_store = cc
        .split(',')
        .any(|d| d.trim().eq_ignore_ascii_case("no-store"));
    if no_store {
        finding(
            "no-store",
            Verdict::Pass,
            format!("Cache-Control: {cc}"),
            evidence,
        )
    } else {
        finding(
            "no-store",
            Verdict::Fail,
            format!(
                "the signed-in page {} is not no-store (Cache-Control: {}): Back and the \
                 disk cache can show it after sign-out",
                path_of(&l.private.url),
                if cc.is_empty() { "none" } else { cc }
            ),
            evidence,
        )
    }
}

fn cookie_flags(l: &Learned, https: bool) -> Finding {
    let mut problems = Vec::new();
    let evidence: Vec<String> = l
        .session
        .iter()
        .map(|c| format!("Set-Cookie: {}", c.redacted()))
        .collect();
    for c in &l.session {
        if !c.http_only {
            problems.push(format!(
                "{} is not HttpOnly: page scripts can read it",
                c.name
            ));
        }
        match (same_site(c), c.same_site.as_deref()) {
            (Some("lax" | "strict"), _) => {}
            (Some(_), _) => problems.push(format!(
                "{} is SameSite=None: sent with every other site's request",
                c.name
            )),
            (None, Some(v)) => problems.push(format!(
                "{} has SameSite={v}, which browsers do not know: Firefox and Safari then \
                 send it with other sites' requests",
                c.name
            )),
            (None, None) => problems.push(format!(
                "{} has no SameSite: Firefox and Safari send it with other sites' requests",
                c.name
            )),
        }
        if https && !c.secure {
            problems.push(format!("{} is not Secure over HTTPS", c.name));
        }
        if https && !c.name.starts_with("__Host-") {
            problems.push(format!(
                "{} has no __Host- prefix: a sibling subdomain can set it",
                c.name
            ));
        }
    }
    if problems.is_empty() {
        let extra = if https {
            ""
        } else {
            " (Secure and __Host- do not apply over plain HTTP)"
        };
        finding(
            "cookie-flags",
            Verdict::Pass,
            format!("{}: HttpOnly and SameSite{extra}", names(&l.session)),
            evidence,
        )
    } else {
        finding("cookie-flags", Verdict::Fail, problems.join("; "), evidence)
    }
}

/// At most 60 characters of `text`, whitespace squeezed.
fn shorten(text: &str) -> String {
    let words = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match words.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &words[..i]),
        None => words,
    }
}
