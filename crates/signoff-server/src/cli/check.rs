//! `signoff check URL`: audit any app's sign-out from the outside
//! (src/check/, docs/check.md).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use url::Url;

use crate::check::{self, Engine, Plan, REQUEST_BUDGET};

/// Arguments of `signoff check`.
#[derive(Debug, Args)]
#[command(after_help = format!(
    "What it does to the app: it signs in and out with the account you give \
     (30 to 50 times), uses the app's control that ends the user's other \
     sessions if it finds one, and visits pages about sessions it finds on \
     the way. It changes nothing else, sends at most {REQUEST_BUDGET} \
     requests, signs out every session it made, and never sends the \
     password anywhere but a login form on the app's own origin.\n\n\
     Exit status: 0 when no check failed, 1 when one did or the run could \
     not finish."
))]
pub struct CheckArgs {
    /// The app: a page that needs sign-in, e.g. http://127.0.0.1:5000/
    #[arg(value_name = "URL")]
    pub url: String,
    /// The account to sign in with (without it, nothing that needs a
    /// session can be checked); its password is asked for on a terminal
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// Read the account's password from the first line of stdin
    #[arg(long, requires = "user")]
    pub password_stdin: bool,
    /// A page only a signed-in user may see [default: URL's path]
    #[arg(long, value_name = "PATH")]
    pub protected: Option<String>,
    /// The login page [default: where PATH sends a visitor who is not
    /// signed in]
    #[arg(long, value_name = "PATH")]
    pub login: Option<String>,
    /// A CSS selector for the sign-out form, button or link [default: the
    /// form or link whose text or address says log out / sign out]
    #[arg(long, value_name = "SELECTOR")]
    pub logout: Option<String>,
    /// Also check that a session ends after this many seconds idle (the
    /// run waits that long)
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub idle: Option<u64>,
    /// The browser for the back-button checks (headless, with its
    /// back/forward cache on); `none` checks over HTTP only
    #[arg(long, value_enum, default_value_t = BrowserChoice::Chromium)]
    pub browser: BrowserChoice,
    /// A shell command that ends the user's sessions on the server only
    /// (e.g. `signoff sessions end --user alice`): checks that Back then
    /// shows nothing
    #[arg(long, value_name = "CMD")]
    pub end_session_command: Option<String>,
    /// Token mode: where an API client signs in (POST JSON {"username",
    /// "password"}, answered with {"access_token", "refresh_token"}); next
    /// to signoff's /.signoff/api/login the other two are found
    #[arg(long, value_name = "URL")]
    pub token_login: Option<String>,
    /// Token mode: where a refresh token is used (POST
    /// grant_type=refresh_token&refresh_token=…, RFC 6749)
    #[arg(long, value_name = "URL", requires = "token_login")]
    pub token_refresh: Option<String>,
    /// Token mode: where an API client signs out (POST with the access token
    /// as Bearer)
    #[arg(long, value_name = "URL", requires = "token_login")]
    pub token_logout: Option<String>,
    /// How long one request may take before the run stops
    #[arg(long, value_name = "SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub timeout: u64,
    /// Print the report as JSON instead of text
    #[arg(long)]
    pub json: bool,
    /// Also write the report as Markdown to FILE (for a pull request)
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
}

/// `--browser`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BrowserChoice {
    Chromium,
    Firefox,
    None,
}

pub async fn run(args: CheckArgs) -> Result<()> {
    let url = Url::parse(&args.url).with_context(|| {
        format!(
            "{:?} is not a URL: give one like http://127.0.0.1:5000/",
            args.url
        )
    })?;
    let password = match (&args.user, args.password_stdin) {
        (_, true) => Some(super::read_password(true)?),
        (Some(user), false) if std::io::stdin().is_terminal() => {
            Some(rpassword::prompt_password(format!("Password of {user}: "))?)
        }
        (Some(_), false) => bail!(
            "standard input is not a terminal: pass --password-stdin to read the password from it"
        ),
        (None, false) => None,
    };
    let plan = Plan {
        url,
        user: args.user,
        password,
        protected: args.protected,
        login: args.login,
        logout: args.logout,
        idle: args.idle.map(Duration::from_secs),
        timeout: Duration::from_secs(args.timeout),
        browser: match args.browser {
            BrowserChoice::Chromium => Some(Engine::Chromium),
            BrowserChoice::Firefox => Some(Engine::Firefox),
            BrowserChoice::None => None,
        },
        end_session_command: args.end_session_command,
        token_login: args.token_login,
        token_refresh: args.token_refresh,
        token_logout: args.token_logout,
    };
    // Nothing this command prints may show the password, whatever an app
    // echoes back into a page, an address or an error.
    let secret = plan.password.clone().unwrap_or_default();
    let clean = |text: String| check::scrub(&text, &secret);
    // Ctrl-C or SIGTERM drops the run, and with it the browser and its
    // driver (their process group is killed on drop) and the profile.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    let report = tokio::select! {
        report = check::run(&plan) => report,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        _ = terminate.recv() => Err(anyhow::anyhow!("terminated")),
    }
    .map_err(|e| anyhow::anyhow!(clean(format!("{e:#}"))))?;
    if args.json {
        println!("{}", clean(check::json(&report)));
    } else {
        let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        print!("{}", clean(check::terminal(&report, colour)));
    }
    if let Some(path) = &args.markdown {
        std::fs::write(path, clean(check::markdown(&report)))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    match report.failed() {
        0 => Ok(()),
        1 => bail!("1 check failed"),
        n => bail!("{n} checks failed"),
    }
}
