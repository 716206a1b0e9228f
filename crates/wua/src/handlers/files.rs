//! The `files` handler: extracting a payload, and planning how a staged tree goes into the root
//! (and how an installed update's files come out again) as steps of a crash-safe
//! [`Transaction`].

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use super::{Context, Failure, STAGING_DIR};
use crate::catalog::{
    Catalog, PayloadEntryKind, PayloadRef, SETID_BITS, UpdateDefinition, invalid_payload,
    mode_mask, setid_bits_named, sha256_reader, walk_tar,
};
use crate::error::{Error, IoContext, Result};
use crate::hresult::{
    WU_E_UH_INSTALLERFAILURE, WU_E_UH_INVALIDMETADATA, WU_E_UH_OPERATIONCANCELLED,
};
use crate::store::{EntryKind, Handover, InstalledUpdate, ManifestEntry};
use crate::transaction::Transaction;

/// SHA-256 of extracted files, by path relative to the extraction folder.
pub(crate) type Digests = HashMap<PathBuf, String>;

/// A payload file read on its own thread: the compressed bytes are hashed (to be checked
/// against the catalog) and decompressed, and the tar stream is handed over in chunks.
struct PipelinedPayload {
    chunks: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    pos: usize,
    done: bool,
    reader: Option<std::thread::JoinHandle<io::Result<(String, u64)>>>,
}

/// A reader that hashes and counts what it reads, and stops after `limit` bytes: one more than
/// the payload's declared size is enough to tell that it differs, and a payload file that is
/// really a device or a FIFO cannot keep the reader going.
struct HashingReader {
    inner: File,
    ctx: aws_lc_rs::digest::Context,
    count: u64,
    limit: u64,
}

impl Read for HashingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = usize::try_from(self.limit - self.count).unwrap_or(usize::MAX);
        if room == 0 {
            return Ok(0);
        }
        let len = buf.len().min(room);
        let n = self.inner.read(&mut buf[..len])?;
        self.ctx.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

impl PipelinedPayload {
    /// Starts reading `file`, whose declared size is `size`.
    fn start(file: File, size: u64) -> PipelinedPayload {
        // A few chunks in flight: enough to keep both threads busy, bounded in memory.
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        let reader = std::thread::spawn(move || {
            let hashing = HashingReader {
                inner: file,
                ctx: aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256),
                count: 0,
                limit: size.saturating_add(1),
            };
            let mut decoder = zstd::Decoder::new(hashing)?;
            loop {
                let mut chunk = vec![0u8; 1 << 20];
                match decoder.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => {
                        chunk.truncate(n);
                        if tx.send(Ok(chunk)).is_err() {
                            break; // the walk stopped early
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                        break;
                    }
                }
            }
            // Hash the rest of the file too (trailing bytes, or what was left after an
            // error), so the digest always covers the whole file.
            let mut rest = decoder.finish();
            io::copy(&mut rest, &mut io::sink())?;
            let hashing = rest.into_inner();
            Ok((hex::encode(hashing.ctx.finish().as_ref()), hashing.count))
        });
        PipelinedPayload {
            chunks: rx,
            current: Vec::new(),
            pos: 0,
            done: false,
            reader: Some(reader),
        }
    }

    /// Stops reading and returns the SHA-256 and size of the whole compressed file.
    fn finish(mut self) -> io::Result<(String, u64)> {
        // Dropping the receiver lets a reader blocked on a full channel finish.
        let (replacement_tx, replacement_rx) = std::sync::mpsc::sync_channel(0);
        drop(replacement_tx);
        drop(std::mem::replace(&mut self.chunks, replacement_rx));
        match self.reader.take().expect("finished once").join() {
            Ok(result) => result,
            Err(_) => Err(io::Error::other("the payload reader thread panicked")),
        }
    }
}

impl Read for PipelinedPayload {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            if self.done {
                return Ok(0);
            }
            match self.chunks.recv() {
                Ok(Ok(chunk)) => {
                    self.current = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// This process's umask, read from `/proc/self/status` (reading it with umask(2) would have
/// to change it); all bits set where it cannot be read, so modes are then always applied.
fn umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            .unwrap_or(0o7777)
    })
}

