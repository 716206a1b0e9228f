//! A real loopback HTTP/1.1 file server with fault injection, for wua's integration tests.
//!
//! The library and the CLI fetch signed metadata (TUF) and payloads over HTTP. Their tests need a
//! real server, and one that misbehaves on demand — truncated transfers, endless or slow
//! bodies, rolled-back files — to show that every attack of the TUF threat model is caught.
//! [`TestServer::start`] serves a directory at `http://127.0.0.1:<random port>/` from its own
//! thread and tokio runtime, so plain `#[test]` functions can use it; [`TestServer::set_fault`]
//! makes chosen paths misbehave.
//!
//! ```no_run
//! use wua_test_server::{Fault, TestServer};
//!
//! let server = TestServer::start("/path/to/repository");
//! server.set_fault("timestamp.json", Fault::Endless);
//! let base = server.url(); // http://127.0.0.1:PORT/
//! // ... point the client at `base`, then check what it fetched:
//! assert!(server.requests().iter().any(|r| r.path.ends_with("timestamp.json")));
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{self, SeekFrom};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, State};
use axum::http::header::{
    ACCEPT_RANGES, ALLOW, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, HeaderMap, HeaderValue,
    RANGE,
};
use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;
use axum::serve::{IncomingStream, Listener};
use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

/// Body bytes handed to the connection at a time (file reads, endless zeros).
const CHUNK: usize = 64 * 1024;

/// A loopback HTTP/1.1 server for the files below one directory, with injectable faults.
///
/// It runs on a thread of its own with its own tokio runtime, so it works from synchronous
/// tests and from async ones alike. Dropping it stops the server and cuts every connection
/// still open (endless or hanging responses included), so nothing outlives the test.
pub struct TestServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// A misbehaviour of the server for the requests whose path matches, set with
/// [`TestServer::set_fault`].
///
/// Faults apply to GET requests; [`Fault::Status`] also to HEAD. Faults that serve the file
/// (`CutAfter`, `CutOnceAfter`, `Drip`, `IgnoreRange`) answer 404 when it is missing.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Serve these bytes instead of the file (arbitrary software, rollback to an old file,
    /// mix-and-match), exactly as if the file held them: Range requests are honoured on them.
    Replace(Bytes),
    /// Send headers claiming the full length, then only the first `n` body bytes, then cut the
    /// connection (the client sees EOF or a reset). A Range request is answered normally (206)
    /// and cut `n` bytes into its body; `n` at or past the body's end cuts nothing.
    CutAfter(u64),
    /// Like [`Fault::CutAfter`], but only for the first GET request; later requests are served
    /// normally (resume tests). Setting it again re-arms it.
    CutOnceAfter(u64),
    /// An endless body of zeros with no Content-Length (endless-data attack), sent chunked.
    /// Stops when the client goes away.
    Endless,
    /// Send `chunk` bytes of the real file at once, then `chunk` more every `every`: a transfer
    /// slow enough to never finish (slow-retrieval attack). Headers are normal (Content-Length,
    /// Range honoured). Stops when the client goes away or, if it waits, at the end of the file.
    Drip {
        /// Bytes sent at each step.
        chunk: usize,
        /// Pause between steps.
        every: Duration,
    },
    /// Accept the request and send nothing at all (no headers) until the client gives up.
    Hang,
    /// Answer with this status and an empty body. [`TestServer::set_fault`] panics unless it
    /// is a final status (200..=999).
    Status(u16),
    /// Ignore Range headers: always 200 with the whole file.
    IgnoreRange,
}

/// One request as the server saw and answered it, from [`TestServer::requests`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestLog {
    /// The request method, e.g. `"GET"`.
    pub method: String,
    /// The URL path as sent (still percent-encoded, no query), e.g. `"/metadata/1.root.json"`.
    pub path: String,
    /// The `Range` header, if the request had one.
    pub range: Option<String>,
    /// The status sent; 0 when no response was sent at all ([`Fault::Hang`]).
    pub status: u16,
    /// Body bytes handed to the connection: what the client got unless it left early.
    pub body_bytes: u64,
}

