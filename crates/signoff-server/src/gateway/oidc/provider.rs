//! One OpenID provider as signoff talks to it: its discovery document
//! (read once, again after a failure; every endpoint `https://` when the
//! issuer is), its signing keys (cached, read again for an unknown key id
//! at most every 10 seconds, so a flood of made-up key ids cannot hammer
//! the provider, and after 10 minutes in any case, so a withdrawn key stops
//! counting), and the token endpoint.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use axum::body::Body;
use base64::Engine as _;
use http_body_util::{BodyExt, Full, Limited};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use tokio::sync::{Mutex, RwLock};

use crate::config::Provider;
use crate::outbound::{self, OutboundClient};

/// How long a call to the provider may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read from the provider.
const MAX_ANSWER_BYTES: usize = 512 * 1024;
/// At most one read of the keys per this long for an unknown key id.
pub(super) const KEY_REFRESH_COOLDOWN: Duration = Duration::from_secs(10);
/// Keys are read again after this long even when known, so a key the
/// provider has withdrawn stops being trusted.
const KEY_MAX_AGE: Duration = Duration::from_secs(10 * 60);
/// A failed discovery is tried again after this long, not on every request.
const DISCOVERY_RETRY: Duration = Duration::from_secs(5);

/// The client for every provider: HTTPS checked against the system's
/// roots (plain HTTP only where the settings allowed it).
pub(super) type ProviderClient = OutboundClient;

pub(super) fn client() -> Result<ProviderClient> {
    outbound::client(Duration::from_secs(5))
}

/// What discovery says (OpenID Connect Discovery 1.0).
#[derive(Debug, Clone, serde::Deserialize)]
pub(super) struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    pub end_session_endpoint: Option<String>,
}

struct Keys {
    set: Vec<Jwk>,
    read_at: Option<Instant>,
}

/// A provider and what signoff has learnt of it.
pub(super) struct ProviderState {
    pub config: Provider,
    client: ProviderClient,
    discovery: RwLock<Option<Arc<Discovery>>>,
    /// When discovery last failed (tried again after [`DISCOVERY_RETRY`]).
    discovery_failed: Mutex<Option<Instant>>,
    keys: RwLock<Keys>,
    /// Held while the keys are read, so a burst of requests reads once.
    reading_keys: Mutex<()>,
}

impl ProviderState {
    pub(super) fn new(config: Provider, client: ProviderClient) -> Self {
        Self {
            config,
            client,
            discovery: RwLock::new(None),
            discovery_failed: Mutex::new(None),
            keys: RwLock::new(Keys {
                set: Vec::new(),
                read_at: None,
            }),
            reading_keys: Mutex::new(()),
        }
    }

    /// The discovery document, if it has been read.
    pub(super) async fn discovery_if_read(&self) -> Option<Arc<Discovery>> {
        self.discovery.read().await.clone()
    }

