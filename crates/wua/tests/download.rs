//! Downloads into the content-addressed cache, against a real loopback HTTP server that
//! misbehaves on demand (`wua-test-server`) and against `file://` sources.
//!
//! These drive the transfer engine ([`wua::download::Fetcher`]) directly; the WUA object model
//! over it (`UpdateDownloader`, `DownloadJob`) is tested in the library's own unit tests and,
//! through a session, below where the session can create downloaders.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::digest;
use tempfile::TempDir;
use url::Url;
use wua::DownloadPhase;
use wua::download::{FetchEvent, FetchTarget, Fetched, Fetcher, PayloadCache, RESUME_ATTEMPTS};
use wua::hresult::*;
use wua::net::NetworkOptions;
use wua_test_server::{Fault, TestServer};

/// Bytes that differ everywhere (a repeated pattern could hide an offset error).
fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sha256(data: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, data).as_ref())
}

/// A repository directory served over HTTP, and an agent state directory with its cache.
struct Env {
    repo: TempDir,
    state: TempDir,
    server: TestServer,
}

impl Env {
    fn new() -> Env {
        let repo = tempfile::tempdir().unwrap();
        let server = TestServer::start(repo.path());
        Env {
            repo,
            state: tempfile::tempdir().unwrap(),
            server,
        }
    }

    /// Publishes `data` as `targets/<name>` and returns its target over HTTP.
    fn publish(&self, name: &str, data: &[u8]) -> FetchTarget {
        let dir = self.repo.path().join("targets");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(name), data).unwrap();
        FetchTarget {
            url: self.server.url().join(&format!("targets/{name}")).unwrap(),
            length: data.len() as u64,
            sha256: sha256(data),
        }
    }

    /// The same target as a `file://` URL.
    fn file_target(&self, name: &str, data: &[u8]) -> FetchTarget {
        let target = self.publish(name, data);
        FetchTarget {
            url: Url::from_file_path(self.repo.path().join("targets").join(name)).unwrap(),
            ..target
        }
    }

    fn cache(&self) -> PayloadCache {
        PayloadCache::new(self.state.path())
    }

    fn fetcher(&self) -> Fetcher {
        self.fetcher_with(NetworkOptions::default())
    }

    fn fetcher_with(&self, network: NetworkOptions) -> Fetcher {
        Fetcher::new(self.cache(), &network).unwrap()
    }

    /// The GET requests for `name`, in order.
    fn gets(&self, name: &str) -> Vec<wua_test_server::RequestLog> {
        self.server
            .requests()
            .into_iter()
            .filter(|r| r.method == "GET" && r.path.ends_with(name))
            .collect()
    }
}

fn stall(seconds: u64) -> NetworkOptions {
    NetworkOptions {
        stall_timeout: Duration::from_secs(seconds),
        ..NetworkOptions::default()
    }
}

fn assert_cached(cache: &PayloadCache, data: &[u8]) {
    let sha = sha256(data);
    assert!(cache.contains(&sha), "{sha} is not in the cache");
    assert!(
        fs::read(cache.path(&sha)).unwrap() == data,
        "cached bytes differ"
    );
    assert!(
        !cache.partial_path(&sha).exists(),
        "a partial file was left"
    );
}

fn assert_nothing_cached(cache: &PayloadCache, sha: &str) {
    assert!(!cache.contains(sha));
    assert!(!cache.path(sha).exists());
    assert!(
        !cache.partial_path(sha).exists(),
        "the partial file was kept"
    );
}

/// Polls `condition` every 10 ms for up to a minute: bounds a hang, nothing depends on timing.
fn wait_for(what: &str, condition: impl Fn() -> bool) {
    for _ in 0..6000 {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn a_payload_is_downloaded_verified_into_the_cache_and_not_fetched_twice() {
    let env = Env::new();
    let data = payload(3 << 20, 1);
    let target = env.publish("a.tar.zst", &data);
    let fetcher = env.fetcher();
    assert_eq!(fetcher.fetch(&target, false).unwrap(), Fetched::Downloaded);
    assert_cached(fetcher.cache(), &data);
    let gets = env.gets("a.tar.zst");
    assert_eq!(gets.len(), 1);
    assert_eq!(gets[0].range, None);
    assert_eq!(gets[0].status, 200);

    // Already verified: nothing is transferred.
    assert_eq!(
        fetcher.fetch(&target, false).unwrap(),
        Fetched::AlreadyCached
    );
    assert_eq!(env.gets("a.tar.zst").len(), 1);

    // Forced: downloaded and verified again, from the start.
    assert_eq!(fetcher.fetch(&target, true).unwrap(), Fetched::Downloaded);
    let gets = env.gets("a.tar.zst");
    assert_eq!(gets.len(), 2);
    assert_eq!(gets[1].range, None);
    assert_cached(fetcher.cache(), &data);
}

#[test]
fn a_cut_transfer_resumes_with_a_range_request_from_where_it_stopped() {
    let env = Env::new();
    let data = payload(3 << 20, 2);
    let half = data.len() as u64 / 2;
    let target = env.publish("cut.tar.zst", &data);
    env.server
        .set_fault("cut.tar.zst", Fault::CutOnceAfter(half));
    let fetcher = env.fetcher();
    assert_eq!(fetcher.fetch(&target, false).unwrap(), Fetched::Downloaded);
    assert_cached(fetcher.cache(), &data);
    let gets = env.gets("cut.tar.zst");
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0].range, None);
    assert_eq!(
        gets[1].range.as_deref(),
        Some(format!("bytes={half}-").as_str())
    );
    assert_eq!(gets[1].status, 206);
    assert_eq!(gets[1].body_bytes, data.len() as u64 - half);
}

