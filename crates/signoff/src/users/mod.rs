//! Users and their passwords.
//!
//! Passwords are hashed with Argon2id at no less than OWASP's parameters
//! (m = 19 MiB, t = 2, p = 1) and kept as PHC strings. Hashing runs on
//! tokio's blocking pool behind a semaphore, so a flood of logins waits its
//! turn instead of starving session checks. An unknown user costs the same
//! hash as a known one, and a hash made with weaker parameters than today's
//! is replaced at the next successful login.
//!
//! Each permit comes with Argon2's working memory (m KiB, 19 MiB by
//! default), allocated on first use and kept for the next hash: a flood of
//! logins reuses the same few buffers instead of allocating 19 MiB per
//! attempt on whichever blocking thread runs it, which the allocator kept
//! per thread (docs/benchmarks.md, "Memory during a login flood"). So a
//! [`Passwords`] holds at most `concurrency × m` KiB while hashing, and
//! frees it after 15 to 30 s without a hash.
//!
//! Users imported from another system keep that system's hash until their
//! first sign-in ([`imported_hashes`]): it is verified under the same
//! permits and replaced by an Argon2id hash then. Such a hash (and an
//! Argon2 hash with more memory than this node's parameters) may need far
//! more memory than `m` (up to the bounds of [`imported_hashes`]: 1 GiB for
//! Argon2, 256 MiB for scrypt), so only one of them is verified at a time,
//! whatever the concurrency: a flood of sign-ins to imported names costs
//! at most one such verification's memory, and never delays the sign-ins
//! of users with signoff's own hashes beyond their share of the permits.

pub mod imported_hashes;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore;
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};

use crate::clock::{Clock, SystemClock, Timestamp};
use crate::session::UserId;
use crate::store::StoreError;
use imported_hashes::{HashError, Scheme};

/// Longest user name accepted.
pub const MAX_NAME_BYTES: usize = 64;
/// Shortest password accepted (NIST SP 800-63B).
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password accepted; bounds the work an attacker can ask for.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Most groups a user can be in.
pub const MAX_GROUPS: usize = 64;
/// Longest group name.
pub const MAX_GROUP_BYTES: usize = 64;

/// A user account.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// Stable opaque identifier, used in sessions.
    pub id: UserId,
    /// Login name, unique.
    pub name: String,
    /// Argon2id PHC string, or until the first sign-in of an imported
    /// user, the hash of the system it came from
    /// ([`imported_hashes::recognise`]).
    pub password_hash: String,
    /// A disabled user cannot sign in.
    pub disabled: bool,
    /// The groups the user is in: sorted, no duplicates, each 1 to 64
    /// characters from `A-Z a-z 0-9 . _ - :`, at most [`MAX_GROUPS`].
    pub groups: Vec<String>,
    /// When the account was created.
    pub created_at: Timestamp,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("password_hash", &"<redacted>")
            .field("disabled", &self.disabled)
            .field("groups", &self.groups)
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// Where user accounts live.
#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Adds a user; [`StoreError::Duplicate`] if the id or name is taken.
    async fn insert_user(&self, user: &User) -> Result<(), StoreError>;
    /// Finds a user by login name.
    async fn user_by_name(&self, name: &str) -> Result<Option<User>, StoreError>;
    /// Finds a user by id.
    async fn user_by_id(&self, id: &UserId) -> Result<Option<User>, StoreError>;
    /// Replaces a user's password hash; returns whether the user exists.
    async fn set_password_hash(&self, id: &UserId, phc: &str) -> Result<bool, StoreError>;
    /// Replaces a user's password hash only if it is still `expected`;
    /// returns whether it did. Used for rehashing at login, which must not
    /// overwrite a password changed meanwhile.
    async fn replace_password_hash(
        &self,
        id: &UserId,
        expected: &str,
        phc: &str,
    ) -> Result<bool, StoreError>;
    /// Disables or enables a user; returns whether the user exists.
    async fn set_disabled(&self, id: &UserId, disabled: bool) -> Result<bool, StoreError>;
    /// Replaces a user's groups with `groups` only if they are still
    /// `expected`, in one atomic step; returns whether it did (false for an
    /// unknown user too). Both lists are as [`check_groups`] returns them
    /// (sorted, no duplicates), so that stores may compare them as stored.
    /// A compare-and-set, so that two changes at once never lose one
    /// another's groups ([`Accounts::change_groups`] reads again and
    /// retries).
    async fn replace_groups(
        &self,
        id: &UserId,
        expected: &[String],
        groups: &[String],
    ) -> Result<bool, StoreError>;
    /// All users, by name.
    async fn list_users(&self) -> Result<Vec<User>, StoreError>;
}

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccountError {
    /// The name is empty, too long, or has characters outside `A-Z a-z 0-9 . _ @ + -`.
    #[error("user names are 1 to 64 characters from A-Z a-z 0-9 . _ @ + -")]
    InvalidName,
    /// The password is shorter than [`MIN_PASSWORD_CHARS`].
    #[error("the password must have at least 8 characters")]
    PasswordTooShort,
    /// The password is longer than [`MAX_PASSWORD_BYTES`].
    #[error("the password must have at most 1024 bytes")]
    PasswordTooLong,
    /// A user with this name exists already.
    #[error("a user with this name exists already")]
    NameTaken,
    /// No user has this name (for administrative operations only; a
    /// login never says so).
    #[error("no such user")]
    UnknownUser,
    /// Wrong name or password; deliberately the same for both.
    #[error("wrong user name or password")]
    InvalidCredentials,
    /// The password was right, but the account is disabled.
    #[error("the account is disabled")]
    Disabled,
    /// The hash in the store is not one this crate can verify, or asks
    /// for more work than the bounds of [`imported_hashes`] allow.
    #[error("the stored password hash is unreadable")]
    CorruptHash,
    /// A hash given for an imported user cannot be verified.
    #[error("the password hash cannot be imported: {0}")]
    UnreadableHash(#[from] HashError),
    /// A group name is empty, too long, or has characters outside
    /// `A-Z a-z 0-9 . _ - :`, or there are more than [`MAX_GROUPS`].
    #[error("groups are 1 to 64 characters from A-Z a-z 0-9 . _ - :, at most 64 per user")]
    InvalidGroup,
    /// One change both adds and removes the same group.
    #[error("a group cannot be both added and removed in one change")]
    GroupAddedAndRemoved,
    /// The user's groups kept changing under [`Accounts::change_groups`]
    /// (other changes at the same moment); nothing was changed by this one.
    #[error("the user's groups kept changing meanwhile; nothing was changed, try again")]
    GroupsBusy,
    /// Hashing failed or its worker was lost.
    #[error("password hashing failed")]
    Hashing,
    /// The store failed.
    #[error("user store error")]
    Store(#[from] StoreError),
}

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl PasswordParams {
    /// OWASP's minimum for Argon2id: m = 19 MiB, t = 2, p = 1.
    pub const OWASP: PasswordParams = PasswordParams {
        memory_kib: 19 * 1024,
        iterations: 2,
        parallelism: 1,
    };

    /// Whether hashes made with these parameters are weaker than with `other`.
    pub(crate) fn weaker_than(&self, other: &PasswordParams) -> bool {
        self.memory_kib < other.memory_kib || self.iterations < other.iterations
    }
}

impl Default for PasswordParams {
    fn default() -> Self {
        Self::OWASP
    }
}

/// Hashes and verifies passwords on a bounded share of the blocking pool.
#[derive(Clone)]
pub struct Passwords {
    params: PasswordParams,
    argon2: Argon2<'static>,
    permits: Arc<Semaphore>,
    /// One verification at a time of a hash beyond this node's own
    /// parameters (a foreign format, or Argon2 with a bigger `m`).
    heavy: Arc<Semaphore>,
    /// Working memory for the hashes running now and the next ones: at most
    /// one buffer per permit.
    buffers: Arc<Buffers>,
    dummy: Arc<OnceCell<String>>,
}

/// Argon2 working memory kept between hashes, and given back to the
/// system once no hash has run for [`IDLE_RELEASE`] or so.
#[derive(Default)]
struct Buffers {
    free: Mutex<Vec<Vec<Block>>>,
    /// A hash ran since the sweeper last looked.
    used: AtomicBool,
    /// The sweeper task is running.
    sweeping: AtomicBool,
}

/// How often idle buffers are looked for; a buffer goes after one to two
/// periods without any hash.
const IDLE_RELEASE: Duration = Duration::from_secs(15);

/// A buffer's least capacity, in 1 KiB blocks: above glibc's largest
/// dynamic mmap threshold (32 MiB), so that the buffer gets a mapping of
/// its own, which freeing it returns to the system at once. A smaller one
/// (19 MiB), once freed, raises the threshold and the next ones stay in
/// the heap for good. Capacity never written costs address space only.
const MAPPED_BLOCKS: usize = 32 * 1024 + 1;

impl Buffers {
    fn take(&self) -> Vec<Block> {
        self.used.store(true, Ordering::Relaxed);
        self.lock().pop().unwrap_or_default()
    }

    fn give_back(&self, buffer: Vec<Block>) {
        self.used.store(true, Ordering::Relaxed);
        self.lock().push(buffer);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<Block>>> {
        // A plain list of buffers: a panic elsewhere cannot leave it
        // inconsistent.
        self.free.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts, once, the task that frees buffers left idle; it ends with
    /// the last [`Passwords`] sharing them.
    fn sweep_idle(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let buffers = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(IDLE_RELEASE).await;
                let Some(buffers) = buffers.upgrade() else {
                    return;
                };
                buffers.sweep_once();
            }
        });
    }

    /// Frees the buffers if no hash ran since the last call.
    fn sweep_once(&self) {
        if !self.used.swap(false, Ordering::Relaxed) {
            self.lock().clear();
        }
    }
}

/// Argon2 with `argon2`'s parameters into `out`, in `memory` (grown to
/// the parameters' size if it is smaller). Every block the hash reads is
/// written first, so what a buffer held before does not matter.
fn hash_into(
    argon2: &Argon2<'_>,
    memory: &mut Vec<Block>,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), argon2::Error> {
    let blocks = argon2.params().block_count();
    if memory.len() < blocks {
        if memory.capacity() < blocks {
            *memory = Vec::with_capacity(blocks.max(MAPPED_BLOCKS));
        }
        memory.resize(blocks, Block::default());
    }
    argon2.hash_password_into_with_memory(password, salt, out, &mut memory[..blocks])
}

/// A new PHC string for `password` under `argon2`'s parameters.
fn hash_phc(argon2: &Argon2<'_>, memory: &mut Vec<Block>, password: &[u8]) -> Option<String> {
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; Salt::MAX_LENGTH];
    let salt_bytes = salt.as_salt().decode_b64(&mut salt_bytes).ok()?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    hash_into(argon2, memory, password, salt_bytes, &mut out).ok()?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon2.params()).ok()?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).ok()?),
    };
    Some(phc.to_string())
}

