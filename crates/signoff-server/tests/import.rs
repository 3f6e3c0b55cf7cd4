//! `signoff user import`: users from Flask-Login (Werkzeug) and Django keep
//! their passwords through a real `signoff serve`, their hashes become
//! Argon2id at the first sign-in, and a bad file imports nothing.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use signoff::{SqliteStore, UserStore};
use support::{login_at, missing, post_form, Gateway, Upstream};

/// `signoff ARGS --db DB`, with `stdin`.
fn signoff(args: &[&str], db: &str, stdin: &str) -> Output {
    let mut all = args.to_vec();
    all.extend(["--db", db]);
    support::signoff_in(Path::new("."), &[], &all, stdin)
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// Hashes made by Werkzeug itself, for the given passwords: its default
/// (scrypt) and pbkdf2:sha256.
fn werkzeug_hashes(passwords: [&str; 2]) -> Option<[String; 2]> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys; from werkzeug.security import generate_password_hash as g; \
             print(g(sys.argv[1])); print(g(sys.argv[2], 'pbkdf2:sha256:600000'))",
            passwords[0],
            passwords[1],
        ])
        .output();
    match out {
        Ok(out) if out.status.success() => {
            let text = text(&out.stdout);
            let mut lines = text.lines().map(str::to_owned);
            let mut next = || lines.next().expect("werkzeug printed two hashes");
            Some([next(), next()])
        }
        _ => missing("python3 with werkzeug (pip install flask)"),
    }
}

async fn stored_hash(path: &Path, name: &str) -> String {
    let store = SqliteStore::open(path).await.unwrap();
    store
        .user_by_name(name)
        .await
        .unwrap()
        .unwrap()
        .password_hash
}

