//! Publishing: keys, repositories, signing — the publisher's side of a signed catalog
//! (`wua catalog keygen|init|publish|add|sign|rotate`; the guide is `docs/publishing.md`).
//!
//! A repository has the four top-level TUF roles, each with its own Ed25519 key (or keys, for
//! a threshold above 1):
//!
//! | role | signs | default expiry |
//! |---|---|---|
//! | root | `N.root.json`: which keys every role has, and each role's threshold | 5 years |
//! | targets | `N.targets.json`: every target's length and SHA-256 | 365 days |
//! | snapshot | `N.snapshot.json`: the version and hash of `targets.json` | 30 days |
//! | timestamp | `timestamp.json`: the version and hash of `snapshot.json` | 7 days |
//!
//! Keys live in a keys directory: `root.pem`, `targets.pem`, `snapshot.pem` and
//! `timestamp.pem` ([`generate_keys`] writes them), PKCS#8 `PRIVATE KEY` PEM files. For a
//! threshold above 1, a role's further keys are `ROLE-NAME.pem` files beside them
//! (`root-2.pem`, …): every key file of a role signs.
//!
//! The targets are exactly `catalog.json` ([`CATALOG_TARGET`]) and every payload the catalog
//! references ([`payload_target`]). Consistent snapshots are on: a target is stored as
//! `targets/<sha256>.<name>`, and metadata as `N.root.json`, `N.targets.json`,
//! `N.snapshot.json` plus `timestamp.json`. `metadata/root.json` is a copy of the newest root:
//! the trust anchor a publisher hands to clients (`wua service add`).
//!
//! [`generate_keys`] writes the keys, [`init_repository`] the first root, [`publish`] (or
//! [`publish_sources`]) a release, [`add_updates`] a release with updates added or replaced,
//! [`resign`] the same release with fresh expiry dates, and [`rotate_keys`] a new root (new
//! keys, or a renewed expiry) with the release re-signed under it.
//!
//! **Publication order.** Every command checks everything it can before writing anything (a
//! bad catalog, a damaged payload or a wrong key leaves the repository as it was, byte for
//! byte). Then it writes the target files, then `N.targets.json`, `N.snapshot.json` and, last,
//! `timestamp.json`: until that last rename, clients see the previous release. Every file is
//! written to a temporary name, synced and renamed into place. Old target files stay, since
//! clients in the middle of an update may still fetch them. A command holds an exclusive lock
//! on `metadata/` while it runs, so two publishers cannot interleave.
//!
//! **Reproducible output.** Ed25519 signatures are deterministic and every metadata file is
//! pretty-printed JSON with sorted keys (and signatures sorted by key id), so the same keys,
//! catalog, versions and expiry dates give the same bytes. (tough's own
//! `SignedRepository::write` prints maps in hash-map order, which changes from run to run,
//! and writes files in place; this module builds tough's schema types, signs their canonical
//! form with tough's signers and writes the files itself.)

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::num::NonZeroU64;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use serde_json::Value;
use tough::TargetName;
use tough::key_source::KeySource;
use tough::schema::decoded::{Decoded, Hex};
use tough::schema::key::Key;
use tough::schema::{
    Hashes, Metafile, Role, RoleKeys, RoleType, Root, Signature, Signed, Snapshot, Target, Targets,
    Timestamp as TimestampRole,
};
use tough::sign::{Sign, parse_keypair};
use uuid::Uuid;

use super::{CATALOG_TARGET, METADATA_DIR, TARGETS_DIR, payload_target};
use crate::catalog::{self, CATALOG_FILE, Catalog, CatalogFile, PAYLOAD_DIR, UpdateDefinition};
use crate::error::{Error, IoContext, Result};
use crate::hresult::{E_INVALIDARG, WU_E_INVALID_FILE, WU_E_OPERATIONINPROGRESS, WU_E_UNEXPECTED};

/// The TUF specification version the metadata declares.
const SPEC_VERSION: &str = "1.0.0";

/// Default lifetime of the root metadata: 5 years. The root key signs rarely (creating the
/// repository, rotating keys) and should be kept offline; clients must be given a new root
/// before this passes.
pub const DEFAULT_ROOT_DAYS: i64 = 5 * 365 + 1;
/// Default lifetime of the targets metadata: 365 days. It changes with every release.
pub const DEFAULT_TARGETS_DAYS: i64 = 365;
/// Default lifetime of the snapshot metadata: 30 days.
pub const DEFAULT_SNAPSHOT_DAYS: i64 = 30;
/// Default lifetime of the timestamp metadata: 7 days. This bounds how long a client can be
/// kept on an old release (a freeze attack) without noticing; re-sign ([`resign`]) well within
/// it, e.g. daily.
pub const DEFAULT_TIMESTAMP_DAYS: i64 = 7;

/// The key file names of the four top-level roles, in the order they are generated.
pub const KEY_FILES: [(&str, RoleType); 4] = [
    ("root.pem", RoleType::Root),
    ("targets.pem", RoleType::Targets),
    ("snapshot.pem", RoleType::Snapshot),
    ("timestamp.pem", RoleType::Timestamp),
];

/// How [`init_repository`] creates the root metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitOptions {
    /// When the root metadata (`1.root.json`) expires.
    pub root_expires: Timestamp,
    /// How many signatures each role needs. With more than 1, the keys directory must hold at
    /// least that many keys per role (`ROLE.pem` and `ROLE-*.pem`).
    pub threshold: NonZeroU64,
}

impl InitOptions {
    /// Root expiring [`DEFAULT_ROOT_DAYS`] from now, threshold 1.
    pub fn from_now() -> InitOptions {
        InitOptions::days_from_now(DEFAULT_ROOT_DAYS)
    }

    /// Root expiring `days` days from now (whole seconds), threshold 1.
    pub fn days_from_now(days: i64) -> InitOptions {
        InitOptions::until(days_from_now(days))
    }

    /// Root expiring at `root_expires`, threshold 1.
    pub fn until(root_expires: Timestamp) -> InitOptions {
        InitOptions {
            root_expires,
            threshold: NonZeroU64::MIN,
        }
    }
}

/// The expiry dates of the metadata [`publish`], [`add_updates`] and [`resign`] sign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishOptions {
    /// When `N.targets.json` expires.
    pub targets_expires: Timestamp,
    /// When `N.snapshot.json` expires.
    pub snapshot_expires: Timestamp,
    /// When `timestamp.json` expires.
    pub timestamp_expires: Timestamp,
}

impl PublishOptions {
    /// The default lifetimes from now: [`DEFAULT_TARGETS_DAYS`], [`DEFAULT_SNAPSHOT_DAYS`],
    /// [`DEFAULT_TIMESTAMP_DAYS`].
    pub fn from_now() -> PublishOptions {
        PublishOptions::days_from_now(
            DEFAULT_TARGETS_DAYS,
            DEFAULT_SNAPSHOT_DAYS,
            DEFAULT_TIMESTAMP_DAYS,
        )
    }

    /// Each role expiring so many days from now (whole seconds).
    pub fn days_from_now(targets_days: i64, snapshot_days: i64, timestamp_days: i64) -> Self {
        PublishOptions {
            targets_expires: days_from_now(targets_days),
            snapshot_expires: days_from_now(snapshot_days),
            timestamp_expires: days_from_now(timestamp_days),
        }
    }

    /// Every role expiring at the same fixed time (reproducible output, as for the example
    /// repository).
    pub fn until(expires: Timestamp) -> PublishOptions {
        PublishOptions {
            targets_expires: expires,
            snapshot_expires: expires,
            timestamp_expires: expires,
        }
    }