    /// The discovery document, read at first use.
    pub(super) async fn discovery(&self) -> Result<Arc<Discovery>> {
        if let Some(d) = self.discovery.read().await.as_ref() {
            return Ok(d.clone());
        }
        let mut failed = self.discovery_failed.lock().await;
        if let Some(d) = self.discovery.read().await.as_ref() {
            return Ok(d.clone());
        }
        if failed.is_some_and(|at| at.elapsed() < DISCOVERY_RETRY) {
            bail!("the provider's discovery failed a moment ago; trying again shortly");
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let read = async {
            let value = self.get_json(&url).await?;
            let d: Discovery = serde_json::from_value(value)
                .with_context(|| format!("{url}: not an OpenID discovery document"))?;
            // Every endpoint over HTTPS when the issuer is: a plain one
            // would let anyone on the way swap keys or read codes.
            if self.config.issuer.starts_with("https://") {
                let plain = [
                    Some(&d.authorization_endpoint),
                    Some(&d.token_endpoint),
                    Some(&d.jwks_uri),
                    d.end_session_endpoint.as_ref(),
                ]
                .into_iter()
                .flatten()
                .find(|url| !url.starts_with("https://"));
                if let Some(url) = plain {
                    bail!("{url:?}: the provider names an endpoint that is not https://");
                }
            }
            if d.issuer != self.config.issuer {
                bail!(
                    "{url} names the issuer {:?}, not {:?}: give the issuer exactly as the \
                     provider names it",
                    d.issuer,
                    self.config.issuer
                );
            }
            Ok(d)
        };
        match read.await {
            Ok(d) => {
                let d = Arc::new(d);
                *self.discovery.write().await = Some(d.clone());
                *failed = None;
                Ok(d)
            }
            Err(e) => {
                *failed = Some(Instant::now());
                Err(e)
            }
        }
    }

    /// The key with this id (or, without one, the only key for `alg`'s
    /// family), reading the keys again if it is unknown and the last read
    /// is older than [`KEY_REFRESH_COOLDOWN`].
    pub(super) async fn key(&self, kid: Option<&str>) -> Result<Jwk> {
        let fresh = |keys: &Keys| keys.read_at.is_some_and(|at| at.elapsed() < KEY_MAX_AGE);
        {
            let keys = self.keys.read().await;
            if let (true, Some(k)) = (fresh(&keys), find(&keys.set, kid)) {
                return Ok(k);
            }
        }
        let _reading = self.reading_keys.lock().await;
        {
            let keys = self.keys.read().await;
            if let (true, Some(k)) = (fresh(&keys), find(&keys.set, kid)) {
                return Ok(k);
            }
            // Known but old: read again; if that fails, the set in hand
            // still serves (a provider down for a moment signs nobody out).
            if let Some(k) = find(&keys.set, kid) {
                drop(keys);
                return match self.read_keys().await {
                    Ok(()) => find(&self.keys.read().await.set, kid)
                        .ok_or_else(|| anyhow!("the provider has withdrawn this key")),
                    Err(e) => {
                        tracing::warn!(provider = %self.config.id, error = format!("{e:#}"), "could not read the provider's keys again; using those in hand");
                        Ok(k)
                    }
                };
            }
            if keys
                .read_at
                .is_some_and(|at| at.elapsed() < KEY_REFRESH_COOLDOWN)
            {
                bail!("no key with this id (the keys were read a moment ago)");
            }
        }
        self.read_keys().await?;
        find(&self.keys.read().await.set, kid)
            .ok_or_else(|| anyhow!("the provider has no key with this id"))
    }

    /// Reads the provider's key set (the caller holds `reading_keys`).
    async fn read_keys(&self) -> Result<()> {
        let discovery = self.discovery().await?;
        let value = self.get_json(&discovery.jwks_uri).await;
        let mut keys = self.keys.write().await;
        keys.read_at = Some(Instant::now());
        let set: JwkSet = serde_json::from_value(value?)
            .with_context(|| format!("{}: not a JWK set", discovery.jwks_uri))?;
        keys.set = set.keys;
        Ok(())
    }

    /// Trades an authorization code for tokens (client_secret_basic, PKCE).
    pub(super) async fn exchange(
        &self,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<serde_json::Value> {
        let discovery = self.discovery().await?;
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "authorization_code")
            .append_pair("code", code)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("code_verifier", verifier)
            .finish();
        let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            enc(&self.config.client_id),
            enc(self.config.client_secret.expose())
        ));
        let req = http::Request::post(&discovery.token_endpoint)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::AUTHORIZATION, format!("Basic {basic}"))
            .body(Full::new(bytes::Bytes::from(form)))
            .context("token request")?;
        self.call(req, &discovery.token_endpoint).await
    }

    async fn get_json(&self, url: &str) -> Result<serde_json::Value> {
        let req = http::Request::get(url)
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(bytes::Bytes::new()))
            .with_context(|| format!("{url}: not a URL"))?;
        self.call(req, url).await
    }

    async fn call(
        &self,
        req: http::Request<Full<bytes::Bytes>>,
        url: &str,
    ) -> Result<serde_json::Value> {
        let answer = tokio::time::timeout(CALL_TIMEOUT, async {
            let response = self
                .client
                .request(req)
                .await
                .with_context(|| format!("{url}: cannot reach the provider"))?;
            let status = response.status();
            let body = Limited::new(Body::new(response.into_body()), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| anyhow!("{url}: {e}"))?
                .to_bytes();
            Ok::<_, anyhow::Error>((status, body))
        })
        .await
        .map_err(|_| anyhow!("{url}: no answer within {CALL_TIMEOUT:?}"))??;
        let (status, body) = answer;
        if !status.is_success() {
            // The provider's error code, never the body as a whole.
            let code = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_default();
            bail!("{url}: the provider answered {status} {code}");
        }
        serde_json::from_slice(&body).with_context(|| format!("{url}: the answer is not JSON"))
    }
}

/// The key named `kid`, or, without a `kid`, the set's only signing key.
fn find(set: &[Jwk], kid: Option<&str>) -> Option<Jwk> {
    let signing = |k: &&Jwk| {
        !matches!(
            k.common.public_key_use,
            Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
        )
    };
    match kid {
        Some(kid) => set
            .iter()
            .filter(signing)
            .find(|k| k.common.key_id.as_deref() == Some(kid))
            .cloned(),
        None => {
            let mut signing_keys = set.iter().filter(signing);
            let only = signing_keys.next()?;
            signing_keys.next().is_none().then(|| only.clone())
        }
    }
}
