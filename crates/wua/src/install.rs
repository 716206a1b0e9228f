//! `IUpdateInstaller` and `IInstallationJob`: installing and uninstalling updates, synchronously
//! or as asynchronous jobs with progress and completion callbacks.
//!
//! The rules come from the reference pages `iupdateinstaller-install`, `-begininstall`,
//! `-endinstall`, `-get_isbusy`, `iinstallationjob-*` and the guide page "Guidelines for
//! Asynchronous WUA Operations"; where they are silent this module follows DIGEST §10, and each
//! choice is written where it is made.
//!
//! Threads: each job runs on its own worker thread; its callbacks run on a second thread, the
//! job's dispatcher (the `job` module's machinery), which holds no engine lock. A panicking
//! callback is caught and logged; the job goes on. After [`InstallationJob::clean_up`] returns,
//! no callback of that job runs.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::thread;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::handlers::{self, Failure};
use crate::hresult::*;
use crate::job::{self, Deliver, Event, Job, JobKind, Reporter};
use crate::lock::InstallLock;
use crate::model::{
    InstallationImpact, InstallationRebootBehavior, OperationResultCode, Update, UpdateCollection,
    UpdateOperation,
};
use crate::session::{Agent, next_object_id};
use crate::store::UpdateHistoryEntry;

/// The code returned when an install or uninstall is started while another one runs against
/// the same agent state, or while a mandatory reboot is pending. The method pages
/// (`iupdateinstaller-install`, `-begininstall`) name `WU_E_INSTALL_NOT_ALLOWED`; the `IsBusy`
/// page names `WU_E_OPERATIONINPROGRESS`. We follow the method contracts (DIGEST §10.1); this
/// one constant flips the choice.
pub const BUSY: HResult = WU_E_INSTALL_NOT_ALLOWED;

pub use crate::lock::LOCK_FILE;

/// `IUpdateInstallationResult`: the result for one update.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct UpdateInstallationResult {
    /// `HResult`: the error raised for this update, `S_OK` if none.
    pub hresult: HResult,
    /// `RebootRequired`.
    pub reboot_required: bool,
    /// `ResultCode`.
    pub result_code: OperationResultCode,
}

impl UpdateInstallationResult {
    const NOT_STARTED: Self = UpdateInstallationResult {
        hresult: S_OK,
        reboot_required: false,
        result_code: OperationResultCode::NotStarted,
    };
}

/// `IInstallationResult`: the overall result and the per-update results.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InstallationResult {
    /// `HResult`: `S_OK`; `WU_S_UPDATE_ERROR` when some updates failed;
    /// `WU_E_ALL_UPDATES_FAILED` when all did; `WU_E_CALL_CANCELLED` when aborted.
    pub hresult: HResult,
    /// `RebootRequired`: some update needs a restart to complete.
    pub reboot_required: bool,
    /// `ResultCode`, aggregated as DIGEST §10.5 proposes.
    pub result_code: OperationResultCode,
    /// The per-update results, in the job's `updates` order.
    pub update_results: Vec<UpdateInstallationResult>,
}

impl InstallationResult {
    /// The overall result of a set of per-update results (DIGEST §10.4, §10.5): any `Aborted` →
    /// `Aborted` / `WU_E_CALL_CANCELLED`; all succeeded → `Succeeded` / `S_OK`; some →
    /// `SucceededWithErrors` / `WU_S_UPDATE_ERROR`; none → `Failed` / `WU_E_ALL_UPDATES_FAILED`.
    pub fn aggregate(update_results: Vec<UpdateInstallationResult>) -> InstallationResult {
        use OperationResultCode::*;
        let reboot_required = update_results.iter().any(|r| r.reboot_required);
        let succeeded = update_results
            .iter()
            .filter(|r| r.result_code.is_success())
            .count();
        let aborted = update_results.iter().any(|r| r.result_code == Aborted);
        let (result_code, hresult) = if aborted {
            (Aborted, WU_E_CALL_CANCELLED)
        } else if succeeded == update_results.len() {
            (Succeeded, S_OK)
        } else if succeeded > 0 {
            (SucceededWithErrors, WU_S_UPDATE_ERROR)
        } else {
            (Failed, WU_E_ALL_UPDATES_FAILED)
        };
        InstallationResult {
            hresult,
            reboot_required,
            result_code,
            update_results,
        }
    }

    /// `GetUpdateResult(index)`; a bad index is `WU_E_INVALIDINDEX`.
    pub fn get_update_result(&self, index: usize) -> Result<UpdateInstallationResult> {
        result_at(&self.update_results, index)
    }
}

fn result_at(
    results: &[UpdateInstallationResult],
    index: usize,
) -> Result<UpdateInstallationResult> {
    results.get(index).copied().ok_or_else(|| {
        Error::code(
            WU_E_INVALIDINDEX,
            format!(
                "update index {index} is out of range: the job has {} updates",
                results.len()
            ),
        )
    })
}