    fn check(&self) -> Result<()> {
        check_future("targets", self.targets_expires)?;
        check_future("snapshot", self.snapshot_expires)?;
        check_future("timestamp", self.timestamp_expires)
    }
}

/// `now + days`, in whole seconds.
fn days_from_now(days: i64) -> Timestamp {
    let now = Timestamp::from_second(Timestamp::now().as_second()).expect("now is in range");
    now.checked_add(SignedDuration::from_hours(days.saturating_mul(24)))
        .unwrap_or(Timestamp::MAX)
}

fn check_future(role: &str, expires: Timestamp) -> Result<()> {
    if expires <= Timestamp::now() {
        return Err(Error::code(
            E_INVALIDARG,
            format!(
                "the {role} metadata would expire at {expires}, which is not in the future; give a later expiry"
            ),
        ));
    }
    Ok(())
}

/// What [`publish`], [`add_updates`] or [`resign`] published.
#[derive(Clone, Debug, Serialize)]
pub struct PublishSummary {
    /// The repository directory.
    pub repository: PathBuf,
    /// The version of the newest root metadata.
    pub root_version: u64,
    /// When the newest root metadata expires.
    pub root_expires: Timestamp,
    /// The version of the new `N.targets.json`.
    pub targets_version: u64,
    /// When it expires.
    pub targets_expires: Timestamp,
    /// The version of the new `N.snapshot.json`.
    pub snapshot_version: u64,
    /// When it expires.
    pub snapshot_expires: Timestamp,
    /// The version of the new `timestamp.json`.
    pub timestamp_version: u64,
    /// When it expires.
    pub timestamp_expires: Timestamp,
    /// How many targets the targets metadata lists (`catalog.json` and the payloads).
    pub targets: usize,
    /// How many target files were written to `targets/` (the others were there already).
    pub target_files_written: usize,
    /// The published catalog's name.
    pub catalog_name: String,
    /// How many updates the published catalog has.
    pub updates: usize,
    /// The SHA-256 of the published `catalog.json`.
    pub catalog_sha256: String,
    /// Updates that [`add_updates`] added (empty for the other commands).
    pub added: Vec<Uuid>,
    /// Updates that [`add_updates`] replaced: same update id, new definition (empty for the
    /// other commands).
    pub replaced: Vec<Uuid>,
}

// ---------------------------------------------------------------------------------------------
// Keys

/// A signing key in a PEM file, for tough's signing API.
///
/// Reads a PKCS#8 `PRIVATE KEY` (Ed25519, as [`generate_keys`] writes, or ECDSA P-256 / RSA) or
/// an `RSA PRIVATE KEY`. tough's own `LocalKeySource` takes Ed25519 keys only as raw PKCS#8
/// DER; this one decodes the PEM first.
#[derive(Clone, Debug)]
pub struct PemKeySource {
    /// The PEM file.
    pub path: PathBuf,
}

#[async_trait::async_trait]
impl KeySource for PemKeySource {
    async fn as_sign(
        &self,
    ) -> std::result::Result<Box<dyn Sign>, Box<dyn std::error::Error + Send + Sync + 'static>>
    {
        let data = tokio::fs::read(&self.path).await?;
        Ok(parse_pem_key(&data)?)
    }

    async fn write(
        &self,
        value: &str,
        _key_id_hex: &str,
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        write_private(&self.path, value.as_bytes(), true)?;
        Ok(())
    }
}

/// Decodes a PEM private key into a signer; the error says what the file holds instead.
fn parse_pem_key(data: &[u8]) -> std::result::Result<Box<dyn Sign>, String> {
    let unrecognised = "is not an Ed25519, ECDSA P-256 or RSA private key";
    match pem::parse(data) {
        Ok(block) if block.tag() == "PRIVATE KEY" => match parse_keypair(block.contents()) {
            Ok(key) => Ok(Box::new(key)),
            // tough reads PKCS#8 RSA keys from the PEM text itself.
            Err(_) => parse_keypair(data)
                .map(|key| Box::new(key) as Box<dyn Sign>)
                .map_err(|_| unrecognised.to_string()),
        },
        Ok(block) if block.tag() == "RSA PRIVATE KEY" => parse_keypair(data)
            .map(|key| Box::new(key) as Box<dyn Sign>)
            .map_err(|e| format!("{unrecognised} ({e})")),
        Ok(block) => Err(format!(
            "holds a PEM \"{}\" block, not a \"PRIVATE KEY\"",
            block.tag()
        )),
        Err(e) => Err(format!("is not a PEM private key file ({e})")),
    }
}

/// Writes a private file (mode 0600) under its final name without ever replacing an existing
/// file (unless `replace`): a temporary file, synced, then hard-linked (or renamed) into place.
fn write_private(path: &Path, bytes: &[u8], replace: bool) -> io::Result<()> {
    let tmp = temp_name(path);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.set_permissions(fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    if replace {
        fs::rename(&tmp, path)
    } else {
        let linked = fs::hard_link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        linked
    }
}

/// Generates a new key for each role in `dir`: `root.pem`, `targets.pem`, `snapshot.pem` and
/// `timestamp.pem`, Ed25519 PKCS#8 as PEM `PRIVATE KEY`, mode 0600. `dir` is created (mode
/// 0700) if it does not exist.
///
/// Refuses, writing nothing, if any of the four files exists: a key that signed a repository
/// must never be overwritten by accident (`E_INVALIDARG`, naming the file).
pub fn generate_keys(dir: &Path) -> Result<()> {
    for (file, _) in KEY_FILES {
        let path = dir.join(file);
        if fs::symlink_metadata(&path).is_ok() {
            return Err(Error::code(
                E_INVALIDARG,
                format!(
                    "{} already exists: keys are never overwritten (it may sign a repository); move it away or generate the keys into another directory",
                    path.display()
                ),
            ));
        }
    }
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::code(
                E_INVALIDARG,
                format!(
                    "{} exists and is not a directory; pass a new or existing directory for the keys",
                    dir.display()
                ),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent).at("cannot create directory", parent)?;
            }
            fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .at("cannot create directory", dir)?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .at("cannot set the mode of", dir)?;
        }
        Err(e) => return Err(Error::io("cannot read", dir, e)),
    }
    let rng = SystemRandom::new();
    for (file, _) in KEY_FILES {
        let path = dir.join(file);
        let document =
            aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| {
                Error::code(
                    WU_E_UNEXPECTED,
                    format!(
                        "cannot generate the key {}: the system random number generator failed",
                        path.display()
                    ),
                )
            })?;
        let text = pem::encode_config(
            &pem::Pem::new("PRIVATE KEY", document.as_ref().to_vec()),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        );
        write_private(&path, text.as_bytes(), false).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                Error::code(
                    E_INVALIDARG,
                    format!(
                        "{} already exists: keys are never overwritten; move it away or generate the keys into another directory",
                        path.display()
                    ),
                )
            } else {
                Error::io("cannot write key", &path, e)
            }
        })?;
    }
    sync_dir(dir)
}

/// One key of a role, loaded from its PEM file.
struct LoadedKey {
    path: PathBuf,
    signer: Box<dyn Sign>,
    key: Key,
    id: Decoded<Hex>,
}

impl std::fmt::Debug for LoadedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedKey")
            .field("path", &self.path)
            .field("id", &hex::encode(&*self.id))
            .finish()
    }
}

fn role_name(role: RoleType) -> &'static str {
    match role {
        RoleType::Root => "root",
        RoleType::Targets => "targets",
        RoleType::Snapshot => "snapshot",
        RoleType::Timestamp => "timestamp",
        RoleType::DelegatedTargets => "delegated targets",
    }
}

