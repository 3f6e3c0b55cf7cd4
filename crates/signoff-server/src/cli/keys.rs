//! `signoff keys`: the keys that sign access tokens, and the keys that seal
//! session tokens.

use anyhow::{Context, Result};
use clap::Subcommand;

use super::{open_existing, Db};
use crate::display;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
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
    /// List the signing keys (kid, algorithm, created, current or previous)
    /// and the session token keys.
    List {
        #[command(flatten)]
        db: Db,
    },
    /// Add a new session token key. Every running gateway loads it within
    /// 30 seconds, and it seals new session tokens 90 seconds from now. The
    /// key that seals now keeps verifying; any older key is dropped, which
    /// signs out every session whose token it sealed (a second rotation,
    /// once the first key seals, signs out everyone who signed in before
    /// the first).
    RotateSessionKey {
        #[command(flatten)]
        db: Db,
    },
}

/// Runs `signoff keys …`.
pub async fn run(command: KeysCommand) -> Result<()> {
    match command {
        KeysCommand::Rotate { alg, db } => {
            let alg: signoff::token_mode::SigningAlgorithm = alg
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--alg: {e}"))?;
            let store = open_existing(&db).await?;
            let key = signoff::token_mode::rotate_keys(store.state.as_ref(), alg, display::now())
                .await
                .context("cannot rotate the token keys")?;
            println!(
                "new signing key {} ({}) in {}",
                key.kid, key.alg, store.shown
            );
            store.close().await;
        }
        KeysCommand::RotateSessionKey { db } => {
            let store = open_existing(&db).await?;
            let key = signoff::session_keys::rotate(store.state.as_ref(), display::now())
                .await
                .context("cannot rotate the session token keys")?;
            println!(
                "new session token key {} in {}: seals new sessions from {}",
                key.kid,
                store.shown,
                display::time(key.seals_from)
            );
            store.close().await;
        }
        KeysCommand::List { db } => {
            let store = open_existing(&db).await?;
            let keys = signoff::token_mode::list_keys(store.state.as_ref())
                .await
                .context("cannot read the token keys")?;
            if keys.is_empty() {
                println!(
                    "no access token keys yet: `serve --tokens` creates one on its first start"
                );
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
            let session_keys = signoff::session_keys::list(store.state.as_ref())
                .await
                .context("cannot read the session token keys")?;
            if session_keys.is_empty() {
                println!("no session token keys yet: `serve` creates one on its first start");
            } else {
                println!("SESSION KEY\tCREATED\tSEALS FROM");
            }
            for k in session_keys {
                println!(
                    "{}\t{}\t{}",
                    k.kid,
                    display::time(k.created_at),
                    display::time(k.seals_from)
                );
            }
            store.close().await;
        }
    }
    Ok(())
}
