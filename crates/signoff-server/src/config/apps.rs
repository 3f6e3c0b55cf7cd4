//! The `[[app]]` tables (file only): more applications behind the same
//! signoff, each on a host name of its own (or under a path prefix of a
//! host), each with its own upstream and its own access rules
//! (docs/apps.md).

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::access::{self, AccessFile, AccessRules};
use super::proxy::parse_upstream;

/// One `[[app]]` as the file gives it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppFile {
    name: String,
    host: String,
    path_prefix: Option<String>,
    upstream: Option<String>,
    access: Option<AccessFile>,
}

/// One application, checked.
#[derive(Debug, Clone)]
pub struct App {
    /// Its name, for messages and `signoff rules`.
    pub name: String,
    /// The host name it answers on: lower case, no port.
    pub host: String,
    /// The path it lives under (`/grafana`, no trailing slash), or `None`
    /// for the whole host. Paths are passed on unchanged.
    pub path_prefix: Option<String>,
    /// Where its requests go; `None` when a proxy in front routes them
    /// (forward-auth).
    pub upstream: Option<http::Uri>,
    /// The origin browsers see it at: the public URL's scheme and port,
    /// with this host.
    pub origin: String,
    /// Its own access rules (`[app.access]`; without one, every request
    /// needs a signed-in user).
    pub access: AccessRules,
}

impl App {
    /// Whether `path` is under this app's prefix: whole segments, ASCII
    /// letter case ignored (some proxies route that way).
    pub fn serves_path(&self, path: &str) -> bool {
        let Some(prefix) = self.path_prefix.as_deref() else {
            return true;
        };
        let (Some(head), Some(rest)) = (path.get(..prefix.len()), path.get(prefix.len()..)) else {
            return false;
        };
        head.eq_ignore_ascii_case(prefix) && (rest.is_empty() || rest.starts_with('/'))
    }
}

/// Checks the `[[app]]` tables against the public URL (`public_origin`,
/// with `public_host` its host): the central host, where users sign in.
/// `insecure_ok` is `--allow-insecure-http`.
pub(super) fn check(
    files: &[AppFile],
    public_origin: &str,
    public_host: &str,
    public_url_given: bool,
    insecure_ok: bool,
    prefix: &str,
) -> Result<Vec<App>> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    if !public_url_given {
        bail!(
            "[[app]] needs public_url: the address users sign in at, which every app's host \
             sends them to (e.g. public_url = \"https://login.example.com\")"
        );
    }
    let (scheme, authority) = public_origin
        .split_once("://")
        .unwrap_or(("http", public_origin));
    let port = authority
        .rsplit_once(':')
        .filter(|(host, _)| !host.ends_with(']') || authority.starts_with('['))
        .map(|(_, port)| port)
        .filter(|port| port.bytes().all(|b| b.is_ascii_digit()));
    let mut apps: Vec<App> = Vec::with_capacity(files.len());
    for file in files {
        let app = check_one(file, scheme, port, public_host, insecure_ok, prefix)
            .with_context(|| format!("[[app]] {:?}", file.name))?;
        if apps.iter().any(|a| a.name == app.name) {
            bail!("[[app]] {:?}: two apps have this name", app.name);
        }
        if let Some(other) = apps
            .iter()
            .find(|a| a.host == app.host && a.path_prefix == app.path_prefix)
        {
            bail!(
                "[[app]] {:?}: {:?} already serves host {} {}; give each app its own host or \
                 path_prefix",
                app.name,
                other.name,
                app.host,
                app.path_prefix.as_deref().unwrap_or("(all paths)")
            );
        }
        apps.push(app);
    }
    // The longest prefix of a host is tried first.
    apps.sort_by(|a, b| {
        let len = |x: &App| x.path_prefix.as_ref().map_or(0, String::len);
        len(b).cmp(&len(a))
    });
    Ok(apps)
}

fn check_one(
    file: &AppFile,
    scheme: &str,
    port: Option<&str>,
    public_host: &str,
    insecure_ok: bool,
    prefix: &str,
) -> Result<App> {
    let name = &file.name;
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        bail!("name = {name:?}: use 1 to 64 letters, digits, '-', '_' or '.'");
    }
    let host = file.host.trim().to_ascii_lowercase();
    if !is_host_name(&host) {
        bail!(
            "host = {:?}: expected a host name such as grafana.example.com (no scheme, port \
             or path; the port is the public URL's)",
            file.host
        );
    }
    let path_prefix = match file.path_prefix.as_deref() {
        None | Some("/") => None,
        Some(p) => Some(path_prefix(p)?),
    };
    if host == public_host && path_prefix.is_none() {
        bail!(
            "host = {host:?} is the public URL's host, where the top-level upstream answers; \
             give this app a path_prefix or a host of its own"
        );
    }
    if let Some(p) = &path_prefix {
        if p == prefix
            || p.starts_with(&format!("{prefix}/"))
            || prefix.starts_with(&format!("{p}/"))
        {
            bail!("path_prefix = {p:?} overlaps signoff's own prefix {prefix}");
        }
    }
    if scheme == "http" && !super::listen::is_loopback_host(&host) && !insecure_ok {
        bail!(
            "host = {host:?} over plain HTTP sends the session cookie unencrypted; use an \
             https public_url, or allow_insecure_http if you really mean it"
        );
    }
    let upstream = file
        .upstream
        .as_deref()
        .map(parse_upstream)
        .transpose()
        .context("upstream")?;
    let access = access::check(file.access.as_ref(), &[]).context("[app.access]")?;
    let origin = match port {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    };
    Ok(App {
        name: name.clone(),
        host,
        path_prefix,
        upstream,
        origin,
        access,
    })
}

