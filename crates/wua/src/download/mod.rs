//! `IUpdateDownloader` and `IDownloadJob`: downloading updates' payloads into the agent's
//! content-addressed cache, synchronously or as asynchronous jobs with progress and completion
//! callbacks (DIGEST §4).
//!
//! The rules come from the reference pages `iupdatedownloader-download`, `-begindownload`,
//! `-enddownload`, `-get_isforced`, `-get_priority`, `-get_updates`, `idownloadjob-*`,
//! `idownloadprogress-*`, the guide pages `idownloadresult-properties`,
//! `iupdatedownloadresult-properties` and "Guidelines for Asynchronous WUA Operations"; where
//! they are silent this module follows DIGEST §10, and each choice is written where it is
//! made. The job machinery (callbacks on a dispatcher thread, `CleanUp`, `End*` once) is
//! [`crate::job`]'s; the transfer engine is [`fetch`]; the cache is [`cache`].
//!
//! What one job does:
//!
//! 1. for each update, in order, its parts: the updates it bundles, then itself (`DownloadContents`
//!    are meaningful on the bundled updates, `nn-wuapi-iupdate`). Without `IsForced`, an
//!    update that is installed, or that does not apply, is not downloaded
//!    (`iupdatedownloader-get_isforced`), and a payload already verified in the cache is not
//!    downloaded again;
//! 2. every part still needed is fetched, up to [`DownloadPriority`]-dependent many at once
//!    (see [`UpdateDownloader::set_priority`]): from a signed service into the cache, each
//!    byte hashed as it arrives, counted as downloaded only once its length and SHA-256 match
//!    the signed metadata; a local catalog's own payload is verified where it is;
//! 3. progress is reported in bytes as they arrive; the result of each update follows its
//!    parts'; the overall result is aggregated as for installs (DIGEST §10.5).
//!
//! Choices where the reference is silent:
//!
//! | question | choice |
//! |---|---|
//! | installed update, not forced | `Succeeded`, `WU_S_ALREADY_INSTALLED`; nothing fetched |
//! | update that does not apply, not forced | `Failed`, `WU_E_NOT_APPLICABLE` (not downloaded) |
//! | payload verified in the cache, not forced | `Succeeded`, `WU_S_ALREADY_DOWNLOADED`; nothing fetched; forced: fetched and verified again |
//! | local catalog (`--catalog DIR`) | its payload is verified where it is, forced or not: `WU_S_ALREADY_DOWNLOADED`; missing: `WU_E_DM_URLNOTAVAILABLE` |
//! | bundle | its parts' payloads, then its own; the first failing part (in that order) gives the update's code; any aborted part makes it `Aborted` |
//! | digest or length differs, or more bytes than signed | `WU_E_DM_INCORRECTFILEHASH`; the partial download is deleted |
//! | network | `WU_E_PT_HTTP_STATUS_*`, `WU_E_DM_NONETWORK`, `WU_E_TIME_OUT` (stall); a cut transfer is resumed up to [`RESUME_ATTEMPTS`] times first |
//! | abort | transfers stop at once, partial files kept; unfinished updates `Aborted`, `WU_E_CALL_CANCELLED` (DIGEST §10.4) |
//! | `Priority` | how many payloads at once ([`DownloadPriority::parallel_transfers`]) |
//! | "current update" with parallel transfers | the lowest-index update not finished ([`DownloadProgress`]) |
//! | `SUS_E_NOT_INITIALIZED` ("no updates") | unreachable: an empty `Updates` is `WU_E_NO_UPDATE` at `begin_download` |
//! | `ClientApplicationID` | kept and logged; downloads write no history |

pub mod cache;
pub mod fetch;

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde::Serialize;

pub use cache::PayloadCache;
pub use fetch::{FetchEvent, FetchTarget, Fetched, Fetcher, RESUME_ATTEMPTS};

use crate::error::{Error, Result};
use crate::hresult::*;
use crate::install::{CleanUp, NoCallback};
use crate::job::{self, Deliver, Event, Job, JobKind, Reporter};
use crate::model::{OperationResultCode, Update, UpdateCollection};
use crate::net::NetworkOptions;
use crate::session::{Agent, next_object_id};
use fetch::{Engine, Observer, Work};

/// Where one payload comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PayloadSource {
    /// A catalog directory's own payload file (unsigned local catalogs, `--catalog DIR`):
    /// nothing to fetch; verify it in place.
    InPlace(PathBuf),
    /// A target of a signed service: fetch `url`, expect exactly `length` bytes with `sha256`.
    Fetch {
        url: url::Url,
        length: u64,
        sha256: String,
    },
}

/// Finds where an update's payload comes from.
pub(crate) type Resolver = Arc<dyn Fn(&Update) -> Result<PayloadSource> + Send + Sync>;

/// `DownloadPhase` (`ne-wuapi-downloadphase`): the phase of the update being downloaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(i32)]
pub enum DownloadPhase {
    /// `dphInitializing`: preparing (waiting for another downloader of the same payload; for
    /// a `file://` source, re-hashing a partial download before resuming it; over HTTP that
    /// happens while the rest downloads).
    Initializing = 1,
    /// `dphDownloading`: bytes are being transferred.
    Downloading = 2,
    /// `dphVerifying`: checking length and SHA-256, and committing into the cache.
    Verifying = 3,
}

/// `DownloadPriority` (`ne-wuapi-downloadpriority`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(i32)]
pub enum DownloadPriority {
    /// `dpLow`: one payload at a time, leaving bandwidth to others.
    Low = 1,
    /// `dpNormal` (the default): up to `parallel_downloads` payloads at once.
    #[default]
    Normal = 2,
    /// `dpHigh`: up to twice `parallel_downloads` at once.
    High = 3,
    /// `dpExtraHigh`: as `High` (the page gives it no description).
    ExtraHigh = 4,
}

