//! `signoff sessions list|end`.

use anyhow::{bail, Result};
use clap::Subcommand;
use signoff::{Actor, Session, SessionHandle, UserId};

use super::{open_existing, Db};
use crate::display;

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List live sessions: handle, user, device, address, signed in, last seen.
    List {
        /// Only this user's sessions (default: every local user's); a
        /// provider's user is oidc:PROVIDER:SUB
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
        /// The session's handle (from `sessions list`). Handles may start
        /// with `-`, and are read as handles all the same.
        #[arg(
            required_unless_present = "user",
            conflicts_with = "user",
            allow_hyphen_values = true
        )]
        handle: Option<String>,
        /// End every session of this user: a local user's name, or
        /// oidc:PROVIDER:SUB for a user of an OpenID provider (docs/oidc.md)
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        #[command(flatten)]
        db: Db,
    },
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

/// A user by name: a local account's, or `oidc:PROVIDER:SUB` for a
/// provider's user (no local name has a `:`), who has no account here.
async fn user_named(accounts: &signoff::Accounts, name: &str) -> Result<(UserId, String)> {
    if name.starts_with("oidc:") && name.split(':').count() >= 3 {
        return Ok((UserId::new(name), name.to_owned()));
    }
    let user = accounts.user(name).await?;
    Ok((user.id, user.name))
}

/// Runs `signoff sessions …`.
pub async fn run(command: SessionsCommand) -> Result<()> {
    match command {
        SessionsCommand::List { user, json, db } => {
            let store = open_existing(&db).await?;
            let accounts = store.accounts();
            let engine = store.cli_sessions()?;
            let users: Vec<(UserId, String)> = match user {
                Some(name) => vec![user_named(&accounts, &name).await?],
                None => accounts
                    .list()
                    .await?
                    .into_iter()
                    .map(|u| (u.id, u.name))
                    .collect(),
            };
            if !json {
                println!("HANDLE\tUSER\tDEVICE\tADDRESS\tSIGNED IN\tLAST SEEN");
            }
            for (id, name) in users {
                for s in engine.list_for_user(&id).await? {
                    if json {
                        println!("{}", session_json(&name, &s));
                    } else {
                        println!("{}", session_line(&name, &s));
                    }
                }
            }
        }
        SessionsCommand::End { handle, user, db } => {
            let store = open_existing(&db).await?;
            let engine = store.cli_sessions()?;
            if let Some(name) = user {
                let accounts = store.accounts();
                let (id, name) = user_named(&accounts, &name).await?;
                let n = engine
                    .end_all_for_user(&id, None, Actor::Operator, "operator")
                    .await?;
                println!(
                    "ended {} of {} in {}",
                    crate::display::count(n as u64, "session", "sessions"),
                    name,
                    store.shown
                );
            } else if let Some(handle) = handle {
                let parsed: SessionHandle = handle
                    .parse()
                    .map_err(|_| anyhow::anyhow!("{handle:?} is not a session handle"))?;
                match engine.end_by_handle(&parsed, None, Actor::Operator).await? {
                    Some(ended) => {
                        // Its whole sign-in ends with it (docs/apps.md).
                        let linked = engine.end_linked(&ended, Actor::Operator).await?;
                        println!("ended session {parsed} in {}", store.shown);
                        if linked > 0 {
                            println!(
                                "and {} of the same sign-in (other hosts)",
                                crate::display::count(linked as u64, "session", "sessions")
                            );
                        }
                    }
                    None => bail!("no live session has the handle {parsed}"),
                }
            }
        }
    }
    Ok(())
}
