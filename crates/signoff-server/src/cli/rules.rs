//! `signoff rules check` and `signoff rules test`: the access rules of a
//! config file, explained, and what they decide for one request.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use signoff::access::{Access, Decider, Decision, Member, Readings, RequestFacts, Rule, Rules};

use super::{open_existing, Db};
use crate::config;

/// `--public-path`, as `signoff serve` takes it.
#[derive(Debug, clap::Args)]
pub struct PublicPaths {
    /// Public paths, as `signoff serve --public-path` (instead of the
    /// file's public_paths)
    #[arg(
        long = "public-path",
        env = "SIGNOFF_PUBLIC_PATHS",
        value_name = "PATH",
        value_delimiter = ','
    )]
    paths: Vec<String>,
}

/// `signoff rules …`.
#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Check the access rules of a config file (its [access] table and
    /// public_paths) as `signoff serve` would, and list them in order with
    /// what each matches and allows. Exits 1 with the reason if they do not
    /// check.
    Check {
        /// The TOML file `signoff serve --config` reads
        #[arg(long, env = "SIGNOFF_CONFIG", value_name = "PATH")]
        config: Option<PathBuf>,
        #[command(flatten)]
        public_paths: PublicPaths,
    },
    /// Say which rule decides a request and what it decides for a user:
    /// e.g. `signoff rules test --config signoff.toml --user alice GET
    /// https://app.example.com/admin`. The user's groups come from the
    /// store (--db or the config file's db) unless --group gives them.
    /// Exits 0 if the request would pass, 3 if not, 1 on an error.
    Test {
        /// The request's method, e.g. GET
        #[arg(value_name = "METHOD")]
        method: String,
        /// The request: https://HOST/PATH (the host as the app sees it), or
        /// a path alone (then host rules count both ways)
        #[arg(value_name = "URL")]
        url: String,
        /// Decide for this signed-in user (without it: nobody signed in)
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        /// The user's groups (repeat), instead of reading them from the
        /// store
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        /// How long ago the user last entered their password, for rules
        /// with `fresh` [default: 0s, just now]
        #[arg(long, value_name = "DURATION")]
        password_age: Option<String>,
        #[command(flatten)]
        public_paths: PublicPaths,
        /// The store and the config file.
        #[command(flatten)]
        db: Db,
    },
}

