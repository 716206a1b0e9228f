//! `wua catalog keygen|init|publish|add|sign` from the command line: the publisher's round
//! trip with `--json`, bad input (exit 64, naming the input), and the freshness of the committed
//! example repository.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use assert_cmd::cargo::CommandCargoExt;
use serde_json::Value;

use common::repo;

/// Every role of the example repository expires then (crates/wua/examples/build-catalog.rs).
const EXAMPLE_EXPIRES: &str = "2036-01-01T00:00:00Z";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `wua ARGS` in `dir` (relative paths are relative to it).
fn wua(dir: &Path, args: &[&str]) -> Run {
    let out = Command::cargo_bin("wua")
        .unwrap()
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env_remove("WUA_LOG")
        .env_remove("WUA_CATALOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `wua --json ARGS`, expecting success and one JSON document.
fn json(dir: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let run = wua(dir, &all);
    assert_eq!(run.code, 0, "wua {all:?}: {}{}", run.stdout, run.stderr);
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", run.stdout, run.stderr))
}

/// Expects exit 64 (bad input), with `needle` in the message.
fn bad_input(dir: &Path, args: &[&str], needle: &str) {
    let run = wua(dir, args);
    assert_eq!(run.code, 64, "wua {args:?}: {}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(needle),
        "wua {args:?}: the message does not name {needle:?}: {}",
        run.stderr
    );
}

/// Every file under `dir`, with its bytes.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                out.insert(
                    path.strip_prefix(base).unwrap().to_path_buf(),
                    fs::read(&path).unwrap(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn metadata(repo_dir: &Path, file: &str) -> Value {
    serde_json::from_slice(&fs::read(repo_dir.join("metadata").join(file)).unwrap()).unwrap()
}

fn versions(report: &Value) -> [u64; 3] {
    [
        report["targets_version"].as_u64().unwrap(),
        report["snapshot_version"].as_u64().unwrap(),
        report["timestamp_version"].as_u64().unwrap(),
    ]
}

#[test]
fn keygen_init_publish_add_sign_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = repo().join("examples/catalog-src");
    let src = src.to_str().unwrap();

    let keys = json(d, &["catalog", "keygen", "keys"]);
    assert_eq!(keys["keys"], "keys");
    assert_eq!(keys["files"].as_array().unwrap().len(), 4);
    assert!(d.join("keys/timestamp.pem").is_file());

    let init = json(
        d,
        &[
            "catalog",
            "init",
            "repo",
            "--keys",
            "keys",
            "--root-expires",
            "2035-06-30",
        ],
    );
    assert_eq!(init["root_version"], 1);
    assert_eq!(init["root_expires"], "2035-06-30T00:00:00Z");
    assert_eq!(init["threshold"], 1);
    assert_eq!(init["trusted_root"], "repo/metadata/root.json");
    assert_eq!(
        fs::read(d.join("repo/metadata/root.json")).unwrap(),
        fs::read(d.join("repo/metadata/1.root.json")).unwrap()
    );

    // A source tree: built first, then published.
    let published = json(
        d,
        &[
            "catalog", "publish", src, "--repo", "repo", "--keys", "keys",
        ],
    );
    assert_eq!(versions(&published), [1, 1, 1]);
    assert_eq!(published["updates"], 13);
    assert_eq!(published["catalog_name"], "wua example catalog");
    assert_eq!(published["root_expires"], "2035-06-30T00:00:00Z");
    let targets = published["targets"].as_u64().unwrap();
    assert_eq!(published["target_files_written"].as_u64(), Some(targets));
    assert_eq!(
        fs::read_dir(d.join("repo/targets")).unwrap().count() as u64,
        targets
    );
    // The default lifetimes: targets 365 days, snapshot 30, timestamp 7.
    let expiry =
        |field: &str| -> jiff::Timestamp { published[field].as_str().unwrap().parse().unwrap() };
    let days = |a: jiff::Timestamp, b: jiff::Timestamp| a.duration_since(b).as_secs() / 86400;
    assert_eq!(
        days(expiry("targets_expires"), expiry("timestamp_expires")),
        365 - 7
    );
    assert_eq!(
        days(expiry("snapshot_expires"), expiry("timestamp_expires")),
        30 - 7
    );
    let timestamp = metadata(&d.join("repo"), "timestamp.json");
    assert_eq!(timestamp["signed"]["version"], 1);
    assert_eq!(
        timestamp["signed"]["expires"],
        published["timestamp_expires"]
    );
    // The catalog.json target is the built catalog's own file.
    let catalog_file = d.join(format!(
        "repo/targets/{}.catalog.json",
        published["catalog_sha256"].as_str().unwrap()
    ));
    assert_eq!(
        fs::read(&catalog_file).unwrap(),
        fs::read(repo().join("examples/catalog/catalog.json")).unwrap()
    );

    // Add one new update and replace one (same id as 02-hello-config, new revision).
    let new = d.join("new-update");
    fs::create_dir_all(new.join("payload/etc")).unwrap();
    fs::write(new.join("payload/etc/new.conf"), "new=1\n").unwrap();
    fs::write(
        new.join("update.json"),
        r#"{ "identity": { "update_id": "7e57ab1e-0000-4000-8000-000000000001", "revision_number": 1 },
            "title": "A new update", "handler": { "kind": "files" } }"#,
    )
    .unwrap();
    let replacement = d.join("hello-config-2");
    fs::create_dir_all(replacement.join("payload/etc")).unwrap();
    fs::write(replacement.join("payload/etc/hello.conf"), "greeting=hi\n").unwrap();
    fs::write(
        replacement.join("update.json"),
        r#"{ "identity": { "update_id": "8b2e4f70-1a3c-4d5e-8f60-7a8b9c0d1e22", "revision_number": 2 },
            "title": "Hello Tools configuration update, revision 2", "kb_article_ids": ["5000002"],
            "handler": { "kind": "files" } }"#,
    )
    .unwrap();
    let added = json(
        d,
        &[
            "catalog",
            "add",
            "repo",
            "--keys",
            "keys",
            "new-update",
            "hello-config-2",
        ],
    );
    assert_eq!(versions(&added), [2, 2, 2]);
    assert_eq!(
        added["added"],
        serde_json::json!(["7e57ab1e-0000-4000-8000-000000000001"])
    );
    assert_eq!(
        added["replaced"],
        serde_json::json!(["8b2e4f70-1a3c-4d5e-8f60-7a8b9c0d1e22"])
    );
    assert_eq!(added["updates"], 14);
    assert_eq!(
        added["target_files_written"], 3,
        "catalog.json and two payloads"
    );
    let catalog: Value = serde_json::from_slice(
        &fs::read(d.join(format!(
            "repo/targets/{}.catalog.json",
            added["catalog_sha256"].as_str().unwrap()
        )))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        catalog["updates"][1]["title"],
        "Hello Tools configuration update, revision 2"
    );
    assert_eq!(catalog["updates"][13]["title"], "A new update");

    // Re-sign with a short timestamp lifetime: new versions, same targets.
    let targets_before = metadata(&d.join("repo"), "2.targets.json")["signed"]["targets"].clone();
    let signed = json(
        d,
        &[
            "catalog",
            "sign",
            "repo",
            "--keys",
            "keys",
            "--timestamp-days",
            "1",
        ],
    );
    assert_eq!(versions(&signed), [3, 3, 3]);
    assert_eq!(signed["target_files_written"], 0);
    assert_eq!(signed["catalog_sha256"], added["catalog_sha256"]);
    assert_eq!(
        metadata(&d.join("repo"), "3.targets.json")["signed"]["targets"],
        targets_before
    );
    let timestamp = metadata(&d.join("repo"), "timestamp.json");
    assert_eq!(timestamp["signed"]["version"], 3);
    assert_eq!(timestamp["signed"]["meta"]["snapshot.json"]["version"], 3);

    // Text output says what was published.
    let text = wua(d, &["catalog", "sign", "repo", "--keys", "keys"]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(
        text.stdout
            .contains("Re-signed catalog \"wua example catalog\""),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("timestamp version 4"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("root      version 1"),
        "{}",
        text.stdout
    );
}

#[test]
fn publish_init_creates_the_repository_and_takes_a_built_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    json(d, &["catalog", "keygen", "keys"]);
    let catalog = repo().join("examples/catalog");
    let report = json(
        d,
        &[
            "catalog",
            "publish",
            catalog.to_str().unwrap(),
            "--repo",
            "new/repo",
            "--keys",
            "keys",
            "--init",
            "--root-days",
            "100",
            "--expires",
            "2035-01-01",
        ],
    );
    assert_eq!(report["created"]["root_version"], 1);
    assert_eq!(versions(&report), [1, 1, 1]);
    assert_eq!(report["timestamp_expires"], "2035-01-01T00:00:00Z");
    assert_eq!(report["targets_expires"], "2035-01-01T00:00:00Z");
    assert!(d.join("new/repo/metadata/1.root.json").is_file());

    // --init on an existing repository just publishes.
    let again = json(
        d,
        &[
            "catalog",
            "publish",
            catalog.to_str().unwrap(),
            "--repo",
            "new/repo",
            "--keys",
            "keys",
            "--init",
        ],
    );
    assert!(again.get("created").is_none(), "{again}");
    assert_eq!(versions(&again), [2, 2, 2]);
}

#[test]
fn bad_input_exits_64_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let catalog = repo().join("examples/catalog");
    let catalog = catalog.to_str().unwrap();

    // No keys directory.
    bad_input(
        d,
        &["catalog", "init", "repo", "--keys", "no-keys"],
        "no-keys",
    );
    assert!(!d.join("repo").exists(), "nothing written");

    json(d, &["catalog", "keygen", "keys"]);
    bad_input(d, &["catalog", "keygen", "keys"], "keys/root.pem");
    json(d, &["catalog", "init", "repo", "--keys", "keys"]);
    let before = tree(&d.join("repo"));

    // Init on an existing repository.
    bad_input(d, &["catalog", "init", "repo", "--keys", "keys"], "repo");
    // Keys missing at publish time.
    bad_input(
        d,
        &[
            "catalog",
            "publish",
            catalog,
            "--repo",
            "repo",
            "--keys",
            "elsewhere",
        ],
        "elsewhere",
    );
    // Not a catalog, nor a source tree.
    fs::create_dir(d.join("empty")).unwrap();
    bad_input(
        d,
        &[
            "catalog", "publish", "empty", "--repo", "repo", "--keys", "keys",
        ],
        "empty",
    );
    // Not a repository.
    bad_input(
        d,
        &[
            "catalog", "publish", catalog, "--repo", "empty", "--keys", "keys",
        ],
        "empty",
    );
    // Another publisher's keys.
    json(d, &["catalog", "keygen", "other-keys"]);
    bad_input(
        d,
        &[
            "catalog",
            "publish",
            catalog,
            "--repo",
            "repo",
            "--keys",
            "other-keys",
        ],
        "other-keys/targets.pem",
    );
    // A damaged payload in a built catalog.
    let copy = d.join("damaged");
    fs::create_dir_all(copy.join("payloads")).unwrap();
    for (path, bytes) in tree(&repo().join("examples/catalog")) {
        fs::write(copy.join(path), bytes).unwrap();
    }
    let victim = fs::read_dir(copy.join("payloads"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    fs::write(&victim, b"not a payload").unwrap();
    bad_input(
        d,
        &[
            "catalog", "publish", "damaged", "--repo", "repo", "--keys", "keys",
        ],
        victim.file_name().unwrap().to_str().unwrap(),
    );
    // Nothing published yet, so nothing to add to or re-sign; an update folder that is not one.
    bad_input(d, &["catalog", "sign", "repo", "--keys", "keys"], "repo");
    bad_input(
        d,
        &["catalog", "add", "repo", "--keys", "keys", "empty"],
        "empty",
    );
    // Bad dates and missing arguments are refused by the parser.
    bad_input(
        d,
        &[
            "catalog",
            "init",
            "r2",
            "--keys",
            "keys",
            "--root-expires",
            "soon",
        ],
        "soon",
    );
    bad_input(
        d,
        &[
            "catalog",
            "init",
            "r2",
            "--keys",
            "keys",
            "--root-expires",
            "2020-01-01",
        ],
        "not in the future",
    );
    bad_input(
        d,
        &["catalog", "add", "repo", "--keys", "keys"],
        "UPDATE_DIR",
    );
    assert_eq!(tree(&d.join("repo")), before, "the repository changed");

    // --json errors carry the HRESULT.
    let run = wua(
        d,
        &[
            "--json", "catalog", "publish", "empty", "--repo", "empty", "--keys", "keys",
        ],
    );
    assert_eq!(run.code, 64);
    let error: Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("empty")
    );
}

#[test]
fn example_repository_is_up_to_date() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let keys = repo().join("examples/keys");
    let keys = keys.to_str().unwrap();
    let rebuilt = d.join("repository");
    let rebuilt_str = rebuilt.to_str().unwrap();
    json(
        d,
        &[
            "catalog",
            "init",
            rebuilt_str,
            "--keys",
            keys,
            "--root-expires",
            EXAMPLE_EXPIRES,
        ],
    );
    let src = repo().join("examples/catalog-src");
    json(
        d,
        &[
            "catalog",
            "publish",
            src.to_str().unwrap(),
            "--repo",
            rebuilt_str,
            "--keys",
            keys,
            "--expires",
            EXAMPLE_EXPIRES,
        ],
    );
    let committed = tree(&repo().join("examples/repository"));
    let fresh = tree(&rebuilt);
    let names = |t: &BTreeMap<PathBuf, Vec<u8>>| t.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&fresh),
        names(&committed),
        "examples/repository is stale: run `cargo run -p wua --example build-catalog -- examples/catalog-src examples/catalog examples/repository examples/keys`"
    );
    for (path, bytes) in &fresh {
        assert!(
            committed[path] == *bytes,
            "examples/repository/{} is stale: run `cargo run -p wua --example build-catalog -- examples/catalog-src examples/catalog examples/repository examples/keys`",
            path.display()
        );
    }
}

