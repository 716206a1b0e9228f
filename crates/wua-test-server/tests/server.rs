//! Drives the test server with a hand-written HTTP/1.1 client over `std::net::TcpStream`, so
//! what is checked is exactly what went over the wire.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use wua_test_server::{Fault, RequestLog, TestServer};

/// Bounds every read, so a broken server fails a test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(20);
/// How long "nothing more arrives" is watched for: long enough to catch a misbehaving server,
/// short enough to keep the tests quick. Only ever bounds a read, never asserted on.
const QUIET: Duration = Duration::from_millis(300);

/// How a response's byte stream ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Eof,
    Reset,
    TimedOut,
}

/// Header names (lower-case) and values, in order.
type Headers = Vec<(String, String)>;

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Headers,
    body: Vec<u8>,
    end: End,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn content_length(&self) -> Option<u64> {
        self.header("content-length").map(|v| v.parse().unwrap())
    }
}

/// `len` bytes that differ from one offset to the next, so a wrong range shows.
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x2545_f491;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A repository root with `files` (relative path, contents), kept alive with the server.
fn serve(files: &[(&str, &[u8])]) -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    for (path, contents) in files {
        write(&root, path, contents);
    }
    let server = TestServer::start(&root);
    (dir, server)
}

fn write(root: &Path, path: &str, contents: &[u8]) {
    let path = root.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

/// Connects and sends one request (`Connection: close`, so the end of the reply is EOF).
fn send(server: &TestServer, method: &str, path: &str, headers: &[(&str, &str)]) -> TcpStream {
    let url = server.url();
    let mut stream = TcpStream::connect((url.host_str().unwrap(), url.port().unwrap())).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", url.authority());
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream
}

/// Reads until EOF, a reset or the read timeout, whichever comes first.
fn read_to_end(stream: &mut TcpStream, into: &mut Vec<u8>) -> End {
    let mut buf = [0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return End::Eof,
            Ok(n) => into.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return End::TimedOut;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                        | ErrorKind::BrokenPipe
                ) =>
            {
                return End::Reset;
            }
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Reads until at least `n` bytes are in `into` or the stream ends first.
fn read_at_least(stream: &mut TcpStream, into: &mut Vec<u8>, n: usize) -> Option<End> {
    let mut buf = [0u8; 64 * 1024];
    while into.len() < n {
        match stream.read(&mut buf) {
            Ok(0) => return Some(End::Eof),
            Ok(k) => into.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Some(End::TimedOut);
            }
            Err(_) => return Some(End::Reset),
        }
    }
    None
}

/// Splits raw bytes into status, headers and body; `None` before the head is complete.
fn parse(raw: &[u8]) -> Option<(u16, Headers, Vec<u8>)> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..head_end]).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line}");
    let status = parts.next().unwrap().parse().unwrap();
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.trim().to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    Some((status, headers, raw[head_end + 4..].to_vec()))
}

/// One whole exchange: the reply as far as the server sent it.
fn request(server: &TestServer, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut stream = send(server, method, path, headers);
    let mut raw = Vec::new();
    let end = read_to_end(&mut stream, &mut raw);
    let (status, headers, body) =
        parse(&raw).unwrap_or_else(|| panic!("no complete head ({end:?}): {raw:?}"));
    Reply {
        status,
        headers,
        body,
        end,
    }
}

fn get(server: &TestServer, path: &str) -> Reply {
    request(server, "GET", path, &[])
}

fn get_range(server: &TestServer, path: &str, range: &str) -> Reply {
    request(server, "GET", path, &[("Range", range)])
}

fn log(method: &str, path: &str, range: Option<&str>, status: u16, body_bytes: u64) -> RequestLog {
    RequestLog {
        method: method.into(),
        path: path.into(),
        range: range.map(Into::into),
        status,
        body_bytes,
    }
}

#[test]
fn url_is_loopback_with_a_trailing_slash() {
    let (_dir, server) = serve(&[]);
    let url = server.url();
    assert_eq!(url.scheme(), "http");
    assert_eq!(url.host_str(), Some("127.0.0.1"));
    assert_ne!(url.port(), None);
    assert_eq!(url.path(), "/");
    assert_eq!(
        url.join("metadata/timestamp.json").unwrap().path(),
        "/metadata/timestamp.json"
    );
}