macro_rules! enum_values {
    ($name:ident { $($variant:ident = $text:literal,)* }) => {
        impl $name {
            /// The numeric value `wuapi.h` gives this member.
            pub const fn value(self) -> i32 {
                self as i32
            }

            /// The member with this numeric value, if there is one.
            pub const fn from_value(value: i32) -> Option<Self> {
                $(if value == Self::$variant as i32 {
                    return Some(Self::$variant);
                })*
                None
            }

            /// Every member, in numeric order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)*];
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self { $(Self::$variant => $text,)* })
            }
        }
    };
}

enum_values!(DownloadPhase {
    Initializing = "Initializing",
    Downloading = "Downloading",
    Verifying = "Verifying",
});

enum_values!(DownloadPriority {
    Low = "Low",
    Normal = "Normal",
    High = "High",
    ExtraHigh = "ExtraHigh",
});

impl DownloadPriority {
    /// How many payloads download at once at this priority, given the agent's
    /// `parallel_downloads`: the reference says nothing of what priority does, so wua makes it
    /// the number of simultaneous transfers.
    pub fn parallel_transfers(self, parallel_downloads: usize) -> usize {
        let n = parallel_downloads.max(1);
        match self {
            DownloadPriority::Low => 1,
            DownloadPriority::Normal => n,
            DownloadPriority::High | DownloadPriority::ExtraHigh => n * 2,
        }
    }
}

/// `IUpdateDownloadResult` (guide `iupdatedownloadresult-properties`): the result for one
/// update.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct UpdateDownloadResult {
    /// `HResult`: the error raised for this update; `S_OK`, or `WU_S_ALREADY_DOWNLOADED` when
    /// nothing had to be transferred.
    pub hresult: HResult,
    /// `ResultCode`.
    pub result_code: OperationResultCode,
}

impl UpdateDownloadResult {
    const NOT_STARTED: Self = UpdateDownloadResult {
        hresult: S_OK,
        result_code: OperationResultCode::NotStarted,
    };
    const IN_PROGRESS: Self = UpdateDownloadResult {
        hresult: S_OK,
        result_code: OperationResultCode::InProgress,
    };
    const ABORTED: Self = UpdateDownloadResult {
        hresult: WU_E_CALL_CANCELLED,
        result_code: OperationResultCode::Aborted,
    };

    fn succeeded(hresult: HResult) -> Self {
        UpdateDownloadResult {
            hresult,
            result_code: OperationResultCode::Succeeded,
        }
    }

    fn failed(hresult: HResult) -> Self {
        UpdateDownloadResult {
            hresult,
            result_code: OperationResultCode::Failed,
        }
    }

    fn is_final(&self) -> bool {
        !matches!(
            self.result_code,
            OperationResultCode::NotStarted | OperationResultCode::InProgress
        )
    }
}

/// `IDownloadResult` (guide `idownloadresult-properties`): the overall result and the
/// per-update results.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DownloadResult {
    /// `HResult`: `S_OK`; `WU_S_UPDATE_ERROR` when some updates failed;
    /// `WU_E_ALL_UPDATES_FAILED` when all did; `WU_E_CALL_CANCELLED` when aborted.
    pub hresult: HResult,
    /// `ResultCode`, aggregated as DIGEST §10.5 proposes.
    pub result_code: OperationResultCode,
    /// The per-update results, in the job's `updates` order.
    pub update_results: Vec<UpdateDownloadResult>,
}

impl DownloadResult {
    /// The overall result of a set of per-update results, as for installs (DIGEST §10.4,
    /// §10.5): any `Aborted` → `Aborted` / `WU_E_CALL_CANCELLED`; all succeeded → `Succeeded`
    /// / `S_OK`; some → `SucceededWithErrors` / `WU_S_UPDATE_ERROR`; none → `Failed` /
    /// `WU_E_ALL_UPDATES_FAILED`.
    pub fn aggregate(update_results: Vec<UpdateDownloadResult>) -> DownloadResult {
        use OperationResultCode::*;
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
        DownloadResult {
            hresult,
            result_code,
            update_results,
        }
    }

    /// `GetUpdateResult(index)`; a bad index is `WU_E_INVALIDINDEX`.
    pub fn get_update_result(&self, index: usize) -> Result<UpdateDownloadResult> {
        result_at(&self.update_results, index)
    }
}

fn result_at(results: &[UpdateDownloadResult], index: usize) -> Result<UpdateDownloadResult> {
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

/// `IDownloadProgress`: a snapshot of a job's progress (`idownloadjob-getprogress`: it does
/// not change after it was taken; ask the job again for a newer one).
///
/// Byte counts are `u64` (the IDL's DECIMAL, DIGEST §10.18). Payloads download in parallel,
/// so "the current update" is a choice: the lowest-index update not finished yet (the last
/// update once all are). Bytes already in a partial download when the job resumed it count
/// as downloaded; if the server makes a download start over, the byte counts go back down,
/// while the percentages never decrease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DownloadProgress {
    /// `CurrentUpdateIndex`: zero-based index of the current update (see above).
    pub current_update_index: usize,
    /// `CurrentUpdateBytesDownloaded`: bytes of the current update's payloads received.
    pub current_update_bytes_downloaded: u64,
    /// `CurrentUpdateBytesToDownload`: bytes of the current update's payloads to transfer
    /// (0 when they are all on this machine already).
    pub current_update_bytes_to_download: u64,
    /// `CurrentUpdateDownloadPhase`.
    pub current_update_download_phase: DownloadPhase,
    /// `CurrentUpdatePercentComplete`, 0..=100.
    pub current_update_percent_complete: u32,
    /// `PercentComplete` of the whole job, 0..=100, never decreasing; weighted by bytes to
    /// transfer (by update count when there are none).
    pub percent_complete: u32,
    /// `TotalBytesDownloaded`.
    pub total_bytes_downloaded: u64,
    /// `TotalBytesToDownload`: the bytes every payload not yet verified in the cache needs.
    pub total_bytes_to_download: u64,
    /// The per-update results so far (`NotStarted`, `InProgress`, then final).
    pub update_results: Vec<UpdateDownloadResult>,
}

