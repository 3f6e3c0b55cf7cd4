//! The request headers only a gateway may set: one list for `signoff
//! serve` (which strips them from every proxied request), `/.signoff/auth`
//! (which refuses what a proxy failed to strip) and the example proxy
//! configurations, whose strip lines are generated from it
//! (`examples/nginx/signoff-identity-headers.conf`,
//! `examples/caddy/identity-headers.caddy`,
//! `examples/traefik/identity-headers.yml`; a test fails when they drift).
//!
//! Names are compared in lowercase with `_` read as `-`: CGI, WSGI and
//! similar environments turn `X_Signoff_User` and `X-Signoff-User` into the
//! same `HTTP_X_SIGNOFF_USER`.
//!
//! This file uses nothing outside `std`: the integration tests include it
//! to send every name on the list.

/// Names that say who the user is, as gateways and cloud front ends set
/// them (lowercase, `-` spelling).
const IDENTITY: &[&str] = &[
    "x-auth-user",
    "x-user",
    "x-email",
    "x-username",
    "x-userid",
    "x-user-id",
    "x-user-name",
    "x-user-email",
    "x-remote-user",
    "x-remote-group",
    "x-remote-groups",
    "x-remote-email",
    "x-remote-name",
    // oauth2-proxy.
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-preferred-username",
    "x-forwarded-groups",
    "x-forwarded-access-token",
    // Client certificates, as proxies pass them on.
    "x-forwarded-client-cert",
    "x-forwarded-tls-client-cert",
    "x-forwarded-tls-client-cert-info",
    "x-client-cert",
    "x-client-verify",
    "x-client-dn",
    // Google IAP, API Gateway and Cloud Endpoints.
    "x-goog-iap-jwt-assertion",
    "cf-access-jwt-assertion",
    "x-apigateway-api-userinfo",
    "x-endpoint-api-userinfo",
    // API gateways (WSO2, Envoy filters).
    "x-jwt-assertion",
    "x-jwt-payload",
];

/// Name prefixes that say who the user is, each with the names known to
/// be used under it. The proxies that can delete by prefix (Caddy,
/// `serve`) do; nginx blanks the known names, and `/.signoff/auth`
/// refuses a request that still carries any other.
const IDENTITY_PREFIXES: &[(&str, &[&str])] = &[
    (
        "x-signoff-",
        &[
            "user",
            "session",
            "csrf",
            "auth-time",
            "groups",
            "email",
            "login",
        ],
    ),
    // oauth2-proxy.
    (
        "x-auth-request-",
        &[
            "user",
            "email",
            "groups",
            "preferred-username",
            "access-token",
            "redirect",
        ],
    ),
    // Authelia, Apache.
    ("remote-", &["user", "groups", "email", "name"]),
    // Kubernetes' front proxy.
    ("x-remote-extra-", &["scopes"]),
    // Grafana's auth proxy.
    (
        "x-webauth-",
        &["user", "email", "name", "groups", "role", "login"],
    ),
    // Azure App Service and Static Web Apps.
    ("x-ms-client-principal", &["", "-name", "-id", "-idp"]),
    (
        "x-ms-token-",
        &[
            "aad-id-token",
            "aad-access-token",
            "aad-expires-on",
            "aad-refresh-token",
        ],
    ),
    // Google IAP.
    ("x-goog-authenticated-user-", &["email", "id"]),
    // AWS Application Load Balancer.
    ("x-amzn-oidc-", &["accesstoken", "identity", "data"]),
    // Cloudflare Access (not `Cf-Access-Client-*`: service tokens a
    // client sends to Cloudflare).
    ("cf-access-authenticated-user-", &["email"]),
    // Apache mod_auth_openidc (`OIDC_CLAIM_email`, `OIDC_access_token`).
    (
        "oidc-",
        &[
            "claim-sub",
            "claim-email",
            "claim-name",
            "claim-preferred-username",
            "claim-groups",
            "access-token",
            "access-token-expires",
            "id-token",
            "id-token-payload",
            "userinfo-json",
        ],
    ),
    // authentik.
    (
        "x-authentik-",
        &[
            "username",
            "groups",
            "email",
            "name",
            "uid",
            "jwt",
            "meta-jwks",
            "meta-outpost",
            "meta-provider",
            "meta-app",
            "meta-version",
        ],
    ),
    // Pomerium.
    (
        "x-pomerium-",
        &[
            "jwt-assertion",
            "claim-email",
            "claim-user",
            "claim-groups",
            "claim-name",
        ],
    ),
    // Kong.
    (
        "x-authenticated-",
        &["user", "userid", "groups", "scope", "email"],
    ),
    ("x-consumer-", &["id", "username", "custom-id", "groups"]),
    ("x-credential-", &["identifier", "username"]),
    // Tailscale Serve.
    ("tailscale-user-", &["login", "name", "profile-pic"]),
    // Client certificates (`X-SSL-Client-*`, Apache's `SSL_CLIENT_*`).
    (
        "x-ssl-client-",
        &[
            "cert",
            "dn",
            "s-dn",
            "i-dn",
            "verify",
            "serial",
            "fingerprint",
        ],
    ),
    ("ssl-client-", &["cert", "verify", "s-dn", "i-dn"]),
];

