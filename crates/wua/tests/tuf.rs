//! The TUF client of a service (`wua::repository::client`): refresh, offline verification, and
//! the attacks of TUF's threat model (spec §1.5.2), on real repositories signed with real Ed25519
//! keys, over `file://` and over real HTTP (`wua_test_server`).
//!
//! Every rejection asserts its exact HRESULT and that the service's stored state (committed
//! datastore and catalog) is byte for byte what it was before.

use std::collections::BTreeMap;
use std::fs;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::Ed25519KeyPair;
use bytes::Bytes;
use jiff::{SignedDuration, Timestamp as Time};
use tough::editor::RepositoryEditor;
use tough::editor::signed::{PathExists, SignedRole};
use tough::key_source::{KeySource, LocalKeySource};
use tough::schema::{
    Hashes, KeyHolder, Metafile, RoleKeys, RoleType, Root, Signed, Snapshot, Targets, Timestamp,
};
use tough::sign::Sign;
use wua::hresult::*;
use wua::net::NetworkOptions;
use wua::repository::client::{self, TrustedTargets};
use wua::service::{ServicePaths, ServiceSource, UpdateService};
use wua::{Error, HResult};
use wua_test_server::{Fault, TestServer};

// ---------------------------------------------------------------------------------------------
// A publisher, built on tough's editor

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes))
}

fn in_days(days: i64) -> Time {
    Time::now()
        .checked_add(SignedDuration::from_hours(24 * days))
        .unwrap()
}

fn example_catalog() -> Vec<u8> {
    fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/catalog/catalog.json"))
        .unwrap()
}

/// A TUF repository in a temporary directory, with its keys.
struct Repo {
    tmp: tempfile::TempDir,
    root: Root,
    root_keys: Vec<PathBuf>,
    targets_keys: Vec<PathBuf>,
    snapshot_keys: Vec<PathBuf>,
    timestamp_keys: Vec<PathBuf>,
    key_count: usize,
}

struct Expiry {
    timestamp: Time,
    snapshot: Time,
    targets: Time,
}

impl Default for Expiry {
    fn default() -> Self {
        Expiry {
            timestamp: in_days(7),
            snapshot: in_days(30),
            targets: in_days(90),
        }
    }
}

impl Repo {
    /// A repository with one key per role, root version 1 written, `catalog.json` and one
    /// payload staged, nothing published yet.
    fn new() -> Repo {
        Repo::with_targets_keys(1, 1)
    }

    /// Like [`Repo::new`], with `count` targets keys of which `threshold` must sign.
    fn with_targets_keys(count: usize, threshold: u64) -> Repo {
        let tmp = tempfile::tempdir().unwrap();
        for dir in ["keys", "staging", "repo/metadata", "repo/targets"] {
            fs::create_dir_all(tmp.path().join(dir)).unwrap();
        }
        let mut repo = Repo {
            tmp,
            root: placeholder_root(),
            root_keys: vec![],
            targets_keys: vec![],
            snapshot_keys: vec![],
            timestamp_keys: vec![],
            key_count: 0,
        };
        repo.root_keys = vec![repo.new_key()];
        repo.targets_keys = (0..count).map(|_| repo.new_key()).collect();
        repo.snapshot_keys = vec![repo.new_key()];
        repo.timestamp_keys = vec![repo.new_key()];
        let root = repo.build_root(1, threshold);
        let signers = repo.root_keys.clone();
        repo.write_root(root, &signers, None);
        repo.set_catalog(&example_catalog());
        repo.stage_payload(b"payload one");
        repo
    }

    fn base(&self) -> PathBuf {
        self.tmp.path().join("repo")
    }

    fn metadata(&self) -> PathBuf {
        self.base().join("metadata")
    }

    fn targets_dir(&self) -> PathBuf {
        self.base().join("targets")
    }

    fn staging(&self) -> PathBuf {
        self.tmp.path().join("staging")
    }

    fn new_key(&mut self) -> PathBuf {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        self.key_count += 1;
        let path = self
            .tmp
            .path()
            .join("keys")
            .join(format!("{}.pk8", self.key_count));
        fs::write(&path, pkcs8.as_ref()).unwrap();
        path
    }

    fn set_catalog(&self, bytes: &[u8]) {
        fs::write(self.staging().join("catalog.json"), bytes).unwrap();
    }

    /// Stages a payload archive named by its SHA-256; returns that.
    fn stage_payload(&self, bytes: &[u8]) -> String {
        let sha = sha256_hex(bytes);
        fs::write(self.staging().join(format!("{sha}.tar.zst")), bytes).unwrap();
        sha
    }

    fn build_root(&self, version: u64, targets_threshold: u64) -> Root {
        let mut root = placeholder_root();
        root.version = NonZeroU64::new(version).unwrap();
        let mut role = |role: RoleType, keys: &[PathBuf], threshold: u64| {
            let mut keyids = vec![];
            for path in keys {
                let key = tough::sign::parse_keypair(&fs::read(path).unwrap())
                    .unwrap()
                    .tuf_key();
                let id = key.key_id().unwrap();
                root.keys.insert(id.clone(), key);
                keyids.push(id);
            }
            root.roles.insert(
                role,
                RoleKeys {
                    keyids,
                    threshold: NonZeroU64::new(threshold).unwrap(),
                    _extra: Default::default(),
                },
            );
        };
        role(RoleType::Root, &self.root_keys, 1);
        role(RoleType::Targets, &self.targets_keys, targets_threshold);
        role(RoleType::Snapshot, &self.snapshot_keys, 1);
        role(RoleType::Timestamp, &self.timestamp_keys, 1);
        root
    }