impl DownloadProgress {
    fn new(n: usize) -> Self {
        DownloadProgress {
            current_update_index: 0,
            current_update_bytes_downloaded: 0,
            current_update_bytes_to_download: 0,
            current_update_download_phase: DownloadPhase::Initializing,
            current_update_percent_complete: 0,
            percent_complete: 0,
            total_bytes_downloaded: 0,
            total_bytes_to_download: 0,
            update_results: vec![UpdateDownloadResult::NOT_STARTED; n],
        }
    }

    /// `GetUpdateResult(index)` (`idownloadprogress-getupdateresult`); a bad index is
    /// `WU_E_INVALIDINDEX`.
    pub fn get_update_result(&self, index: usize) -> Result<UpdateDownloadResult> {
        result_at(&self.update_results, index)
    }
}

/// `IDownloadProgressChangedCallbackArgs`.
#[derive(Clone, Debug)]
pub struct DownloadProgressChangedCallbackArgs {
    /// `Progress`: the progress at the time the callback was made.
    pub progress: DownloadProgress,
}

/// `IDownloadCompletedCallbackArgs`: reserved, no members (`idownloadcompletedcallback-invoke`).
#[derive(Clone, Debug, Default)]
pub struct DownloadCompletedCallbackArgs {}

crate::job::callback_trait! {
    /// `IDownloadProgressChangedCallback`.
    DownloadProgressChangedCallback(DownloadJob, DownloadProgressChangedCallbackArgs)
}

crate::job::callback_trait! {
    /// `IDownloadCompletedCallback`.
    DownloadCompletedCallback(DownloadJob, DownloadCompletedCallbackArgs)
}

/// What a download job adds to [`crate::job`]'s machinery.
struct DownloadKind {
    updates: UpdateCollection,
    engine: Arc<Engine>,
}

impl JobKind for DownloadKind {
    type Progress = DownloadProgress;
    type Output = DownloadResult;

    fn on_abort(&self) {
        self.engine.abort.fire();
    }

    fn abandoned(&self, progress: &DownloadProgress) -> DownloadResult {
        DownloadResult::aggregate(
            progress
                .update_results
                .iter()
                .map(|r| {
                    if r.is_final() {
                        *r
                    } else {
                        UpdateDownloadResult::failed(WU_E_UNEXPECTED)
                    }
                })
                .collect(),
        )
    }
}

/// `IDownloadJob`: a running or finished asynchronous download.
///
/// Cheap to clone: clones are handles to the same job. The caller's state given to
/// `begin_download` lives as long as the job (`iupdatedownloader-begindownload` releases it at
/// `EndDownload`; in Rust, ownership does: DIGEST §10.22).
pub struct DownloadJob<S> {
    core: Job<S, DownloadKind>,
}

impl<S> Clone for DownloadJob<S> {
    fn clone(&self) -> Self {
        DownloadJob {
            core: self.core.clone(),
        }
    }
}

impl<S> fmt::Debug for DownloadJob<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DownloadJob")
            .field("updates", &self.core.kind().updates.len())
            .field("is_completed", &self.is_completed())
            .finish()
    }
}

impl<S> DownloadJob<S> {
    /// `AsyncState`: the state the caller passed to `begin_download`, exactly as given
    /// (`idownloadjob-get_asyncstate`).
    pub fn async_state(&self) -> &S {
        self.core.async_state()
    }

    /// `IsCompleted`: the download has been completely processed
    /// (`idownloadjob-get_iscompleted`). True before the completion callback runs.
    pub fn is_completed(&self) -> bool {
        self.core.is_completed()
    }

    /// `Updates`: a read-only collection of the job's updates, in the order results use
    /// (`idownloadjob-get_updates`).
    pub fn updates(&self) -> &UpdateCollection {
        &self.core.kind().updates
    }

    /// `GetProgress()`: a snapshot of the progress now (`idownloadjob-getprogress`).
    pub fn get_progress(&self) -> DownloadProgress {
        self.core.get_progress()
    }

    /// `RequestAbort()` (`idownloadjob-requestabort`): asks the download to stop. Idempotent and
    /// harmless after completion. Transfers stop at once, even while waiting for the network;
    /// their partial files are kept, so a later download resumes them. Updates not finished
    /// are `Aborted` with `WU_E_CALL_CANCELLED`, and so is the job (DIGEST §10.4).
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
    pub fn completion(&self) -> impl std::future::Future<Output = ()> + Send + 'static
    where
        S: Send + Sync + 'static,
    {
        self.core.completion()
    }

    /// `CleanUp()` (`idownloadjob-cleanup`): waits for the job to complete and for the callbacks
    /// already due (the completion callback among them) to run, then releases its callbacks; no
    /// callback of this job runs after it returns. Called from inside one of the job's own
    /// callbacks, which the guide forbids, it cannot wait, and returns
    /// [`CleanUp::MarkedForDisconnect`] (DIGEST §10.23).
    pub fn clean_up(&self) -> CleanUp {
        self.core.clean_up()
    }
}