/// The key files of a role in `keys`: `ROLE.pem` (required) and `ROLE-*.pem`, sorted.
fn role_key_files(keys: &Path, role: RoleType) -> Result<Vec<PathBuf>> {
    let name = role_name(role);
    match fs::metadata(keys) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::code(
                E_INVALIDARG,
                format!(
                    "{} is not a keys directory (it is a file); pass the directory `wua catalog keygen` wrote",
                    keys.display()
                ),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::code(
                E_INVALIDARG,
                format!(
                    "the keys directory {} does not exist; create keys with `wua catalog keygen {}` or pass the directory that holds them",
                    keys.display(),
                    keys.display()
                ),
            ));
        }
        Err(e) => return Err(Error::io("cannot read keys directory", keys, e)),
    }
    let main = keys.join(format!("{name}.pem"));
    if !main.is_file() {
        return Err(Error::code(
            E_INVALIDARG,
            format!(
                "the keys directory {} has no {name}.pem (the {name} role's key); pass the directory `wua catalog keygen` wrote",
                keys.display()
            ),
        ));
    }
    let mut files = vec![main];
    let prefix = format!("{name}-");
    let mut extra: Vec<PathBuf> = fs::read_dir(keys)
        .at("cannot list keys directory", keys)?
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with(&prefix) && n.ends_with(".pem")
        })
        .map(|e| e.path())
        .collect();
    extra.sort();
    files.extend(extra);
    Ok(files)
}

/// Loads every key of `role` from `keys` (through [`PemKeySource`]).
async fn load_role_keys(keys: &Path, role: RoleType) -> Result<Vec<LoadedKey>> {
    let mut loaded: Vec<LoadedKey> = Vec::new();
    for path in role_key_files(keys, role)? {
        let signer = PemKeySource { path: path.clone() }
            .as_sign()
            .await
            .map_err(|e| match e.downcast::<io::Error>() {
                Ok(io) => Error::io("cannot read key", &path, *io),
                Err(e) => Error::code(
                    WU_E_INVALID_FILE,
                    format!(
                        "{} {e}; pass a key written by `wua catalog keygen`",
                        path.display()
                    ),
                ),
            })?;
        let key = signer.tuf_key();
        let id = key.key_id().map_err(|e| {
            Error::code(
                WU_E_INVALID_FILE,
                format!(
                    "cannot compute the key id of {}: {}",
                    path.display(),
                    chain(&e)
                ),
            )
        })?;
        if let Some(twin) = loaded.iter().find(|k| k.id == id) {
            return Err(Error::code(
                E_INVALIDARG,
                format!(
                    "{} and {} are the same key; each key of a role must be different",
                    twin.path.display(),
                    path.display()
                ),
            ));
        }
        loaded.push(LoadedKey {
            path,
            signer,
            key,
            id,
        });
    }
    Ok(loaded)
}

/// The keys that sign targets, snapshot and timestamp, checked against the root.
struct Signers {
    targets: Vec<LoadedKey>,
    snapshot: Vec<LoadedKey>,
    timestamp: Vec<LoadedKey>,
}

impl Signers {
    async fn load(keys: &Path, root: &Signed<Root>, repo: &Path) -> Result<Signers> {
        let signers = Signers {
            targets: load_role_keys(keys, RoleType::Targets).await?,
            snapshot: load_role_keys(keys, RoleType::Snapshot).await?,
            timestamp: load_role_keys(keys, RoleType::Timestamp).await?,
        };
        for (role, list) in [
            (RoleType::Targets, &signers.targets),
            (RoleType::Snapshot, &signers.snapshot),
            (RoleType::Timestamp, &signers.timestamp),
        ] {
            check_role_keys(root, role, list, keys, repo)?;
        }
        Ok(signers)
    }
}

/// Every key given for `role` must be one the root trusts for it, and there must be enough of
/// them to meet the role's threshold.
fn check_role_keys(
    root: &Signed<Root>,
    role: RoleType,
    keys: &[LoadedKey],
    keys_dir: &Path,
    repo: &Path,
) -> Result<()> {
    let name = role_name(role);
    let Some(role_keys) = root.signed.roles.get(&role) else {
        return Err(Error::code(
            WU_E_INVALID_FILE,
            format!(
                "the root metadata of {} (version {}) has no {name} role",
                repo.display(),
                root.signed.version
            ),
        ));
    };
    for key in keys {
        if !role_keys.keyids.contains(&key.id) {
            let trusted: Vec<String> = role_keys.keyids.iter().map(short_id).collect();
            return Err(Error::code(
                E_INVALIDARG,
                format!(
                    "{} (key id {}) is not a {name} key of the repository {}: its root metadata (version {}) trusts {} for {name}; pass the keys directory the repository was created with",
                    key.path.display(),
                    short_id(&key.id),
                    repo.display(),
                    root.signed.version,
                    trusted.join(", ")
                ),
            ));
        }
    }
    if (keys.len() as u64) < role_keys.threshold.get() {
        return Err(Error::code(
            E_INVALIDARG,
            format!(
                "the {name} role of {} needs {} signatures, but {} holds {} of its keys ({name}.pem, {name}-*.pem); add the missing keys",
                repo.display(),
                role_keys.threshold,
                keys_dir.display(),
                keys.len()
            ),
        ));
    }
    Ok(())
}

/// The first 16 hex digits of a key id, enough to tell keys apart in messages.
fn short_id(id: &Decoded<Hex>) -> String {
    let mut text = hex::encode(&**id);
    text.truncate(16);
    text
}

// ---------------------------------------------------------------------------------------------
// Signing and serialising metadata

/// Signs the canonical form of `role` with every key, signatures sorted by key id.
async fn sign_role<T: Role + Serialize>(role: T, keys: &[LoadedKey]) -> Result<Signed<T>> {
    let what = role_name(T::TYPE);
    let data = role.canonical_form().map_err(|e| {
        Error::code(
            WU_E_UNEXPECTED,
            format!(
                "cannot serialise the {what} metadata for signing: {}",
                chain(&e)
            ),
        )
    })?;
    let rng = SystemRandom::new();
    let mut signatures = Vec::new();
    for key in keys {
        let sig = key.signer.sign(&data, &rng).await.map_err(|e| {
            Error::code(
                WU_E_UNEXPECTED,
                format!(
                    "cannot sign the {what} metadata with {}: {e}",
                    key.path.display()
                ),
            )
        })?;
        signatures.push(Signature {
            keyid: key.id.clone(),
            sig: sig.into(),
        });
    }
    signatures.sort_by(|a, b| a.keyid.cmp(&b.keyid));
    Ok(Signed {
        signed: role,
        signatures,
    })
}

/// Checks signed metadata against the root, as a client will.
fn self_check<T: Role + Serialize>(root: &Root, signed: &Signed<T>) -> Result<()> {
    root.verify_role(signed).map_err(|e| {
        Error::code(
            WU_E_UNEXPECTED,
            format!(
                "the {} metadata just signed does not verify against the root: {}",
                role_name(T::TYPE),
                chain(&e)
            ),
        )
    })
}

/// A metadata file's bytes: pretty-printed JSON with every object's keys sorted, and a final
/// newline. Deterministic, unlike serialising tough's hash maps directly.
fn metadata_bytes<T: Serialize>(signed: &Signed<T>) -> Vec<u8> {
    fn sorted(value: Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<(String, Value)> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
            }
            Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
            other => other,
        }
    }
    let value = serde_json::to_value(signed).expect("metadata is serialisable");
    let mut bytes = serde_json::to_vec_pretty(&sorted(value)).expect("metadata is serialisable");
    bytes.push(b'\n');
    bytes
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