    /// Signs `root` with `signers` (its own root keys), and also with the current root's keys
    /// `old` (a rotation, spec 5.3.4); writes `<version>.root.json` and makes it current.
    fn write_root(&mut self, root: Root, signers: &[PathBuf], old: Option<&[PathBuf]>) {
        let rng = SystemRandom::new();
        let signed = block_on(async {
            let own = SignedRole::new(
                root.clone(),
                &KeyHolder::Root(root.clone()),
                &sources(signers),
                &rng,
            )
            .await
            .unwrap();
            match old {
                Some(old_keys) => {
                    let by_old = SignedRole::new(
                        root.clone(),
                        &KeyHolder::Root(self.root.clone()),
                        &sources(old_keys),
                        &rng,
                    )
                    .await
                    .unwrap();
                    own.add_old_signatures(by_old.signed().signatures.clone())
                        .unwrap()
                }
                None => own,
            }
        });
        fs::write(
            self.metadata().join(format!("{}.root.json", root.version)),
            signed.buffer(),
        )
        .unwrap();
        self.root = root;
    }

    /// Root version N+1 with new root and timestamp keys, signed by the new root key and, if
    /// `cross_signed`, the old one.
    fn rotate_root(&mut self, cross_signed: bool) {
        let old_root_keys = self.root_keys.clone();
        self.root_keys = vec![self.new_key()];
        self.timestamp_keys = vec![self.new_key()];
        let threshold = self.root.roles[&RoleType::Targets].threshold.get();
        let root = self.build_root(self.root.version.get() + 1, threshold);
        let signers = self.root_keys.clone();
        let old = cross_signed.then_some(old_root_keys.as_slice());
        self.write_root(root, &signers, old);
    }

    fn signers(&self) -> Vec<Box<dyn KeySource>> {
        let mut all = self.root_keys.clone();
        all.extend(self.targets_keys.iter().cloned());
        all.extend(self.snapshot_keys.iter().cloned());
        all.extend(self.timestamp_keys.iter().cloned());
        sources(&all)
    }

    /// Publishes the staged targets with every role at `version`.
    fn publish(&self, version: u64) {
        self.publish_with(version, Expiry::default());
    }

    fn publish_with(&self, version: u64, expiry: Expiry) {
        let v = NonZeroU64::new(version).unwrap();
        let root_path = self
            .metadata()
            .join(format!("{}.root.json", self.root.version));
        block_on(async {
            let mut editor = RepositoryEditor::new(&root_path).await.unwrap();
            editor
                .targets_version(v)
                .unwrap()
                .targets_expires(expiry.targets)
                .unwrap()
                .snapshot_version(v)
                .snapshot_expires(expiry.snapshot)
                .timestamp_version(v)
                .timestamp_expires(expiry.timestamp);
            let mut staged: Vec<PathBuf> = fs::read_dir(self.staging())
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            staged.sort();
            editor.add_target_paths(staged).await.unwrap();
            let signed = editor.sign(&self.signers()).await.unwrap();
            signed.write(self.metadata()).await.unwrap();
            signed
                .copy_targets(self.staging(), self.targets_dir(), PathExists::Skip)
                .await
                .unwrap();
        });
    }

    fn read_meta(&self, name: &str) -> Vec<u8> {
        fs::read(self.metadata().join(name)).unwrap()
    }

    fn write_meta(&self, name: &str, bytes: &[u8]) {
        fs::write(self.metadata().join(name), bytes).unwrap();
    }

    /// Signs (with the real snapshot and timestamp keys) a snapshot version `snapshot_version`
    /// that lists `targets_bytes` as targets version `targets_version` — with its length and
    /// hash when `pin` — and a timestamp version `timestamp_version` for it; writes both.
    fn reseal(
        &self,
        snapshot_version: u64,
        targets_version: u64,
        targets_bytes: &[u8],
        pin: bool,
        timestamp_version: u64,
    ) {
        let mut snapshot = Snapshot::new(
            "1.0.0".into(),
            NonZeroU64::new(snapshot_version).unwrap(),
            in_days(30),
        );
        snapshot.meta.insert(
            "targets.json".into(),
            metafile(targets_bytes, targets_version, pin),
        );
        let snapshot = self.sign_role(snapshot);
        self.write_meta(&format!("{snapshot_version}.snapshot.json"), &snapshot);
        self.reseal_timestamp(&snapshot, snapshot_version, timestamp_version);
    }

    /// Signs a timestamp version `version` naming `snapshot_bytes` as snapshot version
    /// `snapshot_version`; writes it as `timestamp.json`.
    fn reseal_timestamp(&self, snapshot_bytes: &[u8], snapshot_version: u64, version: u64) {
        let mut timestamp = Timestamp::new(
            "1.0.0".into(),
            NonZeroU64::new(version).unwrap(),
            in_days(7),
        );
        timestamp.meta.insert(
            "snapshot.json".into(),
            metafile(snapshot_bytes, snapshot_version, true),
        );
        let timestamp = self.sign_role(timestamp);
        self.write_meta("timestamp.json", &timestamp);
    }

    fn sign_role<T: tough::schema::Role + serde::Serialize>(&self, role: T) -> Vec<u8> {
        let rng = SystemRandom::new();
        block_on(async {
            SignedRole::new(
                role,
                &KeyHolder::Root(self.root.clone()),
                &self.signers(),
                &rng,
            )
            .await
            .unwrap()
            .buffer()
            .clone()
        })
    }
}

fn placeholder_root() -> Root {
    Root {
        spec_version: "1.0.0".into(),
        consistent_snapshot: true,
        version: NonZeroU64::new(1).unwrap(),
        expires: in_days(365),
        keys: Default::default(),
        roles: Default::default(),
        _extra: Default::default(),
    }
}

