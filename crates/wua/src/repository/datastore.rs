//! The persistent TUF datastore, written safely around tough.
//!
//! tough keeps the newest metadata it verified in a *datastore* directory (`root.json`,
//! `timestamp.json`, `snapshot.json`, `targets.json`, `latest_known_time.json`) and compares
//! what a repository serves against it: that is TUF's rollback and freeze protection (spec
//! 5.3.3, 5.4.3, 5.5.5, 5.6.4). Used directly it is not crash-safe:
//!
//! * it writes each file in place (`tokio::fs::write`), role by role *during* the update cycle,
//!   so a crash or a rejected download can leave a torn file, or a new timestamp beside an old
//!   snapshot;
//! * it silently ignores a datastore file it cannot parse — a torn `timestamp.json` would
//!   quietly turn rollback protection off for the next refresh.
//!
//! So tough never writes the committed datastore (`ServicePaths::datastore`, `tuf/`):
//!
//! 1. [`Lock`]: an exclusive `flock` on `tuf.lock` beside it serialises refreshes across
//!    processes (readers take it shared).
//! 2. [`recover`] finishes a swap a crash interrupted (`tuf` missing, `tuf.old` present).
//! 3. [`Committed::read`] checks that every file present parses as its kind — a file that does
//!    not is refused with `WU_E_INVALID_FILE`, never ignored.
//! 4. [`WorkDir::stage`] copies the committed files to a fresh `tuf.new-<pid>`; tough runs with
//!    that as its datastore.
//! 5. Only after the whole update cycle succeeded, [`WorkDir::commit`] fsyncs every file and
//!    directory and swaps the work directory into place atomically (`renameat2` with
//!    `RENAME_EXCHANGE`; where the file system cannot, rename-aside + rename, which step 2
//!    recovers). A failed refresh drops the work directory: the committed datastore is untouched.
//!
//! Beside tough's own files the datastore keeps, in `verified/`, the exact bytes of the
//! timestamp, snapshot and targets metadata that were verified (tough stores re-serialised
//! copies, whose hashes no longer match the signed snapshot and timestamp). They let an offline
//! load ([`super::client::load_trusted`]) run tough's whole verification again on them.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use tough::schema::{Root, Signed, Snapshot, Targets, Timestamp};

use crate::error::{Error, IoContext, Result};
use crate::hresult::WU_E_INVALID_FILE;

/// tough's trusted root.
pub(super) const ROOT: &str = "root.json";
/// tough's trusted timestamp.
pub(super) const TIMESTAMP: &str = "timestamp.json";
/// tough's trusted snapshot.
pub(super) const SNAPSHOT: &str = "snapshot.json";
/// tough's trusted targets.
pub(super) const TARGETS: &str = "targets.json";
/// tough's record of the newest system time it saw (spec 5.1: the clock must not step back).
pub(super) const LATEST_KNOWN_TIME: &str = "latest_known_time.json";
/// Our directory of the verified metadata's exact bytes.
pub(super) const VERIFIED: &str = "verified";

/// tough's files, all of which a committed datastore has.
const TOUGH_FILES: [&str; 5] = [ROOT, TIMESTAMP, SNAPSHOT, TARGETS, LATEST_KNOWN_TIME];

/// The lock file in the service directory.
pub(super) const LOCK_FILE: &str = "tuf.lock";

/// The error for a committed datastore file that is damaged or missing.
fn damaged(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::code(
        WU_E_INVALID_FILE,
        format!(
            "the trusted metadata store file {} {what}; it holds this machine's rollback \
             protection and is never reset silently: restore it from a backup, or remove the \
             update service and add it again (`wua service remove`, `wua service add`)",
            path.display()
        ),
    )
}

/// `<datastore>` with `suffix` appended to its file name (`tuf.old`, `tuf.new-<pid>`).
fn sibling(datastore: &Path, suffix: &str) -> PathBuf {
    let mut name = datastore
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "tuf".into());
    name.push(suffix);
    datastore.with_file_name(name)
}

/// Where a datastore is moved aside during a fallback swap.
fn old_path(datastore: &Path) -> PathBuf {
    sibling(datastore, ".old")
}