impl TestServer {
    /// Serves the files below `root` (a directory) at `http://127.0.0.1:<random port>/`.
    ///
    /// The listener is bound before this returns, so requests can be made at once. GET and
    /// HEAD only; 404 for what is not a regular file (no directory listings); 400 for paths
    /// with a `..` segment; single byte ranges honoured (206, or 416 when unsatisfiable).
    /// Files are streamed, never read whole into memory.
    ///
    /// # Panics
    ///
    /// If the loopback listener, the runtime or the thread cannot be created: a test set-up
    /// failure, nothing a test could recover from.
    pub fn start(root: impl Into<PathBuf>) -> TestServer {
        let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
            .expect("test server: bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("test server: set the listener non-blocking");
        let addr = listener
            .local_addr()
            .expect("test server: listener address");
        let shared = Arc::new(Shared {
            root: root.into(),
            faults: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
        });
        // Current-thread: one server thread is plenty for tests; file reads use tokio's
        // blocking pool, bounded at shutdown below.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("test server: tokio runtime");
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared))
            .into_make_service_with_connect_info::<Conn>();
        let thread = std::thread::Builder::new()
            .name(format!("wua-test-server {addr}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener)
                        .expect("test server: register the listener with tokio");
                    let serve = axum::serve(FlushListener(listener), app);
                    tokio::select! {
                        _ = serve.into_future() => {}
                        _ = shutdown_rx => {}
                    }
                });
                // Dropping the runtime drops every connection task: endless and hanging
                // responses end with it.
                runtime.shutdown_timeout(Duration::from_secs(5));
            })
            .expect("test server: spawn its thread");
        TestServer {
            addr,
            shared,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// The server's base URL, `http://127.0.0.1:PORT/` (with the trailing slash, so
    /// [`url::Url::join`] keeps relative paths below it).
    pub fn url(&self) -> url::Url {
        url::Url::parse(&format!("http://{}/", self.addr)).expect("a socket address is a URL host")
    }

    /// Injects `fault` for every request whose URL path ends with `path_suffix` (e.g.
    /// `"timestamp.json"`, or `"/targets/abc.tar.zst"`), matched against the path as sent.
    ///
    /// Later calls for the same suffix replace it; when several suffixes match a path, the
    /// longest wins, so a general fault can be refined for one file.
    ///
    /// # Panics
    ///
    /// On [`Fault::Status`] with a code outside 200..=999: HTTP cannot send it as an answer.
    pub fn set_fault(&self, path_suffix: &str, fault: Fault) {
        if let Fault::Status(code) = fault {
            assert!(
                (200..=999).contains(&code),
                "test server: {code} is not a final HTTP status"
            );
        }
        lock(&self.shared.faults).insert(
            path_suffix.to_owned(),
            FaultSlot {
                fault,
                fired: false,
            },
        );
    }

    /// Removes every fault: the server is well-behaved again.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Every request served so far, in order: method, path, the Range header if any, the
    /// status sent, body bytes sent.
    ///
    /// A request is logged once its response is complete on the server's side — just before
    /// its last body bytes or its cut are handed to the connection — so a client that has
    /// read a whole response, or seen it cut, finds it here. Responses the client abandons
    /// ([`Fault::Endless`], [`Fault::Drip`], [`Fault::Hang`]) are logged when the server
    /// notices the client went away.
    pub fn requests(&self) -> Vec<RequestLog> {
        lock(&self.shared.log).clone()
    }

    /// How many requests [`TestServer::requests`] holds: a cheap check that a client did (or
    /// did not) come back.
    pub fn request_count(&self) -> usize {
        lock(&self.shared.log).len()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            // A panic on the server thread has been printed already; do not double-panic.
            let _ = thread.join();
        }
    }
}

