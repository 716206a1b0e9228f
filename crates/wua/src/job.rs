//! The machinery every asynchronous WUA job shares: the caller's state, the progress snapshot,
//! the result handed out once, waiting, the callback dispatcher thread and `CleanUp`.
//!
//! The rules come from the guide page "Guidelines for Asynchronous WUA Operations" and the
//! `*job-cleanup` pages (`idownloadjob-cleanup`, `iinstallationjob-cleanup`,
//! `isearchjob-cleanup`); where they are silent, DIGEST §10.2, §10.3, §10.22 and §10.23:
//!
//! - callbacks run on the job's dispatcher thread (`wua-callbacks`), never inside `Begin*`,
//!   in the order the worker reported them; progress strictly before completion; completion
//!   exactly once; [`Job::is_completed`] is true before the completion callback runs;
//! - a panicking callback is caught and logged, and the job goes on;
//! - [`Job::clean_up`] waits for completion and for the callbacks already due, then releases
//!   the callbacks: none runs after it returns. From inside one of the job's own callbacks it
//!   cannot wait, and returns [`CleanUp::MarkedForDisconnect`] (`WU_S_MARKED_FOR_DISCONNECT`);
//! - `End*` blocks until completion and hands the result out once; a second call, or a job
//!   from another object, is `WU_E_INVALID_OPERATION`.
//!
//! A WUA-shaped job (`DownloadJob<S>`, …) is a thin wrapper over [`Job<S, K>`], where `K` is its
//! [`JobKind`]: the progress and result types and the data only that kind of job has. The
//! worker that does the job's work holds the job's [`Reporter`]: it publishes progress with
//! [`Reporter::update`] and ends the job with [`Reporter::complete`]. If the worker goes away
//! without completing (it panicked), the reporter completes the job with
//! [`JobKind::abandoned`], so nobody waits for ever.

use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context as TaskContext, Poll, Waker};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::hresult::{WU_E_INVALID_OPERATION, WU_E_UNEXPECTED};
use crate::install::CleanUp;

/// Declares a WUA callback interface (`IXxxCallback::Invoke(job, args)`) as a trait
/// `Name<S>` with one `invoke` method, implemented by closures
/// `FnMut(&Job<S>, &Args) + Send`, by boxed trait objects and by [`crate::install::NoCallback`]
/// (WUA's `NULL`). One definition for every job kind, so they cannot drift apart.
macro_rules! callback_trait {
    ($(#[$doc:meta])* $name:ident($job:ident, $args:ty)) => {
        $(#[$doc])*
        ///
        #[doc = concat!(
            "Implemented by closures `FnMut(&", stringify!($job), "<S>, &", stringify!($args),
            ") + Send`, by boxed trait objects, and by [`NoCallback`](crate::install::NoCallback)."
        )]
        pub trait $name<S>: Send + 'static {
            /// `Invoke`.
            fn invoke(&mut self, job: &$job<S>, args: &$args);
        }

        impl<S, F> $name<S> for F
        where
            F: FnMut(&$job<S>, &$args) + Send + 'static,
        {
            fn invoke(&mut self, job: &$job<S>, args: &$args) {
                self(job, args)
            }
        }

        impl<S: 'static> $name<S> for Box<dyn $name<S>> {
            fn invoke(&mut self, job: &$job<S>, args: &$args) {
                (**self).invoke(job, args)
            }
        }

        impl<S> $name<S> for $crate::install::NoCallback {
            fn invoke(&mut self, _: &$job<S>, _: &$args) {}
        }
    };
}
pub(crate) use callback_trait;

/// What one kind of job (download, install, search) adds to the shared machinery.
pub(crate) trait JobKind: Send + Sync + 'static {
    /// The progress snapshot (`IDownloadProgress`, …), handed to progress callbacks.
    type Progress: Clone + Send + 'static;
    /// What `End*` returns.
    type Output: Send + 'static;
    /// Called by [`Job::request_abort`] after the abort flag is set: wake a worker that may be
    /// waiting for something other than its next step (a network read).
    fn on_abort(&self) {}
    /// The result of a job whose worker ended without completing it (a bug: it panicked).
    fn abandoned(&self, progress: &Self::Progress) -> Self::Output;
}

/// What the dispatcher delivers, in order.
pub(crate) enum Event<P> {
    /// A progress snapshot for the progress callback.
    Progress(P),
    /// The job completed: the completion callback.
    Completed,
}

/// Delivers one event to the caller's callbacks. Built by the `Begin*` method, which knows the
/// WUA-shaped job type the callbacks take.
pub(crate) type Deliver<S, K> = Box<dyn FnMut(&Job<S, K>, Event<<K as JobKind>::Progress>) + Send>;

struct State<K: JobKind> {
    progress: K::Progress,
    result: Option<K::Output>,
    completed: bool,
    ended: bool,
    wakers: Vec<Waker>,
}