/// `IInstallationProgress`: a snapshot of a job's progress. It does not change after it was
/// taken; ask the job again for a newer one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InstallationProgress {
    /// `CurrentUpdateIndex`: zero-based index of the update being processed.
    pub current_update_index: usize,
    /// `CurrentUpdatePercentComplete`, 0..=100.
    pub current_update_percent_complete: u32,
    /// `PercentComplete` of the whole job, 0..=100, never decreasing.
    pub percent_complete: u32,
    /// The per-update results so far (`NotStarted`, `InProgress`, then final).
    pub update_results: Vec<UpdateInstallationResult>,
}

impl InstallationProgress {
    /// `GetUpdateResult(index)`; a bad index is `WU_E_INVALIDINDEX`.
    pub fn get_update_result(&self, index: usize) -> Result<UpdateInstallationResult> {
        result_at(&self.update_results, index)
    }
}

/// `IInstallationProgressChangedCallbackArgs`.
#[derive(Clone, Debug)]
pub struct InstallationProgressChangedCallbackArgs {
    /// `Progress`: the progress at the time the callback was made.
    pub progress: InstallationProgress,
}

/// `IInstallationCompletedCallbackArgs`: reserved, no members (as in WUA).
#[derive(Clone, Debug, Default)]
pub struct InstallationCompletedCallbackArgs {}

crate::job::callback_trait! {
    /// `IInstallationProgressChangedCallback`.
    InstallationProgressChangedCallback(InstallationJob, InstallationProgressChangedCallbackArgs)
}

crate::job::callback_trait! {
    /// `IInstallationCompletedCallback`.
    InstallationCompletedCallback(InstallationJob, InstallationCompletedCallbackArgs)
}

/// Passed for a callback the caller does not want (WUA's `NULL`).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoCallback;

/// What [`InstallationJob::clean_up`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CleanUp {
    /// The job had completed and its callbacks are released (`S_OK`).
    Released,
    /// Called from inside one of the job's own callbacks, which the guide forbids: the
    /// callbacks are released as soon as the running one returns, without waiting
    /// (`WU_S_MARKED_FOR_DISCONNECT`, DIGEST §10.23).
    MarkedForDisconnect,
}

impl CleanUp {
    /// The HRESULT WUA returns for this outcome.
    pub fn hresult(self) -> HResult {
        match self {
            CleanUp::Released => S_OK,
            CleanUp::MarkedForDisconnect => WU_S_MARKED_FOR_DISCONNECT,
        }
    }
}

/// What an installation job adds to [`crate::job`]'s machinery.
struct InstallKind {
    operation: UpdateOperation,
    updates: UpdateCollection,
}

impl JobKind for InstallKind {
    type Progress = InstallationProgress;
    type Output = InstallationResult;

    /// The worker ended without completing the job (a bug): the updates it had not finished
    /// failed with `WU_E_UNEXPECTED`.
    fn abandoned(&self, progress: &InstallationProgress) -> InstallationResult {
        InstallationResult::aggregate(
            progress
                .update_results
                .iter()
                .map(|r| match r.result_code {
                    OperationResultCode::NotStarted | OperationResultCode::InProgress => {
                        UpdateInstallationResult {
                            hresult: WU_E_UNEXPECTED,
                            reboot_required: false,
                            result_code: OperationResultCode::Failed,
                        }
                    }
                    _ => *r,
                })
                .collect(),
        )
    }
}

/// `IInstallationJob`: a running or finished asynchronous install or uninstall.
///
/// Cheap to clone: clones are handles to the same job. The caller's state given to
/// `begin_install`/`begin_uninstall` lives as long as the job (DIGEST §10.22: Rust's ownership
/// takes the place of `EndInstall` releasing the VARIANT).
pub struct InstallationJob<S> {
    core: Job<S, InstallKind>,
}

impl<S> Clone for InstallationJob<S> {
    fn clone(&self) -> Self {
        InstallationJob {
            core: self.core.clone(),
        }
    }
}

impl<S> fmt::Debug for InstallationJob<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstallationJob")
            .field("operation", &self.core.kind().operation)
            .field("updates", &self.core.kind().updates.len())
            .field("is_completed", &self.is_completed())
            .finish()
    }
}

impl<S> InstallationJob<S> {
    /// `AsyncState`: the state the caller passed to `begin_install`/`begin_uninstall`, exactly
    /// as given (`iinstallationjob-get_asyncstate`).
    pub fn async_state(&self) -> &S {
        self.core.async_state()
    }

    /// `IsCompleted`: the operation has been completely processed. True before the completion
    /// callback runs.
    pub fn is_completed(&self) -> bool {
        self.core.is_completed()
    }

    /// `Updates`: a read-only collection of the job's updates, in the order results use.
    pub fn updates(&self) -> &UpdateCollection {
        &self.core.kind().updates
    }

    /// Whether this job installs or uninstalls.
    pub fn operation(&self) -> UpdateOperation {
        self.core.kind().operation
    }

    /// `GetProgress()`: a snapshot of the progress now.
    pub fn get_progress(&self) -> InstallationProgress {
        self.core.get_progress()
    }

    /// `RequestAbort()`: asks the job to stop. Idempotent and harmless after completion. The
    /// update being processed is rolled back (a running command is killed), updates not yet
    /// reached are not touched, and the result is `Aborted` (DIGEST §10.4).
    pub fn request_abort(&self) {
        self.core.request_abort();
    }

    /// Blocks until the job has completed.
    pub fn wait(&self) {
        self.core.wait();
    }