fn sources(paths: &[PathBuf]) -> Vec<Box<dyn KeySource>> {
    paths
        .iter()
        .map(|path| Box::new(LocalKeySource { path: path.clone() }) as Box<dyn KeySource>)
        .collect()
}

fn metafile(bytes: &[u8], version: u64, pin: bool) -> Metafile {
    Metafile {
        length: pin.then_some(bytes.len() as u64),
        hashes: pin.then(|| Hashes {
            sha256: aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
                .as_ref()
                .to_vec()
                .into(),
            _extra: Default::default(),
        }),
        version: NonZeroU64::new(version).unwrap(),
        _extra: Default::default(),
    }
}

fn to_pretty<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).unwrap();
    bytes.push(b'\n');
    bytes
}

// ---------------------------------------------------------------------------------------------
// A client of a service

struct Client {
    _state: tempfile::TempDir,
    service: UpdateService,
    paths: ServicePaths,
}

impl Client {
    /// A service registered for `repo`'s first root, reading from `source`.
    fn new(repo: &Repo, source: ServiceSource) -> Client {
        let state = tempfile::tempdir().unwrap();
        let id = uuid::Uuid::new_v4();
        let paths = ServicePaths::new(state.path(), id);
        fs::create_dir_all(&paths.dir).unwrap();
        let root = repo.read_meta("1.root.json");
        fs::write(&paths.trusted_root, &root).unwrap();
        let cert = client::check_trusted_root(&root, &paths.trusted_root).unwrap();
        Client {
            _state: state,
            service: UpdateService {
                service_id: id,
                name: "test service".into(),
                source,
                is_default_au_service: false,
                is_scan_package_service: false,
                issue_date: Time::now(),
                content_validation_cert: cert,
            },
            paths,
        }
    }

    fn directory(repo: &Repo) -> Client {
        Client::new(repo, ServiceSource::Directory(repo.base()))
    }

    fn http(repo: &Repo, server: &TestServer) -> Client {
        Client::new(repo, ServiceSource::Url(server.url()))
    }

    fn refresh(&self) -> wua::Result<TrustedTargets> {
        client::refresh(&self.service, &self.paths, &NetworkOptions::default())
    }

    fn refresh_with(&self, net: &NetworkOptions) -> wua::Result<TrustedTargets> {
        client::refresh(&self.service, &self.paths, net)
    }

    fn load_trusted(&self) -> wua::Result<Option<TrustedTargets>> {
        client::load_trusted(&self.service, &self.paths)
    }

    /// Every file of the service's directory but the lock file, with its bytes.
    fn stored(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            for entry in fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, out);
                } else if !path.ends_with("tuf.lock") {
                    out.insert(path.clone(), fs::read(&path).unwrap());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.paths.dir, &mut out);
        out
    }

    /// Asserts that refreshing fails with `hresult` and changes nothing stored.
    #[track_caller]
    fn assert_refused(&self, hresult: HResult) -> Error {
        self.assert_refused_with(&NetworkOptions::default(), hresult)
    }

    #[track_caller]
    fn assert_refused_with(&self, net: &NetworkOptions, hresult: HResult) -> Error {
        let before = self.stored();
        let e = self
            .refresh_with(net)
            .expect_err("the refresh must be refused");
        eprintln!("refused as expected: {e}");
        assert_eq!(e.hresult(), hresult, "{e}");
        assert!(
            e.to_string().contains("test service"),
            "the message names the service: {e}"
        );
        assert_eq!(
            self.stored(),
            before,
            "a refused refresh changes nothing stored"
        );
        e
    }
}

fn net(stall: Duration) -> NetworkOptions {
    NetworkOptions {
        stall_timeout: stall,
        ..NetworkOptions::default()
    }
}

// ---------------------------------------------------------------------------------------------
// file:// — the workflow

#[test]
fn a_directory_refresh_verifies_and_stores_the_catalog_and_offline_load_agrees() {
    let repo = Repo::new();
    let payload = repo.stage_payload(b"payload two");
    repo.publish(1);
    let client = Client::directory(&repo);
    assert!(client.load_trusted().unwrap().is_none(), "never refreshed");

    let trusted = client.refresh().unwrap();
    let catalog = example_catalog();
    assert_eq!(trusted.catalog().name, "catalog.json");
    assert_eq!(trusted.catalog().length, catalog.len() as u64);
    assert_eq!(trusted.catalog().sha256, sha256_hex(&catalog));
    assert_eq!(
        trusted.catalog().url.to_file_path().unwrap(),
        repo.targets_dir()
            .join(format!("{}.catalog.json", sha256_hex(&catalog)))
    );
    assert_eq!(fs::read(&client.paths.catalog).unwrap(), catalog);
    let info = trusted.payload(&payload).expect("the payload target");
    assert_eq!(info.length, b"payload two".len() as u64);
    assert_eq!(info.sha256, payload);
    assert!(trusted.payload(&sha256_hex(b"never published")).is_none());
    assert_eq!(trusted.targets_version(), 1);
    assert_eq!(trusted.root_version(), 1);
    assert!(trusted.expires() > Time::now());
    assert!(trusted.expires() <= in_days(7));

    assert_eq!(client.load_trusted().unwrap(), Some(trusted.clone()));
    // Refreshing again with nothing new changes nothing but the clock record.
    assert_eq!(client.refresh().unwrap(), trusted);
}