/// Runs `signoff rules …`.
pub async fn run(command: RulesCommand) -> Result<()> {
    match command {
        RulesCommand::Check {
            config,
            public_paths,
        } => {
            let Some(config) = config else {
                bail!("give the file to check: signoff rules check --config PATH");
            };
            let checked = config::access_rules(Some(&config), Some(public_paths.paths))?;
            let apps = config::apps(Some(&config))?;
            println!("{}: the access rules check", config.display());
            if !apps.is_empty() {
                println!("the top-level upstream (what no [[app]] serves):");
            }
            print_rules(&checked.rules);
            for warning in &checked.warnings {
                println!("warning: {warning}");
            }
            for app in &apps {
                println!(
                    "app {:?} ({}{}):",
                    app.name,
                    app.host,
                    app.path_prefix.as_deref().unwrap_or("")
                );
                print_rules(&app.access.rules);
                for warning in &app.access.warnings {
                    println!("warning: app {:?}: {warning}", app.name);
                }
            }
            Ok(())
        }
        RulesCommand::Test {
            method,
            url,
            user,
            groups,
            password_age,
            public_paths,
            db,
        } => {
            let checked = config::access_rules(db.config.as_deref(), Some(public_paths.paths))?;
            let apps = config::apps(db.config.as_deref())?;
            let (host, path) = split_url(&url)?;
            // The app the URL is for (the longest prefix of its host
            // first, as `serve` picks it), or the top-level rules.
            let app = host.as_deref().and_then(|h| {
                apps.iter()
                    .find(|a| a.host.eq_ignore_ascii_case(h) && a.serves_path(&path))
            });
            let method = method.to_ascii_uppercase();
            if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
                bail!("{method:?} is not an HTTP method such as GET or POST");
            }
            let age = match password_age.as_deref() {
                Some(text) => humantime::parse_duration(text.trim()).with_context(|| {
                    format!("--password-age {text:?}: expected a duration such as 90s or 10m")
                })?,
                None => Duration::ZERO,
            };
            let groups = match (&user, groups.is_empty()) {
                (Some(name), true) => {
                    let store = open_existing(&db).await?;
                    let user = store.accounts().user(name).await.with_context(|| {
                        format!("user {name:?} (give --group to test without the store)")
                    })?;
                    user.groups
                }
                (None, false) => bail!("--group needs --user"),
                _ => signoff::check_groups(&groups)?,
            };
            let joined = groups.join(",");
            let now = crate::display::now();
            let member = user.as_deref().map(|name| {
                Member::new(name, &joined).authenticated(
                    Some(signoff::Timestamp::from_millis(
                        now.as_millis() - i64::try_from(age.as_millis()).unwrap_or(i64::MAX / 2),
                    )),
                    now,
                )
            });
            let rules = app.map_or(&checked.rules, |a| &a.access.rules);
            let needs = rules.needs(&RequestFacts::new(
                Some(&method),
                host.as_deref(),
                Some(&path),
            ));
            println!("{method} {url}");
            match app {
                Some(app) => println!("  app {:?}: its own rules decide", app.name),
                None if !apps.is_empty() && host.is_none() => println!(
                    "  no host given: the top-level rules decide (give https://HOST/PATH for an \
                     [[app]])"
                ),
                None if !apps.is_empty() => {
                    println!("  no [[app]] serves it: the top-level rules decide")
                }
                None => {}
            }
            let readings = Readings::of(&path);
            if !readings.is_plain() {
                println!(
                    "  the path is not plain: an upstream could read it as any of {}; the \
                     request must pass the rule for each, and cannot be public",
                    readings
                        .iter()
                        .map(|r| format!("{r:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            if host.is_none() && rules.rules().iter().any(|r| !r.hosts.is_empty()) {
                println!("  no host given: rules with a host count as matching and as not");
            }
            println!("  decided by:");
            for by in needs.deciders() {
                println!("    {}", describe_decider(&by));
            }
            let who = match (&user, groups.is_empty()) {
                (Some(name), true) => format!("{name} (no groups)"),
                (Some(name), false) => format!("{name} (groups {})", groups.join(", ")),
                (None, _) => "nobody signed in".to_owned(),
            };
            let verdict = needs.decide(member.as_ref());
            println!(
                "  for {who}: {}",
                describe_decision(&verdict, needs.is_public())
            );
            if verdict == Decision::Allow {
                Ok(())
            } else {
                use std::io::Write as _;
                std::io::stdout().flush().ok();
                std::process::exit(3);
            }
        }
    }
}

/// `https://host/path?q` or `/path`: the host (if any) and the path.
fn split_url(url: &str) -> Result<(Option<String>, String)> {
    let uri: http::Uri = url.parse().with_context(|| {
        format!(
            "{url:?} is not a URL such as https://app.example.com/admin or a path such as /admin"
        )
    })?;
    let path = uri.path();
    if !path.starts_with('/') {
        bail!("{url:?}: expected https://HOST/PATH or /PATH");
    }
    if uri.scheme().is_some() && uri.host().is_none() {
        bail!("{url:?}: no host");
    }
    Ok((
        uri.authority().map(|a| a.host().to_owned()),
        path.to_owned(),
    ))
}

fn print_rules(rules: &Rules) {
    if rules.rules().is_empty() {
        println!("  no rules");
    }
    for rule in rules.rules() {
        println!("  {}", describe_rule(rule));
    }
    println!("  otherwise: {}", rules.default_access());
}

fn describe_rule(rule: &Rule) -> String {
    let mut matches = Vec::new();
    if !rule.hosts.is_empty() {
        let hosts: Vec<String> = rule.hosts.iter().map(ToString::to_string).collect();
        matches.push(format!("host {}", hosts.join(" or ")));
    }
    if let Some(path) = &rule.path {
        matches.push(path.to_string());
    }
    if !rule.methods.is_empty() {
        matches.push(format!("method {}", rule.methods.join(" or ")));
    }
    if matches.is_empty() {
        matches.push("every request".to_owned());
    }
    let mut allows = rule.access.to_string();
    if let Some(fresh) = rule.fresh {
        allows.push_str(&format!(
            ", with a password entered within {}",
            humantime::format_duration(fresh)
        ));
    }
    format!("{}: {} -> {allows}", rule.label, matches.join(", "))
}

fn describe_decider(by: &Decider<'_>) -> String {
    match by {
        Decider::Rule(_, rule) => describe_rule(rule),
        Decider::Default(access) => format!("no rule matches: the default, {access}"),
    }
}

fn describe_decision(decision: &Decision<'_>, public: bool) -> String {
    match decision {
        Decision::Allow if public => "passes (public: no session is looked at)".to_owned(),
        Decision::Allow => "passes".to_owned(),
        Decision::SignIn => {
            "sign-in needed (a browser goes to the login page; others get 401)".to_owned()
        }
        Decision::Forbidden { by } => match by.access() {
            Access::Deny => format!("refused, 403: {by} lets nobody in"),
            _ => format!("refused, 403: {by} does not let this user in"),
        },
        Decision::Fresh { within, by } => format!(
            "password again first: {by} needs it entered within {} (a browser goes to the \
             re-authentication page and comes back)",
            humantime::format_duration(*within)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths_are_split() {
        assert_eq!(
            split_url("https://App.example.com:8443/admin?x=1").unwrap(),
            (Some("App.example.com".to_owned()), "/admin".to_owned())
        );
        assert_eq!(split_url("/a/../b").unwrap(), (None, "/a/../b".to_owned()));
        for bad in ["", "admin", "https://", "::"] {
            assert!(split_url(bad).is_err(), "{bad:?}");
        }
    }
}