#[test]
fn get_streams_the_whole_file() {
    // Several of the server's 64 KiB chunks.
    let data = pattern(300_000);
    let (_dir, server) = serve(&[("targets/payload.bin", &data)]);
    let reply = get(&server, "/targets/payload.bin");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_length(), Some(data.len() as u64));
    assert_eq!(reply.header("accept-ranges"), Some("bytes"));
    assert_eq!(reply.end, End::Eof);
    assert!(reply.body == data, "body differs from the file");
}

#[test]
fn percent_encoded_paths_name_files() {
    let (_dir, server) = serve(&[("a b.json", b"{}")]);
    let reply = get(&server, "/a%20b.json");
    assert_eq!((reply.status, reply.body.as_slice()), (200, &b"{}"[..]));
}

#[test]
fn an_empty_file_is_served() {
    let (_dir, server) = serve(&[("empty", b"")]);
    let reply = get(&server, "/empty");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_length(), Some(0));
    assert!(reply.body.is_empty());
}

#[test]
fn head_sends_the_headers_only() {
    let data = pattern(1000);
    let (_dir, server) = serve(&[("timestamp.json", &data)]);
    let reply = request(&server, "HEAD", "/timestamp.json", &[]);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_length(), Some(1000));
    assert_eq!(reply.header("accept-ranges"), Some("bytes"));
    assert!(reply.body.is_empty());
}

#[test]
fn missing_files_and_directories_are_404() {
    let (_dir, server) = serve(&[("metadata/root.json", b"{}")]);
    for path in [
        "/nothing.json",
        "/metadata/nothing",
        "/metadata",
        "/metadata/",
        "/",
    ] {
        let reply = get(&server, path);
        assert_eq!(reply.status, 404, "{path}");
        assert!(reply.body.is_empty(), "{path}: no listing");
    }
}

#[test]
fn dot_dot_paths_are_refused() {
    let (dir, server) = serve(&[("inside", b"in")]);
    std::fs::write(dir.path().join("secret"), b"outside the root").unwrap();
    for path in [
        "/../secret",
        "/x/../../secret",
        "/%2e%2e/secret",
        "/..%2fsecret",
    ] {
        let reply = get(&server, path);
        assert_eq!(reply.status, 400, "{path}");
        assert!(reply.body.is_empty(), "{path}");
    }
}

#[test]
fn other_methods_are_refused() {
    let (_dir, server) = serve(&[("f", b"x")]);
    let reply = request(&server, "DELETE", "/f", &[]);
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("GET, HEAD"));
}

#[test]
fn ranges_are_served_as_206() {
    let data = pattern(200_000);
    let (_dir, server) = serve(&[("p", &data)]);

    let reply = get_range(&server, "/p", "bytes=10-19");
    assert_eq!(reply.status, 206);
    assert_eq!(reply.header("content-range"), Some("bytes 10-19/200000"));
    assert_eq!(reply.content_length(), Some(10));
    assert_eq!(reply.body, &data[10..20]);

    let reply = get_range(&server, "/p", "bytes=70000-");
    assert_eq!(reply.status, 206);
    assert_eq!(
        reply.header("content-range"),
        Some("bytes 70000-199999/200000")
    );
    assert!(reply.body == data[70000..]);

    // An end past the file is clamped to it.
    let reply = get_range(&server, "/p", "bytes=199990-300000");
    assert_eq!(
        reply.header("content-range"),
        Some("bytes 199990-199999/200000")
    );
    assert_eq!(reply.body, &data[199_990..]);

    // A HEAD with a range gets the partial headers.
    let reply = request(&server, "HEAD", "/p", &[("Range", "bytes=5-")]);
    assert_eq!(reply.status, 206);
    assert_eq!(reply.content_length(), Some(199_995));
    assert!(reply.body.is_empty());
}

#[test]
fn unsatisfiable_ranges_are_416() {
    let (_dir, server) = serve(&[("p", b"0123456789")]);
    for range in ["bytes=10-", "bytes=99-100"] {
        let reply = get_range(&server, "/p", range);
        assert_eq!(reply.status, 416, "{range}");
        assert_eq!(reply.header("content-range"), Some("bytes */10"), "{range}");
        assert!(reply.body.is_empty());
    }
}