#[test]
fn a_republish_with_higher_versions_is_followed() {
    let repo = Repo::new();
    repo.publish(1);
    let client = Client::directory(&repo);
    client.refresh().unwrap();

    let mut catalog = example_catalog();
    catalog.extend_from_slice(b"\n\n");
    repo.set_catalog(&catalog);
    let payload = repo.stage_payload(b"a new payload");
    repo.publish(2);
    let trusted = client.refresh().unwrap();
    assert_eq!(trusted.targets_version(), 2);
    assert_eq!(trusted.catalog().sha256, sha256_hex(&catalog));
    assert!(trusted.payload(&payload).is_some());
    assert_eq!(fs::read(&client.paths.catalog).unwrap(), catalog);
    assert_eq!(client.load_trusted().unwrap(), Some(trusted));
}

#[test]
fn a_tampered_stored_catalog_is_refused_offline_and_a_refresh_repairs_it() {
    let repo = Repo::new();
    repo.publish(1);
    let client = Client::directory(&repo);
    let trusted = client.refresh().unwrap();

    let mut tampered = example_catalog();
    tampered[10] ^= 1;
    fs::write(&client.paths.catalog, &tampered).unwrap();
    let e = client.load_trusted().unwrap_err();
    assert_eq!(e.hresult(), WU_E_DM_INCORRECTFILEHASH, "{e}");
    assert!(e.to_string().contains("refresh the service online"), "{e}");

    fs::remove_file(&client.paths.catalog).unwrap();
    let e = client.load_trusted().unwrap_err();
    assert_eq!(e.hresult(), WU_E_DM_INCORRECTFILEHASH, "{e}");

    assert_eq!(client.refresh().unwrap(), trusted);
    assert_eq!(fs::read(&client.paths.catalog).unwrap(), example_catalog());
    assert_eq!(client.load_trusted().unwrap(), Some(trusted));
}

#[test]
fn a_root_rotation_is_followed_and_persists() {
    let mut repo = Repo::new();
    repo.publish(1);
    let client = Client::directory(&repo);
    assert_eq!(client.refresh().unwrap().root_version(), 1);

    // Root 2: new root and timestamp keys, signed by the old and the new root key.
    repo.rotate_root(true);
    repo.publish(2);
    let trusted = client.refresh().unwrap();
    assert_eq!(trusted.root_version(), 2);
    assert_eq!(trusted.targets_version(), 2);

    // The rotation persisted: with 2.root.json gone from the repository, the next refresh
    // still verifies the timestamp signed by the new key, starting from the stored root 2.
    repo.publish(3);
    fs::remove_file(repo.metadata().join("2.root.json")).unwrap();
    let trusted = client.refresh().unwrap();
    assert_eq!(trusted.root_version(), 2);
    assert_eq!(trusted.targets_version(), 3);
    assert_eq!(client.load_trusted().unwrap(), Some(trusted));
}

#[test]
fn a_root_rotation_not_signed_by_the_old_root_is_refused() {
    let mut repo = Repo::new();
    repo.publish(1);
    let client = Client::directory(&repo);
    client.refresh().unwrap();

    repo.rotate_root(false);
    repo.publish(2);
    let e = client.assert_refused(TRUST_E_BAD_DIGEST);
    assert!(e.to_string().contains("root metadata"), "{e}");
}

#[test]
fn a_repository_without_the_catalog_target_is_refused() {
    let repo = Repo::new();
    fs::remove_file(repo.staging().join("catalog.json")).unwrap();
    repo.publish(1);
    let client = Client::directory(&repo);
    let e = client.assert_refused(WU_E_INVALID_FILE);
    assert!(e.to_string().contains("no catalog.json target"), "{e}");
    assert!(client.load_trusted().unwrap().is_none());
}

#[test]
fn a_missing_repository_directory_is_not_found() {
    let repo = Repo::new();
    repo.publish(1);
    let mut client = Client::directory(&repo);
    client.service.source = ServiceSource::Directory(repo.tmp.path().join("elsewhere"));
    let e = client.assert_refused(WU_E_PT_HTTP_STATUS_NOT_FOUND);
    assert!(
        e.to_string().contains("timestamp.json does not exist"),
        "{e}"
    );
}

#[test]
fn check_trusted_root_accepts_a_root_and_refuses_an_altered_one() {
    let repo = Repo::new();
    let bytes = repo.read_meta("1.root.json");
    let origin = Path::new("/tmp/the-root.json");
    assert_eq!(
        client::check_trusted_root(&bytes, origin).unwrap(),
        sha256_hex(&bytes)
    );
    let mut root: Signed<Root> = serde_json::from_slice(&bytes).unwrap();
    root.signed.version = NonZeroU64::new(7).unwrap();
    let e = client::check_trusted_root(&to_pretty(&root), origin).unwrap_err();
    assert_eq!(e.hresult(), TRUST_E_BAD_DIGEST, "{e}");
    assert!(e.to_string().contains("/tmp/the-root.json"), "{e}");
}

#[test]
fn concurrent_refreshes_of_one_service_both_succeed() {
    let repo = Repo::new();
    repo.publish(1);
    let client = Client::directory(&repo);
    let results: Vec<_> = std::thread::scope(|scope| {
        let a = scope.spawn(|| client.refresh());
        let b = scope.spawn(|| client.refresh());
        vec![a.join().unwrap(), b.join().unwrap()]
    });
    for result in results {
        assert_eq!(result.unwrap().targets_version(), 1);
    }
    assert!(client.load_trusted().unwrap().is_some());
    let leftovers: Vec<_> = fs::read_dir(&client.paths.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tuf.") && n != "tuf.lock")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn the_states_a_crash_leaves_are_recovered() {
    let repo = Repo::new();
    repo.publish(1);
    let client = Client::directory(&repo);
    let trusted = client.refresh().unwrap();

    // A crash in the middle of a fallback swap (`tuf` moved aside, the new one not yet in),
    // with a dead refresh's work directory and catalog download left behind.
    let dir = &client.paths.dir;
    fs::rename(&client.paths.datastore, dir.join("tuf.old")).unwrap();
    fs::create_dir_all(dir.join("tuf.new-4242424")).unwrap();
    fs::write(dir.join("tuf.new-4242424").join("timestamp.json"), b"{").unwrap();
    fs::write(dir.join(".catalog.json.Xy12ab"), b"partial").unwrap();

    // Offline reads the committed copy where it is; a refresh puts everything back in order.
    assert_eq!(client.load_trusted().unwrap(), Some(trusted.clone()));
    assert_eq!(client.refresh().unwrap(), trusted);
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["catalog.json", "trusted-root.json", "tuf", "tuf.lock"]
    );
    assert_eq!(client.load_trusted().unwrap(), Some(trusted));
}