/// Names that say where a request came from or which URL it was for:
/// some frameworks route by them (`X-Original-URL` would let `/public/x`
/// reach `/admin`), others log or rate-limit by the address in them.
const FORWARDING: &[&str] = &[
    "forwarded",
    "x-forwarded",
    "x-real-ip",
    "x-original-url",
    "x-original-uri",
    "x-original-method",
    "x-original-host",
    "x-original-forwarded-for",
    "x-rewrite-url",
    "x-envoy-original-path",
    "x-envoy-external-address",
    "front-end-https",
    "x-url-scheme",
    "x-host",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    // Client addresses, as CDNs and cloud load balancers set them.
    "true-client-ip",
    "x-client-ip",
    "client-ip",
    "cf-connecting-ip",
    "cf-connecting-ipv6",
    "fastly-client-ip",
    "x-cluster-client-ip",
    "x-originating-ip",
    "x-remote-ip",
    "x-remote-addr",
    "x-real-client-ip",
    "x-azure-clientip",
    "x-azure-socketip",
    "x-appengine-user-ip",
    "x-proxyuser-ip",
    "proxy-client-ip",
    "wl-proxy-client-ip",
];

/// Forwarding prefixes, with the names known to be used under them.
const FORWARDING_PREFIXES: &[(&str, &[&str])] = &[(
    "x-forwarded-",
    &[
        "for", "proto", "host", "port", "prefix", "server", "ssl", "scheme", "uri", "method",
        "path", "protocol",
    ],
)];