/// Whether `password` matches the PHC string `phc`, hashed with the
/// algorithm, version and parameters `phc` names; the comparison takes
/// the same time wherever the outputs differ.
fn verify_phc(memory: &mut Vec<Block>, phc: &str, password: &[u8]) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    let mut salt_bytes = [0u8; Salt::MAX_LENGTH];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let mut out = [0u8; Output::MAX_LENGTH];
    let Some(out) = out.get_mut(..expected.len()) else {
        return false;
    };
    let argon2 = Argon2::new(algorithm, version, params);
    if hash_into(&argon2, memory, password, salt, out).is_err() {
        return false;
    }
    // `Output`'s equality is constant-time.
    Output::new(out).is_ok_and(|computed| computed == expected)
}

impl fmt::Debug for Passwords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Passwords")
            .field("params", &self.params)
            .field("concurrency", &self.permits.available_permits())
            .finish()
    }
}

/// Why [`Passwords`] refused its parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordParamsError {
    /// Below OWASP's minimum (m = 19 MiB, t = 2, p = 1).
    #[error("Argon2id parameters below OWASP's minimum (m=19456 KiB, t=2, p=1)")]
    BelowMinimum,
    /// The argon2 crate refused them.
    #[error("invalid Argon2 parameters")]
    Invalid,
    /// Above the bounds a stored hash may ask for
    /// ([`imported_hashes::MAX_ARGON2_MEMORY_KIB`],
    /// [`imported_hashes::MAX_ARGON2_PASSES`],
    /// [`imported_hashes::MAX_ARGON2_WORK_KIB`]): the node could not verify
    /// its own hashes.
    #[error("Argon2id parameters above signoff's bounds (m at most 1048576 KiB, t at most 32, m·t at most 4194304)")]
    AboveMaximum,
    /// Zero concurrent hashes would never hash anything.
    #[error("password hashing concurrency must be at least 1")]
    ZeroConcurrency,
}

/// The outcome of checking a password against a hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The password is right.
    Match {
        /// The hash used weaker parameters than today's: store a new one.
        needs_rehash: bool,
    },
    /// The password is wrong.
    Mismatch,
}

