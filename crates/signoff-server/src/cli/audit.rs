//! `signoff audit`: read the audit trail.

use anyhow::{Context, Result};
use clap::Args;
use signoff::{AuditKind, AuditQuery};

use super::{open_existing, Db};
use crate::{config, display};

/// Read the audit trail, newest first.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only this user's events.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// Only events this recent, e.g. 1h, 7d.
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,
    /// Only events of this kind, e.g. login_failed.
    #[arg(long, value_name = "KIND")]
    pub kind: Option<String>,
    /// At most this many events.
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub db: Db,
}

/// Runs `signoff audit`.
pub async fn run(args: AuditArgs) -> Result<()> {
    let AuditArgs {
        user,
        since,
        kind,
        limit,
        json,
        db,
    } = args;
    let store = open_existing(&db).await?;
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