#[test]
fn refresh_works_from_inside_a_tokio_runtime() {
    let repo = Repo::new();
    repo.publish(1);
    let client = Client::directory(&repo);
    let trusted = block_on(async { client.refresh() }).unwrap();
    assert_eq!(trusted.targets_version(), 1);
}

// ---------------------------------------------------------------------------------------------
// file:// — attacks (spec §1.5.2)

#[test]
fn arbitrary_software_a_replaced_catalog_target_is_refused() {
    let repo = Repo::new();
    repo.publish(1);
    let client = Client::directory(&repo);
    client.refresh().unwrap();

    let mut catalog = example_catalog();
    catalog.push(b'\n');
    repo.set_catalog(&catalog);
    repo.publish(2);
    // The attacker swaps the target's content; the metadata still signs the original.
    let target = repo
        .targets_dir()
        .join(format!("{}.catalog.json", sha256_hex(&catalog)));
    let mut evil = catalog.clone();
    evil[20] = b'X';
    fs::write(&target, &evil).unwrap();
    let e = client.assert_refused(WU_E_DM_INCORRECTFILEHASH);
    assert!(e.to_string().contains("SHA-256"), "{e}");
    // Longer than signed: cut at the signed length, then refused the same way.
    evil.extend_from_slice(b"more");
    fs::write(&target, &evil).unwrap();
    client.assert_refused(WU_E_DM_INCORRECTFILEHASH);
    assert_eq!(client.load_trusted().unwrap().unwrap().targets_version(), 1);
}

#[test]
fn a_timestamp_edited_without_re_signing_is_refused() {
    let repo = Repo::new();
    repo.publish(1);
    let client = Client::directory(&repo);
    client.refresh().unwrap();
    repo.publish(2);

    let mut timestamp: Signed<Timestamp> =
        serde_json::from_slice(&repo.read_meta("timestamp.json")).unwrap();
    timestamp.signed.expires = in_days(3650);
    repo.write_meta("timestamp.json", &to_pretty(&timestamp));
    let e = client.assert_refused(TRUST_E_BAD_DIGEST);
    assert!(e.to_string().contains("timestamp metadata"), "{e}");
}

#[test]
fn targets_edited_without_the_targets_key_are_refused() {
    // Even with the snapshot and timestamp keys, changing what the targets role signs needs a
    // threshold of targets keys.
    let repo = Repo::new();
    repo.publish(1);
    let client = Client::directory(&repo);
    client.refresh().unwrap();
    repo.publish(2);

    let mut targets: Signed<Targets> =
        serde_json::from_slice(&repo.read_meta("2.targets.json")).unwrap();
    let (name, target) = targets
        .signed
        .targets
        .iter()
        .find(|(name, _)| name.raw() == "catalog.json")
        .map(|(n, t)| (n.clone(), t.clone()))
        .unwrap();
    let mut evil = target;
    evil.length += 1;
    targets.signed.targets.insert(name, evil);
    let edited = to_pretty(&targets);
    repo.write_meta("2.targets.json", &edited);
    repo.reseal(2, 2, &edited, true, 2);
    let e = client.assert_refused(TRUST_E_BAD_DIGEST);
    assert!(e.to_string().contains("targets metadata"), "{e}");
}

#[test]
fn targets_below_their_signature_threshold_are_refused() {
    let repo = Repo::with_targets_keys(2, 2);
    repo.publish(1);
    let client = Client::directory(&repo);
    client.refresh().unwrap();
    repo.publish(2);

    let mut targets: Signed<Targets> =
        serde_json::from_slice(&repo.read_meta("2.targets.json")).unwrap();
    assert_eq!(targets.signatures.len(), 2);
    targets.signatures.pop();
    let one_signature = to_pretty(&targets);
    repo.write_meta("2.targets.json", &one_signature);
    repo.reseal(2, 2, &one_signature, true, 2);
    let e = client.assert_refused(TRUST_E_BAD_DIGEST);
    assert!(e.to_string().contains("1 valid signature"), "{e}");
}

#[test]
fn rollback_to_an_older_timestamp_is_refused() {
    let repo = Repo::new();
    repo.publish(1);
    let old_timestamp = repo.read_meta("timestamp.json");
    repo.publish(2);
    let client = Client::directory(&repo);
    client.refresh().unwrap();

    repo.write_meta("timestamp.json", &old_timestamp);
    let e = client.assert_refused(TRUST_E_SUBJECT_NOT_TRUSTED);
    assert!(e.to_string().contains("rollback"), "{e}");
    assert_eq!(client.load_trusted().unwrap().unwrap().targets_version(), 2);
}