/// `IUpdateDownloader`: downloads the payloads of updates (DIGEST §4.1).
pub struct UpdateDownloader {
    id: u64,
    updates: Option<UpdateCollection>,
    priority: DownloadPriority,
    is_forced: bool,
    client_application_id: String,
    network: NetworkOptions,
    cache: PayloadCache,
    resolver: Resolver,
}

impl fmt::Debug for UpdateDownloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpdateDownloader")
            .field("updates", &self.updates.as_ref().map(|u| u.len()))
            .field("priority", &self.priority)
            .field("is_forced", &self.is_forced)
            .field("client_application_id", &self.client_application_id)
            .field("cache", &self.cache)
            .finish()
    }
}

impl UpdateDownloader {
    /// A downloader for the agent's updates (`IUpdateSession::CreateUpdateDownloader`), with
    /// the session's `ClientApplicationID` (DIGEST §10.26).
    pub(crate) fn new(agent: Arc<Agent>, client_application_id: String) -> Self {
        let mut cache = PayloadCache::new(&agent.config.state_dir);
        cache.set_durable(!agent.config.unsafe_io);
        let network = agent.config.network.clone();
        let resolver: Resolver = Arc::new(move |update: &Update| agent.payload_source(update));
        UpdateDownloader::with_resolver(cache, network, client_application_id, resolver)
    }

    /// A downloader into `cache` that asks `resolver` where payloads come from.
    pub(crate) fn with_resolver(
        cache: PayloadCache,
        network: NetworkOptions,
        client_application_id: String,
        resolver: Resolver,
    ) -> Self {
        UpdateDownloader {
            id: next_object_id(),
            updates: None,
            priority: DownloadPriority::default(),
            is_forced: false,
            client_application_id,
            network,
            cache,
            resolver,
        }
    }

    /// `Updates`: the read-only snapshot taken by [`Self::set_updates`], if any
    /// (`iupdatedownloader-get_updates`).
    pub fn updates(&self) -> Option<&UpdateCollection> {
        self.updates.as_ref()
    }

    /// Sets `Updates`. The downloader keeps a read-only snapshot: later changes to the caller's
    /// collection do not affect it (DIGEST §10.25).
    pub fn set_updates(&mut self, updates: &UpdateCollection) {
        self.updates = Some(updates.read_only_copy());
    }

    /// `ClientApplicationID`: `"Unknown"` unless set here or on the session. Downloads record
    /// no history, so it is only kept, and logged.
    pub fn client_application_id(&self) -> &str {
        &self.client_application_id
    }

    /// Sets `ClientApplicationID`.
    pub fn set_client_application_id(&mut self, id: impl Into<String>) {
        self.client_application_id = id.into();
    }

    /// `IsForced` (`iupdatedownloader-get_isforced`): download even updates that are installed
    /// or do not apply, and download payloads again (and verify them again) even when the
    /// cache has them.
    pub fn is_forced(&self) -> bool {
        self.is_forced
    }

    /// Sets `IsForced`.
    pub fn set_is_forced(&mut self, forced: bool) {
        self.is_forced = forced;
    }

    /// `Priority` (`iupdatedownloader-get_priority`); `Normal` by default.
    pub fn priority(&self) -> DownloadPriority {
        self.priority
    }

    /// Sets `Priority`. The reference gives no meaning beyond the names; in wua it is how many
    /// payloads download at once ([`DownloadPriority::parallel_transfers`]): `Low` one at a
    /// time, `Normal` the agent's `parallel_downloads`, `High` and `ExtraHigh` twice that.
    pub fn set_priority(&mut self, priority: DownloadPriority) {
        self.priority = priority;
    }

    /// The network options downloads use: the session's, unless changed here (wua's own).
    pub fn network_options(&self) -> &NetworkOptions {
        &self.network
    }

    /// Sets the network options (time-outs, parallel transfers) for downloads started later.
    pub fn set_network_options(&mut self, network: NetworkOptions) {
        self.network = network;
    }

    /// The cache downloads go into.
    pub fn cache(&self) -> &PayloadCache {
        &self.cache
    }

    /// `Download()` (`iupdatedownloader-download`): downloads `updates` and returns when done.
    pub fn download(&self) -> Result<DownloadResult> {
        let job = self.begin_download(NoCallback, NoCallback, ())?;
        self.end_download(&job)
    }

    /// `BeginDownload(onProgressChanged, onCompleted, state)` (`iupdatedownloader-begindownload`):
    /// starts downloading `updates` and returns the job at once. `WU_E_NO_UPDATE` when `updates`
    /// is unset or empty (`iupdatedownloader-download` remarks). Per-update failures (network,
    /// digest) are results, not errors of the call.
    pub fn begin_download<S, P, C>(
        &self,
        on_progress: P,
        on_completed: C,
        state: S,
    ) -> Result<DownloadJob<S>>
    where
        S: Send + Sync + 'static,
        P: DownloadProgressChangedCallback<S>,
        C: DownloadCompletedCallback<S>,
    {
        let updates = match &self.updates {
            Some(u) if !u.is_empty() => u.read_only_copy(),
            _ => {
                return Err(Error::code(
                    WU_E_NO_UPDATE,
                    "cannot download: no updates were given; set the downloader's updates first",
                ));
            }
        };
        let fetcher = Fetcher::new(self.cache.clone(), &self.network)?;
        let n = updates.len();
        let kind = DownloadKind {
            updates,
            engine: fetcher.engine().clone(),
        };
        let (mut on_progress, mut on_completed) = (on_progress, on_completed);
        let deliver: Deliver<S, DownloadKind> = Box::new(move |core, event| {
            let job = DownloadJob { core: core.clone() };
            match event {
                Event::Progress(progress) => {
                    on_progress.invoke(&job, &DownloadProgressChangedCallbackArgs { progress })
                }
                Event::Completed => on_completed.invoke(&job, &DownloadCompletedCallbackArgs {}),
            }
        });
        let (core, reporter) = Job::start(state, self.id, kind, DownloadProgress::new(n), deliver)?;
        let worker = Worker {
            fetcher,
            resolver: self.resolver.clone(),
            is_forced: self.is_forced,
            parallel: self
                .priority
                .parallel_transfers(self.network.parallel_downloads),
        };
        tracing::info!(
            "download of {n} updates started for {} (priority {}, forced {})",
            self.client_application_id,
            self.priority,
            self.is_forced
        );
        std::thread::Builder::new()
            .name("wua-download".into())
            .spawn(move || worker.run(reporter))
            .map_err(|e| Error::code(WU_E_UNEXPECTED, format!("cannot start a thread: {e}")))?;
        Ok(DownloadJob { core })
    }