impl Passwords {
    /// OWASP's parameters, with one hash at a time fewer than there are
    /// CPUs (at least one), so that a flood of logins always leaves a core
    /// for session checks.
    pub fn new() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::with_params(PasswordParams::OWASP, default_concurrency(cpus))
            .expect("OWASP parameters are valid")
    }

    /// Custom parameters (never below OWASP's) and concurrency.
    ///
    /// # Errors
    /// A [`PasswordParamsError`] for parameters below the minimum.
    pub fn with_params(
        params: PasswordParams,
        concurrency: usize,
    ) -> Result<Self, PasswordParamsError> {
        if params.weaker_than(&PasswordParams::OWASP) || params.parallelism < 1 {
            return Err(PasswordParamsError::BelowMinimum);
        }
        if !imported_hashes::argon2_within_bounds(params.memory_kib, params.iterations) {
            return Err(PasswordParamsError::AboveMaximum);
        }
        if concurrency == 0 {
            return Err(PasswordParamsError::ZeroConcurrency);
        }
        let argon_params = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .map_err(|_| PasswordParamsError::Invalid)?;
        Ok(Self {
            params,
            argon2: Argon2::new(Algorithm::Argon2id, Version::V0x13, argon_params),
            permits: Arc::new(Semaphore::new(concurrency)),
            heavy: Arc::new(Semaphore::new(1)),
            buffers: Arc::default(),
            dummy: Arc::new(OnceCell::new()),
        })
    }

    /// The parameters new hashes use.
    pub fn params(&self) -> PasswordParams {
        self.params
    }

    /// Runs `work` on the blocking pool once a permit is free, with the
    /// working memory that goes with the permit.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Argon2<'static>, &mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T, AccountError> {
        self.run_gated(None, work).await
    }

    /// [`Passwords::run`] holding `gate` (the heavy-verification permit)
    /// until the work itself is done: a request dropped while the work runs
    /// on the blocking pool must not let the next heavy one start.
    async fn run_gated<T: Send + 'static>(
        &self,
        gate: Option<OwnedSemaphorePermit>,
        work: impl FnOnce(&Argon2<'static>, &mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T, AccountError> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| AccountError::Hashing)?;
        let argon2 = self.argon2.clone();
        self.buffers.sweep_idle();
        let buffers = Arc::clone(&self.buffers);
        tokio::task::spawn_blocking(move || {
            // Dropped in reverse: the permit first, then the gate, so the
            // next heavy verification never overlaps this one's permit.
            let _gate = gate;
            let _permit = permit;
            // Taken and given back while holding the permit: never more
            // buffers than permits.
            let mut memory = buffers.take();
            let result = work(&argon2, &mut memory);
            // A stored hash with a bigger `m` grew the buffer past what
            // this node's own parameters need: let it go (the next hash
            // draws a buffer of the usual size).
            if memory.capacity() > argon2.params().block_count().max(MAPPED_BLOCKS) {
                memory = Vec::new();
            }
            buffers.give_back(memory);
            result
        })
        .await
        .map_err(|_| AccountError::Hashing)
    }

    /// The one permit for a verification beyond this node's parameters.
    async fn heavy_gate(&self) -> Result<OwnedSemaphorePermit, AccountError> {
        Arc::clone(&self.heavy)
            .acquire_owned()
            .await
            .map_err(|_| AccountError::Hashing)
    }

    /// Hashes a password into a PHC string.
    ///
    /// # Errors
    /// [`AccountError::PasswordTooShort`], [`AccountError::PasswordTooLong`]
    /// or [`AccountError::Hashing`].
    pub async fn hash(&self, password: &str) -> Result<String, AccountError> {
        check_password(password)?;
        self.hash_checked(password).await
    }

    /// Hashes a password that was already checked: a new one against the
    /// rules, or an imported user's, just verified against their old hash
    /// (which may be shorter than today's minimum: it must still leave the
    /// old system's hash behind).
    async fn hash_checked(&self, password: &str) -> Result<String, AccountError> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(AccountError::PasswordTooLong);
        }
        let password = password.to_owned();
        self.run(move |argon2, memory| {
            hash_phc(argon2, memory, password.as_bytes()).ok_or(AccountError::Hashing)
        })
        .await?
    }

    /// Checks a password against a stored hash: an Argon2 PHC string, or
    /// one of the foreign formats of [`imported_hashes`], which always ask
    /// for a rehash.
    ///
    /// # Errors
    /// [`AccountError::CorruptHash`] if `phc` cannot be read or is beyond
    /// the cost bounds, [`AccountError::Hashing`] if the worker was lost.
    pub async fn verify(&self, phc: &str, password: &str) -> Result<Verification, AccountError> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Ok(Verification::Mismatch);
        }
        let recognised = imported_hashes::parse(phc).map_err(|_| AccountError::CorruptHash)?;
        let phc = match recognised.scheme {
            Scheme::Argon2(phc) => phc,
            foreign => {
                let gate = self.heavy_gate().await?;
                let password = password.to_owned();
                let matched = self
                    .run_gated(Some(gate), move |_, _| {
                        imported_hashes::verify_foreign(&foreign, &password)
                    })
                    .await?;
                return Ok(if matched {
                    Verification::Match { needs_rehash: true }
                } else {
                    Verification::Mismatch
                });
            }
        };
        let foreign_prefix = recognised.format != imported_hashes::HashFormat::Argon2;
        let parsed = PasswordHash::new(&phc).map_err(|_| AccountError::CorruptHash)?;
        let stored = Params::try_from(&parsed).map_err(|_| AccountError::CorruptHash)?;
        let stored = PasswordParams {
            memory_kib: stored.m_cost(),
            iterations: stored.t_cost(),
            parallelism: stored.p_cost(),
        };
        let needs_rehash = foreign_prefix
            || parsed.algorithm.as_str() != "argon2id"
            || parsed.version != Some(Version::V0x13.into())
            || stored.weaker_than(&self.params);
        // More memory than this node's own hashes use: one at a time.
        let gate = if stored.memory_kib > self.params.memory_kib {
            Some(self.heavy_gate().await?)
        } else {
            None
        };
        let password = password.to_owned();
        let matched = self
            .run_gated(gate, move |_, memory| {
                verify_phc(memory, &phc, password.as_bytes())
            })
            .await?;
        Ok(if matched {
            Verification::Match { needs_rehash }
        } else {
            Verification::Mismatch
        })
    }

    /// Spends the same work as a real verification, for unknown users.
    async fn verify_dummy(&self, password: &str) -> Result<(), AccountError> {
        let dummy = self
            .dummy
            .get_or_try_init(|| async {
                let mut random = [0u8; 24];
                rand::rngs::OsRng.fill_bytes(&mut random);
                self.hash(&URL_SAFE_NO_PAD.encode(random)).await
            })
            .await?;
        self.verify(dummy, password).await.map(|_| ())
    }
}

impl Default for Passwords {
    fn default() -> Self {
        Self::new()
    }
}

/// Concurrent hashes by default: one fewer than the CPUs, at least one.
fn default_concurrency(cpus: usize) -> usize {
    cpus.saturating_sub(1).max(1)
}

fn check_password(password: &str) -> Result<(), AccountError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AccountError::PasswordTooLong);
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(AccountError::PasswordTooShort);
    }
    Ok(())
}

