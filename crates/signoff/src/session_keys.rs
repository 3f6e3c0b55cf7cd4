//! The keys that seal session tokens, so a made-up token never reaches a store.
//!
//! Every [`SessionToken`] carries a key id and a seal: the first 120 bits
//! of HMAC-SHA256, under that key, of a fixed label, the key id and the
//! token's 256 random bits. [`SessionKeys::verify`] recomputes it in memory
//! before any store is asked, so a flood of random or tampered cookies
//! costs a hash each and never a store read (docs/security.md, "Made-up
//! tokens"). The store still keeps only the digest of the random part.
//!
//! Where the keys live:
//!
//! - [`SessionKeys::open`] keeps them in the store's [`StateStore`] (record
//!   `session_token_keys`), created by the first node that starts, so every
//!   node sharing the store verifies every other node's tokens. Nodes
//!   re-read the record every 30 seconds.
//! - [`SessionKeys::ephemeral`] draws one key in memory: for tests and for
//!   single-process uses whose sessions need not survive a restart.
//!
//! Rotation ([`rotate`]) is staged so that no node ever meets a token
//! sealed by a key it has not loaded yet: the new key verifies at once on
//! every node that has read it, and seals new tokens only from
//! [`SIGNING_DELAY`] later, by which time every node has re-read the
//! record. The key it replaces keeps verifying; the one before that is
//! dropped, and sessions whose tokens it sealed end (their users sign in
//! again).

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clock::Timestamp;
use crate::session_token::{SessionToken, RANDOM_BYTES, SEAL_BYTES};
use crate::store::StateStore;

/// The state record that holds the keys.
const KEYS_STATE: &str = "session_token_keys";
/// How often a node re-reads the keys.
const RELOAD_EVERY: Duration = Duration::from_secs(30);
/// How soon a failed re-read is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How long after its creation a rotated-in key starts sealing new tokens:
/// more than two reload periods, so every live node has loaded it by then.
pub const SIGNING_DELAY: Duration = Duration::from_secs(90);
/// Domain separation for the seal's MAC.
const LABEL: &[u8] = b"signoff session token v2";

#[derive(Serialize, Deserialize)]
struct StoredKeys {
    /// Oldest first.
    keys: Vec<StoredKey>,
}

#[derive(Clone, Serialize, Deserialize)]
struct StoredKey {
    kid: u8,
    /// Base64 of the 32-byte secret.
    secret: String,
    created_at: i64,
    /// From when it seals new tokens (milliseconds since the epoch).
    seals_from: i64,
}

/// A key as listed by [`list`]; the secret is never shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionKeyInfo {
    /// Its one-byte id, carried in every token it seals.
    pub kid: u8,
    /// When it was created.
    pub created_at: Timestamp,
    /// From when it seals new tokens.
    pub seals_from: Timestamp,
}

struct Key {
    kid: u8,
    /// SHA-256 of the secret: tells a key from another with the same id
    /// (a record deleted and made again).
    fingerprint: [u8; 32],
    /// The MAC, already keyed: cloned per use, so the key schedule is paid once.
    mac: Hmac<Sha256>,
    seals_from: Timestamp,
    /// When this node re-read it into a running ring (`None`: it was
    /// there when the node opened the keys).
    arrived: Option<Instant>,
}

struct Ring {
    /// SHA-256 of the state record's bytes (zero for ephemeral keys): a
    /// re-read that finds other bytes, whatever the record's version,
    /// replaces the ring.
    digest: [u8; 32],
    /// Oldest first.
    keys: Vec<Key>,
}

impl Ring {
    fn key(&self, kid: u8) -> Option<&Key> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// The newest key that seals at `now`: its `seals_from` has passed on
    /// this node's clock, and, if it arrived while this node ran, it has
    /// been here for [`SIGNING_DELAY`] too (so a clock ahead of the one
    /// that staged it cannot seal before the other nodes have it). The
    /// oldest key if none does yet.
    fn sealing(&self, now: Timestamp) -> &Key {
        self.keys
            .iter()
            .rev()
            .find(|k| {
                k.seals_from <= now && k.arrived.is_none_or(|at| at.elapsed() >= SIGNING_DELAY)
            })
            .or(self.keys.first())
            .unwrap_or_else(|| unreachable!("a ring always holds a key"))
    }
}