struct Inner<S, K: JobKind> {
    async_state: S,
    owner: u64,
    kind: K,
    abort: AtomicBool,
    completed: AtomicBool,
    state: Mutex<State<K>>,
    completion: Condvar,
    deliver: Mutex<Option<Deliver<S, K>>>,
    dispatcher: OnceLock<ThreadId>,
    dispatcher_handle: Mutex<Option<thread::JoinHandle<()>>>,
    release_after_callback: AtomicBool,
}

/// A running or finished job. Cheap to clone: clones are handles to the same job. The caller's
/// state lives as long as the last handle (DIGEST §10.22).
pub(crate) struct Job<S, K: JobKind> {
    inner: Arc<Inner<S, K>>,
}

impl<S, K: JobKind> Clone for Job<S, K> {
    fn clone(&self) -> Self {
        Job {
            inner: self.inner.clone(),
        }
    }
}

impl<S, K: JobKind> fmt::Debug for Job<S, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("owner", &self.inner.owner)
            .field("is_completed", &self.is_completed())
            .finish()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Engine code never panics while holding these locks and callbacks run outside them, but a
    // poisoned lock must not take the agent down with it: the data is still consistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<S: Send + Sync + 'static, K: JobKind> Job<S, K> {
    /// Creates a job owned by the object with id `owner` (the downloader, installer, … whose
    /// `End*` may end it) and starts its dispatcher thread. The caller starts the worker with
    /// the returned [`Reporter`].
    pub(crate) fn start(
        async_state: S,
        owner: u64,
        kind: K,
        progress: K::Progress,
        deliver: Deliver<S, K>,
    ) -> Result<(Job<S, K>, Reporter<S, K>)> {
        let job = Job {
            inner: Arc::new(Inner {
                async_state,
                owner,
                kind,
                abort: AtomicBool::new(false),
                completed: AtomicBool::new(false),
                state: Mutex::new(State {
                    progress,
                    result: None,
                    completed: false,
                    ended: false,
                    wakers: Vec::new(),
                }),
                completion: Condvar::new(),
                deliver: Mutex::new(Some(deliver)),
                dispatcher: OnceLock::new(),
                dispatcher_handle: Mutex::new(None),
                release_after_callback: AtomicBool::new(false),
            }),
        };
        let (events, receiver) = mpsc::channel();
        let dispatcher_job = job.clone();
        // The handle's lock is held until the id is recorded, so the dispatcher cannot run a
        // callback (which may call clean_up) before it is known as the dispatcher.
        let mut handle_slot = lock(&job.inner.dispatcher_handle);
        let handle = thread::Builder::new()
            .name("wua-callbacks".into())
            .spawn(move || dispatch(dispatcher_job, receiver))
            .map_err(|e| Error::code(WU_E_UNEXPECTED, format!("cannot start a thread: {e}")))?;
        let _ = job.inner.dispatcher.set(handle.thread().id());
        *handle_slot = Some(handle);
        drop(handle_slot);
        let reporter = Reporter {
            job: job.clone(),
            events: Mutex::new(Some(events)),
        };
        Ok((job, reporter))
    }
}

impl<S, K: JobKind> Job<S, K> {
    /// `AsyncState`: the state the caller passed to `Begin*`, exactly as given.
    pub(crate) fn async_state(&self) -> &S {
        &self.inner.async_state
    }

    /// The data of this kind of job.
    pub(crate) fn kind(&self) -> &K {
        &self.inner.kind
    }

    /// `IsCompleted`: true once the result is stored, before the completion callback runs.
    pub(crate) fn is_completed(&self) -> bool {
        self.inner.completed.load(Ordering::Acquire)
    }

    /// The id of the object that started the job (whose `End*` may end it).
    pub(crate) fn owner(&self) -> u64 {
        self.inner.owner
    }

    /// Whether `RequestAbort` was called (for workers that poll, as installs do).
    pub(crate) fn abort_requested(&self) -> bool {
        self.inner.abort.load(Ordering::Acquire)
    }

    /// The abort flag itself, for workers that hand it to code polling an `AtomicBool` (the
    /// search engine).
    pub(crate) fn abort_flag(&self) -> &AtomicBool {
        &self.inner.abort
    }

    /// `RequestAbort()`: idempotent, harmless after completion (DIGEST §10.4).
    pub(crate) fn request_abort(&self) {
        self.inner.abort.store(true, Ordering::Release);
        self.inner.kind.on_abort();
    }

    /// `GetProgress()`: a snapshot of the progress now.
    pub(crate) fn get_progress(&self) -> K::Progress {
        lock(&self.inner.state).progress.clone()
    }

