//! The command line: one module per command. Each command reads the store
//! named by `--db`, `SIGNOFF_DB` or the `--config` file, found as
//! `signoff serve` finds it.

mod admin_token;
mod audit;
mod check;
mod demo;
mod keys;
mod rules;
pub mod serve;
mod sessions;
mod user;
mod user_import;

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use signoff::{Actor, AuditEvent, AuditKind, User};

use crate::backend::{self, Backend};
use crate::config::{self, StoreChoice, StoreOptions};
use crate::display;

/// signoff: when a user signs out, they are out.
#[derive(Debug, Parser)]
#[command(name = "signoff", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway in front of an app: it owns sign-in and sign-out,
    /// and passes only signed-in requests to the upstream.
    Serve(Box<serve::ServeCommand>),
    /// Try signoff with nothing to set up: the gateway on 127.0.0.1:8080 in
    /// front of a small built-in app, with a demo user.
    Demo(demo::DemoArgs),
    /// Manage user accounts.
    #[command(subcommand)]
    User(user::UserCommand),
    /// List and end sessions.
    #[command(subcommand)]
    Sessions(sessions::SessionsCommand),
    /// Read the audit trail: sign-ins, failures, sign-outs, ended sessions,
    /// password changes and disabled accounts, newest first.
    Audit(audit::AuditArgs),
    /// Make a new admin API token: prints the token (give it to the admin
    /// client) and its SHA-256 (give that to `serve --admin-token-sha256`).
    AdminToken,
    /// The keys that sign access tokens (token mode, `serve --tokens`) and
    /// the keys that seal session tokens.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// The access rules ([access] in the config file): check them, and
    /// see which rule decides a request and why.
    #[command(subcommand)]
    Rules(rules::RulesCommand),
    /// Audit any web app's sign-out from the outside, as a browser and an
    /// attacker would: replay, fixation, forged sign-out, no-store, Back in a
    /// real browser, cookie flags, open redirects, tokens (docs/check.md).
    Check(Box<check::CheckArgs>),
}

/// The store a command works on, found as `signoff serve` finds it:
/// `--db`, else `SIGNOFF_DB`, else the `db` key of the `--config` file,
/// else the default.
#[derive(Debug, Args)]
pub struct Db {
    /// The store: `sqlite://PATH` (or a file path), `redis://HOST[?prefix=P]`
    /// or `postgres://USER@HOST/DB[?schema=S]`, as `signoff serve --db`
    /// [default: the `db` key of --config, else sqlite://signoff.db]
    #[arg(long, env = "SIGNOFF_DB", value_name = "URL", hide_env_values = true)]
    pub db: Option<String>,
    /// The TOML file `signoff serve --config` reads: its `db` and
    /// `allow_readable_db` apply unless given here
    #[arg(long, env = "SIGNOFF_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Open a SQLite file that other users can read, with a warning, instead
    /// of refusing (as `signoff serve --allow-readable-db`).
    #[arg(long, env = "SIGNOFF_ALLOW_READABLE_DB", value_name = "BOOL",
          num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub allow_readable_db: Option<bool>,
}

impl Db {
    /// The store these flags, the environment and the config file name.
    pub fn choice(&self) -> Result<StoreChoice> {
        let given = StoreOptions {
            db: self.db.clone(),
            allow_readable_db: self.allow_readable_db,
            ..StoreOptions::default()
        };
        config::store_choice(given, self.config.as_deref())
    }
}

/// Opens the store named by `--db` (or the config file), creating a
/// SQLite file that is not there yet: for commands that add something.
pub async fn open(db: &Db) -> Result<Backend> {
    let choice = db.choice()?;
    backend::open_db(&choice.db, choice.allow_readable_db).await
}

/// Opens the store named by `--db` (or the config file), refusing a SQLite
/// file that is not there: for commands that only read, or change a user,
/// session or key that must exist, so a mistyped path is not answered from a
/// new, empty database (which it would leave behind).
pub async fn open_existing(db: &Db) -> Result<Backend> {
    let choice = db.choice()?;
    backend::refuse_missing_sqlite(&choice)?;
    backend::open_db(&choice.db, choice.allow_readable_db).await
}

/// Reads a new password from stdin or, on a terminal, asks twice.
pub fn read_password(from_stdin: bool) -> Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "standard input is not a terminal: pass --password-stdin to read the password from it"
        );
    }
    let first = rpassword::prompt_password("Password: ")?;
    let second = rpassword::prompt_password("Password again: ")?;
    if first != second {
        bail!("the passwords do not match");
    }
    Ok(first)
}

/// Records an operator's action on a user.
pub async fn record(store: &Backend, kind: AuditKind, user: &User) {
    store
        .audit_log(false)
        .record(
            AuditEvent::new(kind, display::now())
                .user(Some(&user.id), Some(&user.name))
                .by(Actor::Operator),
        )
        .await;
}

/// Asks a yes/no question on the terminal; `default` on an empty answer.
pub fn confirm(question: &str, default: bool) -> Result<bool> {
    use std::io::Write;
    let hint = if default { "[Y/n]" } else { "[y/N]" };
    eprint!("{question} {hint} ");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the answer")?;
    Ok(match line.trim().to_ascii_lowercase().as_str() {
        "" => default,
        "y" | "yes" => true,
        "n" | "no" => false,
        other => bail!("{other:?}: answer y or n"),
    })
}

/// Runs one command.
pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(command) => {
            let serve::ServeCommand { args, check } = *command;
            let settings = args.clone().settings()?;
            if check {
                return serve::check(&settings);
            }
            // SIGHUP reads the flags, variables and file again; only the
            // access rules change (docs/access-rules.md).
            let reload: serve::Reload = Box::new(move || args.clone().settings());
            serve::run(settings, Some(reload), |at| {
                println!("signoff listening on {}/", at.bound);
                if at.public != at.bound {
                    println!("public URL: {}/", at.public);
                }
            })
            .await
        }
        Command::Demo(args) => demo::run(args).await,
        Command::User(command) => user::run(command).await,
        Command::Sessions(command) => sessions::run(command).await,
        Command::Audit(args) => audit::run(args).await,
        Command::Rules(command) => rules::run(command).await,
        Command::AdminToken => {
            admin_token::run();
            Ok(())
        }
        Command::Keys(command) => keys::run(command).await,
        Command::Check(args) => check::run(*args).await,
    }
}
