//! Sign-in with OpenID Connect providers (docs/oidc.md): the `--oidc-*`
//! flags and the file's `[oidc]` table for one provider, and
//! `[[oidc.provider]]` tables for more.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{ArgAction, Args};
use serde::Deserialize;

use super::Layer;

/// The flags of one provider, also the keys of the `[oidc]` table.
#[derive(Debug, Default, Clone, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcOptions {
    /// Sign in with this OpenID Connect provider (its issuer URL; its
    /// settings are read from ISSUER/.well-known/openid-configuration)
    /// [file: [oidc] issuer]
    #[arg(
        long = "oidc-issuer",
        env = "SIGNOFF_OIDC_ISSUER",
        value_name = "URL",
        display_order = 46
    )]
    #[serde(rename = "issuer")]
    pub oidc_issuer: Option<String>,
    /// The client ID signoff has at the provider [file: [oidc] client_id]
    #[arg(
        long = "oidc-client-id",
        env = "SIGNOFF_OIDC_CLIENT_ID",
        value_name = "ID",
        display_order = 47
    )]
    #[serde(rename = "client_id")]
    pub oidc_client_id: Option<String>,
    /// A file holding the client secret (read at start)
    /// [file: [oidc] client_secret_file]
    #[arg(
        long = "oidc-client-secret-file",
        env = "SIGNOFF_OIDC_CLIENT_SECRET_FILE",
        value_name = "PATH",
        display_order = 48
    )]
    #[serde(rename = "client_secret_file")]
    pub oidc_client_secret_file: Option<PathBuf>,
    /// The button's name: "Sign in with NAME" [default: the issuer's host]
    /// [file: [oidc] name]
    #[arg(
        long = "oidc-name",
        env = "SIGNOFF_OIDC_NAME",
        value_name = "NAME",
        display_order = 49
    )]
    #[serde(rename = "name")]
    pub oidc_name: Option<String>,
    /// The claim that becomes X-Signoff-User: preferred_username, email or
    /// sub [default: preferred_username] [file: [oidc] user_claim]
    #[arg(
        long = "oidc-user-claim",
        env = "SIGNOFF_OIDC_USER_CLAIM",
        value_name = "CLAIM",
        display_order = 50
    )]
    #[serde(rename = "user_claim")]
    pub oidc_user_claim: Option<String>,
    /// The claim holding the user's groups [default: groups]
    /// [file: [oidc] groups_claim]
    #[arg(
        long = "oidc-groups-claim",
        env = "SIGNOFF_OIDC_GROUPS_CLAIM",
        value_name = "CLAIM",
        display_order = 51
    )]
    #[serde(rename = "groups_claim")]
    pub oidc_groups_claim: Option<String>,
    /// The scopes asked for, space- or comma-separated; openid is always
    /// asked [default: openid profile email] [file: [oidc] scopes]
    #[arg(
        long = "oidc-scopes",
        env = "SIGNOFF_OIDC_SCOPES",
        value_name = "SCOPES",
        value_delimiter = ',',
        display_order = 52
    )]
    #[serde(rename = "scopes")]
    pub oidc_scopes: Option<Vec<String>>,
    /// Only users whose verified email is in one of these domains may sign
    /// in (repeat, or separate with commas) [file: [oidc] allowed_email_domains]
    #[arg(
        long = "oidc-allowed-email-domain",
        env = "SIGNOFF_OIDC_ALLOWED_EMAIL_DOMAINS",
        value_name = "DOMAIN",
        value_delimiter = ',',
        display_order = 53
    )]
    #[serde(rename = "allowed_email_domains")]
    pub oidc_allowed_email_domains: Option<Vec<String>>,
    /// Only users in one of these groups may sign in (repeat, or separate
    /// with commas) [file: [oidc] allowed_groups]
    #[arg(
        long = "oidc-allowed-group",
        env = "SIGNOFF_OIDC_ALLOWED_GROUPS",
        value_name = "GROUP",
        value_delimiter = ',',
        display_order = 54
    )]
    #[serde(rename = "allowed_groups")]
    pub oidc_allowed_groups: Option<Vec<String>>,
    /// Signing out of signoff also signs out at the provider, when it
    /// offers that (RP-initiated logout) [default: true]
    /// [file: [oidc] logout_at_provider]
    #[arg(
        long = "oidc-logout-at-provider",
        env = "SIGNOFF_OIDC_LOGOUT_AT_PROVIDER",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true",
        action = ArgAction::Set,
        display_order = 55
    )]
    #[serde(rename = "logout_at_provider")]
    pub oidc_logout_at_provider: Option<bool>,
    /// Whether local users may sign in with a password beside the
    /// providers [default: true] [file: [oidc] password_sign_in]
    #[arg(
        long = "password-sign-in",
        env = "SIGNOFF_PASSWORD_SIGN_IN",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true",
        action = ArgAction::Set,
        display_order = 56
    )]
    #[serde(rename = "password_sign_in")]
    pub password_sign_in: Option<bool>,
    /// More providers: `[[oidc.provider]]` tables (file only).
    #[arg(skip)]
    #[serde(rename = "provider")]
    pub providers: Option<Vec<ProviderFile>>,
}