/// Checks a login name: 1 to 64 characters from `A-Z a-z 0-9 . _ @ + -`.
///
/// # Errors
/// [`AccountError::InvalidName`].
pub fn check_name(name: &str) -> Result<(), AccountError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@+-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(AccountError::InvalidName)
    }
}

/// Checks groups and puts them in order, without duplicates: each 1 to 64
/// characters from `A-Z a-z 0-9 . _ - :`, at most [`MAX_GROUPS`].
///
/// # Errors
/// [`AccountError::InvalidGroup`].
pub fn check_groups(groups: &[String]) -> Result<Vec<String>, AccountError> {
    if !groups.iter().all(|g| valid_group(g)) {
        return Err(AccountError::InvalidGroup);
    }
    let mut groups = groups.to_vec();
    groups.sort();
    groups.dedup();
    if groups.len() > MAX_GROUPS {
        return Err(AccountError::InvalidGroup);
    }
    Ok(groups)
}

/// Whether `group` is a group name: 1 to 64 characters from
/// `A-Z a-z 0-9 . _ - :`.
fn valid_group(group: &str) -> bool {
    !group.is_empty()
        && group.len() <= MAX_GROUP_BYTES
        && group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b))
}

/// Tries of [`Accounts::change_groups`] before it gives up on a user whose
/// groups keep changing.
const GROUP_CHANGE_TRIES: usize = 8;

/// What [`Accounts::change_groups`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupChange {
    /// The user as changed: [`User::groups`] holds the groups after.
    pub user: User,
    /// The groups before the change, sorted.
    pub before: Vec<String>,
}

impl GroupChange {
    /// The groups after the change, sorted.
    pub fn after(&self) -> &[String] {
        &self.user.groups
    }

    /// The groups the user is in now and was not before.
    pub fn added(&self) -> Vec<String> {
        difference(&self.user.groups, &self.before)
    }

    /// The groups the user was in and is not now.
    pub fn removed(&self) -> Vec<String> {
        difference(&self.before, &self.user.groups)
    }

    /// Whether the user left any group: sessions signed in before carry
    /// groups the user no longer has, so the caller ends them (see
    /// [`crate::Sessions::end_all_for_user`]).
    pub fn removed_any(&self) -> bool {
        self.before.iter().any(|g| !self.user.groups.contains(g))
    }

    /// Whether anything changed.
    pub fn changed(&self) -> bool {
        self.before != self.user.groups
    }
}

/// The groups in `a` and not in `b`.
fn difference(a: &[String], b: &[String]) -> Vec<String> {
    a.iter().filter(|g| !b.contains(g)).cloned().collect()
}

/// A user brought from another system, with the hash it kept there.
#[derive(Clone, PartialEq, Eq)]
pub struct ImportedUser {
    /// Login name.
    pub name: String,
    /// The password hash, in a format [`imported_hashes::recognise`] reads.
    pub hash: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Whether the account starts disabled.
    pub disabled: bool,
}

impl fmt::Debug for ImportedUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportedUser")
            .field("name", &self.name)
            .field("hash", &"<redacted>")
            .field("groups", &self.groups)
            .field("disabled", &self.disabled)
            .finish()
    }
}

/// Groups as stores keep them: one text, names separated by spaces (no
/// group name has one).
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres", feature = "redis")),
    allow(dead_code)
)]
pub(crate) fn groups_to_stored(groups: &[String]) -> String {
    groups.join(" ")
}

/// Groups back from [`groups_to_stored`].
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres", feature = "redis")),
    allow(dead_code)
)]
pub(crate) fn groups_from_stored(stored: &str) -> Vec<String> {
    stored
        .split(' ')
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
        .collect()
}

fn new_user_id() -> UserId {
    let mut id = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut id);
    UserId::new(URL_SAFE_NO_PAD.encode(id))
}

/// User accounts: adding, signing in, changing passwords, disabling.
#[derive(Clone)]
pub struct Accounts {
    users: Arc<dyn UserStore>,
    // Behind one `Arc`: an app's state holds `Accounts` and is cloned for
    // every request its router serves.
    passwords: Arc<Passwords>,
}

impl fmt::Debug for Accounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accounts")
            .field("passwords", &self.passwords)
            .finish_non_exhaustive()
    }
}

impl Accounts {
    /// Accounts in `users`, hashed by `passwords`.
    pub fn new(users: Arc<dyn UserStore>, passwords: Passwords) -> Self {
        Self {
            users,
            passwords: Arc::new(passwords),
        }
    }

    /// The password hasher.
    pub fn passwords(&self) -> &Passwords {
        &self.passwords
    }

    /// Adds a user.
    ///
    /// # Errors
    /// [`AccountError::InvalidName`], a password rule, or
    /// [`AccountError::NameTaken`].
    pub async fn add_user(&self, name: &str, password: &str) -> Result<User, AccountError> {
        self.add_user_in_groups(name, password, &[]).await
    }

    /// Adds a user in `groups`.
    ///
    /// # Errors
    /// [`AccountError::InvalidName`], [`AccountError::InvalidGroup`], a
    /// password rule, or [`AccountError::NameTaken`].
    pub async fn add_user_in_groups(
        &self,
        name: &str,
        password: &str,
        groups: &[String],
    ) -> Result<User, AccountError> {
        check_name(name)?;
        let groups = check_groups(groups)?;
        let user = User {
            id: new_user_id(),
            name: name.to_owned(),
            password_hash: self.passwords.hash(password).await?,
            disabled: false,
            groups,
            created_at: SystemClock.now(),
        };
        self.insert(user).await
    }

    /// Adds a user brought from another system with its password hash,
    /// which is verified as it is until the user's first sign-in and then
    /// replaced by Argon2id. Never replaces an existing user.
    ///
    /// # Errors
    /// [`AccountError::InvalidName`], [`AccountError::InvalidGroup`],
    /// [`AccountError::UnreadableHash`] or [`AccountError::NameTaken`].
    pub async fn import_user(&self, imported: &ImportedUser) -> Result<User, AccountError> {
        check_name(&imported.name)?;
        let groups = check_groups(&imported.groups)?;
        imported_hashes::recognise(&imported.hash)?;
        let user = User {
            id: new_user_id(),
            name: imported.name.clone(),
            password_hash: imported.hash.clone(),
            disabled: imported.disabled,
            groups,
            created_at: SystemClock.now(),
        };
        self.insert(user).await
    }

    async fn insert(&self, user: User) -> Result<User, AccountError> {
        match self.users.insert_user(&user).await {
            Ok(()) => Ok(user),
            Err(StoreError::Duplicate) => Err(AccountError::NameTaken),
            Err(e) => Err(e.into()),
        }
    }

