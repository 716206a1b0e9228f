//! `IUpdateSearcher`, `ISearchJob` and `ISearchResult`: finding the updates of the catalog that
//! match WUA's search criteria and apply to this machine (DIGEST §5).
//!
//! [`criteria`] is the criteria language; [`engine`] decides, update by update, with a reason
//! for each decision; this module is the WUA-shaped face: synchronous [`UpdateSearcher::search`]
//! and the asynchronous [`UpdateSearcher::begin_search`] / [`UpdateSearcher::end_search`] pair.
//!
//! A search job runs on a thread of its own, over the `job` module's machinery: its completion
//! callback runs on the job's dispatcher thread once the result is stored, outside every engine
//! lock. A panicking callback is caught and logged. After [`SearchJob::clean_up`] returns, the
//! callback does not run.

pub mod criteria;
pub mod engine;

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::Duration;

use serde::Serialize;

pub use criteria::{Criteria, escape_string};
pub use engine::{Explanation, Verdict};

use crate::error::{Error, Result};
use crate::hresult::{E_INVALIDARG, HResult, WU_E_UNEXPECTED, WU_E_UNSUPPORTED_SEARCHSCOPE};
use crate::install::CleanUp;
use crate::job::{Deliver, Event, Job, JobKind};
use crate::model::{
    Category, OperationResultCode, SearchScope, UpdateCollection, UpdateExceptionContext,
};
use crate::service::ServerSelection;
use crate::session::{Agent, next_object_id};
use crate::store::UpdateHistoryEntry;

/// `IUpdateException`: a warning a search raised without failing, such as a detection rule that
/// could not read a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UpdateException {
    /// `Context`.
    pub context: UpdateExceptionContext,
    /// `HResult`.
    pub hresult: HResult,
    /// `Message`.
    pub message: String,
}

/// `ISearchResult`.
#[derive(Clone, Debug)]
pub struct SearchResult {
    /// `ResultCode`: `Succeeded`; `SucceededWithErrors` when there are warnings; `Aborted` after
    /// `request_abort` (then `updates` is empty).
    pub result_code: OperationResultCode,
    /// `Updates`: the matching updates, in catalog order, read-only.
    pub updates: UpdateCollection,
    /// `RootCategories`: the categories of the catalog's updates, in first-seen order (wua's
    /// categories are flat, so every one is a root).
    pub root_categories: Vec<Category>,
    /// `Warnings`.
    pub warnings: Vec<UpdateException>,
}

/// `ISearchCompletedCallbackArgs`: reserved, no members (as in WUA).
#[derive(Clone, Debug, Default)]
pub struct SearchCompletedCallbackArgs {}

crate::job::callback_trait! {
    /// `ISearchCompletedCallback`.
    SearchCompletedCallback(SearchJob, SearchCompletedCallbackArgs)
}

/// What a search job adds to [`crate::job`]'s machinery: its criteria. A search reports no
/// progress; its result is `EndSearch`'s, the criteria's parse error among them.
struct SearchKind {
    criteria: String,
}

impl JobKind for SearchKind {
    type Progress = ();
    type Output = Result<SearchResult>;

    fn abandoned(&self, _: &()) -> Result<SearchResult> {
        Err(internal_error())
    }
}

/// The error of a search whose engine panicked.
fn internal_error() -> Error {
    Error::code(
        WU_E_UNEXPECTED,
        "the search failed on an internal error (a bug in wua; please report it with the catalog)",
    )
}

/// `ISearchJob`: a running or finished asynchronous search. Cheap to clone: clones are handles
/// to the same job. The caller's state lives as long as the job (DIGEST §10.22).
pub struct SearchJob<S> {
    core: Job<S, SearchKind>,
}

impl<S> Clone for SearchJob<S> {
    fn clone(&self) -> Self {
        SearchJob {
            core: self.core.clone(),
        }
    }
}

