//! Fetching payloads into the [`PayloadCache`]: HTTP(S) with `Range` resume, `file://` copies
//! with the same resume logic, several payloads at once, every byte hashed as it arrives.
//!
//! One payload, over HTTP:
//!
//! 1. take the payload's partial file (waiting while another downloader holds it); if the
//!    payload is verified in the cache meanwhile, stop;
//! 2. re-hash what the partial file holds (it was never verified): `have` bytes, hashed on the
//!    hasher thread while the rest downloads;
//! 3. `GET` with `Range: bytes=have-` when `have > 0`. `206` whose `Content-Range` starts at
//!    `have`: append. `200`: the server ignored the range, so empty the partial file and take
//!    the whole body. `416`: the partial file is not a prefix of the server's file: empty it
//!    and ask again from the start;
//! 4. never accept more than the signed length: a body going past it (the endless-data
//!    attack) fails with `WU_E_DM_INCORRECTFILEHASH` and the partial file is deleted;
//! 5. a connection cut mid-body is resumed from where it stopped, up to
//!    [`RESUME_ATTEMPTS`] times, without sleeping. A server that stops sending for the stall
//!    time-out ([`NetworkOptions::stall_timeout`]: the slow-retrieval attack) fails with
//!    `WU_E_TIME_OUT`, and is not retried;
//! 6. verify length and SHA-256 and commit into the cache (`cache.rs`); a mismatch deletes the
//!    partial file and fails with `WU_E_DM_INCORRECTFILEHASH`.
//!
//! An abort is noticed at once, even while waiting for the network, and keeps the partial
//! file for a later resume.
//!
//! Speed: the network side copies arriving chunks into a few reused 1 MiB buffers and hands
//! each full buffer to two threads at once, one hashing it (SHA-256, aws-lc-rs), one writing
//! it; receiving, hashing and writing overlap, and nothing is allocated per chunk. The final
//! check is then a comparison, not a second read.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, RANGE};
use tokio::sync::{mpsc, watch};
use url::Url;

use super::DownloadPhase;
use super::cache::{self, Expected, Hasher, PartialFile, PayloadCache, cancelled};
use crate::error::{Error, Result};
use crate::hresult::*;
use crate::net::{self, NetworkOptions};

/// How many times a transfer cut mid-body is resumed before the payload fails.
pub const RESUME_ATTEMPTS: u32 = 3;
/// Size of the buffers handed from the network to the writer thread.
const BUFFER: usize = 1024 << 10;
/// Buffers in flight between the network and the writer and hasher threads, per payload: at
/// most 8 MiB of memory per payload downloading, allocated only as the disk falls behind.
const BUFFERS: usize = 8;
/// How often a downloader waiting for another one's partial file checks again.
const LOCK_POLL: Duration = Duration::from_millis(50);
/// Worker threads of a fetcher's runtime. The network side is light (the runtime drives the
/// connections; hashing and writing have threads of their own), so two are plenty.
const RUNTIME_WORKERS: usize = 2;

/// One payload to fetch: where from, and the length and SHA-256 its signed metadata gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchTarget {
    /// An `http://`, `https://` or `file://` URL.
    pub url: Url,
    /// The exact length in bytes.
    pub length: u64,
    /// The SHA-256, lower-case hex.
    pub sha256: String,
}

/// How a fetch ended well.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fetched {
    /// The payload was downloaded (or resumed) and verified into the cache.
    Downloaded,
    /// The payload was in the cache already; nothing was transferred.
    AlreadyCached,
}

/// What a fetch reports while it runs (see [`Fetcher::fetch_all`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchEvent {
    /// The payload entered this phase.
    Phase(DownloadPhase),
    /// The payload's partial file now holds this many bytes (resumed bytes included).
    Bytes(u64),
}

/// Receives one payload's progress. Called from the fetcher's threads.
pub(crate) trait Observer: Send + Sync {
    fn phase(&self, phase: DownloadPhase);
    fn bytes(&self, have: u64);
}

/// The abort flag, which also wakes transfers waiting for the network.
pub(crate) struct AbortSignal(watch::Sender<bool>);

