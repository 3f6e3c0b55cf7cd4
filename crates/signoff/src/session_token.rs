//! Session tokens, the digests that identify them in a store, and public handles.
//!
//! The whole scheme, top to bottom:
//!
//! 1. A [`SessionToken`] is 256 bits from the operating system's CSPRNG,
//!    followed by a one-byte key id and a 120-bit seal: a keyed MAC of the
//!    random part under a server key ([`crate::session_keys`]). The 48
//!    bytes are encoded as 64 characters of unpadded URL-safe base64. It is
//!    the only credential: it goes into the cookie and nowhere else.
//! 2. A [`SessionId`] is the SHA-256 digest of the token's 32 random bytes.
//!    The store keys sessions by it, so a leaked store yields no usable
//!    token, and looking a session up by digest gives an attacker no timing
//!    signal about how close a guessed token came. A token whose seal does
//!    not verify is refused before any store is asked, so made-up tokens
//!    cost memory-speed work and never a store read (docs/security.md).
//! 3. A [`SessionHandle`] is 72 independent random bits that name a session
//!    in listings, logs and the `X-Signoff-Session` header. It is unrelated
//!    to the token, so it can never be turned back into one, and it stays the
//!    same when the token rotates.
//!
//! Parsing is strict: anything but exactly 64 canonical base64url characters
//! is refused with a [`TokenError`] before a store is ever asked; the seal
//! is checked next, by [`crate::SessionKeys`], also before the store.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Number of random bytes in a session token.
pub(crate) const RANDOM_BYTES: usize = 32;
/// Number of bytes of a token's seal (a truncated HMAC-SHA256).
pub(crate) const SEAL_BYTES: usize = 15;
/// Number of bytes in a whole token: random part, key id, seal.
const TOKEN_BYTES: usize = RANDOM_BYTES + 1 + SEAL_BYTES;
/// Length of a token's text form: 48 bytes in unpadded base64.
pub const TOKEN_LEN: usize = 64;
/// Number of random bytes in a session handle.
pub(crate) const HANDLE_BYTES: usize = 9;
/// Length of a handle's text form: 9 bytes in unpadded base64.
pub const HANDLE_LEN: usize = 12;

/// Why a string is not a valid token or handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The value was empty.
    #[error("the token is empty")]
    Empty,
    /// The value does not have the one length a token can have.
    #[error("the token has {found} characters, not {expected}")]
    WrongLength {
        /// Length the value had (counted up to a small cap for oversized input).
        found: usize,
        /// Length a valid value has.
        expected: usize,
    },
    /// The value contains a character outside the URL-safe base64 alphabet.
    #[error("the token contains a character outside base64url")]
    InvalidCharacter,
    /// The value decodes, but is not the canonical encoding of its bytes.
    #[error("the token is not canonically encoded")]
    NonCanonical,
    /// The token is well formed, but its seal does not verify under any
    /// key this deployment holds: it was made up, tampered with, issued by
    /// another deployment, or its key was retired.
    #[error("the token was not issued here (its seal does not verify)")]
    BadSeal,
}

/// Decodes exactly `N` bytes from unpadded, canonical base64url text.
fn decode_fixed<const N: usize>(text: &str, expected_len: usize) -> Result<[u8; N], TokenError> {
    if text.is_empty() {
        return Err(TokenError::Empty);
    }
    if text.len() != expected_len {
        return Err(TokenError::WrongLength {
            found: text.len(),
            expected: expected_len,
        });
    }
    let mut out = [0u8; N];
    // Decoding checks the alphabet itself (every request parses a token:
    // no second pass over the good ones); a failure is then told apart.
    // With the alphabet and length right, the only failure left would be
    // non-zero trailing bits: a second spelling of the same bytes. Tokens
    // (48 bytes) and handles (9) fill their characters exactly, so it
    // cannot happen today; the check stays for any size that would not.
    match URL_SAFE_NO_PAD.decode_slice(text, &mut out) {
        Ok(n) if n == N => Ok(out),
        _ if !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Err(TokenError::InvalidCharacter)
        }
        _ => Err(TokenError::NonCanonical),
    }
}

