//! The TUF client side of a service: refreshing its signed metadata, and the verified view of
//! its targets that payload downloads are checked against.
//!
//! [`refresh`] runs TUF's client workflow (spec §5, "Detailed client workflow") through the
//! `tough` crate, with expiry enforced and explicit [`Limits`](tough::Limits), starting from the
//! newest root this machine trusts. Whatever a source serves — a directory or an HTTP(S) URL —
//! nothing is believed unless it chains to the root registered for the service:
//!
//! | TUF attack (spec §1.5.2) | defence |
//! |---|---|
//! | arbitrary software | signatures by a threshold of the trusted keys (5.3.4, 5.4.2, 5.5.3, 5.6.3); every target's length and SHA-256 (5.7.3) |
//! | rollback | versions never below the trusted ones (5.3.5, 5.4.3, 5.5.5), kept in a crash-safe datastore ([`super::datastore`]) |
//! | indefinite freeze | expiry of every role (5.3.10, 5.4.4, 5.5.6, 5.6.5); a clock stepped back is refused |
//! | mix-and-match | the snapshot's and targets' versions and hashes must be those the timestamp and snapshot sign (5.5.2, 5.5.4, 5.6.2, 5.6.4) |
//! | endless data | size limits on every metadata file (5.3.3, 5.4.1), signed lengths elsewhere (5.5.1, 5.6.1, 5.7.3) |
//! | slow retrieval | every read must make progress within the stall timeout, at a minimum average rate |
//!
//! [`load_trusted`] verifies the stored metadata again without touching the source (WUA's
//! offline search), and [`check_trusted_root`] vets a `root.json` before a service is added.
//!
//! Every failure maps to one HRESULT; `docs/signed-catalogs.md` has the table.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::fs;
use std::future::Future;
use std::io::{self, Read, Write};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tough::schema::{Root, Signed, Snapshot, Targets, Timestamp};
use tough::{
    ExpirationEnforcement, FilesystemTransport, Limits, Repository, RepositoryLoader, TargetName,
    Transport, TransportError, TransportErrorKind, TransportStream,
};
use url::Url;

use super::datastore::{self, Committed, Verified, WorkDir};
use super::{CATALOG_TARGET, payload_target};
use crate::error::{Error, IoContext, Result};
use crate::hresult::*;
use crate::net::{self, NetworkOptions};
use crate::service::{ServicePaths, ServiceSource, UpdateService};

/// Largest `N.root.json` accepted (spec 5.3.3: the size is unknown, so the client bounds it).
pub const MAX_ROOT_SIZE: u64 = 1024 * 1024;
/// Largest `timestamp.json` accepted (spec 5.4.1: the size is unknown, so the client bounds it).
pub const MAX_TIMESTAMP_SIZE: u64 = 1024 * 1024;
/// Largest snapshot accepted when the timestamp does not sign its length (spec 5.5.1).
pub const MAX_SNAPSHOT_SIZE: u64 = 1024 * 1024;
/// Largest targets metadata accepted when the snapshot does not sign its length (spec 5.6.1).
///
/// A payload's entry in `targets.json` takes about 250 bytes, so 64 MiB covers a quarter of a
/// million payloads — a catalog of 100,000 updates with room to spare. Repositories written by
/// `wua catalog` (and tough's editor) sign the length, and then that length is the bound.
pub const MAX_TARGETS_SIZE: u64 = 64 * 1024 * 1024;
/// Most root versions followed in one refresh (spec 5.3.3, "Y may be 2^10").
pub const MAX_ROOT_UPDATES: u64 = 1024;
/// Slowest average transfer rate accepted over HTTP, in bytes per second (slow-retrieval
/// defence). Measured over windows of the stall timeout, so a server dripping a byte at a time,
/// never silent long enough to trip the stall timeout, still fails with `WU_E_TIME_OUT`.
pub const MIN_TRANSFER_RATE: u64 = 1024;

/// The limits passed to tough (endless-data defence, spec §1.5.2).
fn limits() -> Limits {
    Limits {
        max_root_size: MAX_ROOT_SIZE,
        max_targets_size: MAX_TARGETS_SIZE,
        max_timestamp_size: MAX_TIMESTAMP_SIZE,
        max_snapshot_size: MAX_SNAPSHOT_SIZE,
        max_root_updates: MAX_ROOT_UPDATES,
    }
}

/// One target as the trusted targets metadata describes it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TargetInfo {
    /// The target name (`catalog.json`, `<sha256>.tar.zst`).
    pub name: String,
    /// Its signed length in bytes.
    pub length: u64,
    /// Its signed SHA-256, lower-case hex.
    pub sha256: String,
    /// Where to fetch it: the service's targets URL plus `<sha256>.<name>` when the root uses
    /// consistent snapshots, else plus `<name>` (spec 5.7.3).
    pub url: Url,
}

/// The verified view of a service's newest metadata: every target it signs, with the length,
/// SHA-256 and URL a download must match. Built only from metadata that passed the whole TUF
/// workflow; a repository without the `catalog.json` target is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedTargets {
    targets: BTreeMap<String, TargetInfo>,
    expires: jiff::Timestamp,
    targets_version: u64,
    root_version: u64,
}

impl TrustedTargets {
    /// The target named `target_name`, if the trusted metadata signs one.
    pub fn get(&self, target_name: &str) -> Option<&TargetInfo> {
        self.targets.get(target_name)
    }

    /// The payload archive with this SHA-256 (the target [`payload_target`]`(sha256)`).
    pub fn payload(&self, sha256: &str) -> Option<&TargetInfo> {
        self.get(&payload_target(&sha256.to_ascii_lowercase()))
    }

    /// The `catalog.json` target.
    pub fn catalog(&self) -> &TargetInfo {
        self.targets
            .get(CATALOG_TARGET)
            .expect("a TrustedTargets is only built with the catalog target")
    }

    /// Every signed target, by name.
    pub fn targets(&self) -> impl Iterator<Item = &TargetInfo> {
        self.targets.values()
    }

    /// When this view stops being trustworthy: the earliest expiry of the timestamp, snapshot
    /// and targets metadata.
    pub fn expires(&self) -> jiff::Timestamp {
        self.expires
    }

    /// The version of the targets metadata.
    pub fn targets_version(&self) -> u64 {
        self.targets_version
    }

    /// The version of the trusted root.
    pub fn root_version(&self) -> u64 {
        self.root_version
    }

