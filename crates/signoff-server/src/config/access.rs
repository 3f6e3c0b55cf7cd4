//! The `[access]` table (file only): ordered access rules, first match
//! wins, and the default for what none matches (docs/access-rules.md).
//! `--public-path` entries become public rules ahead of them.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use signoff::access::{Access, HostPattern, PathPattern, Rule, Rules};

use super::parse_duration;

/// `[access]`: the default and the `[[access.rule]]` list.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessFile {
    /// `deny` (the default when the table is there) or `signed_in`.
    default: Option<String>,
    /// The rules, in order.
    #[serde(default)]
    rule: Vec<RuleFile>,
}

/// A string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// One `[[access.rule]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    name: Option<String>,
    host: Option<OneOrMany>,
    path: Option<String>,
    path_prefix: Option<String>,
    path_glob: Option<String>,
    methods: Option<OneOrMany>,
    policy: Option<String>,
    groups: Option<Vec<String>>,
    users: Option<Vec<String>>,
    fresh: Option<String>,
}

/// The checked rules and what is odd about them.
#[derive(Debug, Clone, Default)]
pub struct AccessRules {
    /// The rules, `--public-path` ones first.
    pub rules: Rules,
    /// Rules that can never decide (a rule before matches all they
    /// would): logged at start and shown by `signoff rules check`.
    pub warnings: Vec<String>,
}

/// The longest `fresh` window: a day (longer is what `--absolute-timeout`
/// is for).
const MAX_FRESH: Duration = Duration::from_secs(24 * 3600);

/// Checks `[access]` (if the file has one) with the `--public-path`
/// entries. Without the table, what no rule matches needs a signed-in
/// user, as before rules existed; with it, the default is `deny` unless
/// `default` says otherwise.
pub fn check(file: Option<&AccessFile>, public_paths: &[String]) -> Result<AccessRules> {
    let mut rules = Vec::new();
    for p in public_paths {
        // `/x/` is everything under /x/, anything else that path only
        // (the meaning --public-path always had).
        let pattern = if p.len() > 1 && p.ends_with('/') {
            PathPattern::glob(&format!("{p}**"))
        } else {
            PathPattern::exact(p)
        }
        .with_context(|| format!("--public-path {p}"))?;
        rules.push(Rule::new(format!("--public-path {p}"), Access::Public).path(pattern));
    }
    let default = match file.and_then(|f| f.default.as_deref()) {
        None if file.is_some() => Access::Deny,
        None => Access::SignedIn,
        Some("deny") => Access::Deny,
        Some("signed_in") => Access::SignedIn,
        Some(other) => bail!(
            "[access] default = {other:?}: expected \"deny\" or \"signed_in\" (what a request \
             no rule matches gets)"
        ),
    };
    for (n, rule) in file
        .map(|f| f.rule.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let label = match &rule.name {
            Some(name) => format!("rule {} {name:?}", n + 1),
            None => format!("rule {}", n + 1),
        };
        rules.push(
            rule_of(rule, label.clone()).with_context(|| format!("[[access.rule]] {label}"))?,
        );
    }
    let rules = Rules::new(rules, default);
    let warnings = rules
        .shadowed()
        .into_iter()
        .map(|(later, earlier)| {
            let (later, earlier) = (&rules.rules()[later], &rules.rules()[earlier]);
            format!(
                "{} can never decide: {} comes first and matches every request it would; \
                 move it up or remove it",
                later.label, earlier.label
            )
        })
        .collect();
    Ok(AccessRules { rules, warnings })
}