/// A token's text, of the one length a token has (both callers hold one).
fn ascii(text: &[u8]) -> [u8; TOKEN_LEN] {
    debug_assert!(text.len() == TOKEN_LEN && text.is_ascii());
    let mut out = [0u8; TOKEN_LEN];
    let n = text.len().min(TOKEN_LEN);
    out[..n].copy_from_slice(&text[..n]);
    out
}

/// The secret a client presents to prove it holds a session.
///
/// It never appears in `Debug` output and is never written to a store; only
/// its [`SessionId`] is. Tokens are issued by [`crate::SessionKeys::issue`]
/// (through [`crate::Sessions`]); [`SessionToken::parse`] checks the shape
/// only, and [`crate::SessionKeys::verify`] the seal.
///
/// ```
/// use signoff::{SessionKeys, SessionToken, Timestamp};
///
/// let keys = SessionKeys::ephemeral();
/// let token = keys.issue(Timestamp::from_millis(0));
/// let text = token.expose().to_owned();
/// let parsed = SessionToken::parse(&text).unwrap();
/// assert_eq!(parsed.id(), token.id());
/// assert!(keys.verify(&parsed));
/// assert!(!SessionKeys::ephemeral().verify(&parsed));
/// assert!(!format!("{token:?}").contains(&text));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken {
    // Base64url: ASCII, so always a `str` (kept inline: parsing a cookie
    // costs no allocation).
    text: [u8; TOKEN_LEN],
    id: SessionId,
    random: [u8; RANDOM_BYTES],
    kid: u8,
    seal: [u8; SEAL_BYTES],
}

impl SessionToken {
    /// Parses a token presented by a client: its shape only. The seal is
    /// checked by [`crate::SessionKeys::verify`], which every
    /// [`crate::Sessions`] method that takes a token's text does before it
    /// asks the store.
    ///
    /// # Errors
    /// A [`TokenError`] unless `text` is exactly 64 canonical base64url characters.
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        let bytes = decode_fixed::<TOKEN_BYTES>(text, TOKEN_LEN)?;
        let mut random = [0u8; RANDOM_BYTES];
        random.copy_from_slice(&bytes[..RANDOM_BYTES]);
        let mut seal = [0u8; SEAL_BYTES];
        seal.copy_from_slice(&bytes[RANDOM_BYTES + 1..]);
        Ok(Self {
            text: ascii(text.as_bytes()),
            id: SessionId(Sha256::digest(random).into()),
            random,
            kid: bytes[RANDOM_BYTES],
            seal,
        })
    }

    /// A token of fresh random bytes, sealed by `seal_with` under `kid`.
    pub(crate) fn sealed(
        kid: u8,
        seal_with: impl FnOnce(&[u8; RANDOM_BYTES], u8) -> [u8; SEAL_BYTES],
    ) -> Self {
        let mut random = [0u8; RANDOM_BYTES];
        OsRng.fill_bytes(&mut random);
        let seal = seal_with(&random, kid);
        let mut bytes = [0u8; TOKEN_BYTES];
        bytes[..RANDOM_BYTES].copy_from_slice(&random);
        bytes[RANDOM_BYTES] = kid;
        bytes[RANDOM_BYTES + 1..].copy_from_slice(&seal);
        Self {
            text: ascii(URL_SAFE_NO_PAD.encode(bytes).as_bytes()),
            id: SessionId(Sha256::digest(random).into()),
            random,
            kid,
            seal,
        }
    }

    /// The text to hand to the client (for example as a cookie value).
    pub fn expose(&self) -> &str {
        std::str::from_utf8(&self.text).unwrap_or_default()
    }

    /// The digest the store keys this token's session by.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The random part, the key id and the seal, for checking the seal.
    pub(crate) fn parts(&self) -> (&[u8; RANDOM_BYTES], u8, &[u8; SEAL_BYTES]) {
        (&self.random, self.kid, &self.seal)
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(<redacted>)")
    }
}

