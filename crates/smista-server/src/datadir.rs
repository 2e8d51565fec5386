//! The data directory: the owner's only, never reached through a symbolic link, and used by one
//! server at a time.
//!
//! - [`lock`] takes an exclusive `flock` on `smista.lock` in the directory for the life of the
//!   process (the kernel drops it when the process dies, even by SIGKILL): a second `smista serve`
//!   on the same directory refuses to start and names the holder's pid. Two servers on one SQLite
//!   ledger would each admit against the same ceiling from their own memory: two books, one
//!   ceiling.
//! - [`secure`] creates the directory and the ledger file with owner-only rights, and takes wider
//!   rights back, without following a symbolic link planted where the directory, the ledger, its
//!   WAL or its shared-memory file are expected (a link to a victim file would have had the
//!   victim's rights changed): such a link is refused, naming it.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "smista.lock";

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// Another process holds the directory's lock.
    #[error(
        "data directory {dir} is in use by another smista (pid {pid}): one server per data directory (stop it, or give this one another --data-dir)"
    )]
    InUse {
        /// The directory.
        dir: String,
        /// The holder's pid as it wrote it (`?` if unreadable).
        pid: String,
    },
    /// A symbolic link where the directory or a ledger file is expected.
    #[error("{0} is a symbolic link: smista does not follow links in its data directory (replace it with the real directory or file)")]
    Symlink(String),
    /// Creating, opening or locking failed.
    #[error("data directory {0}: {1}")]
    Io(String, std::io::Error),
}

/// The held lock: released when dropped (or when the process ends, however it ends).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError + '_ {
    move |e| DataDirError::Io(path.display().to_string(), e)
}

/// Refuses `path` if it is a symbolic link (a missing path is fine).
fn no_link(path: &Path) -> Result<(), DataDirError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(DataDirError::Symlink(path.display().to_string())),
        _ => Ok(()),
    }
}

/// Opens `path` for writing without following a link at its last component, creating it with
/// owner-only rights.
fn open_nofollow(path: &Path, create: bool) -> Result<File, DataDirError> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true).write(true).create(create);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600).custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    }
    o.open(path).map_err(|e| {
        // ELOOP: the last component is a link.
        if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
            DataDirError::Symlink(path.display().to_string())
        } else {
            DataDirError::Io(path.display().to_string(), e)
        }
    })
}

/// Creates `dir` (owner-only) if needed and takes its lock, or says who holds it.
pub fn lock(dir: &Path) -> Result<DataDirLock, DataDirError> {
    create_private(dir)?;
    let path = dir.join(LOCK_FILE);
    let mut file = open_nofollow(&path, true)?;
    #[cfg(unix)]
    {
        use rustix::fs::{flock, FlockOperation};
        if let Err(e) = flock(&file, FlockOperation::NonBlockingLockExclusive) {
            if e == rustix::io::Errno::WOULDBLOCK {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                let pid = if pid.is_empty() || pid.len() > 20 { "?".to_owned() } else { pid.to_owned() };
                return Err(DataDirError::InUse { dir: dir.display().to_string(), pid });
            }
            return Err(DataDirError::Io(path.display().to_string(), e.into()));
        }
    }
    file.set_len(0).map_err(io(&path))?;
    file.rewind().map_err(io(&path))?;
    writeln!(file, "{}", std::process::id()).map_err(io(&path))?;
    Ok(DataDirLock { _file: file })
}

/// Creates `dir` (and its parents) owner-only, refusing a symbolic link at its place.
pub fn create_private(dir: &Path) -> Result<(), DataDirError> {
    no_link(dir)?;
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(io(dir))?;
    // Created just now, or there before: a link is refused either way.
    no_link(dir)
}

/// Creates `dir` and `ledger` (its SQLite file) owner-only, and takes wider rights back from
/// them and from the WAL and shared-memory files, refusing any symbolic link among them. Rights
/// are changed on the opened file, never through a path that could be swapped for a link.
pub fn secure(dir: &Path, ledger: &Path) -> Result<(), DataDirError> {
    create_private(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let d = File::open(dir).map_err(io(dir))?;
        d.set_permissions(std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
        for suffix in ["", "-wal", "-shm"] {
            let f = PathBuf::from(format!("{}{suffix}", ledger.display()));
            no_link(&f)?;
            let create = suffix.is_empty();
            if !create && !f.exists() {
                continue;
            }
            let file = open_nofollow(&f, create)?;
            file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(io(&f))?;
        }
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("smista-datadir-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_second_lock_on_the_directory_is_refused_naming_the_holder() {
        let d = temp("lock");
        let held = lock(&d).expect("first");
        let e = lock(&d).expect_err("second");
        assert!(matches!(&e, DataDirError::InUse { pid, .. } if *pid == std::process::id().to_string()), "{e}");
        drop(held);
        lock(&d).expect("free again once dropped");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn links_where_the_ledger_or_the_directory_should_be_are_refused_and_the_target_untouched() {
        use std::os::unix::fs::PermissionsExt;
        let d = temp("links");
        std::fs::create_dir_all(&d).expect("dir");
        let victim = d.join("victim");
        std::fs::write(&victim, "x").expect("victim");
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let data = d.join("data");
        std::fs::create_dir_all(&data).expect("data");
        for name in ["ledger.db", "ledger.db-wal", "ledger.db-shm"] {
            let link = data.join(name);
            std::os::unix::fs::symlink(&victim, &link).expect("link");
            let e = secure(&data, &data.join("ledger.db")).expect_err("a link is refused");
            assert!(matches!(&e, DataDirError::Symlink(p) if p.ends_with(name)), "{name}: {e}");
            std::fs::remove_file(&link).expect("unlink");
        }
        let mode = std::fs::metadata(&victim).expect("victim").permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "the victim's rights are untouched");
        let linked_dir = d.join("linked");
        std::os::unix::fs::symlink(&data, &linked_dir).expect("dir link");
        let e = secure(&linked_dir, &linked_dir.join("ledger.db")).expect_err("a linked directory is refused");
        assert!(matches!(e, DataDirError::Symlink(_)), "{e}");
        assert!(matches!(lock(&linked_dir), Err(DataDirError::Symlink(_))));
        secure(&data, &data.join("ledger.db")).expect("a plain directory is fine");
        let _ = std::fs::remove_dir_all(&d);
    }
}