    /// Blocks until the job has completed.
    pub(crate) fn wait(&self) {
        let mut state = lock(&self.inner.state);
        while !state.completed {
            state = self
                .inner
                .completion
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Blocks until the job has completed or `timeout` passed; true if it completed.
    pub(crate) fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = lock(&self.inner.state);
        while !state.completed {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = self
                .inner
                .completion
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// A future that resolves when the job has completed; works with any executor.
    pub(crate) fn completion(&self) -> Completion<S, K> {
        Completion { job: self.clone() }
    }

    /// `CleanUp()`: see the module documentation.
    pub(crate) fn clean_up(&self) -> CleanUp {
        if self.inner.dispatcher.get() == Some(&thread::current().id()) {
            self.inner
                .release_after_callback
                .store(true, Ordering::Release);
            return CleanUp::MarkedForDisconnect;
        }
        self.wait();
        // Callbacks queued before completion (the last progress reports and the completion
        // callback) are delivered, not dropped: the dispatcher ends once it has run them. The
        // handle's lock is held while joining, so a concurrent clean_up on a clone of this job
        // waits here too instead of releasing the callbacks before they have run.
        let mut dispatcher = lock(&self.inner.dispatcher_handle);
        if let Some(handle) = dispatcher.take() {
            let _ = handle.join();
        }
        drop(dispatcher);
        // Taking the lock waits for a callback in flight; afterwards none can start.
        lock(&self.inner.deliver).take();
        CleanUp::Released
    }

    /// `End*(job)`: waits for completion and hands the result out, once. `owner` is the id of
    /// the object whose `End*` was called; a job it did not start, or one already ended, is
    /// `WU_E_INVALID_OPERATION` (DIGEST §10.2, §10.3). `what` names the call for messages
    /// ("EndDownload").
    pub(crate) fn end(&self, owner: u64, what: &str) -> Result<K::Output> {
        self.end_with(
            owner,
            &format!(
                "{what} was given a job started by another object; end it with the object that began it"
            ),
            &format!("{what} was already called for this job; it may be called once per job"),
        )
    }

    /// [`Self::end`] with the kind's own messages: `foreign` for a job another object started,
    /// `again` for a second call.
    pub(crate) fn end_with(&self, owner: u64, foreign: &str, again: &str) -> Result<K::Output> {
        if self.inner.owner != owner {
            return Err(Error::code(WU_E_INVALID_OPERATION, foreign));
        }
        self.wait();
        let mut state = lock(&self.inner.state);
        if state.ended {
            return Err(Error::code(WU_E_INVALID_OPERATION, again));
        }
        state.ended = true;
        Ok(state.result.take().expect("a completed job has a result"))
    }
}

/// The future returned by [`Job::completion`].
pub(crate) struct Completion<S, K: JobKind> {
    job: Job<S, K>,
}

impl<S, K: JobKind> Future for Completion<S, K> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let mut state = lock(&self.job.inner.state);
        if state.completed {
            Poll::Ready(())
        } else {
            if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                state.wakers.push(cx.waker().clone());
            }
            Poll::Pending
        }
    }
}

/// The worker's side of a job: publishes progress, then completes the job once.
///
/// `Sync`: several tasks of one worker may report through a shared reference. Events are sent
/// while the progress lock is held, so callbacks see snapshots in the order they were taken.
pub(crate) struct Reporter<S, K: JobKind> {
    job: Job<S, K>,
    /// Taken by completion: afterwards nothing more is reported.
    events: Mutex<Option<mpsc::Sender<Event<K::Progress>>>>,
}

impl<S, K: JobKind> Reporter<S, K> {
    /// The job reported on.
    pub(crate) fn job(&self) -> &Job<S, K> {
        &self.job
    }

    /// Changes the progress in place; when `change` returns true a snapshot is sent to the
    /// progress callback. Returning false records the change for `GetProgress` without an
    /// event (for updates too small to be worth one). Nothing changes after completion.
    pub(crate) fn update(&self, change: impl FnOnce(&mut K::Progress) -> bool) {
        let mut state = lock(&self.job.inner.state);
        let events = lock(&self.events);
        let Some(events) = events.as_ref() else {
            return;
        };
        if change(&mut state.progress) {
            let _ = events.send(Event::Progress(state.progress.clone()));
        }
    }

    /// Stores the result, marks the job completed, wakes every waiter and queues the completion
    /// callback, once; later calls do nothing. `final_progress` may adjust the progress a last
    /// time (no event is sent for it).
    pub(crate) fn complete(
        &self,
        final_progress: impl FnOnce(&mut K::Progress),
        output: impl FnOnce() -> K::Output,
    ) {
        let inner = &self.job.inner;
        let mut state = lock(&inner.state);
        let Some(events) = lock(&self.events).take() else {
            return;
        };
        final_progress(&mut state.progress);
        state.result = Some(output());
        state.completed = true;
        inner.completed.store(true, Ordering::Release);
        let wakers = std::mem::take(&mut state.wakers);
        let _ = events.send(Event::Completed);
        drop(state);
        // Dropping the sender ends the dispatcher once it has delivered what is queued.
        drop(events);
        inner.completion.notify_all();
        for waker in wakers {
            waker.wake();
        }
    }
}