    /// `EndDownload(job)` (`iupdatedownloader-enddownload`): waits for the job to complete and
    /// returns its result. The job must come from this downloader's `begin_download`, and may
    /// be ended once; otherwise `WU_E_INVALID_OPERATION` (DIGEST §10.2, §10.3).
    pub fn end_download<S>(&self, job: &DownloadJob<S>) -> Result<DownloadResult> {
        job.core.end(self.id, "end_download")
    }
}

/// The worker thread's side of a job.
struct Worker {
    fetcher: Fetcher,
    resolver: Resolver,
    is_forced: bool,
    parallel: usize,
}

/// One payload to get, for update `update`, part `part`.
struct Task {
    update: usize,
    part: usize,
    work: Work,
}

/// How one part ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PartEnd {
    Downloaded,
    AlreadyThere,
    Failed(HResult),
    Aborted,
}

impl Worker {
    fn run<S: Send + Sync + 'static>(self, reporter: Reporter<S, DownloadKind>) {
        let updates = reporter.job().kind().updates.clone();
        let n = updates.len();
        let mut tracker = Tracker::new(n);
        let mut tasks = Vec::new();
        for (index, update) in updates.iter().enumerate() {
            match self.plan(update) {
                Ok(parts) => {
                    for (k, (work, to_download)) in parts.into_iter().enumerate() {
                        tracker.add_part(index, to_download, work.is_none());
                        if let Some(work) = work {
                            tasks.push(Task {
                                update: index,
                                part: k,
                                work,
                            });
                        }
                    }
                }
                Err(result) => tracker.set_final(index, result),
            }
        }
        let shared = Arc::new(Shared {
            tracker: Mutex::new(tracker),
            reporter,
        });
        shared.with(|tracker, progress| {
            tracker.settle_planned(progress);
            true
        });
        let engine = self.fetcher.engine().clone();
        let force = self.is_forced;
        self.fetcher.block_on(async {
            futures::stream::iter(tasks)
                .map(|task| {
                    let (engine, shared) = (engine.clone(), shared.clone());
                    // A task of its own, so the transfer runs on the runtime's worker threads
                    // next to its connection.
                    tokio::spawn(async move {
                        shared.with(|tracker, progress| tracker.start(task.update, progress));
                        let observer: Arc<dyn Observer> = Arc::new(PartObserver {
                            shared: shared.clone(),
                            update: task.update,
                            part: task.part,
                        });
                        let end = match engine.run(&task.work, force, observer).await {
                            Ok(Fetched::Downloaded) => PartEnd::Downloaded,
                            Ok(Fetched::AlreadyCached) => PartEnd::AlreadyThere,
                            Err(e) if e.hresult() == WU_E_CALL_CANCELLED => PartEnd::Aborted,
                            Err(e) => {
                                let updates = &shared.reporter.job().kind().updates;
                                let title = updates
                                    .get(task.update)
                                    .map(|u| u.title().to_string())
                                    .unwrap_or_default();
                                tracing::warn!("download of \"{title}\" failed: {e}");
                                PartEnd::Failed(e.hresult())
                            }
                        };
                        shared.with(|tracker, progress| {
                            tracker.finish_part(task.update, task.part, end, progress)
                        });
                    })
                })
                .buffer_unordered(self.parallel.max(1))
                .for_each(|joined| {
                    if let Err(e) = joined {
                        tracing::error!("a download task failed: {e} (a bug in wua)");
                    }
                    std::future::ready(())
                })
                .await
        });
        // Every transfer has ended and closed its files; the runtime goes before completion is
        // reported, so a caller who sees the job completed finds nothing of it still running.
        drop(self.fetcher);
        let results = job::lock(&shared.tracker).final_results();
        let result = DownloadResult::aggregate(results.clone());
        tracing::info!("download finished: {}", result.result_code);
        shared.reporter.complete(
            |progress| {
                progress.update_results = results;
            },
            || result,
        );
    }

    /// The parts of one update and what each needs: `(None, 0)` for a payload already in the
    /// cache. `Err` is the update's final result when it is not downloaded at all.
    #[allow(clippy::type_complexity)]
    fn plan(
        &self,
        update: &Update,
    ) -> std::result::Result<Vec<(Option<Work>, u64)>, UpdateDownloadResult> {
        if !self.is_forced {
            // `iupdatedownloader-get_isforced`: only a forced download fetches updates that are
            // installed or that cannot be installed. Installed: nothing to do, which is no
            // failure (`WU_S_ALREADY_INSTALLED`); not applicable: not downloaded, `Failed` with
            // `WU_E_NOT_APPLICABLE`, as installing it would be.
            if update.is_installed() {
                return Err(UpdateDownloadResult::succeeded(WU_S_ALREADY_INSTALLED));
            }
            if !update.is_installable() {
                return Err(UpdateDownloadResult::failed(WU_E_NOT_APPLICABLE));
            }
        }
        let mut parts = Vec::new();
        let bundled = update.bundled_updates();
        for part in bundled.iter().map(|b| &**b).chain(std::iter::once(update)) {
            let source = (self.resolver)(part).map_err(|e| {
                tracing::warn!("cannot download \"{}\": {e}", part.title());
                UpdateDownloadResult::failed(e.hresult())
            })?;
            parts.push(match source {
                PayloadSource::InPlace(path) => (
                    Some(Work::Verify {
                        path,
                        sha256: part.payload().sha256.clone(),
                        length: part.payload().size,
                    }),
                    0,
                ),
                PayloadSource::Fetch {
                    url,
                    length,
                    sha256,
                } => {
                    if !self.is_forced && self.fetcher.cache().contains_with_length(&sha256, length)
                    {
                        (None, 0)
                    } else {
                        (
                            Some(Work::Fetch(FetchTarget {
                                url,
                                length,
                                sha256,
                            })),
                            length,
                        )
                    }
                }
            });
        }
        Ok(parts)
    }
}

