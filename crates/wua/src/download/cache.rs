//! The content-addressed payload cache: `<state>/cache/payloads/<sha256>.tar.zst`, each file
//! verified (length and SHA-256) before it was put there, and `<state>/cache/partial/`, where
//! downloads in progress wait to be resumed ([`crate::service::payload_cache_dir`],
//! [`crate::service::partial_download_dir`]).
//!
//! A partial file is never trusted: resuming re-hashes the bytes already there and continues
//! from its end, and only the final length and digest decide. Committing fsyncs the file,
//! renames it into the verified directory and fsyncs that directory, so after a crash a file
//! in the verified directory is complete. A mismatch deletes the partial and fails with
//! `WU_E_DM_INCORRECTFILEHASH`.
//!
//! Two downloaders of the same payload (threads, or processes sharing the state directory)
//! take turns: each holds an exclusive `flock` on the partial file while it writes, and the
//! second, once it has the lock, finds the payload verified and stops.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use aws_lc_rs::digest;

use crate::error::{Error, Result};
use crate::hresult::*;

/// Extension of a verified payload in the cache.
const PAYLOAD_SUFFIX: &str = ".tar.zst";
/// Extension of a partial download.
const PARTIAL_SUFFIX: &str = ".tar.zst.part";
/// Bytes read at a time when re-hashing a partial file or verifying a file in place.
const READ_CHUNK: usize = 1024 << 10;
/// Written bytes after which the kernel is asked to start writing them back
/// (`sync_file_range`), so the fsync at commit does not find a whole payload still dirty.
const WRITEBACK_EVERY: u64 = 32 << 20;

/// The agent's content-addressed payload cache (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayloadCache {
    verified: PathBuf,
    partial: PathBuf,
    durable: bool,
}

impl PayloadCache {
    /// The cache of the agent whose state directory is `state_dir`.
    pub fn new(state_dir: &Path) -> PayloadCache {
        PayloadCache::at(
            crate::service::payload_cache_dir(state_dir),
            crate::service::partial_download_dir(state_dir),
        )
    }

    /// A cache with its two directories given. They must be on one file system: a payload
    /// moves from one to the other by `rename(2)`.
    pub fn at(verified_dir: impl Into<PathBuf>, partial_dir: impl Into<PathBuf>) -> PayloadCache {
        PayloadCache {
            verified: verified_dir.into(),
            partial: partial_dir.into(),
            durable: true,
        }
    }

    /// Whether a payload is made durable (fsynced, with its directory) before it counts as
    /// in the cache. On by default; off is the agent's `unsafe_io` (like dpkg's
    /// `--force-unsafe-io`): for containers and CI, where a power cut does not matter. A
    /// payload damaged by a power cut is caught anyway: installs check its digest again.
    pub fn durable(&self) -> bool {
        self.durable
    }

    /// Sets [`Self::durable`].
    pub fn set_durable(&mut self, durable: bool) {
        self.durable = durable;
    }

    /// The directory of verified payloads.
    pub fn verified_dir(&self) -> &Path {
        &self.verified
    }

    /// The directory of partial downloads.
    pub fn partial_dir(&self) -> &Path {
        &self.partial
    }

