//! The `files` handler and the transaction both handlers install through.
//!
//! A [`Transaction`] works in `<root>/.wua-staging/<uuid>/` and logs every change it makes to the
//! file system (a move, a directory created or removed). `undo` replays the log backwards, so a
//! failure or an abort midway leaves the root as it was; `finish` deletes the staging folder and
//! what was scheduled for removal once the store has recorded the outcome.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::{Context, Failure, STAGING_DIR};
use crate::catalog::{
    MODE_MASK, PayloadEntryKind, PayloadRef, UpdateDefinition, invalid_payload, sha256_reader,
    walk_payload,
};
use crate::error::{Error, IoContext, Result};
use crate::hresult::{WU_E_UH_INSTALLERFAILURE, WU_E_UH_OPERATIONCANCELLED};
use crate::store::{EntryKind, Handover, InstalledUpdate, ManifestEntry};

#[derive(Debug)]
enum Action {
    Moved { from: PathBuf, to: PathBuf },
    CreatedDir(PathBuf),
    RemovedDir { path: PathBuf, mode: u32 },
}

/// A logged, undoable set of file-system changes (see the module docs).
#[derive(Debug)]
pub(crate) struct Transaction {
    dir: PathBuf,
    log: Vec<Action>,
    remove_on_finish: Vec<PathBuf>,
    trash_count: usize,
}

impl Transaction {
    /// Starts a transaction against `root`, creating the root if it does not exist.
    pub(crate) fn begin(root: &Path) -> Result<Transaction> {
        fs::create_dir_all(root).at("cannot create target root", root)?;
        let dir = root.join(STAGING_DIR).join(Uuid::new_v4().to_string());
        fs::create_dir_all(&dir).at("cannot create staging directory", &dir)?;
        Ok(Transaction {
            dir,
            log: Vec::new(),
            remove_on_finish: Vec::new(),
            trash_count: 0,
        })
    }

    /// The transaction's private staging folder.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// A fresh path in the transaction's trash.
    fn trash_path(&mut self) -> PathBuf {
        self.trash_count += 1;
        self.dir.join("trash").join(self.trash_count.to_string())
    }

    /// Moves `from` to `to` (creating `to`'s missing parents), logged.
    pub(crate) fn move_path(&mut self, from: &Path, to: &Path) -> Result<()> {
        if let Some(parent) = to.parent() {
            self.create_parents(parent)?;
        }
        move_path(from, to)?;
        self.log.push(Action::Moved {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
        });
        Ok(())
    }

    /// Moves `path` into the trash, logged; it is deleted by `finish`.
    pub(crate) fn trash(&mut self, path: &Path) -> Result<()> {
        let to = self.trash_path();
        self.move_path(path, &to)
    }

    fn create_parents(&mut self, dir: &Path) -> Result<()> {
        if fs::symlink_metadata(dir).is_ok() {
            return Ok(());
        }
        if let Some(parent) = dir.parent() {
            self.create_parents(parent)?;
        }
        self.create_dir(dir, 0o755)
    }

    /// Creates the directory `path` with `mode`, logged.
    pub(crate) fn create_dir(&mut self, path: &Path, mode: u32) -> Result<()> {
        fs::create_dir(path).at("cannot create directory", path)?;
        self.log.push(Action::CreatedDir(path.to_path_buf()));
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .at("cannot set permissions of", path)
    }

    /// Removes the empty directory `path`, logged.
    pub(crate) fn remove_dir(&mut self, path: &Path) -> Result<()> {
        let mode = fs::symlink_metadata(path)
            .at("cannot read", path)?
            .permissions()
            .mode()
            & 0o7777;
        fs::remove_dir(path).at("cannot remove directory", path)?;
        self.log.push(Action::RemovedDir {
            path: path.to_path_buf(),
            mode,
        });
        Ok(())
    }

    /// Puts the folder `src` at `dst`, trashing what was at `dst`.
    pub(crate) fn replace_dir(&mut self, src: &Path, dst: &Path) -> Result<()> {
        if fs::symlink_metadata(dst).is_ok() {
            self.trash(dst)?;
        }
        self.move_path(src, dst)
    }

    /// Schedules `path` (file or folder) for deletion when the transaction finishes.
    pub(crate) fn remove_on_finish(&mut self, path: PathBuf) {
        self.remove_on_finish.push(path);
    }