    /// Checks a login. Unknown names and wrong passwords give the same
    /// error after the same work. A right password on a disabled account
    /// gives [`AccountError::Disabled`]. A hash with outdated parameters
    /// is replaced.
    ///
    /// # Errors
    /// [`AccountError::InvalidCredentials`], [`AccountError::Disabled`], or
    /// a store or hashing error.
    pub async fn authenticate(&self, name: &str, password: &str) -> Result<User, AccountError> {
        let user = if check_name(name).is_ok() {
            self.users.user_by_name(name).await?
        } else {
            None
        };
        let Some(mut user) = user else {
            self.passwords.verify_dummy(password).await?;
            return Err(AccountError::InvalidCredentials);
        };
        let verified = match self.passwords.verify(&user.password_hash, password).await {
            // Unreadable (garbled, or beyond the cost bounds): the same
            // work as an unknown name, so timing does not single it out.
            Err(AccountError::CorruptHash) => {
                self.passwords.verify_dummy(password).await?;
                return Err(AccountError::CorruptHash);
            }
            other => other?,
        };
        match verified {
            Verification::Mismatch => Err(AccountError::InvalidCredentials),
            Verification::Match { .. } if user.disabled => Err(AccountError::Disabled),
            Verification::Match { needs_rehash } => {
                if needs_rehash {
                    // A failure here leaves the old, still valid hash in
                    // place; a password changed meanwhile is left alone.
                    // No length rule: an imported password shorter than
                    // today's minimum still leaves its old hash behind.
                    if let Ok(phc) = self.passwords.hash_checked(password).await {
                        let replaced = self
                            .users
                            .replace_password_hash(&user.id, &user.password_hash, &phc)
                            .await;
                        match replaced {
                            // What `still_signs_in` compares against.
                            Ok(true) => user.password_hash = phc,
                            // Another sign-in rehashed first, or the
                            // password changed: keep the stored hash if it
                            // is this password's (rare: a second hash).
                            Ok(false) => {
                                if let Ok(Some(now)) = self.users.user_by_id(&user.id).await {
                                    let same =
                                        self.passwords.verify(&now.password_hash, password).await;
                                    if matches!(same, Ok(Verification::Match { .. })) {
                                        user.password_hash = now.password_hash;
                                    }
                                }
                            }
                            Err(e) => {
                                tracing::warn!(user = %user.id, error = %e, "could not store a rehashed password");
                            }
                        }
                    }
                }
                Ok(user)
            }
        }
    }

    /// Sets a new password.
    ///
    /// # Errors
    /// A password rule, [`AccountError::UnknownUser`], or a store error.
    pub async fn set_password(&self, name: &str, password: &str) -> Result<User, AccountError> {
        let user = self.user(name).await?;
        let phc = self.passwords.hash(password).await?;
        if !self.users.set_password_hash(&user.id, &phc).await? {
            return Err(AccountError::UnknownUser);
        }
        Ok(User {
            password_hash: phc,
            ..user
        })
    }

    /// Disables a user: they can no longer sign in. Ending the user's
    /// sessions is the caller's job (see
    /// [`crate::Sessions::end_all_for_user`]).
    ///
    /// # Errors
    /// [`AccountError::UnknownUser`] or a store error.
    pub async fn disable(&self, name: &str) -> Result<User, AccountError> {
        self.set_disabled(name, true).await
    }

    /// Enables a user disabled by [`Accounts::disable`].
    ///
    /// # Errors
    /// [`AccountError::UnknownUser`] or a store error.
    pub async fn enable(&self, name: &str) -> Result<User, AccountError> {
        self.set_disabled(name, false).await
    }

    async fn set_disabled(&self, name: &str, disabled: bool) -> Result<User, AccountError> {
        let user = self.user(name).await?;
        if !self.users.set_disabled(&user.id, disabled).await? {
            return Err(AccountError::UnknownUser);
        }
        Ok(User { disabled, ..user })
    }

    /// Changes a user's groups: adds `add` and takes away `remove`. The new
    /// list is checked as [`check_groups`] does; a group the user is
    /// already in (or not in) is left as it is. The change is a
    /// compare-and-set ([`UserStore::replace_groups`]), read again and
    /// retried when another change came first, so that two changes at once
    /// both count. Ending the user's sessions when a group was removed is
    /// the caller's job ([`GroupChange::removed_any`],
    /// [`crate::Sessions::end_all_for_user`]): sessions carry the groups
    /// they signed in with.
    ///
    /// # Errors
    /// [`AccountError::InvalidGroup`] (a bad name in `add` or `remove`, or
    /// too many groups after), [`AccountError::GroupAddedAndRemoved`],
    /// [`AccountError::UnknownUser`], [`AccountError::GroupsBusy`] or a
    /// store error.
    pub async fn change_groups(
        &self,
        name: &str,
        add: &[String],
        remove: &[String],
    ) -> Result<GroupChange, AccountError> {
        if !add.iter().chain(remove).all(|g| valid_group(g)) {
            return Err(AccountError::InvalidGroup);
        }
        if add.iter().any(|g| remove.contains(g)) {
            return Err(AccountError::GroupAddedAndRemoved);
        }
        for _ in 0..GROUP_CHANGE_TRIES {
            let user = self.user(name).await?;
            let before = user.groups.clone();
            let wanted: Vec<String> = before
                .iter()
                .chain(add)
                .filter(|g| !remove.contains(g))
                .cloned()
                .collect();
            let after = check_groups(&wanted)?;
            let mut sorted_before = before.clone();
            sorted_before.sort();
            if after == sorted_before {
                return Ok(GroupChange {
                    before: sorted_before,
                    user,
                });
            }
            // `before` as read, so that the store compares what it holds.
            if self.users.replace_groups(&user.id, &before, &after).await? {
                return Ok(GroupChange {
                    before: sorted_before,
                    user: User {
                        groups: after,
                        ..user
                    },
                });
            }
        }
        Err(AccountError::GroupsBusy)
    }

    /// Whether `user`, as [`Accounts::authenticate`] returned it, may still
    /// sign in: the account exists, is not disabled, and neither its
    /// password nor its groups have changed since. Asked after the session
    /// is created and before its token is handed out: a disable, a password
    /// change or a group removal that ends the user's sessions between the
    /// password check and the session's creation would otherwise miss the
    /// new session, which would keep the old groups (docs/security.md).
    ///
    /// # Errors
    /// A store error.
    pub async fn still_signs_in(&self, user: &User) -> Result<bool, AccountError> {
        Ok(self.users.user_by_id(&user.id).await?.is_some_and(|now| {
            !now.disabled && now.password_hash == user.password_hash && now.groups == user.groups
        }))
    }

    /// The user with this name.
    ///
    /// # Errors
    /// [`AccountError::UnknownUser`] or a store error.
    pub async fn user(&self, name: &str) -> Result<User, AccountError> {
        self.users
            .user_by_name(name)
            .await?
            .ok_or(AccountError::UnknownUser)
    }