    /// Where the verified payload with this SHA-256 (lower-case hex) is, or would be.
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.verified.join(format!("{sha256}{PAYLOAD_SUFFIX}"))
    }

    /// Where a partial download of this payload is kept until it is complete.
    pub fn partial_path(&self, sha256: &str) -> PathBuf {
        self.partial.join(format!("{sha256}{PARTIAL_SUFFIX}"))
    }

    /// True when the verified payload with this SHA-256 is in the cache. Only verified files
    /// are ever put there, so this reads nothing but the directory entry.
    pub fn contains(&self, sha256: &str) -> bool {
        is_sha256(sha256)
            && fs::metadata(self.path(sha256))
                .map(|m| m.is_file())
                .unwrap_or(false)
    }

    /// [`Self::contains`], and the file has `length` bytes (a cheap guard against a file
    /// damaged since it was verified; a damaged one is downloaded again).
    pub(crate) fn contains_with_length(&self, sha256: &str, length: u64) -> bool {
        is_sha256(sha256)
            && fs::metadata(self.path(sha256))
                .map(|m| m.is_file() && m.len() == length)
                .unwrap_or(false)
    }

    /// Opens (creating it if needed) the partial file of `sha256` and locks it. `Ok(None)`
    /// when another downloader holds the lock: try again later.
    pub(crate) fn try_open_partial(&self, sha256: &str) -> Result<Option<PartialFile>> {
        check_sha256(sha256)?;
        fs::create_dir_all(&self.partial)
            .map_err(|e| cache_io("cannot create directory", &self.partial, e))?;
        let path = self.partial_path(sha256);
        loop {
            let file = File::options()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| cache_io("cannot open partial download", &path, e))?;
            // SAFETY: flock on a descriptor we own; no memory is involved.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    return Ok(None);
                }
                return Err(cache_io("cannot lock partial download", &path, err));
            }
            // The lock is on the file we opened; while we waited for it, its holder may have
            // committed it (renamed into the verified directory) or deleted it. Then this is
            // no longer the partial file: open the one at the path now.
            let ours = file
                .metadata()
                .map_err(|e| cache_io("cannot read partial download", &path, e))?;
            match fs::metadata(&path) {
                Ok(now) if now.dev() == ours.dev() && now.ino() == ours.ino() => {
                    return Ok(Some(PartialFile {
                        file,
                        path,
                        sha256: sha256.to_string(),
                        durable: self.durable,
                        written: 0,
                        unsynced_from: 0,
                    }));
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(cache_io("cannot read partial download", &path, e)),
            }
        }
    }
}

/// SHA-256 of a byte stream, and how many bytes it had.
pub(crate) struct Hasher {
    context: digest::Context,
    length: u64,
}

impl Hasher {
    pub(crate) fn new() -> Hasher {
        Hasher {
            context: digest::Context::new(&digest::SHA256),
            length: 0,
        }
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        self.context.update(data);
        self.length += data.len() as u64;
    }

    pub(crate) fn length(&self) -> u64 {
        self.length
    }

    /// The lower-case hex digest and the length.
    pub(crate) fn finish(self) -> (String, u64) {
        (hex::encode(self.context.finish().as_ref()), self.length)
    }
}

/// What a payload must be: the length and SHA-256 from its signed metadata, and where it
/// comes from (for messages).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Expected<'a> {
    pub sha256: &'a str,
    pub length: u64,
    pub source: &'a str,
}

impl Expected<'_> {
    /// The `WU_E_DM_INCORRECTFILEHASH` error for content that is not this payload.
    pub(crate) fn mismatch(&self, got: &str) -> Error {
        Error::code(
            WU_E_DM_INCORRECTFILEHASH,
            format!(
                "payload {} from {} is not the file its signed metadata describes: expected {} bytes with SHA-256 {}, got {got}; the partial download was deleted. The server may be serving a damaged or replaced file: retry the download, and if it fails again, report it to the service's publisher",
                self.sha256, self.source, self.length, self.sha256
            ),
        )
    }
}

/// A locked partial download (see [`PayloadCache::try_open_partial`]). Dropping it keeps the
/// file for a later resume and releases the lock.
pub(crate) struct PartialFile {
    file: File,
    path: PathBuf,
    sha256: String,
    durable: bool,
    /// The file's length as written through this handle.
    written: u64,
    /// Where the bytes not yet handed to write-back start.
    unsynced_from: u64,
}

impl PartialFile {
    /// Re-hashes the bytes already in the file (a partial file was never verified) and
    /// positions the file at their end, ready to append. A file longer than `limit` cannot be
    /// a prefix of the payload: it is emptied. `aborted` is asked between chunks; if it says
    /// so, `WU_E_CALL_CANCELLED`.
    pub(crate) fn resume(&mut self, limit: u64, aborted: &dyn Fn() -> bool) -> Result<Hasher> {
        let len = self.prepare_resume(limit)?;
        let mut hasher = Hasher::new();
        let read = hash_prefix(&self.file, len, &mut hasher, aborted)
            .map_err(|e| cache_io("cannot read partial download", &self.path, e))?;
        if aborted() {
            return Err(cancelled());
        }
        if read < len {
            // Shorter than its length said (it shrank under us): cut it where the hash stopped.
            self.truncate_to(read)?;
        }
        Ok(hasher)
    }