    /// Undoes every logged change, newest first, then deletes the staging folder.
    pub(crate) fn undo(mut self) -> Result<()> {
        let mut first_error = None;
        while let Some(action) = self.log.pop() {
            let result = match &action {
                Action::Moved { from, to } => move_path(to, from),
                Action::CreatedDir(path) => {
                    fs::remove_dir(path).at("cannot remove directory", path)
                }
                Action::RemovedDir { path, mode } => fs::create_dir(path)
                    .and_then(|_| fs::set_permissions(path, fs::Permissions::from_mode(*mode)))
                    .at("cannot recreate directory", path),
            };
            if let Err(e) = result {
                tracing::error!("rollback step {action:?} failed: {e}");
                first_error.get_or_insert(e);
            }
        }
        self.remove_on_finish.clear();
        self.cleanup();
        first_error.map_or(Ok(()), Err)
    }

    /// Ends a transaction whose outcome is recorded: deletes the trash, the staging folder and
    /// what was scheduled for removal. Failures here only leave garbage behind, so they are
    /// logged, not returned.
    pub(crate) fn finish(mut self) {
        self.log.clear();
        for path in std::mem::take(&mut self.remove_on_finish) {
            if let Err(e) = remove_any(&path)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!("cannot remove {}: {e}", path.display());
            }
        }
        self.cleanup();
    }

    fn cleanup(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            tracing::warn!("cannot remove staging {}: {e}", self.dir.display());
        }
        // Remove the shared staging parent when no other transaction uses it.
        if let Some(parent) = self.dir.parent() {
            let _ = fs::remove_dir(parent);
        }
    }
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path)?.is_dir() {
        true => fs::remove_dir_all(path),
        false => fs::remove_file(path),
    }
}

/// Renames `from` to `to`; across file systems, copies then removes the source.
fn move_path(from: &Path, to: &Path) -> Result<()> {
    match fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            copy_tree(from, to).at("cannot copy", to)?;
            remove_any(from).at("cannot remove", from)
        }
        Err(e) => Err(Error::io("cannot move into place", to, e)),
    }
}

fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(from)?;
    if meta.file_type().is_symlink() {
        symlink(fs::read_link(from)?, to)
    } else if meta.is_dir() {
        fs::create_dir(to)?;
        for entry in fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        fs::set_permissions(to, meta.permissions())
    } else {
        fs::copy(from, to).map(|_| ())
    }
}