impl AbortSignal {
    pub(crate) fn new() -> AbortSignal {
        AbortSignal(watch::Sender::new(false))
    }

    pub(crate) fn fire(&self) {
        self.0.send_replace(true);
    }

    pub(crate) fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    async fn wait(&self) {
        let mut rx = self.0.subscribe();
        // The sender lives in self, so the channel cannot close while we wait.
        let _ = rx.wait_for(|aborted| *aborted).await;
    }
}

/// What one item of work is.
#[derive(Clone, Debug)]
pub(crate) enum Work {
    /// Check a file that is already on this machine (a local catalog's payload).
    Verify {
        path: std::path::PathBuf,
        sha256: String,
        length: u64,
    },
    /// Fetch a target into the cache.
    Fetch(FetchTarget),
}

/// The shared engine: cache, HTTP client, abort flag.
pub(crate) struct Engine {
    pub(crate) cache: PayloadCache,
    client: reqwest::Client,
    pub(crate) abort: AbortSignal,
}

/// A failed transfer step: the error, and whether the partial file must go.
struct Failure {
    error: Error,
    discard: bool,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure {
            error,
            discard: false,
        }
    }
}

/// How one HTTP exchange ended.
enum Step {
    /// The body ended normally: go and verify.
    Done,
    /// The connection was cut mid-body; resuming may help.
    Cut(Error),
    /// The range answer was unusable; the partial file was emptied: ask again.
    Again,
}

impl Engine {
    pub(crate) fn new(cache: PayloadCache, network: &NetworkOptions) -> Result<Engine> {
        Ok(Engine {
            cache,
            client: network.client()?,
            abort: AbortSignal::new(),
        })
    }

    /// Does `work` as a task of the current runtime, on its worker threads next to the
    /// connection it reads from (no thread hop per chunk), and waits for it.
    pub(crate) async fn spawn(
        self: &Arc<Self>,
        work: Work,
        force: bool,
        observer: Arc<dyn Observer>,
    ) -> Result<Fetched> {
        let engine = self.clone();
        tokio::spawn(async move { engine.run(&work, force, observer).await })
            .await
            .unwrap_or_else(|e| {
                Err(Error::code(
                    WU_E_DM_UNEXPECTED,
                    format!("a download task failed: {e} (a bug in wua; please report it)"),
                ))
            })
    }

    /// Does one item of work, reporting to `observer`.
    pub(crate) async fn run(
        self: &Arc<Self>,
        work: &Work,
        force: bool,
        observer: Arc<dyn Observer>,
    ) -> Result<Fetched> {
        if self.abort.is_set() {
            return Err(cancelled());
        }
        match work {
            Work::Verify {
                path,
                sha256,
                length,
            } => {
                let (engine, path, sha256, length) =
                    (self.clone(), path.clone(), sha256.clone(), *length);
                blocking(move || {
                    observer.phase(DownloadPhase::Verifying);
                    let expected = Expected {
                        sha256: &sha256,
                        length,
                        source: "its catalog",
                    };
                    cache::verify_in_place(&path, &expected, &|| engine.abort.is_set(), &|n| {
                        observer.bytes(n)
                    })
                    .map(|()| Fetched::AlreadyCached)
                })
                .await
            }
            Work::Fetch(target) => {
                cache::check_sha256(&target.sha256)?;
                match target.url.scheme() {
                    "http" | "https" => self.fetch_http(target, force, observer).await,
                    "file" => {
                        let (engine, target) = (self.clone(), target.clone());
                        blocking(move || engine.fetch_file(&target, force, &*observer)).await
                    }
                    scheme => Err(Error::code(
                        WU_E_DM_URLNOTAVAILABLE,
                        format!(
                            "payload {} has the URL {} with the scheme `{scheme}`; wua downloads http://, https:// and file:// URLs only: fix the service's location",
                            target.sha256, target.url
                        ),
                    )),
                }
            }
        }
    }