impl<S, K: JobKind> Drop for Reporter<S, K> {
    fn drop(&mut self) {
        if lock(&self.events).is_some() {
            tracing::error!("a job's worker ended without completing it (a bug in wua)");
            let progress = self.job.get_progress();
            self.complete(|_| {}, || self.job.inner.kind.abandoned(&progress));
        }
    }
}

/// Delivers a job's events, in order, on the dispatcher thread.
fn dispatch<S, K: JobKind>(job: Job<S, K>, events: mpsc::Receiver<Event<K::Progress>>) {
    for event in events {
        let mut slot = lock(&job.inner.deliver);
        let Some(deliver) = slot.as_mut() else {
            continue;
        };
        let completed = matches!(event, Event::Completed);
        if catch_unwind(AssertUnwindSafe(|| deliver(&job, event))).is_err() {
            tracing::error!("a job callback panicked; the job goes on");
        }
        // After completion nothing more can be delivered: release the callbacks (and what they
        // hold, which may be this job) without waiting for clean_up.
        if completed || job.inner.release_after_callback.load(Ordering::Acquire) {
            *slot = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hresult::{HResult, S_OK, WU_S_MARKED_FOR_DISCONNECT};
    use std::sync::atomic::AtomicUsize;

    struct TestKind;
    impl JobKind for TestKind {
        type Progress = u32;
        type Output = HResult;
        fn abandoned(&self, _: &u32) -> HResult {
            WU_E_UNEXPECTED
        }
    }

    fn start(
        deliver: Deliver<&'static str, TestKind>,
    ) -> (
        Job<&'static str, TestKind>,
        Reporter<&'static str, TestKind>,
    ) {
        Job::start("state", 7, TestKind, 0, deliver).unwrap()
    }

    #[test]
    fn events_arrive_in_order_and_completion_once() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let (job, reporter) = start(Box::new(move |job, event| {
            let entry = match event {
                Event::Progress(p) => format!("p{p}"),
                Event::Completed => format!("done:{}", job.is_completed()),
            };
            lock(&log).push(entry);
        }));
        for i in 1..=3 {
            reporter.update(|p| {
                *p = i;
                true
            });
        }
        reporter.update(|p| {
            *p = 4;
            false
        });
        reporter.complete(|_| {}, || S_OK);
        assert_eq!(job.clean_up(), CleanUp::Released);
        assert_eq!(*lock(&seen), ["p1", "p2", "p3", "done:true"]);
        assert_eq!(job.get_progress(), 4);
        assert_eq!(job.end(7, "End").unwrap(), S_OK);
        assert_eq!(
            job.end(7, "End").unwrap_err().hresult(),
            WU_E_INVALID_OPERATION
        );
    }

    #[test]
    fn end_from_another_owner_is_refused() {
        let (job, reporter) = start(Box::new(|_, _| {}));
        reporter.complete(|_| {}, || S_OK);
        assert_eq!(
            job.end(8, "End").unwrap_err().hresult(),
            WU_E_INVALID_OPERATION
        );
        assert_eq!(job.end(7, "End").unwrap(), S_OK);
    }

    #[test]
    fn a_dropped_reporter_completes_the_job() {
        let (job, reporter) = start(Box::new(|_, _| {}));
        drop(reporter);
        assert!(job.wait_timeout(Duration::from_secs(60)));
        assert_eq!(job.end(7, "End").unwrap(), WU_E_UNEXPECTED);
    }

    #[test]
    fn clean_up_inside_a_callback_is_marked_and_panics_are_contained() {
        let outcome = Arc::new(Mutex::new(None));
        let calls = Arc::new(AtomicUsize::new(0));
        let (o, c) = (outcome.clone(), calls.clone());
        let (job, reporter) = start(Box::new(move |job, event| {
            c.fetch_add(1, Ordering::SeqCst);
            match event {
                Event::Progress(1) => panic!("a callback panics"),
                Event::Progress(_) => *lock(&o) = Some(job.clean_up().hresult()),
                Event::Completed => {}
            }
        }));
        reporter.update(|p| {
            *p = 1;
            true
        });
        reporter.update(|p| {
            *p = 2;
            true
        });
        // Released after the callback that asked: the completion callback does not run.
        reporter.complete(|_| {}, || S_OK);
        assert_eq!(job.clean_up(), CleanUp::Released);
        assert_eq!(*lock(&outcome), Some(WU_S_MARKED_FOR_DISCONNECT));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(*job.async_state(), "state");
    }
}