#[test]
fn each_resume_continues_where_the_last_cut_stopped() {
    let env = Env::new();
    let step = 256 << 10;
    // Cut three times (each resumed range is cut `step` bytes in), complete the fourth time.
    let data = payload(step * 3 + step / 2, 3);
    let target = env.publish("steps.tar.zst", &data);
    env.server
        .set_fault("steps.tar.zst", Fault::CutAfter(step as u64));
    let fetcher = env.fetcher();
    assert_eq!(fetcher.fetch(&target, false).unwrap(), Fetched::Downloaded);
    assert_cached(fetcher.cache(), &data);
    let ranges: Vec<_> = env
        .gets("steps.tar.zst")
        .into_iter()
        .map(|r| r.range)
        .collect();
    let expected: Vec<_> = [None, Some(step), Some(2 * step), Some(3 * step)]
        .into_iter()
        .map(|from| from.map(|f| format!("bytes={f}-")))
        .collect();
    assert_eq!(ranges, expected);
}

#[test]
fn a_connection_cut_every_time_fails_after_the_last_resume_and_keeps_the_partial() {
    let env = Env::new();
    let data = payload(1 << 20, 4);
    let target = env.publish("never.tar.zst", &data);
    env.server.set_fault("never.tar.zst", Fault::CutAfter(0));
    let fetcher = env.fetcher();
    let err = fetcher.fetch(&target, false).unwrap_err();
    assert!(err.hresult().is_failure(), "{err}");
    assert!(err.to_string().contains("interrupted"), "{err}");
    assert_eq!(
        env.gets("never.tar.zst").len(),
        RESUME_ATTEMPTS as usize + 1
    );
    assert!(!fetcher.cache().contains(&target.sha256));
}

#[test]
fn a_server_ignoring_range_makes_the_download_start_over_and_still_verify() {
    let env = Env::new();
    let data = payload(2 << 20, 5);
    let half = data.len() / 2;
    let target = env.publish("norange.tar.zst", &data);
    let cache = env.cache();
    fs::create_dir_all(cache.partial_dir()).unwrap();
    fs::write(cache.partial_path(&target.sha256), &data[..half]).unwrap();
    env.server.set_fault("norange.tar.zst", Fault::IgnoreRange);
    let fetcher = env.fetcher();
    assert_eq!(fetcher.fetch(&target, false).unwrap(), Fetched::Downloaded);
    assert_cached(&cache, &data);
    let gets = env.gets("norange.tar.zst");
    assert_eq!(gets.len(), 1);
    assert_eq!(
        gets[0].range.as_deref(),
        Some(format!("bytes={half}-").as_str())
    );
    assert_eq!(gets[0].status, 200);
}

#[test]
fn a_partial_file_is_never_trusted_a_damaged_one_fails_and_is_deleted() {
    let env = Env::new();
    let data = payload(1 << 20, 6);
    let target = env.publish("damaged.tar.zst", &data);
    let cache = env.cache();
    fs::create_dir_all(cache.partial_dir()).unwrap();
    let mut damaged = data[..1000].to_vec();
    damaged[500] ^= 0xff;
    fs::write(cache.partial_path(&target.sha256), &damaged).unwrap();
    let fetcher = env.fetcher();
    let err = fetcher.fetch(&target, false).unwrap_err();
    assert_eq!(err.hresult(), WU_E_DM_INCORRECTFILEHASH, "{err}");
    assert_nothing_cached(&cache, &target.sha256);
    assert_eq!(
        env.gets("damaged.tar.zst")[0].range.as_deref(),
        Some("bytes=1000-")
    );
    // The next attempt starts from nothing and succeeds.
    assert_eq!(fetcher.fetch(&target, false).unwrap(), Fetched::Downloaded);
    assert_cached(&cache, &data);
}

#[test]
fn a_payload_replaced_on_the_server_fails_with_incorrect_file_hash_and_caches_nothing() {
    let env = Env::new();
    let data = payload(1 << 20, 7);
    let target = env.publish("replaced.tar.zst", &data);
    // Same length, other bytes: only the digest can tell.
    env.server.set_fault(
        "replaced.tar.zst",
        Fault::Replace(payload(data.len(), 8).into()),
    );
    let fetcher = env.fetcher();
    let err = fetcher.fetch(&target, false).unwrap_err();
    assert_eq!(err.hresult(), WU_E_DM_INCORRECTFILEHASH, "{err}");
    let message = err.to_string();
    assert!(message.contains(&target.sha256), "{message}");
    assert!(message.contains("retry"), "{message}");
    assert_nothing_cached(fetcher.cache(), &target.sha256);

    // Longer than the signed length: refused from its Content-Length, before the body.
    env.server.set_fault(
        "replaced.tar.zst",
        Fault::Replace(payload(data.len() + 1, 9).into()),
    );
    let err = fetcher.fetch(&target, false).unwrap_err();
    assert_eq!(err.hresult(), WU_E_DM_INCORRECTFILEHASH, "{err}");
    assert_nothing_cached(fetcher.cache(), &target.sha256);
}

