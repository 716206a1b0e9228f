//! End to end: `wua service`, `wua download` and `wua install` against a signed repository
//! served by a real HTTP server on loopback, with faults injected (TUF attacks, cut and
//! replaced payloads), and offline use from a directory and an exported bundle.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use assert_cmd::cargo::CommandCargoExt;
use serde_json::Value;
use tempfile::TempDir;
use wua::repository::author::{self, InitOptions, PublishOptions};
use wua_test_server::{Fault, TestServer};

use common::{Output, repo};

/// A publisher's repository (keys, signed metadata, targets) built from the example sources.
struct Publisher {
    dir: TempDir,
}

impl Publisher {
    fn new() -> Publisher {
        let dir = tempfile::tempdir().unwrap();
        let p = Publisher { dir };
        author::generate_keys(&p.keys()).unwrap();
        author::init_repository(&p.repo(), &p.keys(), &InitOptions::from_now()).unwrap();
        p.publish(&repo().join("examples/catalog"));
        p
    }

    fn keys(&self) -> PathBuf {
        self.dir.path().join("keys")
    }

    fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    fn root(&self) -> PathBuf {
        self.repo().join("metadata/1.root.json")
    }

    fn publish(&self, catalog: &Path) -> author::PublishSummary {
        author::publish(
            &self.repo(),
            &self.keys(),
            catalog,
            &PublishOptions::from_now(),
        )
        .unwrap()
    }

    /// The target file of the payload with this SHA-256 (consistent snapshots: `<sha>.<name>`).
    fn payload_file(&self, sha256: &str) -> PathBuf {
        self.repo()
            .join("targets")
            .join(format!("{sha256}.{sha256}.tar.zst"))
    }
}

/// A machine using services: no `--catalog`.
struct Machine {
    dir: TempDir,
}

impl Machine {
    fn new() -> Machine {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("boot_id"), "boot-1\n").unwrap();
        fs::create_dir(dir.path().join("root")).unwrap();
        Machine { dir }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn cache(&self) -> PathBuf {
        self.state().join("cache/payloads")
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = Command::cargo_bin("wua")
            .unwrap()
            .arg("--root")
            .arg(self.root())
            .arg("--state-dir")
            .arg(self.state())
            .arg("--boot-id-file")
            .arg(self.dir.path().join("boot_id"))
            .args(["--stall-timeout", "2"])
            .args(args)
            .env("HOME", self.dir.path())
            .env_remove("WUA_LOG")
            .env_remove("WUA_CATALOG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn json(&self, args: &[&str]) -> (i32, Value) {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        let value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", out.stdout, out.stderr));
        (out.code, value)
    }

    fn add(&self, name: &str, location: &str, root: &Path) {
        let out = self.run(&[
            "service",
            "add",
            name,
            location,
            "--trusted-root",
            root.to_str().unwrap(),
        ]);
        assert_eq!(out.code, 0, "{out:?}");
    }

    fn cached(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.cache())
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn installed_titles(&self) -> Vec<String> {
        let (_, list) = self.json(&["--offline", "list", "--installed"]);
        list["updates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["title"].as_str().unwrap().to_string())
            .collect()
    }
}

/// The example catalog, as published.
fn catalog_json() -> Value {
    serde_json::from_slice(&fs::read(repo().join("examples/catalog/catalog.json")).unwrap())
        .unwrap()
}