/// What the tasks of a job share: the progress tracker and the job's reporter.
struct Shared<S> {
    tracker: Mutex<Tracker>,
    reporter: Reporter<S, DownloadKind>,
}

impl<S> Shared<S> {
    /// Runs `f` on the tracker and the job's progress; an event is sent when it returns true.
    fn with(&self, f: impl FnOnce(&mut Tracker, &mut DownloadProgress) -> bool) {
        let mut tracker = job::lock(&self.tracker);
        self.reporter.update(|progress| f(&mut tracker, progress));
    }
}

/// Forwards one part's progress to the tracker.
struct PartObserver<S> {
    shared: Arc<Shared<S>>,
    update: usize,
    part: usize,
}

impl<S: Send + Sync> Observer for PartObserver<S> {
    fn phase(&self, phase: DownloadPhase) {
        self.shared
            .with(|tracker, progress| tracker.set_phase(self.update, self.part, phase, progress));
    }

    fn bytes(&self, have: u64) {
        self.shared
            .with(|tracker, progress| tracker.set_bytes(self.update, self.part, have, progress));
    }
}

/// The least time between two progress events that only report bytes (events for a new
/// percentage, phase or result are sent at once).
const BYTES_EVENT_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Default)]
struct PartTrack {
    to_download: u64,
    have: u64,
    phase: Option<DownloadPhase>,
    end: Option<PartEnd>,
}

#[derive(Default)]
struct UpdateTrack {
    parts: Vec<PartTrack>,
    to_download: u64,
    /// Bytes received, each part counted up to its size.
    downloaded: u64,
    started: bool,
    result: Option<UpdateDownloadResult>,
    /// The highest percentage reported for this update.
    percent: u32,
}

impl UpdateTrack {
    fn finished(&self) -> bool {
        self.result.is_some()
    }

    fn phase(&self) -> DownloadPhase {
        let phases = || self.parts.iter().filter_map(|p| p.phase);
        if phases().any(|p| p == DownloadPhase::Downloading) {
            DownloadPhase::Downloading
        } else if phases().any(|p| p == DownloadPhase::Verifying) {
            DownloadPhase::Verifying
        } else {
            DownloadPhase::Initializing
        }
    }

    fn percent(&self) -> u32 {
        if self.finished() {
            return 100;
        }
        // 100 means done: verified, not just received.
        (self.downloaded * 100)
            .checked_div(self.to_download)
            .map_or(0, |p| p.min(99) as u32)
    }
}

/// The state of every update's parts, from which the job's [`DownloadProgress`] is derived.
/// Aggregates are kept up to date as bytes arrive, so a byte report costs the same however
/// many updates the job has.
struct Tracker {
    updates: Vec<UpdateTrack>,
    total_to_download: u64,
    /// Bytes received, each part counted up to its size.
    total_downloaded: u64,
    /// For the job's percentage: all bytes of finished updates, the received ones of others.
    done: u64,
    finished: usize,
    /// The current update: the first not finished, or the last.
    current: usize,
    last_event: Instant,
}

impl Tracker {
    fn new(n: usize) -> Tracker {
        Tracker {
            updates: (0..n).map(|_| UpdateTrack::default()).collect(),
            total_to_download: 0,
            total_downloaded: 0,
            done: 0,
            finished: 0,
            current: 0,
            last_event: Instant::now(),
        }
    }

    fn add_part(&mut self, update: usize, to_download: u64, already_there: bool) {
        let track = &mut self.updates[update];
        track.parts.push(PartTrack {
            to_download,
            end: already_there.then_some(PartEnd::AlreadyThere),
            ..PartTrack::default()
        });
        track.to_download += to_download;
        self.total_to_download += to_download;
    }

    /// Records update `update`'s final result.
    fn set_final(&mut self, update: usize, result: UpdateDownloadResult) {
        let track = &mut self.updates[update];
        if track.finished() {
            return;
        }
        track.result = Some(result);
        self.finished += 1;
        self.done += track.to_download - track.downloaded;
    }