impl Layer for OidcOptions {
    fn or(self, below: Self) -> Self {
        Self {
            oidc_issuer: self.oidc_issuer.or(below.oidc_issuer),
            oidc_client_id: self.oidc_client_id.or(below.oidc_client_id),
            oidc_client_secret_file: self
                .oidc_client_secret_file
                .or(below.oidc_client_secret_file),
            oidc_name: self.oidc_name.or(below.oidc_name),
            oidc_user_claim: self.oidc_user_claim.or(below.oidc_user_claim),
            oidc_groups_claim: self.oidc_groups_claim.or(below.oidc_groups_claim),
            oidc_scopes: self.oidc_scopes.or(below.oidc_scopes),
            oidc_allowed_email_domains: self
                .oidc_allowed_email_domains
                .or(below.oidc_allowed_email_domains),
            oidc_allowed_groups: self.oidc_allowed_groups.or(below.oidc_allowed_groups),
            oidc_logout_at_provider: self
                .oidc_logout_at_provider
                .or(below.oidc_logout_at_provider),
            password_sign_in: self.password_sign_in.or(below.password_sign_in),
            providers: self.providers.or(below.providers),
        }
    }
}

/// One `[[oidc.provider]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderFile {
    id: String,
    issuer: String,
    client_id: String,
    client_secret_file: PathBuf,
    name: Option<String>,
    user_claim: Option<String>,
    groups_claim: Option<String>,
    scopes: Option<Vec<String>>,
    allowed_email_domains: Option<Vec<String>>,
    allowed_groups: Option<Vec<String>>,
    logout_at_provider: Option<bool>,
}

/// Which claim names the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserClaim {
    PreferredUsername,
    Email,
    Sub,
}

impl UserClaim {
    /// The claim's name.
    pub fn name(self) -> &'static str {
        match self {
            UserClaim::PreferredUsername => "preferred_username",
            UserClaim::Email => "email",
            UserClaim::Sub => "sub",
        }
    }
}

/// A client secret: never shown by `Debug`.
#[derive(Clone)]
pub struct ClientSecret(String);

impl ClientSecret {
    /// A secret for unit tests.
    #[cfg(test)]
    pub fn for_tests(secret: &str) -> Self {
        Self(secret.to_owned())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSecret(..)")
    }
}

/// One provider, checked.
#[derive(Debug, Clone)]
pub struct Provider {
    /// In URLs and session records: `default` for the flags' provider.
    pub id: String,
    /// "Sign in with NAME".
    pub name: String,
    /// The issuer URL, as the provider's ID tokens must name it.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: ClientSecret,
    pub user_claim: UserClaim,
    pub groups_claim: String,
    /// `openid` first.
    pub scopes: Vec<String>,
    /// Lower case; empty: any.
    pub allowed_email_domains: Vec<String>,
    /// Empty: any.
    pub allowed_groups: Vec<String>,
    pub logout_at_provider: bool,
}

/// The providers and whether passwords still work.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    pub providers: Vec<Provider>,
    pub password_sign_in: bool,
}

impl Default for OidcSettings {
    fn default() -> Self {
        Self {
            providers: Vec::new(),
            password_sign_in: true,
        }
    }
}