fn metafile(bytes: &[u8], version: NonZeroU64) -> Metafile {
    Metafile {
        length: Some(bytes.len() as u64),
        hashes: Some(Hashes {
            sha256: sha256(bytes).into(),
            _extra: HashMap::new(),
        }),
        version,
        _extra: HashMap::new(),
    }
}

/// The error and its causes, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            Error::code(
                WU_E_UNEXPECTED,
                format!("cannot start the runtime for signing: {e}"),
            )
        })
}

// ---------------------------------------------------------------------------------------------
// Files

fn temp_name(path: &Path) -> PathBuf {
    path.with_file_name(format!(
        ".{}.wua-tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ))
}

/// Writes `bytes` to `path` through a synced temporary file and a rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_name(path);
    let mut f = File::create(&tmp).at("cannot create", &tmp)?;
    f.write_all(bytes).at("cannot write", &tmp)?;
    f.sync_all().at("cannot sync", &tmp)?;
    drop(f);
    fs::rename(&tmp, path).at("cannot rename into place", path)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .at("cannot sync directory", dir)
}

/// An exclusive lock on a repository's `metadata/` directory, held while a command writes.
struct RepositoryLock {
    _dir: File,
}

fn lock_repository(repo: &Path) -> Result<RepositoryLock> {
    let metadata = repo.join(METADATA_DIR);
    let dir = match File::open(&metadata) {
        Ok(dir) => dir,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_a_repository(repo)),
        Err(e) => return Err(Error::io("cannot open", &metadata, e)),
    };
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            return Err(Error::code(
                WU_E_OPERATIONINPROGRESS,
                format!(
                    "another `wua catalog` command is writing the repository {}; wait for it to finish",
                    repo.display()
                ),
            ));
        }
        return Err(Error::io("cannot lock", &metadata, e));
    }
    // Temporary files of an interrupted command: nobody else writes while the lock is held.
    for dir in [metadata, repo.join(TARGETS_DIR)] {
        if let Ok(entries) = fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') && name.ends_with(".wua-tmp") {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
    }
    Ok(RepositoryLock { _dir: dir })
}

fn not_a_repository(repo: &Path) -> Error {
    Error::code(
        WU_E_INVALID_FILE,
        format!(
            "{} is not a signed catalog repository: it has no {METADATA_DIR}/1.root.json; create one with `wua catalog init {} --keys KEYS`",
            repo.display(),
            repo.display()
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// Reading a repository

/// A repository's trusted state: the newest root and, once something was published, the
/// current targets and the versions of snapshot and timestamp.
struct Current {
    root: Signed<Root>,
    published: Option<Published>,
}

struct Published {
    targets: Signed<Targets>,
    snapshot_version: NonZeroU64,
    timestamp_version: NonZeroU64,
}

/// Loads and verifies the repository's metadata as a client would (expired metadata is
/// accepted: re-signing it is the point): the root chain from `1.root.json` up, each root
/// signed by its predecessor's keys and by its own; then `timestamp.json`, the snapshot it
/// names and the targets the snapshot names, each checked against its length and SHA-256 and
/// verified against the newest root — or the one before it, so that a key rotation
/// interrupted between writing the new root and the new timestamp is finished by the next
/// command.
async fn load_current(repo: &Path) -> Result<Current> {
    let metadata = repo.join(METADATA_DIR);
    let anchor_path = metadata.join("1.root.json");
    let anchor = match fs::read(&anchor_path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_a_repository(repo)),
        Err(e) => return Err(Error::io("cannot read", &anchor_path, e)),
    };
    let does_not_verify = |path: &Path, what: String| {
        Error::code(
            WU_E_INVALID_FILE,
            format!(
                "the repository {} does not verify: {}: {what}; restore its metadata from a backup, or sign with the keys it was created with",
                repo.display(),
                path.display()
            ),
        )
    };
    let mut root: Signed<Root> = parse_metadata(&anchor_path, &anchor)?;
    root.signed
        .verify_role(&root)
        .map_err(|e| does_not_verify(&anchor_path, chain(&e)))?;
    let mut previous = None;
    loop {
        let version = root.signed.version.saturating_add(1);
        let path = metadata.join(format!("{version}.root.json"));
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(Error::io("cannot read", &path, e)),
        };
        let next: Signed<Root> = parse_metadata(&path, &bytes)?;
        if next.signed.version != version {
            return Err(does_not_verify(
                &path,
                format!("it holds root version {}", next.signed.version),
            ));
        }
        root.signed
            .verify_role(&next)
            .and_then(|()| next.signed.verify_role(&next))
            .map_err(|e| does_not_verify(&path, chain(&e)))?;
        previous = Some(std::mem::replace(&mut root, next));
    }

    let timestamp_path = metadata.join("timestamp.json");
    let timestamp_bytes = match fs::read(&timestamp_path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Current {
                root,
                published: None,
            });
        }
        Err(e) => return Err(Error::io("cannot read", &timestamp_path, e)),
    };
    let roots: Vec<&Root> = std::iter::once(&root.signed)
        .chain(previous.as_ref().map(|r| &r.signed))
        .collect();
    let verify = |path: &Path, check: &dyn Fn(&Root) -> tough::schema::Result<()>| {
        let mut failure = None;
        for root in &roots {
            match check(root) {
                Ok(()) => return Ok(()),
                Err(e) => failure = Some(chain(&e)),
            }
        }
        Err(does_not_verify(path, failure.unwrap_or_default()))
    };
    let timestamp: Signed<TimestampRole> = parse_metadata(&timestamp_path, &timestamp_bytes)?;
    verify(&timestamp_path, &|r| r.verify_role(&timestamp))?;

    let (snapshot_path, snapshot_bytes) = read_listed(
        &metadata,
        &timestamp.signed.meta,
        "snapshot.json",
        &timestamp_path,
    )?;
    let snapshot: Signed<Snapshot> = parse_metadata(&snapshot_path, &snapshot_bytes)?;
    verify(&snapshot_path, &|r| r.verify_role(&snapshot))?;

    let (targets_path, targets_bytes) = read_listed(
        &metadata,
        &snapshot.signed.meta,
        "targets.json",
        &snapshot_path,
    )?;
    let targets: Signed<Targets> = parse_metadata(&targets_path, &targets_bytes)?;
    verify(&targets_path, &|r| r.verify_role(&targets))?;
    Ok(Current {
        root,
        published: Some(Published {
            targets,
            snapshot_version: snapshot.signed.version,
            timestamp_version: timestamp.signed.version,
        }),
    })
}

fn parse_metadata<T: serde::de::DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::invalid_file(path, format!("not valid TUF metadata: {e}")))
}

/// Reads the metadata file `meta` lists under `name` (`N.name`, consistent snapshots) and
/// checks its version, length and SHA-256.
fn read_listed(
    metadata: &Path,
    meta: &HashMap<String, Metafile>,
    name: &str,
    listed_in: &Path,
) -> Result<(PathBuf, Vec<u8>)> {
    let Some(file) = meta.get(name) else {
        return Err(Error::invalid_file(listed_in, format!("lists no {name}")));
    };
    let path = metadata.join(format!("{}.{name}", file.version));
    let bytes = fs::read(&path).at("cannot read", &path)?;
    let length_ok = file.length.is_none_or(|l| l == bytes.len() as u64);
    let hash_ok = file
        .hashes
        .as_ref()
        .is_none_or(|h| *h.sha256 == *sha256(&bytes));
    let version_ok = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v.pointer("/signed/version").and_then(Value::as_u64))
        == Some(file.version.get());
    if !(length_ok && hash_ok && version_ok) {
        return Err(Error::invalid_file(
            &path,
            format!(
                "does not match its version, length or SHA-256 in {}; restore the metadata from a backup",
                listed_in.display()
            ),
        ));
    }
    Ok((path, bytes))
}