/// Extracts a verified payload archive into `dest` (a new folder in the staging area). Every
/// entry is checked by [`walk_payload`] before anything is written; setuid and setgid bits are
/// dropped. Reports progress from `pct_from` to `pct_to`.
pub(crate) fn extract(
    ctx: &mut Context<'_>,
    payload: File,
    meta: &PayloadRef,
    dest: &Path,
    pct_from: u32,
    pct_to: u32,
) -> Result<(), Failure> {
    fs::create_dir_all(dest).at("cannot create directory", dest)?;
    let span = u64::from(pct_to - pct_from);
    let mut written = 0u64;
    let result = walk_payload(payload, meta, |entry, data| {
        if ctx.aborted() {
            return Err(Error::code(WU_E_UH_OPERATIONCANCELLED, "abort requested"));
        }
        let target = dest.join(&entry.path);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).at("cannot create directory", parent)?;
        }
        match &entry.kind {
            PayloadEntryKind::Dir => {
                fs::create_dir_all(&target).at("cannot create directory", &target)?;
                // Owner access is added so extraction can go on below it. A directory the root
                // lacks is created there with this mode; existing ones keep theirs.
                fs::set_permissions(&target, fs::Permissions::from_mode(entry.mode | 0o700))
                    .at("cannot set permissions of", &target)?;
            }
            PayloadEntryKind::File => {
                let mut out = File::create_new(&target).at("cannot create", &target)?;
                let copied = io::copy(&mut data.take(entry.size), &mut out)
                    .at("cannot extract payload into", &target)?;
                if copied != entry.size {
                    return Err(invalid_payload(&entry.path, "the archive is truncated"));
                }
                out.set_permissions(fs::Permissions::from_mode(entry.mode))
                    .at("cannot set permissions of", &target)?;
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
    match result {
        Ok(()) => {
            (ctx.progress)(pct_to);
            Ok(())
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

fn handler_error(error: Error) -> Failure {
    // IO failures while installing are the installer's failure in WUA's terms.
    let error = match error {
        Error::Io { .. } => error.with_hresult(WU_E_UH_INSTALLERFAILURE),
        other => other,
    };
    Failure::Failed { error, unmapped: 0 }
}

/// Moves the staged tree into the root, backing up what it replaces; returns the manifest.
///
/// `previous` is this update's installed manifest when it is reinstalled or upgraded to a new
/// revision: its paths are overwritten without a new backup and keep the backup they had. (Paths
/// it has that the new tree lacks are removed by the caller, `handlers::install`.)
pub(crate) fn apply_tree(
    ctx: &mut Context<'_>,
    tx: &mut Transaction,
    def: &UpdateDefinition,
    stage: &Path,
    previous: Option<&InstalledUpdate>,
    pct_from: u32,
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
        check_parent_inside(&canonical_root, &target)?;
        let meta = fs::symlink_metadata(&staged).at("cannot read", &staged)?;
        let existing = fs::symlink_metadata(&target).ok();
        let mode = meta.permissions().mode() & MODE_MASK;
        if meta.is_dir() {
            match existing {
                None => {
                    tx.create_dir(&target, mode).map_err(handler_error)?;
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
            let mut f = File::open(&staged).at("cannot read", &staged)?;
            let (digest, _) = sha256_reader(&mut f).at("cannot read", &staged)?;
            (EntryKind::File, Some(digest), None)
        };
        let backup = if let Some(prev) = previous_entries.get(rel_str.as_str()) {
            if existing.is_some() {
                tx.trash(&target).map_err(handler_error)?;
            }
            prev.backup.clone()
        } else if existing.is_some() {
            let backup_path = backups.join(rel);
            if fs::symlink_metadata(&backup_path).is_ok() {
                // Left over from an interrupted earlier attempt: keep it out of the way.
                tx.trash(&backup_path).map_err(handler_error)?;
            }
            tx.move_path(&target, &backup_path).map_err(handler_error)?;
            Some(rel_str.clone())
        } else {
            None
        };
        tx.move_path(&staged, &target).map_err(handler_error)?;
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
        (ctx.progress)(pct_from + ((100 - pct_from) as usize * (i + 1) / total) as u32);
    }
    Ok(manifest)
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

/// Removes an installed update's files and restores what they replaced (see [`remove_entries`]).
pub(crate) fn remove_installed(
    ctx: &mut Context<'_>,
    tx: &mut Transaction,
    installed: &InstalledUpdate,
) -> Result<Vec<Handover>, Failure> {
    let update_id = installed.definition.identity.update_id;
    let handovers = remove_entries(ctx, tx, installed, installed.files.iter().collect())?;
    tx.remove_on_finish(ctx.backups_of(update_id));
    tx.remove_on_finish(ctx.scripts_of(update_id));
    Ok(handovers)
}

/// Removes these manifest entries of an installed update and restores what they replaced.
/// Where a later update replaced one of its files, the disk is left alone and the backup passes
/// to that update, so that uninstalling it later restores the state from before both.
pub(crate) fn remove_entries(
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
            if fs::symlink_metadata(&next_backup).is_ok() {
                tx.trash(&next_backup).map_err(handler_error)?;
            }
            let backup = match &entry.backup {
                Some(b) => {
                    tx.move_path(&backups.join(b), &next_backup)
                        .map_err(handler_error)?;
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
                let empty = existing.is_some_and(|m| m.is_dir())
                    && fs::read_dir(&target)
                        .map(|mut d| d.next().is_none())
                        .unwrap_or(false);
                if empty {
                    tx.remove_dir(&target).map_err(handler_error)?;
                } else if let Some(owner) = ctx.store.owner_below(&entry.path, update_id)? {
                    handovers.push(Handover::Dir {
                        to_update: owner,
                        entry: entry.clone(),
                    });
                }
            }
            EntryKind::File | EntryKind::Symlink => {
                if existing.is_some_and(|m| !m.is_dir()) {
                    tx.trash(&target).map_err(handler_error)?;
                }
                if let Some(b) = &entry.backup {
                    tx.move_path(&backups.join(b), &target)
                        .map_err(handler_error)?;
                }
            }
        }
    }
    Ok(handovers)
}
