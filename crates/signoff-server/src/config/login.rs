//! The `[login]` table (file only): failure limits of the login form.

use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;

use super::parse_duration;

/// `[login]` table: failure limits.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginFile {
    account_free_failures: Option<u32>,
    account_max_delay: Option<String>,
    ip_free_failures: Option<u32>,
    ip_max_delay: Option<String>,
}

/// Failure limits for the login form: after `free_failures` failures in a
/// row, each further attempt must wait a delay that doubles from one
/// second up to `max_delay`. The account limit counts per (account, client
/// address), so an attacker slows only their own addresses, never the
/// owner's; the address limit counts all names from one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginLimits {
    /// Failures per (account, address) before delays start.
    pub account_free_failures: u32,
    /// Longest delay per (account, address).
    pub account_max_delay: Duration,
    /// Failures per client address before delays start.
    pub ip_free_failures: u32,
    /// Longest delay per client address.
    pub ip_max_delay: Duration,
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self {
            account_free_failures: 5,
            account_max_delay: Duration::from_secs(30),
            ip_free_failures: 10,
            ip_max_delay: Duration::from_secs(15 * 60),
        }
    }
}

impl LoginFile {
    pub(super) fn check(&self) -> Result<LoginLimits> {
        let mut login = LoginLimits::default();
        if let Some(n) = self.account_free_failures {
            login.account_free_failures = n;
        }
        if let Some(d) = &self.account_max_delay {
            login.account_max_delay = parse_duration(d).context("login.account_max_delay")?;
        }
        if let Some(n) = self.ip_free_failures {
            login.ip_free_failures = n;
        }
        if let Some(d) = &self.ip_max_delay {
            login.ip_max_delay = parse_duration(d).context("login.ip_max_delay")?;
        }
        Ok(login)
    }
}
