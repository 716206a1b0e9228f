//! Crash-safe file-system transactions: a plan journalled before anything changes, steps whose
//! undo is idempotent, and recovery at start-up.
//!
//! A transaction lives in `<root>/.wua-staging/<txid>/`, on the root's file system so that
//! putting staged content in place is a `rename(2)`. Its life:
//!
//! 1. **begin** — create the folder and write the journal header (what update, which operation,
//!    who asked); fsync the journal and the folders above it. From here a crash is noticed.
//! 2. **stage** — the handler writes the new content below the folder; `syncfs(2)` makes it
//!    durable in one call rather than one fsync per file.
//! 3. **plan** — every step (create a directory, move a path, remove an empty directory) is
//!    decided before any is taken, then written to the journal and fsynced. Nothing in the root
//!    has changed yet.
//! 4. **apply** — the steps run in order; then `syncfs` again (the root's file system, the state
//!    directory's and any other a step crossed into) so the renames are durable.
//! 5. **commit** — the store records the outcome, the manifest, the history entry and the
//!    transaction id in one SQLite transaction (`synchronous=FULL`). This is the commit point.
//! 6. **finish** — the trash, the staging folder and obsolete backups are deleted, and the
//!    transaction id is forgotten. Needs no fsync: recovery redoes it if it is lost.
//!
//! Recovery ([`recover`]), run by every session at start-up while it holds the install lock,
//! looks at each transaction folder left behind: committed (its id is in the store) → finish
//! it; otherwise → undo its plan, newest step first, and record the interrupted operation in
//! history as `Aborted` with `WU_E_SERVICE_STOP`.
//!
//! Undo is idempotent and needs no record of which steps ran: a move whose source exists did
//! not complete (a partial cross-device copy at the destination is removed); a move whose source
//! is gone and whose destination exists is moved back; a created directory is removed if it is
//! there and empty; a removed directory is recreated if missing. So the same code undoes a
//! failure in process and a crash found at start-up. It relies on the file system persisting
//! metadata operations in order, as journalling file systems (ext4, XFS, btrfs) do: a rename
//! that survived a crash implies the ones before it did.
//!
//! The fsync policy, and why it is enough: the journal header and plan are fsynced before the
//! steps they describe (write-ahead); staged content is synced before it is moved in; the
//! renames are synced before the store commits. A crash therefore finds either a plan it can
//! undo, or a commit whose files are all durable. With `unsafe_io` (for containers and CI, like
//! dpkg's `--force-unsafe-io`) the two `syncfs` calls are skipped: a process crash is still
//! safe, a power cut may lose the update's content.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufRead, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::checkpoint;
use crate::error::{Error, IoContext, Result};
use crate::handlers::STAGING_DIR;
use crate::hresult::WU_E_SERVICE_STOP;
use crate::model::{OperationResultCode, UpdateOperation};
use crate::store::{Store, UpdateHistoryEntry};

/// The journal's file name inside a transaction folder.
pub const JOURNAL_FILE: &str = "journal";
const JOURNAL_VERSION: u32 = 1;

/// One planned file-system step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Step {
    /// Create the directory `path` with `mode`.
    Mkdir { path: PathBuf, mode: u32 },
    /// Rename `from` to `to` (copy and remove across file systems).
    Move { from: PathBuf, to: PathBuf },
    /// Remove the empty directory `path`, which had `mode`.
    Rmdir { path: PathBuf, mode: u32 },
}

/// The first journal line: what the transaction is about.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    version: u32,
    txid: Uuid,
    /// The history entry to record if the transaction is found interrupted (its result fields
    /// are filled in then).
    history: UpdateHistoryEntry,
}

/// The second journal line: the plan.
#[derive(Debug, Serialize, Deserialize)]
struct Plan {
    steps: Vec<Step>,
    remove_on_finish: Vec<PathBuf>,
}