impl OidcOptions {
    /// Checks the providers; `insecure_ok` allows an `http://` issuer that
    /// is not on a loopback address.
    pub(super) fn check(self, insecure_ok: bool) -> Result<OidcSettings> {
        let mut providers = Vec::new();
        let given = self.oidc_client_id.is_some()
            || self.oidc_client_secret_file.is_some()
            || self.oidc_name.is_some()
            || self.oidc_user_claim.is_some()
            || self.oidc_groups_claim.is_some()
            || self.oidc_scopes.is_some()
            || self.oidc_allowed_email_domains.is_some()
            || self.oidc_allowed_groups.is_some()
            || self.oidc_logout_at_provider.is_some();
        match self.oidc_issuer {
            Some(issuer) => {
                let (Some(client_id), Some(secret_file)) =
                    (self.oidc_client_id, self.oidc_client_secret_file)
                else {
                    bail!(
                        "--oidc-issuer needs --oidc-client-id and --oidc-client-secret-file (the \
                         client registered at the provider, its redirect URI \
                         PUBLIC_URL/.signoff/oidc/callback)"
                    );
                };
                providers.push(
                    provider(
                        "default",
                        ProviderFile {
                            id: "default".to_owned(),
                            issuer,
                            client_id,
                            client_secret_file: secret_file,
                            name: self.oidc_name,
                            user_claim: self.oidc_user_claim,
                            groups_claim: self.oidc_groups_claim,
                            scopes: self.oidc_scopes,
                            allowed_email_domains: self.oidc_allowed_email_domains,
                            allowed_groups: self.oidc_allowed_groups,
                            logout_at_provider: self.oidc_logout_at_provider,
                        },
                        insecure_ok,
                    )
                    .context("--oidc-issuer")?,
                );
            }
            None if given => {
                bail!("--oidc-* settings without --oidc-issuer: give the provider's issuer URL too")
            }
            None => {}
        }
        for file in self.providers.unwrap_or_default() {
            let id = file.id.clone();
            let checked = provider(&id, file, insecure_ok)
                .with_context(|| format!("[[oidc.provider]] {id:?}"))?;
            if providers.iter().any(|p: &Provider| p.id == checked.id) {
                bail!("[[oidc.provider]] {id:?}: two providers have this id");
            }
            if providers
                .iter()
                .any(|p: &Provider| p.issuer == checked.issuer)
            {
                bail!(
                    "[[oidc.provider]] {id:?}: another provider has the issuer {}; one \
                     provider per issuer (its logout tokens name the issuer only)",
                    checked.issuer
                );
            }
            providers.push(checked);
        }
        let password_sign_in = self.password_sign_in.unwrap_or(true);
        if !password_sign_in && providers.is_empty() {
            bail!(
                "password_sign_in = false leaves no way to sign in: configure a provider \
                 (--oidc-issuer or [[oidc.provider]])"
            );
        }
        Ok(OidcSettings {
            providers,
            password_sign_in,
        })
    }
}

fn provider(id: &str, file: ProviderFile, insecure_ok: bool) -> Result<Provider> {
    if id.is_empty()
        || id.len() > 32
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        bail!("id = {id:?}: use 1 to 32 letters, digits, '-' or '_'");
    }
    let issuer = file.issuer.trim().to_owned();
    let uri: http::Uri = issuer
        .parse()
        .with_context(|| format!("issuer {issuer:?} is not a URL"))?;
    let host = uri.host().unwrap_or_default().to_owned();
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if insecure_ok || super::listen::is_loopback_host(&host) => {}
        Some("http") => bail!(
            "issuer {issuer}: plain HTTP to a provider that is not on this machine lets \
             anyone on the way forge sign-ins; use https (or allow_insecure_http)"
        ),
        _ => bail!("issuer {issuer:?}: expected an https:// URL"),
    }
    if host.is_empty() || uri.query().is_some() {
        bail!("issuer {issuer:?}: expected https://HOST[/PATH], no query");
    }
    if file.client_id.is_empty() {
        bail!("client_id is empty");
    }
    let secret = read_secret(&file.client_secret_file)?;
    let user_claim = match file.user_claim.as_deref() {
        None | Some("preferred_username") => UserClaim::PreferredUsername,
        Some("email") => UserClaim::Email,
        Some("sub") => UserClaim::Sub,
        Some(other) => bail!("user_claim = {other:?}: expected preferred_username, email or sub"),
    };
    let mut scopes = vec!["openid".to_owned()];
    for scope in file
        .scopes
        .unwrap_or_else(|| vec!["profile".to_owned(), "email".to_owned()])
        .iter()
        .flat_map(|s| s.split_whitespace())
    {
        if !scope
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        {
            bail!("scopes: {scope:?} is not a scope");
        }
        if !scopes.iter().any(|s| s == scope) {
            scopes.push(scope.to_owned());
        }
    }
    let name = match file.name {
        Some(n) if n.trim().is_empty() || n.chars().count() > 64 => {
            bail!("name = {n:?}: 1 to 64 characters")
        }
        Some(n) => n,
        None => host.clone(),
    };
    Ok(Provider {
        id: id.to_owned(),
        name,
        issuer,
        client_id: file.client_id,
        client_secret: secret,
        user_claim,
        groups_claim: file.groups_claim.unwrap_or_else(|| "groups".to_owned()),
        scopes,
        allowed_email_domains: file
            .allowed_email_domains
            .unwrap_or_default()
            .into_iter()
            .map(|d| d.trim().trim_start_matches('@').to_ascii_lowercase())
            .filter(|d| !d.is_empty())
            .collect(),
        allowed_groups: file.allowed_groups.unwrap_or_default(),
        logout_at_provider: file.logout_at_provider.unwrap_or(true),
    })
}