impl<S> fmt::Debug for SearchJob<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SearchJob")
            .field("criteria", &self.core.kind().criteria)
            .field("is_completed", &self.is_completed())
            .finish()
    }
}

impl<S> SearchJob<S> {
    /// `AsyncState`: the state given to `begin_search`, exactly as given.
    pub fn async_state(&self) -> &S {
        self.core.async_state()
    }

    /// `IsCompleted`: the search has been completely processed. True before the completion
    /// callback runs.
    pub fn is_completed(&self) -> bool {
        self.core.is_completed()
    }

    /// The criteria string the search was started with.
    pub fn criteria(&self) -> &str {
        &self.core.kind().criteria
    }

    /// `RequestAbort()`: asks the search to stop; idempotent, harmless after completion. An
    /// aborted search ends with `ResultCode = Aborted` and no updates.
    pub fn request_abort(&self) {
        self.core.request_abort();
    }

    /// Blocks until the search has completed.
    pub fn wait(&self) {
        self.core.wait();
    }

    /// Blocks until the search has completed or `timeout` passed; true if it completed.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.core.wait_timeout(timeout)
    }

    /// `CleanUp()`: waits for the search to complete and its completion callback to run, then
    /// releases the callback (`isearchjob-cleanup`). From inside the callback it cannot wait and
    /// returns [`CleanUp::MarkedForDisconnect`]; the callback is released when it returns.
    pub fn clean_up(&self) -> CleanUp {
        self.core.clean_up()
    }
}

/// `IUpdateSearcher`: searches the catalog (DIGEST §5.1).
#[derive(Debug)]
pub struct UpdateSearcher {
    agent: Arc<Agent>,
    id: u64,
    client_application_id: String,
    include_potentially_superseded_updates: bool,
    online: bool,
    search_scope: SearchScope,
    server_selection: ServerSelection,
    service_id: String,
}

impl UpdateSearcher {
    pub(crate) fn new(agent: Arc<Agent>, client_application_id: String) -> Self {
        UpdateSearcher {
            agent,
            id: next_object_id(),
            client_application_id,
            include_potentially_superseded_updates: false,
            online: true,
            search_scope: SearchScope::Default,
            server_selection: ServerSelection::Default,
            service_id: String::new(),
        }
    }

    /// `ClientApplicationID`, inherited from the session (DIGEST §10.26).
    pub fn client_application_id(&self) -> &str {
        &self.client_application_id
    }

    /// Sets `ClientApplicationID`.
    pub fn set_client_application_id(&mut self, id: impl Into<String>) {
        self.client_application_id = id.into();
    }

    /// `IncludePotentiallySupersededUpdates`: return superseded updates too. Default false.
    pub fn include_potentially_superseded_updates(&self) -> bool {
        self.include_potentially_superseded_updates
    }

    /// Sets `IncludePotentiallySupersededUpdates`. Unlike Windows 10 1709 and later, wua honours
    /// it (DIGEST §10.16).
    pub fn set_include_potentially_superseded_updates(&mut self, include: bool) {
        self.include_potentially_superseded_updates = include;
    }

    /// `Online`: whether the search goes to the update service. Default true: the service's
    /// signed metadata is refreshed first (and a failure to verify it fails the search). With
    /// false, the newest verified metadata is checked again and used, and the service is not
    /// contacted. A catalog directory is read the same way either way.
    pub fn online(&self) -> bool {
        self.online
    }

    /// Sets `Online`.
    pub fn set_online(&mut self, online: bool) {
        self.online = online;
    }

    /// `ServerSelection`: which service searches use (DIGEST §5.4; see [`ServerSelection`]).
    pub fn server_selection(&self) -> ServerSelection {
        self.server_selection
    }

    /// Sets `ServerSelection`.
    pub fn set_server_selection(&mut self, selection: ServerSelection) {
        self.server_selection = selection;
    }