    /// Blocks until the job has completed or `timeout` passed; true if it completed. WUA has no
    /// time-out of its own ("Guidelines for Asynchronous WUA Operations"): this is the caller's.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.core.wait_timeout(timeout)
    }

    /// A future that resolves when the job has completed; works with any executor.
    pub fn completion(&self) -> Completion<S> {
        Completion {
            inner: self.core.completion(),
        }
    }

    /// `CleanUp()`: waits for the job to complete and for the callbacks already due (the
    /// completion callback among them) to run, then releases its callbacks; no callback of this
    /// job runs after it returns (`iinstallationjob-cleanup`). Called from inside one of the
    /// job's own callbacks it cannot wait, and returns [`CleanUp::MarkedForDisconnect`].
    pub fn clean_up(&self) -> CleanUp {
        self.core.clean_up()
    }
}

/// The future returned by [`InstallationJob::completion`].
pub struct Completion<S> {
    inner: job::Completion<S, InstallKind>,
}

impl<S> Future for Completion<S> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        Pin::new(&mut self.inner).poll(cx)
    }
}

/// `IUpdateInstaller` (+`IUpdateInstaller2.ForceQuiet`).
#[derive(Debug)]
pub struct UpdateInstaller {
    agent: Arc<Agent>,
    id: u64,
    updates: Option<UpdateCollection>,
    client_application_id: String,
    is_forced: bool,
    force_quiet: bool,
    allow_source_prompts: bool,
}

impl UpdateInstaller {
    pub(crate) fn new(agent: Arc<Agent>, client_application_id: String) -> Self {
        UpdateInstaller {
            agent,
            id: next_object_id(),
            updates: None,
            client_application_id,
            is_forced: false,
            force_quiet: false,
            allow_source_prompts: true,
        }
    }

    /// `Updates`: the read-only snapshot taken by [`Self::set_updates`], if any.
    pub fn updates(&self) -> Option<&UpdateCollection> {
        self.updates.as_ref()
    }

    /// Sets `Updates`. The installer keeps a read-only snapshot: later changes to the caller's
    /// collection do not affect it (DIGEST §10.25).
    pub fn set_updates(&mut self, updates: &UpdateCollection) {
        self.updates = Some(updates.read_only_copy());
    }

    /// `ClientApplicationID`: recorded in history; `"Unknown"` unless set here or on the session.
    pub fn client_application_id(&self) -> &str {
        &self.client_application_id
    }

    /// Sets `ClientApplicationID`.
    pub fn set_client_application_id(&mut self, id: impl Into<String>) {
        self.client_application_id = id.into();
    }

    /// `IsForced`: install updates even if they are installed already (reinstall), uninstall
    /// even if recorded as not installed.
    pub fn is_forced(&self) -> bool {
        self.is_forced
    }

    /// Sets `IsForced`.
    pub fn set_is_forced(&mut self, forced: bool) {
        self.is_forced = forced;
    }

    /// `ForceQuiet`: updates that can ask for user input fail with
    /// `WU_E_UH_DOESNOTSUPPORTACTION` instead of running (`iupdateinstaller2-put_forcequiet`).
    pub fn force_quiet(&self) -> bool {
        self.force_quiet
    }

    /// Sets `ForceQuiet`.
    pub fn set_force_quiet(&mut self, quiet: bool) {
        self.force_quiet = quiet;
    }

    /// `AllowSourcePrompts`: stored for compatibility; wua never prompts for source media.
    pub fn allow_source_prompts(&self) -> bool {
        self.allow_source_prompts
    }

    /// Sets `AllowSourcePrompts`.
    pub fn set_allow_source_prompts(&mut self, allow: bool) {
        self.allow_source_prompts = allow;
    }

    /// `IsBusy`: an install or uninstall is running against this agent state now, in this or
    /// another process. Advisory, as in WUA: it reserves nothing (`iupdateinstaller-get_isbusy`).
    pub fn is_busy(&self) -> bool {
        // Tested, not taken: probing must never make a concurrent begin_install fail.
        InstallLock::is_held(&self.agent.config.state_dir).unwrap_or(false)
    }

    /// `RebootRequiredBeforeInstallation`: a mandatory reboot from an earlier install or
    /// uninstall is pending in this boot; installs are refused until it happens (DIGEST §10.8).
    pub fn reboot_required_before_installation(&self) -> Result<bool> {
        self.agent.store.mandatory_reboot_pending()
    }

    /// `Install()`: installs `updates` and returns when done.
    pub fn install(&self) -> Result<InstallationResult> {
        let job = self.begin_install(NoCallback, NoCallback, ())?;
        self.end_install(&job)
    }

    /// `Uninstall()`: uninstalls `updates` and returns when done.
    pub fn uninstall(&self) -> Result<InstallationResult> {
        let job = self.begin_uninstall(NoCallback, NoCallback, ())?;
        self.end_uninstall(&job)
    }