/// A transaction (see the module docs).
#[derive(Debug)]
pub(crate) struct Transaction {
    txid: Uuid,
    dir: PathBuf,
    root: PathBuf,
    state_dir: PathBuf,
    operation: &'static str,
    journal: File,
    durable: bool,
    steps: Vec<Step>,
    executed: usize,
    remove_on_finish: Vec<PathBuf>,
    trash_count: usize,
    // What the plan will have done, for planning later steps.
    will_exist: HashSet<PathBuf>,
    will_be_gone: HashSet<PathBuf>,
}

impl Transaction {
    /// Begins a transaction against `root` for the operation `history` describes, creating the
    /// root if needed; the journal header is durable when this returns.
    pub(crate) fn begin(
        root: &Path,
        state_dir: &Path,
        history: &UpdateHistoryEntry,
        durable: bool,
    ) -> Result<Transaction> {
        fs::create_dir_all(root).at("cannot create target root", root)?;
        let staging = root.join(STAGING_DIR);
        fs::create_dir_all(&staging).at("cannot create staging directory", &staging)?;
        let txid = Uuid::new_v4();
        let dir = staging.join(txid.to_string());
        fs::create_dir(&dir).at("cannot create staging directory", &dir)?;
        let path = dir.join(JOURNAL_FILE);
        let mut journal = File::create_new(&path).at("cannot create journal", &path)?;
        let header = Header {
            version: JOURNAL_VERSION,
            txid,
            history: history.clone(),
        };
        let mut line = serde_json::to_vec(&header).expect("serialisable");
        line.push(b'\n');
        journal.write_all(&line).at("cannot write journal", &path)?;
        // The journal and the folders leading to it must survive a crash, or recovery would
        // not find the transaction. These few fsyncs are kept even with unsafe_io.
        journal.sync_all().at("cannot sync journal", &path)?;
        for d in [&dir, &staging, &root.to_path_buf()] {
            sync_dir(d)?;
        }
        let operation = match history.operation {
            UpdateOperation::Installation => "install",
            UpdateOperation::Uninstallation => "uninstall",
        };
        let tx = Transaction {
            txid,
            dir,
            root: root.to_path_buf(),
            state_dir: state_dir.to_path_buf(),
            operation,
            journal,
            durable,
            steps: Vec::new(),
            executed: 0,
            remove_on_finish: Vec::new(),
            trash_count: 0,
            will_exist: HashSet::new(),
            will_be_gone: HashSet::new(),
        };
        tx.checkpoint("begun")?;
        Ok(tx)
    }

    /// The transaction id, recorded by the store at commit.
    pub(crate) fn txid(&self) -> Uuid {
        self.txid
    }

    /// The transaction's private folder, for staged content.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Passes the named checkpoint of this operation (`install:staged`, …).
    pub(crate) fn checkpoint(&self, name: &str) -> Result<()> {
        let full = format!("{}:{name}", self.operation);
        checkpoint::reached(&full).at("checkpoint", &self.dir)
    }

    /// Makes staged content durable (one `syncfs` of the root's file system).
    pub(crate) fn sync_staged(&self) -> Result<()> {
        if self.durable {
            syncfs(&self.dir)?;
        }
        self.checkpoint("staged")
    }

    // ---- planning: no side effects ------------------------------------------------------

    /// Whether `path` exists once the steps planned so far have run.
    pub(crate) fn exists_after(&self, path: &Path) -> bool {
        if self.will_exist.contains(path) {
            return true;
        }
        if self.will_be_gone.contains(path) {
            return false;
        }
        fs::symlink_metadata(path).is_ok()
    }

    /// Plans creating the directory `path`.
    pub(crate) fn plan_mkdir(&mut self, path: &Path, mode: u32) {
        self.will_exist.insert(path.to_path_buf());
        self.will_be_gone.remove(path);
        self.steps.push(Step::Mkdir {
            path: path.to_path_buf(),
            mode,
        });
    }

    /// Plans creating the missing parents of `path`.
    fn plan_parents(&mut self, path: &Path) {
        let Some(parent) = path.parent() else { return };
        if self.exists_after(parent) {
            return;
        }
        self.plan_parents(parent);
        self.plan_mkdir(parent, 0o755);
    }