    /// `ServiceID`: the service searched when `ServerSelection` is `Others`
    /// (`iupdatesearcher-get_serviceid`); ignored otherwise. Empty until set.
    pub fn service_id(&self) -> &str {
        &self.service_id
    }

    /// Sets `ServiceID` (a registered service's id; wua also accepts its name).
    pub fn set_service_id(&mut self, service_id: impl Into<String>) {
        self.service_id = service_id.into();
    }

    /// `CanAutomaticallyUpgradeService`: always false; wua does not upgrade itself from a search.
    pub fn can_automatically_upgrade_service(&self) -> bool {
        false
    }

    /// Sets `CanAutomaticallyUpgradeService`: `false` is accepted; `true` is `E_INVALIDARG`,
    /// the page's "only valid value" being the no-upgrade one (DIGEST §10.17).
    pub fn set_can_automatically_upgrade_service(&mut self, value: bool) -> Result<()> {
        if value {
            return Err(Error::code(
                E_INVALIDARG,
                "CanAutomaticallyUpgradeService can only be false: wua never upgrades itself from a search",
            ));
        }
        Ok(())
    }

    /// `SearchScope` (`IUpdateSearcher3`).
    pub fn search_scope(&self) -> SearchScope {
        self.search_scope
    }

    /// Sets `SearchScope`. The scopes WUA documents as unsupported (3–5) make the search fail
    /// with `WU_E_UNSUPPORTED_SEARCHSCOPE` (DIGEST §10.19).
    pub fn set_search_scope(&mut self, scope: SearchScope) {
        self.search_scope = scope;
    }

    /// `EscapeString`: see [`criteria::escape_string`].
    pub fn escape_string(&self, unescaped: &str) -> String {
        escape_string(unescaped)
    }

    /// `Search(criteria)`: runs a search synchronously (`iupdatesearcher-search`). Invalid
    /// criteria fail with `WU_E_INVALID_CRITERIA`; an empty string means WUA's default,
    /// `IsInstalled = 0 and IsHidden = 0`.
    pub fn search(&self, criteria: &str) -> Result<SearchResult> {
        let parsed = criteria::parse(criteria)?;
        run_search(
            &self.agent,
            &parsed,
            &self.options(false),
            &AtomicBool::new(false),
        )
        .map(|(result, _)| result)
    }

    /// Like [`Self::search`], and also says for every update of the catalog why it was returned
    /// or left out (wua's `--explain`; WUA has no equivalent).
    pub fn explain(&self, criteria: &str) -> Result<(SearchResult, Vec<Explanation>)> {
        let parsed = criteria::parse(criteria)?;
        run_search(
            &self.agent,
            &parsed,
            &self.options(true),
            &AtomicBool::new(false),
        )
    }

    fn options(&self, explain: bool) -> SearchOptions {
        SearchOptions {
            include_superseded: self.include_potentially_superseded_updates,
            scope: self.search_scope,
            explain,
            online: self.online,
            server_selection: self.server_selection,
            service_id: self.service_id.clone(),
        }
    }

    /// `BeginSearch(criteria, onCompleted, state)`: starts an asynchronous search
    /// (`iupdatesearcher-beginsearch`). The criteria are parsed by the job, so invalid criteria
    /// are reported by [`Self::end_search`], as WUA does.
    pub fn begin_search<S, C>(
        &self,
        criteria: &str,
        on_completed: C,
        state: S,
    ) -> Result<SearchJob<S>>
    where
        S: Send + Sync + 'static,
        C: SearchCompletedCallback<S>,
    {
        let kind = SearchKind {
            criteria: criteria.to_string(),
        };
        let mut on_completed = on_completed;
        let deliver: Deliver<S, SearchKind> = Box::new(move |core, event| match event {
            // A search reports no progress.
            Event::Progress(()) => {}
            Event::Completed => on_completed.invoke(
                &SearchJob { core: core.clone() },
                &SearchCompletedCallbackArgs {},
            ),
        });
        let (core, reporter) = Job::start(state, self.id, kind, (), deliver)?;
        let agent = self.agent.clone();
        let options = self.options(false);
        thread::Builder::new()
            .name("wua-search".into())
            .spawn(move || {
                let job = reporter.job();
                // A panic in the engine must still complete the job, or end_search would wait
                // for ever.
                let result = catch_unwind(AssertUnwindSafe(|| {
                    criteria::parse(&job.kind().criteria).and_then(|parsed| {
                        run_search(&agent, &parsed, &options, job.abort_flag()).map(|(r, _)| r)
                    })
                }))
                .unwrap_or_else(|_| Err(internal_error()));
                reporter.complete(|_| {}, || result);
            })
            .map_err(|e| Error::code(WU_E_UNEXPECTED, format!("cannot start a thread: {e}")))?;
        Ok(SearchJob { core })
    }