    /// `BeginInstall(onProgressChanged, onCompleted, state)`: starts installing `updates` and
    /// returns the job at once. Fails with `WU_E_NO_UPDATE` when `updates` is unset or empty,
    /// [`BUSY`] when another install/uninstall runs or a mandatory reboot is pending,
    /// `WU_E_EXCLUSIVE_INSTALL_CONFLICT` when an exclusive update is mixed with others (nothing
    /// is installed), and `WU_E_EULAS_DECLINED` when no update's licence terms are accepted.
    pub fn begin_install<S, P, C>(
        &self,
        on_progress: P,
        on_completed: C,
        state: S,
    ) -> Result<InstallationJob<S>>
    where
        S: Send + Sync + 'static,
        P: InstallationProgressChangedCallback<S>,
        C: InstallationCompletedCallback<S>,
    {
        self.begin(
            UpdateOperation::Installation,
            on_progress,
            on_completed,
            state,
        )
    }

    /// `BeginUninstall(onProgressChanged, onCompleted, state)`: as [`Self::begin_install`], for
    /// uninstalling.
    pub fn begin_uninstall<S, P, C>(
        &self,
        on_progress: P,
        on_completed: C,
        state: S,
    ) -> Result<InstallationJob<S>>
    where
        S: Send + Sync + 'static,
        P: InstallationProgressChangedCallback<S>,
        C: InstallationCompletedCallback<S>,
    {
        self.begin(
            UpdateOperation::Uninstallation,
            on_progress,
            on_completed,
            state,
        )
    }

    /// `EndInstall(job)`: waits for the job to complete and returns its result. The job must
    /// come from this installer's `begin_install`, and may be ended once; otherwise
    /// `WU_E_INVALID_OPERATION` (DIGEST §10.2, §10.3).
    pub fn end_install<S>(&self, job: &InstallationJob<S>) -> Result<InstallationResult> {
        self.end(job, UpdateOperation::Installation)
    }

    /// `EndUninstall(job)`: as [`Self::end_install`], for a job from `begin_uninstall`.
    pub fn end_uninstall<S>(&self, job: &InstallationJob<S>) -> Result<InstallationResult> {
        self.end(job, UpdateOperation::Uninstallation)
    }

    fn end<S>(
        &self,
        job: &InstallationJob<S>,
        operation: UpdateOperation,
    ) -> Result<InstallationResult> {
        if job.core.owner() == self.id && job.operation() != operation {
            let (wrong, right) = match operation {
                UpdateOperation::Installation => ("end_install", "end_uninstall"),
                UpdateOperation::Uninstallation => ("end_uninstall", "end_install"),
            };
            return Err(Error::code(
                WU_E_INVALID_OPERATION,
                format!("{wrong} was given a job of the other kind; call {right} for it"),
            ));
        }
        job.core.end_with(
            self.id,
            "this job was started by another installer; end it with the installer that began it",
            "this job was already ended; End* may be called once per job",
        )
    }

    /// Takes the agent-wide install lock if it is free (`Ok(None)` when it is held).
    fn try_lock(&self) -> Result<Option<InstallLock>> {
        InstallLock::try_acquire(&self.agent.config.state_dir)
    }

    fn begin<S, P, C>(
        &self,
        operation: UpdateOperation,
        on_progress: P,
        on_completed: C,
        state: S,
    ) -> Result<InstallationJob<S>>
    where
        S: Send + Sync + 'static,
        P: InstallationProgressChangedCallback<S>,
        C: InstallationCompletedCallback<S>,
    {
        let verb = match operation {
            UpdateOperation::Installation => "install",
            UpdateOperation::Uninstallation => "uninstall",
        };
        let updates = match &self.updates {
            Some(u) if !u.is_empty() => u.read_only_copy(),
            _ => {
                return Err(Error::code(
                    WU_E_NO_UPDATE,
                    format!(
                        "cannot {verb}: no updates were given; set the installer's updates first"
                    ),
                ));
            }
        };
        check_exclusive(&updates, operation)?;
        // A bundle counts as accepted only when every part is too (a part's refusal fails it).
        let accepted = |u: &Arc<Update>| {
            u.eula_accepted() && u.bundled_updates().iter().all(|p| p.eula_accepted())
        };
        if operation == UpdateOperation::Installation && !updates.iter().any(accepted) {
            return Err(Error::code(
                WU_E_EULAS_DECLINED,
                "cannot install: the licence terms of every update given are not accepted; accept them first (accept_eula, or --accept-eula)",
            ));
        }
        let Some(lock_file) = self.try_lock()? else {
            return Err(Error::code(
                BUSY,
                format!(
                    "cannot {verb}: another install or uninstall is running on this agent ({}); retry when it has finished",
                    self.agent.config.state_dir.display()
                ),
            ));
        };
        if self.agent.store.mandatory_reboot_pending()? {
            return Err(Error::code(
                BUSY,
                format!(
                    "cannot {verb}: an earlier update requires a restart first; restart the machine, then retry"
                ),
            ));
        }
        let n = updates.len();
        let progress = InstallationProgress {
            current_update_index: 0,
            current_update_percent_complete: 0,
            percent_complete: 0,
            update_results: vec![UpdateInstallationResult::NOT_STARTED; n],
        };
        let kind = InstallKind { operation, updates };
        let (mut on_progress, mut on_completed) = (on_progress, on_completed);
        let deliver: Deliver<S, InstallKind> = Box::new(move |core, event| {
            let job = InstallationJob { core: core.clone() };
            match event {
                Event::Progress(progress) => {
                    on_progress.invoke(&job, &InstallationProgressChangedCallbackArgs { progress })
                }
                Event::Completed => {
                    on_completed.invoke(&job, &InstallationCompletedCallbackArgs {})
                }
            }
        });
        let (core, reporter) = Job::start(state, self.id, kind, progress, deliver)?;
        let worker = Worker {
            agent: self.agent.clone(),
            client_application_id: self.client_application_id.clone(),
            is_forced: self.is_forced,
            force_quiet: self.force_quiet,
        };
        thread::Builder::new()
            .name(format!("wua-{verb}"))
            .spawn(move || worker.run(reporter, lock_file))
            .map_err(|e| Error::code(WU_E_UNEXPECTED, format!("cannot start a thread: {e}")))?;
        Ok(InstallationJob { core })
    }
}