    /// Plans moving `from` to `to`, creating `to`'s missing parents.
    pub(crate) fn plan_move(&mut self, from: &Path, to: &Path) {
        self.plan_parents(to);
        self.will_be_gone.insert(from.to_path_buf());
        self.will_exist.remove(from);
        self.will_exist.insert(to.to_path_buf());
        self.will_be_gone.remove(to);
        self.steps.push(Step::Move {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
        });
    }

    /// Plans moving `path` into the trash, deleted when the transaction finishes.
    pub(crate) fn plan_trash(&mut self, path: &Path) {
        self.trash_count += 1;
        let to = self.dir.join("trash").join(self.trash_count.to_string());
        self.plan_move(path, &to);
    }

    /// Plans removing the directory `path`, which must be empty by then.
    pub(crate) fn plan_rmdir(&mut self, path: &Path) -> Result<()> {
        let mode = fs::symlink_metadata(path)
            .at("cannot read", path)?
            .permissions()
            .mode()
            & 0o7777;
        self.will_be_gone.insert(path.to_path_buf());
        self.will_exist.remove(path);
        self.steps.push(Step::Rmdir {
            path: path.to_path_buf(),
            mode,
        });
        Ok(())
    }

    /// Plans putting the folder `src` at `dst`, trashing what is at `dst`.
    pub(crate) fn plan_replace_dir(&mut self, src: &Path, dst: &Path) {
        if self.exists_after(dst) {
            self.plan_trash(dst);
        }
        self.plan_move(src, dst);
    }

    /// Schedules `path` (file or folder) for deletion when the transaction finishes.
    pub(crate) fn remove_on_finish(&mut self, path: PathBuf) {
        self.remove_on_finish.push(path);
    }

    // ---- applying -------------------------------------------------------------------------

    /// Journals the plan, then runs it; `aborted` is checked between steps. On an error the
    /// caller undoes the transaction.
    pub(crate) fn apply(&mut self, aborted: &dyn Fn() -> bool) -> Result<(), ApplyError> {
        let plan = Plan {
            steps: self.steps.clone(),
            remove_on_finish: self.remove_on_finish.clone(),
        };
        let mut line = serde_json::to_vec(&plan).expect("serialisable");
        line.push(b'\n');
        let path = self.dir.join(JOURNAL_FILE);
        self.journal
            .write_all(&line)
            .at("cannot write journal", &path)?;
        self.journal.sync_data().at("cannot sync journal", &path)?;
        self.checkpoint("journaled")?;
        let half = self.steps.len() / 2;
        for i in 0..self.steps.len() {
            if aborted() {
                return Err(ApplyError::Aborted);
            }
            if i == half {
                self.checkpoint("applying")?;
            }
            // Counted before it runs: a step that fails may have done part of its work (a
            // partial copy across file systems), and its undo is safe either way.
            self.executed = i + 1;
            run_step(&self.steps[i], &copied_marker(&self.dir, i))?;
        }
        if self.steps.is_empty() {
            self.checkpoint("applying")?;
        }
        if self.durable {
            // The root's and the state directory's file systems, and any other one a step
            // crossed into (a mount inside the root): those steps left a marker.
            let mut targets = vec![self.root.clone(), self.state_dir.clone()];
            for entry in fs::read_dir(&self.dir).at("cannot list", &self.dir)? {
                let name = entry.at("cannot list", &self.dir)?.file_name();
                let index = name
                    .to_str()
                    .and_then(|n| n.strip_prefix("copied-"))
                    .and_then(|n| n.parse::<usize>().ok());
                if let Some(Step::Move { to, .. }) = index.and_then(|i| self.steps.get(i))
                    && let Some(parent) = to.parent()
                {
                    targets.push(parent.to_path_buf());
                }
            }
            let mut synced: Vec<u64> = Vec::new();
            for path in targets {
                let dev = fs::metadata(&path).at("cannot read", &path)?.dev();
                if !synced.contains(&dev) {
                    syncfs(&path)?;
                    synced.push(dev);
                }
            }
        }
        self.checkpoint("applied")?;
        Ok(())
    }

