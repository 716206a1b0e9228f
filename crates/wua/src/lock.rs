//! The install lock: one install or uninstall at a time per agent state, across processes.
//!
//! An open-file-description record lock (`F_OFD_SETLK`) on `install.lock` in the state
//! directory, held by a job's worker for the job's whole run. OFD locks, unlike `flock`, can be
//! *tested* without being taken (`F_OFD_GETLK`): `IsBusy` probes that way, so a status query can
//! never make a concurrent `begin_install` fail by holding the lock for an instant.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// The lock file in the state directory.
pub const LOCK_FILE: &str = "install.lock";

/// The held install lock; dropping it releases the lock.
///
/// It unlocks explicitly rather than by closing the file: the lock belongs to the open file
/// description, which a child process forked by another thread of the host shares until it
/// execs. Closing only our descriptor would leave the lock held through the child's copy for
/// that moment, and the next install would be refused as busy.
#[derive(Debug)]
pub(crate) struct InstallLock(File);

fn lock_request(kind: libc::c_short) -> libc::flock {
    // SAFETY: flock is plain old data; all-zero is a valid value (whole file, pid 0 as OFD
    // locks require).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl
}

fn open(state_dir: &Path) -> Result<File> {
    std::fs::create_dir_all(state_dir).at("cannot create state directory", state_dir)?;
    let path = state_dir.join(LOCK_FILE);
    File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .at("cannot open lock file", &path)
}

impl InstallLock {
    /// Takes the install lock of the agent state in `state_dir` if it is free (`Ok(None)` when
    /// another job, in this process or another, holds it).
    pub(crate) fn try_acquire(state_dir: &Path) -> Result<Option<InstallLock>> {
        let file = open(state_dir)?;
        let fl = lock_request(libc::F_WRLCK as libc::c_short);
        // SAFETY: fcntl with a valid descriptor and a pointer to an initialised flock.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
        if rc == 0 {
            return Ok(Some(InstallLock(file)));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(None),
            _ => Err(Error::io("cannot lock", state_dir.join(LOCK_FILE), err)),
        }
    }

    /// Whether some job holds the lock now, without taking it.
    pub(crate) fn is_held(state_dir: &Path) -> Result<bool> {
        let path = state_dir.join(LOCK_FILE);
        let file = match File::options().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io("cannot open lock file", &path, e)),
        };
        let mut fl = lock_request(libc::F_WRLCK as libc::c_short);
        // SAFETY: as above; F_OFD_GETLK writes the conflicting lock, if any, into fl.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
        if rc != 0 {
            return Err(Error::io(
                "cannot test lock",
                &path,
                io::Error::last_os_error(),
            ));
        }
        Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
    }
}

impl Drop for InstallLock {
    fn drop(&mut self) {
        let fl = lock_request(libc::F_UNLCK as libc::c_short);
        // SAFETY: as above.
        let rc = unsafe { libc::fcntl(self.0.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
        if rc != 0 {
            tracing::warn!(
                "cannot release the install lock: {}",
                io::Error::last_os_error()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_is_exclusive_and_testable_without_taking_it() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            !InstallLock::is_held(dir.path()).unwrap(),
            "no lock file yet"
        );
        let held = InstallLock::try_acquire(dir.path()).unwrap().unwrap();
        assert!(InstallLock::is_held(dir.path()).unwrap());
        assert!(InstallLock::try_acquire(dir.path()).unwrap().is_none());
        drop(held);
        assert!(!InstallLock::is_held(dir.path()).unwrap());
        // Testing does not take it: a job can start right after.
        assert!(InstallLock::try_acquire(dir.path()).unwrap().is_some());
    }
}