    /// The view of a loaded repository. `Err(())`: it has no catalog target.
    fn from_repository(repo: &Repository, targets_url: &Url) -> std::result::Result<Self, ()> {
        let consistent = repo.root().signed.consistent_snapshot;
        let mut targets = BTreeMap::new();
        for (name, target) in repo.all_targets() {
            let sha256 = hex::encode(&target.hashes.sha256);
            let Some(url) = target_url(targets_url, name, &sha256, consistent) else {
                tracing::warn!(
                    "ignoring target {:?}: its file name leaves the targets URL",
                    name.raw()
                );
                continue;
            };
            targets.insert(
                name.raw().to_owned(),
                TargetInfo {
                    name: name.raw().to_owned(),
                    length: target.length,
                    sha256,
                    url,
                },
            );
        }
        if !targets.contains_key(CATALOG_TARGET) {
            return Err(());
        }
        let expires = [
            repo.timestamp().signed.expires,
            repo.snapshot().signed.expires,
            repo.targets().signed.expires,
        ]
        .into_iter()
        .min()
        .expect("three roles");
        Ok(TrustedTargets {
            targets,
            expires,
            targets_version: repo.targets().signed.version.get(),
            root_version: repo.root().signed.version.get(),
        })
    }
}

/// The URL tough fetches a target from (spec 5.7.3): `<sha256>.<name>` with consistent
/// snapshots, else `<name>`, below the targets URL. `None` if the name would leave it.
fn target_url(targets_url: &Url, name: &TargetName, sha256: &str, consistent: bool) -> Option<Url> {
    let file = if consistent {
        format!("{sha256}.{}", name.resolved())
    } else {
        name.resolved().to_owned()
    };
    let url = targets_url.join(&file).ok()?;
    url.as_str()
        .starts_with(targets_url.as_str())
        .then_some(url)
}

// ---------------------------------------------------------------------------------------------
// The public operations

/// Online refresh (TUF client workflow, spec §5): loads the newest metadata of `service`
/// through tough, starting from the newest trusted root in the datastore (or
/// `paths.trusted_root` the first time), with expiry enforced and explicit limits; then reads
/// the `catalog.json` target (length and hash verified, spec 5.7.3) and stores it at
/// `paths.catalog` (temporary file, fsync, rename); returns the trusted view.
///
/// The committed datastore changes only when everything succeeded, atomically
/// ([`super::datastore`]); a rejected refresh leaves it and `paths.catalog` as they were.
/// Concurrent refreshes of one service, from any process, run one after the other. A directory
/// source never uses the network; the catalog is not downloaded again when the stored one
/// already matches the signed target.
///
/// Call it from a plain thread: it runs tough on a runtime of its own (from inside a tokio
/// runtime it moves to a helper thread for that).
pub fn refresh(
    service: &UpdateService,
    paths: &ServicePaths,
    net: &NetworkOptions,
) -> Result<TrustedTargets> {
    let ctx = Ctx {
        service,
        offline: false,
    };
    fs::create_dir_all(&paths.dir).at("cannot create directory", &paths.dir)?;
    let _lock = datastore::Lock::exclusive(&paths.dir)?;
    datastore::recover(&paths.datastore)?;
    remove_stale_catalog_files(&paths.dir);
    let committed = if paths.datastore.is_dir() {
        Some(Committed::read(&paths.datastore).map_err(|e| ctx.local(e))?)
    } else {
        None
    };
    // tough never reads root.json from its datastore itself (spec 5.2): hand it the newest
    // trusted root, so that root rotations persist.
    let root = match &committed {
        Some(committed) => committed.root_bytes.clone(),
        None => read_trust_anchor(&ctx, paths)?,
    };
    let work = WorkDir::stage(&paths.datastore, committed.as_ref())?;
    let capture = Capture::default();
    let transport = ServiceTransport::online(&service.source, net, capture.clone())?;

    let (trusted, verified, catalog) = block_on(async {
        let repo = load(&root, &service.source, transport, work.path())
            .await
            .map_err(|e| ctx.tough(&e))?;
        let trusted = TrustedTargets::from_repository(&repo, &service.source.targets_url())
            .map_err(|()| ctx.no_catalog())?;
        let verified = capture.verified(&repo, &service.source.metadata_url())?;
        let catalog = if file_matches(&paths.catalog, trusted.catalog()) {
            None
        } else {
            Some(fetch_catalog(&ctx, &repo, &paths.dir).await?)
        };
        Ok::<_, Error>((trusted, verified, catalog))
    })??;

    if let Some(catalog) = &catalog {
        // Signed is not the same as readable: a catalog this wua cannot read is refused here,
        // before it replaces the one every later command reads.
        let bytes = fs::read(catalog.path()).at("cannot read", catalog.path())?;
        crate::catalog::parse_catalog(catalog.path(), &bytes).map_err(|e| {
            Error::code(
                e.hresult(),
                format!(
                    "the service {} publishes a signed catalog.json that wua cannot read, so it was not stored: {e}; ask its publisher to republish it (`wua catalog verify` checks a catalog)",
                    service.name
                ),
            )
        })?;
    }
    work.write_verified(&verified)?;
    // The catalog first: after a crash between the two, a first refresh looks never done
    // (no datastore), and a later one leaves a catalog that `load_trusted` refuses until the
    // next refresh rewrites it.
    if let Some(catalog) = catalog {
        catalog
            .persist(&paths.catalog)
            .map_err(|e| Error::io("cannot rename into", &paths.catalog, e.error))?;
        datastore::sync_parent(&paths.catalog)?;
    }
    work.commit()?;
    tracing::info!(
        service = %service.name,
        targets_version = trusted.targets_version(),
        root_version = trusted.root_version(),
        "refreshed the signed metadata"
    );
    Ok(trusted)
}