    /// Undoes whatever of the plan ran, newest first, and deletes the transaction folder.
    pub(crate) fn undo(self) -> Result<()> {
        let result = undo_steps(&self.steps[..self.executed], &self.dir);
        remove_tx_dir(&self.dir);
        result
    }

    /// Ends a committed transaction: deletes the trash, the staging folder and what was
    /// scheduled for removal, and forgets the transaction id. Failures only leave garbage,
    /// which the next recovery removes, so they are logged, not returned.
    pub(crate) fn finish(self, store: &Store) {
        if let Err(e) = self.checkpoint("committed") {
            tracing::warn!("{e}");
        }
        finish_paths(&self.remove_on_finish);
        remove_tx_dir(&self.dir);
        if let Err(e) = store.forget_transaction(self.txid) {
            tracing::warn!("cannot forget finished transaction {}: {e}", self.txid);
        }
    }
}

/// Why applying stopped.
#[derive(Debug)]
pub(crate) enum ApplyError {
    /// Abort was requested.
    Aborted,
    /// A step failed.
    Failed(Error),
}

impl From<Error> for ApplyError {
    fn from(e: Error) -> Self {
        ApplyError::Failed(e)
    }
}

/// The file whose existence says that the cross-device move of step `index` began: `to` did
/// not exist then, so whatever is there now is this step's copy.
fn copied_marker(tx_dir: &Path, index: usize) -> PathBuf {
    tx_dir.join(format!("copied-{index}"))
}

/// Where a cross-device copy is written before it is renamed into place: a suffix appended,
/// so an extension is never replaced.
fn partial(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".wua-part");
    path.with_file_name(name)
}

fn run_step(step: &Step, marker: &Path) -> Result<()> {
    match step {
        Step::Mkdir { path, mode } => {
            fs::create_dir(path).at("cannot create directory", path)?;
            fs::set_permissions(path, fs::Permissions::from_mode(*mode))
                .at("cannot set permissions of", path)
        }
        Step::Move { from, to } => move_path(from, to, marker),
        Step::Rmdir { path, .. } => fs::remove_dir(path).at("cannot remove directory", path),
    }
}

/// Undoes steps newest first; each undo looks at the disk and does only what is needed.
fn undo_steps(steps: &[Step], tx_dir: &Path) -> Result<()> {
    let mut first_error = None;
    for (index, step) in steps.iter().enumerate().rev() {
        if let Err(e) = undo_step(step, &copied_marker(tx_dir, index)) {
            tracing::error!("rollback step {step:?} failed: {e}");
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// Undoes one step, whether it ran, ran partly, or never ran.
///
/// A rename on one file system is atomic, and plans never move onto an existing path, so: the
/// source gone and the destination there means the move happened; the source there means it
/// did not — and the destination, if any, is something else's (the next step's target, say) and
/// must be left alone. A move across file systems first leaves a marker, then copies to
/// `<to>.wua-part`, renames that into place and removes the source: with the marker there,
/// whatever is at `to` is this step's copy.
fn undo_step(step: &Step, marker: &Path) -> Result<()> {
    match step {
        Step::Mkdir { path, .. } => {
            let empty = fs::read_dir(path).map(|mut d| d.next().is_none());
            if let Ok(true) = empty {
                fs::remove_dir(path).at("cannot remove directory", path)?;
            }
            Ok(())
        }
        Step::Move { from, to } => {
            for part in [partial(to), partial(from)] {
                if exists(&part) {
                    remove_any(&part).at("cannot remove partial copy", &part)?;
                }
            }
            let copied = exists(marker);
            if exists(from) {
                if copied && exists(to) {
                    // This step's copy, finished or not: the source is still there.
                    remove_any(to).at("cannot remove copy", to)?;
                }
                Ok(())
            } else if exists(to) {
                move_path(to, from, marker)
            } else {
                Ok(())
            }
        }
        Step::Rmdir { path, mode } => {
            if !exists(path) {
                fs::create_dir(path).at("cannot recreate directory", path)?;
                fs::set_permissions(path, fs::Permissions::from_mode(*mode))
                    .at("cannot set permissions of", path)?;
            }
            Ok(())
        }
    }
}

fn finish_paths(paths: &[PathBuf]) {
    for path in paths {
        if let Err(e) = remove_any(path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!("cannot remove {}: {e}", path.display());
        }
    }
}

fn remove_tx_dir(dir: &Path) {
    if let Err(e) = fs::remove_dir_all(dir)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!("cannot remove staging {}: {e}", dir.display());
    }
    // The shared staging folder goes when no other transaction uses it.
    if let Some(parent) = dir.parent() {
        let _ = fs::remove_dir(parent);
    }
}

pub(crate) fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path)?.is_dir() {
        true => fs::remove_dir_all(path),
        false => fs::remove_file(path),
    }
}

