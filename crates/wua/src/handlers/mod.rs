//! Install handlers (`IUpdate.HandlerID`): how an update's payload gets into the target root.
//!
//! * `files` extracts the payload tree into the root;
//! * `command` runs a program from the payload that writes what it installs under `$DESTDIR`
//!   (the convention of `make install DESTDIR=…`), then installs that tree like `files`.
//!
//! Both end in the same transaction ([`files::apply_tree`]): every path the update replaces is
//! moved to the update's backup folder first, and any failure or abort midway undoes every step
//! taken, so the root is left as it was before that update. Uninstall reverses the manifest and
//! restores the backups. Failures map to the `WU_E_UH_*` codes.

pub(crate) mod command;
pub(crate) mod files;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use uuid::Uuid;

use crate::catalog::{Catalog, HandlerSpec, UpdateDefinition};
use crate::error::{Error, IoContext, Result};
use crate::hresult::HResult;
use crate::store::{InstalledUpdate, ManifestEntry, Store};

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
    pub handovers: Vec<crate::store::Handover>,
    /// The transaction, still holding what must be cleaned up or undone.
    pub tx: files::Transaction,
}

/// Installs `def` into the root. On success nothing is recorded yet: the caller commits the
/// returned manifest to the store, then calls `tx.finish()`, or `tx.undo()` if the commit fails.
pub(crate) fn install(
    ctx: &mut Context<'_>,
    catalog: &Catalog,
    def: &UpdateDefinition,
    previous: Option<&InstalledUpdate>,
) -> Result<Installed, Failure> {
    let payload = catalog.open_verified_payload(&def.payload)?;
    let mut tx = files::Transaction::begin(ctx.root)?;
    let result = (|| {
        let stage = tx.dir().join("tree");
        match &def.handler {
            HandlerSpec::Files {} => {
                files::extract(ctx, payload, &def.payload, &stage, 0, 80)?;
                let manifest = files::apply_tree(ctx, &mut tx, def, &stage, previous, 80)?;
                let handovers = remove_obsolete(ctx, &mut tx, previous, &manifest)?;
                if previous.is_some() {
                    // An earlier command revision's saved uninstall payload is obsolete.
                    tx.remove_on_finish(ctx.scripts_of(def.identity.update_id));
                }
                Ok((manifest, Outcome::default(), handovers))
            }
            HandlerSpec::Command { install, uninstall } => {
                let work = tx.dir().join("work");
                files::extract(ctx, payload, &def.payload, &work, 0, 20)?;
                std::fs::create_dir_all(&stage).at("cannot create directory", &stage)?;
                let outcome = command::run(ctx, def, install, &work, Some(&stage))?;
                (ctx.progress)(80);
                let manifest = files::apply_tree(ctx, &mut tx, def, &stage, previous, 80)?;
                let handovers = remove_obsolete(ctx, &mut tx, previous, &manifest)?;
                let scripts = ctx.scripts_of(def.identity.update_id);
                if uninstall.is_some() {
                    // Keep the payload so the uninstall command can run without the catalog,
                    // as dpkg keeps maintainer scripts.
                    tx.replace_dir(&work, &scripts)?;
                } else if previous.is_some() {
                    tx.remove_on_finish(scripts);
                }
                Ok((manifest, outcome, handovers))
            }
        }
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
        Err(failure) => {
            if let Err(undo) = tx.undo() {
                tracing::error!("undoing the failed install of {} failed: {undo}", def.title);
                return Err(Failure::Failed {
                    error: undo,
                    unmapped: 0,
                });
            }
            Err(failure)
        }
    }
}

/// On a reinstall or upgrade, removes what the installed revision put in the root that the new
/// one does not ship, restoring what it had replaced, as an uninstall would.
fn remove_obsolete(
    ctx: &mut Context<'_>,
    tx: &mut files::Transaction,
    previous: Option<&InstalledUpdate>,
    manifest: &[ManifestEntry],
) -> Result<Vec<crate::store::Handover>, Failure> {
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
    files::remove_entries(ctx, tx, previous, obsolete)
}

/// What uninstalling produced (see [`install`] for the commit protocol).
pub(crate) struct Uninstalled {
    pub outcome: Outcome,
    pub handovers: Vec<crate::store::Handover>,
    pub tx: files::Transaction,
}

/// Uninstalls `installed` from the root: runs its uninstall command if it has one, then removes
/// its files and restores what they replaced.
pub(crate) fn uninstall(
    ctx: &mut Context<'_>,
    installed: &InstalledUpdate,
) -> Result<Uninstalled, Failure> {
    let def = &installed.definition;
    let mut outcome = Outcome::default();
    if let HandlerSpec::Command {
        uninstall: Some(spec),
        ..
    } = &def.handler
    {
        let scripts = ctx.scripts_of(def.identity.update_id);
        outcome = command::run(ctx, def, spec, &scripts, None)?;
    }
    (ctx.progress)(30);
    let mut tx = files::Transaction::begin(ctx.root)?;
    match files::remove_installed(ctx, &mut tx, installed) {
        Ok(handovers) => {
            (ctx.progress)(100);
            Ok(Uninstalled {
                outcome,
                handovers,
                tx,
            })
        }
        Err(failure) => {
            if let Err(undo) = tx.undo() {
                tracing::error!(
                    "undoing the failed uninstall of {} failed: {undo}",
                    def.title
                );
                return Err(Failure::Failed {
                    error: undo,
                    unmapped: 0,
                });
            }
            Err(failure)
        }
    }
}