/// Offline (WUA's `Online = false`): the committed metadata verified again without touching
/// the source — signatures against the trusted root, expiry (spec 5.3.10, 5.4.4, 5.5.6, 5.6.5)
/// and the consistency of versions and hashes, by the same tough workflow as [`refresh`] run on
/// the stored bytes; then `paths.catalog`'s length and SHA-256 against the trusted
/// `catalog.json` target. `Ok(None)` when the service was never refreshed.
///
/// Nothing in the service's directory is written (tough runs on a temporary copy of the
/// datastore); only its lock file is created if missing.
pub fn load_trusted(
    service: &UpdateService,
    paths: &ServicePaths,
) -> Result<Option<TrustedTargets>> {
    let ctx = Ctx {
        service,
        offline: true,
    };
    if !paths.dir.is_dir() {
        return Ok(None);
    }
    let _lock = datastore::Lock::shared(&paths.dir)?;
    let Some(dir) = datastore::committed_dir(&paths.datastore) else {
        return Ok(None);
    };
    let committed = Committed::read(&dir).map_err(|e| ctx.local(e))?;
    let scratch = tempfile::Builder::new()
        .prefix("wua-tuf-check-")
        .tempdir()
        .map_err(|e| {
            Error::io(
                "cannot create a temporary directory in",
                std::env::temp_dir(),
                e,
            )
        })?;
    committed.copy_tough_files(scratch.path())?;
    let transport = ServiceTransport::offline(&service.source, &committed);

    let trusted = block_on(async {
        let repo = load(
            &committed.root_bytes,
            &service.source,
            transport,
            scratch.path(),
        )
        .await
        .map_err(|e| ctx.tough(&e))?;
        TrustedTargets::from_repository(&repo, &service.source.targets_url())
            .map_err(|()| ctx.no_catalog())
    })??;

    let catalog = trusted.catalog();
    let found = file_digest(&paths.catalog);
    if !matches!(&found, Ok((length, sha256)) if *length == catalog.length && *sha256 == catalog.sha256)
    {
        let found = match found {
            Ok((length, sha256)) => format!("{length} bytes with SHA-256 {sha256}"),
            Err(e) => format!("unreadable: {e}"),
        };
        return Err(ctx.error(
            WU_E_DM_INCORRECTFILEHASH,
            format_args!(
                "the stored catalog {} does not match the trusted catalog.json target \
                 ({} bytes with SHA-256 {} signed; found {found}) (spec 5.7.3)",
                paths.catalog.display(),
                catalog.length,
                catalog.sha256
            ),
            None,
        ));
    }
    Ok(Some(trusted))
}

/// Checks a `root.json` a user wants to trust for a new service: it parses, is a TUF root
/// listing keys and a reachable threshold for the four top-level roles, and is signed by a
/// threshold of its own root keys (spec 5.2). Returns its SHA-256 (lower-case hex). Errors
/// name `origin`.
///
/// Its expiry does not matter (spec 5.2): the first refresh moves on to the newest root.
pub fn check_trusted_root(bytes: &[u8], origin: &Path) -> Result<String> {
    let root: Signed<Root> = serde_json::from_slice(bytes).map_err(|e| {
        Error::invalid_file(
            origin,
            format_args!("is not TUF root metadata (a repository's root.json): {e}"),
        )
    })?;
    for role in [
        tough::schema::RoleType::Root,
        tough::schema::RoleType::Timestamp,
        tough::schema::RoleType::Snapshot,
        tough::schema::RoleType::Targets,
    ] {
        let Some(keys) = root.signed.roles.get(&role) else {
            return Err(Error::invalid_file(
                origin,
                format_args!("is not a usable TUF root: it names no keys for the {role} role"),
            ));
        };
        let known = keys
            .keyids
            .iter()
            .filter(|id| root.signed.keys.contains_key(*id))
            .count() as u64;
        if known < keys.threshold.get() {
            return Err(Error::invalid_file(
                origin,
                format_args!(
                    "is not a usable TUF root: the {role} role needs {} signatures but lists {known} keys",
                    keys.threshold
                ),
            ));
        }
    }
    root.signed.verify_role(&root).map_err(|e| {
        Error::code(
            TRUST_E_BAD_DIGEST,
            format!(
                "{} is not signed by a threshold of its own root keys ({e}); it was altered or \
                 is not the publisher's root.json: get the root.json from the publisher again",
                origin.display()
            ),
        )
    })?;
    Ok(hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        bytes,
    )))
}

// ---------------------------------------------------------------------------------------------
// Loading

/// tough's update cycle with our settings: the given root, transport and datastore, expiry
/// enforced, explicit limits.
async fn load(
    root: &Vec<u8>,
    source: &ServiceSource,
    transport: ServiceTransport,
    datastore: &Path,
) -> tough::error::Result<Repository> {
    RepositoryLoader::new(root, source.metadata_url(), source.targets_url())
        .transport(transport)
        .limits(limits())
        .datastore(datastore)
        .expiration_enforcement(ExpirationEnforcement::Safe)
        .load()
        .await
}

/// The root registered with the service: where the chain of trust starts on a first refresh.
fn read_trust_anchor(ctx: &Ctx<'_>, paths: &ServicePaths) -> Result<Vec<u8>> {
    fs::read(&paths.trusted_root).map_err(|e| {
        ctx.error(
            WU_E_INVALID_FILE,
            format_args!(
                "cannot read its trusted root {}: {e}",
                paths.trusted_root.display()
            ),
            Some("remove the update service and add it again with the publisher's root.json"),
        )
    })
}

/// Reads the catalog target through tough (length and SHA-256 verified as it streams, spec
/// 5.7.3) into a synced temporary file in `dir`.
async fn fetch_catalog(
    ctx: &Ctx<'_>,
    repo: &Repository,
    dir: &Path,
) -> Result<tempfile::NamedTempFile> {
    let name = TargetName::new(CATALOG_TARGET).expect("a valid target name");
    let stream = repo
        .read_target(&name)
        .await
        .map_err(|e| ctx.tough(&e))?
        .ok_or_else(|| ctx.no_catalog())?;
    let mut stream = std::pin::pin!(stream);
    let mut file = tempfile::Builder::new()
        .prefix(CATALOG_TEMP_PREFIX)
        .tempfile_in(dir)
        .at("cannot create a temporary file in", dir)?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ctx.tough(&e))?;
        file.write_all(&chunk).at("cannot write", file.path())?;
    }
    file.as_file().sync_all().at("cannot sync", file.path())?;
    Ok(file)
}

/// The prefix of the temporary file a catalog is downloaded to, in the service directory.
const CATALOG_TEMP_PREFIX: &str = ".catalog.json.";

/// Deletes catalog downloads a crashed refresh left behind (call with the exclusive lock held:
/// only a refresh writes them).
fn remove_stale_catalog_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(CATALOG_TEMP_PREFIX)
        {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// The length and SHA-256 (lower-case hex) of a file.
fn file_digest(path: &Path) -> io::Result<(u64, String)> {
    let mut file = fs::File::open(path)?;
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0; 64 * 1024];
    let mut length = 0u64;
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                context.update(&buf[..n]);
                length += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((length, hex::encode(context.finish())))
}

/// True when the file at `path` is exactly `target`.
fn file_matches(path: &Path, target: &TargetInfo) -> bool {
    match fs::metadata(path) {
        Ok(m) if m.is_file() && m.len() == target.length => {
            matches!(file_digest(path), Ok((_, sha256)) if sha256 == target.sha256)
        }
        _ => false,
    }
}