#[test]
fn an_endless_body_is_refused_after_the_signed_length_and_nothing_is_cached() {
    let env = Env::new();
    let data = payload(256 << 10, 10);
    let target = env.publish("endless.tar.zst", &data);
    env.server.set_fault("endless.tar.zst", Fault::Endless);
    let fetcher = env.fetcher();
    let err = fetcher.fetch(&target, false).unwrap_err();
    assert_eq!(err.hresult(), WU_E_DM_INCORRECTFILEHASH, "{err}");
    assert!(err.to_string().contains("more than"), "{err}");
    assert_nothing_cached(fetcher.cache(), &target.sha256);
}

#[test]
fn a_stalled_server_times_out() {
    let env = Env::new();
    let data = payload(1 << 20, 11);
    let drip = env.publish("drip.tar.zst", &data);
    let hang = env.publish("hang.tar.zst", &data);
    env.server.set_fault(
        "drip.tar.zst",
        Fault::Drip {
            chunk: 4096,
            every: Duration::from_secs(3600),
        },
    );
    env.server.set_fault("hang.tar.zst", Fault::Hang);
    let fetcher = env.fetcher_with(stall(1));
    let err = fetcher.fetch(&drip, false).unwrap_err();
    assert_eq!(err.hresult(), WU_E_TIME_OUT, "{err}");
    // What arrived is kept.
    assert_eq!(
        fs::metadata(fetcher.cache().partial_path(&drip.sha256))
            .unwrap()
            .len(),
        4096
    );
    let err = fetcher.fetch(&hang, false).unwrap_err();
    assert_eq!(err.hresult(), WU_E_TIME_OUT, "{err}");
    assert!(!fetcher.cache().contains(&hang.sha256));
    // Timeouts are not retried (the attack would only repeat). The server logs an abandoned
    // response when it notices the client left, so wait for the entries, then count them.
    wait_for("the abandoned requests to be logged", || {
        !env.gets("drip.tar.zst").is_empty() && !env.gets("hang.tar.zst").is_empty()
    });
    assert_eq!(env.gets("drip.tar.zst").len(), 1);
    assert_eq!(env.gets("hang.tar.zst").len(), 1);
}

#[test]
fn http_errors_map_to_their_codes() {
    let env = Env::new();
    let data = payload(1000, 12);
    let mut missing = env.publish("present.tar.zst", &data);
    missing.url = env.server.url().join("targets/missing.tar.zst").unwrap();
    let fetcher = env.fetcher();
    let err = fetcher.fetch(&missing, false).unwrap_err();
    assert_eq!(err.hresult(), WU_E_PT_HTTP_STATUS_NOT_FOUND, "{err}");
    assert!(!fetcher.cache().contains(&missing.sha256));

    let unavailable = env.publish("busy.tar.zst", &payload(1000, 13));
    env.server.set_fault("busy.tar.zst", Fault::Status(503));
    assert_eq!(
        fetcher.fetch(&unavailable, false).unwrap_err().hresult(),
        WU_E_PT_HTTP_STATUS_SERVICE_UNAVAIL
    );

    // Nobody listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut refused = env.publish("x.tar.zst", &data);
    refused.url = Url::parse(&format!("http://127.0.0.1:{port}/x.tar.zst")).unwrap();
    assert_eq!(
        fetcher.fetch(&refused, false).unwrap_err().hresult(),
        WU_E_DM_NONETWORK
    );

    let mut ftp = refused.clone();
    ftp.url = Url::parse("ftp://example.invalid/x").unwrap();
    assert_eq!(
        fetcher.fetch(&ftp, false).unwrap_err().hresult(),
        WU_E_DM_URLNOTAVAILABLE
    );
    let mut bad_digest = refused;
    bad_digest.sha256 = "../../escape".into();
    assert_eq!(
        fetcher.fetch(&bad_digest, false).unwrap_err().hresult(),
        WU_E_DM_UNKNOWNALGORITHM
    );
}

#[test]
fn several_payloads_download_in_parallel_with_progress_adding_up() {
    let env = Env::new();
    let datas: Vec<_> = (0..6)
        .map(|i| payload((1 << 20) + i * 12_345, 20 + i as u64))
        .collect();
    let targets: Vec<_> = datas
        .iter()
        .enumerate()
        .map(|(i, d)| env.publish(&format!("p{i}.tar.zst"), d))
        .collect();
    let seen = Arc::new(Mutex::new(vec![Vec::<FetchEvent>::new(); targets.len()]));
    let log = seen.clone();
    let fetcher = env.fetcher_with(NetworkOptions {
        parallel_downloads: 3,
        ..NetworkOptions::default()
    });
    let results = fetcher.fetch_all(&targets, false, move |i, event| {
        log.lock().unwrap()[i].push(event);
    });
    assert!(
        results.iter().all(|r| matches!(r, Ok(Fetched::Downloaded))),
        "{results:?}"
    );
    for data in &datas {
        assert_cached(fetcher.cache(), data);
    }
    let seen = seen.lock().unwrap();
    let mut total = 0;
    for (events, target) in seen.iter().zip(&targets) {
        let bytes: Vec<u64> = events
            .iter()
            .filter_map(|e| match e {
                FetchEvent::Bytes(n) => Some(*n),
                _ => None,
            })
            .collect();
        assert!(bytes.windows(2).all(|w| w[0] <= w[1]), "bytes went back");
        assert_eq!(bytes.last(), Some(&target.length));
        total += bytes.last().unwrap();
        let phases: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                FetchEvent::Phase(p) => Some(*p),
                _ => None,
            })
            .collect();
        assert_eq!(
            phases,
            [
                DownloadPhase::Initializing,
                DownloadPhase::Downloading,
                DownloadPhase::Verifying
            ]
        );
    }
    assert_eq!(total, targets.iter().map(|t| t.length).sum::<u64>());
    assert_eq!(env.server.request_count(), targets.len());
}