async fn refused(origin: &str, user: &str, password: &str) {
    let reply = post_form(
        &format!("{origin}/.signoff/login"),
        &[("username", user), ("password", password)],
        &[("origin", origin)],
    )
    .await;
    // 401, not any answer without a session: a throttle or a server error
    // would not show that the wrong password was refused.
    assert_eq!(
        reply.status,
        401,
        "{user} with a wrong password: {}",
        reply.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_users_keep_their_passwords_and_are_rehashed_at_first_sign_in() {
    let Some([wz_scrypt, wz_pbkdf2]) = werkzeug_hashes(["flask scrypt pw", "flask pbkdf2 pw"])
    else {
        return;
    };
    let Some(upstream) = Upstream::start() else {
        return;
    };
    // Django 4+'s Argon2PasswordHasher writes "argon2" before the PHC string.
    let argon2 = format!(
        "argon2{}",
        signoff::Passwords::new()
            .hash("django argon pw")
            .await
            .unwrap()
    );
    // Django's PBKDF2PasswordHasher and BCryptSHA256PasswordHasher, and a
    // plain bcrypt (libxcrypt), all of "correct horse".
    let django_pbkdf2 =
        "pbkdf2_sha256$1000$seasalt1234567890ab$BUJ1PqaWBI6hYCX8FneFOjJPgAiM36Tv/QKPBvUfAZo=";
    let django_bcrypt =
        "bcrypt_sha256$$2b$04$ZYXWVUTSRQPONMLKJIHGFu0sI3gftrXTLrp1aKqK4FXBQQIodFxdW";
    let bcrypt = "$2b$04$abcdefghijklmnopqrstuujydOTSfIH/d5oUHpsygqV5X9xJLQc6e";

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signoff.db");
    let db = format!("sqlite://{}", path.display());
    let jsonl = dir.path().join("users.jsonl");
    std::fs::write(
        &jsonl,
        format!(
            "{{\"name\":\"flask-scrypt\",\"hash\":\"{wz_scrypt}\",\"groups\":[\"admins\",\"ops\"]}}\n\
             \n\
             {{\"name\":\"flask-pbkdf2\",\"hash\":\"{wz_pbkdf2}\",\"disabled\":false}}\n\
             {{\"name\":\"django-argon\",\"hash\":\"{argon2}\",\"groups\":[]}}\n"
        ),
    )
    .unwrap();
    let csv = dir.path().join("users.csv");
    std::fs::write(
        &csv,
        format!(
            "name,hash,groups,disabled\n\
             django-pbkdf2,{django_pbkdf2},staff;ops,no\n\
             django-bcrypt,\"{django_bcrypt}\",,\n\
             bcrypt,{bcrypt},staff,false\n"
        ),
    )
    .unwrap();
    let all_hashes = [
        wz_scrypt.as_str(),
        wz_pbkdf2.as_str(),
        argon2.as_str(),
        django_pbkdf2,
        django_bcrypt,
        bcrypt,
    ];
    let never_printed = |out: &Output| {
        for hash in all_hashes {
            let salt_and_hash = hash.rsplit('$').next().unwrap();
            assert!(!text(&out.stdout).contains(salt_and_hash), "printed a hash");
            assert!(!text(&out.stderr).contains(salt_and_hash), "printed a hash");
        }
    };

    // A dry run checks and reports, and creates no database.
    let dry = signoff(
        &["user", "import", jsonl.to_str().unwrap(), "--dry-run"],
        &db,
        "",
    );
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    assert!(
        text(&dry.stdout).contains("dry run: 3 user(s)"),
        "{}",
        text(&dry.stdout)
    );
    assert!(!path.exists(), "a dry run created the database");
    never_printed(&dry);

    let out = signoff(&["user", "import", jsonl.to_str().unwrap()], &db, "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("imported 3 user(s) into"), "{stdout}");
    assert!(stdout.contains("Werkzeug scrypt: 1"), "{stdout}");
    assert!(stdout.contains("Werkzeug pbkdf2: 1"), "{stdout}");
    assert!(stdout.contains("Django argon2: 1"), "{stdout}");
    assert!(
        stdout.contains("Argon2id at the user's first successful sign-in"),
        "{stdout}"
    );
    never_printed(&out);

    // CSV from standard input, with the weak hashes named as a risk.
    let out = signoff(
        &["user", "import", "-", "--format", "csv"],
        &db,
        &std::fs::read_to_string(&csv).unwrap(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("imported 3 user(s)"));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("warning: line 2 (\"django-pbkdf2\")") && stderr.contains("100000"),
        "{stderr}"
    );
    assert!(stderr.contains("bcrypt cost below 10"), "{stderr}");
    never_printed(&out);

    let list = text(&signoff(&["user", "list"], &db, "").stdout);
    assert!(
        list.lines()
            .any(|l| l.starts_with("flask-scrypt\t") && l.ends_with("\tactive\tadmins,ops")),
        "{list}"
    );
    assert!(
        list.lines()
            .any(|l| l.starts_with("django-pbkdf2\t") && l.ends_with("\tops,staff")),
        "{list}"
    );
    assert!(
        list.lines()
            .any(|l| l.starts_with("flask-pbkdf2\t") && l.ends_with("\t-")),
        "{list}"
    );

    // Existing users: refused and listed, or skipped; never overwritten.
    let again = signoff(&["user", "import", jsonl.to_str().unwrap()], &db, "");
    assert!(!again.status.success());
    let stderr = text(&again.stderr);
    for name in ["flask-scrypt", "flask-pbkdf2", "django-argon"] {
        assert!(
            stderr.contains(&format!("({name:?}): a user with this name exists already")),
            "{stderr}"
        );
    }
    assert!(
        stderr.contains("--skip-existing") && stderr.contains("nothing imported"),
        "{stderr}"
    );
    let before = stored_hash(&path, "flask-scrypt").await;
    let skipped = signoff(
        &["user", "import", jsonl.to_str().unwrap(), "--skip-existing"],
        &db,
        "",
    );
    assert!(skipped.status.success(), "{}", text(&skipped.stderr));
    assert!(text(&skipped.stdout).contains("imported 0 user(s)"));
    assert!(text(&skipped.stdout).contains("skipped 3 existing user(s)"));
    assert_eq!(stored_hash(&path, "flask-scrypt").await, before);

    // Each signs in through signoff with its old password, once rehashed
    // to Argon2id, and again with the same password afterwards.
    let gateway = Gateway::start_on(
        tempfile::tempdir().unwrap(),
        &db,
        Some(&upstream.url()),
        &[],
    );
    // A wrong password is refused, before and after the rehash (a few
    // only: the gateway slows down repeated failures from one address).
    for (i, (name, password)) in [
        ("flask-scrypt", "flask scrypt pw"),
        ("flask-pbkdf2", "flask pbkdf2 pw"),
        ("django-argon", "django argon pw"),
        ("django-pbkdf2", "correct horse"),
        ("django-bcrypt", "correct horse"),
        ("bcrypt", "correct horse"),
    ]
    .into_iter()
    .enumerate()
    {
        assert!(
            !stored_hash(&path, name).await.starts_with("$argon2id$"),
            "{name}"
        );
        if i % 2 == 0 {
            refused(&gateway.origin, name, "not the password").await;
        }
        login_at(&gateway.origin, name, password).await;
        let hash = stored_hash(&path, name).await;
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{name}: not rehashed"
        );
        login_at(&gateway.origin, name, password).await;
        if i == 1 {
            refused(&gateway.origin, name, "flask scrypt pw").await;
        }
    }
}

/// Runs an import of `body` (named `file_name`) that must fail saying
/// `needle`, and leave the store as it was.
async fn refused_import(
    dir: &Path,
    db: &str,
    file_name: &str,
    body: &str,
    extra: &[&str],
    needle: &str,
) -> String {
    let path = dir.join(file_name);
    std::fs::write(&path, body).unwrap();
    let mut args = vec!["user", "import", path.to_str().unwrap()];
    args.extend(extra);
    let out = signoff(&args, db, "");
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{file_name} was imported");
    assert!(stderr.contains(needle), "{file_name}: {stderr}");
    let list = text(&signoff(&["user", "list"], db, "").stdout);
    assert!(!list.contains("newbie"), "{file_name}: a row was imported");
    assert_eq!(list.lines().count(), 1, "{list}");
    stderr
}

/// `user add --group` puts a user in groups; `user list` shows them.
#[test]
fn users_are_added_in_groups() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("signoff.db").display());
    let bad = signoff(
        &[
            "user",
            "add",
            "carol",
            "--password-stdin",
            "--group",
            "no spaces",
        ],
        &db,
        "correct horse battery\n",
    );
    assert!(!bad.status.success());
    assert!(text(&bad.stderr).contains("groups are 1 to 64 characters"));
    let out = signoff(
        &[
            "user",
            "add",
            "carol",
            "--password-stdin",
            "--group",
            "ops",
            "--group",
            "admins:eu",
        ],
        &db,
        "correct horse battery\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = text(&signoff(&["user", "list"], &db, "").stdout);
    assert!(
        list.starts_with("carol\t") && list.trim_end().ends_with("\tactive\tadmins:eu,ops"),
        "{list}"
    );
}

#[tokio::test]
async fn a_bad_file_imports_nothing_and_says_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("signoff.db").display());
    let good =
        "pbkdf2_sha256$1000$seasalt1234567890ab$BUJ1PqaWBI6hYCX8FneFOjJPgAiM36Tv/QKPBvUfAZo=";
    let out = signoff(
        &["user", "import", "-", "--format", "jsonl"],
        &db,
        &format!("{{\"name\":\"existing\",\"hash\":\"{good}\"}}\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let newbie = format!("{{\"name\":\"newbie\",\"hash\":\"{good}\"}}");
    let d = dir.path();

    // Every problem is reported, each with its line, in one run.
    let body = format!(
        "{newbie}\n\
         {{\"name\":\"md5user\",\"hash\":\"md5$$0123456789abcdef0123456789abcdef\"}}\n\
         {{\"name\":\"bad name\",\"hash\":\"{good}\"}}\n\
         {{\"name\":\"newbie\",\"hash\":\"{good}\"}}\n\
         {{\"name\":\"existing\",\"hash\":\"{good}\"}}\n\
         {{\"name\":\"grouped\",\"hash\":\"{good}\",\"groups\":[\"no spaces\"]}}\n\
         {{\"name\":\"hostile\",\"hash\":\"pbkdf2:sha256:999999999$salt$a75b12e2918c9e71fec96ebf6c2340d934fe96999392749c04e3d7869eeadcfc\"}}\n"
    );
    let path = d.join("many.jsonl");
    std::fs::write(&path, &body).unwrap();
    let out = signoff(&["user", "import", path.to_str().unwrap()], &db, "");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    for needle in [
        "line 2 (\"md5user\"): the password hash is not importable: not a password hash format",
        "line 3: the user name is not valid (8 characters)",
        "line 4 (\"newbie\"): the name is also on line 1",
        "line 5 (\"existing\"): a user with this name exists already",
        "line 6 (\"grouped\"): groups are 1 to 64 characters",
        "line 7 (\"hostile\"): the password hash is not importable: a Werkzeug pbkdf2 hash with sha256, 999999999 iterations, above signoff's bound",
        "6 problem(s) in",
        "nothing imported",
    ] {
        assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    }
    assert!(
        !stderr.contains("a75b12e2918c9e71fec"),
        "printed a hash: {stderr}"
    );
    assert!(
        !stderr.contains("bad name"),
        "printed an invalid name: {stderr}"
    );
    // Weak-hash warnings wait until the file is otherwise good.
    assert!(!stderr.contains("warning:"), "{stderr}");
    // The dry run says the same.
    refused_import(d, &db, "many.jsonl", &body, &["--dry-run"], "6 problem(s)").await;

    refused_import(
        d,
        &db,
        "swapped.csv",
        &format!("hash,name\nnewbie,{good}\n"),
        &[],
        "line 2: the user name is not valid",
    )
    .await;
    let swapped = signoff(
        &["user", "import", d.join("swapped.csv").to_str().unwrap()],
        &db,
        "",
    );
    assert!(
        !text(&swapped.stderr).contains("seasalt"),
        "printed a hash: {}",
        text(&swapped.stderr)
    );
    refused_import(
        d,
        &db,
        "bad.jsonl",
        &format!("{newbie}\n{{\"name\":\"x\",\n"),
        &[],
        "line 2: not a user object",
    )
    .await;
    refused_import(
        d,
        &db,
        "unknown.jsonl",
        &format!("{newbie}\n{{\"name\":\"x\",\"hash\":\"{good}\",\"password\":\"p\"}}\n"),
        &[],
        "unknown field",
    )
    .await;
    refused_import(
        d,
        &db,
        "array.json",
        &format!("[{newbie}]\n"),
        &[],
        "one JSON object per line",
    )
    .await;
    refused_import(
        d,
        &db,
        "users.txt",
        "alice pbkdf2\n",
        &[],
        "cannot tell the format",
    )
    .await;
    refused_import(
        d,
        &db,
        "bad.csv",
        &format!("name,hash\nnewbie,{good}\nx,{good},extra\n"),
        &[],
        "line 3: not a CSV row",
    )
    .await;
    refused_import(
        d,
        &db,
        "header.csv",
        &format!("user,password\nnewbie,{good}\n"),
        &[],
        "must name the columns name and hash",
    )
    .await;
    refused_import(
        d,
        &db,
        "flag.csv",
        &format!("name,hash,disabled\nnewbie,{good},perhaps\n"),
        &[],
        "line 2: disabled is not a yes or no (7 characters)",
    )
    .await;
    // Columns in the wrong order: the hash lands in `disabled`, and the
    // message names the column without printing what it holds.
    let said = refused_import(
        d,
        &db,
        "order.csv",
        &format!("name,groups,disabled,hash\nnewbie,,{good},x\n"),
        &[],
        "disabled is not a yes or no",
    )
    .await;
    assert!(!said.contains(&good[10..]), "the hash was printed: {said}");
    refused_import(
        d,
        &db,
        "long.jsonl",
        &format!("{newbie}\n{}\n", "x".repeat(70 * 1024)),
        &[],
        "line 2 of",
    )
    .await;
    refused_import(
        d,
        &db,
        "empty.csv",
        "name,hash\n",
        &[],
        "no users to import",
    )
    .await;
    refused_import(
        d,
        &db,
        "wrong-format.csv",
        &format!("{newbie}\n"),
        &["--format", "csv"],
        "must name the columns",
    )
    .await;
}