/// The SHA-256 of the payload of the update with this KB number in the example catalog.
fn payload_of(kb: &str) -> String {
    catalog_json()["updates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| {
            u["kb_article_ids"]
                .as_array()
                .is_some_and(|k| k.iter().any(|x| x == kb))
        })
        .unwrap_or_else(|| panic!("KB{kb} in the example catalog"))["payload"]["sha256"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_service_over_http_is_searched_downloaded_and_installed_from() {
    let p = Publisher::new();
    let server = TestServer::start(p.repo());
    let m = Machine::new();
    m.add("corp", server.url().as_str(), &p.root());

    let (code, list) = m.json(&["service", "list"]);
    assert_eq!(code, 0);
    let services = list["services"].as_array().unwrap();
    assert_eq!(services.len(), 1);
    assert_eq!(services[0]["name"], "corp");
    assert_eq!(services[0]["is_default_au_service"], true);
    let service_id = services[0]["service_id"].as_str().unwrap().to_string();

    // A search refreshes the signed metadata over HTTP.
    let (code, found) = m.json(&["search"]);
    assert_eq!(code, 0, "{found}");
    assert!(!found["updates"].as_array().unwrap().is_empty());
    let fetched: Vec<String> = server.requests().iter().map(|r| r.path.clone()).collect();
    assert!(
        fetched.iter().any(|p| p.ends_with("timestamp.json")),
        "{fetched:?}"
    );
    assert!(m.cached().is_empty(), "a search downloads no payload");

    // Download: verified payloads land in the content-addressed cache.
    let (code, dl) = m.json(&["download", "KB5000001"]);
    assert_eq!(code, 0, "{dl}");
    assert_eq!(dl["updates"][0]["result_code"], "succeeded");
    let sha = payload_of("5000001");
    assert_eq!(m.cached(), vec![format!("{sha}.tar.zst")]);
    // Downloading again transfers nothing.
    let before = server.request_count();
    let (code, again) = m.json(&["download", "KB5000001"]);
    assert_eq!(code, 0);
    assert_eq!(
        again["updates"][0]["hresult"]["name"],
        "WU_S_ALREADY_DOWNLOADED"
    );
    assert!(
        server.requests()[before..]
            .iter()
            .all(|r| !r.path.contains(&sha)),
        "nothing re-fetched"
    );

    // Install fetches what is missing first, then installs.
    let (code, run) = m.json(&["install", "KB5000001", "KB5000002"]);
    assert_eq!(code, 0, "{run}");
    assert!(m.root().join("usr/local/bin/hello").exists());
    assert!(
        m.cached()
            .contains(&format!("{}.tar.zst", payload_of("5000002")))
    );

    // History names the service the update came from.
    let (_, history) = m.json(&["history"]);
    let entry = &history["entries"][0];
    assert_eq!(entry["service_id"], service_id.as_str(), "{entry}");
}

#[test]
fn offline_use_never_contacts_the_service() {
    let p = Publisher::new();
    let server = TestServer::start(p.repo());
    let m = Machine::new();
    m.add("corp", server.url().as_str(), &p.root());
    // Before any refresh there is nothing verified to read offline.
    let out = m.run(&["--offline", "search"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("search online first"), "{}", out.stderr);
    assert_eq!(server.request_count(), 0);

    assert_eq!(m.run(&["service", "refresh"]).code, 0);
    let after_refresh = server.request_count();
    let (code, found) = m.json(&["--offline", "search"]);
    assert_eq!(code, 0, "{found}");
    assert!(!found["updates"].as_array().unwrap().is_empty());
    assert_eq!(server.request_count(), after_refresh, "offline: no request");
}

#[test]
fn an_exported_bundle_works_with_no_server_at_all() {
    let p = Publisher::new();
    let m = Machine::new();
    let bundle = m.dir.path().join("corp.tar");
    let exported = m.run(&[
        "catalog",
        "export",
        p.repo().to_str().unwrap(),
        bundle.to_str().unwrap(),
    ]);
    assert_eq!(exported.code, 0, "{exported:?}");
    let out = m.run(&[
        "service",
        "add",
        "offline",
        bundle.to_str().unwrap(),
        "--bundle",
        "--trusted-root",
        p.root().to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    // The bundle was copied: the publisher's files can go away.
    drop(p);
    let (code, run) = m.json(&["install", "KB5000001"]);
    assert_eq!(code, 0, "{run}");
    assert_eq!(m.installed_titles(), vec!["Hello Tools 1.0".to_string()]);
}

#[test]
fn a_directory_service_is_read_without_a_server() {
    let p = Publisher::new();
    let m = Machine::new();
    m.add("local", p.repo().to_str().unwrap(), &p.root());
    let (code, run) = m.json(&["install", "KB5000001"]);
    assert_eq!(code, 0, "{run}");
    assert!(m.root().join("usr/local/bin/hello").exists());
}

#[test]
fn an_interrupted_download_resumes_with_a_range_request() {
    let p = Publisher::new();
    let sha = payload_of("5000001");
    let size = fs::metadata(p.payload_file(&sha)).unwrap().len();
    let server = TestServer::start(p.repo());
    server.set_fault(
        &format!("{sha}.{sha}.tar.zst"),
        Fault::CutOnceAfter(size / 2),
    );
    let m = Machine::new();
    m.add("corp", server.url().as_str(), &p.root());
    let (code, dl) = m.json(&["download", "KB5000001"]);
    assert_eq!(code, 0, "{dl}");
    assert_eq!(m.cached(), vec![format!("{sha}.tar.zst")]);
    let gets: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path.contains(&sha))
        .collect();
    assert!(gets.len() >= 2, "{gets:?}");
    assert_eq!(gets[0].body_bytes, size / 2, "the first transfer was cut");
    assert_eq!(
        gets[1].range.as_deref(),
        Some(format!("bytes={}-", size / 2).as_str()),
        "the second asks for the rest only"
    );
}

#[test]
fn a_replaced_payload_is_refused_and_nothing_is_installed_or_cached() {
    let p = Publisher::new();
    let sha = payload_of("5000001");
    let server = TestServer::start(p.repo());
    // Arbitrary software: the server hands out other bytes for the signed payload.
    let evil = fs::read(p.payload_file(&payload_of("5000002"))).unwrap();
    server.set_fault(&format!("{sha}.{sha}.tar.zst"), Fault::Replace(evil.into()));
    let m = Machine::new();
    m.add("corp", server.url().as_str(), &p.root());
    let (code, run) = m.json(&["install", "KB5000001"]);
    assert_eq!(code, 1, "{run}");
    let outcome = &run["updates"][0];
    assert_eq!(outcome["result_code"], "failed", "{run}");
    assert_eq!(outcome["hresult"]["name"], "WU_E_DM_NOTDOWNLOADED", "{run}");
    assert_eq!(
        outcome["download_hresult"]["name"], "WU_E_DM_INCORRECTFILEHASH",
        "{run}"
    );
    assert!(m.cached().is_empty(), "nothing cached as valid");
    assert!(m.installed_titles().is_empty());
    assert!(!m.root().join("usr/local/bin/hello").exists());
}

#[test]
fn a_rolled_back_timestamp_is_refused() {
    let p = Publisher::new();
    let server = TestServer::start(p.repo());
    let m = Machine::new();
    m.add("corp", server.url().as_str(), &p.root());
    let old_timestamp = fs::read(p.repo().join("metadata/timestamp.json")).unwrap();
    assert_eq!(m.run(&["service", "refresh"]).code, 0);
    // The publisher releases again; the machine sees the new version.
    p.publish(&repo().join("examples/catalog"));
    assert_eq!(m.run(&["service", "refresh"]).code, 0);
    // An attacker replays the old timestamp.
    server.set_fault("timestamp.json", Fault::Replace(old_timestamp.into()));
    let (code, err) = m.json(&["search"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        err["error"]["hresult"]["name"], "TRUST_E_SUBJECT_NOT_TRUSTED",
        "{err}"
    );
    // The machine still trusts the newest metadata it verified.
    server.clear_faults();
    assert_eq!(m.run(&["search"]).code, 0);
}

#[test]
fn a_tampered_catalog_is_refused() {
    let p = Publisher::new();
    let server = TestServer::start(p.repo());
    let sha = wua_sha256(&fs::read(repo().join("examples/catalog/catalog.json")).unwrap());
    let mut forged = catalog_json();
    forged["name"] = Value::from("forged");
    server.set_fault(
        &format!("{sha}.catalog.json"),
        Fault::Replace(serde_json::to_vec(&forged).unwrap().into()),
    );
    let m = Machine::new();
    m.add("corp", server.url().as_str(), &p.root());
    let (code, err) = m.json(&["search"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        err["error"]["hresult"]["name"], "WU_E_DM_INCORRECTFILEHASH",
        "{err}"
    );
}

#[test]
fn services_are_chosen_by_name_and_removed() {
    let p1 = Publisher::new();
    let p2 = Publisher::new();
    let m = Machine::new();
    m.add("first", p1.repo().to_str().unwrap(), &p1.root());
    m.add("second", p2.repo().to_str().unwrap(), &p2.root());
    // The second is not the default; --service picks it.
    let (_, list) = m.json(&["service", "list"]);
    assert_eq!(list["services"][1]["is_default_au_service"], false);
    assert_eq!(m.run(&["--service", "second", "search"]).code, 0);
    assert_eq!(m.run(&["service", "default", "second"]).code, 0);
    let (_, list) = m.json(&["service", "list"]);
    assert_eq!(list["services"][1]["is_default_au_service"], true);
    // The name is unique.
    let dup = m.run(&[
        "service",
        "add",
        "first",
        p1.repo().to_str().unwrap(),
        "--trusted-root",
        p1.root().to_str().unwrap(),
    ]);
    assert_eq!(dup.code, 64, "{dup:?}");
    assert!(dup.stderr.contains("already registered"), "{}", dup.stderr);
    // A root of another publisher does not verify this repository.
    m.add("mixed", p1.repo().to_str().unwrap(), &p2.root());
    let out = m.run(&["--service", "mixed", "search"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("TRUST_E_BAD_DIGEST"), "{}", out.stderr);

    assert_eq!(m.run(&["service", "remove", "second"]).code, 0);
    let (_, list) = m.json(&["service", "list"]);
    let names: Vec<&str> = list["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["first", "mixed"]);
    assert_eq!(list["services"][0]["is_default_au_service"], true);
    let gone = m.run(&["--service", "second", "search"]);
    assert_eq!(gone.code, 64, "{gone:?}");
}

#[test]
fn bad_service_input_is_named() {
    let p = Publisher::new();
    let m = Machine::new();
    let missing = m.run(&[
        "service",
        "add",
        "x",
        p.repo().to_str().unwrap(),
        "--trusted-root",
        "/nonexistent/root.json",
    ]);
    assert_eq!(missing.code, 64, "{missing:?}");
    assert!(
        missing.stderr.contains("/nonexistent/root.json"),
        "{}",
        missing.stderr
    );
    let not_repo = m.run(&[
        "service",
        "add",
        "x",
        m.dir.path().to_str().unwrap(),
        "--trusted-root",
        p.root().to_str().unwrap(),
    ]);
    assert_eq!(not_repo.code, 64, "{not_repo:?}");
    assert!(
        not_repo.stderr.contains("not a signed repository"),
        "{}",
        not_repo.stderr
    );
    let scheme = m.run(&[
        "service",
        "add",
        "x",
        "ftp://example.invalid/repo",
        "--trusted-root",
        p.root().to_str().unwrap(),
    ]);
    assert_eq!(scheme.code, 64, "{scheme:?}");
    // A state directory that was used (the failed adds opened it) never turns into the demo:
    // with no service, a search says how to add one.
    let (code, list) = m.json(&["service", "list"]);
    assert_eq!(code, 0);
    assert_eq!(list["services"].as_array().unwrap().len(), 0, "{list}");
    let none = m.run(&["search"]);
    assert_eq!(none.code, 64, "{none:?}");
    assert!(none.stderr.contains("wua service add"), "{}", none.stderr);
}

fn wua_sha256(bytes: &[u8]) -> String {
    hex_lower(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_demo_in_a_given_state_directory_needs_a_root_of_its_own() {
    let m = Machine::new();
    let out = Command::cargo_bin("wua")
        .unwrap()
        .args(["list", "--state-dir"])
        .arg(m.state())
        .env("HOME", m.dir.path())
        .env("XDG_CACHE_HOME", m.dir.path().join("cache"))
        .env_remove("WUA_CATALOG")
        .env_remove("WUA_ROOT")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs --root"),
        "{out:?}"
    );
    assert!(!m.state().exists(), "nothing was created");
}