#[test]
fn an_aborted_download_keeps_its_partial_and_a_later_one_resumes_it() {
    let env = Env::new();
    let data = payload(1 << 20, 30);
    let target = env.publish("slow.tar.zst", &data);
    env.server.set_fault(
        "slow.tar.zst",
        Fault::Drip {
            chunk: 8 << 10,
            every: Duration::from_millis(50),
        },
    );
    let fetcher = env.fetcher();
    let received = Arc::new(AtomicU64::new(0));
    let result = std::thread::scope(|scope| {
        let running = scope.spawn(|| {
            let received = received.clone();
            fetcher.fetch_all(std::slice::from_ref(&target), false, move |_, event| {
                if let FetchEvent::Bytes(n) = event {
                    received.store(n, Ordering::SeqCst);
                }
            })
        });
        // The transfer is provably running (bytes arrived, far from all of them) when aborted.
        wait_for("the first bytes", || received.load(Ordering::SeqCst) > 0);
        fetcher.request_abort();
        running.join().unwrap().pop().unwrap()
    });
    assert_eq!(result.unwrap_err().hresult(), WU_E_CALL_CANCELLED);
    let cache = env.cache();
    let kept = fs::metadata(cache.partial_path(&target.sha256))
        .unwrap()
        .len();
    assert!(kept > 0 && kept < data.len() as u64, "kept {kept} bytes");
    assert!(!cache.contains(&target.sha256));
    // An aborted fetcher refuses more work.
    assert_eq!(
        fetcher.fetch(&target, false).unwrap_err().hresult(),
        WU_E_CALL_CANCELLED
    );

    env.server.clear_faults();
    let again = env.fetcher();
    assert_eq!(again.fetch(&target, false).unwrap(), Fetched::Downloaded);
    assert_cached(&cache, &data);
    // The aborted request is logged whenever the server notices; the resumed one is the only
    // one with a range.
    let resumed: Vec<_> = env
        .gets("slow.tar.zst")
        .into_iter()
        .filter(|r| r.range.is_some())
        .collect();
    assert_eq!(resumed.len(), 1, "{resumed:?}");
    let last = &resumed[0];
    assert_eq!(last.range, Some(format!("bytes={kept}-")));
    assert_eq!(last.body_bytes, data.len() as u64 - kept);
}