/// A serde error without the text around it, which could quote a secret.
fn unreadable(e: &serde_json::Error) -> KeysError {
    KeysError::Corrupt(format!(
        "session token keys: not the expected JSON (line {}, column {})",
        e.line(),
        e.column()
    ))
}

fn keyed(secret: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
}

fn seal_of(mac: &Hmac<Sha256>, random: &[u8; RANDOM_BYTES], kid: u8) -> Hmac<Sha256> {
    let mut mac = mac.clone();
    mac.update(LABEL);
    mac.update(&[kid]);
    mac.update(random);
    mac
}

/// Reads a stored record. `known`: the ring it replaces, whose keys keep
/// their arrival; keys new to it arrive `now` (`None`: the node is opening
/// the keys, and every key counts as there from the start).
fn parse(bytes: &[u8], known: Option<&Ring>) -> Result<Ring, KeysError> {
    let stored: StoredKeys = serde_json::from_slice(bytes).map_err(|e| unreadable(&e))?;
    let keys = stored
        .keys
        .iter()
        .map(|k| {
            let secret = STANDARD
                .decode(&k.secret)
                .ok()
                .filter(|s| s.len() == 32)
                .ok_or_else(|| {
                    KeysError::Corrupt(format!("session key {}: secret is not 32 bytes", k.kid))
                })?;
            let fingerprint: [u8; 32] = Sha256::digest(&secret).into();
            let arrived = match known {
                None => None,
                Some(ring) => match ring.key(k.kid) {
                    Some(old) if old.fingerprint == fingerprint => old.arrived,
                    _ => Some(Instant::now()),
                },
            };
            Ok(Key {
                kid: k.kid,
                fingerprint,
                mac: keyed(&secret),
                seals_from: Timestamp::from_millis(k.seals_from),
                arrived,
            })
        })
        .collect::<Result<Vec<_>, KeysError>>()?;
    if keys.is_empty() {
        return Err(KeysError::Corrupt("no session token key".into()));
    }
    let mut kids: Vec<u8> = keys.iter().map(|k| k.kid).collect();
    kids.sort_unstable();
    kids.dedup();
    if kids.len() != keys.len() {
        return Err(KeysError::Corrupt(
            "two session token keys have the same id".into(),
        ));
    }
    Ok(Ring {
        digest: Sha256::digest(bytes).into(),
        keys,
    })
}

fn new_key(kid: u8, now: Timestamp, seals_from: Timestamp) -> StoredKey {
    let mut secret = [0u8; 32];
    OsRng.fill_bytes(&mut secret);
    StoredKey {
        kid,
        secret: STANDARD.encode(secret),
        created_at: now.as_millis(),
        seals_from: seals_from.as_millis(),
    }
}

fn encode(stored: &StoredKeys) -> Result<Vec<u8>, KeysError> {
    serde_json::to_vec(stored).map_err(|e| unreadable(&e))
}

/// The keys that seal and verify session tokens. Cheap to share behind an
/// `Arc`; [`crate::Sessions`] holds one.
pub struct SessionKeys {
    state: Option<Arc<dyn StateStore>>,
    // Read by every request on every thread: a swap and an atomic, so
    // readers share the cache lines rather than take a lock's in turn.
    ring: ArcSwap<Ring>,
    /// When the ring was last re-read (or, after a failed re-read, a time
    /// that makes the next try come a second later), in milliseconds
    /// after `base`; stored after the ring.
    loaded_ms: AtomicI64,
    base: Instant,
    reloading: tokio::sync::Mutex<()>,
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKeys")
            .field("shared", &self.state.is_some())
            .field("keys", &self.ring().keys.len())
            .finish()
    }
}

impl SessionKeys {
    /// One key drawn in memory, never shared or re-read: tokens it seals
    /// are refused by any other process, and after a restart.
    pub fn ephemeral() -> Self {
        let mut secret = [0u8; 32];
        OsRng.fill_bytes(&mut secret);
        let ring = Ring {
            digest: [0; 32],
            keys: vec![Key {
                kid: 0,
                fingerprint: Sha256::digest(secret).into(),
                mac: keyed(&secret),
                seals_from: Timestamp::from_millis(i64::MIN),
                arrived: None,
            }],
        };
        Self::holding(None, ring)
    }