/// The prefix of work directories (`tuf.new-<pid>`).
fn work_prefix(datastore: &Path) -> String {
    sibling(datastore, ".new-")
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Fsyncs a file or directory.
fn sync_path(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .at("cannot sync", path)
}

/// Fsyncs the directory that holds `path`.
pub(super) fn sync_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_path(parent),
        _ => sync_path(Path::new(".")),
    }
}

/// A held `flock` on the service's lock file; dropping it unlocks.
#[derive(Debug)]
pub(super) struct Lock(File);

impl Lock {
    /// Waits for the exclusive lock (a refresh).
    pub(super) fn exclusive(dir: &Path) -> Result<Lock> {
        Lock::take(dir, libc::LOCK_EX)
    }

    /// Waits for the shared lock (an offline load: no refresh swaps the datastore meanwhile).
    pub(super) fn shared(dir: &Path) -> Result<Lock> {
        Lock::take(dir, libc::LOCK_SH)
    }

    fn take(dir: &Path, operation: libc::c_int) -> Result<Lock> {
        let path = dir.join(LOCK_FILE);
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .at("cannot open the lock file", &path)?;
        loop {
            // SAFETY: flock on a descriptor we own, with a valid operation.
            let rc = unsafe { libc::flock(file.as_raw_fd(), operation) };
            if rc == 0 {
                return Ok(Lock(file));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(Error::io("cannot lock", &path, e));
            }
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Unlock explicitly: the lock belongs to the open file description, which a process
        // forked meanwhile by another thread shares until it execs (see `crate::lock`).
        // SAFETY: flock on a descriptor we own.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Finishes a swap that a crash interrupted (call with the exclusive lock held).
///
/// The fallback swap renames `tuf` to `tuf.old`, then the work directory to `tuf`. A crash
/// between the two leaves `tuf` missing and `tuf.old` complete: it is renamed back. A crash after
/// both leaves `tuf` (complete: it was fsynced before) and `tuf.old`: the old copy is deleted.
/// Work directories of refreshes that died are deleted too.
pub(super) fn recover(datastore: &Path) -> Result<()> {
    let old = old_path(datastore);
    if !datastore.exists() && old.is_dir() {
        tracing::warn!(
            "recovering the trusted metadata store {} from an interrupted update",
            datastore.display()
        );
        fs::rename(&old, datastore).at("cannot restore", &old)?;
        sync_parent(datastore)?;
    } else if old.exists() {
        fs::remove_dir_all(&old).at("cannot remove", &old)?;
    }
    let prefix = work_prefix(datastore);
    let parent = datastore.parent().unwrap_or(Path::new("."));
    if let Ok(entries) = fs::read_dir(parent) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let path = entry.path();
                fs::remove_dir_all(&path).at("cannot remove", &path)?;
            }
        }
    }
    Ok(())
}

/// The committed datastore directory to read under the *shared* lock: `tuf`, or `tuf.old` when a
/// crash interrupted a fallback swap (the next refresh renames it back). `None`: never refreshed.
pub(super) fn committed_dir(datastore: &Path) -> Option<PathBuf> {
    if datastore.is_dir() {
        Some(datastore.to_path_buf())
    } else {
        let old = old_path(datastore);
        old.is_dir().then_some(old)
    }
}

/// The exact bytes of the verified metadata, as fetched.
#[derive(Debug, Clone)]
pub(super) struct Verified {
    /// `timestamp.json`.
    pub timestamp: Vec<u8>,
    /// The snapshot named by the timestamp.
    pub snapshot: Vec<u8>,
    /// The targets named by the snapshot.
    pub targets: Vec<u8>,
}

/// A committed datastore, every file checked.
#[derive(Debug)]
pub(super) struct Committed {
    /// The directory read.
    pub dir: PathBuf,
    /// `root.json`'s bytes: the newest trusted root, where the next update cycle starts.
    pub root_bytes: Vec<u8>,
    /// The trusted root.
    pub root: Signed<Root>,
    /// The trusted timestamp.
    pub timestamp: Signed<Timestamp>,
    /// The trusted snapshot.
    pub snapshot: Signed<Snapshot>,
    /// The exact bytes verified for the timestamp, snapshot and targets.
    pub verified: Verified,
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    match fs::read(path) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(damaged(path, "is missing")),
        Err(e) => Err(Error::io("cannot read", path, e)),
    }
}