    /// Waits for the payload's partial file; `Ok(None)` when the payload is in the cache
    /// (put there by whoever held the file) and `force` is off.
    async fn take_partial(&self, target: &FetchTarget, force: bool) -> Result<Option<PartialFile>> {
        loop {
            if !force
                && self
                    .cache
                    .contains_with_length(&target.sha256, target.length)
            {
                return Ok(None);
            }
            if let Some(partial) = self.cache.try_open_partial(&target.sha256)? {
                if !force
                    && self
                        .cache
                        .contains_with_length(&target.sha256, target.length)
                {
                    partial.discard_if_empty();
                    return Ok(None);
                }
                return Ok(Some(partial));
            }
            tokio::select! {
                _ = self.abort.wait() => return Err(cancelled()),
                _ = tokio::time::sleep(LOCK_POLL) => {}
            }
        }
    }

    async fn fetch_http(
        self: &Arc<Self>,
        target: &FetchTarget,
        force: bool,
        observer: Arc<dyn Observer>,
    ) -> Result<Fetched> {
        observer.phase(DownloadPhase::Initializing);
        let Some(mut partial) = self.take_partial(target, force).await? else {
            return Ok(Fetched::AlreadyCached);
        };
        // A forced download fetches every byte again; otherwise resume what is there. The bytes
        // already there are hashed by the pipeline's hasher while the rest is downloaded.
        let length = target.length;
        let (partial, have) = blocking(move || {
            let have = if force {
                partial.restart()?;
                0
            } else {
                partial.prepare_resume(length)?
            };
            Ok((partial, have))
        })
        .await?;
        let prefix = if have > 0 {
            Some((partial.prefix_reader()?, have, partial.path().to_path_buf()))
        } else {
            None
        };
        let engine = self.clone();
        let mut pipeline =
            Pipeline::start(partial, prefix, Box::new(move || engine.abort.is_set()));
        observer.bytes(pipeline.have);
        observer.phase(DownloadPhase::Downloading);
        let mut resumes_left = RESUME_ATTEMPTS;
        let outcome = loop {
            if pipeline.have == target.length {
                break Ok(());
            }
            match self.exchange(target, &mut pipeline, &*observer).await {
                Ok(Step::Done) => break Ok(()),
                Ok(Step::Cut(error)) if resumes_left == 0 => {
                    break Err(Failure {
                        error: Error::code(
                            error.hresult(),
                            format!(
                                "the download of {} was interrupted {} times, the last time: {error}; the {} bytes received are kept, and the next download resumes from there",
                                target.url,
                                RESUME_ATTEMPTS + 1,
                                pipeline.have
                            ),
                        ),
                        discard: false,
                    });
                }
                Ok(Step::Again) if resumes_left == 0 => {
                    break Err(Failure {
                        error: Error::code(
                            WU_E_DOWNLOAD_FAILED,
                            format!(
                                "cannot download {}: the server kept answering range requests with other ranges; check the server, then retry",
                                target.url
                            ),
                        ),
                        discard: false,
                    });
                }
                Ok(Step::Cut(error)) => {
                    tracing::info!(
                        "download of {} interrupted at {} bytes, resuming: {error}",
                        target.url,
                        pipeline.have
                    );
                    resumes_left -= 1;
                }
                Ok(Step::Again) => resumes_left -= 1,
                Err(failure) => break Err(failure),
            }
        };
        // The writer's own failure (a full disk) explains more than what followed from it.
        let written = pipeline.finish().await;
        let (partial, hasher) = match (written, outcome) {
            (Err(e), _) => return Err(e),
            (Ok((partial, _)), Err(failure)) => {
                if failure.discard {
                    partial.discard();
                }
                return Err(failure.error);
            }
            (Ok(written), Ok(())) => written,
        };
        observer.phase(DownloadPhase::Verifying);
        let (cache, target) = (self.cache.clone(), target.clone());
        blocking(move || {
            let expected = Expected {
                sha256: &target.sha256,
                length: target.length,
                source: target.url.as_str(),
            };
            partial.commit(&cache, &expected, hasher.finish())
        })
        .await?;
        Ok(Fetched::Downloaded)
    }