    /// After planning: updates with nothing left to do are finished; the totals are known.
    fn settle_planned(&mut self, progress: &mut DownloadProgress) {
        for index in 0..self.updates.len() {
            let track = &self.updates[index];
            if !track.finished() && track.parts.iter().all(|p| p.end.is_some()) {
                let result = update_result(&track.parts);
                self.set_final(index, result);
            }
            if let Some(result) = self.updates[index].result {
                progress.update_results[index] = result;
            }
        }
        self.refresh(progress);
    }

    fn start(&mut self, update: usize, progress: &mut DownloadProgress) -> bool {
        let track = &mut self.updates[update];
        if track.started || track.finished() {
            return false;
        }
        track.started = true;
        progress.update_results[update] = UpdateDownloadResult::IN_PROGRESS;
        self.refresh(progress);
        true
    }

    fn set_phase(
        &mut self,
        update: usize,
        part: usize,
        phase: DownloadPhase,
        progress: &mut DownloadProgress,
    ) -> bool {
        let slot = &mut self.updates[update].parts[part].phase;
        if *slot == Some(phase) {
            return false;
        }
        *slot = Some(phase);
        self.refresh(progress)
    }

    fn set_bytes(
        &mut self,
        update: usize,
        part: usize,
        have: u64,
        progress: &mut DownloadProgress,
    ) -> bool {
        let track = &mut self.updates[update];
        let p = &mut track.parts[part];
        let (before, after) = (p.have.min(p.to_download), have.min(p.to_download));
        p.have = have;
        track.downloaded = track.downloaded + after - before;
        self.total_downloaded = self.total_downloaded + after - before;
        if !track.finished() {
            self.done = self.done + after - before;
        }
        let percents = (
            progress.percent_complete,
            progress.current_update_percent_complete,
        );
        let changed = self.refresh(progress);
        let now = Instant::now();
        let due = changed
            || percents
                != (
                    progress.percent_complete,
                    progress.current_update_percent_complete,
                )
            || now.duration_since(self.last_event) >= BYTES_EVENT_INTERVAL;
        if due {
            self.last_event = now;
        }
        due
    }

    fn finish_part(
        &mut self,
        update: usize,
        part: usize,
        end: PartEnd,
        progress: &mut DownloadProgress,
    ) -> bool {
        let track = &mut self.updates[update];
        track.parts[part].end = Some(end);
        if track.parts.iter().all(|p| p.end.is_some()) {
            let result = update_result(&track.parts);
            self.set_final(update, result);
            progress.update_results[update] = result;
        }
        self.refresh(progress);
        true
    }

    /// Derives the progress fields; true when the current update or its phase changed.
    fn refresh(&mut self, progress: &mut DownloadProgress) -> bool {
        let n = self.updates.len();
        while self.current + 1 < n && self.updates[self.current].finished() {
            self.current += 1;
        }
        let current = self.current;
        let track = &mut self.updates[current];
        track.percent = track.percent.max(track.percent());
        let phase = track.phase();
        let changed = progress.current_update_index != current
            || progress.current_update_download_phase != phase;
        progress.current_update_index = current;
        progress.current_update_download_phase = phase;
        progress.current_update_bytes_downloaded = track.downloaded;
        progress.current_update_bytes_to_download = track.to_download;
        progress.current_update_percent_complete = track.percent;
        progress.total_bytes_downloaded = self.total_downloaded;
        progress.total_bytes_to_download = self.total_to_download;
        progress.percent_complete = progress.percent_complete.max(self.percent());
        changed
    }

    /// The job's percentage: by bytes when there are bytes to transfer, each finished update
    /// counting all of its bytes; by finished updates otherwise. 100 only when all finished.
    fn percent(&self) -> u32 {
        let n = self.updates.len();
        if self.finished == n {
            return 100;
        }
        let pct = (self.done * 100)
            .checked_div(self.total_to_download)
            .unwrap_or((self.finished * 100 / n.max(1)) as u64);
        pct.min(99) as u32
    }

    /// Every update's result; updates not finished (a bug) are failures.
    fn final_results(&self) -> Vec<UpdateDownloadResult> {
        self.updates
            .iter()
            .map(|t| {
                t.result
                    .unwrap_or(UpdateDownloadResult::failed(WU_E_UNEXPECTED))
            })
            .collect()
    }
}

