//! `signoff keys`: the keys that sign access tokens.

use anyhow::{Context, Result};
use clap::Subcommand;

use super::{open, Db};
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
    /// List the signing keys: kid, algorithm, created, current or previous.
    List {
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
            let store = open(&db).await?;
            let key = signoff::token_mode::rotate_keys(store.state.as_ref(), alg, display::now())
                .await
                .context("cannot rotate the token keys")?;
            println!("new signing key {} ({})", key.kid, key.alg);
            store.close().await;
        }
        KeysCommand::List { db } => {
            let store = open(&db).await?;
            let keys = signoff::token_mode::list_keys(store.state.as_ref())
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