/// Runs a future to completion on a runtime of its own. From inside a tokio runtime (where
/// blocking on another would panic), it runs on a helper thread.
fn block_on<F>(future: F) -> Result<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    let run = move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|runtime| runtime.block_on(future))
            .map_err(|e| {
                Error::code(
                    WU_E_UNEXPECTED,
                    format!("cannot start the runtime for the metadata refresh: {e}"),
                )
            })
    };
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|scope| match scope.spawn(run).join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        })
    } else {
        run()
    }
}

// ---------------------------------------------------------------------------------------------
// Transport

/// The exact bytes of every metadata file fetched completely during a refresh, by URL: the
/// datastore keeps those tough verified ([`Verified`]).
#[derive(Clone, Debug, Default)]
struct Capture(Arc<Mutex<HashMap<Url, Vec<u8>>>>);

impl Capture {
    fn insert(&self, url: Url, bytes: Vec<u8>) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(url, bytes);
    }

    /// The bytes of the timestamp, snapshot and targets `repo` trusts, checked to be them.
    fn verified(&self, repo: &Repository, metadata_url: &Url) -> Result<Verified> {
        let consistent = repo.root().signed.consistent_snapshot;
        let mut captured = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut take = |file: &str, version: Option<u64>| -> Result<Vec<u8>> {
            let name = match version {
                Some(version) if consistent => format!("{version}.{file}"),
                _ => file.to_owned(),
            };
            metadata_url
                .join(&name)
                .ok()
                .and_then(|url| captured.remove(&url))
                .ok_or_else(|| internal(format_args!("the bytes of {name} were not captured")))
        };
        let snapshot_version = repo
            .timestamp()
            .signed
            .meta
            .get("snapshot.json")
            .map(|m| m.version.get());
        let targets_version = repo
            .snapshot()
            .signed
            .meta
            .get("targets.json")
            .map(|m| m.version.get());
        let verified = Verified {
            timestamp: take("timestamp.json", None)?,
            snapshot: take("snapshot.json", snapshot_version)?,
            targets: take("targets.json", targets_version)?,
        };
        let same = serde_json::from_slice::<Signed<Timestamp>>(&verified.timestamp)
            .is_ok_and(|t| &t == repo.timestamp())
            && serde_json::from_slice::<Signed<Snapshot>>(&verified.snapshot)
                .is_ok_and(|s| &s == repo.snapshot())
            && serde_json::from_slice::<Signed<Targets>>(&verified.targets)
                .is_ok_and(|t| &t == repo.targets());
        if same {
            Ok(verified)
        } else {
            Err(internal(
                "the metadata bytes fetched are not the metadata tough verified",
            ))
        }
    }
}

fn internal(what: impl Display) -> Error {
    Error::code(
        WU_E_UNEXPECTED,
        format!("internal error in the signed-metadata client: {what}"),
    )
}

/// How a service's files are read.
#[derive(Clone, Debug)]
enum Backend {
    /// A directory source: `file://` only, never the network.
    Directory,
    /// An HTTP(S) source, through the agent's client.
    Http {
        client: reqwest::Client,
        stall_timeout: Duration,
    },
    /// The stored metadata, for an offline load: these bytes by URL, nothing else.
    Offline(Arc<HashMap<Url, Bytes>>),
}

/// tough's [`Transport`] for a service.
///
/// A failure to open a file is reported from the stream, not from `fetch`: tough ends its
/// search for a newer root (spec 5.3.3) on *any* `fetch` error, but on a stream error only when
/// it is [`TransportErrorKind::FileNotFound`]. So only "not found" (404, and 403/410, which
/// object stores answer for missing keys) ends the search; a timeout or a server error on
/// `N.root.json` fails the refresh rather than hiding a root rotation.
#[derive(Clone, Debug)]
struct ServiceTransport {
    backend: Backend,
    /// Metadata URLs below this base are captured.
    capture: Option<(Url, Capture)>,
}

impl ServiceTransport {
    fn online(source: &ServiceSource, net: &NetworkOptions, capture: Capture) -> Result<Self> {
        let backend = match source {
            ServiceSource::Directory(_) => Backend::Directory,
            ServiceSource::Url(_) => Backend::Http {
                client: net.client()?,
                stall_timeout: net.stall_timeout,
            },
        };
        Ok(ServiceTransport {
            backend,
            capture: Some((source.metadata_url(), capture)),
        })
    }

    fn offline(source: &ServiceSource, committed: &Committed) -> Self {
        let metadata_url = source.metadata_url();
        let consistent = committed.root.signed.consistent_snapshot;
        let name = |file: &str, version: Option<u64>| match version {
            Some(version) if consistent => format!("{version}.{file}"),
            _ => file.to_owned(),
        };
        let snapshot_version = committed
            .timestamp
            .signed
            .meta
            .get("snapshot.json")
            .map(|m| m.version.get());
        let targets_version = committed
            .snapshot
            .signed
            .meta
            .get("targets.json")
            .map(|m| m.version.get());
        let mut files = HashMap::new();
        for (file, version, bytes) in [
            ("timestamp.json", None, &committed.verified.timestamp),
            (
                "snapshot.json",
                snapshot_version,
                &committed.verified.snapshot,
            ),
            ("targets.json", targets_version, &committed.verified.targets),
        ] {
            if let Ok(url) = metadata_url.join(&name(file, version)) {
                files.insert(url, Bytes::from(bytes.clone()));
            }
        }
        ServiceTransport {
            backend: Backend::Offline(Arc::new(files)),
            capture: None,
        }
    }

    async fn open(&self, url: &Url) -> std::result::Result<TransportStream, TransportError> {
        match (&self.backend, url.scheme()) {
            (Backend::Directory, "file") => FilesystemTransport.fetch(url.clone()).await,
            (
                Backend::Http {
                    client,
                    stall_timeout,
                },
                "http" | "https",
            ) => fetch_http(client, *stall_timeout, url).await,
            (Backend::Offline(files), _) => match files.get(url) {
                Some(bytes) => {
                    let bytes = bytes.clone();
                    Ok(Box::pin(futures::stream::once(async move { Ok(bytes) })))
                }
                None => Err(TransportError::new(TransportErrorKind::FileNotFound, url)),
            },
            _ => Err(TransportError::new(
                TransportErrorKind::UnsupportedUrlScheme,
                url,
            )),
        }
    }
}