    /// `EndSearch(job)`: waits for the job and returns its result (`iupdatesearcher-endsearch`):
    /// the criteria's `WU_E_INVALID_CRITERIA` if they were invalid; `WU_E_INVALID_OPERATION` if
    /// the job was already ended or was started by another searcher.
    pub fn end_search<S>(&self, job: &SearchJob<S>) -> Result<SearchResult> {
        job.core.end_with(
            self.id,
            "this search job was started by another searcher; end it with the searcher that began it",
            "EndSearch was already called for this job; it may be called once",
        )?
    }

    /// `QueryHistory(startIndex, count)`: newest first (`iupdatesearcher-queryhistory`).
    pub fn query_history(&self, start_index: i64, count: i64) -> Result<Vec<UpdateHistoryEntry>> {
        self.agent.store.query_history(start_index, count)
    }

    /// `GetTotalHistoryCount()`.
    pub fn get_total_history_count(&self) -> Result<i64> {
        self.agent.store.total_history_count()
    }
}

struct SearchOptions {
    include_superseded: bool,
    scope: SearchScope,
    explain: bool,
    online: bool,
    server_selection: ServerSelection,
    service_id: String,
}

fn run_search(
    agent: &Agent,
    criteria: &Criteria,
    options: &SearchOptions,
    abort: &AtomicBool,
) -> Result<(SearchResult, Vec<Explanation>)> {
    // The source first: an unknown service is an error whatever the scope.
    let source = agent.resolve_source(options.server_selection, Some(&options.service_id))?;
    match options.scope {
        SearchScope::Default | SearchScope::MachineOnly => {}
        // wua has no per-user updates: the current user's scope is valid and empty.
        SearchScope::CurrentUserOnly => {
            return Ok((
                SearchResult {
                    result_code: OperationResultCode::Succeeded,
                    updates: UpdateCollection::read_only_from(Vec::new()),
                    root_categories: Vec::new(),
                    warnings: Vec::new(),
                },
                Vec::new(),
            ));
        }
        scope => {
            return Err(Error::code(
                WU_E_UNSUPPORTED_SEARCHSCOPE,
                format!(
                    "search scope {scope} is not supported; use Default, MachineOnly or CurrentUserOnly"
                ),
            ));
        }
    }
    let catalog = agent.catalog(source.as_ref(), options.online)?;
    let outcome = engine::run(
        agent,
        &catalog,
        criteria,
        &engine::Options {
            include_superseded: options.include_superseded,
            explain: options.explain,
        },
        abort,
    )?;
    let result_code = if outcome.aborted {
        OperationResultCode::Aborted
    } else if outcome.warnings.is_empty() {
        OperationResultCode::Succeeded
    } else {
        OperationResultCode::SucceededWithErrors
    };
    Ok((
        SearchResult {
            result_code,
            updates: UpdateCollection::read_only_from(outcome.updates),
            root_categories: catalog.relations().categories.clone(),
            warnings: outcome.warnings,
        },
        outcome.explanations,
    ))
}
