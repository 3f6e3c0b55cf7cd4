//! Every page signoff serves to a person, in Chromium: a screenshot at
//! desktop (1280×800) and phone (390×844) width in the light and the dark
//! colour scheme, no sideways scrolling on the phone, and an accessibility
//! audit with axe-core in both schemes. One `signoff demo` and one browser
//! for all pages; adding a page is one line in [`PAGES`].
//!
//! Artifacts (kept by CI) go to `target/browser-artifacts/pages/`:
//! `<page>-<desktop|phone>-<light|dark>.png` (the whole page, not just the
//! viewport) and `axe.md` (what the audit found on each page).
//!
//! axe-core comes from the npm registry; `.ci/run` installs it outside the
//! repository. [`AXE_ENV`] names its `axe.min.js` (default: where `.ci/run`
//! puts it). Without it the audit is skipped, and fails the test under
//! `SIGNOFF_REQUIRE_SERVICES=1`; the screenshots are taken either way.

mod support;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use base64::Engine as _;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::browser::{report_skip, Browser, Engine, Error, Result, REQUIRE_ENV};
use support::scenarios::{self, Site};
use support::{login_at, post_form, services_required, signoff_bin, spawn_reading_lines, Proc};

/// The page set: every page signoff shows a person, and the demo app's.
/// The signed-in ones are visited first, then the browser signs out.
const PAGES: &[Page] = &[
    Page::signed_in("demo-private", Get("/private/a"), "#logout", "PRIVATE-A"),
    Page::signed_in("sessions", Get("/.signoff/sessions"), OTHER_SESSION, ""),
    Page::signed_in("password", Get("/.signoff/password"), "input[name=new]", ""),
    Page::signed_in("reauth", Get(REAUTH), PASSWORD_FIELD, ""),
    Page::signed_in("logout", Get("/.signoff/logout"), "form [type=submit]", ""),
    Page::signed_in(
        "forbidden",
        Get("/admin"),
        "form [type=submit]",
        "Not allowed",
    ),
    Page::signed_out("signed-out", Get("/.signoff/signed-out"), LOGIN_LINK, ""),
    Page::signed_out("login", Get(LOGIN), PASSWORD_FIELD, ""),
    Page::signed_out("login-wrong-password", WrongPassword, PASSWORD_FIELD, WRONG),
    Page::signed_out("login-throttled", Throttled, PASSWORD_FIELD, WAIT),
    Page::signed_out("sign-in-refused", ForeignForm, LOGIN_LINK, ""),
    Page::signed_out("not-found", Get("/.signoff/nowhere"), "h1", "Not found"),
    Page::signed_out("demo-home", Get("/"), "h1", ""),
    Page::signed_out("demo-public", Get("/public"), "h1", ""),
];

const LOGIN: &str = "/.signoff/login?next=%2Fprivate%2Fa";
const REAUTH: &str = "/.signoff/reauth?next=%2F.signoff%2Fsessions";
const PASSWORD_FIELD: &str = "input[name=password]";
const LOGIN_LINK: &str = "a[href$='/.signoff/login']";
/// A session other than the browser's own is listed: two or more.
const OTHER_SESSION: &str = "[data-handle]:not([data-current])";
const WRONG: &str = "Wrong user name or password";
const WAIT: &str = "Try again in";

/// Violations the current pages have, as (page, axe rule id), waiting for
/// the redesign of issue 24. Any other violation fails the test, and so
/// does a line here whose violation is gone (then delete the line).
const KNOWN_VIOLATIONS: &[(&str, &str)] = &[];

/// The rule sets the audit runs (axe-core tags).
const AXE_TAGS: &[&str] = &["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"];

/// Path of axe-core's `axe.min.js`.
const AXE_ENV: &str = "SIGNOFF_AXE_JS";

/// The account whose failed sign-ins make the error and throttled pages
/// (not the demo user, whose sign-in must stay possible).
const STRANGER: &str = "nobody";

use Reach::*;