/// State shared by the server thread and the [`TestServer`] handle.
struct Shared {
    root: PathBuf,
    faults: Mutex<HashMap<String, FaultSlot>>,
    log: Mutex<Vec<RequestLog>>,
}

/// A fault and whether a one-shot fault ([`Fault::CutOnceAfter`]) has been used up.
struct FaultSlot {
    fault: Fault,
    fired: bool,
}

impl Shared {
    /// The fault for a request to `path`: the longest matching suffix. GET only, except
    /// `Status`, which HEAD gets too. Using a `CutOnceAfter` spends it.
    fn fault_for(&self, path: &str, get: bool) -> Option<Fault> {
        let mut faults = lock(&self.faults);
        let (_, slot) = faults
            .iter_mut()
            .filter(|(suffix, _)| path.ends_with(suffix.as_str()))
            .max_by_key(|(suffix, _)| suffix.len())?;
        match slot.fault {
            Fault::Status(_) => Some(slot.fault.clone()),
            _ if !get => None,
            Fault::CutOnceAfter(_) if slot.fired => None,
            Fault::CutOnceAfter(n) => {
                slot.fired = true;
                Some(Fault::CutAfter(n))
            }
            ref fault => Some(fault.clone()),
        }
    }
}

/// Locks, ignoring poison: a panicking test must not hide its own message behind ours.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A request's log entry in the making; recorded by [`Entry::finish`] or, for responses the
/// client abandons, when dropped with the response body or handler.
struct Entry {
    shared: Arc<Shared>,
    log: Option<RequestLog>,
}

impl Entry {
    fn set_status(&mut self, status: StatusCode) {
        if let Some(log) = &mut self.log {
            log.status = status.as_u16();
        }
    }

    fn add_bytes(&mut self, n: usize) {
        if let Some(log) = &mut self.log {
            log.body_bytes += n as u64;
        }
    }