#[test]
fn replace_serves_other_bytes() {
    let (_dir, server) = serve(&[("timestamp.json", b"current")]);
    server.set_fault("timestamp.json", Fault::Replace("rolled back".into()));
    let reply = get(&server, "/timestamp.json");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, b"rolled back");
    assert_eq!(reply.content_length(), Some(11));
    // Ranges apply to the replacement.
    let reply = get_range(&server, "/timestamp.json", "bytes=7-");
    assert_eq!(reply.status, 206);
    assert_eq!(reply.body, b"back");
    // A file that does not exist can be served too.
    server.set_fault("/new.json", Fault::Replace("new".into()));
    assert_eq!(get(&server, "/new.json").body, b"new");
}

#[test]
fn faults_other_than_status_spare_head() {
    let (_dir, server) = serve(&[("f", b"real")]);
    server.set_fault("f", Fault::Replace("replaced!".into()));
    let reply = request(&server, "HEAD", "/f", &[]);
    assert_eq!((reply.status, reply.content_length()), (200, Some(4)));
    server.set_fault("f", Fault::Hang);
    let reply = request(&server, "HEAD", "/f", &[]);
    assert_eq!((reply.status, reply.content_length()), (200, Some(4)));
}

#[test]
fn cut_after_sends_fewer_bytes_than_announced() {
    // 3 MB before the cut: more than socket buffers hold, so the cut must wait for the data.
    let data = pattern(4_000_000);
    let (_dir, server) = serve(&[("targets/big.tar.zst", &data)]);
    let cut = 3_000_001;
    server.set_fault("big.tar.zst", Fault::CutAfter(cut));
    for _ in 0..2 {
        let reply = get(&server, "/targets/big.tar.zst");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.content_length(), Some(data.len() as u64));
        assert_ne!(reply.end, End::TimedOut);
        assert_eq!(reply.body.len() as u64, cut);
        assert!(reply.body == data[..cut as usize]);
    }
    // A range is answered, and cut as far into its body.
    let reply = get_range(&server, "/targets/big.tar.zst", "bytes=3500000-");
    assert_eq!(reply.status, 206);
    assert_eq!(reply.content_length(), Some(500_000));
    assert!(reply.body == data[3_500_000..]);
    server.set_fault("big.tar.zst", Fault::CutAfter(10));
    let reply = get_range(&server, "/targets/big.tar.zst", "bytes=100-");
    assert_eq!(reply.body, &data[100..110]);
    assert_ne!(reply.end, End::TimedOut);
}

#[test]
fn cut_after_zero_sends_the_headers_only() {
    let (_dir, server) = serve(&[("f", b"0123456789")]);
    server.set_fault("f", Fault::CutAfter(0));
    let reply = get(&server, "/f");
    assert_eq!((reply.status, reply.content_length()), (200, Some(10)));
    assert!(reply.body.is_empty());
    assert_ne!(reply.end, End::TimedOut);
}

#[test]
fn cut_once_after_cuts_the_first_request_only() {
    let data = pattern(150_000);
    let (_dir, server) = serve(&[("targets/abc.tar.zst", &data)]);
    server.set_fault("/targets/abc.tar.zst", Fault::CutOnceAfter(70_000));

    let first = get(&server, "/targets/abc.tar.zst");
    assert_eq!(first.content_length(), Some(150_000));
    assert_eq!(first.body.len(), 70_000);
    assert_ne!(first.end, End::TimedOut);

    // The resume gets the rest.
    let resumed = get_range(&server, "/targets/abc.tar.zst", "bytes=70000-");
    assert_eq!(resumed.status, 206);
    let mut whole = first.body;
    whole.extend_from_slice(&resumed.body);
    assert!(whole == data);

    let again = get(&server, "/targets/abc.tar.zst");
    assert_eq!(again.status, 200);
    assert!(again.body == data);

    // Setting it again re-arms it.
    server.set_fault("/targets/abc.tar.zst", Fault::CutOnceAfter(5));
    assert_eq!(get(&server, "/targets/abc.tar.zst").body, &data[..5]);
    assert!(get(&server, "/targets/abc.tar.zst").body == data);
}