/// How the browser gets to a page.
#[derive(Clone, Copy, Debug)]
enum Reach {
    /// A GET of this path.
    Get(&'static str),
    /// The login form sent with a wrong password.
    WrongPassword,
    /// The login form sent while failures make sign-in wait.
    Throttled,
    /// The login form sent from a page on another origin (a browser will
    /// not let a test forge `Origin`).
    ForeignForm,
}

#[derive(Clone, Copy, Debug)]
struct Page {
    /// Names its screenshots: `<name>-<viewport>-<scheme>.png`.
    name: &'static str,
    signed_in: bool,
    reach: Reach,
    /// A CSS selector that shows the browser is on this page (and not on
    /// an error or the login page), whatever the page's style.
    shows: &'static str,
    /// Text the page must say, "" for none.
    says: &'static str,
}

impl Page {
    const fn signed_in(
        name: &'static str,
        reach: Reach,
        shows: &'static str,
        says: &'static str,
    ) -> Page {
        Page {
            name,
            signed_in: true,
            reach,
            shows,
            says,
        }
    }

    const fn signed_out(
        name: &'static str,
        reach: Reach,
        shows: &'static str,
        says: &'static str,
    ) -> Page {
        Page {
            name,
            signed_in: false,
            reach,
            shows,
            says,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Viewport {
    name: &'static str,
    width: u32,
    height: u32,
    /// Emulates a phone: the page's `<meta name=viewport>` counts, touch.
    mobile: bool,
}

const DESKTOP: Viewport = Viewport {
    name: "desktop",
    width: 1280,
    height: 800,
    mobile: false,
};
const PHONE: Viewport = Viewport {
    name: "phone",
    width: 390,
    height: 844,
    mobile: true,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Light,
    Dark,
}

impl Scheme {
    fn name(self) -> &'static str {
        match self {
            Scheme::Light => "light",
            Scheme::Dark => "dark",
        }
    }
}

/// Each page is shown in these, in this order; the audit runs in the
/// desktop ones (the colours are what differ between schemes).
const VARIANTS: &[(Viewport, Scheme)] = &[
    (DESKTOP, Scheme::Light),
    (DESKTOP, Scheme::Dark),
    (PHONE, Scheme::Light),
    (PHONE, Scheme::Dark),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_on_desktop_and_phone_in_light_and_dark() -> Result<()> {
    let started = Instant::now();
    let axe = axe_source();
    let Some(b) = Browser::open(Engine::Chromium).await else {
        return Ok(());
    };
    let demo = Demo::start();
    let foreign = ForeignSite::start().await;
    let dir = artifacts();
    let mut report = Report::default();

    let site = demo.site();
    for (i, page) in PAGES.iter().enumerate() {
        let first_of_its_kind = i == 0 || PAGES[i - 1].signed_in != page.signed_in;
        if first_of_its_kind && page.signed_in {
            scenarios::sign_in(&b, &site).await?;
            // A second session (another device), so the sessions page lists two.
            login_at(&demo.origin, &site.user, &site.password).await;
        }
        if first_of_its_kind && !page.signed_in && i > 0 {
            sign_out(&b).await?;
        }
        go_to(&b, page, &demo, &foreign).await?;
        if let Err(e) = shows(&b, page).await {
            b.screenshot(dir.join(format!("{}-unexpected.png", page.name)))
                .await?;
            return Err(e);
        }
        let mut colours = Vec::new();
        for &(viewport, scheme) in VARIANTS {
            emulate(&b, viewport, scheme).await?;
            colours.push(b.eval(COLOURS).await?);
            if viewport.mobile {
                if let Some(overflow) = overflow(&b).await? {
                    report.problems.push(format!(
                        "{} ({}): at {} px wide {overflow}",
                        page.name,
                        scheme.name(),
                        viewport.width
                    ));
                }
            }
            let png = dir.join(format!(
                "{}-{}-{}.png",
                page.name,
                viewport.name,
                scheme.name()
            ));
            full_page_screenshot(&b, &png).await?;
            if let (Some(axe), false) = (&axe, viewport.mobile) {
                let audit = audit(&b, axe).await?;
                report.add(page.name, scheme, audit);
            }
        }
        report
            .dark_style
            .push((page.name, colours[0] != colours[1]));
    }

    report.check_known();
    let summary = report.write(&dir, axe.is_some());
    eprintln!(
        "{} pages, {} screenshots in {} ({:.1} s); {summary}",
        PAGES.len(),
        PAGES.len() * VARIANTS.len(),
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    if report.problems.is_empty() {
        Ok(())
    } else {
        Err(Error::new(format!(
            "{} problem(s) (details in {}):\n{}",
            report.problems.len(),
            dir.join("axe.md").display(),
            report.problems.join("\n")
        )))
    }
}

/// The page's colours, to tell whether it has a dark style of its own.
const COLOURS: &str = "[getComputedStyle(document.documentElement).backgroundColor, \
    getComputedStyle(document.body).backgroundColor, getComputedStyle(document.body).color]";

/// Where this test's artifacts go; emptied first, so a page taken out of
/// [`PAGES`] leaves no stale screenshot.
fn artifacts() -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/browser-artifacts/pages");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

async fn go_to(b: &Browser, page: &Page, demo: &Demo, foreign: &ForeignSite) -> Result<()> {
    match page.reach {
        Get(path) => b.goto(&demo.url(path)).await,
        WrongPassword => {
            b.goto(&demo.url(LOGIN)).await?;
            b.submit_login(STRANGER, "wrong password").await
        }
        Throttled => throttled(b, demo).await,
        ForeignForm => {
            b.goto(&foreign.origin).await?;
            b.exec_with(
                "document.forms[0].action = arguments[0];",
                vec![json!(demo.url("/.signoff/login"))],
            )
            .await?;
            b.click_and_wait("form [type=submit]").await?;
            let text = b.visible_text().await?;
            scenarios::check(
                text.contains(&foreign.origin),
                format!(
                    "{}: the refusal names the origin the form came from, {}: {text:.400}",
                    page.name, foreign.origin
                ),
            )
        }
    }
}

/// The login form after enough failures that the next attempt must wait:
/// failures over HTTP (same client address) until one is answered "wait",
/// then the browser's attempt. Each failure admitted doubles the wait, so
/// a browser slower than the first wait gets the next one.
async fn throttled(b: &Browser, demo: &Demo) -> Result<()> {
    b.goto(&demo.url(LOGIN)).await?;
    let login = demo.url("/.signoff/login");
    for _ in 0..4 {
        b.fill("input[name=username]", STRANGER).await?;
        b.fill(PASSWORD_FIELD, "wrong password").await?;
        for _ in 0..8 {
            let form = [("username", STRANGER), ("password", "wrong password")];
            let reply = post_form(&login, &form, &[("origin", &demo.origin)]).await;
            if reply.status == 429 {
                break;
            }
        }
        b.click_and_wait("form [type=submit]").await?;
        if b.visible_text().await?.contains(WAIT) {
            return Ok(());
        }
    }
    Err(Error::new(
        "the login form never said to wait after repeated failures",
    ))
}

async fn sign_out(b: &Browser) -> Result<()> {
    let url = b.current_url().await?;
    let origin = url.split("/.signoff/").next().unwrap_or(&url).to_owned();
    b.goto(&format!("{origin}/.signoff/logout")).await?;
    b.click_and_wait("form [type=submit]").await?;
    let path = scenarios::path_of(b).await?;
    scenarios::check(
        path == "/.signoff/signed-out",
        format!("signing out ended at {path}"),
    )
}

/// The browser is on `page`: its selector matches and it says its text.
async fn shows(b: &Browser, page: &Page) -> Result<()> {
    let found = b
        .exec_with(
            "return document.querySelectorAll(arguments[0]).length;",
            vec![json!(page.shows)],
        )
        .await?;
    let text = b.visible_text().await?;
    let path = scenarios::path_of(b).await?;
    scenarios::check(
        found.as_u64().unwrap_or(0) > 0 && text.contains(page.says),
        format!(
            "{}: expected `{}` and {:?} on the page, at {path}: {text:.400}",
            page.name, page.shows, page.says
        ),
    )
}

/// Sets the viewport and `prefers-color-scheme`, then checks in the page
/// that both took effect.
async fn emulate(b: &Browser, viewport: Viewport, scheme: Scheme) -> Result<()> {
    b.cdp(
        "Emulation.setDeviceMetricsOverride",
        json!({
            "width": viewport.width,
            "height": viewport.height,
            "deviceScaleFactor": 1,
            "mobile": viewport.mobile,
        }),
    )
    .await?;
    b.cdp(
        "Emulation.setEmulatedMedia",
        json!({
            "media": "",
            "features": [{ "name": "prefers-color-scheme", "value": scheme.name() }],
        }),
    )
    .await?;
    // The media query's width, not innerWidth: on a phone, a page wider
    // than the screen widens the layout viewport (`overflow` says so).
    let seen = b
        .exec_with(
            "return [matchMedia('(prefers-color-scheme: dark)').matches, \
                     matchMedia('(prefers-color-scheme: light)').matches, \
                     matchMedia('(width: ' + arguments[0] + 'px)').matches];",
            vec![json!(viewport.width)],
        )
        .await?;
    let want = json!([scheme == Scheme::Dark, scheme == Scheme::Light, true]);
    scenarios::check(
        seen == want,
        format!(
            "emulating {} {}: the page sees [dark, light, width {} px] = {seen}, not {want}",
            viewport.name,
            scheme.name(),
            viewport.width
        ),
    )
}

/// `Some(what)` when the page scrolls sideways.
async fn overflow(b: &Browser) -> Result<Option<String>> {
    let v = b
        .eval(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth, \
              Array.from(document.body.querySelectorAll('*')).filter(function (e) { \
                return e.getBoundingClientRect().right > document.documentElement.clientWidth + 0.5; \
              }).slice(0, 5).map(function (e) { \
                return e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + \
                  (e.className && typeof e.className === 'string' ? '.' + e.className.split(' ').join('.') : ''); \
              })]",
        )
        .await?;
    let scroll = v[0].as_u64().unwrap_or(0);
    let client = v[1].as_u64().unwrap_or(0);
    Ok((scroll > client).then(|| {
        format!(
            "the page scrolls sideways: scrollWidth {scroll} > clientWidth {client}; too wide: {}",
            v[2]
        )
    }))
}

/// A PNG of the whole page, also what lies below the viewport.
async fn full_page_screenshot(b: &Browser, path: &std::path::Path) -> Result<()> {
    let size = b
        .eval("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
        .await?;
    let shot = b
        .cdp(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": true }),
        )
        .await?;
    let png = shot["data"]
        .as_str()
        .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
        .ok_or_else(|| Error::new(format!("Page.captureScreenshot gave no PNG: {shot:.200}")))?;
    scenarios::check(
        png.starts_with(b"\x89PNG") && png.len() > 24,
        format!("{}: not a PNG", path.display()),
    )?;
    // The header's width and height (CSS pixels: the scale factor is 1).
    let dimension =
        |at: usize| u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]);
    let (width, height) = (dimension(16), dimension(20));
    scenarios::check(
        u64::from(width) >= size[0].as_u64().unwrap_or(0)
            && u64::from(height) >= size[1].as_u64().unwrap_or(0),
        format!(
            "{}: the screenshot ({width}×{height}) is smaller than the page ({size})",
            path.display()
        ),
    )?;
    std::fs::write(path, png).map_err(|e| Error::new(format!("write {}: {e}", path.display())))
}

/// axe-core's source, `None` (skipped) when it is not installed.
fn axe_source() -> Option<String> {
    let path = std::env::var_os(AXE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(default_axe_path);
    match std::fs::read_to_string(&path) {
        Ok(source) => Some(source),
        Err(e) => {
            let why = format!(
                "axe-core not found at {} ({e}; set {AXE_ENV}, or install it as .ci/run does: \
                 npm install --prefix DIR axe-core)",
                path.display()
            );
            if services_required() {
                panic!("{REQUIRE_ENV}=1 but the accessibility audit cannot run: {why}");
            }
            report_skip(
                "accessibility audit",
                &format!("{why}; set {REQUIRE_ENV}=1 to make this a failure"),
            );
            None
        }
    }
}

/// Where `.ci/run` installs axe-core.
fn default_axe_path() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("signoff-ci/axe/node_modules/axe-core/axe.min.js")
}

/// What axe found on one page in one scheme.
#[derive(Debug)]
struct Audit {
    version: String,
    violations: Vec<Violation>,
    passes: usize,
    incomplete: Vec<String>,
}

#[derive(Debug)]
struct Violation {
    rule: String,
    impact: String,
    help: String,
    help_url: String,
    targets: Vec<String>,
}

/// Runs axe-core on the current page (loading it first if the page has
/// not got it). WebDriver's scripts are not subject to the page's CSP.
async fn audit(b: &Browser, axe: &str) -> Result<Audit> {
    if b.eval("typeof window.axe").await? != "object" {
        b.exec(&format!("{axe}\n;return typeof window.axe;"))
            .await?;
        let loaded = b.eval("typeof window.axe").await?;
        scenarios::check(
            loaded == "object",
            format!("axe-core did not load: {loaded}"),
        )?;
    }
    const RUN: &str = r#"
        return axe.run(document, { runOnly: { type: "tag", values: arguments[0] },
                                   resultTypes: ["violations"] })
          .then(function (r) {
            return {
              version: axe.version,
              passes: r.passes.length,
              incomplete: r.incomplete.map(function (i) { return i.id; }),
              violations: r.violations.map(function (v) {
                return { id: v.id, impact: v.impact || "", help: v.help, helpUrl: v.helpUrl,
                         targets: v.nodes.map(function (n) { return n.target.join(" "); }) };
              }),
            };
          });"#;
    let r = b.exec_with(RUN, vec![json!(AXE_TAGS)]).await?;
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let violations = r["violations"]
        .as_array()
        .ok_or_else(|| Error::new(format!("axe.run gave no violations list: {r:.300}")))?
        .iter()
        .map(|v| Violation {
            rule: text(&v["id"]),
            impact: text(&v["impact"]),
            help: text(&v["help"]),
            help_url: text(&v["helpUrl"]),
            targets: v["targets"]
                .as_array()
                .map(|t| t.iter().map(text).collect())
                .unwrap_or_default(),
        })
        .collect();
    Ok(Audit {
        version: text(&r["version"]),
        violations,
        passes: r["passes"].as_u64().unwrap_or(0) as usize,
        incomplete: r["incomplete"]
            .as_array()
            .map(|t| t.iter().map(text).collect())
            .unwrap_or_default(),
    })
}

/// Everything the run found, for `axe.md` and the verdict.
#[derive(Default)]
struct Report {
    audits: Vec<(&'static str, Scheme, Audit)>,
    /// Whether each page looks different in the dark scheme.
    dark_style: Vec<(&'static str, bool)>,
    problems: Vec<String>,
}

impl Report {
    fn add(&mut self, page: &'static str, scheme: Scheme, audit: Audit) {
        for v in &audit.violations {
            if !KNOWN_VIOLATIONS.contains(&(page, v.rule.as_str())) {
                self.problems.push(format!(
                    "{page} ({}): {} [{}] {} <{}> at {}",
                    scheme.name(),
                    v.rule,
                    v.impact,
                    v.help,
                    v.help_url,
                    v.targets.join(", ")
                ));
            }
        }
        self.audits.push((page, scheme, audit));
    }

    /// Every known violation still occurs (with the audit run).
    fn check_known(&mut self) {
        if self.audits.is_empty() {
            return;
        }
        for (page, rule) in KNOWN_VIOLATIONS {
            let seen = self
                .audits
                .iter()
                .any(|(p, _, a)| p == page && a.violations.iter().any(|v| v.rule == *rule));
            if !seen {
                self.problems.push(format!(
                    "{page}: the known violation {rule} is gone: delete it from KNOWN_VIOLATIONS"
                ));
            }
        }
    }

    /// Writes `axe.md`; returns a one-line summary.
    fn write(&self, dir: &std::path::Path, audited: bool) -> String {
        let mut md = String::new();
        let version = self
            .audits
            .first()
            .map_or("not run", |(_, _, a)| a.version.as_str());
        let _ = writeln!(md, "# Accessibility audit of signoff's pages\n");
        let _ = writeln!(
            md,
            "Written by `cargo test -p signoff-server --test pages` (tests/pages.rs). \
             axe-core {version}, rules tagged {}, in Chromium at {} px, light and dark. \
             Screenshots: `<page>-<desktop|phone>-<light|dark>.png` beside this file.\n",
            AXE_TAGS.join(", "),
            DESKTOP.width
        );
        if !audited {
            let _ = writeln!(
                md,
                "**The audit did not run: axe-core was not found ({AXE_ENV}).**\n"
            );
        }
        let _ = writeln!(
            md,
            "| page | scheme | violations | passed rules | needs review | own dark style |"
        );
        let _ = writeln!(md, "| --- | --- | --- | --- | --- | --- |");
        let mut total = 0;
        for (page, scheme, a) in &self.audits {
            total += a.violations.len();
            let rules: Vec<String> = a
                .violations
                .iter()
                .map(|v| {
                    let known = KNOWN_VIOLATIONS.contains(&(*page, v.rule.as_str()));
                    format!("{}{}", v.rule, if known { " (known)" } else { "" })
                })
                .collect();
            let dark = self
                .dark_style
                .iter()
                .find(|(p, _)| p == page)
                .map_or("?", |(_, d)| if *d { "yes" } else { "no" });
            let _ = writeln!(
                md,
                "| {page} | {} | {} | {} | {} | {dark} |",
                scheme.name(),
                if rules.is_empty() {
                    "none".to_owned()
                } else {
                    rules.join(", ")
                },
                a.passes,
                a.incomplete.join(", ")
            );
        }
        if total > 0 {
            let _ = writeln!(md, "\n## Violations\n");
            for (page, scheme, a) in &self.audits {
                for v in &a.violations {
                    let _ = writeln!(
                        md,
                        "### {page} ({}): `{}` ({})\n\n{} — <{}>\n",
                        scheme.name(),
                        v.rule,
                        v.impact,
                        v.help,
                        v.help_url
                    );
                    for t in &v.targets {
                        let _ = writeln!(md, "- `{t}`");
                    }
                    let _ = writeln!(md);
                }
            }
        }
        if !self.problems.is_empty() {
            let _ = writeln!(md, "\n## Problems (the test fails on these)\n");
            for p in &self.problems {
                let _ = writeln!(md, "- {p}");
            }
        }
        let path = dir.join("axe.md");
        if let Err(e) = std::fs::write(&path, md) {
            eprintln!("cannot write {}: {e}", path.display());
        }
        if audited {
            format!(
                "axe-core {version}: {total} violation(s) over {} audits",
                self.audits.len()
            )
        } else {
            "accessibility audit skipped".to_owned()
        }
    }
}

/// A running `signoff demo` on plain HTTP.
struct Demo {
    _proc: Proc,
    origin: String,
    password: String,
    db: String,
    _dir: tempfile::TempDir,
}

impl Demo {
    fn start() -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}", dir.path().join("demo.db").display());
        let mut cmd = Command::new(signoff_bin());
        cmd.args(["demo", "--listen", "127.0.0.1:0", "--db", &db])
            .env("SIGNOFF_LOG", "info");
        let (proc, lines) = spawn_reading_lines(cmd, dir.path().join("demo.log"), 3);
        let (origin, password) = support::demo_banner(&lines);
        Demo {
            _proc: proc,
            origin,
            password,
            db,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }

    fn site(&self) -> Site {
        Site {
            origin: self.origin.clone(),
            user: "demo".to_owned(),
            password: self.password.clone(),
            db: self.db.clone(),
            label: "pages".to_owned(),
        }
    }
}

/// The page another origin shows: a sign-in form, whose `action` the test
/// points at signoff.
const FOREIGN_PAGE: &str = "<!doctype html><html lang=\"en\"><title>Another origin</title>\
    <form method=\"post\"><input name=\"username\" value=\"demo\" aria-label=\"User name\">\
    <input name=\"password\" type=\"password\" value=\"not checked\" aria-label=\"Password\">\
    <button type=\"submit\">Sign in</button></form></html>";

/// An HTTP server on another port of 127.0.0.1 (another origin) that
/// answers every request with [`FOREIGN_PAGE`]; it stops when dropped.
struct ForeignSite {
    origin: String,
    task: tokio::task::JoinHandle<()>,
}

impl ForeignSite {
    async fn start() -> ForeignSite {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.len() < 65536 {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n",
                        FOREIGN_PAGE.len()
                    );
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(FOREIGN_PAGE.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        ForeignSite { origin, task }
    }
}

impl Drop for ForeignSite {
    fn drop(&mut self) {
        self.task.abort();
    }
}