#[async_trait::async_trait]
impl Transport for ServiceTransport {
    async fn fetch(&self, url: Url) -> std::result::Result<TransportStream, TransportError> {
        let stream = match self.open(&url).await {
            Ok(stream) => stream,
            Err(e) => Box::pin(futures::stream::once(async move { Err(e) })),
        };
        Ok(match &self.capture {
            Some((base, capture)) if url.as_str().starts_with(base.as_str()) => {
                Box::pin(Capturing {
                    inner: stream,
                    url,
                    buf: Vec::new(),
                    sink: capture.clone(),
                    failed: false,
                })
            }
            _ => stream,
        })
    }
}

/// Opens `url`: a status that is not a success fails, the body streams through the
/// slow-retrieval guard.
async fn fetch_http(
    client: &reqwest::Client,
    stall_timeout: Duration,
    url: &Url,
) -> std::result::Result<TransportStream, TransportError> {
    let response = client.get(url.clone()).send().await.map_err(|e| {
        TransportError::new_with_cause(TransportErrorKind::Other, url, FetchError::Request(e))
    })?;
    let status = response.status();
    if !status.is_success() {
        let kind = if matches!(status.as_u16(), 403 | 404 | 410) {
            TransportErrorKind::FileNotFound
        } else {
            TransportErrorKind::Other
        };
        return Err(TransportError::new_with_cause(
            kind,
            url,
            FetchError::Status(status),
        ));
    }
    Ok(Box::pin(SlowRetrievalGuard {
        inner: Box::pin(response.bytes_stream()),
        url: url.clone(),
        window: stall_timeout.max(Duration::from_millis(1)),
        window_start: Instant::now(),
        window_bytes: 0,
        done: false,
    }))
}

/// Why an HTTP fetch failed.
#[derive(Debug)]
enum FetchError {
    /// The server answered this status.
    Status(reqwest::StatusCode),
    /// The request or the body failed (connection, stall timeout, reset).
    Request(reqwest::Error),
    /// The body came slower than [`MIN_TRANSFER_RATE`].
    TooSlow { bytes: u64, elapsed: Duration },
}

impl Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Status(status) => write!(f, "the server answered {status}"),
            FetchError::Request(e) => {
                write!(f, "{e}")?;
                let mut source = std::error::Error::source(e);
                while let Some(s) = source {
                    write!(f, ": {s}")?;
                    source = s.source();
                }
                Ok(())
            }
            FetchError::TooSlow { bytes, elapsed } => write!(
                f,
                "the transfer is too slow: {bytes} bytes in {:.1} s, below the minimum of {MIN_TRANSFER_RATE} bytes per second",
                elapsed.as_secs_f64()
            ),
        }
    }
}

impl std::error::Error for FetchError {}

/// The slow-retrieval defence on a response body (spec §1.5.2). reqwest's read timeout (the
/// stall timeout) fails a body that goes silent; this fails one that keeps dripping: over each
/// window of the stall timeout, at least [`MIN_TRANSFER_RATE`] bytes per second must arrive.
struct SlowRetrievalGuard {
    inner: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send + Sync>>,
    url: Url,
    window: Duration,
    window_start: Instant,
    window_bytes: u64,
    done: bool,
}

impl Stream for SlowRetrievalGuard {
    type Item = std::result::Result<Bytes, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(bytes))) => {
                self.window_bytes += bytes.len() as u64;
                let elapsed = self.window_start.elapsed();
                if elapsed >= self.window {
                    let minimum = (MIN_TRANSFER_RATE as f64 * elapsed.as_secs_f64()) as u64;
                    if self.window_bytes < minimum {
                        self.done = true;
                        let e = FetchError::TooSlow {
                            bytes: self.window_bytes,
                            elapsed,
                        };
                        return Poll::Ready(Some(Err(TransportError::new_with_cause(
                            TransportErrorKind::Other,
                            &self.url,
                            e,
                        ))));
                    }
                    self.window_start = Instant::now();
                    self.window_bytes = 0;
                }
                Poll::Ready(Some(Ok(bytes)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(TransportError::new_with_cause(
                    TransportErrorKind::Other,
                    &self.url,
                    FetchError::Request(e),
                ))))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Keeps the bytes of a stream that completes without error, for [`Capture`].
struct Capturing {
    inner: TransportStream,
    url: Url,
    buf: Vec<u8>,
    sink: Capture,
    failed: bool,
}

impl Stream for Capturing {
    type Item = std::result::Result<Bytes, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let poll = self.inner.as_mut().poll_next(cx);
        match &poll {
            Poll::Ready(Some(Ok(bytes))) => self.buf.extend_from_slice(bytes),
            Poll::Ready(Some(Err(_))) => self.failed = true,
            Poll::Ready(None) if !self.failed => {
                let bytes = std::mem::take(&mut self.buf);
                let url = self.url.clone();
                self.sink.insert(url, bytes);
            }
            _ => {}
        }
        poll
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// What was being done, for messages.
struct Ctx<'a> {
    service: &'a UpdateService,
    /// `load_trusted` (stored metadata) rather than `refresh` (the source).
    offline: bool,
}

impl Ctx<'_> {
    fn error(&self, hresult: HResult, what: impl Display, advice: Option<&str>) -> Error {
        let advice = advice.unwrap_or_else(|| default_advice(hresult, self.offline));
        let service = &self.service.name;
        let source = &self.service.source;
        let context = if self.offline {
            format!(
                "the stored signed metadata of update service `{service}` ({source}) cannot be trusted: {what}; {advice}"
            )
        } else {
            format!("cannot refresh update service `{service}` from {source}: {what}; {advice}")
        };
        Error::code(hresult, context)
    }

    /// A local failure (the datastore), with the service named.
    fn local(&self, e: Error) -> Error {
        match e {
            Error::Code { hresult, context } => Error::code(
                hresult,
                format!("update service `{}`: {context}", self.service.name),
            ),
            other => other,
        }
    }

    fn tough(&self, e: &tough::error::Error) -> Error {
        let failure = classify(e);
        self.error(failure.hresult, failure.what, failure.advice)
    }

    fn no_catalog(&self) -> Error {
        self.error(
            WU_E_INVALID_FILE,
            "its signed targets have no catalog.json target, so it is not a wua catalog repository",
            None,
        )
    }
}

