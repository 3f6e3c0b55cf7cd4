//! `signoff user …`: manage accounts.

use std::io::IsTerminal;

use anyhow::Result;
use clap::Subcommand;
use signoff::{Actor, AuditKind};

use super::user_import::{self, ImportFormat, ImportRequest};
use super::{confirm, open, open_existing, read_password, record, Db};

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user. Asks for the password twice, or reads one line from
    /// standard input with --password-stdin.
    Add {
        /// Login name: 1 to 64 characters from A-Z a-z 0-9 . _ @ + -
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// A group to put the user in (repeat for more): 1 to 64 characters
        /// from A-Z a-z 0-9 . _ - :
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        #[command(flatten)]
        db: Db,
    },
    /// Import users with their password hashes from another system
    /// (Werkzeug/Flask-Login, Django, passlib, bcrypt, sha-crypt, Argon2).
    /// Every row is checked first: one bad row and nothing is imported.
    /// Each foreign hash becomes Argon2id at the user's first sign-in.
    /// See docs/importing-users.md.
    Import {
        /// JSON lines ({"name":…,"hash":…,"groups":[…],"disabled":false})
        /// or CSV with the header name,hash,groups,disabled (groups
        /// separated by ;); `-` reads standard input
        file: String,
        /// The file's format [default: from the extension .csv, .jsonl,
        /// .ndjson or .json, else from the first line]
        #[arg(long, value_enum)]
        format: Option<ImportFormat>,
        /// Leave users whose name exists already as they are, and import
        /// the others (without it such a row refuses the import)
        #[arg(long)]
        skip_existing: bool,
        /// Check every row and report, without changing anything
        #[arg(long)]
        dry_run: bool,
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

/// Runs `signoff user …`.
pub async fn run(command: UserCommand) -> Result<()> {
    match command {
        UserCommand::Add {
            name,
            password_stdin,
            groups,
            db,
        } => {
            signoff::check_groups(&groups)?;
            let store = open(&db).await?;
            let password = read_password(password_stdin)?;
            let accounts = store.accounts();
            let user = accounts
                .add_user_in_groups(&name, &password, &groups)
                .await?;
            println!("added user {} ({}) to {}", user.name, user.id, store.shown);
        }
        UserCommand::Import {
            file,
            format,
            skip_existing,
            dry_run,
            db,
        } => {
            user_import::run(ImportRequest {
                file: &file,
                format,
                skip_existing,
                dry_run,
                db: &db,
            })
            .await?;
        }
        UserCommand::Passwd {
            name,
            password_stdin,
            keep_sessions,
            end_sessions,
            db,
        } => {
            let store = open_existing(&db).await?;
            let accounts = store.accounts();
            let user = accounts.user(&name).await?;
            let password = read_password(password_stdin)?;
            accounts.set_password(&name, &password).await?;
            record(&store, AuditKind::PasswordChanged, &user).await;
            println!("password changed for {} in {}", user.name, store.shown);
            let engine = store.cli_sessions()?;
            let live = engine.list_for_user(&user.id).await?.len();
            let end = if keep_sessions {
                false
            } else if end_sessions || live == 0 || password_stdin || !std::io::stdin().is_terminal()
            {
                true
            } else {
                confirm(
                    &format!(
                        "{} has {}. End them?",
                        user.name,
                        crate::display::count(live as u64, "live session", "live sessions")
                    ),
                    true,
                )?
            };
            if end {
                let ended = engine
                    .end_all_for_user(&user.id, None, Actor::Operator, "password_change")
                    .await?;
                println!(
                    "ended {}",
                    crate::display::count(ended as u64, "session", "sessions")
                );
            } else {
                println!(
                    "kept {} signed in",
                    crate::display::count(live as u64, "session", "sessions")
                );
            }
        }
        UserCommand::Disable { name, db } => {
            let store = open_existing(&db).await?;
            let accounts = store.accounts();
            let user = accounts.set_disabled(&name, true).await?;
            record(&store, AuditKind::UserDisabled, &user).await;
            let ended = store
                .cli_sessions()?
                .end_all_for_user(&user.id, None, Actor::Operator, "user_disabled")
                .await?;
            println!(
                "disabled {} and ended {} in {}",
                user.name,
                crate::display::count(ended as u64, "session", "sessions"),
                store.shown
            );
        }
        UserCommand::Enable { name, db } => {
            let store = open_existing(&db).await?;
            let accounts = store.accounts();
            let user = accounts.set_disabled(&name, false).await?;
            record(&store, AuditKind::UserEnabled, &user).await;
            println!("enabled {} in {}", user.name, store.shown);
        }
        UserCommand::List { db } => {
            let store = open_existing(&db).await?;
            let accounts = store.accounts();
            for user in accounts.list().await? {
                let state = if user.disabled { "disabled" } else { "active" };
                let groups = if user.groups.is_empty() {
                    "-".to_owned()
                } else {
                    user.groups.join(",")
                };
                println!("{}\t{}\t{}\t{}", user.name, user.id, state, groups);
            }
        }
    }
    Ok(())
}