fn rule_of(file: &RuleFile, label: String) -> Result<Rule> {
    let paths = [&file.path, &file.path_prefix, &file.path_glob];
    if paths.iter().filter(|p| p.is_some()).count() > 1 {
        bail!("give at most one of path, path_prefix and path_glob");
    }
    let path = match (&file.path, &file.path_prefix, &file.path_glob) {
        (Some(p), _, _) => Some(PathPattern::exact(p)?),
        (_, Some(p), _) => Some(PathPattern::prefix(p)?),
        (_, _, Some(p)) => Some(PathPattern::glob(p)?),
        _ => None,
    };
    let groups = file.groups.clone().unwrap_or_default();
    let users = file.users.clone().unwrap_or_default();
    if file.groups.as_ref().is_some_and(Vec::is_empty)
        || file.users.as_ref().is_some_and(Vec::is_empty)
    {
        bail!("groups = [] or users = [] would let nobody in; use policy = \"deny\" for that");
    }
    if !groups.is_empty() {
        signoff::check_groups(&groups).map_err(|e| anyhow::anyhow!("groups: {e}"))?;
    }
    for user in &users {
        signoff::check_name(user).map_err(|e| anyhow::anyhow!("users: {user:?}: {e}"))?;
    }
    let members = !groups.is_empty() || !users.is_empty();
    let access = match (file.policy.as_deref(), members) {
        (None | Some("signed_in"), true) => Access::Members { groups, users },
        (Some("signed_in"), false) => Access::SignedIn,
        (Some("public"), false) => Access::Public,
        (Some("deny"), false) => Access::Deny,
        (Some(p @ ("public" | "deny")), true) => bail!(
            "policy = {p:?} with groups or users: a {p} rule does not look at who is signed in; \
             leave out policy (groups and users imply a signed-in user)"
        ),
        (None, false) => bail!(
            "say what the rule allows: policy = \"public\", \"signed_in\" or \"deny\", or \
             groups = [...] and/or users = [...]"
        ),
        (Some(other), _) => {
            bail!("policy = {other:?}: expected \"public\", \"signed_in\" or \"deny\"")
        }
    };
    let mut rule = Rule::new(label, access);
    rule.path = path;
    for host in file
        .host
        .clone()
        .map(OneOrMany::into_vec)
        .unwrap_or_default()
    {
        rule.hosts.push(HostPattern::parse(&host)?);
    }
    for method in file
        .methods
        .clone()
        .map(OneOrMany::into_vec)
        .unwrap_or_default()
    {
        let valid = !method.is_empty() && method.bytes().all(|b| b.is_ascii_alphabetic());
        if !valid {
            bail!("methods: {method:?} is not an HTTP method such as GET or POST");
        }
        rule.methods.push(method.to_ascii_uppercase());
    }
    if file
        .host
        .as_ref()
        .is_some_and(|h| matches!(h, OneOrMany::Many(v) if v.is_empty()))
    {
        bail!("host = [] matches no request; leave host out to match every host");
    }
    if file
        .methods
        .as_ref()
        .is_some_and(|m| matches!(m, OneOrMany::Many(v) if v.is_empty()))
    {
        bail!("methods = [] matches no request; leave methods out to match every method");
    }
    if let Some(fresh) = &file.fresh {
        if matches!(rule.access, Access::Public | Access::Deny) {
            bail!("fresh only has a meaning for a rule that needs a signed-in user");
        }
        let window = parse_duration(fresh).context("fresh")?;
        if window > MAX_FRESH {
            bail!("fresh = {fresh:?}: at most 24h");
        }
        rule.fresh = Some(window);
    }
    Ok(rule)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AccessRules> {
        #[derive(Deserialize)]
        struct File {
            access: AccessFile,
        }
        let file: File = toml::from_str(text)?;
        check(Some(&file.access), &[])
    }

    #[test]
    fn a_file_of_rules_is_read_in_order() {
        let checked = parse(
            r#"
            [access]
            default = "signed_in"
            [[access.rule]]
            name = "static"
            path_prefix = "/static/"
            policy = "public"
            [[access.rule]]
            host = ["admin.example.com", "*.admin.example.com"]
            path_glob = "/api/*/admin/**"
            methods = "post"
            groups = ["admins"]
            users = ["alice"]
            fresh = "5m"
            [[access.rule]]
            path = "/off"
            policy = "deny"
            "#,
        )
        .unwrap();
        let rules = checked.rules.rules();
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0].label, "rule 1 \"static\"");
        assert_eq!(rules[0].access, Access::Public);
        assert_eq!(rules[0].path, Some(PathPattern::Prefix("/static".into())));
        assert_eq!(rules[1].methods, ["POST"]);
        assert_eq!(rules[1].hosts.len(), 2);
        assert_eq!(rules[1].fresh, Some(Duration::from_secs(300)));
        assert_eq!(rules[1].access, Access::members(["admins"], ["alice"]));
        assert_eq!(rules[2].access, Access::Deny);
        assert_eq!(*checked.rules.default_access(), Access::SignedIn);
        assert!(checked.warnings.is_empty());
    }

    #[test]
    fn the_default_is_deny_with_a_table_and_signed_in_without() {
        assert_eq!(
            *parse("[access]").unwrap().rules.default_access(),
            Access::Deny
        );
        let none = check(None, &["/static/".into(), "/health".into()]).unwrap();
        assert_eq!(*none.rules.default_access(), Access::SignedIn);
        assert_eq!(none.rules.rules().len(), 2);
        assert_eq!(none.rules.rules()[0].label, "--public-path /static/");
        assert_eq!(
            none.rules.rules()[0].path,
            Some(PathPattern::Glob("/static/**".into()))
        );
        assert_eq!(
            none.rules.rules()[1].path,
            Some(PathPattern::Exact("/health".into()))
        );
    }

    #[test]
    fn mistakes_are_refused_with_what_to_do() {
        for (text, says) in [
            ("default = \"public\"", "expected \"deny\" or \"signed_in\""),
            ("[[access.rule]]\npath = \"/a\"", "say what the rule allows"),
            (
                "[[access.rule]]\npath = \"/a\"\npath_prefix = \"/b\"\npolicy = \"deny\"",
                "at most one of path",
            ),
            (
                "[[access.rule]]\npolicy = \"public\"\ngroups = [\"a\"]",
                "leave out policy",
            ),
            ("[[access.rule]]\npolicy = \"allow\"", "expected \"public\""),
            ("[[access.rule]]\ngroups = []", "use policy = \"deny\""),
            (
                "[[access.rule]]\npolicy = \"public\"\nfresh = \"5m\"",
                "fresh only has a meaning",
            ),
            (
                "[[access.rule]]\npolicy = \"signed_in\"\nfresh = \"soon\"",
                "not a duration",
            ),
            (
                "[[access.rule]]\npolicy = \"signed_in\"\nfresh = \"2d\"",
                "at most 24h",
            ),
            (
                "[[access.rule]]\npolicy = \"deny\"\npath_prefix = \"/a/../b\"",
                "as the app sees it",
            ),
            (
                "[[access.rule]]\npolicy = \"deny\"\npath_prefix = \"admin\"",
                "does not start with /",
            ),
            (
                "[[access.rule]]\npolicy = \"deny\"\nhost = \"https://a.com\"",
                "expected a host name",
            ),
            (
                "[[access.rule]]\npolicy = \"deny\"\nmethods = [\"GE T\"]",
                "not an HTTP method",
            ),
            (
                "[[access.rule]]\npolicy = \"deny\"\nmethods = []",
                "matches no request",
            ),
            ("[[access.rule]]\ngroups = [\"bad group\"]", "groups"),
            (
                "[[access.rule]]\npolicy = \"deny\"\npaht = \"/x\"",
                "unknown field `paht`",
            ),
        ] {
            let err = format!("{:#}", parse(&format!("[access]\n{text}")).unwrap_err());
            assert!(err.contains(says), "{text}\n=> {err}");
        }
    }

    #[test]
    fn a_rule_after_a_catch_all_is_a_warning() {
        let checked = parse(
            "[access]\n[[access.rule]]\npolicy = \"signed_in\"\n[[access.rule]]\npath = \"/x\"\npolicy = \"public\"",
        )
        .unwrap();
        assert_eq!(checked.warnings.len(), 1);
        assert!(checked.warnings[0].starts_with("rule 2 can never decide: rule 1 comes first"));
    }
}