#[test]
fn two_downloaders_of_one_payload_take_turns_and_never_corrupt_it() {
    let env = Env::new();
    let data = payload(2 << 20, 40);
    let target = env.publish("shared.tar.zst", &data);
    env.server.set_fault(
        "shared.tar.zst",
        Fault::Drip {
            chunk: 256 << 10,
            every: Duration::from_millis(5),
        },
    );
    // Two fetchers, as two processes would have: separate files opened, separate locks.
    let (a, b) = (env.fetcher(), env.fetcher());
    let (ra, rb) = std::thread::scope(|scope| {
        let ta = scope.spawn(|| a.fetch(&target, false));
        let tb = scope.spawn(|| b.fetch(&target, false));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert!(
        ra == Fetched::Downloaded || rb == Fetched::Downloaded,
        "{ra:?} {rb:?}"
    );
    assert_cached(a.cache(), &data);
}

#[test]
fn file_urls_are_copied_with_the_same_resume_and_checks() {
    let env = Env::new();
    let data = payload(3 << 20, 50);
    let target = env.file_target("local.tar.zst", &data);
    let cache = env.cache();
    fs::create_dir_all(cache.partial_dir()).unwrap();
    fs::write(cache.partial_path(&target.sha256), &data[..1 << 20]).unwrap();
    let fetcher = env.fetcher();
    let events = Arc::new(Mutex::new(Vec::new()));
    let log = events.clone();
    let result = fetcher
        .fetch_all(std::slice::from_ref(&target), false, move |_, e| {
            log.lock().unwrap().push(e)
        })
        .pop()
        .unwrap();
    assert_eq!(result.unwrap(), Fetched::Downloaded);
    assert_cached(&cache, &data);
    // Resumed: the first byte count is what the partial file held.
    let first = events.lock().unwrap().iter().find_map(|e| match e {
        FetchEvent::Bytes(n) => Some(*n),
        _ => None,
    });
    assert_eq!(first, Some(1 << 20));
    assert_eq!(env.server.request_count(), 0);

    // A file longer than its signed length is refused; a different one fails its digest.
    let long = env.file_target("long.tar.zst", &payload(1000, 51));
    let short = FetchTarget {
        length: 999,
        ..long.clone()
    };
    assert_eq!(
        fetcher.fetch(&short, false).unwrap_err().hresult(),
        WU_E_DM_INCORRECTFILEHASH
    );
    assert_nothing_cached(&cache, &short.sha256);
    let other = FetchTarget {
        sha256: sha256(b"something else"),
        ..long
    };
    assert_eq!(
        fetcher.fetch(&other, false).unwrap_err().hresult(),
        WU_E_DM_INCORRECTFILEHASH
    );
    assert_nothing_cached(&cache, &other.sha256);

    let missing = FetchTarget {
        url: Url::from_file_path(Path::new("/nonexistent/wua/x.tar.zst")).unwrap(),
        ..target
    };
    let missing = FetchTarget {
        sha256: sha256(b"missing"),
        ..missing
    };
    assert_eq!(
        fetcher.fetch(&missing, false).unwrap_err().hresult(),
        WU_E_PT_HTTP_STATUS_NOT_FOUND
    );
}

// ---------------------------------------------------------------------------------------------
// The WUA object model: UpdateSession::create_update_downloader, UpdateDownloader, DownloadJob

mod common;

use common::{Fixture, UpdateSpec, fixture_id};
use serde_json::json;
use wua::repository::author::{self, InitOptions, PublishOptions};
use wua::service::ServiceSource;
use wua::{
    AgentConfig, CleanUp, DownloadCompletedCallbackArgs, DownloadJob, DownloadPriority,
    DownloadProgress, DownloadProgressChangedCallbackArgs, DownloadResult, NoCallback,
    OperationResultCode, UpdateCollection, UpdateDownloader, UpdateSession,
};

/// Text that compresses badly, so payloads keep roughly its size.
fn noise(bytes: usize, seed: u64) -> String {
    hex::encode(payload(bytes / 2, seed))
}

/// Four updates: a bundle of one part, a big one, a small one.
fn catalog() -> common::Env {
    Fixture::new()
        .update(UpdateSpec::files("Part").file("opt/part.txt", &noise(64 << 10, 60)))
        .update(
            UpdateSpec::files("Bundle")
                .file("opt/bundle.txt", &noise(32 << 10, 61))
                .set("bundled_updates", json!([fixture_id(0).to_string()])),
        )
        .update(UpdateSpec::files("Big").file("opt/big.txt", &noise(1 << 20, 62)))
        .update(UpdateSpec::files("Small").file("opt/small.txt", "small"))
        .update(
            UpdateSpec::files("Elsewhere")
                .file("opt/elsewhere.txt", "not for this machine")
                .set(
                    "applicability",
                    json!({ "is_installable": { "file_exists": "etc/absent" } }),
                ),
        )
        .build()
}

/// The fixture's catalog published as a signed repository, served over HTTP.
struct Service {
    env: common::Env,
    publisher: TempDir,
    server: TestServer,
}

impl Service {
    fn new() -> Service {
        let env = catalog();
        let publisher = tempfile::tempdir().unwrap();
        let (keys, repo) = (publisher.path().join("keys"), publisher.path().join("repo"));
        author::generate_keys(&keys).unwrap();
        author::init_repository(&repo, &keys, &InitOptions::from_now()).unwrap();
        author::publish(
            &repo,
            &keys,
            &env.catalog_dir(),
            &PublishOptions::from_now(),
        )
        .unwrap();
        let server = TestServer::start(&repo);
        let service = Service {
            env,
            publisher,
            server,
        };
        service
            .session()
            .create_update_service_manager()
            .add_service(
                "test",
                ServiceSource::Url(service.server.url()),
                &service.publisher.path().join("repo/metadata/1.root.json"),
            )
            .unwrap();
        // The first search reads the signed metadata; sessions see its catalog from then on.
        service
            .session()
            .create_update_searcher()
            .search("IsInstalled = 0")
            .unwrap();
        service
    }

    fn session(&self) -> UpdateSession {
        UpdateSession::open(AgentConfig {
            catalog_dir: None,
            ..self.env.config()
        })
        .unwrap()
    }

    /// The updates with these titles, as a search of the service returns them.
    fn updates(&self, session: &UpdateSession, titles: &[&str]) -> UpdateCollection {
        let found = session
            .create_update_searcher()
            .search("IsInstalled = 0 or IsInstalled = 1")
            .unwrap()
            .updates;
        let mut out = UpdateCollection::new();
        for title in titles {
            let update = found
                .iter()
                .find(|u| u.title() == *title)
                .unwrap_or_else(|| panic!("the search did not return {title}"));
            out.add(update.clone()).unwrap();
        }
        out
    }

    /// The GET requests for the payload of the update with this title.
    fn payload_gets(
        &self,
        session: &UpdateSession,
        title: &str,
    ) -> Vec<wua_test_server::RequestLog> {
        let sha = self.sha(session, title);
        self.server
            .requests()
            .into_iter()
            .filter(|r| r.method == "GET" && r.path.ends_with(&format!("{sha}.tar.zst")))
            .collect()
    }

    fn sha(&self, session: &UpdateSession, title: &str) -> String {
        let all = session.catalog_updates().unwrap();
        let update = all.iter().find(|u| u.title() == title).unwrap();
        update.payload().sha256.clone()
    }

    fn size(&self, session: &UpdateSession, title: &str) -> u64 {
        let all = session.catalog_updates().unwrap();
        all.iter()
            .find(|u| u.title() == title)
            .unwrap()
            .payload()
            .size
    }

    fn cache(&self) -> PayloadCache {
        PayloadCache::new(&self.env.state_dir())
    }
}

fn downloader(session: &UpdateSession, updates: &UpdateCollection) -> UpdateDownloader {
    let mut downloader = session.create_update_downloader();
    downloader.set_updates(updates);
    downloader
}

fn codes(result: &DownloadResult) -> Vec<(OperationResultCode, HResult)> {
    result
        .update_results
        .iter()
        .map(|r| (r.result_code, r.hresult))
        .collect()
}

use OperationResultCode::{Aborted, Failed, Succeeded, SucceededWithErrors};

/// What the callbacks of one job saw, in order.
#[derive(Debug)]
enum Seen {
    Progress(DownloadProgress),
    Completed { is_completed: bool, state: String },
}

#[test]
fn updates_download_from_a_signed_service_with_progress_and_callbacks() {
    let service = Service::new();
    let session = service.session();
    let titles = ["Bundle", "Big", "Small"];
    let updates = service.updates(&session, &titles);
    let downloader = downloader(&session, &updates);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (progress_log, completion_log) = (seen.clone(), seen.clone());
    let job = downloader
        .begin_download(
            move |_: &DownloadJob<String>, args: &DownloadProgressChangedCallbackArgs| {
                progress_log
                    .lock()
                    .unwrap()
                    .push(Seen::Progress(args.progress.clone()))
            },
            move |job: &DownloadJob<String>, _: &DownloadCompletedCallbackArgs| {
                completion_log.lock().unwrap().push(Seen::Completed {
                    is_completed: job.is_completed(),
                    state: job.async_state().clone(),
                })
            },
            "nightly".to_string(),
        )
        .unwrap();
    assert_eq!(job.updates().len(), 3);
    let result = downloader.end_download(&job).unwrap();
    assert_eq!((result.result_code, result.hresult), (Succeeded, S_OK));
    assert_eq!(codes(&result), vec![(Succeeded, S_OK); 3]);
    assert_eq!(job.clean_up(), CleanUp::Released);

    // Every payload, the bundled part's included, is verified in the cache.
    let cache = service.cache();
    for title in ["Part", "Bundle", "Big", "Small"] {
        assert!(cache.contains(&service.sha(&session, title)), "{title}");
    }

    // Progress: percentages never decrease, byte totals add up, completion comes last, once.
    let seen = seen.lock().unwrap();
    let total: u64 = ["Part", "Bundle", "Big", "Small"]
        .iter()
        .map(|t| service.size(&session, t))
        .sum();
    let progress: Vec<&DownloadProgress> = seen
        .iter()
        .filter_map(|s| match s {
            Seen::Progress(p) => Some(p),
            Seen::Completed { .. } => None,
        })
        .collect();
    assert!(!progress.is_empty());
    assert!(
        progress
            .windows(2)
            .all(|w| w[0].percent_complete <= w[1].percent_complete),
        "percent_complete decreased"
    );
    for p in &progress {
        assert_eq!(p.total_bytes_to_download, total);
        assert!(p.total_bytes_downloaded <= total);
        assert!(p.current_update_bytes_downloaded <= p.current_update_bytes_to_download);
        assert!(p.current_update_percent_complete <= 100 && p.percent_complete <= 100);
        assert!(p.current_update_index < 3);
    }
    let last = progress.last().unwrap();
    assert_eq!(last.percent_complete, 100);
    assert_eq!(last.total_bytes_downloaded, total);
    assert!(matches!(
        seen.last(),
        Some(Seen::Completed { is_completed: true, state }) if state == "nightly"
    ));
    assert_eq!(
        seen.iter()
            .filter(|s| matches!(s, Seen::Completed { .. }))
            .count(),
        1
    );
    let final_progress = job.get_progress();
    assert_eq!(final_progress.update_results, result.update_results);
    assert_eq!(final_progress.percent_complete, 100);

    // Already in the cache: nothing is transferred again.
    let requests = service.server.request_count();
    let again = downloader.download().unwrap();
    assert_eq!(codes(&again), vec![(Succeeded, WU_S_ALREADY_DOWNLOADED); 3]);
    assert_eq!(service.server.request_count(), requests);

    // Forced: downloaded and verified again.
    let mut forced = session.create_update_downloader();
    forced.set_updates(&service.updates(&session, &["Small"]));
    forced.set_is_forced(true);
    assert_eq!(codes(&forced.download().unwrap()), [(Succeeded, S_OK)]);
    assert_eq!(service.payload_gets(&session, "Small").len(), 2);
}

#[test]
fn a_replaced_payload_fails_its_update_only() {
    let service = Service::new();
    let session = service.session();
    let sha = service.sha(&session, "Big");
    service.server.set_fault(
        &format!("{sha}.tar.zst"),
        Fault::Replace(payload(service.size(&session, "Big") as usize, 63).into()),
    );
    let updates = service.updates(&session, &["Big", "Small"]);
    let result = downloader(&session, &updates).download().unwrap();
    assert_eq!(
        (result.result_code, result.hresult),
        (SucceededWithErrors, WU_S_UPDATE_ERROR)
    );
    assert_eq!(
        codes(&result),
        [(Failed, WU_E_DM_INCORRECTFILEHASH), (Succeeded, S_OK)]
    );
    assert_nothing_cached(&service.cache(), &sha);
}

#[test]
fn an_aborted_download_job_keeps_its_partial_and_the_next_one_resumes() {
    let service = Service::new();
    let session = service.session();
    let sha = service.sha(&session, "Big");
    let size = service.size(&session, "Big");
    service.server.set_fault(
        &format!("{sha}.tar.zst"),
        Fault::Drip {
            chunk: 8 << 10,
            every: Duration::from_millis(50),
        },
    );
    let updates = service.updates(&session, &["Big"]);
    let downloader = downloader(&session, &updates);
    let job = downloader
        .begin_download(NoCallback, NoCallback, ())
        .unwrap();
    // Provably running: bytes arrived, far from all of them.
    wait_for("the first bytes", || {
        job.get_progress().current_update_bytes_downloaded > 0
    });
    let progress = job.get_progress();
    assert_eq!(progress.current_update_bytes_to_download, size);
    assert_eq!(
        progress.current_update_download_phase,
        DownloadPhase::Downloading
    );
    assert_eq!(
        progress.update_results[0].result_code,
        OperationResultCode::InProgress
    );
    job.request_abort();
    job.request_abort(); // idempotent
    let result = downloader.end_download(&job).unwrap();
    assert_eq!(
        (result.result_code, result.hresult),
        (Aborted, WU_E_CALL_CANCELLED)
    );
    assert_eq!(codes(&result), [(Aborted, WU_E_CALL_CANCELLED)]);
    job.request_abort(); // harmless after completion
    let cache = service.cache();
    let kept = fs::metadata(cache.partial_path(&sha)).unwrap().len();
    assert!(kept > 0 && kept < size, "kept {kept} of {size}");
    assert!(!cache.contains(&sha));

    service.server.clear_faults();
    let result = downloader.download().unwrap();
    assert_eq!(codes(&result), [(Succeeded, S_OK)]);
    assert!(cache.contains(&sha));
    let resumed: Vec<_> = service
        .payload_gets(&session, "Big")
        .into_iter()
        .filter(|r| r.range.is_some())
        .collect();
    assert_eq!(resumed.len(), 1, "{resumed:?}");
    assert_eq!(resumed[0].range, Some(format!("bytes={kept}-")));
    assert_eq!(resumed[0].status, 206);
}

#[test]
fn a_stalled_service_times_out_and_a_missing_target_is_not_found() {
    let service = Service::new();
    let session = service.session();
    let small = service.sha(&session, "Small");
    let big = service.sha(&session, "Big");
    service
        .server
        .set_fault(&format!("{small}.tar.zst"), Fault::Hang);
    service
        .server
        .set_fault(&format!("{big}.tar.zst"), Fault::Status(404));
    let updates = service.updates(&session, &["Small", "Big"]);
    let mut downloader = downloader(&session, &updates);
    downloader.set_network_options(NetworkOptions {
        stall_timeout: Duration::from_secs(1),
        ..NetworkOptions::default()
    });
    let result = downloader.download().unwrap();
    assert_eq!(
        (result.result_code, result.hresult),
        (Failed, WU_E_ALL_UPDATES_FAILED)
    );
    assert_eq!(
        codes(&result),
        [
            (Failed, WU_E_TIME_OUT),
            (Failed, WU_E_PT_HTTP_STATUS_NOT_FOUND)
        ]
    );
}

#[test]
fn without_is_forced_installed_and_inapplicable_updates_are_not_downloaded() {
    let env = catalog();
    let session = env.session();
    let installed = env.installer(&session, &["Small"]).install().unwrap();
    assert_eq!(installed.result_code, Succeeded);
    let session = env.session();
    let updates = env.updates(&session, &["Small", "Elsewhere", "Big"]);
    let mut downloader = downloader(&session, &updates);
    let result = downloader.download().unwrap();
    assert_eq!(
        codes(&result),
        [
            (Succeeded, WU_S_ALREADY_INSTALLED),
            (Failed, WU_E_NOT_APPLICABLE),
            // A local catalog's payload is already on this machine: verified where it is.
            (Succeeded, WU_S_ALREADY_DOWNLOADED),
        ]
    );
    downloader.set_is_forced(true);
    assert_eq!(
        codes(&downloader.download().unwrap()),
        [(Succeeded, WU_S_ALREADY_DOWNLOADED); 3]
    );
}

#[test]
fn a_local_catalog_payload_is_verified_in_place() {
    let env = catalog();
    let session = env.session();
    let updates = env.updates(&session, &["Small", "Big"]);
    let downloader = downloader(&session, &updates);
    let path = env.payload_path("Small");
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&path, &bytes).unwrap();
    fs::remove_file(env.payload_path("Big")).unwrap();
    let result = downloader.download().unwrap();
    assert_eq!(
        codes(&result),
        [
            (Failed, WU_E_DM_INCORRECTFILEHASH),
            (Failed, WU_E_DM_URLNOTAVAILABLE)
        ]
    );
    // The catalog's own file is reported, not deleted: it is not the cache's.
    assert!(path.exists());
}

#[test]
fn downloader_properties_and_end_download_rules() {
    let env = catalog();
    let session = env.session();
    let mut downloader = session.create_update_downloader();
    assert_eq!(downloader.client_application_id(), "Unknown");
    assert_eq!(downloader.priority(), DownloadPriority::Normal);
    assert!(!downloader.is_forced());
    assert!(downloader.updates().is_none());
    // No updates: the call fails (`iupdatedownloader-download` remarks).
    assert_eq!(downloader.download().unwrap_err().hresult(), WU_E_NO_UPDATE);
    downloader.set_updates(&UpdateCollection::new());
    assert_eq!(
        downloader
            .begin_download(NoCallback, NoCallback, ())
            .unwrap_err()
            .hresult(),
        WU_E_NO_UPDATE
    );

    // Updates are a snapshot: changing the caller's collection later changes nothing.
    let mut mine = env.updates(&session, &["Small", "Big"]);
    downloader.set_updates(&mine);
    mine.remove_at(0).unwrap();
    assert_eq!(downloader.updates().unwrap().len(), 2);
    assert!(downloader.updates().unwrap().is_read_only());
    downloader.set_client_application_id("tests");
    downloader.set_priority(DownloadPriority::Low);
    assert_eq!(
        DownloadPriority::from_value(4),
        Some(DownloadPriority::ExtraHigh)
    );
    assert_eq!(DownloadPhase::Verifying.value(), 3);

    let job = downloader
        .begin_download(NoCallback, NoCallback, 7u32)
        .unwrap();
    let other = session.create_update_downloader();
    assert_eq!(
        other.end_download(&job).unwrap_err().hresult(),
        WU_E_INVALID_OPERATION
    );
    let result = downloader.end_download(&job).unwrap();
    assert_eq!(result.result_code, Succeeded);
    assert_eq!(
        downloader.end_download(&job).unwrap_err().hresult(),
        WU_E_INVALID_OPERATION
    );
    assert_eq!(*job.async_state(), 7);
    assert!(job.is_completed());
    assert!(job.wait_timeout(Duration::ZERO));
    assert_eq!(
        result.get_update_result(2).unwrap_err().hresult(),
        WU_E_INVALIDINDEX
    );
    assert_eq!(
        job.get_progress()
            .get_update_result(5)
            .unwrap_err()
            .hresult(),
        WU_E_INVALIDINDEX
    );
    assert_eq!(result.get_update_result(1).unwrap().result_code, Succeeded);
}

#[test]
fn clean_up_inside_a_callback_is_marked_for_disconnect_and_no_callback_follows() {
    let env = catalog();
    let session = env.session();
    let downloader = downloader(&session, &env.updates(&session, &["Small", "Big"]));
    let calls = Arc::new(Mutex::new(Vec::new()));
    let (log, after) = (calls.clone(), calls.clone());
    let job = downloader
        .begin_download(
            move |job: &DownloadJob<()>, _: &DownloadProgressChangedCallbackArgs| {
                let outcome = job.clean_up();
                log.lock()
                    .unwrap()
                    .push(format!("progress:{:?}", outcome.hresult()));
            },
            move |_: &DownloadJob<()>, _: &DownloadCompletedCallbackArgs| {
                after.lock().unwrap().push("completed".to_string())
            },
            (),
        )
        .unwrap();
    job.wait();
    assert_eq!(job.clean_up(), CleanUp::Released);
    let calls = calls.lock().unwrap();
    assert_eq!(
        *calls,
        [format!("progress:{WU_S_MARKED_FOR_DISCONNECT:?}")],
        "the callbacks were released after the first one asked"
    );
    assert_eq!(
        downloader.end_download(&job).unwrap().result_code,
        Succeeded
    );
}

#[test]
fn a_panicking_callback_does_not_stop_the_job() {
    let env = catalog();
    let session = env.session();
    let downloader = downloader(&session, &env.updates(&session, &["Small", "Big"]));
    let completed = Arc::new(AtomicU64::new(0));
    let flag = completed.clone();
    let job = downloader
        .begin_download(
            |_: &DownloadJob<()>, _: &DownloadProgressChangedCallbackArgs| {
                panic!("a progress callback panics")
            },
            move |_: &DownloadJob<()>, _: &DownloadCompletedCallbackArgs| {
                flag.fetch_add(1, Ordering::SeqCst);
            },
            (),
        )
        .unwrap();
    let result = downloader.end_download(&job).unwrap();
    assert_eq!(result.result_code, Succeeded);
    assert_eq!(job.clean_up(), CleanUp::Released);
    assert_eq!(completed.load(Ordering::SeqCst), 1);
}

#[test]
fn the_completion_future_resolves_and_clean_up_releases_the_callbacks() {
    let env = catalog();
    let session = env.session();
    let downloader = downloader(&session, &env.updates(&session, &["Small"]));
    // The callback holds the job (the cycle the guide warns about); clean_up breaks it.
    let holder: Arc<Mutex<Option<DownloadJob<()>>>> = Arc::new(Mutex::new(None));
    let held = holder.clone();
    let job = downloader
        .begin_download(
            NoCallback,
            move |job: &DownloadJob<()>, _: &DownloadCompletedCallbackArgs| {
                *held.lock().unwrap() = Some(job.clone());
            },
            (),
        )
        .unwrap();
    futures::executor::block_on(job.completion());
    assert!(job.is_completed());
    assert_eq!(job.clean_up(), CleanUp::Released);
    assert!(holder.lock().unwrap().is_some());
    assert_eq!(Arc::strong_count(&holder), 1, "the callback was released");
}