fn parse<T: DeserializeOwned>(path: &Path, bytes: &[u8], kind: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| damaged(path, format_args!("is not {kind}: {e}")))
}

impl Committed {
    /// Reads and checks the committed datastore in `dir`: every file must be present and parse
    /// as its kind, and the verified bytes must be the metadata tough trusted.
    pub(super) fn read(dir: &Path) -> Result<Committed> {
        let entries = fs::read_dir(dir).at("cannot read directory", dir)?;
        for entry in entries {
            let entry = entry.at("cannot read directory", dir)?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            // tough may also store delegated targets roles (`<version>.<role>.json`); they are
            // not used for rollback checks, but must not be torn either.
            if name.ends_with(".json") && !TOUGH_FILES.contains(&name.as_ref()) {
                let path = entry.path();
                parse::<Signed<Targets>>(&path, &read_file(&path)?, "TUF targets metadata")?;
            }
        }
        let path = |name: &str| dir.join(name);
        let root_bytes = read_file(&path(ROOT))?;
        let root = parse(&path(ROOT), &root_bytes, "TUF root metadata")?;
        let timestamp: Signed<Timestamp> = parse(
            &path(TIMESTAMP),
            &read_file(&path(TIMESTAMP))?,
            "TUF timestamp metadata",
        )?;
        let snapshot: Signed<Snapshot> = parse(
            &path(SNAPSHOT),
            &read_file(&path(SNAPSHOT))?,
            "TUF snapshot metadata",
        )?;
        let targets: Signed<Targets> = parse(
            &path(TARGETS),
            &read_file(&path(TARGETS))?,
            "TUF targets metadata",
        )?;
        parse::<jiff::Timestamp>(
            &path(LATEST_KNOWN_TIME),
            &read_file(&path(LATEST_KNOWN_TIME))?,
            "a time stamp",
        )?;

        let verified_dir = dir.join(VERIFIED);
        let verified = Verified {
            timestamp: read_file(&verified_dir.join(TIMESTAMP))?,
            snapshot: read_file(&verified_dir.join(SNAPSHOT))?,
            targets: read_file(&verified_dir.join(TARGETS))?,
        };
        let same = |name: &str, equal: Result<bool>| -> Result<()> {
            if equal? {
                Ok(())
            } else {
                Err(damaged(
                    &verified_dir.join(name),
                    format_args!("does not hold the metadata of {}", path(name).display()),
                ))
            }
        };
        let p = |name: &str| verified_dir.join(name);
        same(
            TIMESTAMP,
            parse::<Signed<Timestamp>>(
                &p(TIMESTAMP),
                &verified.timestamp,
                "TUF timestamp metadata",
            )
            .map(|t| t == timestamp),
        )?;
        same(
            SNAPSHOT,
            parse::<Signed<Snapshot>>(&p(SNAPSHOT), &verified.snapshot, "TUF snapshot metadata")
                .map(|s| s == snapshot),
        )?;
        same(
            TARGETS,
            parse::<Signed<Targets>>(&p(TARGETS), &verified.targets, "TUF targets metadata")
                .map(|t| t == targets),
        )?;
        Ok(Committed {
            dir: dir.to_path_buf(),
            root_bytes,
            root,
            timestamp,
            snapshot,
            verified,
        })
    }

    /// Copies tough's files (not `verified/`) into `dest`, an existing directory.
    pub(super) fn copy_tough_files(&self, dest: &Path) -> Result<()> {
        for entry in fs::read_dir(&self.dir).at("cannot read directory", &self.dir)? {
            let entry = entry.at("cannot read directory", &self.dir)?;
            let from = entry.path();
            if from.is_file() {
                let to = dest.join(entry.file_name());
                fs::copy(&from, &to).at("cannot copy", &from)?;
            }
        }
        Ok(())
    }
}

/// A fresh work directory beside the committed datastore (`tuf.new-<pid>`), holding a copy of
/// it for tough to update. Deleted on drop unless committed.
#[derive(Debug)]
pub(super) struct WorkDir {
    datastore: PathBuf,
    path: PathBuf,
    committed: bool,
}