#[test]
fn rollback_to_an_older_snapshot_under_a_fresh_timestamp_is_refused() {
    let repo = Repo::new();
    repo.publish(1);
    repo.publish(2);
    let client = Client::directory(&repo);
    client.refresh().unwrap();

    // A new timestamp (version 3, properly signed) naming the old snapshot version 1.
    let old_snapshot = repo.read_meta("1.snapshot.json");
    repo.reseal_timestamp(&old_snapshot, 1, 3);
    client.assert_refused(TRUST_E_SUBJECT_NOT_TRUSTED);
}

#[test]
fn an_indefinite_freeze_on_expired_metadata_is_refused() {
    let repo = Repo::new();
    repo.publish(1);
    let client = Client::directory(&repo);
    client.refresh().unwrap();

    repo.publish_with(
        2,
        Expiry {
            timestamp: Time::now()
                .checked_sub(SignedDuration::from_hours(1))
                .unwrap(),
            ..Expiry::default()
        },
    );
    let e = client.assert_refused(CERT_E_EXPIRED);
    assert!(
        e.to_string().contains("timestamp metadata has expired"),
        "{e}"
    );

    // Expired targets too.
    repo.publish_with(
        3,
        Expiry {
            targets: Time::now()
                .checked_sub(SignedDuration::from_hours(1))
                .unwrap(),
            ..Expiry::default()
        },
    );
    let e = client.assert_refused(CERT_E_EXPIRED);
    assert!(
        e.to_string().contains("targets metadata has expired"),
        "{e}"
    );
}

#[test]
fn stored_metadata_that_expired_is_refused_offline() {
    let repo = Repo::new();
    let expiry = Time::now()
        .checked_add(SignedDuration::from_secs(4))
        .unwrap();
    repo.publish_with(
        1,
        Expiry {
            timestamp: expiry,
            ..Expiry::default()
        },
    );
    let client = Client::directory(&repo);
    let trusted = client.refresh().unwrap();
    assert_eq!(trusted.expires(), expiry);
    while Time::now() <= expiry {
        std::thread::sleep(Duration::from_millis(200));
    }
    let before = client.stored();
    let e = client.load_trusted().unwrap_err();
    assert_eq!(e.hresult(), CERT_E_EXPIRED, "{e}");
    assert!(e.to_string().contains("refresh the service online"), "{e}");
    assert_eq!(client.stored(), before);
}

#[test]
fn mix_and_match_targets_of_another_version_are_refused() {
    let repo = Repo::new();
    repo.publish(1);
    let client = Client::directory(&repo);
    client.refresh().unwrap();
    let mut catalog = example_catalog();
    catalog.push(b' ');
    repo.set_catalog(&catalog);
    repo.publish(2);
    let old_targets = repo.read_meta("1.targets.json");

    // The snapshot pins the hash of targets version 2: the old file is caught by its hash.
    repo.write_meta("2.targets.json", &old_targets);
    let e = client.assert_refused(WU_E_DM_INCORRECTFILEHASH);
    assert!(e.to_string().contains("2.targets.json"), "{e}");

    // A snapshot that names only the version (no hash, allowed by the spec): the version
    // inside the signed targets gives it away (spec 5.6.4).
    repo.reseal(3, 2, &old_targets, false, 3);
    let e = client.assert_refused(TRUST_E_SUBJECT_NOT_TRUSTED);
    assert!(e.to_string().contains("mix-and-match"), "{e}");
}

#[test]
fn endless_data_an_oversize_timestamp_is_refused() {
    let repo = Repo::new();
    repo.publish(1);
    let client = Client::directory(&repo);
    client.refresh().unwrap();
    repo.publish(2);

    let mut huge = repo.read_meta("timestamp.json");
    huge.resize(client::MAX_TIMESTAMP_SIZE as usize + 10, b' ');
    repo.write_meta("timestamp.json", &huge);
    let e = client.assert_refused(WU_E_INVALID_FILE);
    assert!(e.to_string().contains("endless-data"), "{e}");
}

#[test]
fn endless_data_a_snapshot_longer_than_signed_is_refused() {
    let repo = Repo::new();
    repo.publish(1);
    let client = Client::directory(&repo);
    client.refresh().unwrap();
    repo.publish(2);

    let mut longer = repo.read_meta("2.snapshot.json");
    longer.extend(std::iter::repeat_n(b' ', 100_000));
    repo.write_meta("2.snapshot.json", &longer);
    client.assert_refused(WU_E_DM_INCORRECTFILEHASH);
}

#[test]
fn a_torn_datastore_file_is_refused_not_silently_reset() {
    let repo = Repo::new();
    repo.publish(1);
    let client = Client::directory(&repo);
    client.refresh().unwrap();
    repo.publish(2);

    let file = client.paths.datastore.join("timestamp.json");
    let bytes = fs::read(&file).unwrap();
    fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let e = client.assert_refused(WU_E_INVALID_FILE);
    let text = e.to_string();
    assert!(text.contains(&file.display().to_string()), "{text}");
    assert!(text.contains("remove the update service"), "{text}");

    let e = client.load_trusted().unwrap_err();
    assert_eq!(e.hresult(), WU_E_INVALID_FILE, "{e}");

    // A verified copy that differs from tough's record is refused too.
    fs::write(&file, &bytes).unwrap();
    client.load_trusted().unwrap().unwrap();
    let verified = client
        .paths
        .datastore
        .join("verified")
        .join("snapshot.json");
    fs::write(&verified, b"{}").unwrap();
    client.assert_refused(WU_E_INVALID_FILE);
}

