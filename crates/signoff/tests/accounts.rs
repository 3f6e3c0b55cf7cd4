//! Accounts on the real SQLite store: Argon2id, uniform failures, rehash,
//! and a login flood that does not starve session checks.
#![cfg(all(feature = "sqlite", feature = "accounts"))]

use std::sync::Arc;
use std::time::{Duration, Instant};

use signoff::{
    AccountError, Accounts, ImportedUser, MemoryStore, NewSession, PasswordParams, Passwords,
    Policy, Sessions, SqliteStore, Timestamp, User, UserId, UserStore,
};

async fn accounts_with(passwords: Passwords) -> (Accounts, SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("users.db"))
        .await
        .unwrap();
    (
        Accounts::new(Arc::new(store.clone()), passwords),
        store,
        dir,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_outcomes() {
    let (accounts, store, _dir) = accounts_with(Passwords::new()).await;
    let alice = accounts
        .add_user("alice", "correct horse battery")
        .await
        .unwrap();
    assert!(alice
        .password_hash
        .starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
    let stored = store.user_by_name("alice").await.unwrap().unwrap();
    assert!(!stored.password_hash.contains("correct horse"));

    let ok = accounts
        .authenticate("alice", "correct horse battery")
        .await
        .unwrap();
    assert_eq!(ok.id, alice.id);
    assert!(matches!(
        accounts.authenticate("alice", "wrong horse battery").await,
        Err(AccountError::InvalidCredentials)
    ));
    assert!(matches!(
        accounts
            .authenticate("nobody", "correct horse battery")
            .await,
        Err(AccountError::InvalidCredentials)
    ));
    assert!(matches!(
        accounts.authenticate("bad name\n", "x").await,
        Err(AccountError::InvalidCredentials)
    ));
    assert!(matches!(
        accounts.add_user("alice", "another password").await,
        Err(AccountError::NameTaken)
    ));
    assert!(matches!(
        accounts.add_user("bob", "short").await,
        Err(AccountError::PasswordTooShort)
    ));

    accounts.disable("alice").await.unwrap();
    assert!(matches!(
        accounts
            .authenticate("alice", "correct horse battery")
            .await,
        Err(AccountError::Disabled)
    ));
    assert!(matches!(
        accounts.authenticate("alice", "wrong horse battery").await,
        Err(AccountError::InvalidCredentials)
    ));
    accounts.enable("alice").await.unwrap();
    accounts
        .set_password("alice", "a new passphrase")
        .await
        .unwrap();
    assert!(accounts
        .authenticate("alice", "correct horse battery")
        .await
        .is_err());
    accounts
        .authenticate("alice", "a new passphrase")
        .await
        .unwrap();
    assert!(matches!(
        accounts.set_password("nobody", "a new passphrase").await,
        Err(AccountError::UnknownUser)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outdated_hash_is_replaced_at_login() {
    let (old, store, _dir) = accounts_with(Passwords::new()).await;
    old.add_user("alice", "correct horse battery")
        .await
        .unwrap();
    let stronger = PasswordParams {
        iterations: 3,
        ..PasswordParams::OWASP
    };
    let new = Accounts::new(
        Arc::new(store.clone()),
        Passwords::with_params(stronger, 2).unwrap(),
    );
    let checked = new
        .authenticate("alice", "correct horse battery")
        .await
        .unwrap();
    let stored = store.user_by_name("alice").await.unwrap().unwrap();
    assert!(
        stored.password_hash.contains("m=19456,t=3,p=1"),
        "{}",
        stored.password_hash
    );
    // The user the sign-in returns carries the hash the store now holds,
    // so its own rehash does not make `still_signs_in` refuse it.
    assert_eq!(checked.password_hash, stored.password_hash);
    assert!(new.still_signs_in(&checked).await.unwrap());
    new.authenticate("alice", "correct horse battery")
        .await
        .unwrap();
}

/// Without the dummy verification an unknown user would answer about a
/// thousand times faster than a wrong password; with it, the two cost the
/// same work. The two are measured alternately and the fastest of each is
/// compared, so load from other tests affects both alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_user_costs_as_much_as_a_wrong_password() {
    let (accounts, store, _dir) = accounts_with(Passwords::new()).await;
    accounts
        .add_user("alice", "correct horse battery")
        .await
        .unwrap();
    // An account whose stored hash cannot be verified (beyond the cost
    // bounds): it must cost the same work too, or timing would single it out.
    store
        .insert_user(&User {
            id: UserId::new("u-unreadable"),
            name: "carol".to_owned(),
            password_hash: "pbkdf2:sha256:99999999$salt$00".to_owned(),
            disabled: false,
            created_at: Timestamp::from_millis(0),
            groups: Vec::new(),
        })
        .await
        .unwrap();
    // Warm up (the dummy hash is made on first use).
    let _ = accounts.authenticate("nobody", "x").await;
    let (mut known, mut unknown, mut unreadable) = (Duration::MAX, Duration::MAX, Duration::MAX);
    for _ in 0..7 {
        for (name, best) in [
            ("alice", &mut known),
            ("nobody", &mut unknown),
            ("carol", &mut unreadable),
        ] {
            let start = Instant::now();
            let result = accounts.authenticate(name, "wrong horse battery").await;
            *best = (*best).min(start.elapsed());
            let expected = if name == "carol" {
                matches!(result, Err(AccountError::CorruptHash))
            } else {
                matches!(result, Err(AccountError::InvalidCredentials))
            };
            assert!(expected, "{name}: {result:?}");
        }
    }
    let ratio = unknown.as_secs_f64() / known.as_secs_f64();
    assert!(ratio > 0.25 && ratio < 4.0, "unknown/known = {ratio:.2}");
    let ratio = unreadable.as_secs_f64() / known.as_secs_f64();
    assert!(ratio > 0.25 && ratio < 4.0, "unreadable/known = {ratio:.2}");
}

/// 64 failing logins at once must not stall session checks: hashing runs
/// on a bounded share of the blocking pool, off the async workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_flood_does_not_starve_session_checks() {
    let store = Arc::new(MemoryStore::new());
    let accounts = Accounts::new(store.clone(), Passwords::new());
    accounts
        .add_user("alice", "correct horse battery")
        .await
        .unwrap();
    let sessions = Sessions::new(store, Policy::default());
    let issued = sessions
        .login(None, NewSession::for_user(UserId::new("alice")))
        .await
        .unwrap();

    let flood: Vec<_> = (0..64)
        .map(|_| {
            let accounts = accounts.clone();
            tokio::spawn(async move { accounts.authenticate("alice", "wrong guess!").await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut worst = Duration::ZERO;
    for _ in 0..200 {
        let start = Instant::now();
        sessions.validate(issued.token.expose()).await.unwrap();
        worst = worst.max(start.elapsed());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut still_hashing = 0;
    for f in &flood {
        if !f.is_finished() {
            still_hashing += 1;
        }
    }
    for f in flood {
        assert!(matches!(
            f.await.unwrap(),
            Err(AccountError::InvalidCredentials)
        ));
    }
    assert!(
        still_hashing > 0,
        "the flood ended before the checks: the test proved nothing"
    );
    assert!(
        worst < Duration::from_millis(50),
        "a session check took {worst:?} during the flood"
    );
}

/// A rehash at login must not undo a password change that happened while
/// the login was being checked: the replacement is conditional.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rehash_never_overwrites_a_newer_password() {
    let (accounts, store, _dir) = accounts_with(Passwords::new()).await;
    let alice = accounts
        .add_user("alice", "correct horse battery")
        .await
        .unwrap();
    let changed = accounts
        .set_password("alice", "a new passphrase")
        .await
        .unwrap();
    // A login that read the old hash now tries to store its rehash.
    let late_rehash = accounts
        .passwords()
        .hash("correct horse battery")
        .await
        .unwrap();
    let replaced = store
        .replace_password_hash(&alice.id, &alice.password_hash, &late_rehash)
        .await
        .unwrap();
    assert!(!replaced);
    let stored = store.user_by_name("alice").await.unwrap().unwrap();
    assert_eq!(stored.password_hash, changed.password_hash);
    assert!(accounts
        .authenticate("alice", "correct horse battery")
        .await
        .is_err());
    // With the current hash as expected, it does replace.
    assert!(store
        .replace_password_hash(&alice.id, &changed.password_hash, &late_rehash)
        .await
        .unwrap());
}

/// The check a sign-in makes after creating its session: a disable or a
/// password change since the password check refuses it (its own rehash
/// does not: `outdated_hash_is_replaced_at_login`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_is_refused_if_the_account_changed_since_its_password_check() {
    let (accounts, _store, _dir) = accounts_with(Passwords::new()).await;
    accounts
        .add_user("alice", "correct horse battery")
        .await
        .unwrap();
    let checked = accounts
        .authenticate("alice", "correct horse battery")
        .await
        .unwrap();
    assert!(accounts.still_signs_in(&checked).await.unwrap());

    accounts.disable("alice").await.unwrap();
    assert!(
        !accounts.still_signs_in(&checked).await.unwrap(),
        "disabled"
    );
    accounts.enable("alice").await.unwrap();
    assert!(accounts.still_signs_in(&checked).await.unwrap());

    accounts
        .set_password("alice", "a brand new passphrase")
        .await
        .unwrap();
    assert!(
        !accounts.still_signs_in(&checked).await.unwrap(),
        "password changed"
    );
}

/// An imported user signs in with the password of the system it came
/// from, once, and its hash is Argon2id from then on; groups come back
/// as given, on the memory store and SQLite alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_users_sign_in_and_are_rehashed() {
    let (sqlite, store, _dir) = accounts_with(Passwords::new()).await;
    let memory_store = MemoryStore::new();
    let memory = Accounts::new(Arc::new(memory_store.clone()), Passwords::new());
    let stores: [(&Accounts, &dyn UserStore); 2] = [(&sqlite, &store), (&memory, &memory_store)];
    for (accounts, store) in stores {
        let imported = ImportedUser {
            name: "alice".to_owned(),
            // Werkzeug 3.1.8, generate_password_hash("correct horse", "pbkdf2:sha256:1000").
            hash: "pbkdf2:sha256:1000$bbCkugjxx0s3iBaC$a75b12e2918c9e71fec96ebf6c2340d934fe96999392749c04e3d7869eeadcfc".to_owned(),
            groups: vec!["ops".to_owned(), "admins".to_owned()],
            disabled: false,
        };
        let user = accounts.import_user(&imported).await.unwrap();
        assert_eq!(user.groups, ["admins", "ops"]);
        let stored = store.user_by_name("alice").await.unwrap().unwrap();
        assert_eq!(stored, user);
        assert!(matches!(
            accounts.import_user(&imported).await,
            Err(AccountError::NameTaken)
        ));
        assert!(matches!(
            accounts.authenticate("alice", "wrong horse").await,
            Err(AccountError::InvalidCredentials)
        ));
        let signed_in = accounts
            .authenticate("alice", "correct horse")
            .await
            .unwrap();
        let stored = store.user_by_name("alice").await.unwrap().unwrap();
        assert!(
            stored.password_hash.starts_with("$argon2id$v=19$"),
            "{}",
            stored.password_hash
        );
        assert_eq!(signed_in.password_hash, stored.password_hash);
        assert!(accounts.still_signs_in(&signed_in).await.unwrap());
        assert_eq!(stored.groups, ["admins", "ops"]);
        accounts
            .authenticate("alice", "correct horse")
            .await
            .unwrap();

        // A password below today's minimum, from the old system: it signs
        // in, and its weak hash goes all the same.
        let short = ImportedUser {
            name: "dan".to_owned(),
            // Werkzeug 3.1.8, generate_password_hash("abc123", "pbkdf2:sha256:1000").
            hash: "pbkdf2:sha256:1000$Xb4Z5hbcnBPiimTV$e13433035340747b73005c9851e920e36c1820b1adc057ea84767d57c71b8df4".to_owned(),
            groups: vec![],
            disabled: false,
        };
        accounts.import_user(&short).await.unwrap();
        let dan = accounts.authenticate("dan", "abc123").await.unwrap();
        let stored = store.user_by_name("dan").await.unwrap().unwrap();
        assert!(
            stored.password_hash.starts_with("$argon2id$v=19$"),
            "a short imported password keeps no weak hash"
        );
        assert_eq!(dan.password_hash, stored.password_hash);
        accounts.authenticate("dan", "abc123").await.unwrap();

        let added = accounts
            .add_user_in_groups("bob", "correct horse battery", &["staff".to_owned()])
            .await
            .unwrap();
        assert_eq!(
            store.user_by_id(&added.id).await.unwrap().unwrap().groups,
            ["staff"]
        );
        assert!(matches!(
            accounts
                .add_user_in_groups("carol", "correct horse battery", &["bad group".to_owned()])
                .await,
            Err(AccountError::InvalidGroup)
        ));
        for bad in [
            ImportedUser {
                name: "bad name".to_owned(),
                ..imported.clone()
            },
            ImportedUser {
                name: "dave".to_owned(),
                hash: "md5$$0123456789abcdef0123456789abcdef".to_owned(),
                ..imported.clone()
            },
            ImportedUser {
                name: "erin".to_owned(),
                groups: vec![String::new()],
                ..imported.clone()
            },
        ] {
            assert!(accounts.import_user(&bad).await.is_err());
        }
        assert_eq!(accounts.list().await.unwrap().len(), 3);
    }
}