impl WorkDir {
    /// Creates the work directory, with a copy of `committed` if there is one. Call with the
    /// exclusive lock held, after [`recover`].
    pub(super) fn stage(datastore: &Path, committed: Option<&Committed>) -> Result<WorkDir> {
        let path = sibling(datastore, &format!(".new-{}", std::process::id()));
        if path.exists() {
            fs::remove_dir_all(&path).at("cannot remove", &path)?;
        }
        fs::create_dir_all(&path).at("cannot create directory", &path)?;
        let work = WorkDir {
            datastore: datastore.to_path_buf(),
            path,
            committed: false,
        };
        if let Some(committed) = committed {
            committed.copy_tough_files(&work.path)?;
        }
        Ok(work)
    }

    /// The work directory: tough's datastore for this update cycle.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Stores the exact verified bytes in `verified/`.
    pub(super) fn write_verified(&self, verified: &Verified) -> Result<()> {
        let dir = self.path.join(VERIFIED);
        fs::create_dir_all(&dir).at("cannot create directory", &dir)?;
        for (name, bytes) in [
            (TIMESTAMP, &verified.timestamp),
            (SNAPSHOT, &verified.snapshot),
            (TARGETS, &verified.targets),
        ] {
            let path = dir.join(name);
            fs::write(&path, bytes).at("cannot write", &path)?;
        }
        Ok(())
    }

    /// Makes the work directory the committed datastore: fsyncs every file and directory in
    /// it, then swaps it into place and deletes the previous datastore.
    pub(super) fn commit(mut self) -> Result<()> {
        sync_tree(&self.path)?;
        // Where the previous datastore ends up, to delete once the swap is durable.
        let previous = if self.datastore.exists() {
            if exchange(&self.path, &self.datastore)? {
                Some(self.path.clone())
            } else {
                Some(swap_by_renames(&self.path, &self.datastore)?)
            }
        } else {
            fs::rename(&self.path, &self.datastore).at("cannot rename", &self.path)?;
            None
        };
        // The new datastore is in place: nothing of it may be deleted from here on.
        self.committed = true;
        sync_parent(&self.datastore)?;
        if let Some(previous) = previous
            && let Err(e) = fs::remove_dir_all(&previous)
        {
            // The next refresh deletes it ([`recover`]).
            tracing::warn!("cannot remove {}: {e}", previous.display());
        }
        Ok(())
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Fsyncs every file below `dir`, every directory, and `dir` itself.
fn sync_tree(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).at("cannot read directory", dir)? {
        let entry = entry.at("cannot read directory", dir)?;
        let path = entry.path();
        if entry.file_type().at("cannot stat", &path)?.is_dir() {
            sync_tree(&path)?;
        } else {
            sync_path(&path)?;
        }
    }
    sync_path(dir)
}

/// Atomically exchanges two directories (`renameat2(RENAME_EXCHANGE)`). `Ok(false)` when the
/// system or file system does not support it.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> Result<bool> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes()).map_err(|e| {
            Error::io(
                "cannot rename",
                p,
                io::Error::new(io::ErrorKind::InvalidInput, e),
            )
        })
    };
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: two valid NUL-terminated paths, relative to the working directory.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL | libc::ENOSYS | libc::ENOTSUP) => Ok(false),
        _ => Err(Error::io("cannot exchange", b, e)),
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_a: &Path, _b: &Path) -> Result<bool> {
    Ok(false)
}

