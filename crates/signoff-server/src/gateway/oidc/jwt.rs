//! The provider's signed tokens, checked in full: ID tokens at sign-in
//! (OpenID Connect Core 1.0 §3.1.3.7) and logout tokens from back-channel
//! logout (OpenID Connect Back-Channel Logout 1.0 §2.6). Signatures with
//! asymmetric algorithms only (never `none`, never a shared-secret HMAC),
//! by a key of the provider's own set.

use std::collections::HashSet;

use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::provider::ProviderState;

/// The algorithms a provider may sign with.
const ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The back-channel logout event's name.
pub(super) const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// How far a provider's clock may be from ours.
const LEEWAY_SECS: u64 = 60;
/// The oldest logout token taken (by its `iat`).
pub(super) const MAX_LOGOUT_TOKEN_AGE_SECS: i64 = 5 * 60;
/// The longest token read at all.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Why a token was refused (shown to the provider and in the log, never
/// the token).
pub(super) type Refusal = &'static str;

/// The `iss` a token claims, read without checking anything: only to pick
/// the provider whose keys then check it.
pub(super) fn claimed_issuer(token: &str) -> Option<String> {
    use base64::Engine as _;
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    value.get("iss")?.as_str().map(str::to_owned)
}

/// Checks the signature, `iss`, `aud` and (`with_exp`) `exp`; returns the
/// claims and the header's `typ`.
async fn verified(
    provider: &ProviderState,
    token: &str,
    with_exp: bool,
) -> Result<(Map<String, Value>, Option<String>), Refusal> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err("the token is too long");
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| "not a signed JWT")?;
    if !ALGORITHMS.contains(&header.alg) {
        return Err("the token's algorithm is not allowed");
    }
    let jwk = provider
        .key(header.kid.as_deref())
        .await
        .map_err(|_| "no key of the provider has the token's key id")?;
    if let Some(alg) = jwk.common.key_algorithm {
        if format!("{alg:?}") != format!("{:?}", header.alg) {
            return Err("the token's algorithm is not its key's");
        }
    }
    let key =
        jsonwebtoken::DecodingKey::from_jwk(&jwk).map_err(|_| "the provider's key is unusable")?;
    let mut validation = Validation::new(header.alg);
    validation.leeway = LEEWAY_SECS;
    validation.validate_exp = with_exp;
    validation.validate_nbf = true;
    validation.set_issuer(&[provider.config.issuer.as_str()]);
    validation.set_audience(&[provider.config.client_id.as_str()]);
    validation.required_spec_claims = if with_exp {
        HashSet::from(["exp".to_owned(), "iss".to_owned(), "aud".to_owned()])
    } else {
        HashSet::from(["iss".to_owned(), "aud".to_owned()])
    };
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation).map_err(
        |e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => "the token has expired",
            jsonwebtoken::errors::ErrorKind::InvalidIssuer => "the token is from another issuer",
            jsonwebtoken::errors::ErrorKind::InvalidAudience => "the token is for another client",
            jsonwebtoken::errors::ErrorKind::InvalidSignature => "the token's signature is wrong",
            jsonwebtoken::errors::ErrorKind::ImmatureSignature => "the token is not valid yet",
            jsonwebtoken::errors::ErrorKind::MissingRequiredClaim(_) => {
                "the token lacks iss, aud or exp"
            }
            _ => "the token cannot be read",
        },
    )?;
    // Several audiences: the client must also be the authorized party;
    // an `azp` given must be this client in any case.
    let claims = data.claims;
    if let Some(azp) = claims.get("azp") {
        if azp.as_str() != Some(&provider.config.client_id) {
            return Err("the token's azp is another client");
        }
    }
    if let Some(Value::Array(auds)) = claims.get("aud") {
        if auds.len() > 1
            && claims.get("azp").and_then(Value::as_str) != Some(&provider.config.client_id)
        {
            return Err("the token has several audiences and azp is not this client");
        }
    }
    Ok((claims, header.typ))
}

/// `iat` in seconds, present and not in the future.
fn issued_at(claims: &Map<String, Value>, now_secs: i64) -> Result<i64, Refusal> {
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or("the token has no iat")?;
    if iat > now_secs + LEEWAY_SECS as i64 {
        return Err("the token is issued in the future");
    }
    Ok(iat)
}

/// An ID token, checked: signature, `iss`, `aud`/`azp`, `exp`, `iat`,
/// `nonce` (the one this sign-in sent) and `sub`.
pub(super) async fn id_token(
    provider: &ProviderState,
    token: &str,
    nonce: &str,
    now_secs: i64,
) -> Result<Map<String, Value>, Refusal> {
    let (claims, _) = verified(provider, token, true).await?;
    issued_at(&claims, now_secs)?;
    let sent = claims.get("nonce").and_then(Value::as_str).unwrap_or("");
    if sent.is_empty()
        || !bool::from(subtle::ConstantTimeEq::ct_eq(
            sent.as_bytes(),
            nonce.as_bytes(),
        ))
    {
        return Err("the ID token's nonce is not this sign-in's");
    }
    match claims.get("sub").and_then(Value::as_str) {
        Some(sub) if !sub.is_empty() && sub.len() <= 255 => Ok(claims),
        _ => Err("the ID token has no sub"),
    }
}

/// A logout token's meaning: whose sessions end.
#[derive(Debug)]
pub(super) struct Logout {
    pub sub: Option<String>,
    pub sid: Option<String>,
    pub jti: String,
    /// When the provider issued it (seconds).
    pub iat: i64,
}

/// A logout token, checked: signature, `iss`, `aud`, `iat` (not older than
/// [`MAX_LOGOUT_TOKEN_AGE_SECS`]), `exp` if present, `typ` absent or a JWT
/// type, the back-channel event, `sid` or `sub`, no `nonce`, a `jti`.
pub(super) async fn logout_token(
    provider: &ProviderState,
    token: &str,
    now_secs: i64,
) -> Result<Logout, Refusal> {
    let (claims, typ) = verified(provider, token, false).await?;
    if let Some(exp) = claims.get("exp") {
        match exp.as_i64() {
            Some(exp) if exp >= now_secs - LEEWAY_SECS as i64 => {}
            _ => return Err("the token has expired"),
        }
    }
    match typ.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("jwt") | Some("logout+jwt") | Some("application/logout+jwt") => {}
        Some(_) => return Err("the token's typ is not a logout token's"),
    }
    let iat = issued_at(&claims, now_secs)?;
    if iat < now_secs - MAX_LOGOUT_TOKEN_AGE_SECS {
        return Err("the logout token is too old");
    }
    if claims.contains_key("nonce") {
        return Err("a logout token must not carry a nonce");
    }
    match claims.get("events") {
        Some(Value::Object(events))
            if matches!(events.get(LOGOUT_EVENT), Some(Value::Object(_))) => {}
        _ => return Err("the token holds no back-channel logout event"),
    }
    let text = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 255)
            .map(str::to_owned)
    };
    let (sub, sid) = (text("sub"), text("sid"));
    if sub.is_none() && sid.is_none() {
        return Err("the logout token has neither sub nor sid");
    }
    let jti = text("jti").ok_or("the logout token has no jti")?;
    Ok(Logout { sub, sid, jti, iat })
}