/// The SHA-256 digest of a [`SessionToken`]: a session's key in a store.
///
/// It is not a credential (a client cannot present it), but it is still
/// kept out of logs in full; `Debug` shows only a short prefix.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId([u8; 32]);

impl SessionId {
    /// Wraps digest bytes read back from a store.
    pub fn from_digest(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The digest bytes, for writing to a store.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SessionId({:02x}{:02x}{:02x}{:02x}…)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

/// A session's public name: safe to show, log and send upstream.
///
/// ```
/// use signoff::SessionHandle;
///
/// let handle = SessionHandle::generate();
/// assert_eq!(handle.to_string().len(), 12);
/// assert_eq!(handle.to_string().parse::<SessionHandle>().unwrap(), handle);
/// assert!("not a handle".parse::<SessionHandle>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionHandle([u8; HANDLE_BYTES]);

impl SessionHandle {
    /// Draws a new handle from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = [0u8; HANDLE_BYTES];
        OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// Wraps handle bytes read back from a store.
    ///
    /// # Errors
    /// [`TokenError::WrongLength`] if `bytes` is not 9 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, TokenError> {
        let array: [u8; HANDLE_BYTES] = bytes.try_into().map_err(|_| TokenError::WrongLength {
            found: bytes.len(),
            expected: HANDLE_BYTES,
        })?;
        Ok(Self(array))
    }

    /// The raw bytes, for writing to a store.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::str::FromStr for SessionHandle {
    type Err = TokenError;

    fn from_str(text: &str) -> Result<Self, TokenError> {
        decode_fixed::<HANDLE_BYTES>(text, HANDLE_LEN).map(Self)
    }
}

impl fmt::Display for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // On the stack: the gateway shows a handle to its upstream on
        // every proxied request.
        let mut text = [0u8; HANDLE_LEN];
        let len = URL_SAFE_NO_PAD
            .encode_slice(self.0, &mut text)
            .map_err(|_| fmt::Error)?;
        f.write_str(std::str::from_utf8(&text[..len]).map_err(|_| fmt::Error)?)
    }
}