/// The fallback swap: `datastore` → `datastore.old`, then `work` → `datastore`; returns
/// where the previous datastore now is. A crash between the two renames leaves `datastore`
/// missing and `datastore.old` complete, which [`recover`] renames back; if the second rename
/// fails, the caller's work directory is dropped and the same recovery applies.
fn swap_by_renames(work: &Path, datastore: &Path) -> Result<PathBuf> {
    let old = old_path(datastore);
    fs::rename(datastore, &old).at("cannot rename", datastore)?;
    fs::rename(work, datastore).at("cannot rename", work)?;
    Ok(old)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hresult::WU_E_INVALID_FILE;

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn write_tree(dir: &Path, files: &[(&str, &str)]) {
        fs::create_dir_all(dir).unwrap();
        for (name, text) in files {
            let path = dir.join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
    }

    #[test]
    fn commit_swaps_the_work_directory_in_and_drops_the_old_one() {
        let t = tmp();
        let store = t.path().join("tuf");
        write_tree(&store, &[("a", "old")]);
        let work = WorkDir::stage(&store, None).unwrap();
        fs::write(work.path().join("a"), "new").unwrap();
        let work_path = work.path().to_path_buf();
        work.commit().unwrap();
        assert_eq!(fs::read_to_string(store.join("a")).unwrap(), "new");
        assert!(!work_path.exists());
        assert!(!old_path(&store).exists());
    }

    #[test]
    fn the_first_commit_creates_the_datastore() {
        let t = tmp();
        let store = t.path().join("tuf");
        let work = WorkDir::stage(&store, None).unwrap();
        fs::write(work.path().join("a"), "new").unwrap();
        work.commit().unwrap();
        assert_eq!(fs::read_to_string(store.join("a")).unwrap(), "new");
    }

    #[test]
    fn a_dropped_work_directory_leaves_the_datastore_untouched() {
        let t = tmp();
        let store = t.path().join("tuf");
        write_tree(&store, &[("a", "old")]);
        let work = WorkDir::stage(&store, None).unwrap();
        fs::write(work.path().join("a"), "new").unwrap();
        let work_path = work.path().to_path_buf();
        drop(work);
        assert!(!work_path.exists());
        assert_eq!(fs::read_to_string(store.join("a")).unwrap(), "old");
    }

    #[test]
    fn the_fallback_swap_and_its_crash_states_recover() {
        let t = tmp();
        let store = t.path().join("tuf");
        let work = t.path().join("tuf.new-1");
        write_tree(&store, &[("a", "old")]);
        write_tree(&work, &[("a", "new")]);
        let old = swap_by_renames(&work, &store).unwrap();
        assert_eq!(fs::read_to_string(store.join("a")).unwrap(), "new");
        assert_eq!(fs::read_to_string(old.join("a")).unwrap(), "old");
        assert!(!work.exists());

        // A crash after `tuf` → `tuf.old`, before the work directory was renamed in: the old
        // datastore comes back, the work directory goes.
        let t = tmp();
        let store = t.path().join("tuf");
        write_tree(&old_path(&store), &[("a", "old")]);
        write_tree(&t.path().join("tuf.new-77"), &[("a", "new")]);
        assert_eq!(committed_dir(&store), Some(old_path(&store)));
        recover(&store).unwrap();
        assert_eq!(fs::read_to_string(store.join("a")).unwrap(), "old");
        assert!(!old_path(&store).exists());
        assert!(!t.path().join("tuf.new-77").exists());

        // A crash after both renames: the new datastore stays, the old copy goes.
        let t = tmp();
        let store = t.path().join("tuf");
        write_tree(&store, &[("a", "new")]);
        write_tree(&old_path(&store), &[("a", "old")]);
        recover(&store).unwrap();
        assert_eq!(fs::read_to_string(store.join("a")).unwrap(), "new");
        assert!(!old_path(&store).exists());
    }

    #[test]
    fn a_torn_or_missing_file_is_refused_not_ignored() {
        let t = tmp();
        let store = t.path().join("tuf");
        write_tree(&store, &[(TIMESTAMP, "{\"signed\": {\"_type\": \"timest")]);
        let e = Committed::read(&store).unwrap_err();
        assert_eq!(e.hresult(), WU_E_INVALID_FILE);
        assert!(e.to_string().contains("remove the update service"), "{e}");

        let t = tmp();
        let store = t.path().join("tuf");
        fs::create_dir_all(&store).unwrap();
        let e = Committed::read(&store).unwrap_err();
        assert_eq!(e.hresult(), WU_E_INVALID_FILE);
        assert!(e.to_string().contains("is missing"), "{e}");
    }

    #[test]
    fn the_lock_is_exclusive_across_open_file_descriptions() {
        let t = tmp();
        let held = Lock::exclusive(t.path()).unwrap();
        let other = File::open(t.path().join(LOCK_FILE)).unwrap();
        // SAFETY: flock on a descriptor we own.
        let rc = unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
        assert_eq!(rc, -1, "a shared lock while the exclusive one is held");
        drop(held);
        // SAFETY: as above.
        let rc = unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
        assert_eq!(rc, 0);
    }
}
