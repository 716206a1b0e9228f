//! Install handlers (`IUpdate.HandlerID`): how an update's payload gets into the target root.
//!
//! * `files` extracts the payload tree into the root;
//! * `command` runs a program from the payload that writes what it installs under `$DESTDIR`
//!   (the convention of `make install DESTDIR=…`), then installs that tree like `files`.
//!
//! Both end in the same crash-safe [`Transaction`]: the steps that put the staged tree in place
//! (every path the update replaces is moved to the update's backup folder first) are planned
//! and journalled, then run; any failure, abort or crash midway is undone, so the root is left
//! as it was before that update. Uninstall reverses the manifest and restores the backups.
//! Failures map to the `WU_E_UH_*` codes.

pub(crate) mod command;
pub(crate) mod files;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use uuid::Uuid;

use crate::catalog::{Catalog, HandlerSpec, UpdateDefinition};
use crate::error::{Error, IoContext, Result};
use crate::hresult::HResult;
use crate::store::{Handover, InstalledUpdate, ManifestEntry, Store, UpdateHistoryEntry};
use crate::transaction::{ApplyError, Transaction};

/// The name of the folder inside the target root that holds in-flight transactions. Inside the
/// root so that moving staged content into place is a rename on one file system.
pub const STAGING_DIR: &str = ".wua-staging";

/// Where a handler works and how it reports.
pub(crate) struct Context<'a> {
    /// The target root.
    pub root: &'a Path,
    /// The agent's state directory (backups and saved uninstall scripts live there).
    pub state_dir: &'a Path,
    /// The agent's store (who else owns a path).
    pub store: &'a Store,
    /// Set when the caller requested abort.
    pub abort: &'a AtomicBool,
    /// Receives the percent complete of the current update, 0..=100.
    pub progress: &'a mut dyn FnMut(u32),
}

impl Context<'_> {
    pub(crate) fn aborted(&self) -> bool {
        self.abort.load(Ordering::Acquire)
    }

    pub(crate) fn backups_of(&self, update_id: Uuid) -> PathBuf {
        self.state_dir.join("backups").join(update_id.to_string())
    }

    pub(crate) fn scripts_of(&self, update_id: Uuid) -> PathBuf {
        self.state_dir.join("scripts").join(update_id.to_string())
    }
}

/// What a successful handler run produced.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// The handler asked for a restart (a command's exit code said so).
    pub reboot_requested: bool,
    /// The raw result (a command's exit status), for `UnmappedResultCode`.
    pub unmapped: i32,
}

/// Why a handler did not succeed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Abort was requested; everything the handler did was undone.
    Aborted,
    /// The handler failed; everything it did was undone.
    Failed { error: Error, unmapped: i32 },
}

impl Failure {
    pub(crate) fn hresult(&self) -> HResult {
        match self {
            Failure::Aborted => crate::hresult::WU_E_UH_OPERATIONCANCELLED,
            Failure::Failed { error, .. } => error.hresult(),
        }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure::Failed { error, unmapped: 0 }
    }
}

/// The result of installing: the manifest to record, and the outcome.
pub(crate) struct Installed {
    pub manifest: Vec<ManifestEntry>,
    pub outcome: Outcome,
    /// What removing the previous revision's obsolete paths passed to other updates.
    pub handovers: Vec<Handover>,
    /// The applied transaction, to finish once the store has committed (or undo if it fails).
    pub tx: Transaction,
}

/// The job's view of a transaction-to-be: what the journal header records.
pub(crate) struct TxStart<'a> {
    /// The history entry recovery records if the operation is found interrupted.
    pub history: &'a UpdateHistoryEntry,
    /// False with `unsafe_io`: skip the `syncfs` calls.
    pub durable: bool,
}