/// Where the file of a target is in the repository (consistent snapshots).
fn target_file(repo: &Path, name: &str, sha256: &[u8]) -> PathBuf {
    repo.join(TARGETS_DIR)
        .join(format!("{}.{name}", hex::encode(sha256)))
}

/// The published `catalog.json`, read from its target file and checked against the targets
/// metadata.
fn read_published_catalog(repo: &Path, targets: &Targets) -> Result<(PathBuf, CatalogFile)> {
    let name = TargetName::new(CATALOG_TARGET).expect("a valid target name");
    let Some(target) = targets.targets.get(&name) else {
        return Err(Error::code(
            WU_E_INVALID_FILE,
            format!(
                "the repository {} lists no {CATALOG_TARGET} target; publish a catalog with `wua catalog publish SOURCE --repo {}`",
                repo.display(),
                repo.display()
            ),
        ));
    };
    let path = target_file(repo, CATALOG_TARGET, &target.hashes.sha256);
    let bytes = fs::read(&path).at("cannot read", &path)?;
    if bytes.len() as u64 != target.length || sha256(&bytes) != *target.hashes.sha256 {
        return Err(Error::invalid_file(
            &path,
            "does not match its length and SHA-256 in the targets metadata; restore the file from a backup",
        ));
    }
    let file = catalog::parse_catalog(&path, &bytes)?;
    Ok((path, file))
}

// ---------------------------------------------------------------------------------------------
// Preparing targets

/// Where a target's bytes come from.
enum Source {
    /// Bytes read and validated already (`catalog.json`).
    Bytes(Vec<u8>),
    /// A file to copy (a payload); its SHA-256 is checked again while it is copied.
    File(PathBuf),
    /// Already in the repository's `targets/` (re-signing).
    Present,
}

struct Planned {
    length: u64,
    sha256: Vec<u8>,
    source: Source,
}

/// A validated catalog, ready to publish.
struct Prepared {
    targets: BTreeMap<String, Planned>,
    name: String,
    updates: usize,
    catalog_sha256: String,
}

/// Opens a built catalog and checks everything a client will: its metadata, then every
/// payload's size, SHA-256 and archive entries.
fn prepare_catalog(dir: &Path) -> Result<Prepared> {
    let catalog = Catalog::open(dir)?;
    let path = dir.join(CATALOG_FILE);
    let bytes = fs::read(&path).at("cannot read", &path)?;
    let reread = catalog::parse_catalog(&path, &bytes)?;
    if reread.updates.as_slice() != catalog.updates() {
        return Err(Error::invalid_file(
            &path,
            "changed while it was being published; publish again",
        ));
    }
    let mut targets = BTreeMap::new();
    let catalog_sha256 = sha256(&bytes);
    for def in catalog.updates() {
        let name = payload_target(&def.payload.sha256);
        if targets.contains_key(&name) {
            continue;
        }
        catalog.check_payload(&def.payload).map_err(|e| {
            Error::code(
                WU_E_INVALID_FILE,
                format!(
                    "cannot publish the catalog in {}: update {} ({}): {}; rebuild the catalog with `wua catalog build`",
                    dir.display(),
                    def.identity.update_id,
                    def.title,
                    message(&e)
                ),
            )
        })?;
        let sha = hex::decode(&def.payload.sha256).expect("validated as hex");
        targets.insert(
            name,
            Planned {
                length: def.payload.size,
                sha256: sha,
                source: Source::File(catalog.payload_path(&def.payload)),
            },
        );
    }
    targets.insert(
        CATALOG_TARGET.to_string(),
        Planned {
            length: bytes.len() as u64,
            sha256: catalog_sha256.clone(),
            source: Source::Bytes(bytes),
        },
    );
    Ok(Prepared {
        targets,
        name: catalog.name().to_string(),
        updates: catalog.updates().len(),
        catalog_sha256: hex::encode(catalog_sha256),
    })
}

/// An error's own message without its HRESULT suffix, to quote inside another message.
fn message(e: &Error) -> String {
    match e {
        Error::Code { context, .. } => context.clone(),
        other => other.to_string(),
    }
}

/// Copies a payload into `targets/` under a temporary name, hashing it on the way, and renames
/// it into place only if it is what the catalog says.
fn copy_target(from: &Path, to: &Path, length: u64, expected: &[u8]) -> Result<()> {
    let tmp = temp_name(to);
    let mut input = File::open(from).at("cannot read", from)?;
    let mut output = File::create(&tmp).at("cannot create", &tmp)?;
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("cannot read", from, e)),
        };
        ctx.update(&buf[..n]);
        output.write_all(&buf[..n]).at("cannot write", &tmp)?;
        total += n as u64;
    }
    if total != length || ctx.finish().as_ref() != expected {
        drop(output);
        let _ = fs::remove_file(&tmp);
        return Err(Error::invalid_file(
            from,
            format!(
                "changed while it was being published (it no longer has {length} bytes with SHA-256 {}); nothing was published: rebuild the catalog and publish again",
                hex::encode(expected)
            ),
        ));
    }
    output.sync_all().at("cannot sync", &tmp)?;
    drop(output);
    fs::rename(&tmp, to).at("cannot rename into place", to)
}

// ---------------------------------------------------------------------------------------------
// Releasing

struct Versions {
    targets: NonZeroU64,
    snapshot: NonZeroU64,
    timestamp: NonZeroU64,
}

