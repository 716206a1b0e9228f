//! The publisher side of signed catalogs (`wua::repository::author`): real keys, real
//! signatures, and every repository read back with tough's own client (`RepositoryLoader` over
//! `file://` URLs), as a wua client will.

use std::collections::BTreeMap;
use std::fs;
use std::num::NonZeroU64;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tempfile::TempDir;
use tough::{IntoVec, RepositoryLoader, TargetName};
use wua::hresult::{E_INVALIDARG, WU_E_INVALID_FILE};
use wua::repository::author::{
    self, InitOptions, PublishOptions, add_updates, generate_keys, init_repository, publish, resign,
};
use wua::repository::{CATALOG_TARGET, payload_target};

const ID_A: &str = "0a000000-0000-4000-8000-000000000001";
const ID_B: &str = "0b000000-0000-4000-8000-000000000002";
const ID_C: &str = "0c000000-0000-4000-8000-000000000003";
const ID_D: &str = "0d000000-0000-4000-8000-000000000004";

/// A temporary publisher's workspace: keys, sources, built catalogs, the repository.
struct Workspace {
    dir: TempDir,
}

impl Workspace {
    fn new() -> Workspace {
        let ws = Workspace {
            dir: tempfile::tempdir().unwrap(),
        };
        generate_keys(&ws.keys()).unwrap();
        ws
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn keys(&self) -> PathBuf {
        self.path("keys")
    }

    fn repo(&self) -> PathBuf {
        self.path("repo")
    }

    fn init(&self) {
        init_repository(&self.repo(), &self.keys(), &InitOptions::from_now()).unwrap();
    }

    /// Builds the catalog of the given update folders (written under `src-NAME/`) into
    /// `built-NAME/`.
    fn build(&self, name: &str, updates: &[Value]) -> PathBuf {
        let src = self.path(&format!("src-{name}"));
        for (i, update) in updates.iter().enumerate() {
            write_update(&src.join(format!("{i:02}")), update);
        }
        fs::write(src.join("catalog-name"), format!("catalog {name}")).unwrap();
        let out = self.path(&format!("built-{name}"));
        wua::catalog::build(&src, &out).unwrap();
        out
    }
}

/// An update source folder from a compact description: `{"id", "title", "files": {path:
/// content}, ...extra update.json fields}`.
fn write_update(folder: &Path, spec: &Value) {
    let mut meta = json!({
        "identity": { "update_id": spec["id"], "revision_number": spec.get("revision").cloned().unwrap_or(json!(1)) },
        "title": spec["title"],
        "handler": { "kind": "files" },
    });
    for (k, v) in spec.as_object().unwrap() {
        if !["id", "title", "files", "revision"].contains(&k.as_str()) {
            meta[k] = v.clone();
        }
    }
    fs::create_dir_all(folder.join("payload")).unwrap();
    fs::write(
        folder.join("update.json"),
        serde_json::to_vec_pretty(&meta).unwrap(),
    )
    .unwrap();
    if let Some(files) = spec.get("files").and_then(Value::as_object) {
        for (path, content) in files {
            let path = folder.join("payload").join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content.as_str().unwrap()).unwrap();
        }
    }
}