#[test]
fn endless_never_stops() {
    let (_dir, server) = serve(&[("timestamp.json", b"{}")]);
    server.set_fault("timestamp.json", Fault::Endless);
    let mut stream = send(&server, "GET", "/metadata/timestamp.json", &[]);
    let mut raw = Vec::new();
    let ten_mib = 10 << 20;
    // Read past the head, then 10 MiB of body, and it is still coming.
    let end = read_at_least(&mut stream, &mut raw, ten_mib + 1024);
    assert_eq!(end, None, "the body ended after {} bytes", raw.len());
    let (status, headers, body) = parse(&raw).unwrap();
    assert_eq!(status, 200);
    assert!(!headers.iter().any(|(n, _)| n == "content-length"));
    assert!(body.len() >= ten_mib - 1024);
    // Zeros, in chunked framing.
    assert!(body.iter().filter(|&&b| b != 0).count() < body.len() / 1000);
}

#[test]
fn drip_sends_one_chunk_then_waits() {
    let data = pattern(1000);
    let (_dir, server) = serve(&[("snapshot.json", &data)]);
    server.set_fault(
        "snapshot.json",
        Fault::Drip {
            chunk: 7,
            every: Duration::from_secs(3600),
        },
    );
    let mut stream = send(&server, "GET", "/snapshot.json", &[]);
    let mut raw = Vec::new();
    // The head and the first chunk arrive...
    loop {
        if let Some((_, _, body)) = parse(&raw)
            && body.len() >= 7
        {
            break;
        }
        let want = raw.len() + 1;
        let end = read_at_least(&mut stream, &mut raw, want);
        assert_eq!(end, None, "stream ended early: {raw:?}");
    }
    // ...and nothing more within the quiet window.
    stream.set_read_timeout(Some(QUIET)).unwrap();
    let end = read_to_end(&mut stream, &mut raw);
    assert_eq!(end, End::TimedOut);
    let (status, headers, body) = parse(&raw).unwrap();
    assert_eq!(status, 200);
    assert!(headers.contains(&("content-length".into(), "1000".into())));
    assert_eq!(body, &data[..7]);
}

#[test]
fn drip_finishes_for_a_patient_client() {
    let data = pattern(10);
    let (_dir, server) = serve(&[("f", &data)]);
    server.set_fault(
        "f",
        Fault::Drip {
            chunk: 3,
            every: Duration::from_millis(1),
        },
    );
    let reply = get(&server, "/f");
    assert_eq!((reply.status, reply.end), (200, End::Eof));
    assert_eq!(reply.body, data);
}

#[test]
fn hang_sends_nothing() {
    let (_dir, server) = serve(&[("timestamp.json", b"{}")]);
    server.set_fault("timestamp.json", Fault::Hang);
    let mut stream = send(&server, "GET", "/timestamp.json", &[]);
    stream.set_read_timeout(Some(QUIET)).unwrap();
    let mut raw = Vec::new();
    assert_eq!(read_to_end(&mut stream, &mut raw), End::TimedOut);
    assert!(raw.is_empty(), "{raw:?}");
}

#[test]
fn status_answers_get_and_head() {
    let (_dir, server) = serve(&[("f", b"data")]);
    server.set_fault("f", Fault::Status(503));
    for method in ["GET", "HEAD"] {
        let reply = request(&server, method, "/f", &[]);
        assert_eq!(reply.status, 503, "{method}");
        assert!(reply.body.is_empty());
    }
    // Also for paths with no file.
    server.set_fault("/gone", Fault::Status(410));
    assert_eq!(get(&server, "/gone").status, 410);
}

#[test]
#[should_panic(expected = "not a final HTTP status")]
fn status_must_be_a_final_status() {
    let (_dir, server) = serve(&[]);
    server.set_fault("f", Fault::Status(101));
}

#[test]
fn ignore_range_serves_the_whole_file() {
    let data = pattern(5000);
    let (_dir, server) = serve(&[("p", &data)]);
    server.set_fault("p", Fault::IgnoreRange);
    let reply = get_range(&server, "/p", "bytes=100-");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-range"), None);
    assert_eq!(reply.content_length(), Some(5000));
    assert_eq!(reply.body, data);
}