/// Signs targets, snapshot and timestamp for `prepared`, then writes the target files and the
/// metadata in publication order.
async fn release(
    repo: &Path,
    current: &Current,
    signers: &Signers,
    prepared: Prepared,
    opts: &PublishOptions,
    new_root: Option<&[u8]>,
) -> Result<PublishSummary> {
    let root = &current.root.signed;
    let versions = match &current.published {
        Some(p) => Versions {
            targets: p.targets.signed.version.saturating_add(1),
            snapshot: p.snapshot_version.saturating_add(1),
            timestamp: p.timestamp_version.saturating_add(1),
        },
        None => Versions {
            targets: NonZeroU64::MIN,
            snapshot: NonZeroU64::MIN,
            timestamp: NonZeroU64::MIN,
        },
    };

    let mut targets = Targets::new(
        SPEC_VERSION.to_string(),
        versions.targets,
        opts.targets_expires,
    );
    targets.delegations = None;
    for (name, planned) in &prepared.targets {
        let target_name = TargetName::new(name.as_str()).map_err(|e| {
            Error::code(
                E_INVALIDARG,
                format!("{name} is not a valid target name: {}", chain(&e)),
            )
        })?;
        targets.targets.insert(
            target_name,
            Target {
                length: planned.length,
                hashes: Hashes {
                    sha256: planned.sha256.clone().into(),
                    _extra: HashMap::new(),
                },
                custom: HashMap::new(),
                _extra: HashMap::new(),
            },
        );
    }
    let targets = sign_role(targets, &signers.targets).await?;
    self_check(root, &targets)?;
    let targets_bytes = metadata_bytes(&targets);

    let mut snapshot = Snapshot::new(
        SPEC_VERSION.to_string(),
        versions.snapshot,
        opts.snapshot_expires,
    );
    snapshot.meta.insert(
        "targets.json".to_string(),
        metafile(&targets_bytes, versions.targets),
    );
    let snapshot = sign_role(snapshot, &signers.snapshot).await?;
    self_check(root, &snapshot)?;
    let snapshot_bytes = metadata_bytes(&snapshot);

    let mut timestamp = TimestampRole::new(
        SPEC_VERSION.to_string(),
        versions.timestamp,
        opts.timestamp_expires,
    );
    timestamp.meta.insert(
        "snapshot.json".to_string(),
        metafile(&snapshot_bytes, versions.snapshot),
    );
    let timestamp = sign_role(timestamp, &signers.timestamp).await?;
    self_check(root, &timestamp)?;
    let timestamp_bytes = metadata_bytes(&timestamp);

    // Targets first: nothing refers to them until the metadata below is in place.
    let targets_dir = repo.join(TARGETS_DIR);
    fs::create_dir_all(&targets_dir).at("cannot create directory", &targets_dir)?;
    let present = |name: &str, planned: &Planned| {
        fs::metadata(target_file(repo, name, &planned.sha256))
            .is_ok_and(|m| m.is_file() && m.len() == planned.length)
    };
    for (name, planned) in &prepared.targets {
        if matches!(planned.source, Source::Present) && !present(name, planned) {
            return Err(Error::code(
                WU_E_INVALID_FILE,
                format!(
                    "the target {name} is missing from the repository (or has the wrong size): {}; restore it from a backup, or publish the catalog again",
                    target_file(repo, name, &planned.sha256).display()
                ),
            ));
        }
    }
    let mut written = 0;
    for (name, planned) in &prepared.targets {
        let dest = target_file(repo, name, &planned.sha256);
        match &planned.source {
            _ if present(name, planned) => {}
            Source::Present => unreachable!("checked above"),
            Source::Bytes(bytes) => {
                write_atomically(&dest, bytes)?;
                written += 1;
            }
            Source::File(from) => {
                copy_target(from, &dest, planned.length, &planned.sha256)?;
                written += 1;
            }
        }
    }
    sync_dir(&targets_dir)?;

    // Then the metadata, timestamp.json last: its rename publishes the release. A new root
    // (a key rotation) comes just before it: clients read the root first.
    let metadata = repo.join(METADATA_DIR);
    let mut files = vec![
        (
            format!("{}.targets.json", versions.targets),
            &targets_bytes[..],
        ),
        (
            format!("{}.snapshot.json", versions.snapshot),
            &snapshot_bytes[..],
        ),
    ];
    if let Some(root_bytes) = new_root {
        files.push((format!("{}.root.json", root.version), root_bytes));
        files.push(("root.json".to_string(), root_bytes));
    }
    files.push(("timestamp.json".to_string(), &timestamp_bytes[..]));
    for (file, bytes) in files {
        write_atomically(&metadata.join(file), bytes)?;
        sync_dir(&metadata)?;
    }

    Ok(PublishSummary {
        repository: repo.to_path_buf(),
        root_version: root.version.get(),
        root_expires: root.expires,
        targets_version: versions.targets.get(),
        targets_expires: opts.targets_expires,
        snapshot_version: versions.snapshot.get(),
        snapshot_expires: opts.snapshot_expires,
        timestamp_version: versions.timestamp.get(),
        timestamp_expires: opts.timestamp_expires,
        targets: prepared.targets.len(),
        target_files_written: written,
        catalog_name: prepared.name,
        updates: prepared.updates,
        catalog_sha256: prepared.catalog_sha256,
        added: Vec::new(),
        replaced: Vec::new(),
    })
}

// ---------------------------------------------------------------------------------------------
// The commands

/// The root metadata of `version` listing every role's keys in `keys`, and the root keys to
/// sign it with.
async fn build_root(
    keys: &Path,
    version: NonZeroU64,
    opts: &InitOptions,
) -> Result<(Root, Vec<LoadedKey>)> {
    let mut root = Root {
        spec_version: SPEC_VERSION.to_string(),
        consistent_snapshot: true,
        version,
        expires: opts.root_expires,
        keys: HashMap::new(),
        roles: HashMap::new(),
        _extra: HashMap::new(),
    };
    let mut root_signers = Vec::new();
    for (_, role) in KEY_FILES {
        let loaded = load_role_keys(keys, role).await?;
        if (loaded.len() as u64) < opts.threshold.get() {
            let name = role_name(role);
            return Err(Error::code(
                E_INVALIDARG,
                format!(
                    "threshold {} needs at least {} keys for each role, but {} holds {} for {name} ({name}.pem, {name}-*.pem); add keys or lower the threshold",
                    opts.threshold,
                    opts.threshold,
                    keys.display(),
                    loaded.len()
                ),
            ));
        }
        let mut keyids: Vec<Decoded<Hex>> = loaded.iter().map(|k| k.id.clone()).collect();
        keyids.sort();
        for k in &loaded {
            root.keys.insert(k.id.clone(), k.key.clone());
        }
        root.roles.insert(
            role,
            RoleKeys {
                keyids,
                threshold: opts.threshold,
                _extra: HashMap::new(),
            },
        );
        if role == RoleType::Root {
            root_signers = loaded;
        }
    }
    Ok((root, root_signers))
}