    fn finish(&mut self) {
        if let Some(log) = self.log.take() {
            lock(&self.shared.log).push(log);
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The TCP listener, handing out connections that report their flushes (see [`FlushIo`]).
struct FlushListener(TcpListener);

impl Listener for FlushListener {
    type Io = FlushIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (FlushIo, SocketAddr) {
        loop {
            match self.0.accept().await {
                Ok((stream, addr)) => {
                    let (flushes, _) = watch::channel(0);
                    let io = FlushIo {
                        stream,
                        flushes: Arc::new(flushes),
                    };
                    return (io, addr);
                }
                // Out of descriptors or an aborted handshake: wait a little, as axum does.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// A connection that counts the flushes hyper asks of it.
///
/// hyper flushes its socket only once its own write buffer is empty. A body that ends in an
/// error makes hyper drop the connection at once, discarding what is still buffered; so a cut
/// waits for the next flush first, and the client gets exactly the bytes before the cut.
struct FlushIo {
    stream: TcpStream,
    flushes: Arc<watch::Sender<u64>>,
}

impl AsyncRead for FlushIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for FlushIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.stream).poll_flush(cx);
        if flushed.is_ready() && self.flushes.receiver_count() > 0 {
            self.flushes.send_modify(|n| *n += 1);
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// What a handler knows of its connection: how to wait for its next flush.
#[derive(Clone)]
struct Conn(Arc<watch::Sender<u64>>);

impl Connected<IncomingStream<'_, FlushListener>> for Conn {
    fn connect_info(stream: IncomingStream<'_, FlushListener>) -> Self {
        Conn(Arc::clone(&stream.io().flushes))
    }
}

/// What a response serves: a file, or a [`Fault::Replace`]ment.
enum Source {
    File(PathBuf),
    Bytes(Bytes),
}

/// An opened [`Source`], read as the body goes out.
enum Content {
    File(tokio::fs::File),
    Bytes(Bytes),
}

/// How a response body is paced.
#[derive(Clone, Copy)]
enum Pace {
    Normal,
    CutAfter(u64),
    Drip { chunk: usize, every: Duration },
}

/// The one handler: every method, every path.
async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path().to_owned();
    let range = headers
        .get(RANGE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let mut entry = Entry {
        shared: Arc::clone(&shared),
        log: Some(RequestLog {
            method: method.as_str().to_owned(),
            path: path.clone(),
            range: range.clone(),
            status: 0,
            body_bytes: 0,
        }),
    };
    let get = method == Method::GET;
    if !get && method != Method::HEAD {
        let mut response = empty(&mut entry, StatusCode::METHOD_NOT_ALLOWED);
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let Some(file) = file_path(&shared.root, &path) else {
        return empty(&mut entry, StatusCode::BAD_REQUEST);
    };
    let (content, pace, honour_range) = match shared.fault_for(&path, get) {
        Some(Fault::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return empty(&mut entry, status);
        }
        Some(Fault::Hang) => {
            // Logged with status 0 when hyper drops this future: the client went away.
            return std::future::pending().await;
        }
        Some(Fault::Endless) => return endless(entry),
        Some(Fault::Replace(bytes)) => (Source::Bytes(bytes), Pace::Normal, true),
        Some(Fault::CutAfter(n) | Fault::CutOnceAfter(n)) => {
            (Source::File(file), Pace::CutAfter(n), true)
        }
        Some(Fault::Drip { chunk, every }) => {
            (Source::File(file), Pace::Drip { chunk, every }, true)
        }
        Some(Fault::IgnoreRange) => (Source::File(file), Pace::Normal, false),
        None => (Source::File(file), Pace::Normal, true),
    };
    let (content, len) = match content.open().await {
        Some(opened) => opened,
        None => return empty(&mut entry, StatusCode::NOT_FOUND),
    };

    let mut status = StatusCode::OK;
    let mut start = 0;
    let mut body_len = len;
    let mut response_headers = HeaderMap::new();
    response_headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    response_headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    match range
        .as_deref()
        .filter(|_| honour_range)
        .map(|r| parse_range(r, len))
    {
        None | Some(RangeRequest::Ignored) => {}
        Some(RangeRequest::Unsatisfiable) => {
            let mut response = empty(&mut entry, StatusCode::RANGE_NOT_SATISFIABLE);
            response
                .headers_mut()
                .insert(CONTENT_RANGE, header_value(format!("bytes */{len}")));
            return response;
        }
        Some(RangeRequest::Bytes { first, last }) => {
            status = StatusCode::PARTIAL_CONTENT;
            start = first;
            body_len = last - first + 1;
            response_headers.insert(
                CONTENT_RANGE,
                header_value(format!("bytes {first}-{last}/{len}")),
            );
        }
    }
    response_headers.insert(CONTENT_LENGTH, header_value(body_len.to_string()));
    entry.set_status(status);

    let body = if !get || body_len == 0 {
        entry.finish();
        Body::empty()
    } else {
        let content = match content.skip(start).await {
            Some(content) => content,
            None => return empty(&mut entry, StatusCode::INTERNAL_SERVER_ERROR),
        };
        Body::from_stream(body_stream(BodyState {
            content,
            remaining: body_len,
            pace,
            sent: 0,
            steps: 0,
            flushes: conn.0,
            entry,
            done: false,
        }))
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = response_headers;
    response
}

/// A response with no body, logged at once.
fn empty(entry: &mut Entry, status: StatusCode) -> Response {
    entry.set_status(status);
    entry.finish();
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
}

/// The endless-data attack: zeros, chunked, until the client goes away.
fn endless(mut entry: Entry) -> Response {
    entry.set_status(StatusCode::OK);
    let zeros = Bytes::from(vec![0u8; CHUNK]);
    let stream = futures::stream::repeat(()).map(move |()| {
        entry.add_bytes(zeros.len());
        Ok::<_, Infallible>(zeros.clone())
    });
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    response
}

fn header_value(text: String) -> HeaderValue {
    HeaderValue::try_from(text).expect("digits, dashes and slashes are a valid header value")
}

impl Source {
    /// Opens the source, with its length: `None` when a file is missing or not a regular file.
    async fn open(self) -> Option<(Content, u64)> {
        match self {
            Source::Bytes(bytes) => {
                let len = bytes.len() as u64;
                Some((Content::Bytes(bytes), len))
            }
            Source::File(path) => {
                let file = tokio::fs::File::open(path).await.ok()?;
                let meta = file.metadata().await.ok()?;
                meta.is_file().then_some((Content::File(file), meta.len()))
            }
        }
    }
}

impl Content {
    /// Positions the content at byte `start`.
    async fn skip(self, start: u64) -> Option<Content> {
        match self {
            Content::Bytes(mut bytes) => {
                let _ = bytes.split_to(start as usize);
                Some(Content::Bytes(bytes))
            }
            Content::File(mut file) => {
                file.seek(SeekFrom::Start(start)).await.ok()?;
                Some(Content::File(file))
            }
        }
    }

    /// The next `n` bytes (fewer only at the end of a file that shrank).
    async fn read(&mut self, n: usize) -> io::Result<Bytes> {
        match self {
            Content::Bytes(bytes) => Ok(bytes.split_to(n.min(bytes.len()))),
            Content::File(file) => {
                let mut buf = BytesMut::with_capacity(n);
                while buf.len() < n {
                    let mut limited = (&mut *file).take((n - buf.len()) as u64);
                    if limited.read_buf(&mut buf).await? == 0 {
                        break;
                    }
                }
                Ok(buf.freeze())
            }
        }
    }
}

/// A response body being produced.
struct BodyState {
    content: Content,
    /// Bytes of the body not produced yet.
    remaining: u64,
    pace: Pace,
    /// Bytes produced so far.
    sent: u64,
    /// Chunks produced so far (a drip waits before all but the first).
    steps: u64,
    flushes: Arc<watch::Sender<u64>>,
    entry: Entry,
    done: bool,
}

/// Produces a body per its [`Pace`]; logs the request before handing over its last bytes or
/// its cut, so the log is complete by the time the client sees the end.
fn body_stream(state: BodyState) -> impl futures::Stream<Item = io::Result<Bytes>> + Send {
    futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        let mut want = CHUNK as u64;
        match st.pace {
            Pace::Normal => {}
            Pace::CutAfter(n) => {
                if st.sent >= n {
                    // Let hyper write out everything before the cut, then cut.
                    let mut flushed = st.flushes.subscribe();
                    let _ = flushed.changed().await;
                    st.done = true;
                    st.entry.finish();
                    let cut = io::Error::other("wua-test-server: connection cut (Fault::CutAfter)");
                    return Some((Err(cut), st));
                }
                want = want.min(n - st.sent);
            }
            Pace::Drip { chunk, every } => {
                if st.steps > 0 {
                    tokio::time::sleep(every).await;
                }
                if chunk == 0 {
                    // Nothing to send, ever: stay silent until the client goes away.
                    std::future::pending::<()>().await;
                }
                want = chunk as u64;
            }
        }
        want = want.min(st.remaining);
        st.steps += 1;
        let data = match st.content.read(want as usize).await {
            Ok(data) if !data.is_empty() => data,
            // The file shrank or failed under us: cut, as a real server would.
            Ok(_) | Err(_) => {
                st.done = true;
                st.entry.finish();
                return Some((
                    Err(io::Error::other("wua-test-server: file read failed")),
                    st,
                ));
            }
        };
        st.sent += data.len() as u64;
        st.remaining -= data.len() as u64;
        st.entry.add_bytes(data.len());
        if st.remaining == 0 {
            st.done = true;
            st.entry.finish();
        }
        Some((Ok(data), st))
    })
}

/// A `Range` header, judged against a body of some length.
#[derive(Debug, PartialEq, Eq)]
enum RangeRequest {
    /// Not a single byte range this server understands: serve the whole body, as RFC 9110
    /// allows.
    Ignored,
    /// No byte of the range exists: 416.
    Unsatisfiable,
    /// Bytes `first..=last`, both within the body.
    Bytes { first: u64, last: u64 },
}

/// Parses `bytes=N-`, `bytes=N-M` and `bytes=-N` (the last N bytes).
fn parse_range(header: &str, len: u64) -> RangeRequest {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeRequest::Ignored;
    };
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Ignored;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    match (first.trim().is_empty(), last.trim().is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match number(last) {
            None => RangeRequest::Ignored,
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if len == 0 => RangeRequest::Unsatisfiable,
            Some(n) => RangeRequest::Bytes {
                first: len.saturating_sub(n),
                last: len - 1,
            },
        },
        (false, _) => {
            let Some(first) = number(first) else {
                return RangeRequest::Ignored;
            };
            let last = if last.trim().is_empty() {
                None
            } else {
                match number(last) {
                    Some(last) if last >= first => Some(last),
                    _ => return RangeRequest::Ignored,
                }
            };
            if first >= len {
                return RangeRequest::Unsatisfiable;
            }
            let last = last.map_or(len - 1, |last| last.min(len - 1));
            RangeRequest::Bytes { first, last }
        }
        (true, true) => RangeRequest::Ignored,
    }
}

/// The file a URL path names below `root`; `None` (400) for a `..` segment, or a segment that
/// decodes to a separator, NUL or invalid UTF-8: nothing outside `root` is ever served.
fn file_path(root: &std::path::Path, url_path: &str) -> Option<PathBuf> {
    let mut path = root.to_path_buf();
    for segment in url_path.split('/') {
        let segment = percent_decode(segment)?;
        if segment == ".." || segment.contains(['/', '\\', '\0']) {
            return None;
        }
        if !segment.is_empty() && segment != "." {
            path.push(segment);
        }
    }
    Some(path)
}

/// Decodes `%XX` escapes; `None` for a malformed escape or invalid UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_per_rfc_9110() {
        use RangeRequest::*;
        assert_eq!(parse_range("bytes=0-", 10), Bytes { first: 0, last: 9 });
        assert_eq!(parse_range("bytes=3-5", 10), Bytes { first: 3, last: 5 });
        assert_eq!(parse_range("bytes=3-99", 10), Bytes { first: 3, last: 9 });
        assert_eq!(parse_range("bytes=-4", 10), Bytes { first: 6, last: 9 });
        assert_eq!(parse_range("bytes=-99", 10), Bytes { first: 0, last: 9 });
        assert_eq!(parse_range("bytes=10-", 10), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 10), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-3", 10), Ignored);
        assert_eq!(parse_range("bytes=0-1,4-5", 10), Ignored);
        assert_eq!(parse_range("items=0-1", 10), Ignored);
        assert_eq!(parse_range("bytes=x-", 10), Ignored);
        assert_eq!(parse_range("bytes=-", 10), Ignored);
    }

    #[test]
    fn paths_stay_below_the_root() {
        let root = std::path::Path::new("/srv");
        assert_eq!(
            file_path(root, "/a/b%20c.json"),
            Some(PathBuf::from("/srv/a/b c.json"))
        );
        assert_eq!(file_path(root, "/a//./b"), Some(PathBuf::from("/srv/a/b")));
        assert_eq!(file_path(root, "/"), Some(PathBuf::from("/srv")));
        assert_eq!(file_path(root, "/../etc/passwd"), None);
        assert_eq!(file_path(root, "/a/%2e%2e/%2E%2E/x"), None);
        assert_eq!(file_path(root, "/a%2f..%2fb"), None);
        assert_eq!(file_path(root, "/a%00"), None);
        assert_eq!(file_path(root, "/a%zz"), None);
        assert_eq!(file_path(root, "/a%2"), None);
        assert_eq!(file_path(root, "/a%+1"), None);
    }
}