#[test]
fn rotate_renews_the_root_and_rotates_keys() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let catalog = repo().join("examples/catalog");
    json(d, &["catalog", "keygen", "keys"]);
    json(
        d,
        &[
            "catalog",
            "publish",
            catalog.to_str().unwrap(),
            "--repo",
            "repo",
            "--keys",
            "keys",
            "--init",
        ],
    );

    // Same keys: a new root version with a new expiry, the release re-signed.
    let renewed = json(
        d,
        &[
            "catalog",
            "rotate",
            "repo",
            "--keys",
            "keys",
            "--root-expires",
            "2040-01-01",
        ],
    );
    assert_eq!(renewed["root_version"], 2);
    assert_eq!(renewed["root_expires"], "2040-01-01T00:00:00Z");
    assert_eq!(renewed["roles_changed"], serde_json::json!([]));
    assert_eq!(versions(&renewed["release"]), [2, 2, 2]);
    assert_eq!(
        metadata(&d.join("repo"), "root.json"),
        metadata(&d.join("repo"), "2.root.json")
    );

    // New keys for every role.
    json(d, &["catalog", "keygen", "new-keys"]);
    let text = wua(
        d,
        &[
            "catalog",
            "rotate",
            "repo",
            "--keys",
            "keys",
            "--new-keys",
            "new-keys",
        ],
    );
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(
        text.stdout
            .contains("new keys for root, targets, snapshot, timestamp"),
        "{}",
        text.stdout
    );
    let root = metadata(&d.join("repo"), "3.root.json");
    assert_eq!(
        root["signatures"].as_array().unwrap().len(),
        2,
        "signed by the old root key and the new one"
    );
    bad_input(
        d,
        &["catalog", "sign", "repo", "--keys", "keys"],
        "keys/targets.pem",
    );
    let signed = json(d, &["catalog", "sign", "repo", "--keys", "new-keys"]);
    assert_eq!(signed["root_version"], 3);
    assert_eq!(versions(&signed), [4, 4, 4]);
}