    /// One request and its body.
    async fn exchange(
        &self,
        target: &FetchTarget,
        pipeline: &mut Pipeline,
        observer: &dyn Observer,
    ) -> std::result::Result<Step, Failure> {
        let url = target.url.as_str();
        let expected = Expected {
            sha256: &target.sha256,
            length: target.length,
            source: url,
        };
        let mut request = self.client.get(target.url.clone());
        let from = pipeline.have;
        if from > 0 {
            request = request.header(RANGE, format!("bytes={from}-"));
        }
        let mut response = tokio::select! {
            biased;
            _ = self.abort.wait() => return Err(cancelled().into()),
            response = request.send() => {
                response.map_err(|e| net::request_error("download", url, &e))?
            }
        };
        let status = response.status();
        match status {
            StatusCode::PARTIAL_CONTENT if from > 0 => {
                let range = response
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_content_range);
                match range {
                    Some((start, total)) if start == from => {
                        if total.is_some_and(|t| t != target.length) {
                            return Err(Failure {
                                error: expected.mismatch(&format!(
                                    "a file of {} bytes on the server",
                                    total.unwrap_or_default()
                                )),
                                discard: true,
                            });
                        }
                    }
                    _ => {
                        tracing::info!(
                            "{url} answered a range request from {from} with the wrong range; starting over"
                        );
                        pipeline.restart();
                        observer.bytes(0);
                        return Ok(Step::Again);
                    }
                }
            }
            StatusCode::OK => {
                if from > 0 {
                    // The server ignored the range: the body is the whole file.
                    tracing::info!("{url} ignored the range request; starting over");
                    pipeline.restart();
                    observer.bytes(0);
                }
            }
            StatusCode::RANGE_NOT_SATISFIABLE if from > 0 => {
                // The server's file is shorter than what we hold: not the same file, or the
                // partial file is damaged. Start over.
                tracing::info!("{url} has fewer than {from} bytes; starting over");
                pipeline.restart();
                observer.bytes(0);
                return Ok(Step::Again);
            }
            _ => return Err(net::status_error("download", url, status).into()),
        }
        if let Some(body) = response.content_length()
            && pipeline.have.saturating_add(body) > target.length
        {
            return Err(Failure {
                error: expected.mismatch(&format!(
                    "an answer of {} bytes",
                    pipeline.have.saturating_add(body)
                )),
                discard: true,
            });
        }
        loop {
            let chunk = tokio::select! {
                biased;
                _ = self.abort.wait() => return Err(cancelled().into()),
                chunk = response.chunk() => chunk,
            };
            match chunk {
                Ok(Some(data)) => {
                    if pipeline.have + data.len() as u64 > target.length {
                        return Err(Failure {
                            error: expected.mismatch(&format!("more than {} bytes", target.length)),
                            discard: true,
                        });
                    }
                    pipeline.push(&data).await?;
                    observer.bytes(pipeline.have);
                }
                Ok(None) => return Ok(Step::Done),
                Err(e) if e.is_timeout() => {
                    return Err(net::request_error("download", url, &e).into());
                }
                Err(e) => return Ok(Step::Cut(net::request_error("download", url, &e))),
            }
        }
    }

    /// A `file://` target, on a blocking thread: the same steps as HTTP, reading the file.
    fn fetch_file(
        &self,
        target: &FetchTarget,
        force: bool,
        observer: &dyn Observer,
    ) -> Result<Fetched> {
        observer.phase(DownloadPhase::Initializing);
        let source = target.url.to_file_path().map_err(|()| {
            Error::code(
                WU_E_DM_URLNOTAVAILABLE,
                format!(
                    "the URL {} does not name a local file; fix the service's location",
                    target.url
                ),
            )
        })?;
        let aborted = || self.abort.is_set();
        let mut partial = loop {
            if !force
                && self
                    .cache
                    .contains_with_length(&target.sha256, target.length)
            {
                return Ok(Fetched::AlreadyCached);
            }
            if let Some(partial) = self.cache.try_open_partial(&target.sha256)? {
                if !force
                    && self
                        .cache
                        .contains_with_length(&target.sha256, target.length)
                {
                    partial.discard_if_empty();
                    return Ok(Fetched::AlreadyCached);
                }
                break partial;
            }
            if aborted() {
                return Err(cancelled());
            }
            std::thread::sleep(LOCK_POLL);
        };
        let expected = Expected {
            sha256: &target.sha256,
            length: target.length,
            source: target.url.as_str(),
        };
        let mut file = match std::fs::File::open(&source) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                partial.discard_if_empty();
                return Err(Error::code(
                    WU_E_PT_HTTP_STATUS_NOT_FOUND,
                    format!(
                        "cannot download {}: the file does not exist; check the service's location",
                        target.url
                    ),
                ));
            }
            Err(e) => return Err(Error::io("cannot read", &source, e)),
        };
        let size = file
            .metadata()
            .map_err(|e| Error::io("cannot read", &source, e))?
            .len();
        if size > target.length {
            partial.discard();
            return Err(expected.mismatch(&format!("a file of {size} bytes")));
        }
        let mut hasher = if force {
            partial.restart()?;
            Hasher::new()
        } else {
            partial.resume(target.length, &aborted)?
        };
        if hasher.length() > size {
            partial.restart()?;
            hasher = Hasher::new();
        }
        observer.bytes(hasher.length());
        observer.phase(DownloadPhase::Downloading);
        use std::io::{Read, Seek, SeekFrom};
        file.seek(SeekFrom::Start(hasher.length()))
            .map_err(|e| Error::io("cannot read", &source, e))?;
        let mut buf = vec![0u8; BUFFER];
        loop {
            if aborted() {
                return Err(cancelled());
            }
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("cannot read", &source, e)),
            };
            if hasher.length() + n as u64 > target.length {
                partial.discard();
                return Err(expected.mismatch(&format!("more than {} bytes", target.length)));
            }
            hasher.update(&buf[..n]);
            partial.write_all(&buf[..n])?;
            observer.bytes(hasher.length());
        }
        observer.phase(DownloadPhase::Verifying);
        partial.commit(&self.cache, &expected, hasher.finish())?;
        Ok(Fetched::Downloaded)
    }
}