/// `io::copy` with a large buffer: fewer write calls for large files.
fn copy_large(from: &mut impl Read, to: &mut impl io::Write, buffer: &mut [u8]) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        let n = match from.read(buffer) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buffer[..n])?;
        total += n as u64;
    }
}

/// A writer that hashes what passes through it.
struct HashingWriter {
    inner: File,
    ctx: aws_lc_rs::digest::Context,
}

impl HashingWriter {
    fn new(inner: File) -> Self {
        HashingWriter {
            inner,
            ctx: aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256),
        }
    }

    fn finish(self) -> (File, String) {
        (self.inner, hex::encode(self.ctx.finish().as_ref()))
    }
}

impl io::Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.ctx.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Extracts a verified payload archive into `dest` (a new folder in the staging area). Every
/// entry is checked by [`walk_tar`] before anything is written; entries with setuid or setgid
/// are refused unless the catalog allows them for this payload ([`Catalog::setid_allowed`]),
/// and then keep them. Reports progress from `pct_from` to `pct_to`.
pub(crate) fn extract(
    ctx: &mut Context<'_>,
    catalog: &Catalog,
    meta: &PayloadRef,
    dest: &Path,
    pct_from: u32,
    pct_to: u32,
) -> Result<Digests, Failure> {
    fs::create_dir_all(dest).at("cannot create directory", dest)?;
    let span = u64::from(pct_to - pct_from);
    let mut written = 0u64;
    let mut digests = Digests::new();
    let mut made: HashSet<PathBuf> = HashSet::from([dest.to_path_buf()]);
    let mut buffer = vec![0u8; 1 << 20];
    // Decompressing and verifying run on their own thread while this one writes files, as
    // `tar --zstd` runs zstd beside tar.
    let mut pipe = PipelinedPayload::start(catalog.open_payload(meta)?, meta.size);
    let allow_setid = catalog.setid_allowed(meta);
    let result = walk_tar(&mut pipe, meta, allow_setid, |entry, data| {
        if ctx.aborted() {
            return Err(Error::code(WU_E_UH_OPERATIONCANCELLED, "abort requested"));
        }
        let target = dest.join(&entry.path);
        // Archives list parents first, so creating a parent is rarely needed; remembering what
        // exists saves a failing mkdir per file.
        if let Some(parent) = target.parent()
            && !made.contains(parent)
        {
            fs::create_dir_all(parent).at("cannot create directory", parent)?;
            made.insert(parent.to_path_buf());
        }
        match &entry.kind {
            PayloadEntryKind::Dir => {
                if made.insert(target.clone()) {
                    fs::create_dir_all(&target).at("cannot create directory", &target)?;
                }
                // Owner access is added so extraction can go on below it. A directory the root
                // lacks is created there with this mode; existing ones keep theirs.
                fs::set_permissions(&target, fs::Permissions::from_mode(entry.mode | 0o700))
                    .at("cannot set permissions of", &target)?;
            }
            PayloadEntryKind::File => {
                // The mode is given at creation; a separate chmod is needed only for bits the
                // umask removes (saves one system call per file on the usual umasks), and for
                // setuid and setgid, which writing the data would clear (for a writer without
                // CAP_FSETID): they are set once the data is in.
                let out = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(entry.mode & !SETID_BITS)
                    .open(&target)
                    .at("cannot create", &target)?;
                // Hash while writing, so planning need not read the file again.
                let mut out = HashingWriter::new(out);
                let copied = copy_large(&mut data.take(entry.size), &mut out, &mut buffer)
                    .at("cannot extract payload into", &target)?;
                let (out, digest) = out.finish();
                digests.insert(entry.path.clone(), digest);
                if copied != entry.size {
                    return Err(invalid_payload(&entry.path, "the archive is truncated"));
                }
                if entry.mode & (umask() | SETID_BITS) != 0 {
                    out.set_permissions(fs::Permissions::from_mode(entry.mode))
                        .at("cannot set permissions of", &target)?;
                }
                written += entry.size;
                if let Some(done) = (span * written).checked_div(meta.installed_size) {
                    (ctx.progress)(pct_from + done as u32);
                }
            }
            PayloadEntryKind::Symlink(link) => {
                symlink(link, &target).at("cannot create symlink", &target)?;
            }
        }
        Ok(())
    });
    // The payload's digest decides first: a damaged file explains any error the walk met.
    let (digest, size) = pipe
        .finish()
        .at("cannot read payload", &catalog.payload_path(meta))?;
    catalog.check_digest(meta, &digest, size)?;
    match result {
        Ok(()) => {
            (ctx.progress)(pct_to);
            Ok(digests)
        }
        Err(e) if e.hresult() == WU_E_UH_OPERATIONCANCELLED => Err(Failure::Aborted),
        Err(e) => Err(e.into()),
    }
}

