//! `signoff`: the gateway (`serve`, `demo`) and the command line that
//! manages the users of a signoff database.

mod config;
mod demo;
mod gateway;
mod serve;
mod server;

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use signoff::{Accounts, Passwords, Policy, Sessions};

/// signoff: when a user signs out, they are out.
#[derive(Debug, Parser)]
#[command(name = "signoff", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway in front of an app: it owns sign-in and sign-out,
    /// and passes only signed-in requests to the upstream.
    Serve(Box<config::ServeArgs>),
    /// Try signoff with nothing to set up: the gateway on 127.0.0.1:8080 in
    /// front of a small built-in app, with a demo user.
    Demo(demo::DemoArgs),
    /// Manage user accounts.
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Debug, Args)]
struct Db {
    /// The database: `sqlite://PATH` or a plain file path.
    #[arg(long, env = "SIGNOFF_DB", default_value = "sqlite://signoff.db")]
    db: String,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user. Asks for the password twice, or reads one line from
    /// standard input with --password-stdin.
    Add {
        /// Login name: 1 to 64 characters from A-Z a-z 0-9 . _ @ + -
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        db: Db,
    },
    /// Set a user's password and end all of their sessions (a password
    /// change is a privilege change: nothing signed in with the old one
    /// stays signed in).
    Passwd {
        /// Login name.
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Keep the user's sessions signed in.
        #[arg(long)]
        keep_sessions: bool,
        #[command(flatten)]
        db: Db,
    },
    /// Disable a user and end all of their sessions at once.
    Disable {
        /// Login name.
        name: String,
        #[command(flatten)]
        db: Db,
    },
    /// Enable a disabled user.
    Enable {
        /// Login name.
        name: String,
        #[command(flatten)]
        db: Db,
    },
    /// List users.
    List {
        #[command(flatten)]
        db: Db,
    },
}

/// Opens the database named by `--db`.
async fn open(db: &Db) -> Result<signoff::SqliteStore> {
    serve::open_db(&db.db).await
}

/// Reads a new password from stdin or, on a terminal, asks twice.
fn read_password(from_stdin: bool) -> Result<String> {
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

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let settings = args.settings()?;
            serve::run(settings, |origin| {
                println!("signoff listening on {origin}/");
            })
            .await
        }
        Command::Demo(args) => demo::run(args).await,
        Command::User(command) => user(command).await,
    }
}

async fn user(command: UserCommand) -> Result<()> {
    match command {
        UserCommand::Add {
            name,
            password_stdin,
            db,
        } => {
            let store = open(&db).await?;
            let password = read_password(password_stdin)?;
            let accounts = Accounts::new(Arc::new(store), Passwords::new());
            let user = accounts.add_user(&name, &password).await?;
            println!("added user {} ({})", user.name, user.id);
        }
        UserCommand::Passwd {
            name,
            password_stdin,
            keep_sessions,
            db,
        } => {
            let store = Arc::new(open(&db).await?);
            let accounts = Accounts::new(store.clone(), Passwords::new());
            let user = accounts.user(&name).await?;
            let password = read_password(password_stdin)?;
            accounts.set_password(&name, &password).await?;
            println!("password changed for {}", user.name);
            if !keep_sessions {
                let ended = Sessions::new(store, Policy::default())
                    .end_all_for_user(&user.id, None)
                    .await?;
                println!("ended {ended} session(s)");
            }
        }
        UserCommand::Disable { name, db } => {
            let store = Arc::new(open(&db).await?);
            let accounts = Accounts::new(store.clone(), Passwords::new());
            let user = accounts.set_disabled(&name, true).await?;
            let ended = Sessions::new(store, Policy::default())
                .end_all_for_user(&user.id, None)
                .await?;
            println!("disabled {} and ended {ended} session(s)", user.name);
        }
        UserCommand::Enable { name, db } => {
            let store = open(&db).await?;
            let accounts = Accounts::new(Arc::new(store), Passwords::new());
            let user = accounts.set_disabled(&name, false).await?;
            println!("enabled {}", user.name);
        }
        UserCommand::List { db } => {
            let store = open(&db).await?;
            let accounts = Accounts::new(Arc::new(store), Passwords::new());
            for user in accounts.list().await? {
                let state = if user.disabled { "disabled" } else { "active" };
                println!("{}\t{}\t{}", user.name, user.id, state);
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The gateway logs one line per request; the user commands only warn.
    let default_filter = match cli.command {
        Command::Serve(_) | Command::Demo(_) => "info",
        Command::User(_) => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SIGNOFF_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("signoff: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("signoff: {e:#}");
            ExitCode::FAILURE
        }
    }
}