#[test]
fn a_system_clock_stepped_backward_is_refused() {
    let repo = Repo::new();
    repo.publish(1);
    let client = Client::directory(&repo);
    client.refresh().unwrap();

    // The latest time this machine saw is far ahead of now: the clock went back.
    fs::write(
        client.paths.datastore.join("latest_known_time.json"),
        b"\"2999-01-01T00:00:00Z\"",
    )
    .unwrap();
    let e = client.assert_refused(TRUST_E_SUBJECT_NOT_TRUSTED);
    assert!(e.to_string().contains("system clock"), "{e}");
    let e = client.load_trusted().unwrap_err();
    assert_eq!(e.hresult(), TRUST_E_SUBJECT_NOT_TRUSTED, "{e}");
}

#[test]
fn a_failed_first_refresh_leaves_the_service_unrefreshed() {
    let repo = Repo::new();
    repo.publish(1);
    let mut timestamp: Signed<Timestamp> =
        serde_json::from_slice(&repo.read_meta("timestamp.json")).unwrap();
    timestamp.signed.version = NonZeroU64::new(9).unwrap();
    repo.write_meta("timestamp.json", &to_pretty(&timestamp));
    let client = Client::directory(&repo);
    client.assert_refused(TRUST_E_BAD_DIGEST);
    assert!(!client.paths.datastore.exists());
    assert!(!client.paths.catalog.exists());
    assert!(client.load_trusted().unwrap().is_none());
}

// ---------------------------------------------------------------------------------------------
// Real HTTP

fn paths_requested(server: &TestServer) -> Vec<String> {
    server.requests().into_iter().map(|r| r.path).collect()
}

#[test]
fn http_refresh_verifies_and_offline_load_makes_no_request() {
    let repo = Repo::new();
    repo.publish(1);
    let server = TestServer::start(repo.base());
    let client = Client::http(&repo, &server);

    let trusted = client.refresh().unwrap();
    assert_eq!(fs::read(&client.paths.catalog).unwrap(), example_catalog());
    assert_eq!(
        trusted.catalog().url.as_str(),
        format!(
            "{}targets/{}.catalog.json",
            server.url(),
            sha256_hex(&example_catalog())
        )
    );
    let requested = paths_requested(&server);
    for expected in [
        "/metadata/2.root.json",
        "/metadata/timestamp.json",
        "/metadata/1.snapshot.json",
        "/metadata/1.targets.json",
    ] {
        assert!(requested.iter().any(|p| p == expected), "{requested:?}");
    }
    assert!(
        requested.iter().any(|p| p.ends_with(".catalog.json")),
        "{requested:?}"
    );

    let count = server.request_count();
    assert_eq!(client.load_trusted().unwrap(), Some(trusted.clone()));
    assert_eq!(server.request_count(), count, "load_trusted is offline");

    // Nothing new: the stored catalog already matches, so it is not downloaded again.
    assert_eq!(client.refresh().unwrap(), trusted);
    let again = &paths_requested(&server)[count..];
    assert!(
        !again.iter().any(|p| p.ends_with(".catalog.json")),
        "{again:?}"
    );
}

#[test]
fn http_endless_timestamp_is_refused() {
    let repo = Repo::new();
    repo.publish(1);
    let server = TestServer::start(repo.base());
    let client = Client::http(&repo, &server);
    client.refresh().unwrap();
    repo.publish(2);

    server.set_fault("timestamp.json", Fault::Endless);
    let e = client.assert_refused(WU_E_INVALID_FILE);
    assert!(e.to_string().contains("endless-data"), "{e}");
}

#[test]
fn http_slow_retrieval_times_out() {
    let repo = Repo::new();
    repo.publish(1);
    let server = TestServer::start(repo.base());
    let client = Client::http(&repo, &server);
    client.refresh().unwrap();
    repo.publish(2);
    let fast = net(Duration::from_secs(1));

    // No headers at all.
    server.set_fault("timestamp.json", Fault::Hang);
    client.assert_refused_with(&fast, WU_E_TIME_OUT);
    // A body that goes silent for longer than the stall timeout.
    server.set_fault(
        "timestamp.json",
        Fault::Drip {
            chunk: 16,
            every: Duration::from_secs(30),
        },
    );
    client.assert_refused_with(&fast, WU_E_TIME_OUT);
    // A body that never goes silent but drips far below the minimum rate.
    server.set_fault(
        "timestamp.json",
        Fault::Drip {
            chunk: 1,
            every: Duration::from_millis(50),
        },
    );
    let e = client.assert_refused_with(&fast, WU_E_TIME_OUT);
    assert!(e.to_string().contains("too slow"), "{e}");
    // The same on a target.
    server.clear_faults();
    let mut catalog = example_catalog();
    catalog.push(b'\n');
    repo.set_catalog(&catalog);
    repo.publish(3);
    server.set_fault(
        ".catalog.json",
        Fault::Drip {
            chunk: 1,
            every: Duration::from_millis(50),
        },
    );
    client.assert_refused_with(&fast, WU_E_TIME_OUT);
}

#[test]
fn http_statuses_map_to_their_codes_and_a_broken_root_lookup_is_not_ignored() {
    let repo = Repo::new();
    repo.publish(1);
    let server = TestServer::start(repo.base());
    let client = Client::http(&repo, &server);

    server.set_fault("timestamp.json", Fault::Status(404));
    let e = client.assert_refused(WU_E_PT_HTTP_STATUS_NOT_FOUND);
    assert!(e.to_string().contains("timestamp.json"), "{e}");
    server.set_fault("timestamp.json", Fault::Status(503));
    client.assert_refused(WU_E_PT_HTTP_STATUS_SERVICE_UNAVAIL);
    server.clear_faults();

    // 404 on the next root ends the search normally (spec 5.3.3); a 500 there must not hide a
    // root rotation.
    server.set_fault("2.root.json", Fault::Status(500));
    client.assert_refused(WU_E_PT_HTTP_STATUS_SERVER_ERROR);
    server.clear_faults();
    client.refresh().unwrap();
}