    /// All users, by name.
    ///
    /// # Errors
    /// A store error.
    pub async fn list(&self) -> Result<Vec<User>, AccountError> {
        Ok(self.users.list_users().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_parameters_are_refused() {
        let weak = PasswordParams {
            memory_kib: 4096,
            ..PasswordParams::OWASP
        };
        assert_eq!(
            Passwords::with_params(weak, 1).unwrap_err(),
            PasswordParamsError::BelowMinimum
        );
        let one_pass = PasswordParams {
            iterations: 1,
            ..PasswordParams::OWASP
        };
        assert!(Passwords::with_params(one_pass, 1).is_err());
        assert_eq!(
            Passwords::with_params(PasswordParams::OWASP, 0).unwrap_err(),
            PasswordParamsError::ZeroConcurrency
        );
    }

    #[tokio::test]
    async fn hashes_are_argon2id_with_owasp_parameters() {
        let passwords = Passwords::new();
        let phc = passwords.hash("correct horse").await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(!phc.contains("correct horse"));
        assert_eq!(
            passwords.verify(&phc, "correct horse").await.unwrap(),
            Verification::Match {
                needs_rehash: false
            }
        );
        assert_eq!(
            passwords.verify(&phc, "wrong horse").await.unwrap(),
            Verification::Mismatch
        );
    }

    #[tokio::test]
    async fn stronger_parameters_ask_for_a_rehash() {
        let old = Passwords::new();
        let phc = old.hash("correct horse").await.unwrap();
        let stronger = PasswordParams {
            iterations: 3,
            ..PasswordParams::OWASP
        };
        let new = Passwords::with_params(stronger, 1).unwrap();
        assert_eq!(
            new.verify(&phc, "correct horse").await.unwrap(),
            Verification::Match { needs_rehash: true }
        );
    }

    #[tokio::test]
    async fn garbage_hashes_and_passwords_are_errors_not_panics() {
        let passwords = Passwords::new();
        assert!(matches!(
            passwords.verify("not a phc string", "whatever1").await,
            Err(AccountError::CorruptHash)
        ));
        assert!(matches!(
            passwords.hash("short").await,
            Err(AccountError::PasswordTooShort)
        ));
        let huge = "x".repeat(MAX_PASSWORD_BYTES + 1);
        assert!(matches!(
            passwords.hash(&huge).await,
            Err(AccountError::PasswordTooLong)
        ));
        let phc = passwords.hash("correct horse").await.unwrap();
        assert_eq!(
            passwords.verify(&phc, &huge).await.unwrap(),
            Verification::Mismatch
        );
    }

    /// Hashes made here verify with the `argon2` crate's own code and the
    /// other way round, whatever the buffer held before (other passwords,
    /// other parameters, other Argon2 variants).
    #[tokio::test]
    async fn pooled_hashing_agrees_with_the_argon2_crate() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let passwords = Passwords::with_params(PasswordParams::OWASP, 1).unwrap();
        let ours = passwords.hash("correct horse").await.unwrap();
        let reference = Argon2::default();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(reference.verify_password(b"correct horse", &parsed).is_ok());
        assert!(reference.verify_password(b"wrong horse", &parsed).is_err());

        let bigger = Params::new(24 * 1024, 3, 2, Some(40)).unwrap();
        for algorithm in [Algorithm::Argon2id, Algorithm::Argon2i, Algorithm::Argon2d] {
            for params in [Params::default(), bigger.clone()] {
                let theirs = Argon2::new(algorithm, Version::V0x13, params)
                    .hash_password(b"correct horse", &SaltString::generate(&mut OsRng))
                    .unwrap()
                    .to_string();
                for (password, expected) in [
                    ("wrong horse", false),
                    ("correct horse", true),
                    ("correct horsf", false),
                ] {
                    let matched = matches!(
                        passwords.verify(&theirs, password).await.unwrap(),
                        Verification::Match { .. }
                    );
                    assert_eq!(matched, expected, "{theirs} {password}");
                }
            }
        }
        // Version 0x10 hashes, which differ in how passes combine.
        let old = Argon2::new(Algorithm::Argon2id, Version::V0x10, Params::default())
            .hash_password(b"correct horse", &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string();
        assert_eq!(
            passwords.verify(&old, "correct horse").await.unwrap(),
            Verification::Match { needs_rehash: true }
        );
        assert_eq!(
            passwords.verify(&old, "wrong horse").await.unwrap(),
            Verification::Mismatch
        );
    }

    /// Many hashes at once take at most one buffer per permit, each of
    /// the parameters' size, and keep them for the next ones.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hashing_memory_is_one_buffer_per_permit() {
        let passwords = Passwords::with_params(PasswordParams::OWASP, 2).unwrap();
        let phc = passwords.hash("correct horse").await.unwrap();
        let attempts: Vec<_> = (0..6)
            .map(|_| {
                let passwords = passwords.clone();
                let phc = phc.clone();
                tokio::spawn(async move { passwords.verify(&phc, "wrong horse").await })
            })
            .collect();
        for attempt in attempts {
            assert_eq!(attempt.await.unwrap().unwrap(), Verification::Mismatch);
        }
        let buffers = passwords.buffers.lock();
        assert!(
            (1..=2).contains(&buffers.len()),
            "{} buffers",
            buffers.len()
        );
        let blocks = (PasswordParams::OWASP.memory_kib) as usize;
        for buffer in buffers.iter() {
            assert_eq!(buffer.len(), blocks);
        }
    }

    /// Buffers left idle for a sweep period are freed (the sweeper task
    /// calls `sweep_once` every `IDLE_RELEASE`); the next hash makes a
    /// new one.
    #[tokio::test]
    async fn idle_hashing_memory_is_given_back() {
        let passwords = Passwords::with_params(PasswordParams::OWASP, 1).unwrap();
        let phc = passwords.hash("correct horse").await.unwrap();
        assert!(passwords.buffers.sweeping.load(Ordering::Relaxed));
        passwords.buffers.sweep_once();
        assert_eq!(passwords.buffers.lock().len(), 1, "used in this period");
        passwords.buffers.sweep_once();
        assert_eq!(passwords.buffers.lock().len(), 0, "an idle buffer is kept");
        assert_eq!(
            passwords.verify(&phc, "correct horse").await.unwrap(),
            Verification::Match {
                needs_rehash: false
            }
        );
        assert_eq!(passwords.buffers.lock().len(), 1);
    }

    /// Every foreign format verifies under the permits and asks for a
    /// rehash; a wrong password is a mismatch; a hostile one is unreadable.
    #[tokio::test]
    async fn foreign_hashes_match_and_ask_for_a_rehash() {
        let passwords = Passwords::with_params(PasswordParams::OWASP, 1).unwrap();
        for (hash, _) in imported_hashes::tests::VECTORS {
            assert_eq!(
                passwords.verify(hash, "correct horse").await.unwrap(),
                Verification::Match { needs_rehash: true },
                "{hash}"
            );
            assert_eq!(
                passwords.verify(hash, "wrong horse").await.unwrap(),
                Verification::Mismatch,
                "{hash}"
            );
        }
        // Django's argon2 is a PHC string behind "argon2": verified as
        // one, and rehashed to drop the prefix even with today's parameters.
        let ours = passwords.hash("correct horse").await.unwrap();
        let django = format!("argon2{ours}");
        assert_eq!(
            passwords.verify(&django, "correct horse").await.unwrap(),
            Verification::Match { needs_rehash: true }
        );
        assert_eq!(
            passwords.verify(&django, "wrong horse").await.unwrap(),
            Verification::Mismatch
        );
        for hostile in [
            "pbkdf2:sha256:900000000$salt$a75b12e2918c9e71fec96ebf6c2340d934fe96999392749c04e3d7869eeadcfc",
            "$2b$31$abcdefghijklmnopqrstuujydOTSfIH/d5oUHpsygqV5X9xJLQc6e",
            "$argon2id$v=19$m=4194304,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
        ] {
            assert!(matches!(
                passwords.verify(hostile, "correct horse").await,
                Err(AccountError::CorruptHash)
            ));
        }
    }

    #[test]
    fn parameters_above_the_verification_bounds_are_refused() {
        let huge = PasswordParams {
            memory_kib: imported_hashes::MAX_ARGON2_MEMORY_KIB + 1,
            ..PasswordParams::OWASP
        };
        assert_eq!(
            Passwords::with_params(huge, 1).unwrap_err(),
            PasswordParamsError::AboveMaximum
        );
    }

    #[test]
    fn groups_are_checked_sorted_and_deduplicated() {
        let groups = |list: &[&str]| list.iter().map(|g| (*g).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            check_groups(&groups(&["ops", "admins", "ops", "team:eu-1.a_b"])).unwrap(),
            groups(&["admins", "ops", "team:eu-1.a_b"])
        );
        for bad in ["", "a b", "a,b", "ä", &"g".repeat(65), "x\n", "a@b"] {
            assert!(check_groups(&groups(&[bad])).is_err(), "{bad:?}");
        }
        let many: Vec<String> = (0..=MAX_GROUPS).map(|i| format!("g{i}")).collect();
        assert!(check_groups(&many).is_err());
        assert!(check_groups(&many[..MAX_GROUPS]).is_ok());
        assert_eq!(groups_from_stored(&groups_to_stored(&many)), many);
        assert!(groups_from_stored("").is_empty());
    }

    /// Two sign-ins to imported names run one after the other, though the
    /// permits would let both run: their memory is not bounded by `m`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn foreign_hashes_verify_one_at_a_time() {
        // Werkzeug 3.1.8, generate_password_hash("correct horse", "pbkdf2:sha256:300000").
        const SLOW: &str = "pbkdf2:sha256:300000$wWvbJY3ToZJSRdtG$d03b03f4fe04a1d5c76804349545cc40fd480f3acb0cf32dc7fbf67d1f0b9e17";
        let passwords = Passwords::with_params(PasswordParams::OWASP, 3).unwrap();
        let verify =
            |p: Passwords| tokio::spawn(async move { p.verify(SLOW, "correct horse").await });
        let first = verify(passwords.clone());
        let second = verify(passwords.clone());
        // Wait until one of them holds the gate, then watch the permits
        // while it works: never more than one taken.
        let mut busy = 0;
        for _ in 0..2_000 {
            if passwords.heavy.available_permits() == 0 {
                busy += 1;
                assert!(
                    passwords.permits.available_permits() >= 2,
                    "two foreign verifications ran at once"
                );
            }
            if first.is_finished() && second.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(busy > 0, "the gate was never seen taken");
        for task in [first, second] {
            assert_eq!(
                task.await.unwrap().unwrap(),
                Verification::Match { needs_rehash: true }
            );
        }
        // A sign-in dropped mid-verification (the client went away) keeps
        // the gate until its work on the blocking pool is done.
        let dropped = verify(passwords.clone());
        for _ in 0..2_000 {
            if passwords.heavy.available_permits() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(passwords.heavy.available_permits(), 0, "never started");
        dropped.abort();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            passwords.heavy.available_permits(),
            0,
            "the gate opened while the dropped verification still ran"
        );
        for _ in 0..5_000 {
            if passwords.heavy.available_permits() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(
            passwords.heavy.available_permits(),
            1,
            "the gate never reopened"
        );
        // signoff's own hashes do not wait for the gate (a timeout, so
        // that waiting fails instead of hanging).
        let own = passwords.hash("correct horse battery").await.unwrap();
        let gate = passwords.heavy_gate().await.unwrap();
        let verified = tokio::time::timeout(
            Duration::from_secs(10),
            passwords.verify(&own, "correct horse battery"),
        )
        .await
        .expect("an own hash waited for the gate");
        assert!(matches!(verified, Ok(Verification::Match { .. })));
        // An Argon2 hash with more memory than this node's does wait.
        let heavier = PasswordParams {
            memory_kib: 2 * PasswordParams::OWASP.memory_kib,
            ..PasswordParams::OWASP
        };
        let big = Passwords::with_params(heavier, 1)
            .unwrap()
            .hash("correct horse battery")
            .await
            .unwrap();
        let waiting = {
            let passwords = passwords.clone();
            tokio::spawn(async move { passwords.verify(&big, "correct horse battery").await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !waiting.is_finished(),
            "a heavier Argon2 hash skipped the gate"
        );
        drop(gate);
        assert!(matches!(
            waiting.await.unwrap(),
            Ok(Verification::Match { .. })
        ));
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|g| (*g).to_owned()).collect()
    }

    /// Accounts on a memory store, with alice in `groups` (a cheap hash:
    /// these tests never sign in).
    async fn alice_in(groups: &[&str]) -> (Accounts, crate::MemoryStore, User) {
        let store = crate::MemoryStore::new();
        let alice = User {
            id: UserId::new("u-alice"),
            name: "alice".to_owned(),
            password_hash: "$argon2id$unused".to_owned(),
            disabled: false,
            groups: strings(groups),
            created_at: Timestamp::from_millis(1),
        };
        store.insert_user(&alice).await.unwrap();
        let accounts = Accounts::new(Arc::new(store.clone()), Passwords::new());
        (accounts, store, alice)
    }

    #[tokio::test]
    async fn change_groups_adds_removes_and_says_what_changed() {
        let (accounts, store, alice) = alice_in(&["ops", "staff"]).await;
        let change = accounts
            .change_groups("alice", &strings(&["admins", "ops"]), &[])
            .await
            .unwrap();
        assert_eq!(change.before, ["ops", "staff"]);
        assert_eq!(change.after(), ["admins", "ops", "staff"]);
        assert_eq!(change.added(), ["admins"]);
        assert!(change.removed().is_empty());
        assert!(!change.removed_any() && change.changed());
        assert_eq!(change.user.id, alice.id);
        let stored = store.user_by_id(&alice.id).await.unwrap().unwrap();
        assert_eq!(stored.groups, ["admins", "ops", "staff"]);

        let change = accounts
            .change_groups("alice", &[], &strings(&["staff", "nowhere"]))
            .await
            .unwrap();
        assert_eq!(change.after(), ["admins", "ops"]);
        assert_eq!(change.removed(), ["staff"]);
        assert!(change.removed_any());

        // Nothing to do: a group not held, a group held.
        let change = accounts
            .change_groups("alice", &strings(&["ops"]), &strings(&["staff"]))
            .await
            .unwrap();
        assert!(!change.changed() && !change.removed_any());
        assert_eq!(change.after(), ["admins", "ops"]);
    }

    #[tokio::test]
    async fn change_groups_refuses_bad_input_and_changes_nothing() {
        let (accounts, store, alice) = alice_in(&["ops"]).await;
        for (add, remove) in [
            (strings(&["bad group"]), vec![]),
            (vec![], strings(&[""])),
            (vec![], strings(&["a,b"])),
            (strings(&[&"g".repeat(MAX_GROUP_BYTES + 1)]), vec![]),
        ] {
            assert!(
                matches!(
                    accounts.change_groups("alice", &add, &remove).await,
                    Err(AccountError::InvalidGroup)
                ),
                "{add:?} {remove:?}"
            );
        }
        assert!(matches!(
            accounts
                .change_groups("alice", &strings(&["x"]), &strings(&["x"]))
                .await,
            Err(AccountError::GroupAddedAndRemoved)
        ));
        let too_many: Vec<String> = (0..MAX_GROUPS).map(|i| format!("g{i}")).collect();
        assert!(matches!(
            accounts.change_groups("alice", &too_many, &[]).await,
            Err(AccountError::InvalidGroup)
        ));
        assert!(matches!(
            accounts
                .change_groups("nobody", &strings(&["ops"]), &[])
                .await,
            Err(AccountError::UnknownUser)
        ));
        let stored = store.user_by_id(&alice.id).await.unwrap().unwrap();
        assert_eq!(stored.groups, ["ops"]);
    }

    /// A memory store where another change lands between each read and the
    /// first `times` compare-and-sets, as two admins at once would.
    struct Racing {
        inner: crate::MemoryStore,
        times: std::sync::atomic::AtomicUsize,
    }

    #[async_trait]
    impl UserStore for Racing {
        async fn insert_user(&self, user: &User) -> Result<(), StoreError> {
            self.inner.insert_user(user).await
        }
        async fn user_by_name(&self, name: &str) -> Result<Option<User>, StoreError> {
            self.inner.user_by_name(name).await
        }
        async fn user_by_id(&self, id: &UserId) -> Result<Option<User>, StoreError> {
            self.inner.user_by_id(id).await
        }
        async fn set_password_hash(&self, id: &UserId, phc: &str) -> Result<bool, StoreError> {
            self.inner.set_password_hash(id, phc).await
        }
        async fn replace_password_hash(
            &self,
            id: &UserId,
            expected: &str,
            phc: &str,
        ) -> Result<bool, StoreError> {
            self.inner.replace_password_hash(id, expected, phc).await
        }
        async fn set_disabled(&self, id: &UserId, disabled: bool) -> Result<bool, StoreError> {
            self.inner.set_disabled(id, disabled).await
        }
        async fn replace_groups(
            &self,
            id: &UserId,
            expected: &[String],
            groups: &[String],
        ) -> Result<bool, StoreError> {
            let left = self.times.load(Ordering::SeqCst);
            if left > 0 {
                self.times.store(left - 1, Ordering::SeqCst);
                let now = self.inner.user_by_id(id).await?.unwrap().groups;
                let mut theirs = now.clone();
                theirs.push(format!("other{left}"));
                assert!(self.inner.replace_groups(id, &now, &theirs).await?);
            }
            self.inner.replace_groups(id, expected, groups).await
        }
        async fn list_users(&self) -> Result<Vec<User>, StoreError> {
            self.inner.list_users().await
        }
    }

    #[tokio::test]
    async fn change_groups_loses_no_concurrent_change() {
        let (_, inner, alice) = alice_in(&["ops"]).await;
        let racing = Arc::new(Racing {
            inner: inner.clone(),
            times: std::sync::atomic::AtomicUsize::new(2),
        });
        let accounts = Accounts::new(racing.clone(), Passwords::new());
        let change = accounts
            .change_groups("alice", &strings(&["admins"]), &strings(&["ops"]))
            .await
            .unwrap();
        // Both other changes are kept, and this one applied on top.
        assert_eq!(change.after(), ["admins", "other1", "other2"]);
        assert_eq!(change.before, ["ops", "other1", "other2"]);
        assert!(change.removed_any());
        let stored = inner.user_by_id(&alice.id).await.unwrap().unwrap();
        assert_eq!(stored.groups, change.after());

        // Changes that keep coming: given up on, and said so.
        racing
            .times
            .store(GROUP_CHANGE_TRIES, std::sync::atomic::Ordering::SeqCst);
        assert!(matches!(
            accounts
                .change_groups("alice", &strings(&["late"]), &[])
                .await,
            Err(AccountError::GroupsBusy)
        ));
        let stored = inner.user_by_id(&alice.id).await.unwrap().unwrap();
        assert!(!stored.groups.contains(&"late".to_owned()));
    }

    /// A sign-in that read the user before a group change no longer signs
    /// in: its session would carry the old groups.
    #[tokio::test]
    async fn a_group_change_stops_a_sign_in_in_progress() {
        let (accounts, _store, alice) = alice_in(&["admins"]).await;
        assert!(accounts.still_signs_in(&alice).await.unwrap());
        accounts
            .change_groups("alice", &[], &strings(&["admins"]))
            .await
            .unwrap();
        assert!(!accounts.still_signs_in(&alice).await.unwrap());
        let now = accounts.user("alice").await.unwrap();
        assert!(accounts.still_signs_in(&now).await.unwrap());
        accounts
            .change_groups("alice", &strings(&["staff"]), &[])
            .await
            .unwrap();
        assert!(!accounts.still_signs_in(&now).await.unwrap());
    }

    #[test]
    fn default_concurrency_leaves_a_core() {
        assert_eq!(default_concurrency(1), 1);
        assert_eq!(default_concurrency(2), 1);
        assert_eq!(default_concurrency(8), 7);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("alice").is_ok());
        assert!(check_name("a.b+c@example.com").is_ok());
        for bad in ["", "a b", "ä", "x\n", &"a".repeat(65), "a/b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