    /// Positions the file at its end, ready to append, and returns its length; a file longer
    /// than `limit` cannot be a prefix of the payload and is emptied first. The bytes already
    /// there were never verified: they must be hashed ([`Self::prefix_reader`],
    /// [`hash_prefix`]) with the rest.
    pub(crate) fn prepare_resume(&mut self, limit: u64) -> Result<u64> {
        let len = self
            .file
            .metadata()
            .map_err(|e| cache_io("cannot read partial download", &self.path, e))?
            .len();
        if len > limit {
            self.restart()?;
            return Ok(0);
        }
        self.truncate_to(len)?;
        Ok(len)
    }

    /// A second handle on the file, to hash what is already there while new bytes are
    /// appended: [`hash_prefix`] reads at explicit offsets, so it never moves the append
    /// position.
    pub(crate) fn prefix_reader(&self) -> Result<File> {
        self.file
            .try_clone()
            .map_err(|e| cache_io("cannot read partial download", &self.path, e))
    }

    /// Where the partial file is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn truncate_to(&mut self, len: u64) -> Result<()> {
        self.file
            .set_len(len)
            .and_then(|()| self.file.seek(SeekFrom::Start(len)))
            .map_err(|e| cache_io("cannot write partial download", &self.path, e))?;
        self.written = len;
        self.unsynced_from = len;
        Ok(())
    }

    /// Empties the file, to download from the start.
    pub(crate) fn restart(&mut self) -> Result<()> {
        self.file
            .set_len(0)
            .and_then(|()| self.file.seek(SeekFrom::Start(0)))
            .map_err(|e| cache_io("cannot truncate partial download", &self.path, e))?;
        self.written = 0;
        self.unsynced_from = 0;
        Ok(())
    }

    /// Appends `data`.
    pub(crate) fn write_all(&mut self, data: &[u8]) -> Result<()> {
        self.file
            .write_all(data)
            .map_err(|e| cache_io("cannot write partial download", &self.path, e))?;
        self.written += data.len() as u64;
        if self.durable && self.written - self.unsynced_from >= WRITEBACK_EVERY {
            // Start write-back of what was written so far without waiting for it; the fsync
            // at commit then finds little left to do. Advisory: a failure changes nothing.
            // SAFETY: a syscall on a descriptor we own, with plain integer arguments.
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    self.unsynced_from as libc::off64_t,
                    (self.written - self.unsynced_from) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
            self.unsynced_from = self.written;
        }
        Ok(())
    }

    /// Checks what was written (`got`: digest and length, from the [`Hasher`] fed with every
    /// byte) against `expected`. Equal: fsyncs the file, renames it into the verified
    /// directory and fsyncs that directory; returns the verified path. Different: deletes the
    /// partial file and fails with `WU_E_DM_INCORRECTFILEHASH`.
    pub(crate) fn commit(
        self,
        cache: &PayloadCache,
        expected: &Expected<'_>,
        got: (String, u64),
    ) -> Result<PathBuf> {
        let (digest, length) = got;
        if length != expected.length || digest != expected.sha256 {
            self.discard();
            return Err(expected.mismatch(&format!("{length} bytes with SHA-256 {digest}")));
        }
        debug_assert_eq!(self.sha256, expected.sha256);
        if self.durable {
            self.file
                .sync_all()
                .map_err(|e| cache_io("cannot write partial download", &self.path, e))?;
        }
        fs::create_dir_all(&cache.verified)
            .map_err(|e| cache_io("cannot create directory", &cache.verified, e))?;
        let target = cache.path(&self.sha256);
        fs::rename(&self.path, &target)
            .map_err(|e| cache_io("cannot move verified payload to", &target, e))?;
        if self.durable {
            sync_dir(&cache.verified)?;
        }
        Ok(target)
    }

    /// Deletes the partial file (still holding its lock, so a waiting downloader sees it gone
    /// and starts afresh).
    pub(crate) fn discard(self) {
        if let Err(e) = fs::remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!("cannot delete {}: {e}", self.path.display());
        }
    }

    /// Deletes the partial file if it is empty (it was only created to take the lock).
    pub(crate) fn discard_if_empty(self) {
        if self.file.metadata().map(|m| m.len() == 0).unwrap_or(false) {
            self.discard();
        }
    }
}

/// Feeds the first `len` bytes of `file` to `hasher`, reading at explicit offsets (the file
/// position is untouched), and returns how many it read: fewer at an early end of file, or
/// when `aborted` says so (it is asked between chunks).
pub(crate) fn hash_prefix(
    file: &File,
    len: u64,
    hasher: &mut Hasher,
    aborted: &dyn Fn() -> bool,
) -> io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; READ_CHUNK];
    let mut at = 0u64;
    while at < len && !aborted() {
        let want = (len - at).min(READ_CHUNK as u64) as usize;
        let n = match file.read_at(&mut buf[..want], at) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok(at)
}