#[test]
fn the_longest_suffix_wins_and_faults_can_be_replaced_and_cleared() {
    let (_dir, server) = serve(&[
        ("metadata/timestamp.json", b"timestamp"),
        ("metadata/snapshot.json", b"snapshot"),
    ]);
    server.set_fault(".json", Fault::Status(500));
    server.set_fault("timestamp.json", Fault::Replace("old".into()));
    server.set_fault("/metadata/timestamp.json", Fault::Replace("older".into()));
    assert_eq!(get(&server, "/metadata/timestamp.json").body, b"older");
    assert_eq!(get(&server, "/elsewhere/timestamp.json").body, b"old");
    assert_eq!(get(&server, "/metadata/snapshot.json").status, 500);

    server.set_fault(".json", Fault::Status(502));
    assert_eq!(get(&server, "/metadata/snapshot.json").status, 502);

    server.clear_faults();
    assert_eq!(get(&server, "/metadata/timestamp.json").body, b"timestamp");
    assert_eq!(get(&server, "/metadata/snapshot.json").body, b"snapshot");
}

#[test]
fn requests_are_logged_in_order() {
    let data = pattern(100_000);
    let (_dir, server) = serve(&[("m/timestamp.json", b"{}"), ("t/p", &data)]);
    assert_eq!(server.request_count(), 0);

    get(&server, "/m/timestamp.json");
    request(&server, "HEAD", "/t/p", &[]);
    get(&server, "/nothing");
    get(&server, "/../x");
    get_range(&server, "/t/p", "bytes=99990-");
    get_range(&server, "/t/p", "bytes=100000-");
    server.set_fault("t/p", Fault::CutAfter(65_537));
    get(&server, "/t/p");
    server.set_fault("t/p", Fault::Status(503));
    request(&server, "HEAD", "/t/p", &[]);

    let expected = vec![
        log("GET", "/m/timestamp.json", None, 200, 2),
        log("HEAD", "/t/p", None, 200, 0),
        log("GET", "/nothing", None, 404, 0),
        log("GET", "/../x", None, 400, 0),
        log("GET", "/t/p", Some("bytes=99990-"), 206, 10),
        log("GET", "/t/p", Some("bytes=100000-"), 416, 0),
        log("GET", "/t/p", None, 200, 65_537),
        log("HEAD", "/t/p", None, 503, 0),
    ];
    assert_eq!(server.requests(), expected);
    assert_eq!(server.request_count(), expected.len());
}

#[test]
fn drop_ends_open_connections() {
    let (_dir, server) = serve(&[("a", b"a"), ("b", b"b")]);
    server.set_fault("a", Fault::Hang);
    server.set_fault("b", Fault::Endless);
    let mut hanging = send(&server, "GET", "/a", &[]);
    let mut endless = send(&server, "GET", "/b", &[]);
    let mut raw = Vec::new();
    assert_eq!(read_at_least(&mut endless, &mut raw, 100_000), None);
    drop(server);
    let mut rest = Vec::new();
    assert_ne!(read_to_end(&mut hanging, &mut rest), End::TimedOut);
    assert!(rest.is_empty());
    assert_ne!(read_to_end(&mut endless, &mut rest), End::TimedOut);
}

/// The server's runtime lives on its own thread: starting and dropping it inside an async
/// test neither panics ("cannot drop a runtime in an async context") nor blocks the test.
#[tokio::test]
async fn works_from_async_tests() {
    let (_dir, server) = serve(&[("f", b"ok")]);
    let client = std::thread::spawn({
        let url = server.url();
        move || {
            let mut stream =
                TcpStream::connect((url.host_str().unwrap(), url.port().unwrap())).unwrap();
            stream.set_read_timeout(Some(PATIENCE)).unwrap();
            stream
                .write_all(b"GET /f HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut raw = Vec::new();
            read_to_end(&mut stream, &mut raw);
            raw
        }
    });
    let raw = client.join().unwrap();
    assert_eq!(parse(&raw).unwrap().2, b"ok");
    drop(server);
}