/// An update's result from its parts': the first failure (in part order); else aborted if a
/// part was; else `WU_S_ALREADY_DOWNLOADED` when nothing was transferred, `S_OK` otherwise.
fn update_result(parts: &[PartTrack]) -> UpdateDownloadResult {
    let ends = || parts.iter().filter_map(|p| p.end);
    if let Some(hresult) = ends().find_map(|e| match e {
        PartEnd::Failed(h) => Some(h),
        _ => None,
    }) {
        return UpdateDownloadResult::failed(hresult);
    }
    if ends().any(|e| e == PartEnd::Aborted) {
        return UpdateDownloadResult::ABORTED;
    }
    if ends().all(|e| e == PartEnd::AlreadyThere) {
        UpdateDownloadResult::succeeded(WU_S_ALREADY_DOWNLOADED)
    } else {
        UpdateDownloadResult::succeeded(S_OK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(parts: &[&[u64]]) -> (Tracker, DownloadProgress) {
        let mut tracker = Tracker::new(parts.len());
        for (i, sizes) in parts.iter().enumerate() {
            for &size in *sizes {
                tracker.add_part(i, size, false);
            }
        }
        let mut progress = DownloadProgress::new(parts.len());
        tracker.settle_planned(&mut progress);
        (tracker, progress)
    }

    #[test]
    fn the_current_update_is_the_lowest_index_not_finished() {
        let (mut t, mut p) = tracker(&[&[100], &[300]]);
        assert_eq!(p.total_bytes_to_download, 400);
        t.start(0, &mut p);
        t.start(1, &mut p);
        t.set_phase(1, 0, DownloadPhase::Downloading, &mut p);
        t.set_bytes(1, 0, 300, &mut p);
        assert_eq!(p.current_update_index, 0);
        assert_eq!(p.current_update_bytes_downloaded, 0);
        assert_eq!(p.percent_complete, 75);
        assert_eq!(p.total_bytes_downloaded, 300);
        t.finish_part(1, 0, PartEnd::Downloaded, &mut p);
        assert_eq!(p.update_results[1], UpdateDownloadResult::succeeded(S_OK));
        assert_eq!(
            p.update_results[0].result_code,
            OperationResultCode::InProgress
        );
        t.set_bytes(0, 0, 50, &mut p);
        assert_eq!(
            (
                p.current_update_bytes_downloaded,
                p.current_update_percent_complete
            ),
            (50, 50)
        );
        // Received in full, not yet verified: 99, not 100.
        t.set_bytes(0, 0, 100, &mut p);
        assert_eq!(
            (p.current_update_percent_complete, p.percent_complete),
            (99, 99)
        );
        t.finish_part(0, 0, PartEnd::Downloaded, &mut p);
        assert_eq!((p.current_update_index, p.percent_complete), (1, 100));
        assert_eq!(p.current_update_percent_complete, 100);
    }

    #[test]
    fn percentages_never_decrease_when_a_download_starts_over() {
        let (mut t, mut p) = tracker(&[&[1000]]);
        t.set_bytes(0, 0, 600, &mut p);
        assert_eq!(
            (p.percent_complete, p.current_update_percent_complete),
            (60, 60)
        );
        t.set_bytes(0, 0, 0, &mut p);
        assert_eq!(p.total_bytes_downloaded, 0);
        assert_eq!(
            (p.percent_complete, p.current_update_percent_complete),
            (60, 60)
        );
        t.set_bytes(0, 0, 700, &mut p);
        assert_eq!(p.percent_complete, 70);
    }

    #[test]
    fn bundles_sum_their_parts_and_fail_with_the_first_failing_part() {
        let (mut t, mut p) = tracker(&[&[10, 20, 30]]);
        assert_eq!(p.total_bytes_to_download, 60);
        t.set_bytes(0, 1, 20, &mut p);
        t.set_bytes(0, 2, 15, &mut p);
        assert_eq!(p.current_update_bytes_downloaded, 35);
        t.finish_part(0, 2, PartEnd::Failed(WU_E_TIME_OUT), &mut p);
        t.finish_part(0, 1, PartEnd::Failed(WU_E_DM_INCORRECTFILEHASH), &mut p);
        assert_eq!(
            p.update_results[0].result_code,
            OperationResultCode::NotStarted
        );
        t.finish_part(0, 0, PartEnd::Aborted, &mut p);
        assert_eq!(
            p.update_results[0],
            UpdateDownloadResult::failed(WU_E_DM_INCORRECTFILEHASH)
        );
        assert_eq!(p.percent_complete, 100);
    }

    #[test]
    fn nothing_to_transfer_counts_updates_and_already_there_is_reported() {
        let mut t = Tracker::new(3);
        t.add_part(0, 0, true);
        t.add_part(1, 0, false);
        t.add_part(2, 0, false);
        let mut p = DownloadProgress::new(3);
        t.settle_planned(&mut p);
        assert_eq!(
            p.update_results[0],
            UpdateDownloadResult::succeeded(WU_S_ALREADY_DOWNLOADED)
        );
        assert_eq!((p.current_update_index, p.percent_complete), (1, 33));
        t.finish_part(2, 0, PartEnd::AlreadyThere, &mut p);
        assert_eq!((p.current_update_index, p.percent_complete), (1, 66));
        t.finish_part(1, 0, PartEnd::Aborted, &mut p);
        assert_eq!(p.update_results[1], UpdateDownloadResult::ABORTED);
        assert_eq!((p.current_update_index, p.percent_complete), (2, 100));
    }

    #[test]
    fn aggregation_and_priorities() {
        use OperationResultCode::*;
        let ok = UpdateDownloadResult::succeeded(S_OK);
        let failed = UpdateDownloadResult::failed(WU_E_TIME_OUT);
        let r = DownloadResult::aggregate(vec![ok, failed]);
        assert_eq!(
            (r.result_code, r.hresult),
            (SucceededWithErrors, WU_S_UPDATE_ERROR)
        );
        let r = DownloadResult::aggregate(vec![failed, failed]);
        assert_eq!(
            (r.result_code, r.hresult),
            (Failed, WU_E_ALL_UPDATES_FAILED)
        );
        let r = DownloadResult::aggregate(vec![ok, UpdateDownloadResult::ABORTED]);
        assert_eq!((r.result_code, r.hresult), (Aborted, WU_E_CALL_CANCELLED));
        let r = DownloadResult::aggregate(vec![
            ok,
            UpdateDownloadResult::succeeded(WU_S_ALREADY_DOWNLOADED),
        ]);
        assert_eq!((r.result_code, r.hresult), (Succeeded, S_OK));
        assert_eq!(DownloadPriority::Low.parallel_transfers(4), 1);
        assert_eq!(DownloadPriority::Normal.parallel_transfers(4), 4);
        assert_eq!(DownloadPriority::ExtraHigh.parallel_transfers(4), 8);
        assert_eq!(DownloadPriority::Normal.parallel_transfers(0), 1);
        for p in DownloadPriority::ALL {
            assert_eq!(DownloadPriority::from_value(p.value()), Some(*p));
        }
        assert_eq!(DownloadPhase::from_value(0), None);
    }
}