/// Hashes the file at `path` and checks it against `expected` without changing anything (a
/// catalog directory's own payload, verified in place). Missing: `WU_E_DM_URLNOTAVAILABLE`,
/// there being nowhere else to get it from; different: `WU_E_DM_INCORRECTFILEHASH`.
/// `progress` gets the bytes hashed so far.
pub(crate) fn verify_in_place(
    path: &Path,
    expected: &Expected<'_>,
    aborted: &dyn Fn() -> bool,
    progress: &dyn Fn(u64),
) -> Result<()> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::code(
                WU_E_DM_URLNOTAVAILABLE,
                format!(
                    "payload {} is not in its catalog at {}, and a local catalog has nowhere else to download it from; rebuild the catalog, or use a service that publishes it",
                    expected.sha256,
                    path.display()
                ),
            ));
        }
        Err(e) => return Err(cache_io("cannot open payload", path, e)),
    };
    let mut hasher = Hasher::new();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        if aborted() {
            return Err(cancelled());
        }
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(cache_io("cannot read payload", path, e)),
        };
        hasher.update(&buf[..n]);
        if hasher.length() > expected.length {
            break;
        }
        progress(hasher.length());
    }
    let (digest, length) = hasher.finish();
    if length != expected.length || digest != expected.sha256 {
        return Err(Error::code(
            WU_E_DM_INCORRECTFILEHASH,
            format!(
                "payload {} is not the file its catalog describes: expected {} bytes with SHA-256 {}, found {}; the catalog is damaged: rebuild it or fetch it again",
                path.display(),
                expected.length,
                expected.sha256,
                if length > expected.length {
                    format!("more than {} bytes", expected.length)
                } else {
                    format!("{length} bytes with SHA-256 {digest}")
                }
            ),
        ));
    }
    Ok(())
}

/// True for a SHA-256 in lower-case hex, the only form cache file names take.
fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A digest that is not a lower-case hex SHA-256 is refused before it becomes a file name.
pub(crate) fn check_sha256(s: &str) -> Result<()> {
    if is_sha256(s) {
        Ok(())
    } else {
        Err(Error::code(
            WU_E_DM_UNKNOWNALGORITHM,
            format!(
                "the payload digest `{s}` is not a SHA-256 in lower-case hex; the update's metadata is malformed: report it to its publisher"
            ),
        ))
    }
}

/// The error of an abort request.
pub(crate) fn cancelled() -> Error {
    Error::code(WU_E_CALL_CANCELLED, "the download was aborted")
}

