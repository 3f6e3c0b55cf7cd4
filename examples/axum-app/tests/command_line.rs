//! The example's command line. (Its pages are checked, with the gateway's,
//! by crates/signoff-server/tests/logout_checks.rs, which also needs this
//! file: an integration test makes `cargo test --workspace` build the
//! `signoff-example` binary those tests start.)

use std::process::Command;

#[test]
fn help_names_the_listen_address_and_the_store() {
    let out = Command::new(env!("CARGO_BIN_EXE_signoff-example"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--listen"), "{text}");
    assert!(text.contains("--db"), "{text}");
}

#[test]
fn a_store_it_cannot_open_is_an_error_that_says_what_is_expected() {
    let out = Command::new(env!("CARGO_BIN_EXE_signoff-example"))
        .args(["--listen", "127.0.0.1:0", "--db", "mysql://u:secret@h/db"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("expected sqlite://PATH"), "{text}");
    assert!(!text.contains("secret"), "{text}");
}
