//! `signoff`: the gateway (`serve`, `demo`) and the command line that
//! manages the users of a signoff database.

mod config;
mod demo;
mod display;
mod gateway;
mod metrics;
mod serve;
mod server;

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use signoff::{Actor, AuditEvent, AuditKind, AuditQuery, Session, SessionHandle, User};

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
    /// List and end sessions.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Read the audit trail: sign-ins, failures, sign-outs, ended sessions,
    /// password changes and disabled accounts, newest first.
    Audit {
        /// Only this user's events.
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        /// Only events this recent, e.g. 1h, 7d.
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
        /// Only events of this kind, e.g. login_failed.
        #[arg(long, value_name = "KIND")]
        kind: Option<String>,
        /// At most this many events.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: Db,
    },
    /// Make a new admin API token: prints the token (give it to the admin
    /// client) and its SHA-256 (give that to `serve --admin-token-sha256`).
    AdminToken,
    /// The keys that sign access tokens (token mode, `serve --tokens`).
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Add a new signing key: it signs from now on, the previous key still
    /// verifies, and older keys are dropped. Running gateways pick it up
    /// within 30 seconds. Refresh tokens stay valid.
    Rotate {
        /// Algorithm of the new key: EdDSA or ES256.
        #[arg(long, default_value = "EdDSA", value_name = "ALG")]
        alg: String,
        #[command(flatten)]
        db: Db,
    },
    /// List the signing keys: kid, algorithm, created, current or previous.
    List {
        #[command(flatten)]
        db: Db,
    },
}

#[derive(Debug, Subcommand)]
enum SessionsCommand {
    /// List live sessions: handle, user, device, address, signed in, last seen.
    List {
        /// Only this user's sessions (default: every user's).
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: Db,
    },
    /// End one session by its handle, or all of a user's with --user.
    /// Running gateways hear of it over their revocation bus (on SQLite, by
    /// watching the file) and refuse them within milliseconds.
    End {
        /// The session's handle (from `sessions list`).
        #[arg(required_unless_present = "user", conflicts_with = "user")]
        handle: Option<String>,
        /// End every session of this user.
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        #[command(flatten)]
        db: Db,
    },
}

#[derive(Debug, Args)]
struct Db {
    /// The store: `sqlite://PATH` (or a file path), `redis://HOST[?prefix=P]`
    /// or `postgres://USER@HOST/DB[?schema=S]`, as `signoff serve --db`.
    #[arg(
        long,
        env = "SIGNOFF_DB",
        default_value = "sqlite://signoff.db",
        hide_env_values = true
    )]
    db: String,
    /// Open a SQLite file that other users can read, with a warning, instead
    /// of refusing (as `signoff serve --allow-readable-db`).
    #[arg(long, env = "SIGNOFF_ALLOW_READABLE_DB", value_name = "BOOL",
          num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    allow_readable_db: Option<bool>,
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
    /// Set a user's password and offer to end all of their sessions. On a
    /// terminal it asks; otherwise the sessions end unless --keep-sessions
    /// is given (nothing signed in with the old password stays signed in).
    Passwd {
        /// Login name.
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Keep the user's sessions signed in, without asking.
        #[arg(long, conflicts_with = "end_sessions")]
        keep_sessions: bool,
        /// End the user's sessions, without asking.
        #[arg(long)]
        end_sessions: bool,
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
async fn open(db: &Db) -> Result<serve::Backend> {
    serve::open_db(&db.db, db.allow_readable_db.unwrap_or(false)).await
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
        Command::Sessions(command) => sessions(command).await,
        Command::Audit {
            user,
            since,
            kind,
            limit,
            json,
            db,
        } => audit(user, since, kind, limit, json, &db).await,
        Command::AdminToken => {
            admin_token();
            Ok(())
        }
        Command::Keys(command) => keys(command).await,
    }
}