/// Renames `from` to `to`. Across file systems: creates `marker` (so an undo knows that what is
/// at `to` is this step's copy), copies to `<to>.wua-part`, renames that into place, then
/// removes the source.
pub(crate) fn move_path(from: &Path, to: &Path, marker: &Path) -> Result<()> {
    match fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            // The marker is made durable before the copy starts: it says that `to` did not
            // exist when this step began, so whatever is there later is this step's copy.
            File::create(marker)
                .and_then(|f| f.sync_all())
                .at("cannot record copy", marker)?;
            if let Some(dir) = marker.parent() {
                sync_dir(dir)?;
            }
            let part = partial(to);
            if exists(&part) {
                remove_any(&part).at("cannot remove partial copy", &part)?;
            }
            copy_tree(from, &part).at("cannot copy", to)?;
            fs::rename(&part, to).at("cannot move into place", to)?;
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
        fs::copy(from, to)?;
        // The copy must be as durable as a rename would have been.
        File::open(to)?.sync_all()
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .at("cannot sync directory", dir)
}

/// Flushes the whole file system holding `path` (`syncfs(2)`): one call for all staged files.
fn syncfs(path: &Path) -> Result<()> {
    let f = File::open(path).at("cannot open for sync", path)?;
    // SAFETY: syncfs on a valid, open descriptor.
    let rc = unsafe { libc::syncfs(f.as_raw_fd()) };
    if rc != 0 {
        return Err(Error::io(
            "cannot sync the file system of",
            path,
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// What [`recover`] found and did.
#[derive(Debug, Default)]
pub struct RecoveryReport {
    /// Interrupted before their commit, and rolled back: (operation, title).
    pub rolled_back: Vec<(UpdateOperation, String)>,
    /// Committed but not cleaned up, and now cleaned up.
    pub completed: Vec<(UpdateOperation, String)>,
}

/// Whether `root` has transaction folders (interrupted, or running in another process).
pub fn pending(root: &Path) -> bool {
    root.join(STAGING_DIR).exists()
}

/// Finds transactions a crash interrupted under `root` and settles each: finished if the store
/// has its commit, rolled back (and recorded in history) if not. The caller must hold the
/// install lock.
pub fn recover(root: &Path, store: &Store) -> Result<RecoveryReport> {
    let mut report = RecoveryReport::default();
    let staging = root.join(STAGING_DIR);
    let entries = match fs::read_dir(&staging) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(Error::io("cannot list", &staging, e)),
    };
    for entry in entries {
        let dir = entry.at("cannot list", &staging)?.path();
        let journal = dir.join(JOURNAL_FILE);
        let (header, plan) = match read_journal(&journal) {
            Some(found) => found,
            None => {
                // No readable header: the crash came before anything was staged or applied.
                remove_tx_dir(&dir);
                continue;
            }
        };
        let title = header.history.title.clone();
        let operation = header.history.operation;
        let steps = plan.as_ref().map(|p| p.steps.as_slice()).unwrap_or(&[]);
        if store.transaction_committed(header.txid)? {
            if let Some(plan) = &plan {
                finish_paths(&plan.remove_on_finish);
            }
            remove_tx_dir(&dir);
            store.forget_transaction(header.txid)?;
            tracing::warn!("completed the clean-up of an interrupted {operation} of {title}");
            report.completed.push((operation, title));
        } else {
            undo_steps(steps, &dir)?;
            remove_tx_dir(&dir);
            let mut history = header.history;
            history.result_code = OperationResultCode::Aborted;
            history.hresult = WU_E_SERVICE_STOP;
            history.unmapped_result_code = WU_E_SERVICE_STOP.0;
            history.date = Timestamp::now();
            store.add_history(&history)?;
            tracing::warn!(
                "rolled back an {operation} of {title} that was interrupted (the process stopped before it finished)"
            );
            report.rolled_back.push((operation, title));
        }
    }
    let _ = fs::remove_dir(&staging);
    Ok(report)
}

/// Reads a journal: the header, and the plan if it was written completely.
fn read_journal(path: &Path) -> Option<(Header, Option<Plan>)> {
    let file = File::open(path).ok()?;
    let mut lines = io::BufReader::new(file).lines();
    let header: Header = serde_json::from_str(&lines.next()?.ok()?).ok()?;
    // A torn plan line means the crash came while writing it, before any step ran.
    let plan = lines
        .next()
        .and_then(|l| l.ok())
        .and_then(|l| serde_json::from_str::<Plan>(&l).ok());
    Some((header, plan))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::test_definition;

    fn history(op: UpdateOperation) -> UpdateHistoryEntry {
        UpdateHistoryEntry {
            title: "T".into(),
            ..crate::store::test_history_entry(5, op, OperationResultCode::InProgress)
        }
    }

    /// A root with `etc/a` (original), and a transaction that replaces it, backing the original
    /// up, and adds `etc/new/b`; applied, then "crashed" (dropped without undo or finish).
    fn crashed_install(root: &Path, state: &Path) -> Uuid {
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/a"), "original").unwrap();
        let mut tx =
            Transaction::begin(root, state, &history(UpdateOperation::Installation), true).unwrap();
        let staged = tx.dir().join("tree");
        fs::create_dir_all(staged.join("etc/new")).unwrap();
        fs::write(staged.join("etc/a"), "new").unwrap();
        fs::write(staged.join("etc/new/b"), "b").unwrap();
        tx.plan_move(&root.join("etc/a"), &state.join("backups/x/etc/a"));
        tx.plan_move(&staged.join("etc/a"), &root.join("etc/a"));
        tx.plan_mkdir(&root.join("etc/new"), 0o755);
        tx.plan_move(&staged.join("etc/new/b"), &root.join("etc/new/b"));
        tx.remove_on_finish(state.join("obsolete"));
        tx.apply(&|| false).unwrap();
        assert_eq!(fs::read_to_string(root.join("etc/a")).unwrap(), "new");
        let txid = tx.txid();
        std::mem::forget(tx); // the process dies here
        txid
    }

    #[test]
    fn recovery_rolls_back_an_uncommitted_transaction_and_records_it() {
        let dir = tempfile::tempdir().unwrap();
        let (root, state) = (dir.path().join("root"), dir.path().join("state"));
        crashed_install(&root, &state);
        let store = Store::open(&state, "boot").unwrap();
        let report = recover(&root, &store).unwrap();
        assert_eq!(
            report.rolled_back,
            [(UpdateOperation::Installation, "T".to_string())]
        );
        assert_eq!(fs::read_to_string(root.join("etc/a")).unwrap(), "original");
        assert!(!root.join("etc/new").exists());
        assert!(!root.join(STAGING_DIR).exists());
        assert!(!state.join("backups/x/etc/a").exists());
        let entry = &store.query_history(0, 1).unwrap()[0];
        assert_eq!(entry.result_code, OperationResultCode::Aborted);
        assert_eq!(entry.hresult, WU_E_SERVICE_STOP);
        // Running it again finds nothing to do.
        let again = recover(&root, &store).unwrap();
        assert!(again.rolled_back.is_empty() && again.completed.is_empty());
    }

    #[test]
    fn recovery_finishes_a_committed_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let (root, state) = (dir.path().join("root"), dir.path().join("state"));
        let store = Store::open(&state, "boot").unwrap();
        fs::create_dir_all(state.join("obsolete")).unwrap();
        let txid = crashed_install(&root, &state);
        let def = test_definition(Uuid::from_u128(5));
        let mut h = history(UpdateOperation::Installation);
        h.result_code = OperationResultCode::Succeeded;
        store
            .commit_install(&def, &[], &[], &h, None, txid)
            .unwrap();
        let report = recover(&root, &store).unwrap();
        assert_eq!(report.completed.len(), 1);
        assert_eq!(fs::read_to_string(root.join("etc/a")).unwrap(), "new");
        assert_eq!(fs::read_to_string(root.join("etc/new/b")).unwrap(), "b");
        assert_eq!(
            fs::read_to_string(state.join("backups/x/etc/a")).unwrap(),
            "original"
        );
        assert!(
            !state.join("obsolete").exists(),
            "scheduled removals are done"
        );
        assert!(!root.join(STAGING_DIR).exists());
        assert!(!store.transaction_committed(txid).unwrap());
        assert_eq!(store.total_history_count().unwrap(), 1, "no extra entry");
    }

    #[test]
    fn a_crash_before_the_plan_was_written_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (root, state) = (dir.path().join("root"), dir.path().join("state"));
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("keep"), "k").unwrap();
        let tx = Transaction::begin(
            &root,
            &state,
            &history(UpdateOperation::Uninstallation),
            false,
        )
        .unwrap();
        fs::write(tx.dir().join("half-staged"), "x").unwrap();
        std::mem::forget(tx);
        let store = Store::open(&state, "boot").unwrap();
        let report = recover(&root, &store).unwrap();
        assert_eq!(report.rolled_back.len(), 1);
        assert_eq!(fs::read_to_string(root.join("keep")).unwrap(), "k");
        assert!(!root.join(STAGING_DIR).exists());
        assert_eq!(
            store.query_history(0, 1).unwrap()[0].operation,
            UpdateOperation::Uninstallation
        );
    }

    #[test]
    fn undo_handles_steps_that_ran_partly_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        let d = dir.path().join("d");
        let marker = dir.path().join("copied-0");
        fs::write(&a, "a").unwrap();
        let step = Step::Move {
            from: a.clone(),
            to: b.clone(),
        };
        // Not run: nothing happens.
        undo_step(&step, &marker).unwrap();
        assert!(a.exists() && !b.exists());
        // Not run while the destination holds something else (the next step's target): both
        // stay as they are.
        fs::write(&b, "someone else's").unwrap();
        undo_step(&step, &marker).unwrap();
        assert_eq!(fs::read_to_string(&b).unwrap(), "someone else's");
        fs::remove_file(&b).unwrap();
        // A cross-device copy cut short: the partial file goes, the source stays.
        fs::write(&marker, "").unwrap();
        fs::write(partial(&b), "par").unwrap();
        undo_step(&step, &marker).unwrap();
        assert!(a.exists() && !partial(&b).exists() && !b.exists());
        // A finished copy whose source was not removed yet: the copy goes.
        fs::write(&b, "a").unwrap();
        undo_step(&step, &marker).unwrap();
        assert!(a.exists() && !b.exists());
        fs::remove_file(&marker).unwrap();
        // Done (renamed): moved back.
        fs::rename(&a, &b).unwrap();
        undo_step(&step, &marker).unwrap();
        assert_eq!(fs::read_to_string(&a).unwrap(), "a");
        // A created directory that is not empty stays (something else put a file there).
        fs::create_dir(&d).unwrap();
        fs::write(d.join("f"), "").unwrap();
        let mkdir = Step::Mkdir {
            path: d.clone(),
            mode: 0o755,
        };
        undo_step(&mkdir, &marker).unwrap();
        assert!(d.exists());
        // A removed directory comes back with its mode.
        let r = dir.path().join("r");
        let rmdir = Step::Rmdir {
            path: r.clone(),
            mode: 0o700,
        };
        undo_step(&rmdir, &marker).unwrap();
        assert_eq!(
            fs::metadata(&r).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
}