/// An exclusive update must be alone (`ne-wuapi-installationimpact`).
fn check_exclusive(updates: &UpdateCollection, operation: UpdateOperation) -> Result<()> {
    if updates.len() < 2 {
        return Ok(());
    }
    let exclusive = updates.iter().find(|u| {
        let behavior = match operation {
            UpdateOperation::Installation => u.installation_behavior(),
            UpdateOperation::Uninstallation => u.uninstallation_behavior(),
        };
        behavior.impact == InstallationImpact::RequiresExclusiveHandling
    });
    match exclusive {
        Some(u) => Err(Error::code(
            WU_E_EXCLUSIVE_INSTALL_CONFLICT,
            format!(
                "\"{}\" ({}) must be installed on its own; it was given with {} other updates, so none was installed: install it in a separate call",
                u.title(),
                u.identity().update_id,
                updates.len() - 1
            ),
        )),
        None => Ok(()),
    }
}

struct Worker {
    agent: Arc<Agent>,
    client_application_id: String,
    is_forced: bool,
    force_quiet: bool,
}

impl Worker {
    fn run<S>(self, job: Reporter<S, InstallKind>, lock_file: InstallLock) {
        let kind = job.job().kind();
        let n = kind.updates.len();
        for (index, update) in kind.updates.iter().enumerate() {
            if job.job().abort_requested() {
                break;
            }
            self.set_progress(&job, |p| {
                p.current_update_index = index;
                p.current_update_percent_complete = 0;
                p.update_results[index].result_code = OperationResultCode::InProgress;
            });
            let result = self.process(&job, index, update);
            self.set_progress(&job, |p| {
                p.current_update_percent_complete = 100;
                p.update_results[index] = result;
                p.percent_complete = percent(index + 1, 0, n);
            });
        }
        let aborted = job.job().abort_requested();
        let result = Cell::new(None);
        job.complete(
            |progress| {
                for r in &mut progress.update_results {
                    if r.result_code == OperationResultCode::NotStarted && aborted {
                        *r = UpdateInstallationResult {
                            hresult: WU_E_CALL_CANCELLED,
                            reboot_required: false,
                            result_code: OperationResultCode::Aborted,
                        };
                    }
                }
                result.set(Some(InstallationResult::aggregate(
                    progress.update_results.clone(),
                )));
            },
            || {
                // Release the install lock before reporting completion, so a caller that sees
                // the job completed can start the next one at once.
                drop(lock_file);
                result.take().expect("set with the final progress")
            },
        );
    }

    fn set_progress<S>(
        &self,
        job: &Reporter<S, InstallKind>,
        change: impl FnOnce(&mut InstallationProgress),
    ) {
        job.update(|progress| {
            let before = progress.clone();
            change(progress);
            *progress != before
        });
    }