async fn keys(command: KeysCommand) -> Result<()> {
    match command {
        KeysCommand::Rotate { alg, db } => {
            let alg: signoff::tokens::SigningAlgorithm = alg
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--alg: {e}"))?;
            let store = open(&db).await?;
            let key = signoff::tokens::rotate_keys(store.state.as_ref(), alg, display::now())
                .await
                .context("cannot rotate the token keys")?;
            println!("new signing key {} ({})", key.kid, key.alg);
            store.close().await;
        }
        KeysCommand::List { db } => {
            let store = open(&db).await?;
            let keys = signoff::tokens::list_keys(store.state.as_ref())
                .await
                .context("cannot read the token keys")?;
            if keys.is_empty() {
                println!("no keys yet: `serve --tokens` creates one on its first start");
            } else {
                println!("KID\tALG\tCREATED\tROLE");
            }
            for k in keys {
                let role = if k.current { "current" } else { "previous" };
                println!(
                    "{}\t{}\t{}\t{role}",
                    k.kid,
                    k.alg,
                    display::time(k.created_at)
                );
            }
            store.close().await;
        }
    }
    Ok(())
}

/// Records an operator's action on a user.
async fn record(store: &serve::Backend, kind: AuditKind, user: &User) {
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
fn confirm(question: &str, default: bool) -> Result<bool> {
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

fn session_line(user: &str, s: &Session) -> String {
    format!(
        "{}\t{}\t{}\t{}\t{}\t{}",
        s.handle,
        user,
        display::device(s.user_agent.as_deref()),
        s.ip.as_deref().unwrap_or("-"),
        display::time(s.created_at),
        display::time(s.last_seen_at)
    )
}

fn session_json(user: &str, s: &Session) -> serde_json::Value {
    serde_json::json!({
        "handle": s.handle.to_string(),
        "user": user,
        "device": display::device(s.user_agent.as_deref()),
        "user_agent": s.user_agent,
        "ip": s.ip,
        "created_at": display::rfc3339(s.created_at),
        "last_seen_at": display::rfc3339(s.last_seen_at),
        "auth_at": s.auth_at.map(display::rfc3339),
        "expires_at": display::rfc3339(s.expires_at),
    })
}

async fn sessions(command: SessionsCommand) -> Result<()> {
    match command {
        SessionsCommand::List { user, json, db } => {
            let store = open(&db).await?;
            let accounts = store.accounts();
            let engine = store.cli_sessions()?;
            let users = match user {
                Some(name) => vec![accounts.user(&name).await?],
                None => accounts.list().await?,
            };
            if !json {
                println!("HANDLE\tUSER\tDEVICE\tADDRESS\tSIGNED IN\tLAST SEEN");
            }
            for user in users {
                for s in engine.list_for_user(&user.id).await? {
                    if json {
                        println!("{}", session_json(&user.name, &s));
                    } else {
                        println!("{}", session_line(&user.name, &s));
                    }
                }
            }
        }
        SessionsCommand::End { handle, user, db } => {
            let store = open(&db).await?;
            let engine = store.cli_sessions()?;
            if let Some(name) = user {
                let accounts = store.accounts();
                let user = accounts.user(&name).await?;
                let n = engine
                    .end_all_for_user(&user.id, None, Actor::Operator, "operator")
                    .await?;
                println!("ended {n} session(s) of {}", user.name);
            } else if let Some(handle) = handle {
                let parsed: SessionHandle = handle
                    .parse()
                    .map_err(|_| anyhow::anyhow!("{handle:?} is not a session handle"))?;
                match engine.end_by_handle(&parsed, None, Actor::Operator).await? {
                    Some(_) => println!("ended session {parsed}"),
                    None => bail!("no live session has the handle {parsed}"),
                }
            }
        }
    }
    Ok(())
}

async fn audit(
    user: Option<String>,
    since: Option<String>,
    kind: Option<String>,
    limit: usize,
    json: bool,
    db: &Db,
) -> Result<()> {
    let store = open(db).await?;
    let mut query = AuditQuery {
        limit: Some(limit),
        ..AuditQuery::default()
    };
    if let Some(name) = user {
        let accounts = store.accounts();
        query.user_id = Some(accounts.user(&name).await?.id);
    }
    if let Some(since) = since {
        let d = config::parse_duration(&since).context("--since")?;
        query.since = Some(display::now().minus(d));
    }
    if let Some(kind) = kind {
        let names: Vec<&str> = AuditKind::ALL.iter().map(|k| k.as_str()).collect();
        query.kind =
            Some(kind.parse().map_err(|_| {
                anyhow::anyhow!("--kind {kind}: expected one of {}", names.join(", "))
            })?);
    }
    let events = store.audit_log(false).query(&query).await?;
    for e in events {
        if json {
            println!("{}", serde_json::to_string(&e)?);
            continue;
        }
        let mut line = format!("{}\t{}", display::rfc3339(e.at), e.kind);
        let fields = [
            ("user", e.user_name.or(e.user_id.map(|u| u.to_string()))),
            ("by", e.by.map(|a| a.to_string())),
            ("reason", e.reason),
            ("session", e.session.map(|h| h.to_string())),
            ("ip", e.ip),
            ("count", e.count.map(|c| c.to_string())),
        ];
        for (name, value) in fields {
            if let Some(v) = value {
                line.push_str(&format!("\t{name}={v}"));
            }
        }
        println!("{line}");
    }
    Ok(())
}

/// Prints a new random admin token and its SHA-256.
fn admin_token() {
    use base64::Engine as _;
    use rand::RngCore as _;
    use sha2::Digest as _;
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let digest = sha2::Sha256::digest(token.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    println!("token:  {token}");
    println!("sha256: {hex}");
    eprintln!(
        "Give the token to the admin client (Authorization: Bearer TOKEN) and start the \
         gateway with --admin-token-sha256 {hex}. signoff keeps only the hash."
    );
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
            let accounts = store.accounts();
            let user = accounts.add_user(&name, &password).await?;
            println!("added user {} ({})", user.name, user.id);
        }
        UserCommand::Passwd {
            name,
            password_stdin,
            keep_sessions,
            end_sessions,
            db,
        } => {
            let store = open(&db).await?;
            let accounts = store.accounts();
            let user = accounts.user(&name).await?;
            let password = read_password(password_stdin)?;
            accounts.set_password(&name, &password).await?;
            record(&store, AuditKind::PasswordChanged, &user).await;
            println!("password changed for {}", user.name);
            let engine = store.cli_sessions()?;
            let live = engine.list_for_user(&user.id).await?.len();
            let end = if keep_sessions {
                false
            } else if end_sessions || live == 0 || password_stdin || !std::io::stdin().is_terminal()
            {
                true
            } else {
                confirm(
                    &format!("{} has {live} live session(s). End them?", user.name),
                    true,
                )?
            };
            if end {
                let ended = engine
                    .end_all_for_user(&user.id, None, Actor::Operator, "password_change")
                    .await?;
                println!("ended {ended} session(s)");
            } else {
                println!("kept {live} session(s) signed in");
            }
        }
        UserCommand::Disable { name, db } => {
            let store = open(&db).await?;
            let accounts = store.accounts();
            let user = accounts.set_disabled(&name, true).await?;
            record(&store, AuditKind::UserDisabled, &user).await;
            let ended = store
                .cli_sessions()?
                .end_all_for_user(&user.id, None, Actor::Operator, "user_disabled")
                .await?;
            println!("disabled {} and ended {ended} session(s)", user.name);
        }
        UserCommand::Enable { name, db } => {
            let store = open(&db).await?;
            let accounts = store.accounts();
            let user = accounts.set_disabled(&name, false).await?;
            record(&store, AuditKind::UserEnabled, &user).await;
            println!("enabled {}", user.name);
        }
        UserCommand::List { db } => {
            let store = open(&db).await?;
            let accounts = store.accounts();
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
        Command::User(_)
        | Command::Sessions(_)
        | Command::Audit { .. }
        | Command::AdminToken
        | Command::Keys(_) => "warn",
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