/// `bytes START-END/TOTAL` → (START, TOTAL if given).
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    if end < start {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start, total))
}

/// Runs blocking work on the runtime's blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(Error::code(
            WU_E_DM_UNEXPECTED,
            format!("a download thread failed: {e} (a bug in wua; please report it)"),
        ))
    })
}

/// What the writer and hasher threads are sent, in order.
enum ToThreads {
    Data(Arc<Vec<u8>>),
    Restart,
}

/// The network side of one payload's writer and hasher threads: fills reused buffers and hands
/// each to both, which then work on it at the same time (writing and hashing overlap, so
/// neither is the other's bottleneck). A buffer is reused once both have given it back.
struct Pipeline {
    to_writer: Option<mpsc::UnboundedSender<ToThreads>>,
    to_hasher: Option<mpsc::UnboundedSender<ToThreads>>,
    returned: mpsc::UnboundedReceiver<Arc<Vec<u8>>>,
    allocated: usize,
    current: Vec<u8>,
    /// Bytes of the payload written or queued: where the next byte goes.
    have: u64,
    writer: tokio::task::JoinHandle<Result<PartialFile>>,
    hasher: tokio::task::JoinHandle<Result<Hasher>>,
}

impl Pipeline {
    /// Starts the threads. `prefix`: a reader of the bytes already in the partial file and
    /// their count; the hasher hashes them first, while the writer appends after them.
    fn start(
        partial: PartialFile,
        prefix: Option<(std::fs::File, u64, std::path::PathBuf)>,
        aborted: Box<dyn Fn() -> bool + Send>,
    ) -> Pipeline {
        let have = prefix.as_ref().map_or(0, |(_, len, _)| *len);
        let (to_writer, mut writer_inbox) = mpsc::unbounded_channel::<ToThreads>();
        let (to_hasher, mut hasher_inbox) = mpsc::unbounded_channel::<ToThreads>();
        let (give_back, returned) = mpsc::unbounded_channel();
        let writer_gives_back = give_back.clone();
        let writer = tokio::task::spawn_blocking(move || {
            let mut partial = partial;
            while let Some(step) = writer_inbox.blocking_recv() {
                match step {
                    ToThreads::Data(buf) => {
                        partial.write_all(&buf)?;
                        let _ = writer_gives_back.send(buf);
                    }
                    ToThreads::Restart => partial.restart()?,
                }
            }
            Ok(partial)
        });
        let hasher = tokio::task::spawn_blocking(move || {
            let mut hasher = Hasher::new();
            if let Some((file, len, path)) = prefix {
                // Short only if the file was emptied meanwhile (a restart, which is queued and
                // resets the hash) or on abort; otherwise the final length check catches it.
                cache::hash_prefix(&file, len, &mut hasher, &*aborted)
                    .map_err(|e| cache::cache_io("cannot read partial download", &path, e))?;
            }
            while let Some(step) = hasher_inbox.blocking_recv() {
                match step {
                    ToThreads::Data(buf) => {
                        hasher.update(&buf);
                        let _ = give_back.send(buf);
                    }
                    ToThreads::Restart => hasher = Hasher::new(),
                }
            }
            Ok(hasher)
        });
        Pipeline {
            to_writer: Some(to_writer),
            to_hasher: Some(to_hasher),
            returned,
            allocated: 0,
            current: Vec::new(),
            have,
            writer,
            hasher,
        }
    }