impl serde::Serialize for SessionHandle {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SessionHandle {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionHandle({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token of the right shape; its seal is a fixed pattern (seals are
    /// checked in `session_keys`).
    fn token() -> SessionToken {
        SessionToken::sealed(7, |_, _| [0xa5; SEAL_BYTES])
    }

    #[test]
    fn token_is_256_random_bits_a_key_id_and_a_seal_in_64_chars() {
        let token = token();
        assert_eq!(token.expose().len(), TOKEN_LEN);
        let raw = URL_SAFE_NO_PAD.decode(token.expose()).unwrap();
        assert_eq!(raw.len(), 48);
        let (random, kid, seal) = token.parts();
        assert_eq!(&raw[..32], random);
        assert_eq!(raw[32], kid);
        assert_eq!(kid, 7);
        assert_eq!(&raw[33..], seal);
    }

    #[test]
    fn random_parts_do_not_repeat() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            assert!(seen.insert(*token().parts().0));
        }
    }

    #[test]
    fn id_is_sha256_of_the_random_part() {
        let token = token();
        let raw = URL_SAFE_NO_PAD.decode(token.expose()).unwrap();
        let digest: [u8; 32] = Sha256::digest(&raw[..32]).into();
        assert_eq!(token.id().as_bytes(), &digest);
    }

    #[test]
    fn parse_round_trips() {
        let token = token();
        let parsed = SessionToken::parse(token.expose()).unwrap();
        assert_eq!(parsed, token);
    }

    #[test]
    fn empty_token_is_refused() {
        assert_eq!(SessionToken::parse(""), Err(TokenError::Empty));
    }

    #[test]
    fn truncated_token_is_refused() {
        let token = token();
        let text = &token.expose()[..63];
        assert_eq!(
            SessionToken::parse(text),
            Err(TokenError::WrongLength {
                found: 63,
                expected: 64
            })
        );
    }

    #[test]
    fn tokens_of_the_old_43_character_format_are_refused() {
        let old = URL_SAFE_NO_PAD.encode([3u8; 32]);
        assert_eq!(old.len(), 43);
        assert_eq!(
            SessionToken::parse(&old),
            Err(TokenError::WrongLength {
                found: 43,
                expected: 64
            })
        );
    }

    #[test]
    fn oversized_token_is_refused() {
        let big = "A".repeat(1 << 20);
        assert!(matches!(
            SessionToken::parse(&big),
            Err(TokenError::WrongLength { .. })
        ));
    }

    #[test]
    fn standard_base64_and_padding_are_refused() {
        let token = token();
        let mut plus = token.expose().to_owned();
        plus.replace_range(0..1, "+");
        assert_eq!(
            SessionToken::parse(&plus),
            Err(TokenError::InvalidCharacter)
        );
        let mut padded = token.expose()[..63].to_owned();
        padded.push('=');
        assert_eq!(
            SessionToken::parse(&padded),
            Err(TokenError::InvalidCharacter)
        );
    }

    #[test]
    fn non_ascii_is_refused_without_panicking() {
        // 64 bytes, but a multi-byte character in the middle.
        let text = format!("{}é{}", "A".repeat(30), "A".repeat(32));
        assert_eq!(text.len(), 64);
        assert_eq!(
            SessionToken::parse(&text),
            Err(TokenError::InvalidCharacter)
        );
    }

    #[test]
    fn every_byte_outside_base64url_is_refused_anywhere() {
        // Decoding is the only alphabet check on a good token: every other
        // byte, at the start, the middle and the end, must be refused.
        let good = token().expose().to_owned();
        for b in 0u8..=127 {
            let ok = b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
            for at in [0, 31, 62, 63] {
                let mut bytes = good.clone().into_bytes();
                bytes[at] = b;
                let text = String::from_utf8(bytes).unwrap();
                let parsed = SessionToken::parse(&text);
                if ok {
                    assert_eq!(parsed.map(|t| t.expose().to_owned()), Ok(text));
                } else {
                    assert_eq!(parsed, Err(TokenError::InvalidCharacter), "{b:#x} at {at}");
                }
            }
        }
    }

    #[test]
    fn every_64_character_text_parses_to_itself() {
        // 48 bytes are exactly 64 characters: no spare bits, so no second
        // spelling of the same bytes exists, and parse keeps the text.
        let text = "A".repeat(64);
        assert_eq!(SessionToken::parse(&text).unwrap().expose(), text);
    }

    #[test]
    fn debug_never_shows_the_token() {
        let token = token();
        let shown = format!("{token:?}");
        assert!(!shown.contains(token.expose()));
    }

    #[test]
    fn handle_round_trips_and_refuses_bad_input() {
        let handle = SessionHandle::generate();
        let text = handle.to_string();
        assert_eq!(text.len(), HANDLE_LEN);
        assert_eq!(text.parse::<SessionHandle>().unwrap(), handle);
        assert_eq!(text, URL_SAFE_NO_PAD.encode(handle.as_bytes()));
        let ones = SessionHandle::from_slice(&[0xff; HANDLE_BYTES]).unwrap();
        assert_eq!(ones.to_string(), "____________");
        assert!(SessionHandle::from_slice(&[0u8; 8]).is_err());
        assert!("short".parse::<SessionHandle>().is_err());
        // 12 characters carry exactly 9 bytes: no spare bits either.
        assert!("AAAAAAAAAAA_".parse::<SessionHandle>().is_ok());
    }
}