/// Installs `def` into the root through a crash-safe transaction. On success the root holds the
/// update and nothing is recorded yet: the caller commits the manifest to the store with the
/// transaction id, then calls `tx.finish()`, or `tx.undo()` if the commit fails.
pub(crate) fn install(
    ctx: &mut Context<'_>,
    catalog: &Catalog,
    def: &UpdateDefinition,
    previous: Option<&InstalledUpdate>,
    start: TxStart<'_>,
) -> Result<Installed, Failure> {
    let mut tx = Transaction::begin(ctx.root, ctx.state_dir, start.history, start.durable)
        .map_err(files::handler_error)?;
    let result = (|| {
        let stage = tx.dir().join("tree");
        let (outcome, digests) = match &def.handler {
            HandlerSpec::Files {} => {
                let digests = files::extract(ctx, catalog, &def.payload, &stage, 0, 60)?;
                (Outcome::default(), digests)
            }
            HandlerSpec::Command { install, .. } => {
                let work = tx.dir().join("work");
                files::extract(ctx, catalog, &def.payload, &work, 0, 20)?;
                std::fs::create_dir_all(&stage).at("cannot create directory", &stage)?;
                // What the command wrote is hashed while planning.
                let outcome = command::run(ctx, def, install, &work, Some(&stage))?;
                (outcome, files::Digests::new())
            }
        };
        tx.sync_staged().map_err(files::handler_error)?;
        (ctx.progress)(60);
        let manifest = files::plan_tree(ctx, &mut tx, def, &stage, &digests, previous, (60, 90))?;
        let handovers = plan_obsolete(ctx, &mut tx, previous, &manifest)?;
        let scripts = ctx.scripts_of(def.identity.update_id);
        match &def.handler {
            HandlerSpec::Command {
                uninstall: Some(_), ..
            } => {
                // Keep the payload so the uninstall command can run without the catalog, as
                // dpkg keeps maintainer scripts.
                tx.plan_replace_dir(&tx.dir().join("work"), &scripts);
            }
            _ if previous.is_some() => tx.remove_on_finish(scripts),
            _ => {}
        }
        apply(ctx, &mut tx)?;
        Ok((manifest, outcome, handovers))
    })();
    match result {
        Ok((manifest, outcome, handovers)) => {
            (ctx.progress)(100);
            Ok(Installed {
                manifest,
                outcome,
                handovers,
                tx,
            })
        }
        Err(failure) => Err(undo(tx, failure, &def.title)),
    }
}

/// Runs the planned steps, mapping an abort and IO failures to handler failures.
fn apply(ctx: &Context<'_>, tx: &mut Transaction) -> Result<(), Failure> {
    match tx.apply(&|| ctx.aborted()) {
        Ok(()) => Ok(()),
        Err(ApplyError::Aborted) => Err(Failure::Aborted),
        Err(ApplyError::Failed(e)) => Err(files::handler_error(e)),
    }
}

/// Undoes a failed transaction; a failing undo is the error reported.
fn undo(tx: Transaction, failure: Failure, title: &str) -> Failure {
    match tx.undo() {
        Ok(()) => failure,
        Err(undo) => {
            tracing::error!("undoing the failed operation on {title} failed: {undo}");
            Failure::Failed {
                error: undo,
                unmapped: 0,
            }
        }
    }
}

/// On a reinstall or upgrade, plans removing what the installed revision put in the root that
/// the new one does not ship, restoring what it had replaced, as an uninstall would.
fn plan_obsolete(
    ctx: &mut Context<'_>,
    tx: &mut Transaction,
    previous: Option<&InstalledUpdate>,
    manifest: &[ManifestEntry],
) -> Result<Vec<Handover>, Failure> {
    let Some(previous) = previous else {
        return Ok(Vec::new());
    };
    let shipped: std::collections::HashSet<&str> =
        manifest.iter().map(|e| e.path.as_str()).collect();
    let obsolete = previous
        .files
        .iter()
        .filter(|e| !shipped.contains(e.path.as_str()))
        .collect();
    files::plan_remove_entries(ctx, tx, previous, obsolete)
}

/// What uninstalling produced (see [`install`] for the commit protocol).
pub(crate) struct Uninstalled {
    pub outcome: Outcome,
    pub handovers: Vec<Handover>,
    pub tx: Transaction,
}

/// Uninstalls `installed` from the root through a crash-safe transaction: runs its uninstall
/// command if it has one, then removes its files and restores what they replaced.
pub(crate) fn uninstall(
    ctx: &mut Context<'_>,
    installed: &InstalledUpdate,
    start: TxStart<'_>,
) -> Result<Uninstalled, Failure> {
    let def = &installed.definition;
    let mut tx = Transaction::begin(ctx.root, ctx.state_dir, start.history, start.durable)
        .map_err(files::handler_error)?;
    let result = (|| {
        let mut outcome = Outcome::default();
        if let HandlerSpec::Command {
            uninstall: Some(spec),
            ..
        } = &def.handler
        {
            let scripts = ctx.scripts_of(def.identity.update_id);
            outcome = command::run(ctx, def, spec, &scripts, None)?;
        }
        tx.sync_staged().map_err(files::handler_error)?;
        (ctx.progress)(30);
        let handovers = files::plan_remove_installed(ctx, &mut tx, installed)?;
        apply(ctx, &mut tx)?;
        Ok((outcome, handovers))
    })();
    match result {
        Ok((outcome, handovers)) => {
            (ctx.progress)(100);
            Ok(Uninstalled {
                outcome,
                handovers,
                tx,
            })
        }
        Err(failure) => Err(undo(tx, failure, &def.title)),
    }
}
