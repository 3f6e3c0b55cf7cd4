//! Who may read the database file.

use std::fs::{self, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::OpenToOthers;
use crate::store::StoreError;

/// Refuses (or, with `allow`, warns about) a directory other users can
/// write or files they can open, and creates a missing database file
/// with mode 0600 before SQLite opens it. SQLite gives the `-wal` and
/// `-shm` it creates the main file's mode.
pub(super) fn prepare(path: &Path, allow: bool) -> Result<(), StoreError> {
    let dir = directory_of(path);
    let mut problems: Vec<String> = writable_by_others(&dir).into_iter().collect();
    if problems.is_empty() || allow {
        // create_new: never follows a planted link, never changes a file
        // that exists. The umask can only take bits away from 0600.
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) if e.kind() == ErrorKind::NotFound && !dir.exists() => {
                return Err(StoreError::Unavailable(Box::new(std::io::Error::new(
                    ErrorKind::NotFound,
                    missing_directory(&dir),
                ))))
            }
            Err(e) => return Err(StoreError::Unavailable(Box::new(e))),
        }
    }
    problems.extend(open_to_others(path));
    if problems.is_empty() {
        return Ok(());
    }
    let message = problems.join("; ");
    if allow {
        tracing::warn!("SQLITE DATABASE OPEN TO OTHER USERS (allowed by the settings): {message}");
        return Ok(());
    }
    Err(StoreError::Backend(Box::new(OpenToOthers(message))))
}

/// What opening the database at `path` would refuse or fail on, found
/// without creating or changing anything (`signoff serve --check`): a
/// directory that does not exist or that other users can write, and files
/// they can open. Each entry says how to fix it.
pub fn problems(path: &Path) -> Vec<String> {
    let dir = directory_of(path);
    if !dir.exists() {
        return vec![missing_directory(&dir)];
    }
    let mut problems: Vec<String> = writable_by_others(&dir).into_iter().collect();
    problems.extend(open_to_others(path));
    problems
}

fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn missing_directory(dir: &Path) -> String {
    format!(
        "the directory {} does not exist; create it first (mkdir -p {}) or choose another path",
        dir.display(),
        shell_quote(dir)
    )
}

fn writable_by_others(dir: &Path) -> Option<String> {
    let mode = fs::metadata(dir).ok()?.permissions().mode() & 0o7777;
    (mode & 0o022 != 0).then(|| {
        format!(
            "the directory {} is writable by other users (mode {mode:04o}), who could \
             replace the database or plant its -wal file; use a directory only this \
             user can write (chmod go-w {})",
            dir.display(),
            shell_quote(dir)
        )
    })
}

fn open_to_others(path: &Path) -> Option<String> {
    let mut open = Vec::new();
    for file in companions(path) {
        if let Ok(meta) = fs::metadata(&file) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                open.push((file, mode));
            }
        }
    }
    if open.is_empty() {
        return None;
    }
    let names: Vec<String> = open
        .iter()
        .map(|(f, mode)| format!("{} (mode {mode:04o})", f.display()))
        .collect();
    let fix: Vec<String> = companions(path).iter().map(|f| shell_quote(f)).collect();
    Some(format!(
        "other users can read or write {}, and the database holds password hashes \
         and the keys that sign access tokens; fix: chmod 600 {}",
        names.join(", "),
        fix.join(" ")
    ))
}

/// The database file and the two SQLite keeps beside it in WAL mode.
fn companions(path: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [path.to_path_buf(), with("-wal"), with("-shm")]
}

/// The path as one shell word.
fn shell_quote(path: &Path) -> String {
    let text = path.display().to_string();
    if text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+@:,".contains(&b))
    {
        text
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}