/// Every path below `dir`, relative, parents before children.
fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    fn go(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for entry in fs::read_dir(dir).at("cannot list", dir)? {
            let entry = entry.at("cannot list", dir)?;
            let path = entry.path();
            out.push(path.strip_prefix(base).expect("below base").to_path_buf());
            if entry.file_type().at("cannot read", &path)?.is_dir() {
                go(base, &path, out)?;
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    go(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

pub(crate) fn handler_error(error: Error) -> Failure {
    // IO failures while installing are the installer's failure in WUA's terms.
    let error = match error {
        Error::Io { .. } => error.with_hresult(WU_E_UH_INSTALLERFAILURE),
        other => other,
    };
    Failure::Failed { error, unmapped: 0 }
}

/// Plans moving the staged tree into the root, backing up what it replaces; returns the
/// manifest. Nothing changes on disk: conflicts (a file where the update has a directory, or
/// the other way round) are found before any step is taken.
///
/// `previous` is this update's installed manifest when it is reinstalled or upgraded to a new
/// revision: its paths are overwritten without a new backup and keep the backup they had. (Paths
/// it has that the new tree lacks are removed by the caller, `handlers::install`.)
pub(crate) fn plan_tree(
    ctx: &mut Context<'_>,
    tx: &mut Transaction,
    def: &UpdateDefinition,
    stage: &Path,
    known: &Digests,
    previous: Option<&InstalledUpdate>,
    (pct_from, pct_to): (u32, u32),
) -> Result<Vec<ManifestEntry>, Failure> {
    let update_id = def.identity.update_id;
    let backups = ctx.backups_of(update_id);
    let root = ctx.root.to_path_buf();
    let canonical_root = fs::canonicalize(&root).at("cannot resolve target root", &root)?;
    let previous_entries: HashMap<&str, &ManifestEntry> = previous
        .map(|p| p.files.iter().map(|e| (e.path.as_str(), e)).collect())
        .unwrap_or_default();
    let paths = walk(stage)?;
    let mut manifest = Vec::with_capacity(paths.len());
    let mut checked_parents: HashSet<PathBuf> = HashSet::new();
    let total = paths.len().max(1);
    for (i, rel) in paths.iter().enumerate() {
        if ctx.aborted() {
            return Err(Failure::Aborted);
        }
        let rel_str = rel.to_string_lossy().into_owned();
        if rel.starts_with(STAGING_DIR) {
            return Err(invalid_payload(rel, "the staging folder name is reserved").into());
        }
        let staged = stage.join(rel);
        let target = root.join(rel);
        if let Some(parent) = target.parent()
            && checked_parents.insert(parent.to_path_buf())
        {
            check_parent_inside(&canonical_root, &target)?;
        }
        let meta = fs::symlink_metadata(&staged).at("cannot read", &staged)?;
        let mode = staged_mode(def, rel, &meta)?;
        let existing = fs::symlink_metadata(&target).ok();
        if meta.is_dir() {
            match existing {
                None => {
                    tx.plan_mkdir(&target, mode);
                    manifest.push(ManifestEntry {
                        path: rel_str,
                        kind: EntryKind::Dir,
                        sha256: None,
                        mode,
                        link_target: None,
                        backup: None,
                    });
                }
                Some(m) if m.is_dir() => {
                    if let Some(prev) = previous_entries.get(rel_str.as_str()) {
                        manifest.push((*prev).clone());
                    }
                }
                Some(_) => {
                    return Err(handler_error(Error::code(
                        WU_E_UH_INSTALLERFAILURE,
                        format!(
                            "{} is a file, but the update installs a directory there; move it away and retry",
                            target.display()
                        ),
                    )));
                }
            }
            continue;
        }
        if existing.as_ref().is_some_and(|m| m.is_dir()) {
            return Err(handler_error(Error::code(
                WU_E_UH_INSTALLERFAILURE,
                format!(
                    "{} is a directory, but the update installs a file there; move it away and retry",
                    target.display()
                ),
            )));
        }
        let (kind, sha256, link_target) = if meta.file_type().is_symlink() {
            let link = fs::read_link(&staged).at("cannot read", &staged)?;
            (
                EntryKind::Symlink,
                None,
                Some(link.to_string_lossy().into_owned()),
            )
        } else {
            let digest = match known.get(rel) {
                Some(d) => d.clone(),
                None => {
                    let mut f = File::open(&staged).at("cannot read", &staged)?;
                    sha256_reader(&mut f).at("cannot read", &staged)?.0
                }
            };
            (EntryKind::File, Some(digest), None)
        };
        let backup = if let Some(prev) = previous_entries.get(rel_str.as_str()) {
            if existing.is_some() {
                tx.plan_trash(&target);
            }
            prev.backup.clone()
        } else if existing.is_some() {
            let backup_path = backups.join(rel);
            if tx.exists_after(&backup_path) {
                // Not owned by any recorded install: keep it out of the way.
                tx.plan_trash(&backup_path);
            }
            tx.plan_move(&target, &backup_path);
            Some(rel_str.clone())
        } else {
            None
        };
        tx.plan_move(&staged, &target);
        manifest.push(ManifestEntry {
            path: rel_str,
            kind,
            sha256,
            mode: if kind == EntryKind::Symlink {
                0o777
            } else {
                mode
            },
            link_target,
            backup,
        });
        (ctx.progress)(pct_from + ((pct_to - pct_from) as usize * (i + 1) / total) as u32);
    }
    Ok(manifest)
}

/// The mode a staged path is installed with, after checking what it is: only directories,
/// regular files and symlinks can be installed (a `command` handler's install command could
/// leave a FIFO, a socket or a device node under `$DESTDIR`), and a file with setuid or setgid
/// only if the update sets `allow_setid` (payload entries were checked when they were read).
/// Directories lose setuid and setgid unless allowed: they can come from a set-group-ID parent
/// rather than from the update.
fn staged_mode(def: &UpdateDefinition, rel: &Path, meta: &fs::Metadata) -> Result<u32, Failure> {
    use std::os::unix::fs::FileTypeExt;
    let file_type = meta.file_type();
    let what = if file_type.is_fifo() {
        Some("a FIFO")
    } else if file_type.is_socket() {
        Some("a socket")
    } else if file_type.is_char_device() {
        Some("a character device")
    } else if file_type.is_block_device() {
        Some("a block device")
    } else {
        None
    };
    if let Some(what) = what {
        return Err(handler_error(Error::code(
            WU_E_UH_INSTALLERFAILURE,
            format!(
                "the update produced {what} at {}; only files, directories and symlinks can be installed",
                rel.display()
            ),
        )));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if file_type.is_file() && mode & SETID_BITS != 0 && !def.allow_setid {
        let what = format!(
            "mode {mode:04o} has the {}, which the update's metadata does not allow (\"allow_setid\")",
            setid_bits_named(mode)
        );
        return Err(match def.handler {
            crate::catalog::HandlerSpec::Command { .. } => Error::code(
                WU_E_UH_INVALIDMETADATA,
                format!(
                    "the update's install command wrote {} under $DESTDIR with {what}; set \"allow_setid\" in the update's metadata if it is meant to be installed so",
                    rel.display()
                ),
            ),
            crate::catalog::HandlerSpec::Files {} => invalid_payload(rel, what),
        }
        .into());
    }
    Ok(mode & mode_mask(def.allow_setid))
}

/// Refuses to write through a symlinked parent that leads outside the root.
fn check_parent_inside(canonical_root: &Path, target: &Path) -> Result<(), Failure> {
    let Some(parent) = target.parent() else {
        return Ok(());
    };
    match fs::canonicalize(parent) {
        Ok(resolved) if !resolved.starts_with(canonical_root) => Err(handler_error(Error::code(
            WU_E_UH_INSTALLERFAILURE,
            format!(
                "{} resolves to {}, outside the target root {}; refusing to write through it",
                parent.display(),
                resolved.display(),
                canonical_root.display()
            ),
        ))),
        _ => Ok(()),
    }
}

/// Plans removing an installed update's files and restoring what they replaced (see
/// [`plan_remove_entries`]).
pub(crate) fn plan_remove_installed(
    ctx: &mut Context<'_>,
    tx: &mut Transaction,
    installed: &InstalledUpdate,
) -> Result<Vec<Handover>, Failure> {
    let update_id = installed.definition.identity.update_id;
    let handovers = plan_remove_entries(ctx, tx, installed, installed.files.iter().collect())?;
    tx.remove_on_finish(ctx.backups_of(update_id));
    tx.remove_on_finish(ctx.scripts_of(update_id));
    Ok(handovers)
}

/// Plans removing these manifest entries of an installed update and restoring what they
/// replaced. Where a later update replaced one of its files, the disk is left alone and the
/// backup passes to that update, so that uninstalling it later restores the state from before
/// both.
pub(crate) fn plan_remove_entries(
    ctx: &mut Context<'_>,
    tx: &mut Transaction,
    installed: &InstalledUpdate,
    mut entries: Vec<&ManifestEntry>,
) -> Result<Vec<Handover>, Failure> {
    let update_id = installed.definition.identity.update_id;
    let backups = ctx.backups_of(update_id);
    let mut handovers = Vec::new();
    // Children before their parents, so a directory is empty by the time it is reached.
    entries.sort_by(|a, b| Path::new(&b.path).cmp(Path::new(&a.path)));
    for entry in entries {
        if ctx.aborted() {
            return Err(Failure::Aborted);
        }
        let target = ctx.root.join(&entry.path);
        let later_owner = ctx
            .store
            .owners_of(&entry.path, update_id)?
            .into_iter()
            .find(|(_, seq)| *seq > installed.install_seq);
        if let Some((next, _)) = later_owner {
            let next_backup = ctx.backups_of(next).join(&entry.path);
            if tx.exists_after(&next_backup) {
                tx.plan_trash(&next_backup);
            }
            let backup = match &entry.backup {
                Some(b) => {
                    tx.plan_move(&backups.join(b), &next_backup);
                    Some(entry.path.clone())
                }
                None => None,
            };
            handovers.push(Handover::Backup {
                to_update: next,
                path: entry.path.clone(),
                backup,
            });
            continue;
        }
        let existing = fs::symlink_metadata(&target).ok();
        match entry.kind {
            EntryKind::Dir => {
                // Empty once the steps planned for its children have run.
                let empty = existing.is_some_and(|m| m.is_dir())
                    && fs::read_dir(&target)
                        .at("cannot list", &target)?
                        .filter_map(|e| e.ok())
                        .all(|child| !tx.exists_after(&child.path()));
                if empty {
                    tx.plan_rmdir(&target)?;
                } else if let Some(owner) = ctx.store.owner_below(&entry.path, update_id)? {
                    handovers.push(Handover::Dir {
                        to_update: owner,
                        entry: entry.clone(),
                    });
                }
            }
            EntryKind::File | EntryKind::Symlink => {
                if existing.is_some_and(|m| !m.is_dir()) {
                    tx.plan_trash(&target);
                }
                if let Some(b) = &entry.backup {
                    tx.plan_move(&backups.join(b), &target);
                }
            }
        }
    }
    Ok(handovers)
}