    /// The error when the writer thread is gone: it failed; `finish` says how.
    fn gone() -> Failure {
        Error::code(WU_E_DM_UNEXPECTED, "the download's writer stopped").into()
    }

    async fn push(&mut self, mut data: &[u8]) -> std::result::Result<(), Failure> {
        while !data.is_empty() {
            if self.current.capacity() == 0 {
                self.current = self.buffer().await?;
            }
            let n = (BUFFER - self.current.len()).min(data.len());
            self.current.extend_from_slice(&data[..n]);
            data = &data[n..];
            self.have += n as u64;
            if self.current.len() == BUFFER {
                self.send_current()?;
            }
        }
        Ok(())
    }

    /// A free buffer: one both threads gave back, or a new one while fewer than [`BUFFERS`]
    /// exist, or else the next one given back.
    async fn buffer(&mut self) -> std::result::Result<Vec<u8>, Failure> {
        loop {
            let returned = match self.returned.try_recv() {
                Ok(buf) => buf,
                Err(_) if self.allocated < BUFFERS => {
                    self.allocated += 1;
                    return Ok(Vec::with_capacity(BUFFER));
                }
                Err(_) => self.returned.recv().await.ok_or_else(Self::gone)?,
            };
            // The second of the two threads to give it back frees it; the first one's handle
            // is just dropped.
            if let Ok(mut buf) = Arc::try_unwrap(returned) {
                buf.clear();
                return Ok(buf);
            }
        }
    }

    fn send_current(&mut self) -> std::result::Result<(), Failure> {
        if self.current.is_empty() {
            return Ok(());
        }
        let buf = Arc::new(std::mem::take(&mut self.current));
        match (&self.to_writer, &self.to_hasher) {
            (Some(writer), Some(hasher))
                if hasher.send(ToThreads::Data(buf.clone())).is_ok()
                    && writer.send(ToThreads::Data(buf)).is_ok() =>
            {
                Ok(())
            }
            _ => Err(Self::gone()),
        }
    }

    /// Drops what is buffered and empties the partial file.
    fn restart(&mut self) {
        self.current.clear();
        self.have = 0;
        for tx in [&self.to_writer, &self.to_hasher].into_iter().flatten() {
            let _ = tx.send(ToThreads::Restart);
        }
    }

    /// Writes out what is buffered and waits for both threads: the partial file and the hash
    /// of everything in it.
    async fn finish(mut self) -> Result<(PartialFile, Hasher)> {
        let _ = self.send_current();
        self.to_writer = None;
        self.to_hasher = None;
        let failed = |e: tokio::task::JoinError| {
            Error::code(
                WU_E_DM_UNEXPECTED,
                format!("a download's writer thread failed: {e} (a bug in wua; please report it)"),
            )
        };
        let hasher = self.hasher.await.map_err(failed)?;
        let partial = self.writer.await.map_err(failed)??;
        let hasher = hasher?;
        Ok((partial, hasher))
    }
}