/// What to do about a failure with this code.
fn default_advice(hresult: HResult, offline: bool) -> &'static str {
    match hresult {
        CERT_E_EXPIRED if offline => {
            "refresh the service online to fetch current metadata; if that fails too, the publisher must re-sign it"
        }
        CERT_E_EXPIRED => {
            "the publisher must re-sign it, or someone between you and the service is replaying old metadata (freeze attack); check the system clock, then try again later"
        }
        TRUST_E_BAD_DIGEST => {
            "it was altered, or signed by keys the service's trusted root does not list; nothing from it was used or stored"
        }
        TRUST_E_SUBJECT_NOT_TRUSTED => {
            "the source serves metadata older than, or inconsistent with, what this machine already trusts (rollback or mix-and-match attack); nothing from it was used or stored: check that the service URL points at the current repository"
        }
        WU_E_DM_INCORRECTFILEHASH if offline => {
            "the stored copy was modified or is stale; refresh the service online to fetch it again"
        }
        WU_E_DM_INCORRECTFILEHASH => {
            "the file was altered or cut short on the way; nothing from it was used or stored: try again, and tell the publisher if it persists"
        }
        WU_E_INVALID_FILE if offline => {
            "the stored metadata is damaged; refresh the service online, or remove the service and add it again"
        }
        WU_E_INVALID_FILE => {
            "the repository is damaged or is not a wua catalog repository; ask its publisher to republish it"
        }
        WU_E_TIME_OUT => {
            "the server stopped sending data or sent it too slowly (slow-retrieval defence); try again later, or check the service URL"
        }
        WU_E_DM_NONETWORK => {
            "check the network connection and the service URL (`wua service list`)"
        }
        E_ACCESSDENIED => "check the permissions of the repository's files",
        h if net::status_hresult(404) == h
            || h.name()
                .is_some_and(|n| n.starts_with("WU_E_PT_HTTP_STATUS")) =>
        {
            "check the service URL (`wua service list`) and that the repository is published there"
        }
        _ => "try again; if it persists, report this message",
    }
}

/// One failure, classified.
struct Failure {
    hresult: HResult,
    what: String,
    advice: Option<&'static str>,
}

fn failure(hresult: HResult, what: impl Into<String>) -> Failure {
    Failure {
        hresult,
        what: what.into(),
        advice: None,
    }
}

/// The one mapping from tough's errors to HRESULTs (`docs/signed-catalogs.md` has the table).
///
/// tough's error enum mixes the client's failures with its editor's (signing, writing a
/// repository); the editor's cannot happen in a load and fall to the last arm, which keeps
/// tough's message under `WU_E_PT_UNEXPECTED`.
fn classify(e: &tough::error::Error) -> Failure {
    use tough::error::Error as E;
    match e {
        // Freeze attack (5.3.10, 5.4.4, 5.5.6, 5.6.5; and before reading a target).
        E::ExpiredMetadata { role, .. } => failure(
            CERT_E_EXPIRED,
            format!(
                "its {role} metadata has expired (freeze-attack defence, spec {})",
                spec(*role, ["5.3.10", "5.4.4", "5.5.6", "5.6.5"])
            ),
        ),
        // Arbitrary software: signatures (5.3.4, 5.4.2, 5.5.3, 5.6.3).
        E::VerifyMetadata { role, source, .. } => signature(
            &role.to_string(),
            spec(*role, ["5.3.4", "5.4.2", "5.5.3", "5.6.3"]),
            source,
        ),
        E::VerifyRoleMetadata { role, source, .. } => signature(role, "5.6.7", source),
        E::VerifyTrustedMetadata { source, .. } => Failure {
            hresult: TRUST_E_BAD_DIGEST,
            what: format!(
                "its trusted root is not signed by a threshold of its own keys ({source}) (spec 5.2)"
            ),
            advice: Some(
                "the stored root was altered: remove the update service and add it again with the publisher's root.json",
            ),
        },
        E::DuplicateKeyid { keyid } => failure(
            TRUST_E_BAD_DIGEST,
            format!("metadata carries two signatures by key {keyid}"),
        ),
        E::ParseTrustedMetadata { source, .. } => Failure {
            hresult: WU_E_INVALID_FILE,
            what: format!("its trusted root cannot be read: {source}"),
            advice: Some(
                "remove the update service and add it again with the publisher's root.json",
            ),
        },
        // Rollback (5.3.5, 5.4.3, 5.5.5).
        E::OlderMetadata {
            role,
            current_version,
            new_version,
            ..
        } => failure(
            TRUST_E_SUBJECT_NOT_TRUSTED,
            format!(
                "it serves version {new_version} of the {role} metadata, older than version \
                 {current_version} already trusted here (rollback attack; spec {})",
                spec(*role, ["5.3.5", "5.4.3.1", "5.5.5", "5.5.5"])
            ),
        ),
        E::OlderSnapshotInTimestamp {
            snapshot_new,
            timestamp_new,
            snapshot_old,
            timestamp_old,
        } => failure(
            TRUST_E_SUBJECT_NOT_TRUSTED,
            format!(
                "its timestamp version {timestamp_new} names snapshot version {snapshot_new}, \
                 older than version {snapshot_old} named by the trusted timestamp version \
                 {timestamp_old} (rollback attack; spec 5.4.3.2)"
            ),
        ),
        E::SnapshotRoleRollback {
            role,
            old_role_version,
            new_role_version,
            new_snapshot_version,
            ..
        } => failure(
            TRUST_E_SUBJECT_NOT_TRUSTED,
            format!(
                "its snapshot version {new_snapshot_version} names version {new_role_version} \
                 of {role}, older than the trusted version {old_role_version} (rollback \
                 attack; spec 5.5.5)"
            ),
        ),
        E::SnapshotRoleMissing {
            role, new_version, ..
        } => failure(
            TRUST_E_SUBJECT_NOT_TRUSTED,
            format!(
                "its snapshot version {new_version} no longer lists {role}, which the trusted \
                 snapshot lists (spec 5.5.5)"
            ),
        ),
        // Mix-and-match (5.5.4, 5.6.4).
        E::VersionMismatch {
            role,
            fetched,
            expected,
            ..
        } => failure(
            TRUST_E_SUBJECT_NOT_TRUSTED,
            format!(
                "it serves version {fetched} of the {role} metadata where the signed {} names \
                 version {expected} (mix-and-match attack; spec 5.5.4, 5.6.4)",
                if *role == tough::schema::RoleType::Snapshot {
                    "timestamp"
                } else {
                    "snapshot"
                }
            ),
        ),
        E::SystemTimeSteppedBackward {
            sys_time,
            latest_known_time,
        } => Failure {
            hresult: TRUST_E_SUBJECT_NOT_TRUSTED,
            what: format!(
                "the system clock ({sys_time}) is behind the latest time this machine already \
                 saw ({latest_known_time}), which would let expired metadata pass"
            ),
            advice: Some("correct the system clock, then try again"),
        },
        // Hash and length of metadata (5.5.2, 5.6.2) and of targets (5.7.3).
        E::HashMismatch {
            context,
            calculated,
            expected,
            ..
        } => failure(
            WU_E_DM_INCORRECTFILEHASH,
            format!(
                "{context} has SHA-256 {calculated}, but the signed metadata says {expected} \
                 (spec 5.5.2, 5.6.2, 5.7.3)"
            ),
        ),
        // Endless data: a signed length (its specifier names the signing file) is a hash-like
        // mismatch; a client limit on an unsigned size means a malformed or hostile file.
        E::MaxSizeExceeded {
            max_size,
            specifier,
            ..
        } => size_failure(*max_size, specifier, "a file"),
        E::MaxUpdatesExceeded {
            max_root_updates, ..
        } => failure(
            WU_E_INVALID_FILE,
            format!("it has more than {max_root_updates} new root versions (spec 5.3.3)"),
        ),
        // Signed but malformed metadata.
        E::TimestampMetaLength {
            version,
            meta_length,
        } => failure(
            WU_E_INVALID_FILE,
            format!(
                "its timestamp version {version} lists {meta_length} files instead of exactly the snapshot"
            ),
        ),
        E::MissingSnapshotMeta { version } => failure(
            WU_E_INVALID_FILE,
            format!("its timestamp version {version} does not list snapshot.json"),
        ),
        E::SnapshotTargetsMetaMissing { version } => failure(
            WU_E_INVALID_FILE,
            format!("its snapshot version {version} does not list targets.json"),
        ),
        E::MetaMissing { file, role, .. } => failure(
            WU_E_INVALID_FILE,
            format!("its {role} metadata does not list {file}"),
        ),
        E::ParseMetadata { role, source, .. } => failure(
            WU_E_INVALID_FILE,
            format!("its {role} metadata is not valid TUF metadata: {source}"),
        ),
        E::InvalidTargetName { .. }
        | E::UnsafeTargetNameDotDot { .. }
        | E::UnsafeTargetNameEmpty { .. }
        | E::UnsafeTargetNameSlash { .. }
        | E::TargetNameResolve { .. }
        | E::TargetNameComponentsEmpty { .. }
        | E::TargetNameRootMissing { .. } => failure(
            WU_E_INVALID_FILE,
            format!("its signed targets name an unsafe target: {e}"),
        ),
        // Delegations (wua repositories have none; tough verifies them if present).
        E::InvalidPath { .. }
        | E::DelegatedRolesNotConsistent { .. }
        | E::RoleNotInMeta { .. }
        | E::DelegateNotFound { .. }
        | E::DelegateMissing { .. }
        | E::TargetsNotFound { .. }
        | E::InvalidPathPermission { .. }
        | E::NoTargets
        | E::NoDelegations => failure(
            WU_E_INVALID_FILE,
            format!("its delegated targets are inconsistent: {e}"),
        ),
        // Fetching.
        E::Transport { url, source, .. } => transport(url, source),
        E::JoinUrl { .. } | E::JoinUrlEncoded { .. } | E::ParseUrl { .. } => {
            failure(E_INVALIDARG, format!("cannot form a repository URL: {e}"))
        }
        // tough's own datastore files (our work directory).
        E::DatastoreInit { .. }
        | E::DatastoreCreate { .. }
        | E::DatastoreOpen { .. }
        | E::DatastoreRemove { .. }
        | E::DatastoreSerialize { .. } => Failure {
            hresult: WU_E_UNEXPECTED,
            what: format!("the metadata store failed: {e}"),
            advice: Some("check the file system that holds the agent's state"),
        },
        _ => failure(WU_E_PT_UNEXPECTED, format!("TUF client error: {e}")),
    }
}