#[test]
fn http_served_attacks_are_refused() {
    let repo = Repo::new();
    repo.publish(1);
    let v1_timestamp = repo.read_meta("timestamp.json");
    repo.publish(2);
    let server = TestServer::start(repo.base());
    let client = Client::http(&repo, &server);
    client.refresh().unwrap();

    // Rollback: yesterday's timestamp.
    server.set_fault("timestamp.json", Fault::Replace(Bytes::from(v1_timestamp)));
    client.assert_refused(TRUST_E_SUBJECT_NOT_TRUSTED);

    // A forged timestamp.
    let mut forged: Signed<Timestamp> =
        serde_json::from_slice(&repo.read_meta("timestamp.json")).unwrap();
    forged.signed.version = NonZeroU64::new(50).unwrap();
    server.set_fault(
        "timestamp.json",
        Fault::Replace(Bytes::from(to_pretty(&forged))),
    );
    client.assert_refused(TRUST_E_BAD_DIGEST);
    server.clear_faults();

    // Arbitrary software: a new catalog published, another one served in its place.
    let mut catalog = example_catalog();
    catalog.push(b'\n');
    repo.set_catalog(&catalog);
    repo.publish(3);
    server.set_fault(
        ".catalog.json",
        Fault::Replace(Bytes::from(example_catalog())),
    );
    client.assert_refused(WU_E_DM_INCORRECTFILEHASH);

    // Mix-and-match: the snapshot of version 2 served as version 3.
    server.clear_faults();
    server.set_fault(
        "3.snapshot.json",
        Fault::Replace(Bytes::from(repo.read_meta("2.snapshot.json"))),
    );
    client.assert_refused(WU_E_DM_INCORRECTFILEHASH);

    // Cut in transit: a transfer failure (reqwest's), not a verified file.
    server.clear_faults();
    server.set_fault("3.targets.json", Fault::CutAfter(100));
    let e = client.assert_refused(WU_E_PT_UNEXPECTED);
    assert!(e.to_string().contains("3.targets.json"), "{e}");

    server.clear_faults();
    assert_eq!(client.refresh().unwrap().targets_version(), 3);
}

#[test]
fn http_no_server_is_no_network() {
    let repo = Repo::new();
    repo.publish(1);
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = url::Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
    let client = Client::new(&repo, ServiceSource::Url(url));
    client.assert_refused(WU_E_DM_NONETWORK);
}

// ---------------------------------------------------------------------------------------------
// Extraneous dependencies (TUF threat model): content the signed targets metadata does not list

#[test]
fn a_payload_the_targets_metadata_does_not_list_is_never_downloaded_or_installed() {
    // The repository signs catalog.json, but none of the payloads the catalog names: the
    // catalog asks for content its publisher never signed as a target.
    let repo = Repo::new();
    repo.publish(1);
    let machine = tempfile::tempdir().unwrap();
    fs::create_dir(machine.path().join("root")).unwrap();
    let session = wua::UpdateSession::open(wua::AgentConfig::with_services(
        machine.path().join("root"),
        machine.path().join("state"),
    ))
    .unwrap();
    session
        .create_update_service_manager()
        .add_service(
            "unsigned payloads",
            ServiceSource::Directory(repo.base()),
            &repo.metadata().join("1.root.json"),
        )
        .unwrap();
    let found = session
        .create_update_searcher()
        .search("IsInstalled = 0")
        .unwrap();
    assert!(!found.updates.is_empty());

    let mut downloader = session.create_update_downloader();
    downloader.set_updates(&found.updates);
    let result = downloader.download().unwrap();
    assert_eq!(result.result_code, wua::OperationResultCode::Failed);
    assert!(
        result
            .update_results
            .iter()
            .all(|r| r.hresult == WU_E_DM_URLNOTAVAILABLE),
        "{result:?}"
    );
    let cache = wua::service::payload_cache_dir(&machine.path().join("state"));
    let cached: Vec<_> = fs::read_dir(&cache)
        .map(|d| d.collect::<Vec<_>>())
        .unwrap_or_default();
    assert!(cached.is_empty(), "nothing cached as valid: {cached:?}");

    // Hello Tools 1.0 (installing every update at once is refused: one is exclusive).
    let hello = session
        .create_update_searcher()
        .search("UpdateID = '3f1c9a52-7d1e-4b8e-9a0f-1e2d3c4b5a61'")
        .unwrap();
    let mut installer = session.create_update_installer();
    installer.set_updates(&hello.updates);
    let installed = installer.install().unwrap();
    assert!(
        installed
            .update_results
            .iter()
            .all(|r| !r.result_code.is_success()),
        "{installed:?}"
    );
    let root: Vec<_> = fs::read_dir(machine.path().join("root"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(root.is_empty(), "nothing installed: {root:?}");
}

#[test]
fn a_signed_catalog_wua_cannot_read_is_refused_and_not_stored() {
    let repo = Repo::new();
    repo.publish(1);
    let client = Client::directory(&repo);
    client.refresh().unwrap();
    let before = client.stored();
    // The publisher signs a catalog.json that is not a wua catalog.
    repo.set_catalog(b"{\"format\": \"something else\"}");
    repo.publish(2);
    let err = client.refresh().unwrap_err();
    assert_eq!(err.hresult(), WU_E_INVALID_FILE, "{err}");
    assert!(err.to_string().contains("republish"), "{err}");
    assert_eq!(
        client.stored(),
        before,
        "the readable catalog and its metadata stay"
    );
    assert!(client.load_trusted().unwrap().is_some());
}