/// Fetches payloads into a [`PayloadCache`]: the engine behind [`super::UpdateDownloader`],
/// usable on its own (to fill a cache ahead of time, or to test a server).
///
/// Blocking: it owns a small tokio runtime and must not be called from async code. Once
/// [`Self::request_abort`] was called it refuses further work; make a new one.
pub struct Fetcher {
    engine: Arc<Engine>,
    parallel: usize,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("cache", &self.engine.cache)
            .field("parallel", &self.parallel)
            .finish()
    }
}

impl Fetcher {
    /// A fetcher into `cache`, with the agent's network options (time-outs, how many payloads
    /// at once).
    pub fn new(cache: PayloadCache, network: &NetworkOptions) -> Result<Fetcher> {
        Ok(Fetcher {
            engine: Arc::new(Engine::new(cache, network)?),
            parallel: network.parallel_downloads.max(1),
            runtime: Some(runtime()?),
        })
    }

    pub(crate) fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub(crate) fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime
            .as_ref()
            .expect("the runtime lives until drop")
            .block_on(future)
    }

    /// The cache it fills.
    pub fn cache(&self) -> &PayloadCache {
        &self.engine.cache
    }

    /// Asks every running and later fetch to stop (`WU_E_CALL_CANCELLED`); partial files are
    /// kept for a later resume.
    pub fn request_abort(&self) {
        self.engine.abort.fire();
    }

    /// Fetches one payload into the cache. With `force`, it is downloaded again even if the
    /// cache has it. Errors carry the `WU_E_*` code (see the module documentation).
    pub fn fetch(&self, target: &FetchTarget, force: bool) -> Result<Fetched> {
        self.fetch_all(std::slice::from_ref(target), force, |_, _| {})
            .pop()
            .expect("one result per target")
    }

    /// Fetches several payloads, up to `parallel_downloads` at once, and returns one result per
    /// target, in order. `on_progress(index, event)` is called from the fetcher's threads as
    /// each payload progresses.
    pub fn fetch_all(
        &self,
        targets: &[FetchTarget],
        force: bool,
        on_progress: impl Fn(usize, FetchEvent) + Send + Sync + 'static,
    ) -> Vec<Result<Fetched>> {
        struct Forward<F>(Arc<F>, usize);
        impl<F: Fn(usize, FetchEvent) + Send + Sync> Observer for Forward<F> {
            fn phase(&self, phase: DownloadPhase) {
                (self.0)(self.1, FetchEvent::Phase(phase))
            }
            fn bytes(&self, have: u64) {
                (self.0)(self.1, FetchEvent::Bytes(have))
            }
        }
        let on_progress = Arc::new(on_progress);
        let engine = &self.engine;
        self.block_on(async {
            let mut results: Vec<(usize, Result<Fetched>)> =
                futures::stream::iter(targets.iter().enumerate())
                    .map(|(i, target)| {
                        let observer: Arc<dyn Observer> = Arc::new(Forward(on_progress.clone(), i));
                        let work = Work::Fetch(target.clone());
                        async move { (i, engine.spawn(work, force, observer).await) }
                    })
                    .buffer_unordered(self.parallel)
                    .collect()
                    .await;
            results.sort_by_key(|(i, _)| *i);
            results.into_iter().map(|(_, r)| r).collect()
        })
    }
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        // Every task has ended by now (each fetch joins its threads); do not block on the
        // runtime's idle threads, and do not panic if dropped inside another runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(RUNTIME_WORKERS)
        .thread_name("wua-fetch")
        .enable_all()
        .build()
        .map_err(|e| {
            Error::code(
                WU_E_DM_UNEXPECTED,
                format!("cannot start the download threads: {e}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_parse() {
        assert_eq!(
            parse_content_range("bytes 10-99/100"),
            Some((10, Some(100)))
        );
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, None)));
        assert_eq!(parse_content_range("bytes 5-4/10"), None);
        assert_eq!(parse_content_range("bytes */10"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }
}