    /// The keys kept in `state`, created there (one key, sealing at once)
    /// if there are none yet. Every node that opens the same store shares
    /// them.
    ///
    /// # Errors
    /// A store error, an unreadable record, or [`KeysError::Contended`].
    pub async fn open(state: Arc<dyn StateStore>, now: Timestamp) -> Result<Self, KeysError> {
        let ring = load_or_create(state.as_ref(), now).await?;
        Ok(Self::holding(Some(state), ring))
    }

    fn holding(state: Option<Arc<dyn StateStore>>, ring: Ring) -> Self {
        Self {
            state,
            ring: ArcSwap::from_pointee(ring),
            loaded_ms: AtomicI64::new(0),
            base: Instant::now(),
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    /// Milliseconds from `base` to now.
    fn now_ms(&self) -> i64 {
        i64::try_from(self.base.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    /// How long ago the ring was (taken as) re-read.
    fn since_load(&self) -> Duration {
        let loaded = self.loaded_ms.load(Ordering::Acquire);
        Duration::from_millis(u64::try_from(self.now_ms() - loaded).unwrap_or(0))
    }

    /// Whether [`SessionKeys::refresh`] would re-read the keys now.
    pub(crate) fn due(&self) -> bool {
        self.state.is_some() && self.since_load() >= RELOAD_EVERY
    }

    fn ring(&self) -> Arc<Ring> {
        self.ring.load_full()
    }

    /// A new token, sealed under the key that seals at `now`.
    pub fn issue(&self, now: Timestamp) -> SessionToken {
        let ring = self.ring();
        let key = ring.sealing(now);
        SessionToken::sealed(key.kid, |random, kid| {
            let tag = seal_of(&key.mac, random, kid).finalize().into_bytes();
            let mut seal = [0u8; SEAL_BYTES];
            seal.copy_from_slice(&tag[..SEAL_BYTES]);
            seal
        })
    }

    /// Whether `token`'s seal verifies under the key it names, in constant
    /// time. Memory only: never asks the store.
    pub fn verify(&self, token: &SessionToken) -> bool {
        let (random, kid, seal) = token.parts();
        let ring = self.ring.load();
        let Some(key) = ring.key(kid) else {
            return false;
        };
        seal_of(&key.mac, random, kid)
            .verify_truncated_left(seal)
            .is_ok()
    }

    /// Re-reads the keys from the store when they are older than 30
    /// seconds. One caller re-reads at a time; callers that come while it
    /// does wait for it, so none goes on with keys older than that. A
    /// failed re-read keeps the keys, and is tried again a second later.
    /// Costs one store read per node per 30 seconds (one a second while the
    /// record cannot be read), whatever the traffic: nothing a client sends
    /// can make it read more often. The record's bytes decide whether the
    /// keys changed, not its version, so a record deleted and made again
    /// is picked up too.
    pub async fn refresh(&self) {
        let Some(state) = &self.state else {
            return;
        };
        if self.since_load() < RELOAD_EVERY {
            return;
        }
        let _reloading = self.reloading.lock().await;
        if self.since_load() < RELOAD_EVERY {
            // Another caller re-read them while this one waited.
            return;
        }
        let current = self.ring();
        let (fresh, ok) = match state.get_state(KEYS_STATE).await {
            Ok(Some(v)) if <[u8; 32]>::from(Sha256::digest(&v.value)) == current.digest => {
                (None, true)
            }
            Ok(Some(v)) => match parse(&v.value, Some(&current)) {
                Ok(ring) => {
                    tracing::info!(target: "signoff::session_keys", keys = ring.keys.len(), "loaded changed session token keys");
                    (Some(Arc::new(ring)), true)
                }
                Err(e) => {
                    tracing::error!(target: "signoff::session_keys", error = %e, "could not read the session token keys; keeping the ones loaded");
                    (None, false)
                }
            },
            Ok(None) => {
                tracing::error!(target: "signoff::session_keys", "the session token keys are gone from the store; keeping the ones loaded");
                (None, false)
            }
            Err(e) => {
                tracing::warn!(target: "signoff::session_keys", error = %e, "could not re-read the session token keys");
                (None, false)
            }
        };
        if let Some(ring) = fresh {
            self.ring.store(ring);
        }
        let now = self.now_ms();
        let loaded = if ok {
            now
        } else {
            // Try again in a second, not in 30.
            now - i64::try_from((RELOAD_EVERY - RETRY_AFTER).as_millis()).unwrap_or(0)
        };
        // After the ring: whoever sees this time sees that ring.
        self.loaded_ms.store(loaded, Ordering::Release);
    }
}

async fn load_or_create(state: &dyn StateStore, now: Timestamp) -> Result<Ring, KeysError> {
    for _ in 0..5 {
        if let Some(v) = state.get_state(KEYS_STATE).await? {
            return parse(&v.value, None);
        }
        let fresh = StoredKeys {
            keys: vec![new_key(0, now, now)],
        };
        if state.put_state(KEYS_STATE, &encode(&fresh)?, None).await? {
            tracing::info!(target: "signoff::session_keys", "created the session token key");
            return parse(&encode(&fresh)?, None);
        }
        // Another node created them first: read theirs.
    }
    Err(KeysError::Contended)
}

/// Adds a new session token key to the store. It verifies on every node
/// within 30 seconds and seals new tokens from [`SIGNING_DELAY`] after
/// `now`. The newest key that has sealed for [`SIGNING_DELAY`] already
/// keeps verifying, with every key after it; older keys are dropped,
/// which ends the sessions whose tokens they sealed.
///
/// # Errors
/// [`KeysError::Staged`] while the key added before is still staged, a
/// store error, an unreadable record, or [`KeysError::Contended`].
pub async fn rotate(state: &dyn StateStore, now: Timestamp) -> Result<SessionKeyInfo, KeysError> {
    load_or_create(state, now).await?;
    for _ in 0..5 {
        let Some(current) = state.get_state(KEYS_STATE).await? else {
            continue;
        };
        let mut stored: StoredKeys =
            serde_json::from_slice(&current.value).map_err(|e| unreadable(&e))?;
        // One staged key at a time: a second would seal before the first
        // has, and rotations in a loop would reuse key ids.
        if let Some(staged) = stored
            .keys
            .last()
            .filter(|k| k.seals_from > now.as_millis())
        {
            return Err(KeysError::Staged {
                seconds: u64::try_from((staged.seals_from - now.as_millis() + 999) / 1000)
                    .unwrap_or(0),
            });
        }
        // Keep the newest key that has sealed for SIGNING_DELAY already,
        // and every key after it: a node that saw its successor late may
        // still be sealing with a key until then.
        let settled = now.minus(SIGNING_DELAY).as_millis();
        let keep_from = stored
            .keys
            .iter()
            .rposition(|k| k.seals_from <= settled)
            .unwrap_or(0);
        stored.keys.drain(..keep_from);
        let kid = stored.keys.last().map_or(0, |k| k.kid.wrapping_add(1));
        let seals_from = now.plus(SIGNING_DELAY);
        stored.keys.push(new_key(kid, now, seals_from));
        if state
            .put_state(KEYS_STATE, &encode(&stored)?, Some(current.version))
            .await?
        {
            tracing::info!(target: "signoff::session_keys", kid, "added a session token key");
            return Ok(SessionKeyInfo {
                kid,
                created_at: now,
                seals_from,
            });
        }
    }
    Err(KeysError::Contended)
}

/// The session token keys in the store, oldest first.
///
/// # Errors
/// A store error or an unreadable record.
pub async fn list(state: &dyn StateStore) -> Result<Vec<SessionKeyInfo>, KeysError> {
    let Some(v) = state.get_state(KEYS_STATE).await? else {
        return Ok(Vec::new());
    };
    let stored: StoredKeys = serde_json::from_slice(&v.value).map_err(|e| unreadable(&e))?;
    Ok(stored
        .keys
        .iter()
        .map(|k| SessionKeyInfo {
            kid: k.kid,
            created_at: Timestamp::from_millis(k.created_at),
            seals_from: Timestamp::from_millis(k.seals_from),
        })
        .collect())
}

/// Setting up or rotating keys failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeysError {
    /// The store failed.
    #[error("the store failed")]
    Store(#[from] crate::store::StoreError),
    /// The stored keys cannot be read.
    #[error("the stored token keys are unreadable: {0}")]
    Corrupt(String),
    /// Generating or loading a key failed.
    #[error("key generation failed")]
    Crypto,
    /// Others kept changing the keys at the same time.
    #[error("the keys kept changing; try again")]
    Contended,
    /// A session token key added earlier is still staged (it seals
    /// nothing yet); another rotation must wait for it.
    #[error("the key added before still waits to seal; rotate again in {seconds} s")]
    Staged {
        /// Seconds until the staged key seals.
        seconds: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{StoreError, Versioned};

    /// A state store whose record the test sets directly, version and all
    /// (a real store cannot be made to reuse a version without deleting
    /// the record by hand, which is what this stands for).
    #[derive(Default)]
    struct SetByHand(std::sync::Mutex<Option<Versioned>>);

    #[async_trait::async_trait]
    impl StateStore for SetByHand {
        async fn get_state(&self, _: &str) -> Result<Option<Versioned>, StoreError> {
            Ok(self.0.lock().unwrap().clone())
        }
        async fn put_state(
            &self,
            _: &str,
            value: &[u8],
            expected: Option<u64>,
        ) -> Result<bool, StoreError> {
            let mut record = self.0.lock().unwrap();
            if record.as_ref().map(|v| v.version) != expected {
                return Ok(false);
            }
            *record = Some(Versioned {
                value: value.to_vec(),
                version: expected.map_or(1, |v| v + 1),
            });
            Ok(true)
        }
    }

    /// The record deleted and made again has the same version and key id,
    /// but other keys: a running node must load them, not keep its own.
    #[tokio::test(start_paused = true)]
    async fn a_record_made_again_at_the_same_version_is_loaded() {
        let state = Arc::new(SetByHand::default());
        let now = Timestamp::from_millis(1_000_000);
        let keys = SessionKeys::open(state.clone(), now).await.unwrap();
        let old = keys.issue(now);
        *state.0.lock().unwrap() = None;
        let other = SessionKeys::open(state.clone(), now).await.unwrap();
        assert_eq!(state.0.lock().unwrap().as_ref().unwrap().version, 1);
        let new = other.issue(now);
        assert!(!keys.verify(&new));
        tokio::time::advance(RELOAD_EVERY).await;
        keys.refresh().await;
        assert!(keys.verify(&new), "the running node took the new record");
        assert!(!keys.verify(&old), "and dropped the keys that are gone");
    }

    /// A failed re-read is tried again a second later, not 30.
    #[tokio::test(start_paused = true)]
    async fn a_failed_reread_is_retried_within_a_second() {
        let state = Arc::new(SetByHand::default());
        let now = Timestamp::from_millis(1_000_000);
        let keys = SessionKeys::open(state.clone(), now).await.unwrap();
        let saved = state.0.lock().unwrap().take();
        tokio::time::advance(RELOAD_EVERY).await;
        keys.refresh().await; // finds nothing: keeps its keys
        let other = SessionKeys::open(state.clone(), now).await.unwrap();
        let new = other.issue(now);
        tokio::time::advance(RETRY_AFTER).await;
        keys.refresh().await;
        assert!(keys.verify(&new), "re-read a second after the failure");
        drop(saved);
    }

    #[test]
    fn duplicate_key_ids_and_bad_json_are_refused_without_quoting_the_record() {
        let twice = StoredKeys {
            keys: vec![new_key(3, Timestamp::from_millis(0), Timestamp::from_millis(0)); 2],
        };
        assert!(matches!(
            parse(&encode(&twice).unwrap(), None),
            Err(KeysError::Corrupt(m)) if m.contains("same id")
        ));
        let leaky = br#"{"keys":[{"kid":"c2VjcmV0LXNlY3JldC1zZWNyZXQ","secret":1}]}"#;
        let Err(KeysError::Corrupt(message)) = parse(leaky, None) else {
            panic!("bad JSON was accepted");
        };
        assert!(!message.contains("c2VjcmV0"), "{message}");
    }
}