/// A DNS name: labels of letters, digits and '-', dot-separated.
fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A path prefix: `/a/b`, plain segments only (no dot segments, no
/// encoding, nothing a proxy or app could read another way).
fn path_prefix(p: &str) -> Result<String> {
    let trimmed = p.strip_suffix('/').unwrap_or(p);
    let plain = trimmed.starts_with('/')
        && trimmed[1..].split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
        });
    if !plain {
        bail!(
            "path_prefix = {p:?}: expected a path such as /grafana, of letters, digits and \
             -_.~ (no dot segments, no percent-encoding)"
        );
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<App>> {
        #[derive(Deserialize)]
        struct File {
            app: Vec<AppFile>,
        }
        let file: File = toml::from_str(text)?;
        check(
            &file.app,
            "https://login.example.com",
            "login.example.com",
            true,
            false,
            "/.signoff",
        )
    }

    #[test]
    fn apps_are_read_with_their_rules_and_origins() {
        let apps = parse(
            r#"
            [[app]]
            name = "grafana"
            host = "Grafana.Example.com"
            upstream = "http://127.0.0.1:3000"
            [app.access]
            [[app.access.rule]]
            path_prefix = "/admin"
            groups = ["admins"]
            [[app.access.rule]]
            policy = "signed_in"

            [[app]]
            name = "docs"
            host = "login.example.com"
            path_prefix = "/docs/"
            upstream = "http://127.0.0.1:4000"
            "#,
        )
        .unwrap();
        assert_eq!(apps.len(), 2);
        // The longest prefix first.
        assert_eq!(apps[0].name, "docs");
        assert_eq!(apps[0].path_prefix.as_deref(), Some("/docs"));
        assert!(apps[0].serves_path("/docs"));
        assert!(apps[0].serves_path("/docs/a"));
        assert!(!apps[0].serves_path("/docsx"));
        assert!(!apps[0].serves_path("/doc"));
        assert!(apps[0].serves_path("/DOCS/a"), "letter case is ignored");
        assert!(!apps[0].serves_path("/docé"));
        assert_eq!(apps[1].host, "grafana.example.com");
        assert_eq!(apps[1].origin, "https://grafana.example.com");
        assert_eq!(apps[1].access.rules.rules().len(), 2);
        assert!(apps[1].serves_path("/anything"));
    }

    #[test]
    fn the_public_urls_port_is_every_apps_port() {
        #[derive(Deserialize)]
        struct File {
            app: Vec<AppFile>,
        }
        let file: File = toml::from_str(
            "[[app]]\nname = \"a\"\nhost = \"a.test\"\nupstream = \"http://127.0.0.1:1\"",
        )
        .unwrap();
        let apps = check(
            &file.app,
            "http://login.test:8080",
            "login.test",
            true,
            true,
            "/.signoff",
        )
        .unwrap();
        assert_eq!(apps[0].origin, "http://a.test:8080");
        let e = check(
            &file.app,
            "http://login.test:8080",
            "login.test",
            true,
            false,
            "/.signoff",
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("allow_insecure_http"), "{e:#}");
        let e = check(
            &file.app,
            "http://127.0.0.1:8080",
            "127.0.0.1",
            false,
            true,
            "/.signoff",
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("needs public_url"), "{e:#}");
    }

    #[test]
    fn mistakes_are_refused_with_what_to_do() {
        for (text, says) in [
            ("name = \"\"\nhost = \"a.example.com\"", "letters, digits"),
            (
                "name = \"a\"\nhost = \"https://a.example.com\"",
                "expected a host name",
            ),
            (
                "name = \"a\"\nhost = \"a.example.com:8443\"",
                "expected a host name",
            ),
            (
                "name = \"a\"\nhost = \"login.example.com\"",
                "give this app a path_prefix",
            ),
            (
                "name = \"a\"\nhost = \"a.example.com\"\npath_prefix = \"/x/../y\"",
                "no dot segments",
            ),
            (
                "name = \"a\"\nhost = \"a.example.com\"\npath_prefix = \"/x%2fy\"",
                "percent",
            ),
            (
                "name = \"a\"\nhost = \"a.example.com\"\npath_prefix = \"x\"",
                "such as /grafana",
            ),
            (
                "name = \"a\"\nhost = \"a.example.com\"\npath_prefix = \"/.signoff\"",
                "overlaps",
            ),
            (
                "name = \"a\"\nhost = \"a.example.com\"\nupstream = \"ftp://x\"",
                "expected http",
            ),
            (
                "name = \"a\"\nhost = \"a.example.com\"\nport = 1",
                "unknown field",
            ),
            (
                "name = \"a\"\nhost = \"a.example.com\"\n[app.access]\ndefault = \"public\"",
                "expected \"deny\" or \"signed_in\"",
            ),
        ] {
            let e = format!("{:#}", parse(&format!("[[app]]\n{text}")).unwrap_err());
            assert!(e.contains(says), "{text}: {e}");
        }
        let e = format!(
            "{:#}",
            parse("[[app]]\nname = \"a\"\nhost = \"a.example.com\"\n[[app]]\nname = \"a\"\nhost = \"b.example.com\"")
                .unwrap_err()
        );
        assert!(e.contains("two apps have this name"), "{e}");
        let e = format!(
            "{:#}",
            parse("[[app]]\nname = \"a\"\nhost = \"a.example.com\"\n[[app]]\nname = \"b\"\nhost = \"A.example.com\"")
                .unwrap_err()
        );
        assert!(e.contains("already serves host a.example.com"), "{e}");
    }
}