/// `name` in lowercase with `_` read as `-`.
#[cfg(test)]
fn normal(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// Whether `name` is `listed` (lowercase, `-` spelling) in any case, with
/// `_` read as `-`. Compares in place: this runs for every header of every
/// request.
fn same_name(name: &[u8], listed: &[u8]) -> bool {
    name.len() == listed.len()
        && name.iter().zip(listed).all(|(&n, &l)| {
            if n == b'_' {
                l == b'-'
            } else {
                n.to_ascii_lowercase() == l
            }
        })
}

/// The first bytes of every listed name and prefix: a header whose name
/// starts otherwise (`accept`, `cookie`, `host`, `user-agent`, most of a
/// request's) is on no list, and is passed without comparing it to each.
const FIRST_BYTES: [bool; 256] = first_bytes();

const fn first_bytes() -> [bool; 256] {
    const fn mark(table: &mut [bool; 256], name: &str) {
        let bytes = name.as_bytes();
        if !bytes.is_empty() {
            table[bytes[0] as usize] = true;
        }
    }
    let mut table = [false; 256];
    let mut i = 0;
    while i < IDENTITY.len() {
        mark(&mut table, IDENTITY[i]);
        i += 1;
    }
    i = 0;
    while i < FORWARDING.len() {
        mark(&mut table, FORWARDING[i]);
        i += 1;
    }
    i = 0;
    while i < IDENTITY_PREFIXES.len() {
        mark(&mut table, IDENTITY_PREFIXES[i].0);
        i += 1;
    }
    i = 0;
    while i < FORWARDING_PREFIXES.len() {
        mark(&mut table, FORWARDING_PREFIXES[i].0);
        i += 1;
    }
    table
}

fn listed(name: &str, exact: &[&str], prefixes: &[(&str, &[&str])]) -> bool {
    let name = name.as_bytes();
    // Lists are lowercase, and none starts with `-` (which `_` would read as).
    match name.first() {
        Some(first) if FIRST_BYTES[usize::from(first.to_ascii_lowercase())] => {}
        _ => return false,
    }
    exact.iter().any(|e| same_name(name, e.as_bytes()))
        || prefixes.iter().any(|(p, _)| {
            name.get(..p.len())
                .is_some_and(|start| same_name(start, p.as_bytes()))
        })
}

/// Whether `name`, in any case and spelling, says who the user is: only
/// signoff may set it.
pub fn is_identity_header(name: &str) -> bool {
    listed(name, IDENTITY, IDENTITY_PREFIXES)
}

/// Whether `name`, in any case and spelling, says where the request came
/// from or which URL it was for. signoff sets its own
/// `X-Forwarded-For/Proto/Host`; the rest are dropped.
pub fn is_forwarding_header(name: &str) -> bool {
    !listed(name, IDENTITY, IDENTITY_PREFIXES) && listed(name, FORWARDING, FORWARDING_PREFIXES)
}

/// Whether a client must not send `name` on to the upstream: an identity
/// or a forwarding header ([`is_identity_header`], [`is_forwarding_header`]),
/// each list read once.
pub fn is_spoofable(name: &str) -> bool {
    listed(name, IDENTITY, IDENTITY_PREFIXES) || listed(name, FORWARDING, FORWARDING_PREFIXES)
}

/// Whether a proxy in front of `/.signoff/auth` let `name` through though
/// it should have removed it: any identity header, and any forwarding
/// header spelt with `_` (proxies write their own with `-`).
pub fn escaped_the_proxy(name: &str) -> bool {
    is_identity_header(name) || (name.contains('_') && is_forwarding_header(name))
}

/// Every name on the lists, prefixes expanded to their known names
/// (lowercase, `-` spelling), identity first.
#[cfg(test)]
pub fn concrete_names() -> Vec<String> {
    let expand = |exact: &[&str], prefixes: &[(&str, &[&str])]| {
        let mut names: Vec<String> = exact.iter().map(|n| (*n).to_owned()).collect();
        for (prefix, known) in prefixes {
            names.extend(known.iter().map(|k| format!("{prefix}{k}")));
        }
        names
    };
    let mut names = expand(IDENTITY, IDENTITY_PREFIXES);
    names.extend(expand(FORWARDING, FORWARDING_PREFIXES));
    names
}

/// How a client may spell `name` (a name on the list, `-` spelling):
/// first the `-` and `_` spellings, then mixes of the two. Case does not
/// matter to nginx, Go or Python (and hyper sends lowercase).
#[cfg(test)]
pub fn spellings(name: &str) -> (Vec<String>, Vec<String>) {
    let mut plain = vec![name.to_owned()];
    if name.contains('-') {
        plain.push(name.replace('-', "_"));
    }
    let mut mixed = Vec::new();
    if name.matches('-').count() >= 2 {
        mixed.push(name.replacen('-', "_", 1));
        let (head, tail) = name.split_once('-').unwrap();
        mixed.push(format!("{head}-{}", tail.replace('-', "_")));
    }
    (plain, mixed)
}

/// The example files generated from the lists, by path under `examples/`.
#[cfg(test)]
pub mod examples {
    use super::*;

    /// The names `examples/nginx/signoff.conf` sets itself (to signoff's
    /// answer, or to `$scheme`, `$request_uri` ...): nginx would send both
    /// values if the generated file blanked them as well.
    pub const SET_BY_NGINX_CONF: &[&str] = &[
        "x-signoff-user",
        "x-signoff-session",
        "x-signoff-csrf",
        "x-signoff-auth-time",
        "x-signoff-groups",
        "x-signoff-email",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-original-uri",
        "x-original-method",
    ];

    /// The names Traefik's entry point replaces itself (it drops the
    /// client's unless `forwardedHeaders.trustedIPs` says otherwise).
    pub const SET_BY_TRAEFIK: &[&str] = &[
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-forwarded-server",
        "x-real-ip",
    ];

    /// `X-Signoff-User`: how the files spell a name.
    fn title(name: &str) -> String {
        let mut out = String::with_capacity(name.len());
        let mut upper = true;
        for c in name.chars() {
            out.push(if upper { c.to_ascii_uppercase() } else { c });
            upper = c == '-';
        }
        out
    }

    /// The key Go's `net/http` (Caddy) stores `name` under: Caddy's
    /// wildcard deletes compare prefixes with it as it is.
    fn go_key(name: &str) -> String {
        let mut out = String::with_capacity(name.len());
        let mut upper = true;
        for c in name.chars() {
            out.push(if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            });
            upper = c == '-';
        }
        out
    }

    const HEAD: &str = "Generated from crates/signoff-server/src/gateway/identity_headers.rs;\n\
        do not edit. To regenerate:\n  SIGNOFF_WRITE_EXAMPLES=1 cargo test -p signoff-server \
        --bin signoff identity_headers\n";

    fn commented(text: &str) -> String {
        text.lines()
            .map(|l| {
                if l.is_empty() {
                    "#\n".to_owned()
                } else {
                    format!("# {l}\n")
                }
            })
            .collect()
    }

    /// `examples/nginx/signoff-identity-headers.conf`.
    pub fn nginx() -> String {
        let mut out = commented(HEAD);
        out += &commented(
            "\nIncluded in each location of signoff.conf that proxies to the app\n\
             or to signoff's /auth: an empty value removes the header in any\n\
             case. nginx cannot remove by prefix, so these are the known names\n\
             under each prefix on the list; /.signoff/auth refuses (403) a\n\
             request that still carries another identity header. Names with\n\
             underscores never get this far: `underscores_in_headers off`\n\
             drops them. signoff.conf sets these itself: X-Signoff-User,\n\
             X-Signoff-Session, X-Signoff-Csrf, X-Signoff-Auth-Time,\n\
             X-Forwarded-For, X-Forwarded-Proto, X-Original-URI,\n\
             X-Original-Method.",
        );
        out.push('\n');
        for name in concrete_names() {
            if !SET_BY_NGINX_CONF.contains(&name.as_str()) {
                out += &format!("proxy_set_header {} \"\";\n", title(&name));
            }
        }
        out
    }

    /// `examples/caddy/identity-headers.caddy`.
    pub fn caddy() -> String {
        let mut out = commented(HEAD);
        out += &commented(
            "\nImported inside the Caddyfile's `route`, before `forward_auth`:\n\
             removes every header on the list, in the `-` and the `_` spelling\n\
             (Go keeps `X_Signoff_User` apart from `X-Signoff-User`), prefixes\n\
             with a wildcard. Other mixes of `-` and `_` reach signoff's /auth,\n\
             which refuses (403) the request.",
        );
        out.push('\n');
        let mut lines = Vec::new();
        let mut add = |name: &str, wildcard: bool| {
            let star = if wildcard { "*" } else { "" };
            let dash = go_key(name);
            lines.push(format!("request_header -{dash}{star}"));
            if name.contains('-') {
                lines.push(format!(
                    "request_header -{}{star}",
                    go_key(&name.replace('-', "_"))
                ));
            }
        };
        for name in IDENTITY.iter().chain(FORWARDING) {
            add(name, false);
        }
        for (prefix, _) in IDENTITY_PREFIXES.iter().chain(FORWARDING_PREFIXES) {
            add(prefix, true);
        }
        for line in lines {
            out += &line;
            out.push('\n');
        }
        out
    }

    /// `examples/traefik/identity-headers.yml`.
    pub fn traefik() -> String {
        let mut out = commented(HEAD);
        out += &commented(
            "\nThe middleware dynamic.yml puts first on the app's router (load both\n\
             files with --providers.file.directory). An empty value removes the\n\
             header; Go keeps `X_Signoff_User` apart from `X-Signoff-User`, so\n\
             both spellings are listed. Traefik cannot remove by prefix: these\n\
             are the known names under each prefix on the list, and\n\
             /.signoff/auth refuses (403) a request that still carries another\n\
             identity header or another mix of `-` and `_`. Traefik's entry\n\
             point replaces these itself: X-Forwarded-For, X-Forwarded-Proto,\n\
             X-Forwarded-Host, X-Forwarded-Port, X-Forwarded-Server, X-Real-Ip.",
        );
        out += "\nhttp:\n  middlewares:\n    signoff-strip-identity:\n      headers:\n        \
                customRequestHeaders:\n";
        for name in concrete_names() {
            if SET_BY_TRAEFIK.contains(&name.as_str()) {
                continue;
            }
            out += &format!("          {}: \"\"\n", title(&name));
            if name.contains('-') {
                out += &format!("          {}: \"\"\n", go_key(&name.replace('-', "_")));
            }
        }
        out
    }

    /// Each generated file, by its path under `examples/`.
    pub fn all() -> [(&'static str, String); 3] {
        [
            ("nginx/signoff-identity-headers.conf", nginx()),
            ("caddy/identity-headers.caddy", caddy()),
            ("traefik/identity-headers.yml", traefik()),
        ]
    }

    #[test]
    fn spellings() {
        assert_eq!(
            title("x-ms-client-principal-id"),
            "X-Ms-Client-Principal-Id"
        );
        assert_eq!(go_key("X_SIGNOFF_"), "X_signoff_");
        assert_eq!(go_key("x-auth-request-"), "X-Auth-Request-");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_headers_are_recognised_in_any_case_and_spelling() {
        for name in [
            "X-Signoff-User",
            "x-signoff-session",
            "X-SIGNOFF-CSRF",
            "X-Signoff-Anything",
            "Remote-User",
            "Remote-Groups",
            "X-Forwarded-User",
            "X-Forwarded-Access-Token",
            "X-Auth-Request-Email",
            "x-auth-request-preferred-username",
            "X-Webauth-User",
            "X-MS-CLIENT-PRINCIPAL",
            "X-MS-CLIENT-PRINCIPAL-NAME",
            "Cf-Access-Authenticated-User-Email",
            "X-Goog-Authenticated-User-Email",
            "X-Amzn-Oidc-Data",
            "OIDC_CLAIM_email",
            "X-User",
            "X-Email",
            "Remote_User",
            "X_Signoff_User",
            "x-signoff_user",
        ] {
            assert!(is_identity_header(name), "{name}");
            assert!(!is_forwarding_header(name), "{name}");
            assert!(escaped_the_proxy(name), "{name}");
        }
        for name in [
            "x-request-id",
            "cookie",
            "x-forwarded-for",
            "user-agent",
            "authorization",
        ] {
            assert!(!is_identity_header(name), "{name}");
        }
    }

    #[test]
    fn forwarding_headers_are_recognised_in_any_case_and_spelling() {
        for name in [
            "X-Original-URL",
            "x_forwarded_for",
            "X-Forwarded-Prefix",
            "Forwarded",
            "X-Real-IP",
            "True-Client-IP",
            "CF-Connecting-IP",
            "X-Client-IP",
        ] {
            assert!(is_forwarding_header(name), "{name}");
        }
        // What proxies write to signoff's /auth themselves passes; an
        // `_` spelling does not.
        for name in [
            "X-Forwarded-For",
            "X-Forwarded-Uri",
            "X-Original-URI",
            "X-Real-IP",
        ] {
            assert!(!escaped_the_proxy(name), "{name}");
        }
        assert!(escaped_the_proxy("X_Forwarded_Uri"));
        for name in ["cookie", "accept", "x-request-id", "x-csrf-token"] {
            assert!(
                !is_forwarding_header(name) && !escaped_the_proxy(name),
                "{name}"
            );
        }
    }

    #[test]
    fn the_first_byte_test_passes_nothing_a_list_holds() {
        // FIRST_BYTES lowercases the first byte and reads no `_` as `-`:
        // right only while every entry starts with a lowercase letter.
        let prefixes = IDENTITY_PREFIXES
            .iter()
            .chain(FORWARDING_PREFIXES)
            .map(|(p, _)| *p);
        for entry in IDENTITY.iter().chain(FORWARDING).copied().chain(prefixes) {
            let first = entry.as_bytes()[0];
            assert!(first.is_ascii_lowercase(), "{entry}");
            assert!(FIRST_BYTES[usize::from(first)], "{entry}");
        }
        // And it stops the common names at once.
        for name in ["accept", "Host", "user-agent", "-x-user", "_x_user", ""] {
            let first = name.as_bytes().first().map_or(0, u8::to_ascii_lowercase);
            assert!(!FIRST_BYTES[usize::from(first)], "{name}");
            assert!(
                !is_identity_header(name) && !is_forwarding_header(name),
                "{name}"
            );
        }
    }

    #[test]
    fn every_concrete_name_is_on_its_list_in_every_spelling() {
        let names = concrete_names();
        assert!(names.len() > 100, "{}", names.len());
        for name in &names {
            assert_eq!(name, &normal(name));
            let (plain, mixed) = spellings(name);
            for spelt in plain.iter().chain(&mixed) {
                assert!(
                    is_identity_header(spelt) || is_forwarding_header(spelt),
                    "{spelt}"
                );
                // The proxy's one-call test says the same.
                assert!(is_spoofable(spelt), "{spelt}");
            }
        }
        for kept in ["accept", "cookie", "x-request-id", "x-forward", "_", ""] {
            assert!(!is_spoofable(kept), "{kept}");
            assert!(
                !is_identity_header(kept) && !is_forwarding_header(kept),
                "{kept}"
            );
        }
        assert_eq!(
            spellings("x-signoff-user"),
            (
                vec!["x-signoff-user".to_owned(), "x_signoff_user".to_owned()],
                vec!["x_signoff-user".to_owned(), "x-signoff_user".to_owned()]
            )
        );
        assert_eq!(
            spellings("forwarded"),
            (vec!["forwarded".to_owned()], vec![])
        );
    }

    /// The committed example files are what the lists generate.
    #[test]
    fn the_example_files_follow_the_lists() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let write = std::env::var_os("SIGNOFF_WRITE_EXAMPLES").is_some();
        for (path, text) in examples::all() {
            let file = root.join(path);
            if write {
                std::fs::write(&file, &text).unwrap();
            }
            let committed = std::fs::read_to_string(&file).unwrap_or_default();
            assert!(
                committed == text,
                "examples/{path} differs from the list in identity_headers.rs; regenerate it:\n  \
                 SIGNOFF_WRITE_EXAMPLES=1 cargo test -p signoff-server --bin signoff identity_headers"
            );
        }
    }
}