/// The spec section of a check, by role: `[root, timestamp, snapshot, targets]`.
fn spec(role: tough::schema::RoleType, sections: [&'static str; 4]) -> &'static str {
    use tough::schema::RoleType;
    match role {
        RoleType::Root => sections[0],
        RoleType::Timestamp => sections[1],
        RoleType::Snapshot => sections[2],
        RoleType::Targets | RoleType::DelegatedTargets => sections[3],
    }
}

/// Endless data: `subject` is longer than `max_size`. A signed length (`specifier` names the
/// file that signs it) makes it a mismatch with the signed metadata; a client limit on an
/// unsigned size (spec 5.3.3, 5.4.1), a malformed or hostile file.
fn size_failure(max_size: u64, specifier: &str, subject: &str) -> Failure {
    if matches!(
        specifier,
        "timestamp.json" | "snapshot.json" | "targets.json"
    ) {
        failure(
            WU_E_DM_INCORRECTFILEHASH,
            format!(
                "{subject} is longer than the {max_size} bytes that {specifier} signs for it (endless-data defence)"
            ),
        )
    } else {
        Failure {
            hresult: WU_E_INVALID_FILE,
            what: format!(
                "{subject} is larger than the client's limit of {max_size} bytes ({specifier}; endless-data defence)"
            ),
            advice: Some(
                "no valid file is that large: the server sends endless data, or the repository is damaged; nothing from it was used or stored: check the service URL, and tell the publisher if it persists",
            ),
        }
    }
}

/// A signature failure (a signed role's `source`).
fn signature(role: &str, section: &str, source: &tough::schema::Error) -> Failure {
    use tough::schema::Error as S;
    match source {
        S::SignatureThreshold {
            threshold, valid, ..
        } => failure(
            TRUST_E_BAD_DIGEST,
            format!(
                "its {role} metadata has {valid} valid signature(s) by trusted keys where \
                 {threshold} are required (spec {section})"
            ),
        ),
        S::MissingRole { role: missing, .. } => failure(
            TRUST_E_BAD_DIGEST,
            format!("its trusted root names no keys for the {missing} role"),
        ),
        S::DuplicateKeyId { keyid } => failure(
            TRUST_E_BAD_DIGEST,
            format!("its {role} metadata carries two signatures by key {keyid}"),
        ),
        _ => failure(
            TRUST_E_BAD_DIGEST,
            format!("its {role} metadata does not verify: {source}"),
        ),
    }
}

/// A failed fetch: what the cause chain says, else the transport's kind.
fn transport(url: &Url, e: &TransportError) -> Failure {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        // tough's adapters report a hash or length failure inside the stream.
        if let Some(inner) = cause.downcast_ref::<tough::error::Error>() {
            return match inner {
                tough::error::Error::MaxSizeExceeded {
                    max_size,
                    specifier,
                    ..
                } => size_failure(*max_size, specifier, url.as_str()),
                _ => classify(inner),
            };
        }
        if let Some(fetch) = cause.downcast_ref::<FetchError>() {
            let hresult = match fetch {
                FetchError::Status(status) => net::status_hresult(status.as_u16()),
                FetchError::Request(e) => net::reqwest_hresult(e),
                FetchError::TooSlow { .. } => WU_E_TIME_OUT,
            };
            return failure(hresult, format!("cannot fetch {url}: {fetch}"));
        }
        if let Some(io) = cause.downcast_ref::<io::Error>() {
            let path = url
                .to_file_path()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|()| url.to_string());
            return match io.kind() {
                // A directory source missing a file: the same condition, and code, as a 404.
                io::ErrorKind::NotFound => failure(
                    WU_E_PT_HTTP_STATUS_NOT_FOUND,
                    format!("{path} does not exist"),
                ),
                io::ErrorKind::PermissionDenied => {
                    failure(E_ACCESSDENIED, format!("cannot read {path}: {io}"))
                }
                _ => failure(WU_E_PT_UNEXPECTED, format!("cannot read {path}: {io}")),
            };
        }
        source = cause.source();
    }
    match e.kind() {
        TransportErrorKind::FileNotFound => failure(
            WU_E_PT_HTTP_STATUS_NOT_FOUND,
            format!("{url} does not exist"),
        ),
        TransportErrorKind::UnsupportedUrlScheme => failure(
            E_INVALIDARG,
            format!("{url} is not a location this service reads from"),
        ),
        _ => failure(WU_E_PT_UNEXPECTED, format!("cannot fetch {url}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn target_urls_follow_consistent_snapshots() {
        let base = url("https://example.org/repo/targets/");
        let name = TargetName::new("catalog.json").unwrap();
        assert_eq!(
            target_url(&base, &name, "ab12", true).unwrap().as_str(),
            "https://example.org/repo/targets/ab12.catalog.json"
        );
        assert_eq!(
            target_url(&base, &name, "ab12", false).unwrap().as_str(),
            "https://example.org/repo/targets/catalog.json"
        );
    }

    #[test]
    fn fetch_failures_map_to_their_codes() {
        let u = url("https://example.org/metadata/timestamp.json");
        let status = |code: u16| {
            TransportError::new_with_cause(
                TransportErrorKind::FileNotFound,
                &u,
                FetchError::Status(reqwest::StatusCode::from_u16(code).unwrap()),
            )
        };
        assert_eq!(
            transport(&u, &status(404)).hresult,
            WU_E_PT_HTTP_STATUS_NOT_FOUND
        );
        assert_eq!(
            transport(&u, &status(403)).hresult,
            WU_E_PT_HTTP_STATUS_FORBIDDEN
        );
        assert_eq!(
            transport(&u, &status(503)).hresult,
            WU_E_PT_HTTP_STATUS_SERVICE_UNAVAIL
        );
        let slow = TransportError::new_with_cause(
            TransportErrorKind::Other,
            &u,
            FetchError::TooSlow {
                bytes: 3,
                elapsed: Duration::from_secs(2),
            },
        );
        let f = transport(&u, &slow);
        assert_eq!(f.hresult, WU_E_TIME_OUT);
        assert!(f.what.contains("too slow"), "{}", f.what);

        let file = url("file:///nonexistent/metadata/timestamp.json");
        let missing = TransportError::new_with_cause(
            TransportErrorKind::FileNotFound,
            &file,
            io::Error::from(io::ErrorKind::NotFound),
        );
        let f = transport(&file, &missing);
        assert_eq!(f.hresult, WU_E_PT_HTTP_STATUS_NOT_FOUND);
        assert!(
            f.what
                .contains("/nonexistent/metadata/timestamp.json does not exist"),
            "{}",
            f.what
        );
        let bare = TransportError::new(TransportErrorKind::Other, &u);
        assert_eq!(transport(&u, &bare).hresult, WU_E_PT_UNEXPECTED);
    }

    #[test]
    fn advice_depends_on_online_or_offline() {
        assert!(default_advice(CERT_E_EXPIRED, true).contains("refresh the service online"));
        assert!(default_advice(CERT_E_EXPIRED, false).contains("freeze attack"));
        assert!(default_advice(WU_E_PT_HTTP_STATUS_NOT_FOUND, false).contains("service URL"));
        assert!(default_advice(WU_E_PT_HTTP_STATUS_GONE, false).contains("service URL"));
    }

    #[test]
    fn a_root_that_is_not_a_root_is_refused_by_name() {
        let origin = Path::new("/some/where/root.json");
        let e = check_trusted_root(b"not json", origin).unwrap_err();
        assert_eq!(e.hresult(), WU_E_INVALID_FILE);
        assert!(e.to_string().contains("/some/where/root.json"), "{e}");
        let e = check_trusted_root(
            br#"{"signed": {"_type": "timestamp", "spec_version": "1.0.0", "version": 1,
                "expires": "2030-01-01T00:00:00Z", "meta": {}}, "signatures": []}"#,
            origin,
        )
        .unwrap_err();
        assert_eq!(e.hresult(), WU_E_INVALID_FILE);
    }

    #[test]
    fn a_root_without_enough_signatures_is_refused() {
        // A well-formed root whose one root key did not sign it.
        let root = r#"{"signed": {"_type": "root", "spec_version": "1.0.0",
            "consistent_snapshot": true, "version": 1, "expires": "2030-01-01T00:00:00Z",
            "keys": {"KEYID": {"keytype": "ed25519", "scheme": "ed25519",
                "keyval": {"public": "PUBLIC"}}},
            "roles": {"root": {"keyids": ["KEYID"], "threshold": 1},
                "timestamp": {"keyids": ["KEYID"], "threshold": 1},
                "snapshot": {"keyids": ["KEYID"], "threshold": 1},
                "targets": {"keyids": ["KEYID"], "threshold": 1}}},
            "signatures": []}"#;
        let key = hex::encode([7u8; 32]);
        let key_json =
            format!(r#"{{"keytype":"ed25519","keyval":{{"public":"{key}"}},"scheme":"ed25519"}}"#);
        // The key ID is the SHA-256 of the key's canonical JSON (tough checks it).
        let keyid = hex::encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            key_json.as_bytes(),
        ));
        let root = root.replace("KEYID", &keyid).replace("PUBLIC", &key);
        let e = check_trusted_root(root.as_bytes(), Path::new("root.json")).unwrap_err();
        assert_eq!(e.hresult(), TRUST_E_BAD_DIGEST, "{e}");
    }
}
