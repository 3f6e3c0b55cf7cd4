//! `signoff user …`: manage accounts.

use std::io::IsTerminal;

use anyhow::{Context, Result};
use clap::{Subcommand, ValueEnum};
use signoff::{AccountError, Actor, AuditEvent, AuditKind, GroupChange};

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
    /// Show a user's groups (one a line), or add or remove some. Removing a
    /// group the user is in ends all of their sessions at once, on every
    /// node: sessions carry the groups they signed in with. An added group
    /// applies from the user's next sign-in (end their sessions with
    /// `signoff sessions end --user NAME` to apply it now).
    #[command(
        after_help = "Examples:\n  signoff user groups alice\n  signoff user groups alice add admins ops\n  signoff user groups alice remove admins"
    )]
    Groups {
        /// Login name.
        name: String,
        /// `add` or `remove` the groups that follow [default: show the
        /// user's groups]
        #[arg(value_enum, requires = "groups")]
        change: Option<GroupChangeKind>,
        /// The groups to add or remove: 1 to 64 characters from
        /// A-Z a-z 0-9 . _ - :
        #[arg(value_name = "GROUP", requires = "change")]
        groups: Vec<String>,
        #[command(flatten)]
        db: Db,
    },
    /// List users: name, id, active or disabled, and groups (comma-separated,
    /// `-` for none).
    List {
        #[command(flatten)]
        db: Db,
    },
}

/// What `signoff user groups NAME add|remove GROUP…` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GroupChangeKind {
    /// Put the user in the groups; applies from their next sign-in.
    Add,
    /// Take the user out of the groups; ends all of their sessions.
    Remove,
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
            let user = accounts.disable(&name).await?;
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
            let user = accounts.enable(&name).await?;
            record(&store, AuditKind::UserEnabled, &user).await;
            println!("enabled {} in {}", user.name, store.shown);
        }
        UserCommand::Groups {
            name,
            change,
            groups,
            db,
        } => match change {
            None => show_groups(&name, &db).await?,
            Some(kind) => change_groups(&name, kind, &groups, &db).await?,
        },
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

/// `signoff user groups NAME`: the groups, one a line.
async fn show_groups(name: &str, db: &Db) -> Result<()> {
    let store = open_existing(db).await?;
    let user = store.accounts().user(name).await.map_err(no_user(name))?;
    if user.groups.is_empty() {
        eprintln!("{} is in no group", user.name);
    }
    for group in &user.groups {
        println!("{group}");
    }
    Ok(())
}

/// `signoff user groups NAME add|remove GROUP…`: changes the groups, and
/// ends the user's sessions if they left a group.
async fn change_groups(
    name: &str,
    kind: GroupChangeKind,
    groups: &[String],
    db: &Db,
) -> Result<()> {
    // A bad name is refused before the store is opened.
    signoff::check_groups(groups)?;
    let store = open_existing(db).await?;
    let (add, remove) = match kind {
        GroupChangeKind::Add => (groups, &[][..]),
        GroupChangeKind::Remove => (&[][..], groups),
    };
    let change = store
        .accounts()
        .change_groups(name, add, remove)
        .await
        .map_err(no_user(name))?;
    let user = &change.user;
    let (added, removed) = (change.added(), change.removed());
    // The groups named that the user was already in (add) or not in (remove).
    let mut untouched: Vec<&str> = groups
        .iter()
        .filter(|g| !added.contains(g) && !removed.contains(g))
        .map(String::as_str)
        .collect();
    untouched.sort_unstable();
    untouched.dedup();
    let untouched = untouched.join(", ");
    if !change.changed() {
        match kind {
            GroupChangeKind::Add => {
                println!("{} is already in {untouched}; nothing changed", user.name)
            }
            GroupChangeKind::Remove => println!(
                "{} is not in {untouched}; nothing changed, no session ended",
                user.name
            ),
        }
        return Ok(());
    }
    record_group_change(&store, &change).await;
    match kind {
        GroupChangeKind::Add => {
            print!("added {} to {}", user.name, added.join(", "));
            if !untouched.is_empty() {
                print!(" (already in {untouched})");
            }
            println!(" in {}", store.shown);
            println!(
                "it applies from {}'s next sign-in; to apply it now, end their sessions: \
                 signoff sessions end --user {}",
                user.name, user.name
            );
        }
        GroupChangeKind::Remove => {
            let ended = store
                .cli_sessions()?
                .end_all_for_user(&user.id, None, Actor::Operator, "groups_removed")
                .await
                .with_context(|| {
                    format!(
                        "{} left {}, but their sessions could not be ended (they carry the old \
                         groups): run `signoff sessions end --user {}`",
                        user.name,
                        removed.join(", "),
                        user.name
                    )
                })?;
            print!("removed {} from {}", user.name, removed.join(", "));
            if !untouched.is_empty() {
                print!(" (not in {untouched})");
            }
            if ended == 0 {
                println!(" in {}; no session was live, none ended", store.shown);
            } else {
                println!(
                    " in {}; ended {} (they carried the old groups)",
                    store.shown,
                    crate::display::count(ended as u64, "session", "sessions")
                );
            }
        }
    }
    Ok(())
}

/// An unknown user named, for the error message.
fn no_user(name: &str) -> impl Fn(AccountError) -> anyhow::Error + '_ {
    move |e| match e {
        AccountError::UnknownUser => {
            anyhow::anyhow!("no such user: {name:?} (see `signoff user list`)")
        }
        other => other.into(),
    }
}

/// Records a change of groups made on the command line.
async fn record_group_change(store: &crate::backend::Backend, change: &GroupChange) {
    let reason = if change.removed_any() {
        "groups_removed"
    } else {
        "groups_added"
    };
    store
        .audit_log(false)
        .record(
            AuditEvent::new(AuditKind::GroupsChanged, crate::display::now())
                .user(Some(&change.user.id), Some(&change.user.name))
                .by(Actor::Operator)
                .reason(reason),
        )
        .await;
}