fn update(id: &str, title: &str, file: &str, content: &str) -> Value {
    json!({ "id": id, "title": title, "files": { file: content } })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Loads the repository with tough's client, trusting `1.root.json`, with `datastore` keeping
/// what it trusted before (rollback protection).
fn load(repo: &Path, datastore: &Path) -> Result<tough::Repository, String> {
    let root = fs::read(repo.join("metadata/1.root.json")).unwrap();
    let metadata = url::Url::from_directory_path(repo.join("metadata")).unwrap();
    let targets = url::Url::from_directory_path(repo.join("targets")).unwrap();
    runtime()
        .block_on(
            RepositoryLoader::new(&root, metadata, targets)
                .datastore(datastore)
                .load(),
        )
        .map_err(|e| e.to_string())
}

fn read_target(repository: &tough::Repository, name: &str) -> Vec<u8> {
    runtime().block_on(async {
        repository
            .read_target(&TargetName::new(name).unwrap())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no target {name}"))
            .into_vec()
            .await
            .unwrap()
    })
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
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

fn target_names(repository: &tough::Repository) -> Vec<String> {
    let mut names: Vec<String> = repository
        .all_targets()
        .map(|(name, _)| name.raw().to_string())
        .collect();
    names.sort();
    names
}

fn catalog_ids(repository: &tough::Repository) -> Vec<String> {
    let catalog: Value = serde_json::from_slice(&read_target(repository, CATALOG_TARGET)).unwrap();
    catalog["updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["identity"]["update_id"].as_str().unwrap().to_string())
        .collect()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn keygen_writes_private_ed25519_keys_and_never_overwrites_one() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("publisher/keys");
    generate_keys(&keys).unwrap();
    assert_eq!(mode(&keys), 0o700);
    let mut seen = Vec::new();
    for role in ["root", "targets", "snapshot", "timestamp"] {
        let path = keys.join(format!("{role}.pem"));
        assert_eq!(mode(&path), 0o600, "{role}.pem");
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{text}");
        let block = pem::parse(&text).unwrap();
        assert_eq!(block.tag(), "PRIVATE KEY");
        aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(block.contents())
            .unwrap_or_else(|e| panic!("{role}.pem is not an Ed25519 PKCS#8 key: {e}"));
        seen.push(text);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 4, "every role has its own key");

    // Again into the same directory: refused, nothing changed.
    let before = tree(&keys);
    let err = generate_keys(&keys).unwrap_err();
    assert_eq!(err.hresult(), E_INVALIDARG);
    assert!(
        err.to_string()
            .contains(&keys.join("root.pem").display().to_string()),
        "{err}"
    );
    assert_eq!(tree(&keys), before);

    // One key already there (here the timestamp key): refused before any other is written.
    let other = dir.path().join("other");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("timestamp.pem"), "keep me").unwrap();
    let err = generate_keys(&other).unwrap_err();
    assert!(err.to_string().contains("timestamp.pem"), "{err}");
    assert_eq!(
        tree(&other).into_keys().collect::<Vec<_>>(),
        vec![PathBuf::from("timestamp.pem")]
    );
}

#[test]
fn init_and_publish_give_a_repository_tough_loads() {
    let ws = Workspace::new();
    ws.init();
    let root = fs::read(ws.repo().join("metadata/1.root.json")).unwrap();
    assert_eq!(
        fs::read(ws.repo().join("metadata/root.json")).unwrap(),
        root,
        "root.json is a copy of the newest root"
    );
    let root_json: Value = serde_json::from_slice(&root).unwrap();
    assert_eq!(root_json["signed"]["consistent_snapshot"], true);
    assert_eq!(root_json["signed"]["version"], 1);
    for role in ["root", "targets", "snapshot", "timestamp"] {
        assert_eq!(root_json["signed"]["roles"][role]["threshold"], 1);
        assert_eq!(
            root_json["signed"]["roles"][role]["keyids"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    let built = ws.build(
        "one",
        &[
            update(ID_A, "Update A", "etc/a.conf", "a=1\n"),
            update(ID_B, "Update B", "etc/b.conf", "b=1\n"),
            // Same content as A: one payload, one target.
            update(ID_C, "Update C", "etc/a.conf", "a=1\n"),
        ],
    );
    let summary = publish(&ws.repo(), &ws.keys(), &built, &PublishOptions::from_now()).unwrap();
    assert_eq!(
        (
            summary.root_version,
            summary.targets_version,
            summary.snapshot_version,
            summary.timestamp_version
        ),
        (1, 1, 1, 1)
    );
    assert_eq!((summary.targets, summary.target_files_written), (3, 3));
    assert_eq!(summary.updates, 3);
    assert_eq!(summary.catalog_name, "catalog one");

    let metadata: Vec<PathBuf> = tree(&ws.repo().join("metadata")).into_keys().collect();
    assert_eq!(
        metadata,
        [
            "1.root.json",
            "1.snapshot.json",
            "1.targets.json",
            "root.json",
            "timestamp.json"
        ]
        .map(PathBuf::from)
    );

    let datastore = tempfile::tempdir().unwrap();
    let repository = load(&ws.repo(), datastore.path()).unwrap();
    let catalog_json = fs::read(built.join("catalog.json")).unwrap();
    assert_eq!(read_target(&repository, CATALOG_TARGET), catalog_json);
    assert_eq!(summary.catalog_sha256, sha256_hex(&catalog_json));

    let catalog = wua::Catalog::open(&built).unwrap();
    let mut expected = vec![CATALOG_TARGET.to_string()];
    for def in catalog.updates() {
        let name = payload_target(&def.payload.sha256);
        let (_, target) = repository
            .all_targets()
            .find(|(n, _)| n.raw() == name)
            .unwrap_or_else(|| panic!("payload {name} is not a target"));
        assert_eq!(target.length, def.payload.size);
        assert_eq!(hex::encode(&target.hashes.sha256), def.payload.sha256);
        let file = ws
            .repo()
            .join("targets")
            .join(format!("{}.{name}", def.payload.sha256));
        assert_eq!(
            fs::read(&file).unwrap(),
            fs::read(catalog.payload_path(&def.payload)).unwrap()
        );
        assert_eq!(read_target(&repository, &name), fs::read(&file).unwrap());
        expected.push(name);
    }
    expected.sort();
    expected.dedup();
    assert_eq!(target_names(&repository), expected);
    assert!(
        ws.repo()
            .join("targets")
            .join(format!("{}.catalog.json", summary.catalog_sha256))
            .is_file()
    );
    // Nothing but the target files in targets/ (no temporary files left).
    assert_eq!(tree(&ws.repo().join("targets")).len(), 3);
}

#[test]
fn a_second_publish_bumps_every_version_and_a_client_follows() {
    let ws = Workspace::new();
    ws.init();
    let first = ws.build("first", &[update(ID_A, "Update A", "a", "1")]);
    publish(&ws.repo(), &ws.keys(), &first, &PublishOptions::from_now()).unwrap();
    let datastore = tempfile::tempdir().unwrap();
    let repository = load(&ws.repo(), datastore.path()).unwrap();
    assert_eq!(repository.timestamp().signed.version.get(), 1);
    let old_files = tree(&ws.repo().join("targets"));

    let second = ws.build(
        "second",
        &[
            update(ID_A, "Update A", "a", "2"),
            update(ID_B, "Update B", "b", "1"),
        ],
    );
    let summary = publish(&ws.repo(), &ws.keys(), &second, &PublishOptions::from_now()).unwrap();
    assert_eq!(
        (
            summary.targets_version,
            summary.snapshot_version,
            summary.timestamp_version
        ),
        (2, 2, 2)
    );
    assert_eq!(summary.targets, 3);
    assert_eq!(summary.target_files_written, 3);

    // The same datastore: the client has trusted version 1 and accepts version 2.
    let repository = load(&ws.repo(), datastore.path()).unwrap();
    assert_eq!(repository.targets().signed.version.get(), 2);
    assert_eq!(repository.snapshot().signed.version.get(), 2);
    assert_eq!(repository.timestamp().signed.version.get(), 2);
    assert_eq!(
        read_target(&repository, CATALOG_TARGET),
        fs::read(second.join("catalog.json")).unwrap()
    );
    // The target set is exactly the new catalog's...
    let catalog = wua::Catalog::open(&second).unwrap();
    let mut expected: Vec<String> = catalog
        .updates()
        .iter()
        .map(|u| payload_target(&u.payload.sha256))
        .chain([CATALOG_TARGET.to_string()])
        .collect();
    expected.sort();
    assert_eq!(target_names(&repository), expected);
    // ...but the old files stay for clients in the middle of an update.
    let now = tree(&ws.repo().join("targets"));
    for (path, bytes) in old_files {
        assert_eq!(
            now.get(&path),
            Some(&bytes),
            "{} was removed",
            path.display()
        );
    }
    assert!(ws.repo().join("metadata/1.targets.json").is_file());
    assert!(ws.repo().join("metadata/2.targets.json").is_file());
}

#[test]
fn add_updates_adds_new_ones_and_replaces_same_ids_in_place() {
    let ws = Workspace::new();
    ws.init();
    let built = ws.build(
        "base",
        &[
            update(ID_A, "Update A", "a", "1"),
            update(ID_B, "Update B", "b", "1"),
        ],
    );
    publish(&ws.repo(), &ws.keys(), &built, &PublishOptions::from_now()).unwrap();
    let datastore = tempfile::tempdir().unwrap();
    load(&ws.repo(), datastore.path()).unwrap();

    let new_c = ws.path("new/c");
    write_update(&new_c, &update(ID_C, "Update C", "c", "1"));
    let new_b = ws.path("new/b2");
    write_update(
        &new_b,
        &json!({ "id": ID_B, "title": "Update B, revision 2", "revision": 2, "files": { "b": "2" } }),
    );
    let summary = add_updates(
        &ws.repo(),
        &ws.keys(),
        &[new_c.clone(), new_b.clone()],
        &PublishOptions::from_now(),
    )
    .unwrap();
    assert_eq!(summary.added, vec![uuid::Uuid::parse_str(ID_C).unwrap()]);
    assert_eq!(summary.replaced, vec![uuid::Uuid::parse_str(ID_B).unwrap()]);
    assert_eq!(summary.updates, 3);
    assert_eq!(summary.catalog_name, "catalog base");
    assert_eq!(summary.targets_version, 2);

    let repository = load(&ws.repo(), datastore.path()).unwrap();
    assert_eq!(catalog_ids(&repository), [ID_A, ID_B, ID_C]);
    let catalog: Value = serde_json::from_slice(&read_target(&repository, CATALOG_TARGET)).unwrap();
    assert_eq!(catalog["updates"][1]["title"], "Update B, revision 2");
    assert_eq!(catalog["updates"][1]["identity"]["revision_number"], 2);
    // Every payload of the new catalog is a target, and only those.
    let mut expected: Vec<String> = catalog["updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| payload_target(u["payload"]["sha256"].as_str().unwrap()))
        .chain([CATALOG_TARGET.to_string()])
        .collect();
    expected.sort();
    assert_eq!(target_names(&repository), expected);
    for name in &expected {
        read_target(&repository, name); // the client's hash check passes
    }

    // A bundle of an update published earlier: the builder sees the published part.
    let bundle = ws.path("new/bundle");
    write_update(
        &bundle,
        &json!({ "id": ID_D, "title": "Bundle of A", "bundled_updates": [ID_A] }),
    );
    let summary = add_updates(
        &ws.repo(),
        &ws.keys(),
        &[bundle],
        &PublishOptions::from_now(),
    )
    .unwrap();
    assert_eq!(summary.added, vec![uuid::Uuid::parse_str(ID_D).unwrap()]);
    let repository = load(&ws.repo(), datastore.path()).unwrap();
    assert_eq!(catalog_ids(&repository), [ID_A, ID_B, ID_C, ID_D]);
    let catalog: Value = serde_json::from_slice(&read_target(&repository, CATALOG_TARGET)).unwrap();
    assert_eq!(catalog["updates"][0]["title"], "Update A", "A is unchanged");
    assert_eq!(catalog["updates"][3]["bundled_updates"], json!([ID_A]));
}

#[test]
fn add_updates_names_the_folder_the_user_gave_in_errors() {
    let ws = Workspace::new();
    ws.init();
    let built = ws.build("base", &[update(ID_A, "Update A", "a", "1")]);
    publish(&ws.repo(), &ws.keys(), &built, &PublishOptions::from_now()).unwrap();
    let before = tree(&ws.repo());

    let broken = ws.path("broken-update");
    write_update(&broken, &update(ID_B, "Update B", "b", "1"));
    fs::write(broken.join("update.json"), "{ not json").unwrap();
    let err = add_updates(
        &ws.repo(),
        &ws.keys(),
        std::slice::from_ref(&broken),
        &PublishOptions::from_now(),
    )
    .unwrap_err();
    assert_eq!(err.hresult(), WU_E_INVALID_FILE);
    let text = err.to_string();
    assert!(text.contains(&broken.display().to_string()), "{text}");
    assert!(!text.contains("1-update-"), "{text}");

    let not_an_update = ws.path("empty-folder");
    fs::create_dir(&not_an_update).unwrap();
    let err = add_updates(
        &ws.repo(),
        &ws.keys(),
        std::slice::from_ref(&not_an_update),
        &PublishOptions::from_now(),
    )
    .unwrap_err();
    assert_eq!(err.hresult(), E_INVALIDARG);
    assert!(
        err.to_string()
            .contains(&not_an_update.display().to_string()),
        "{err}"
    );

    // A bundle of an update that is nowhere: the merged catalog is refused.
    let bundle = ws.path("bad-bundle");
    write_update(
        &bundle,
        &json!({ "id": ID_D, "title": "Bundle", "bundled_updates": [ID_C] }),
    );
    let err = add_updates(
        &ws.repo(),
        &ws.keys(),
        &[bundle],
        &PublishOptions::from_now(),
    )
    .unwrap_err();
    assert!(err.to_string().contains(ID_C), "{err}");
    assert_eq!(tree(&ws.repo()), before, "nothing was written");
}

#[test]
fn resign_bumps_versions_and_keeps_the_targets() {
    let ws = Workspace::new();
    ws.init();
    let built = ws.build(
        "base",
        &[
            update(ID_A, "Update A", "a", "1"),
            update(ID_B, "Update B", "b", "1"),
        ],
    );
    publish(
        &ws.repo(),
        &ws.keys(),
        &built,
        &PublishOptions::days_from_now(10, 5, 1),
    )
    .unwrap();
    let datastore = tempfile::tempdir().unwrap();
    let before = load(&ws.repo(), datastore.path()).unwrap();
    let targets_before = before.targets().signed.targets.clone();
    let files_before = tree(&ws.repo().join("targets"));

    let opts = PublishOptions::from_now();
    let summary = resign(&ws.repo(), &ws.keys(), &opts).unwrap();
    assert_eq!(
        (
            summary.targets_version,
            summary.snapshot_version,
            summary.timestamp_version
        ),
        (2, 2, 2)
    );
    assert_eq!(summary.target_files_written, 0);
    assert_eq!(summary.targets, 3);
    assert_eq!(summary.updates, 2);

    let after = load(&ws.repo(), datastore.path()).unwrap();
    assert_eq!(after.targets().signed.targets, targets_before);
    assert_eq!(after.targets().signed.version.get(), 2);
    assert_eq!(after.snapshot().signed.version.get(), 2);
    assert_eq!(after.timestamp().signed.version.get(), 2);
    assert_eq!(after.timestamp().signed.expires, opts.timestamp_expires);
    assert_eq!(after.targets().signed.expires, opts.targets_expires);
    assert!(after.timestamp().signed.expires > before.timestamp().signed.expires);
    assert_eq!(tree(&ws.repo().join("targets")), files_before);

    // Nothing to re-sign before the first release.
    let empty = Workspace::new();
    empty.init();
    let err = resign(&empty.repo(), &empty.keys(), &opts).unwrap_err();
    assert_eq!(err.hresult(), WU_E_INVALID_FILE);
    assert!(err.to_string().contains("no published catalog"), "{err}");
}

#[test]
fn a_damaged_payload_is_refused_before_anything_is_written() {
    let ws = Workspace::new();
    ws.init();
    let good = ws.build("good", &[update(ID_A, "Update A", "a", "1")]);

    // First release: the repository holds only its root.
    let bad = ws.build(
        "bad",
        &[
            update(ID_A, "Update A", "a", "1"),
            update(ID_B, "Update B", "b", "1"),
        ],
    );
    let catalog = wua::Catalog::open(&bad).unwrap();
    let damaged = catalog.payload_path(&catalog.updates()[1].payload);
    let mut bytes = fs::read(&damaged).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&damaged, bytes).unwrap();

    for repeat in [false, true] {
        if repeat {
            publish(&ws.repo(), &ws.keys(), &good, &PublishOptions::from_now()).unwrap();
        }
        let before = tree(&ws.repo());
        let err = publish(&ws.repo(), &ws.keys(), &bad, &PublishOptions::from_now()).unwrap_err();
        assert_eq!(err.hresult(), WU_E_INVALID_FILE, "{err}");
        let text = err.to_string();
        assert!(text.contains(&damaged.display().to_string()), "{text}");
        assert!(text.contains(ID_B), "{text}");
        assert_eq!(tree(&ws.repo()), before, "the repository changed");
    }

    // Not a catalog at all.
    let before = tree(&ws.repo());
    let err = publish(
        &ws.repo(),
        &ws.keys(),
        &ws.path("src-good"),
        &PublishOptions::from_now(),
    )
    .unwrap_err();
    assert_eq!(err.hresult(), WU_E_INVALID_FILE);
    assert!(err.to_string().contains("src-good"), "{err}");
    assert_eq!(tree(&ws.repo()), before);
}

#[test]
fn a_key_the_root_does_not_trust_is_refused() {
    let ws = Workspace::new();
    ws.init();
    let built = ws.build("one", &[update(ID_A, "Update A", "a", "1")]);
    publish(&ws.repo(), &ws.keys(), &built, &PublishOptions::from_now()).unwrap();
    let before = tree(&ws.repo());

    // Another publisher's keys.
    let other = ws.path("other-keys");
    generate_keys(&other).unwrap();
    let err = publish(&ws.repo(), &other, &built, &PublishOptions::from_now()).unwrap_err();
    assert_eq!(err.hresult(), E_INVALIDARG);
    let text = err.to_string();
    assert!(
        text.contains(&other.join("targets.pem").display().to_string()),
        "{text}"
    );
    assert!(text.contains("is not a targets key"), "{text}");
    assert!(text.contains(&ws.repo().display().to_string()), "{text}");
    assert_eq!(tree(&ws.repo()), before);

    // Only the timestamp key is foreign.
    let mixed = ws.path("mixed-keys");
    fs::create_dir(&mixed).unwrap();
    for role in ["root", "targets", "snapshot"] {
        fs::copy(
            ws.keys().join(format!("{role}.pem")),
            mixed.join(format!("{role}.pem")),
        )
        .unwrap();
    }
    fs::copy(other.join("timestamp.pem"), mixed.join("timestamp.pem")).unwrap();
    let err = resign(&ws.repo(), &mixed, &PublishOptions::from_now()).unwrap_err();
    assert!(err.to_string().contains("is not a timestamp key"), "{err}");
    assert_eq!(tree(&ws.repo()), before);

    // No keys at all.
    let err = publish(
        &ws.repo(),
        &ws.path("no-such-keys"),
        &built,
        &PublishOptions::from_now(),
    )
    .unwrap_err();
    assert_eq!(err.hresult(), E_INVALIDARG);
    assert!(err.to_string().contains("no-such-keys"), "{err}");

    // A file that is not a key.
    fs::write(mixed.join("timestamp.pem"), "not a key\n").unwrap();
    let err = resign(&ws.repo(), &mixed, &PublishOptions::from_now()).unwrap_err();
    assert_eq!(err.hresult(), WU_E_INVALID_FILE);
    assert!(
        err.to_string()
            .contains(&mixed.join("timestamp.pem").display().to_string()),
        "{err}"
    );
    assert_eq!(tree(&ws.repo()), before);
}

#[test]
fn init_refuses_an_existing_repository_and_past_expiry() {
    let ws = Workspace::new();
    ws.init();
    let before = tree(&ws.repo());
    let err = init_repository(&ws.repo(), &ws.keys(), &InitOptions::from_now()).unwrap_err();
    assert_eq!(err.hresult(), E_INVALIDARG);
    assert!(err.to_string().contains("is already a repository"), "{err}");
    assert_eq!(tree(&ws.repo()), before);

    let busy = ws.path("busy");
    fs::create_dir(&busy).unwrap();
    fs::write(busy.join("notes.txt"), "mine").unwrap();
    let err = init_repository(&busy, &ws.keys(), &InitOptions::from_now()).unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");

    let past = InitOptions::until("2020-01-01T00:00:00Z".parse().unwrap());
    let err = init_repository(&ws.path("new"), &ws.keys(), &past).unwrap_err();
    assert_eq!(err.hresult(), E_INVALIDARG);
    assert!(!ws.path("new").exists());

    // Publishing into something that is not a repository.
    let built = ws.build("one", &[update(ID_A, "Update A", "a", "1")]);
    let err = publish(&busy, &ws.keys(), &built, &PublishOptions::from_now()).unwrap_err();
    assert_eq!(err.hresult(), WU_E_INVALID_FILE);
    assert!(
        err.to_string()
            .contains("is not a signed catalog repository"),
        "{err}"
    );
}

#[test]
fn a_threshold_of_two_needs_two_keys_per_role() {
    let ws = Workspace::new();
    let two = InitOptions {
        threshold: NonZeroU64::new(2).unwrap(),
        ..InitOptions::from_now()
    };
    // One key per role is not enough.
    let err = init_repository(&ws.repo(), &ws.keys(), &two).unwrap_err();
    assert_eq!(err.hresult(), E_INVALIDARG);
    assert!(err.to_string().contains("threshold 2"), "{err}");
    assert!(!ws.repo().exists());

    // A second key for every role, as ROLE-2.pem.
    let extra = ws.path("extra");
    generate_keys(&extra).unwrap();
    for role in ["root", "targets", "snapshot", "timestamp"] {
        fs::rename(
            extra.join(format!("{role}.pem")),
            ws.keys().join(format!("{role}-2.pem")),
        )
        .unwrap();
    }
    init_repository(&ws.repo(), &ws.keys(), &two).unwrap();
    let root: Value =
        serde_json::from_slice(&fs::read(ws.repo().join("metadata/1.root.json")).unwrap()).unwrap();
    assert_eq!(root["signatures"].as_array().unwrap().len(), 2);
    assert_eq!(root["signed"]["roles"]["targets"]["threshold"], 2);

    let built = ws.build("one", &[update(ID_A, "Update A", "a", "1")]);
    publish(&ws.repo(), &ws.keys(), &built, &PublishOptions::from_now()).unwrap();
    let datastore = tempfile::tempdir().unwrap();
    let repository = load(&ws.repo(), datastore.path()).unwrap();
    assert_eq!(repository.targets().signatures.len(), 2);
    assert_eq!(
        read_target(&repository, CATALOG_TARGET),
        fs::read(built.join("catalog.json")).unwrap()
    );

    // Without the second snapshot key, re-signing is refused.
    fs::remove_file(ws.keys().join("snapshot-2.pem")).unwrap();
    let before = tree(&ws.repo());
    let err = resign(&ws.repo(), &ws.keys(), &PublishOptions::from_now()).unwrap_err();
    assert_eq!(err.hresult(), E_INVALIDARG);
    assert!(err.to_string().contains("needs 2 signatures"), "{err}");
    assert_eq!(tree(&ws.repo()), before);
}

#[test]
fn the_same_inputs_give_the_same_bytes() {
    let ws = Workspace::new();
    let built = ws.build(
        "fixed",
        &[
            update(ID_A, "Update A", "a", "1"),
            update(ID_B, "Update B", "b", "1"),
            update(ID_C, "Update C", "c", "1"),
        ],
    );
    let expires: jiff::Timestamp = "2036-01-01T00:00:00Z".parse().unwrap();
    let mut trees = Vec::new();
    for name in ["first", "second"] {
        let repo = ws.path(name);
        init_repository(&repo, &ws.keys(), &InitOptions::until(expires)).unwrap();
        publish(&repo, &ws.keys(), &built, &PublishOptions::until(expires)).unwrap();
        trees.push(tree(&repo));
    }
    assert_eq!(trees[0], trees[1]);
    // Keys sorted in every object: "signatures" comes before "signed".
    let timestamp =
        String::from_utf8(trees[0][Path::new("metadata/timestamp.json")].clone()).unwrap();
    assert!(
        timestamp.find("\"signatures\"") < timestamp.find("\"signed\""),
        "{timestamp}"
    );
    assert!(
        timestamp.contains("\"expires\": \"2036-01-01T00:00:00Z\""),
        "{timestamp}"
    );
}

#[test]
fn pem_key_source_signs_for_tough() {
    use tough::key_source::KeySource;
    let dir = tempfile::tempdir().unwrap();
    generate_keys(dir.path()).unwrap();
    let source = author::PemKeySource {
        path: dir.path().join("targets.pem"),
    };
    let signer = runtime().block_on(source.as_sign()).unwrap();
    let text = fs::read_to_string(dir.path().join("targets.pem")).unwrap();
    let der = pem::parse(&text).unwrap().into_contents();
    let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(&der).unwrap();
    use aws_lc_rs::signature::KeyPair;
    match signer.tuf_key() {
        tough::schema::key::Key::Ed25519 { keyval, .. } => {
            assert_eq!(&*keyval.public, pair.public_key().as_ref())
        }
        other => panic!("not an Ed25519 key: {other:?}"),
    }
}

#[test]
fn publish_sources_builds_the_tree_and_names_its_folders_in_errors() {
    let ws = Workspace::new();
    ws.init();
    let src = ws.path("src");
    write_update(&src.join("01-a"), &update(ID_A, "Update A", "a", "1"));
    write_update(&src.join("02-b"), &update(ID_B, "Update B", "b", "1"));
    let summary =
        author::publish_sources(&ws.repo(), &ws.keys(), &src, &PublishOptions::from_now()).unwrap();
    assert_eq!(summary.updates, 2);
    assert_eq!(summary.targets, 3);
    let datastore = tempfile::tempdir().unwrap();
    let repository = load(&ws.repo(), datastore.path()).unwrap();
    assert_eq!(catalog_ids(&repository), [ID_A, ID_B]);
    assert!(
        fs::read_dir(&src)
            .unwrap()
            .all(|e| e.unwrap().path().is_dir()),
        "nothing written to the sources"
    );

    // A bad update.json: named as the user knows it; nothing published.
    let before = tree(&ws.repo());
    fs::write(src.join("02-b/update.json"), "[]").unwrap();
    let err = author::publish_sources(&ws.repo(), &ws.keys(), &src, &PublishOptions::from_now())
        .unwrap_err();
    assert_eq!(err.hresult(), WU_E_INVALID_FILE);
    assert!(
        err.to_string()
            .contains(&src.join("02-b/update.json").display().to_string()),
        "{err}"
    );
    assert_eq!(tree(&ws.repo()), before);
}

#[test]
fn rotating_keys_writes_a_root_clients_follow() {
    let ws = Workspace::new();
    ws.init();
    let built = ws.build("one", &[update(ID_A, "Update A", "a", "1")]);
    publish(&ws.repo(), &ws.keys(), &built, &PublishOptions::from_now()).unwrap();
    let datastore = tempfile::tempdir().unwrap();
    let before = load(&ws.repo(), datastore.path()).unwrap();
    let targets_before = before.targets().signed.targets.clone();

    // Renew the root's expiry with the same keys.
    let renewed = InitOptions::days_from_now(3000);
    let summary = author::rotate_keys(
        &ws.repo(),
        &ws.keys(),
        &ws.keys(),
        &renewed,
        &PublishOptions::from_now(),
    )
    .unwrap();
    assert_eq!(summary.root_version, 2);
    assert!(
        summary.roles_changed.is_empty(),
        "{:?}",
        summary.roles_changed
    );
    let release = summary.release.unwrap();
    assert_eq!((release.targets_version, release.root_version), (2, 2));
    let repository = load(&ws.repo(), datastore.path()).unwrap();
    assert_eq!(repository.root().signed.version.get(), 2);
    assert_eq!(repository.root().signed.expires, renewed.root_expires);
    assert_eq!(
        fs::read(ws.repo().join("metadata/root.json")).unwrap(),
        fs::read(ws.repo().join("metadata/2.root.json")).unwrap()
    );

    // Rotate every key.
    let new_keys = ws.path("new-keys");
    generate_keys(&new_keys).unwrap();
    let summary = author::rotate_keys(
        &ws.repo(),
        &ws.keys(),
        &new_keys,
        &InitOptions::from_now(),
        &PublishOptions::from_now(),
    )
    .unwrap();
    assert_eq!(summary.root_version, 3);
    assert_eq!(
        summary.roles_changed,
        ["root", "targets", "snapshot", "timestamp"]
    );
    // A client that trusted root 1 follows the chain; a new one starting from 1.root.json too.
    let repository = load(&ws.repo(), datastore.path()).unwrap();
    assert_eq!(repository.root().signed.version.get(), 3);
    assert_eq!(repository.targets().signed.targets, targets_before);
    let fresh = tempfile::tempdir().unwrap();
    load(&ws.repo(), fresh.path()).unwrap();

    // The old keys no longer sign anything; the new ones do.
    let before = tree(&ws.repo());
    let err = resign(&ws.repo(), &ws.keys(), &PublishOptions::from_now()).unwrap_err();
    assert!(err.to_string().contains("is not a targets key"), "{err}");
    let err = author::rotate_keys(
        &ws.repo(),
        &ws.keys(),
        &ws.keys(),
        &InitOptions::from_now(),
        &PublishOptions::from_now(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("is not a root key"), "{err}");
    assert_eq!(tree(&ws.repo()), before);
    let second = ws.build("two", &[update(ID_B, "Update B", "b", "1")]);
    publish(&ws.repo(), &new_keys, &second, &PublishOptions::from_now()).unwrap();
    let repository = load(&ws.repo(), datastore.path()).unwrap();
    assert_eq!(catalog_ids(&repository), [ID_B]);
}

#[test]
fn a_rotation_interrupted_before_its_timestamp_is_finished_by_the_next_command() {
    let ws = Workspace::new();
    ws.init();
    let built = ws.build("one", &[update(ID_A, "Update A", "a", "1")]);
    publish(&ws.repo(), &ws.keys(), &built, &PublishOptions::from_now()).unwrap();
    let old_timestamp = fs::read(ws.repo().join("metadata/timestamp.json")).unwrap();
    let new_keys = ws.path("new-keys");
    generate_keys(&new_keys).unwrap();
    author::rotate_keys(
        &ws.repo(),
        &ws.keys(),
        &new_keys,
        &InitOptions::from_now(),
        &PublishOptions::from_now(),
    )
    .unwrap();
    // As if the command had died after writing 2.root.json, before timestamp.json.
    fs::write(ws.repo().join("metadata/timestamp.json"), &old_timestamp).unwrap();
    let datastore = tempfile::tempdir().unwrap();
    assert!(
        load(&ws.repo(), datastore.path()).is_err(),
        "the old timestamp is not signed by the new key"
    );

    let summary = resign(&ws.repo(), &new_keys, &PublishOptions::from_now()).unwrap();
    assert_eq!(summary.root_version, 2);
    // Version 2 never reached timestamp.json, so no client can have seen it: reused.
    assert_eq!(summary.timestamp_version, 2);
    let repository = load(&ws.repo(), datastore.path()).unwrap();
    assert_eq!(catalog_ids(&repository), [ID_A]);
}

#[test]
fn rotating_before_the_first_release_only_writes_the_root() {
    let ws = Workspace::new();
    ws.init();
    let new_keys = ws.path("new-keys");
    generate_keys(&new_keys).unwrap();
    let summary = author::rotate_keys(
        &ws.repo(),
        &ws.keys(),
        &new_keys,
        &InitOptions::from_now(),
        &PublishOptions::from_now(),
    )
    .unwrap();
    assert!(summary.release.is_none());
    assert!(!ws.repo().join("metadata/timestamp.json").exists());
    let built = ws.build("one", &[update(ID_A, "Update A", "a", "1")]);
    let err = publish(&ws.repo(), &ws.keys(), &built, &PublishOptions::from_now()).unwrap_err();
    assert!(err.to_string().contains("is not a targets key"), "{err}");
    let summary = publish(&ws.repo(), &new_keys, &built, &PublishOptions::from_now()).unwrap();
    assert_eq!((summary.root_version, summary.targets_version), (2, 1));
    let datastore = tempfile::tempdir().unwrap();
    let repository = load(&ws.repo(), datastore.path()).unwrap();
    assert_eq!(repository.root().signed.version.get(), 2);
}