/// A file-system failure in the cache (`WU_E_DM_UNEXPECTED`).
pub(crate) fn cache_io(action: &'static str, path: &Path, e: io::Error) -> Error {
    Error::io(action, path, e).with_hresult(WU_E_DM_UNEXPECTED)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| cache_io("cannot sync directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(data: &[u8]) -> String {
        hex::encode(digest::digest(&digest::SHA256, data).as_ref())
    }

    fn never() -> bool {
        false
    }

    fn write_and_commit(
        cache: &PayloadCache,
        data: &[u8],
        expected_data: &[u8],
    ) -> Result<PathBuf> {
        let sha = sha(expected_data);
        let mut partial = cache.try_open_partial(&sha)?.expect("not locked");
        let mut hasher = partial.resume(expected_data.len() as u64, &never)?;
        partial.write_all(data)?;
        hasher.update(data);
        let expected = Expected {
            sha256: &sha,
            length: expected_data.len() as u64,
            source: "test",
        };
        partial.commit(cache, &expected, hasher.finish())
    }

    #[test]
    fn commit_verifies_and_moves_into_the_verified_directory() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PayloadCache::new(dir.path());
        let data = b"payload bytes".repeat(1000);
        let path = write_and_commit(&cache, &data, &data).unwrap();
        assert_eq!(path, cache.path(&sha(&data)));
        assert_eq!(fs::read(&path).unwrap(), data);
        assert!(cache.contains(&sha(&data)));
        assert!(cache.contains_with_length(&sha(&data), data.len() as u64));
        assert!(!cache.contains_with_length(&sha(&data), 1));
        assert!(!cache.partial_path(&sha(&data)).exists());
    }

    #[test]
    fn a_mismatch_deletes_the_partial_and_caches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PayloadCache::new(dir.path());
        let err = write_and_commit(&cache, b"evil", b"good").unwrap_err();
        assert_eq!(err.hresult(), WU_E_DM_INCORRECTFILEHASH);
        assert!(err.to_string().contains(&sha(b"good")), "{err}");
        assert!(!cache.contains(&sha(b"good")));
        assert!(!cache.partial_path(&sha(b"good")).exists());
    }

    #[test]
    fn resume_rehashes_what_is_there_and_appends() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PayloadCache::new(dir.path());
        let data = b"0123456789".repeat(300_000);
        let sha = sha(&data);
        fs::create_dir_all(cache.partial_dir()).unwrap();
        fs::write(cache.partial_path(&sha), &data[..1_234_567]).unwrap();
        let mut partial = cache.try_open_partial(&sha).unwrap().unwrap();
        let mut hasher = partial.resume(data.len() as u64, &never).unwrap();
        assert_eq!(hasher.length(), 1_234_567);
        partial.write_all(&data[1_234_567..]).unwrap();
        hasher.update(&data[1_234_567..]);
        let expected = Expected {
            sha256: &sha,
            length: data.len() as u64,
            source: "test",
        };
        let path = partial.commit(&cache, &expected, hasher.finish()).unwrap();
        assert_eq!(fs::read(path).unwrap(), data);
    }

    #[test]
    fn a_partial_longer_than_the_payload_is_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PayloadCache::new(dir.path());
        let sha = sha(b"short");
        fs::create_dir_all(cache.partial_dir()).unwrap();
        fs::write(cache.partial_path(&sha), b"much longer than five").unwrap();
        let mut partial = cache.try_open_partial(&sha).unwrap().unwrap();
        assert_eq!(partial.resume(5, &never).unwrap().length(), 0);
        assert_eq!(fs::metadata(cache.partial_path(&sha)).unwrap().len(), 0);
    }

    #[test]
    fn a_locked_partial_is_busy_and_a_committed_one_is_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PayloadCache::new(dir.path());
        let data = b"shared payload";
        let sha = sha(data);
        let mut first = cache.try_open_partial(&sha).unwrap().unwrap();
        // Another open file description (as another process would have) is refused.
        assert!(cache.try_open_partial(&sha).unwrap().is_none());
        let mut hasher = first.resume(data.len() as u64, &never).unwrap();
        first.write_all(data).unwrap();
        hasher.update(data);
        let expected = Expected {
            sha256: &sha,
            length: data.len() as u64,
            source: "test",
        };
        first.commit(&cache, &expected, hasher.finish()).unwrap();
        // The next one gets a fresh, empty partial, not the committed file.
        let mut second = cache.try_open_partial(&sha).unwrap().unwrap();
        assert_eq!(
            second.resume(data.len() as u64, &never).unwrap().length(),
            0
        );
        second.discard_if_empty();
        assert!(!cache.partial_path(&sha).exists());
        assert_eq!(fs::read(cache.path(&sha)).unwrap(), data);
    }

    #[test]
    fn digests_must_be_lower_case_hex_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PayloadCache::new(dir.path());
        for bad in ["../../etc/passwd", "ABCD", &"A".repeat(64), ""] {
            assert!(!cache.contains(bad));
            assert_eq!(
                cache.try_open_partial(bad).err().unwrap().hresult(),
                WU_E_DM_UNKNOWNALGORITHM
            );
        }
    }

    #[test]
    fn verify_in_place_checks_length_and_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.tar.zst");
        fs::write(&path, b"catalog payload").unwrap();
        let good = sha(b"catalog payload");
        let expected = Expected {
            sha256: &good,
            length: 15,
            source: "test",
        };
        verify_in_place(&path, &expected, &never, &|_| {}).unwrap();
        let wrong = Expected {
            length: 14,
            ..expected
        };
        assert_eq!(
            verify_in_place(&path, &wrong, &never, &|_| {})
                .unwrap_err()
                .hresult(),
            WU_E_DM_INCORRECTFILEHASH
        );
        assert_eq!(
            verify_in_place(&dir.path().join("missing"), &expected, &never, &|_| {})
                .unwrap_err()
                .hresult(),
            WU_E_DM_URLNOTAVAILABLE
        );
    }
}