    /// Installs or uninstalls one update of the job and records the outcome. A bundle is its
    /// parts in order: for an install the bundled updates, then the bundle's own payload; for an
    /// uninstall the reverse. Each part is its own transaction with its own history entry; the
    /// first part that fails ends the bundle with that failure (parts done before it stay
    /// done). A new bundle that does not apply fails before any part is touched; a bundle whose
    /// parts were all already done reports `WU_S_ALREADY_INSTALLED`/`_UNINSTALLED`.
    fn process<S>(
        &self,
        job: &Reporter<S, InstallKind>,
        index: usize,
        update: &Update,
    ) -> UpdateInstallationResult {
        let operation = job.job().kind().operation;
        let mut parts: Vec<&Update> = Vec::new();
        let bundled = update.bundled_updates();
        match operation {
            UpdateOperation::Installation => {
                parts.extend(bundled.iter().map(|b| &**b));
                parts.push(update);
            }
            UpdateOperation::Uninstallation => {
                parts.push(update);
                // A part that another installed bundle also lists stays: that bundle still
                // needs it. (A part installed on its own earlier cannot be told apart and is
                // removed with the bundle.)
                let shared = match self.parts_of_other_installed_bundles(update) {
                    Ok(shared) => shared,
                    Err(e) => return self.record_error(update, operation, e),
                };
                parts.extend(
                    bundled
                        .iter()
                        .rev()
                        .filter(|b| !shared.contains(&b.identity().update_id))
                        .map(|b| &**b),
                );
            }
        }
        // Refusals are decided for the whole bundle before any part is touched.
        for part in &parts {
            if let Some((hresult, why)) = self.refusal(operation, part) {
                tracing::info!("{} {}: refused, {why}", operation, update.title());
                return self.record_failure(
                    update,
                    operation,
                    hresult,
                    0,
                    OperationResultCode::Failed,
                );
            }
        }
        // So is a new bundle's applicability: checked only at its own turn, after its parts, a
        // bundle that does not apply would fail with WU_E_NOT_APPLICABLE and leave every part
        // installed. (Each part is still checked at its turn, since a part may need an earlier
        // one; the bundle is checked again at its turn, which changes nothing.)
        if operation == UpdateOperation::Installation && parts.len() > 1 {
            match self
                .agent
                .store
                .installed_update(update.identity().update_id)
            {
                Ok(Some(_)) => {}
                Ok(None) => match self.check_applies(update) {
                    Ok(None) => {}
                    Ok(Some(reason)) => {
                        tracing::info!("install {}: does not apply: {reason}", update.title());
                        return self.record_failure(
                            update,
                            operation,
                            WU_E_NOT_APPLICABLE,
                            0,
                            OperationResultCode::Failed,
                        );
                    }
                    Err(e) => return self.record_error(update, operation, e),
                },
                Err(e) => return self.record_error(update, operation, e),
            }
        }
        let mut reboot_required = false;
        let mut last = succeeded(false);
        // Whether every part was already as wanted (WU_S_ALREADY_INSTALLED/_UNINSTALLED).
        let mut nothing_done = true;
        for (k, part) in parts.iter().enumerate() {
            if k > 0 && job.job().abort_requested() {
                return self.record_failure(
                    update,
                    operation,
                    WU_E_CALL_CANCELLED,
                    0,
                    OperationResultCode::Aborted,
                );
            }
            last = self.process_part(job, index, part, (k, parts.len()));
            if !last.result_code.is_success() {
                return last;
            }
            reboot_required |= last.reboot_required;
            nothing_done &=
                last.hresult == WU_S_ALREADY_INSTALLED || last.hresult == WU_S_ALREADY_UNINSTALLED;
        }
        // A bundle whose parts were all already installed (or uninstalled) is itself: report
        // that code, as for a single update, rather than S_OK, which says work was done.
        if parts.len() > 1 && !nothing_done {
            last = succeeded(reboot_required);
        }
        last
    }

    /// The parts of installed bundles other than `update`.
    fn parts_of_other_installed_bundles(
        &self,
        update: &Update,
    ) -> Result<std::collections::HashSet<uuid::Uuid>> {
        if update.bundled_updates().is_empty() {
            return Ok(Default::default());
        }
        let id = update.identity().update_id;
        Ok(self
            .agent
            .store
            .installed_updates()?
            .into_iter()
            .filter(|i| i.definition.identity.update_id != id)
            .flat_map(|i| i.definition.bundled_updates)
            .collect())
    }

    /// Why this update may not be processed at all (DIGEST §10.7, §10.9 and ForceQuiet).
    fn refusal(
        &self,
        operation: UpdateOperation,
        update: &Update,
    ) -> Option<(HResult, &'static str)> {
        let refusal = match operation {
            UpdateOperation::Installation if !update.eula_accepted() => {
                Some((WU_E_EULAS_DECLINED, "its licence terms are not accepted"))
            }
            UpdateOperation::Uninstallation if !update.is_uninstallable() => {
                Some((WU_E_UNINSTALL_NOT_ALLOWED, "it is not uninstallable"))
            }
            _ => None,
        };
        let behavior = match operation {
            UpdateOperation::Installation => update.installation_behavior(),
            UpdateOperation::Uninstallation => update.uninstallation_behavior(),
        };
        refusal.or_else(|| {
            (self.force_quiet && behavior.can_request_user_input).then_some((
                WU_E_UH_DOESNOTSUPPORTACTION,
                "it can ask for user input and ForceQuiet is set",
            ))
        })
    }