/// Creates a repository in `repo` (which must not exist, or be an empty directory):
/// `metadata/1.root.json` and its copy `metadata/root.json`, signed by the root key(s), listing
/// every role's public keys from `keys` with `opts.threshold`, consistent snapshots on; and an
/// empty `targets/`.
///
/// Refuses an existing repository or a non-empty directory (`E_INVALIDARG`), keys missing or not
/// enough for the threshold (`E_INVALIDARG`), unreadable keys (`WU_E_INVALID_FILE`) and an
/// expiry in the past, writing nothing.
pub fn init_repository(repo: &Path, keys: &Path, opts: &InitOptions) -> Result<()> {
    check_future("root", opts.root_expires)?;
    match fs::read_dir(repo) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                let what = if repo.join(METADATA_DIR).join("1.root.json").exists() {
                    "is already a repository"
                } else {
                    "exists and is not empty"
                };
                return Err(Error::code(
                    E_INVALIDARG,
                    format!(
                        "{} {what}; `wua catalog init` creates a new repository in a new or empty directory",
                        repo.display()
                    ),
                ));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
            return Err(Error::code(
                E_INVALIDARG,
                format!(
                    "{} is a file; pass a new or empty directory for the repository",
                    repo.display()
                ),
            ));
        }
        Err(e) => return Err(Error::io("cannot read", repo, e)),
    }
    let rt = runtime()?;
    let root_bytes = rt.block_on(async {
        let (root, root_signers) = build_root(keys, NonZeroU64::MIN, opts).await?;
        let signed = sign_role(root, &root_signers).await?;
        self_check(&signed.signed, &signed)?;
        Ok(metadata_bytes(&signed))
    })?;

    let metadata = repo.join(METADATA_DIR);
    let targets = repo.join(TARGETS_DIR);
    fs::create_dir_all(&metadata).at("cannot create directory", &metadata)?;
    fs::create_dir_all(&targets).at("cannot create directory", &targets)?;
    let _lock = lock_repository(repo)?;
    write_atomically(&metadata.join("1.root.json"), &root_bytes)?;
    write_atomically(&metadata.join("root.json"), &root_bytes)?;
    sync_dir(&metadata)?;
    if let Some(parent) = repo.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Publishes the built catalog in `catalog_dir` (what `wua catalog build` writes: `catalog.json`
/// and `payloads/`) as the repository's new release, signed with the keys in `keys`.
///
/// The catalog is opened and every payload checked completely before anything is signed or
/// written; a bad catalog or payload is `WU_E_INVALID_FILE`, naming it. The targets become
/// exactly `catalog.json` and the payloads it references; targets, snapshot and timestamp each
/// get the next version (1 for the first release). Keys that the repository's root does not
/// trust for their role are refused (`E_INVALIDARG`).
pub fn publish(
    repo: &Path,
    keys: &Path,
    catalog_dir: &Path,
    opts: &PublishOptions,
) -> Result<PublishSummary> {
    publish_with(repo, keys, opts, || prepare_catalog(catalog_dir))
}

/// Builds the catalog source tree `source` (one folder per update, as `wua catalog build`
/// reads) into a temporary directory, and publishes the result as [`publish`] does. Errors
/// about the build name `source`'s folders; nothing is written to `source`.
pub fn publish_sources(
    repo: &Path,
    keys: &Path,
    source: &Path,
    opts: &PublishOptions,
) -> Result<PublishSummary> {
    // Outlives the release: the payloads are copied from it.
    let work = tempfile::tempdir().at(
        "cannot create a temporary directory in",
        &std::env::temp_dir(),
    )?;
    publish_with(repo, keys, opts, || {
        let built = work.path().join("built");
        let what = format!("the catalog built from {}", source.display());
        let renames = [
            (built.join(CATALOG_FILE).display().to_string(), what.clone()),
            (built.display().to_string(), what),
        ];
        catalog::build(source, &built).map_err(|e| rename_paths(e, &renames))?;
        prepare_catalog(&built).map_err(|e| rename_paths(e, &renames))
    })
}

/// Checks the options, locks the repository, loads its state and keys, then prepares the
/// catalog (nothing written yet) and releases it.
fn publish_with(
    repo: &Path,
    keys: &Path,
    opts: &PublishOptions,
    prepare: impl FnOnce() -> Result<Prepared>,
) -> Result<PublishSummary> {
    opts.check()?;
    let rt = runtime()?;
    let _lock = lock_repository(repo)?;
    rt.block_on(async {
        let current = load_current(repo).await?;
        let signers = Signers::load(keys, &current.root, repo).await?;
        let prepared = prepare()?;
        release(repo, &current, &signers, prepared, opts, None).await
    })
}

/// Adds updates to the published catalog and publishes the result: each folder of
/// `update_source_dirs` is one update's source (`update.json` and `payload/`, as
/// `wua catalog build` reads). An update whose id is already in the catalog replaces that
/// definition in place; the others are appended in the order given.
///
/// The new updates are built with [`catalog::build`] in a temporary directory, and the merged
/// catalog is checked like any other before it is published (see [`publish`]).
pub fn add_updates(
    repo: &Path,
    keys: &Path,
    update_source_dirs: &[PathBuf],
    opts: &PublishOptions,
) -> Result<PublishSummary> {
    opts.check()?;
    if update_source_dirs.is_empty() {
        return Err(Error::code(
            E_INVALIDARG,
            "no update folders given; pass one or more folders, each with an update.json and a payload/",
        ));
    }
    for dir in update_source_dirs {
        if !dir.join(catalog::SOURCE_METADATA).is_file() {
            return Err(Error::code(
                E_INVALIDARG,
                format!(
                    "{} is not an update source folder: it has no {}; pass folders laid out as `wua catalog build` reads them",
                    dir.display(),
                    catalog::SOURCE_METADATA
                ),
            ));
        }
    }
    let rt = runtime()?;
    let _lock = lock_repository(repo)?;
    rt.block_on(async {
        let current = load_current(repo).await?;
        let Some(published) = &current.published else {
            return Err(nothing_published(repo));
        };
        let signers = Signers::load(keys, &current.root, repo).await?;
        let (_, old) = read_published_catalog(repo, &published.targets.signed)?;

        let work = tempfile::tempdir().at(
            "cannot create a temporary directory in",
            &std::env::temp_dir(),
        )?;
        let (new_updates, built_dir, renames) =
            build_updates(work.path(), update_source_dirs, &old)?;

        // Merge: a known id is replaced in place, the others are appended.
        let mut file = old.clone();
        file.format_version = catalog::FORMAT_VERSION;
        let mut added = Vec::new();
        let mut replaced = Vec::new();
        for def in new_updates {
            let id = def.identity.update_id;
            match file.updates.iter().position(|u| u.identity.update_id == id) {
                Some(i) => {
                    file.updates[i] = def;
                    replaced.push(id);
                }
                None => {
                    file.updates.push(def);
                    added.push(id);
                }
            }
        }

        // The merged catalog: catalog.json, and payloads linked from the new build or from the
        // repository's targets.
        let merged = work.path().join("merged");
        let payloads = merged.join(PAYLOAD_DIR);
        fs::create_dir_all(&payloads).at("cannot create directory", &payloads)?;
        let mut json = serde_json::to_vec_pretty(&file).expect("serialisable");
        json.push(b'\n');
        let merged_json = merged.join(CATALOG_FILE);
        fs::write(&merged_json, &json).at("cannot write", &merged_json)?;
        // Links are resolved from `payloads/`: they need absolute targets.
        let repo_abs = fs::canonicalize(repo).at("cannot resolve", repo)?;
        let mut linked = HashSet::new();
        for def in &file.updates {
            let sha = &def.payload.sha256;
            if !linked.insert(sha.clone()) {
                continue;
            }
            let name = payload_target(sha);
            let fresh = built_dir.join(PAYLOAD_DIR).join(&name);
            let source = if fresh.is_file() {
                fresh
            } else {
                match hex::decode(sha) {
                    Ok(bytes) => target_file(&repo_abs, &name, &bytes),
                    Err(_) => continue, // the catalog check below names the bad digest
                }
            };
            let link = payloads.join(&name);
            std::os::unix::fs::symlink(&source, &link).at("cannot link", &link)?;
        }
        let mut renames = renames;
        renames.push((
            merged_json.display().to_string(),
            format!("the catalog of {} with the added updates", repo.display()),
        ));
        renames.push((
            payloads.display().to_string(),
            format!(
                "(the payloads of {} and of the added updates)",
                repo.display()
            ),
        ));
        renames.push((
            merged.display().to_string(),
            format!("the catalog of {} with the added updates", repo.display()),
        ));
        let prepared = prepare_catalog(&merged).map_err(|e| rename_paths(e, &renames))?;
        let mut summary = release(repo, &current, &signers, prepared, opts, None).await?;
        summary.added = added;
        summary.replaced = replaced;
        Ok(summary)
    })
}

fn nothing_published(repo: &Path) -> Error {
    Error::code(
        WU_E_INVALID_FILE,
        format!(
            "the repository {} has no published catalog yet; publish one first with `wua catalog publish SOURCE --repo {}`",
            repo.display(),
            repo.display()
        ),
    )
}

/// Builds the given update folders with the catalog builder, in `work`. Updates of the
/// published catalog that the new ones bundle are built along as stubs (their definition
/// without bundles, rules or payload), so that the builder's checks see the parts; only the
/// new updates are returned, with the build directory and the temporary paths to name in
/// messages instead.
#[allow(clippy::type_complexity)]
fn build_updates(
    work: &Path,
    dirs: &[PathBuf],
    old: &CatalogFile,
) -> Result<(Vec<Arc<UpdateDefinition>>, PathBuf, Vec<(String, String)>)> {
    let source = work.join("source");
    let built = work.join("built");
    fs::create_dir_all(&source).at("cannot create directory", &source)?;
    fs::write(source.join("catalog-name"), &old.name).at("cannot write", &source)?;
    let mut renames = Vec::new();
    let mut new_ids = HashSet::new();
    let mut bundled = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let absolute = fs::canonicalize(dir).at("cannot resolve", dir)?;
        let link = source.join(format!("1-update-{i:05}"));
        std::os::unix::fs::symlink(&absolute, &link).at("cannot link", &link)?;
        renames.push((link.display().to_string(), dir.display().to_string()));
        // Which ids the new updates have and bundle (a bad update.json is reported by the
        // builder below).
        if let Ok(text) = fs::read(dir.join(catalog::SOURCE_METADATA))
            && let Ok(value) = serde_json::from_slice::<Value>(&text)
        {
            if let Some(id) = value
                .pointer("/identity/update_id")
                .and_then(Value::as_str)
                .and_then(|s| Uuid::parse_str(s).ok())
            {
                new_ids.insert(id);
            }
            if let Some(parts) = value.get("bundled_updates").and_then(Value::as_array) {
                bundled.extend(
                    parts
                        .iter()
                        .filter_map(Value::as_str)
                        .filter_map(|s| Uuid::parse_str(s).ok()),
                );
            }
        }
    }
    let mut stubbed = HashSet::new();
    for part in bundled {
        if new_ids.contains(&part) || !stubbed.insert(part) {
            continue;
        }
        let Some(def) = old.updates.iter().find(|u| u.identity.update_id == part) else {
            continue;
        };
        let mut value = serde_json::to_value(&**def).expect("serialisable");
        if let Some(obj) = value.as_object_mut() {
            obj.remove("payload");
            obj.remove("applicability");
            obj.insert("bundled_updates".into(), Value::Array(Vec::new()));
        }
        let folder = source.join(format!("0-published-{part}"));
        fs::create_dir_all(&folder).at("cannot create directory", &folder)?;
        let meta = folder.join(catalog::SOURCE_METADATA);
        fs::write(&meta, serde_json::to_vec(&value).expect("serialisable"))
            .at("cannot write", &meta)?;
        renames.push((
            folder.display().to_string(),
            format!("the published update {part}"),
        ));
    }
    let what = format!(
        "the catalog built from {}",
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    renames.push((built.join(CATALOG_FILE).display().to_string(), what.clone()));
    renames.push((built.display().to_string(), what));
    let report = catalog::build(&source, &built).map_err(|e| rename_paths(e, &renames))?;
    let updates = report
        .catalog
        .updates()
        .iter()
        .filter(|u| {
            new_ids.contains(&u.identity.update_id) || !stubbed.contains(&u.identity.update_id)
        })
        .cloned()
        .collect();
    Ok((updates, built, renames))
}

/// The same error, with temporary paths replaced by what the user knows them as.
fn rename_paths(e: Error, renames: &[(String, String)]) -> Error {
    let replace = |text: &str| {
        renames
            .iter()
            .fold(text.to_string(), |t, (from, to)| t.replace(from, to))
    };
    match e {
        Error::Code { hresult, context } => Error::code(hresult, replace(&context)),
        Error::Io {
            action,
            path,
            cause,
            hresult,
        } => Error::Io {
            action,
            path: PathBuf::from(replace(&path.display().to_string())),
            cause,
            hresult,
        },
        other => other,
    }
}

/// Re-signs the current release with fresh expiry dates: new versions of targets (same
/// targets), snapshot and timestamp. What a publisher runs before the metadata expires (the
/// timestamp first, after [`DEFAULT_TIMESTAMP_DAYS`] by default), also after it expired.
pub fn resign(repo: &Path, keys: &Path, opts: &PublishOptions) -> Result<PublishSummary> {
    opts.check()?;
    let rt = runtime()?;
    let _lock = lock_repository(repo)?;
    rt.block_on(async {
        let current = load_current(repo).await?;
        let Some(published) = &current.published else {
            return Err(nothing_published(repo));
        };
        let signers = Signers::load(keys, &current.root, repo).await?;
        let prepared = present_targets(repo, published)?;
        release(repo, &current, &signers, prepared, opts, None).await
    })
}

/// The published targets, to sign again as they are (their files must be in `targets/`).
fn present_targets(repo: &Path, published: &Published) -> Result<Prepared> {
    let targets = &published.targets.signed;
    let (_, catalog) = read_published_catalog(repo, targets)?;
    let mut planned = BTreeMap::new();
    for (name, target) in &targets.targets {
        planned.insert(
            name.raw().to_string(),
            Planned {
                length: target.length,
                sha256: target.hashes.sha256.to_vec(),
                source: Source::Present,
            },
        );
    }
    let catalog_target = TargetName::new(CATALOG_TARGET).expect("a valid target name");
    Ok(Prepared {
        targets: planned,
        name: catalog.name,
        updates: catalog.updates.len(),
        catalog_sha256: hex::encode(&*targets.targets[&catalog_target].hashes.sha256),
    })
}

/// What [`rotate_keys`] wrote.
#[derive(Clone, Debug, Serialize)]
pub struct RotateSummary {
    /// The repository directory.
    pub repository: PathBuf,
    /// The version of the new root metadata.
    pub root_version: u64,
    /// When it expires.
    pub root_expires: Timestamp,
    /// The threshold of every role in it.
    pub threshold: u64,
    /// The roles whose keys or threshold changed (none when only the expiry was renewed).
    pub roles_changed: Vec<String>,
    /// The release re-signed with the new keys, if one was published.
    pub release: Option<PublishSummary>,
}

/// Writes a new root version listing the keys in `new_keys` (which may be `keys` itself, to
/// renew the root's expiry), signed by the current root keys from `keys` and by the new root
/// keys, so that clients trusting the current root accept it. If a release is published, it is
/// re-signed with the new keys at once (new targets, snapshot and timestamp versions, same
/// targets), and the new root is written just before the new `timestamp.json`.
///
/// Refuses, writing nothing, root keys in `keys` that the current root does not trust or that
/// do not meet its threshold, and new keys that do not meet `root_opts.threshold`
/// (`E_INVALIDARG`).
pub fn rotate_keys(
    repo: &Path,
    keys: &Path,
    new_keys: &Path,
    root_opts: &InitOptions,
    opts: &PublishOptions,
) -> Result<RotateSummary> {
    check_future("root", root_opts.root_expires)?;
    opts.check()?;
    let rt = runtime()?;
    let _lock = lock_repository(repo)?;
    rt.block_on(async {
        let Current {
            root: old_root,
            published,
        } = load_current(repo).await?;
        let old_signers = load_role_keys(keys, RoleType::Root).await?;
        check_role_keys(&old_root, RoleType::Root, &old_signers, keys, repo)?;
        let version = old_root.signed.version.saturating_add(1);
        let (root, mut signers) = build_root(new_keys, version, root_opts).await?;
        for key in old_signers {
            if !signers.iter().any(|k| k.id == key.id) {
                signers.push(key);
            }
        }
        let signed = sign_role(root, &signers).await?;
        // A client that trusts the current root accepts the new one.
        self_check(&old_root.signed, &signed)?;
        self_check(&signed.signed, &signed)?;
        let root_bytes = metadata_bytes(&signed);
        let roles_changed = KEY_FILES
            .iter()
            .filter(|(_, role)| old_root.signed.roles.get(role) != signed.signed.roles.get(role))
            .map(|(_, role)| role_name(*role).to_string())
            .collect();
        let summary = |release| RotateSummary {
            repository: repo.to_path_buf(),
            root_version: version.get(),
            root_expires: root_opts.root_expires,
            threshold: root_opts.threshold.get(),
            roles_changed,
            release,
        };
        match published {
            Some(published) => {
                let signers = Signers::load(new_keys, &signed, repo).await?;
                let prepared = present_targets(repo, &published)?;
                let current = Current {
                    root: signed,
                    published: Some(published),
                };
                let release =
                    release(repo, &current, &signers, prepared, opts, Some(&root_bytes)).await?;
                Ok(summary(Some(release)))
            }
            None => {
                let metadata = repo.join(METADATA_DIR);
                write_atomically(&metadata.join(format!("{version}.root.json")), &root_bytes)?;
                write_atomically(&metadata.join("root.json"), &root_bytes)?;
                sync_dir(&metadata)?;
                Ok(summary(None))
            }
        }
    })
}