fn read_secret(path: &Path) -> Result<ClientSecret> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "client_secret_file {}: cannot read it (a file holding the client secret)",
            path.display()
        )
    })?;
    let secret = text.trim();
    if secret.is_empty() {
        bail!("client_secret_file {}: the file is empty", path.display());
    }
    Ok(ClientSecret(secret.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_file(dir: &Path) -> PathBuf {
        let path = dir.join("secret");
        std::fs::write(&path, "s3cret\n").unwrap();
        path
    }

    #[test]
    fn one_provider_from_flags_and_more_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let secret = secret_file(dir.path());
        let options = OidcOptions {
            oidc_issuer: Some("https://id.example.com/realms/x".into()),
            oidc_client_id: Some("signoff".into()),
            oidc_client_secret_file: Some(secret.clone()),
            oidc_allowed_email_domains: Some(vec!["@Example.COM".into()]),
            providers: Some(vec![ProviderFile {
                id: "google".into(),
                issuer: "https://accounts.google.com".into(),
                client_id: "g".into(),
                client_secret_file: secret,
                name: Some("Google".into()),
                user_claim: Some("email".into()),
                groups_claim: None,
                scopes: Some(vec!["email groups".into()]),
                allowed_email_domains: None,
                allowed_groups: None,
                logout_at_provider: Some(false),
            }]),
            ..Default::default()
        };
        let s = options.check(false).unwrap();
        assert!(s.password_sign_in);
        assert_eq!(s.providers.len(), 2);
        let first = &s.providers[0];
        assert_eq!(first.id, "default");
        assert_eq!(first.name, "id.example.com");
        assert_eq!(first.client_secret.expose(), "s3cret");
        assert!(
            !format!("{first:?}").contains("s3cret"),
            "Debug hides the secret"
        );
        assert_eq!(first.scopes, ["openid", "profile", "email"]);
        assert_eq!(first.allowed_email_domains, ["example.com"]);
        assert_eq!(first.user_claim, UserClaim::PreferredUsername);
        let google = &s.providers[1];
        assert_eq!(google.scopes, ["openid", "email", "groups"]);
        assert_eq!(google.user_claim, UserClaim::Email);
        assert!(!google.logout_at_provider);
    }

    #[test]
    fn mistakes_are_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let secret = secret_file(dir.path());
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let with = |issuer: &str, secret: &Path, claim: Option<&str>| OidcOptions {
            oidc_issuer: Some(issuer.into()),
            oidc_client_id: Some("c".into()),
            oidc_client_secret_file: Some(secret.to_path_buf()),
            oidc_user_claim: claim.map(Into::into),
            ..Default::default()
        };
        for (options, says) in [
            (with("http://id.example.com", &secret, None), "plain HTTP"),
            (
                with("ftp://id.example.com", &secret, None),
                "expected an https",
            ),
            (
                with("https://id.example.com", &empty, None),
                "the file is empty",
            ),
            (
                with("https://id.example.com", &dir.path().join("none"), None),
                "cannot read it",
            ),
            (
                with("https://id.example.com", &secret, Some("name")),
                "expected preferred_username",
            ),
            (
                OidcOptions {
                    oidc_issuer: Some("https://id.example.com".into()),
                    ..Default::default()
                },
                "needs --oidc-client-id",
            ),
            (
                OidcOptions {
                    oidc_client_id: Some("c".into()),
                    ..Default::default()
                },
                "without --oidc-issuer",
            ),
            (
                OidcOptions {
                    password_sign_in: Some(false),
                    ..Default::default()
                },
                "no way to sign in",
            ),
        ] {
            let e = format!("{:#}", options.check(false).unwrap_err());
            assert!(e.contains(says), "{says}: {e}");
            assert!(!e.contains("s3cret"));
        }
        // Loopback HTTP is for tests and set-ups on one machine.
        assert!(with("http://127.0.0.1:9000", &secret, None)
            .check(false)
            .is_ok());
    }
}