    /// Installs or uninstalls one update (or one part of a bundle: `part` is its index and the
    /// number of parts, which share the update's progress range).
    fn process_part<S>(
        &self,
        job: &Reporter<S, InstallKind>,
        index: usize,
        update: &Update,
        part: (usize, usize),
    ) -> UpdateInstallationResult {
        let operation = job.job().kind().operation;
        let n = job.job().kind().updates.len();
        let behavior = match operation {
            UpdateOperation::Installation => update.installation_behavior(),
            UpdateOperation::Uninstallation => update.uninstallation_behavior(),
        };
        let id = update.identity().update_id;
        let store = &self.agent.store;
        let installed = match store.installed_update(id) {
            Ok(i) => i,
            Err(e) => return self.record_error(update, operation, e),
        };
        match (operation, &installed) {
            // The same revision is installed: nothing to do unless forced. Another revision is
            // upgraded (or downgraded) in place.
            (UpdateOperation::Installation, Some(prev))
                if !self.is_forced
                    && prev.definition.identity.revision_number
                        == update.identity().revision_number =>
            {
                return UpdateInstallationResult {
                    hresult: WU_S_ALREADY_INSTALLED,
                    reboot_required: false,
                    result_code: OperationResultCode::Succeeded,
                };
            }
            (UpdateOperation::Uninstallation, None) => {
                return UpdateInstallationResult {
                    hresult: WU_S_ALREADY_UNINSTALLED,
                    reboot_required: false,
                    result_code: OperationResultCode::Succeeded,
                };
            }
            // A new install must still apply to the machine as it is now: the search that
            // offered it may be old, and an earlier update of this job may have been its
            // prerequisite. Upgrades and reinstalls of an installed update are not re-checked:
            // rules often say "applies while not installed".
            (UpdateOperation::Installation, None) => match self.check_applies(update) {
                Ok(None) => {}
                Ok(Some(reason)) => {
                    tracing::info!("install {}: does not apply: {reason}", update.title());
                    return self.record_failure(
                        update,
                        operation,
                        WU_E_NOT_APPLICABLE,
                        0,
                        OperationResultCode::Failed,
                    );
                }
                Err(e) => return self.record_error(update, operation, e),
            },
            _ => {}
        }
        let (k, parts) = part;
        let mut report = |pct: u32| {
            let pct = ((k as u32 * 100 + pct.min(100)) / parts.max(1) as u32).min(100);
            self.set_progress(job, |p| {
                if pct > p.current_update_percent_complete {
                    p.current_update_percent_complete = pct;
                    p.percent_complete = p.percent_complete.max(percent(index, pct, n));
                }
            });
        };
        // The payload is read from the catalog the update came from (a catalog directory, or
        // the verified download cache of its service).
        let catalog = match update.catalog() {
            Some(catalog) => catalog.clone(),
            None => match self.agent.default_catalog() {
                Ok(catalog) => catalog,
                Err(e) => {
                    return self.record_failure(
                        update,
                        operation,
                        e.hresult(),
                        0,
                        OperationResultCode::Failed,
                    );
                }
            },
        };
        let mut ctx = handlers::Context {
            root: &self.agent.config.root,
            state_dir: &self.agent.config.state_dir,
            store,
            abort: job.job().abort_flag(),
            progress: &mut report,
        };
        let date = Timestamp::now();
        // What recovery records if this operation is interrupted by a crash; the result is
        // filled in then.
        let template = self.history(
            update,
            operation,
            OperationResultCode::InProgress,
            S_OK,
            0,
            date,
        );
        let start = handlers::TxStart {
            history: &template,
            durable: !self.agent.config.unsafe_io,
        };
        let applied = match operation {
            UpdateOperation::Installation => handlers::install(
                &mut ctx,
                &catalog,
                update.definition(),
                installed.as_ref(),
                start,
            )
            .map(|done| {
                let commit = Commit::Install {
                    manifest: done.manifest,
                    handovers: done.handovers,
                };
                (done.outcome, done.tx, commit)
            }),
            UpdateOperation::Uninstallation => {
                let installed = installed.as_ref().expect("checked above");
                handlers::uninstall(&mut ctx, installed, start)
                    .map(|done| (done.outcome, done.tx, Commit::Uninstall(done.handovers)))
            }
        };
        let (outcome, tx, commit) = match applied {
            Ok(applied) => applied,
            Err(failure) => return self.record_handler_failure(update, operation, failure),
        };
        let reboot = reboot_needed(behavior.reboot_behavior, outcome.reboot_requested);
        let history = self.history(
            update,
            operation,
            OperationResultCode::Succeeded,
            S_OK,
            outcome.unmapped,
            date,
        );
        let mandatory =
            behavior.reboot_behavior == InstallationRebootBehavior::AlwaysRequiresReboot;
        let reboot_marker = reboot.then_some(mandatory);
        // The commit point: the outcome, the manifest, the history entry and the transaction id
        // in one SQLite transaction.
        let committed = match &commit {
            Commit::Install {
                manifest,
                handovers,
            } => store.commit_install(
                update.definition(),
                manifest,
                handovers,
                &history,
                reboot_marker,
                tx.txid(),
            ),
            Commit::Uninstall(handovers) => {
                store.commit_uninstall(id, handovers, &history, reboot_marker, tx.txid())
            }
        };
        match committed {
            Ok(()) => {
                tx.finish(store);
                succeeded(reboot)
            }
            Err(e) => {
                if let Err(undo) = tx.undo() {
                    tracing::error!("undo after a failed commit failed: {undo}");
                }
                self.record_error(update, operation, e)
            }
        }
    }

    fn record_handler_failure(
        &self,
        update: &Update,
        operation: UpdateOperation,
        failure: Failure,
    ) -> UpdateInstallationResult {
        let hresult = failure.hresult();
        match failure {
            Failure::Aborted => {
                tracing::info!("{operation} of {} aborted and rolled back", update.title());
                self.record_failure(update, operation, hresult, 0, OperationResultCode::Aborted)
            }
            Failure::Failed { error, unmapped } => {
                tracing::warn!("{operation} of {} failed: {error}", update.title());
                if hresult == WU_E_UH_NEEDANOTHERDOWNLOAD {
                    self.evict_damaged_payload(update);
                }
                self.record_failure(
                    update,
                    operation,
                    hresult,
                    unmapped,
                    OperationResultCode::Failed,
                )
            }
        }
    }

