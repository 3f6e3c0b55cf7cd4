//! Token mode: its switch and the settings that need it.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::ArgAction;

use super::{parse_duration, parse_sha256_hex};

section! {
    /// Token mode.
    pub struct TokenModeOptions {
        /// Token mode for APIs and mobile apps: PREFIX/api/login, /token,
        /// /revoke, /introspect, /api/logout and /jwks.json, and
        /// `Authorization: Bearer` access tokens on proxied requests
        /// [default: false] [file: tokens]
        #[arg(long, env = "SIGNOFF_TOKENS", value_name = "BOOL",
              num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set,
              display_order = 26)]
        pub tokens: Option<bool>,
        /// Lifetime of access tokens, e.g. 5m (at most 1h) [default: 5m] [file: access_token_ttl]
        #[arg(long, env = "SIGNOFF_ACCESS_TOKEN_TTL", value_name = "DURATION", display_order = 27)]
        pub access_token_ttl: Option<String>,
        /// How long a refresh token just used may be used once more without
        /// counting as theft (for a client that lost the answer), e.g. 5s; 0s
        /// means never (at most 60s) [default: 0s] [file: refresh_grace]
        #[arg(long, env = "SIGNOFF_REFRESH_GRACE", value_name = "DURATION", display_order = 28)]
        pub refresh_grace: Option<String>,
        /// Signature algorithm of new token keys: EdDSA or ES256 [default: EdDSA] [file: token_alg]
        #[arg(long, env = "SIGNOFF_TOKEN_ALG", value_name = "ALG", display_order = 29)]
        pub token_alg: Option<String>,
        /// `iss` of access tokens [default: the public URL] [file: token_issuer]
        #[arg(long, env = "SIGNOFF_TOKEN_ISSUER", value_name = "URL", display_order = 30)]
        pub token_issuer: Option<String>,
        /// `aud` of access tokens [default: the public URL] [file: token_audience]
        #[arg(long, env = "SIGNOFF_TOKEN_AUDIENCE", value_name = "TEXT", display_order = 31)]
        pub token_audience: Option<String>,
        /// A confidential client allowed to introspect and revoke, as
        /// ID:SHA256HEX of its secret (`signoff admin-token` makes one); repeat
        /// or separate with commas [file: token_clients]
        #[arg(
            long = "token-client",
            env = "SIGNOFF_TOKEN_CLIENTS",
            value_name = "ID:HEX",
            value_delimiter = ',',
            hide_env_values = true,
            display_order = 32
        )]
        pub token_clients: Option<Vec<String>>,
    }
}

/// Token mode settings.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// `iss`; `None`: the public origin.
    pub issuer: Option<String>,
    /// `aud`; `None`: the public origin.
    pub audience: Option<String>,
    /// Access token lifetime.
    pub access_ttl: Duration,
    /// Refresh token reuse grace window (zero: none).
    pub refresh_grace: Duration,
    /// Algorithm of keys created here.
    pub algorithm: signoff::token_mode::SigningAlgorithm,
    /// Confidential clients: id and SHA-256 of the secret.
    pub clients: Vec<(String, [u8; 32])>,
}

impl TokenModeOptions {
    /// The token settings if token mode is on; other token settings
    /// without it are an error.
    pub(super) fn check(self) -> Result<Option<TokenSettings>> {
        let clients = self.token_clients.unwrap_or_default();
        if !self.tokens.unwrap_or(false) {
            let set = self.access_token_ttl.is_some()
                || self.refresh_grace.is_some()
                || self.token_alg.is_some()
                || self.token_issuer.is_some()
                || self.token_audience.is_some()
                || !clients.is_empty();
            if set {
                bail!("token settings are given but token mode is off: add --tokens");
            }
            return Ok(None);
        }
        let access_ttl = match &self.access_token_ttl {
            Some(t) => parse_duration(t).context("--access-token-ttl")?,
            None => Duration::from_secs(300),
        };
        if access_ttl > Duration::from_secs(3600) {
            bail!("--access-token-ttl: at most 1h (an access token is checked against its session on every request, but clients that verify it themselves trust it this long)");
        }
        if access_ttl < Duration::from_secs(1) {
            bail!("--access-token-ttl: at least 1s");
        }
        let refresh_grace = match self.refresh_grace.as_deref().map(str::trim) {
            None | Some("0" | "0s" | "off") => Duration::ZERO,
            Some(t) => parse_duration(t).context("--refresh-grace")?,
        };
        if refresh_grace > Duration::from_secs(60) {
            bail!("--refresh-grace: at most 60s (a stolen refresh token can be used this long after the real client without ending the session)");
        }
        let algorithm = match &self.token_alg {
            Some(a) => a
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--token-alg: {e}"))?,
            None => signoff::token_mode::SigningAlgorithm::EdDSA,
        };
        let clients = clients
            .iter()
            .map(|c| c.trim())
            .filter(|c| !c.is_empty())
            .map(|c| {
                let (id, hex) = c
                    .rsplit_once(':')
                    .with_context(|| "--token-client: expected ID:SHA256HEX".to_owned())?;
                if !signoff::token_mode::valid_client_id(id) {
                    bail!("--token-client {id:?}: a client id is 1 to 64 characters of A-Z a-z 0-9 . _ : -");
                }
                let digest = parse_sha256_hex(hex).context("--token-client")?;
                Ok((id.to_owned(), digest))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut ids: Vec<&str> = clients.iter().map(|(id, _)| id.as_str()).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            bail!("--token-client: a client id is given twice");
        }
        for (name, value) in [
            ("--token-issuer", &self.token_issuer),
            ("--token-audience", &self.token_audience),
        ] {
            if value
                .as_deref()
                .is_some_and(|v| v.trim().is_empty() || v.len() > 256)
            {
                bail!("{name}: expected 1 to 256 characters");
            }
        }
        Ok(Some(TokenSettings {
            issuer: self.token_issuer,
            audience: self.token_audience,
            access_ttl,
            refresh_grace,
            algorithm,
            clients,
        }))
    }
}
