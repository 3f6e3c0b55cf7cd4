//! `signoff check URL`: audits any web app's sign-out from the outside,
//! the way a person with a browser and an attacker with a copied cookie
//! see it (docs/check.md). It needs nothing from the app but a login form
//! and an account to sign in with.
//!
//! - `visitor.rs`: requests as a browser sends them, cookie jars, the
//!   request budget;
//! - `page.rs`: forms, links and text read from a page;
//! - `browser.rs`, `back_button.rs`: Back and Forward in a real browser;
//! - `probe.rs`: signing in and out, and each check with its evidence;
//! - `framework.rs`: which stack answered, and the fix for it;
//! - `report.rs`: the terminal, JSON and Markdown reports.

mod back_button;
mod browser;
mod framework;
mod page;
mod probe;
mod report;
mod visitor;

use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;
use url::Url;

pub use browser::Engine;
pub use report::{json, markdown, terminal};
pub use visitor::REQUEST_BUDGET;

/// `text` with `secret` (as typed and as a URL or form encodes it) blanked
/// out.
pub fn scrub(text: &str, secret: &str) -> String {
    visitor::scrub(text, &visitor::secret_forms(secret))
}

/// What one check concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Seen to hold.
    Pass,
    /// Seen to break.
    Fail,
    /// Does not apply to this app (a refresh check when sign-in gives no
    /// refresh token).
    NotApplicable,
    /// Tried, but what was seen does not decide it; `seen` says why.
    CouldNotTell,
    /// Not tried in this run; `seen` says what would run it.
    NotRun,
}

impl Verdict {
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
            Verdict::NotApplicable => "n/a",
            Verdict::CouldNotTell => "unsure",
            Verdict::NotRun => "not run",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Stable name, for CI (`replay`, `forged-logout`, ...).
    pub id: &'static str,
    pub title: &'static str,
    pub verdict: Verdict,
    /// One line: what was seen.
    pub seen: String,
    /// The requests and headers that decided it.
    pub evidence: Vec<String>,
    /// What to change, for the detected stack; set on failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target: String,
    /// The stack that answered, as far as its cookies and pages tell.
    pub framework: &'static str,
    pub checks: Vec<Finding>,
    pub requests: usize,
    pub seconds: f64,
}

impl Report {
    pub fn failed(&self) -> usize {
        self.checks
            .iter()
            .filter(|c| c.verdict == Verdict::Fail)
            .count()
    }
}

/// What to check, from the command line.
#[derive(Debug, Clone)]
pub struct Plan {
    pub url: Url,
    /// Account to sign in with; without it only what needs no sign-in runs.
    pub user: Option<String>,
    pub password: Option<String>,
    /// A page only a signed-in user may see; default: the URL's path.
    pub protected: Option<String>,
    /// The login page; default: wherever the protected page sends a
    /// visitor who is not signed in.
    pub login: Option<String>,
    /// A CSS selector for the sign-out control.
    pub logout: Option<String>,
    /// Check that a session ends after this long idle.
    pub idle: Option<Duration>,
    /// How long one request may take.
    pub timeout: Duration,
    /// The browser for the back-button checks; `None`: over HTTP only.
    pub browser: Option<Engine>,
    /// A shell command that ends the user's session on the server only.
    pub end_session_command: Option<String>,
    /// Token mode: where an API client signs in, refreshes, signs out.
    pub token_login: Option<String>,
    pub token_refresh: Option<String>,
    pub token_logout: Option<String>,
}

/// Runs every check of `plan` against the app.
pub async fn run(plan: &Plan) -> Result<Report> {
    let started = Instant::now();
    let run = probe::Run::start(plan).await?;
    let checks = run.all().await?;
    Ok(Report {
        target: plan.url.to_string(),
        framework: run.framework.label(),
        checks,
        requests: run.web.sent(),
        seconds: started.elapsed().as_secs_f64(),
    })
}