    /// A payload in the download cache that no longer matches its signed digest (damaged
    /// after it was verified: disk error, power cut) is removed, so `IsDownloaded` turns
    /// false and the next download fetches it again. A catalog directory's own files are the
    /// publisher's and stay.
    fn evict_damaged_payload(&self, update: &Update) {
        let Some(catalog) = update.catalog().filter(|c| c.origin().is_some()) else {
            return;
        };
        let path = catalog.payload_path(update.payload());
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::warn!(
                "removed the damaged payload {} from the download cache; download it again",
                path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("cannot remove the damaged payload {}: {e}", path.display()),
        }
    }

    fn record_error(
        &self,
        update: &Update,
        operation: UpdateOperation,
        error: Error,
    ) -> UpdateInstallationResult {
        tracing::warn!("{operation} of {} failed: {error}", update.title());
        self.record_failure(
            update,
            operation,
            error.hresult(),
            0,
            OperationResultCode::Failed,
        )
    }

    /// Whether `update` applies to the machine now, by the rules of the catalog it came from.
    fn check_applies(&self, update: &Update) -> Result<Option<String>> {
        let catalog = match update.catalog() {
            Some(catalog) => catalog.clone(),
            None => self.agent.default_catalog()?,
        };
        crate::search::engine::check_applies(&self.agent, &catalog, update.definition())
    }

    fn record_failure(
        &self,
        update: &Update,
        operation: UpdateOperation,
        hresult: HResult,
        unmapped: i32,
        result_code: OperationResultCode,
    ) -> UpdateInstallationResult {
        let history = self.history(
            update,
            operation,
            result_code,
            hresult,
            unmapped,
            Timestamp::now(),
        );
        if let Err(e) = self.agent.store.add_history(&history) {
            tracing::error!("cannot record history for {}: {e}", update.title());
        }
        UpdateInstallationResult {
            hresult,
            reboot_required: false,
            result_code,
        }
    }

    fn history(
        &self,
        update: &Update,
        operation: UpdateOperation,
        result_code: OperationResultCode,
        hresult: HResult,
        unmapped: i32,
        date: Timestamp,
    ) -> UpdateHistoryEntry {
        UpdateHistoryEntry {
            operation,
            result_code,
            hresult,
            unmapped_result_code: if unmapped != 0 { unmapped } else { hresult.0 },
            date,
            update_identity: update.identity(),
            title: update.title().to_string(),
            description: update.description().to_string(),
            client_application_id: self.client_application_id.clone(),
            // `ssOthers` when the update came from a service: history names it by id.
            server_selection: if update.service_id().is_some() { 3 } else { 0 },
            service_id: update
                .service_id()
                .map(|id| id.to_string())
                .unwrap_or_default(),
            support_url: update.support_url().to_string(),
            uninstallation_notes: update.uninstallation_notes().to_string(),
            uninstallation_steps: update.uninstallation_steps().to_vec(),
            categories: update.categories().to_vec(),
        }
    }
}

/// What the store records for an applied transaction.
enum Commit {
    Install {
        manifest: Vec<crate::store::ManifestEntry>,
        handovers: Vec<crate::store::Handover>,
    },
    Uninstall(Vec<crate::store::Handover>),
}

fn reboot_needed(behavior: InstallationRebootBehavior, requested: bool) -> bool {
    behavior == InstallationRebootBehavior::AlwaysRequiresReboot || requested
}

fn succeeded(reboot_required: bool) -> UpdateInstallationResult {
    UpdateInstallationResult {
        hresult: S_OK,
        reboot_required,
        result_code: OperationResultCode::Succeeded,
    }
}

/// Percent of a job of `n` updates with `done` finished and the current one at `current`%.
fn percent(done: usize, current: u32, n: usize) -> u32 {
    ((done as u64 * 100 + u64::from(current.min(100))) / n.max(1) as u64).min(100) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(code: OperationResultCode) -> UpdateInstallationResult {
        UpdateInstallationResult {
            hresult: S_OK,
            reboot_required: false,
            result_code: code,
        }
    }

    #[test]
    fn aggregation_follows_the_digest() {
        use OperationResultCode::*;
        assert_eq!(
            InstallationResult::aggregate(vec![r(Succeeded), r(Succeeded)]).result_code,
            Succeeded
        );
        let mixed = InstallationResult::aggregate(vec![r(Succeeded), r(Failed)]);
        assert_eq!(
            (mixed.result_code, mixed.hresult),
            (SucceededWithErrors, WU_S_UPDATE_ERROR)
        );
        let failed = InstallationResult::aggregate(vec![r(Failed), r(Failed)]);
        assert_eq!(
            (failed.result_code, failed.hresult),
            (Failed, WU_E_ALL_UPDATES_FAILED)
        );
        let aborted = InstallationResult::aggregate(vec![r(Succeeded), r(Aborted)]);
        assert_eq!(
            (aborted.result_code, aborted.hresult),
            (Aborted, WU_E_CALL_CANCELLED)
        );
    }

    #[test]
    fn percent_is_clamped_and_proportional() {
        assert_eq!(percent(0, 0, 4), 0);
        assert_eq!(percent(1, 50, 4), 37);
        assert_eq!(percent(4, 0, 4), 100);
        assert_eq!(percent(3, 250, 4), 100);
    }
}
