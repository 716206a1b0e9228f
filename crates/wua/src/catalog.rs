//! The catalog: update metadata (`catalog.json`) plus content-addressed payload archives.
//!
//! The format is specified in `docs/catalog-format.md`. A catalog directory holds:
//!
//! ```text
//! catalog.json                      format marker, version, and every update's definition
//! payloads/<sha256>.tar.zst         payload archives, named by the SHA-256 of their bytes
//! ```
//!
//! Payloads are addressed by digest so that a later signed (TUF) repository can publish them as
//! targets unchanged, and a download cache can share them between catalogs.
//!
//! [`build`] authors a catalog from a source tree (one folder per update with `update.json` and a
//! `payload/` tree), deterministically: the same sources always give the same bytes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::digest;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, IoContext, Result};
use crate::hresult::{
    WU_E_DM_NOTDOWNLOADED, WU_E_INVALID_FILE, WU_E_INVALID_RELATIONSHIP, WU_E_INVALID_UPDATE,
    WU_E_UH_NEEDANOTHERDOWNLOAD,
};
use crate::model::{
    Category, DeploymentAction, InstallationBehavior, InstallationImpact,
    InstallationRebootBehavior, UpdateIdentity, UpdateType,
};
use crate::rules::{self, Rule};

/// The value of `format` in `catalog.json`.
pub const FORMAT_MARKER: &str = "wua-catalog";
/// The catalog format version this build writes. Version 2 added applicability rules, bundles
/// and the `browse_only`/`is_assigned`/`auto_select_on_web_sites` flags; every version-1 file is
/// a valid version-2 file, so both are read ([`READS_FORMAT_VERSIONS`]).
pub const FORMAT_VERSION: u32 = 2;
/// The catalog format versions this build reads.
pub const READS_FORMAT_VERSIONS: std::ops::RangeInclusive<u32> = 1..=FORMAT_VERSION;
/// The metadata file of a catalog directory.
pub const CATALOG_FILE: &str = "catalog.json";
/// The folder holding payload archives.
pub const PAYLOAD_DIR: &str = "payloads";

/// `catalog.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogFile {
    /// Always [`FORMAT_MARKER`].
    pub format: String,
    /// The format version; a reader refuses versions it does not know.
    pub format_version: u32,
    /// A human-readable name of the catalog.
    pub name: String,
    /// Every update, in publication order. Shared: updates handed out by searches point at
    /// these definitions instead of copying them.
    pub updates: Vec<Arc<UpdateDefinition>>,
}

/// One update's metadata as the catalog publishes it (the fields of `IUpdate` an agent models,
/// plus how to install it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateDefinition {
    /// `Identity`.
    pub identity: UpdateIdentity,
    /// `Title`.
    pub title: String,
    /// `Description`.
    #[serde(default)]
    pub description: String,
    /// `KBArticleIDs`, digits only.
    #[serde(default)]
    pub kb_article_ids: Vec<String>,
    /// `Categories`.
    #[serde(default)]
    pub categories: Vec<Category>,
    /// `MsrcSeverity`.
    #[serde(default)]
    pub msrc_severity: Option<String>,
    /// `Type`.
    #[serde(default = "default_update_type", rename = "type")]
    pub update_type: UpdateType,
    /// `DeploymentAction`.
    #[serde(default = "default_deployment_action")]
    pub deployment_action: DeploymentAction,
    /// `IsMandatory`.
    #[serde(default)]
    pub is_mandatory: bool,
    /// `IsUninstallable`.
    #[serde(default = "yes")]
    pub is_uninstallable: bool,
    /// `EulaText`: present when the update has licence terms to accept.
    #[serde(default)]
    pub eula_text: Option<String>,
    /// `InstallationBehavior`.
    #[serde(default)]
    pub installation_behavior: InstallationBehavior,
    /// `UninstallationBehavior`.
    #[serde(default)]
    pub uninstallation_behavior: InstallationBehavior,
    /// `SupersededUpdateIDs`.
    #[serde(default)]
    pub superseded_update_ids: Vec<Uuid>,
    /// `SupportUrl`.
    #[serde(default)]
    pub support_url: String,
    /// `UninstallationNotes`.
    #[serde(default)]
    pub uninstallation_notes: String,
    /// `UninstallationSteps`.
    #[serde(default)]
    pub uninstallation_steps: Vec<String>,
    /// `Deadline`.
    #[serde(default)]
    pub deadline: Option<Timestamp>,
    /// `BrowseOnly` (`IUpdate3`): an optional update, found by browsing.
    #[serde(default, skip_serializing_if = "is_false")]
    pub browse_only: bool,
    /// `IsAssigned` in search criteria: meant for automatic deployment. Defaults to
    /// `!browse_only`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_assigned: Option<bool>,
    /// `AutoSelectOnWebSites`. Defaults to `!browse_only`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_select_on_web_sites: Option<bool>,
    /// Detection rules deciding whether the update is installed and whether it applies to a
    /// machine (`crate::rules`).
    #[serde(default, skip_serializing_if = "Applicability::is_empty")]
    pub applicability: Applicability,
    /// `BundledUpdates`: the ids of the updates this one bundles, in install order. Each is an
    /// update of the same catalog that bundles nothing itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bundled_updates: Vec<Uuid>,
    /// Setuid and setgid bits are allowed (v2): on payload entries, and for the `command`
    /// handler on the files its install command writes under `$DESTDIR`. They are kept as they
    /// are. Without it (the default) such an entry or file fails the update with
    /// `WU_E_UH_INVALIDMETADATA`. Written only when true.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_setid: bool,
    /// The payload archive.
    pub payload: PayloadRef,
    /// How the payload is installed.
    pub handler: HandlerSpec,
}

fn default_update_type() -> UpdateType {
    UpdateType::Software
}
fn default_deployment_action() -> DeploymentAction {
    DeploymentAction::Installation
}
fn yes() -> bool {
    true
}
fn is_false(b: &bool) -> bool {
    !*b
}

/// An update's detection rules, as WSUS metadata has them (`IsInstalled`, `IsInstallable`).
///
/// An update is installed when wua installed this revision or `is_installed` holds; it applies
/// (is installable) when `is_installable` holds or is absent. A search returns an update only
/// when it is installed or applies.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Applicability {
    /// Detects the update as installed even when wua did not install it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_installed: Option<Rule>,
    /// The update applies to this machine; absent means everywhere. Prerequisites are
    /// `update_installed` rules here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_installable: Option<Rule>,
}

impl Applicability {
    /// True when neither rule is given.
    pub fn is_empty(&self) -> bool {
        self.is_installed.is_none() && self.is_installable.is_none()
    }
}

impl UpdateDefinition {
    /// `IsAssigned`: meant for automatic deployment (`is_assigned`, else `!browse_only`).
    pub fn is_assigned(&self) -> bool {
        self.is_assigned.unwrap_or(!self.browse_only)
    }
    /// `AutoSelectOnWebSites` (`auto_select_on_web_sites`, else `!browse_only`).
    pub fn auto_select_on_web_sites(&self) -> bool {
        self.auto_select_on_web_sites.unwrap_or(!self.browse_only)
    }
}

/// A payload archive, addressed by content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadRef {
    /// SHA-256 of the `.tar.zst` file, lower-case hex.
    pub sha256: String,
    /// Size of the `.tar.zst` file in bytes.
    pub size: u64,
    /// Sum of the sizes of the regular files inside, the most extraction may write.
    pub installed_size: u64,
}

/// The install handler (`HandlerID`) and its parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum HandlerSpec {
    /// Extract the payload tree into the target root. (A struct variant, so that unknown
    /// fields next to `"kind": "files"` are refused like everywhere else.)
    Files {},
    /// Run a command from the payload; what it writes under `$DESTDIR` is installed into the root.
    Command {
        /// The install command.
        install: CommandSpec,
        /// The command run before the update's files are removed, if any.
        #[serde(default)]
        uninstall: Option<CommandSpec>,
    },
}

/// A command of the `command` handler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    /// Path of the program inside the payload (relative, no `..`).
    pub program: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Seconds after which the command is killed and the update fails with
    /// `WU_E_UH_INSTALLERHUNG`.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// What each exit code means. Codes not listed are failures (`WU_E_UH_INSTALLERFAILURE`).
    #[serde(default = "default_exit_codes", with = "exit_code_map")]
    pub exit_codes: BTreeMap<i32, ExitAction>,
}

/// Exit-code maps are JSON objects keyed by the code as a string (`{"0": "succeeded"}`). Done by
/// hand because serde buffers internally tagged enums, which loses serde_json's number-key
/// support.
mod exit_code_map {
    use super::ExitAction;
    use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<i32, ExitAction>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let as_strings: BTreeMap<String, ExitAction> =
            map.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        as_strings.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<i32, ExitAction>, D::Error> {
        BTreeMap::<String, ExitAction>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| {
                k.parse::<i32>()
                    .map(|code| (code, v))
                    .map_err(|_| D::Error::custom(format!("exit code {k:?} is not an integer")))
            })
            .collect()
    }
}

fn default_timeout() -> u64 {
    600
}
fn default_exit_codes() -> BTreeMap<i32, ExitAction> {
    BTreeMap::from([(0, ExitAction::Succeeded)])
}

/// The meaning of a command's exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitAction {
    /// The operation succeeded.
    Succeeded,
    /// The operation succeeded and a restart is needed to complete it.
    SucceededRebootRequired,
    /// The operation failed.
    Failed,
}

/// A catalog directory, loaded and validated.
#[derive(Clone, Debug)]
pub struct Catalog {
    dir: PathBuf,
    /// Where this catalog's payload files are: `<dir>/payloads` for a catalog directory, the
    /// agent's verified download cache for a service's catalog.
    payload_dir: PathBuf,
    /// The signed service this catalog came from; `None` for a catalog directory.
    origin: Option<Arc<CatalogOrigin>>,
    file: CatalogFile,
    index: HashMap<Uuid, usize>,
    relations: std::sync::OnceLock<Relations>,
}

/// Where a signed catalog came from: its service and the service's trusted targets metadata,
/// which payload downloads are checked against.
#[derive(Debug)]
pub struct CatalogOrigin {
    /// The service.
    pub service: crate::service::UpdateService,
    /// The verified targets of the metadata this catalog was read with.
    pub targets: Arc<crate::repository::client::TrustedTargets>,
}

/// How the catalog's updates relate, by position in [`Catalog::updates`]: computed once, as
/// every search needs it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Relations {
    /// By position: the bundle listing this update as a part (the first, if several do).
    pub bundled_in: Vec<Option<usize>>,
    /// By position: the updates that supersede this one.
    pub superseded_by: Vec<Vec<usize>>,
    /// The categories of the catalog's updates, each once, in first-seen order.
    pub categories: Vec<Category>,
}

impl Catalog {
    /// Opens the catalog in `dir` and validates its metadata.
    pub fn open(dir: impl AsRef<Path>) -> Result<Catalog> {
        let dir = dir.as_ref().to_path_buf();
        let path = dir.join(CATALOG_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::code(
                    WU_E_INVALID_FILE,
                    format!(
                        "{} is not a wua catalog: it has no {CATALOG_FILE}; pass a directory built by `wua catalog build`",
                        dir.display()
                    ),
                ));
            }
            Err(e) => {
                return Err(
                    Error::io("cannot read catalog", &path, e).with_hresult(WU_E_INVALID_FILE)
                );
            }
        };
        let file = parse_catalog(&path, &bytes)?;
        Ok(Catalog::from_parts(dir, file))
    }

    /// Reads the verified `catalog.json` of a signed service (`path`, already checked against
    /// the service's trusted targets metadata), whose payloads are fetched into `payload_dir`.
    pub fn open_signed(
        path: &Path,
        payload_dir: PathBuf,
        origin: CatalogOrigin,
    ) -> Result<Catalog> {
        let bytes = std::fs::read(path).map_err(|e| {
            Error::io("cannot read catalog", path, e).with_hresult(WU_E_INVALID_FILE)
        })?;
        let file = parse_catalog(path, &bytes)?;
        let mut catalog =
            Catalog::from_parts(path.parent().unwrap_or(Path::new("/")).to_path_buf(), file);
        catalog.payload_dir = payload_dir;
        catalog.origin = Some(Arc::new(origin));
        Ok(catalog)
    }

    /// An empty catalog: what a service that was never refreshed offers.
    pub fn empty(
        name: impl Into<String>,
        payload_dir: PathBuf,
        origin: Option<CatalogOrigin>,
    ) -> Catalog {
        let mut catalog = Catalog::from_parts(
            payload_dir.clone(),
            CatalogFile {
                format: FORMAT_MARKER.to_string(),
                format_version: FORMAT_VERSION,
                name: name.into(),
                updates: Vec::new(),
            },
        );
        catalog.payload_dir = payload_dir;
        catalog.origin = origin.map(Arc::new);
        catalog
    }

    /// Sets the directory reported by [`Self::dir`] (an empty catalog names where it would
    /// come from).
    pub(crate) fn set_dir(&mut self, dir: PathBuf) {
        self.dir = dir;
    }

    /// The signed service this catalog came from, with its trusted targets; `None` for a
    /// catalog directory (unsigned, read as it is).
    pub fn origin(&self) -> Option<&Arc<CatalogOrigin>> {
        self.origin.as_ref()
    }

    fn from_parts(dir: PathBuf, file: CatalogFile) -> Catalog {
        let index = file
            .updates
            .iter()
            .enumerate()
            .map(|(i, u)| (u.identity.update_id, i))
            .collect();
        Catalog {
            payload_dir: dir.join(PAYLOAD_DIR),
            origin: None,
            dir,
            file,
            index,
            relations: std::sync::OnceLock::new(),
        }
    }

    /// The position of the update with this id in [`Self::updates`].
    pub fn position(&self, update_id: Uuid) -> Option<usize> {
        self.index.get(&update_id).copied()
    }

    pub(crate) fn relations(&self) -> &Relations {
        self.relations.get_or_init(|| {
            let n = self.file.updates.len();
            let mut relations = Relations {
                bundled_in: vec![None; n],
                superseded_by: vec![Vec::new(); n],
                categories: Vec::new(),
            };
            let mut seen = HashSet::new();
            for (i, def) in self.file.updates.iter().enumerate() {
                for part in &def.bundled_updates {
                    if let Some(p) = self.position(*part) {
                        relations.bundled_in[p].get_or_insert(i);
                    }
                }
                for old in &def.superseded_update_ids {
                    if let Some(o) = self.position(*old) {
                        relations.superseded_by[o].push(i);
                    }
                }
                for c in &def.categories {
                    if seen.insert(c.id) {
                        relations.categories.push(c.clone());
                    }
                }
            }
            relations
        })
    }

    /// The catalog directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The catalog's name.
    pub fn name(&self) -> &str {
        &self.file.name
    }

    /// Every update definition, in publication order.
    pub fn updates(&self) -> &[Arc<UpdateDefinition>] {
        &self.file.updates
    }

    /// The definition with this update id.
    pub fn find(&self, update_id: Uuid) -> Option<&Arc<UpdateDefinition>> {
        self.index.get(&update_id).map(|&i| &self.file.updates[i])
    }

    /// Where the payload file lives in this catalog.
    pub fn payload_path(&self, payload: &PayloadRef) -> PathBuf {
        self.payload_dir.join(format!("{}.tar.zst", payload.sha256))
    }

    /// Where this catalog's payload files are (see [`Self::payload_path`]).
    pub fn payload_dir(&self) -> &Path {
        &self.payload_dir
    }

    /// True when the payload is present with its declared size (`IsDownloaded`).
    pub fn has_payload(&self, payload: &PayloadRef) -> bool {
        std::fs::metadata(self.payload_path(payload))
            .map(|m| m.is_file() && m.len() == payload.size)
            .unwrap_or(false)
    }

    /// Checks a payload completely: size and SHA-256, then every archive entry as an install
    /// would ([`walk_payload`]), without writing anything. Used by `wua catalog verify`.
    ///
    /// Setuid and setgid entries pass only if [`Self::setid_allowed`] says so for this payload.
    pub fn check_payload(&self, payload: &PayloadRef) -> Result<()> {
        let file = self.open_verified_payload(payload)?;
        // Whether setid entries are allowed is looked up only when the archive has one (the
        // look-up scans the catalog; `wua catalog verify` checks every payload).
        let mut first_setid = None;
        walk_payload(file, payload, true, |entry, data| {
            if first_setid.is_none() && entry.mode & SETID_BITS != 0 {
                first_setid = Some((entry.path.clone(), entry.mode));
            }
            let read = io::copy(&mut data.take(entry.size), &mut io::sink())
                .map_err(|e| invalid_payload(&entry.path, format!("unreadable: {e}")))?;
            if read != entry.size {
                return Err(invalid_payload(&entry.path, "the archive is truncated"));
            }
            Ok(())
        })?;
        match first_setid {
            Some((path, mode)) if !self.setid_allowed(payload) => Err(setid_refused(&path, mode)),
            _ => Ok(()),
        }
    }

    /// Whether this payload's entries may keep setuid and setgid bits: every update of this
    /// catalog that uses the payload (by digest) sets `allow_setid`, and at least one does.
    /// (Updates with identical content share one payload file; when they disagree, the stricter
    /// rule wins.)
    pub fn setid_allowed(&self, payload: &PayloadRef) -> bool {
        let mut users = self
            .file
            .updates
            .iter()
            .filter(|u| u.payload.sha256 == payload.sha256)
            .peekable();
        users.peek().is_some() && users.all(|u| u.allow_setid)
    }

    /// Opens the payload after checking its size and SHA-256.
    ///
    /// A missing payload is `WU_E_DM_NOTDOWNLOADED`; a payload whose size or digest differs is
    /// `WU_E_UH_NEEDANOTHERDOWNLOAD` (DIGEST §10.6).
    pub fn open_verified_payload(&self, payload: &PayloadRef) -> Result<File> {
        let mut file = self.open_payload(payload)?;
        let path = self.payload_path(payload);
        let (digest, size) = sha256_reader(&mut file).at("cannot read payload", &path)?;
        self.check_digest(payload, &digest, size)?;
        use std::io::Seek;
        file.rewind().at("cannot read payload", &path)?;
        Ok(file)
    }

    /// Opens the payload file without reading it; missing is `WU_E_DM_NOTDOWNLOADED`. The
    /// caller must check what it reads with [`Self::check_digest`] before using it.
    pub fn open_payload(&self, payload: &PayloadRef) -> Result<File> {
        let path = self.payload_path(payload);
        match File::open(&path) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::code(
                WU_E_DM_NOTDOWNLOADED,
                match &self.origin {
                    Some(origin) => format!(
                        "payload {} has not been downloaded from the service {} ({} is missing); download it first (`wua download`, or UpdateDownloader)",
                        payload.sha256,
                        origin.service.name,
                        path.display()
                    ),
                    None => format!(
                        "payload {} is not in the catalog at {}; rebuild or re-download the catalog",
                        payload.sha256,
                        path.display()
                    ),
                },
            )),
            Err(e) => Err(Error::io("cannot open payload", &path, e)),
        }
    }

    /// Compares what was read of a payload with its metadata; a difference is
    /// `WU_E_UH_NEEDANOTHERDOWNLOAD` (DIGEST §10.6).
    pub fn check_digest(&self, payload: &PayloadRef, digest: &str, size: u64) -> Result<()> {
        if size != payload.size || digest != payload.sha256 {
            return Err(Error::code(
                WU_E_UH_NEEDANOTHERDOWNLOAD,
                format!(
                    "payload {} does not match its metadata (expected {} bytes with SHA-256 {}, found {size} bytes with {digest}); the file is damaged or was replaced: download it again",
                    self.payload_path(payload).display(),
                    payload.size,
                    payload.sha256
                ),
            ));
        }
        Ok(())
    }
}

fn payload_path(dir: &Path, sha256: &str) -> PathBuf {
    dir.join(PAYLOAD_DIR).join(format!("{sha256}.tar.zst"))
}

/// Parses `catalog.json` strictly, the update definitions spread over the machine's cores: the
/// file is read once into borrowed raw elements, then each element into its definition. Errors
/// give the line and column in the whole file, as a one-pass parse would.
fn parse_file(bytes: &[u8]) -> std::result::Result<CatalogFile, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw<'a> {
        format: String,
        format_version: u32,
        name: String,
        #[serde(borrow)]
        updates: Vec<&'a serde_json::value::RawValue>,
    }
    let raw: Raw<'_> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let chunk = raw.updates.len().div_ceil(threads).max(1);
    let parse = |part: &[&serde_json::value::RawValue]| {
        part.iter()
            .map(|element| {
                serde_json::from_str::<UpdateDefinition>(element.get())
                    .map(Arc::new)
                    .map_err(|e| locate(bytes, element.get(), &e))
            })
            .collect::<std::result::Result<Vec<_>, String>>()
    };
    let parts: Vec<std::result::Result<Vec<_>, String>> = if raw.updates.len() < 1024 {
        vec![parse(&raw.updates)]
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = raw
                .updates
                .chunks(chunk)
                .map(|part| scope.spawn(move || parse(part)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        })
    };
    let mut updates = Vec::with_capacity(raw.updates.len());
    for part in parts {
        updates.extend(part?);
    }
    Ok(CatalogFile {
        format: raw.format,
        format_version: raw.format_version,
        name: raw.name,
        updates,
    })
}

/// The first `Some` that `check` gives for `items`, in their order, the work spread over the
/// machine's cores for large slices.
fn first_in_parallel<'a, T: Sync, R: Send>(
    items: &'a [T],
    check: impl Fn(&'a T) -> Option<R> + Sync,
) -> Option<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    if items.len() < 1024 || threads == 1 {
        return items.iter().find_map(check);
    }
    let check = &check;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(items.len().div_ceil(threads))
            .map(|part| scope.spawn(move || part.iter().find_map(check)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .find_map(|found| found)
    })
}

/// A parse error inside one element, with its position in the whole file.
fn locate(file: &[u8], element: &str, e: &serde_json::Error) -> String {
    let offset = (element.as_ptr() as usize).saturating_sub(file.as_ptr() as usize);
    let before = &file[..offset.min(file.len())];
    let line_base = before.iter().filter(|b| **b == b'\n').count();
    let column_base = before.iter().rev().take_while(|b| **b != b'\n').count();
    let text = e.to_string();
    let message = text
        .rsplit_once(" at line ")
        .map_or(text.as_str(), |(m, _)| m);
    let (line, column) = if e.line() <= 1 {
        (line_base + 1, column_base + e.column())
    } else {
        (line_base + e.line(), e.column())
    };
    format!("{message} at line {line} column {column}")
}

/// Parses and validates `catalog.json` bytes (`path` names the input in errors).
pub fn parse_catalog(path: &Path, bytes: &[u8]) -> Result<CatalogFile> {
    // One pass over the file when it is valid (large catalogs take most of their load time
    // in parsing). When it is not, the marker and version are looked at first, so a newer
    // format gets a clear message rather than an "unknown field" from the strict parser.
    let parsed = parse_file(bytes);
    #[derive(Deserialize)]
    struct Header {
        format: Option<String>,
        format_version: Option<u32>,
    }
    let header = match &parsed {
        Ok(file) => Header {
            format: Some(file.format.clone()),
            format_version: Some(file.format_version),
        },
        Err(_) => serde_json::from_slice(bytes)
            .map_err(|e| Error::invalid_file(path, format!("not a JSON catalog file: {e}")))?,
    };
    if header.format.as_deref() != Some(FORMAT_MARKER) {
        return Err(Error::invalid_file(
            path,
            format!("not a wua catalog (its \"format\" is not \"{FORMAT_MARKER}\")"),
        ));
    }
    match header.format_version {
        Some(v) if READS_FORMAT_VERSIONS.contains(&v) => {}
        Some(v) => {
            return Err(Error::invalid_file(
                path,
                format!(
                    "catalog format version {v} is not supported (this wua reads versions {} to {}); upgrade wua",
                    READS_FORMAT_VERSIONS.start(),
                    READS_FORMAT_VERSIONS.end()
                ),
            ));
        }
        None => return Err(Error::invalid_file(path, "\"format_version\" is missing")),
    }
    let file =
        parsed.map_err(|e| Error::invalid_file(path, format!("invalid catalog metadata: {e}")))?;
    if file.format_version == 1 {
        // Each version is read by its own rules: a version-1 file has no version-2 fields.
        if let Some((update, field)) = file
            .updates
            .iter()
            .find_map(|u| version_2_field(u).map(|f| (u, f)))
        {
            return Err(Error::invalid_file(
                path,
                format!(
                    "update {} uses \"{field}\", which format version 1 does not have; declare \"format_version\": 2",
                    update.identity.update_id
                ),
            ));
        }
    }
    if let Some((update, e)) = first_in_parallel(&file.updates, |update| {
        validate_definition(update).err().map(|e| (update, e))
    }) {
        return Err(Error::code(
            WU_E_INVALID_UPDATE,
            format!(
                "{}: update {} ({}): {e}",
                path.display(),
                update.identity.update_id,
                update.title
            ),
        ));
    }
    let mut seen = HashSet::new();
    for update in &file.updates {
        if !seen.insert(update.identity.update_id) {
            return Err(Error::code(
                WU_E_INVALID_UPDATE,
                format!(
                    "{}: update id {} appears twice; each update must have its own id",
                    path.display(),
                    update.identity.update_id
                ),
            ));
        }
    }
    validate_relationships(&file).map_err(|e| {
        Error::code(
            WU_E_INVALID_RELATIONSHIP,
            format!("{}: {e}", path.display()),
        )
    })?;
    Ok(file)
}

/// The first field of format version 2 that `update` uses, if any.
fn version_2_field(update: &UpdateDefinition) -> Option<&'static str> {
    if update.browse_only {
        Some("browse_only")
    } else if update.is_assigned.is_some() {
        Some("is_assigned")
    } else if update.auto_select_on_web_sites.is_some() {
        Some("auto_select_on_web_sites")
    } else if !update.applicability.is_empty() {
        Some("applicability")
    } else if !update.bundled_updates.is_empty() {
        Some("bundled_updates")
    } else if update.allow_setid {
        Some("allow_setid")
    } else {
        None
    }
}

/// Checks what relates updates to each other: bundles name updates of this catalog that bundle
/// nothing themselves, and `is_installed` rules do not depend on each other in a cycle (which
/// detection could not decide).
fn validate_relationships(file: &CatalogFile) -> std::result::Result<(), String> {
    let by_id: HashMap<Uuid, &UpdateDefinition> = file
        .updates
        .iter()
        .map(|u| (u.identity.update_id, &**u))
        .collect();
    for update in &file.updates {
        for child in &update.bundled_updates {
            match by_id.get(child) {
                None => {
                    return Err(format!(
                        "update {} ({}) bundles {child}, which is not in the catalog; add it or remove it from bundled_updates",
                        update.identity.update_id, update.title
                    ));
                }
                Some(c) if !c.bundled_updates.is_empty() => {
                    return Err(format!(
                        "update {} ({}) bundles {child} ({}), which is a bundle itself; bundles nest one level only",
                        update.identity.update_id, update.title, c.title
                    ));
                }
                Some(_) => {}
            }
        }
    }
    // Depth-first search for a cycle through `update_installed` references of `is_installed`
    // rules; ids outside the catalog end a path (only the store can answer for them).
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Active,
        Done,
    }
    let edges = |id: &Uuid| -> Vec<Uuid> {
        by_id
            .get(id)
            .and_then(|u| u.applicability.is_installed.as_ref())
            .map(rules::referenced_updates)
            .unwrap_or_default()
    };
    let mut marks: HashMap<Uuid, Mark> = HashMap::new();
    for start in file.updates.iter().map(|u| u.identity.update_id) {
        if marks.contains_key(&start) {
            continue;
        }
        let mut stack = vec![(start, edges(&start), 0usize)];
        marks.insert(start, Mark::Active);
        while let Some((id, next, i)) = stack.last_mut() {
            if let Some(&to) = next.get(*i) {
                *i += 1;
                match marks.get(&to) {
                    Some(Mark::Active) => {
                        let mut cycle: Vec<String> =
                            stack.iter().map(|(id, ..)| id.to_string()).collect();
                        cycle.push(to.to_string());
                        return Err(format!(
                            "the is_installed rules of these updates depend on each other in a cycle: {}; detection cannot decide them, so break the cycle",
                            cycle.join(" -> ")
                        ));
                    }
                    Some(Mark::Done) => {}
                    None if by_id.contains_key(&to) => {
                        marks.insert(to, Mark::Active);
                        let e = edges(&to);
                        stack.push((to, e, 0));
                    }
                    None => {}
                }
            } else {
                marks.insert(*id, Mark::Done);
                stack.pop();
            }
        }
    }
    Ok(())
}

/// Checks one definition's own consistency; the message says what is wrong.
fn validate_definition(update: &UpdateDefinition) -> std::result::Result<(), String> {
    if update.title.trim().is_empty() {
        return Err("the title is empty".into());
    }
    for (rule, what) in [
        (&update.applicability.is_installed, "is_installed"),
        (&update.applicability.is_installable, "is_installable"),
    ] {
        if let Some(rule) = rule {
            rules::validate(rule).map_err(|e| format!("applicability.{what}: {e}"))?;
        }
    }
    let id = update.identity.update_id;
    if update.superseded_update_ids.contains(&id) {
        return Err("the update lists itself in superseded_update_ids".into());
    }
    if update.bundled_updates.contains(&id) {
        return Err("the update lists itself in bundled_updates".into());
    }
    let mut children = HashSet::new();
    if let Some(dup) = update
        .bundled_updates
        .iter()
        .find(|c| !children.insert(**c))
    {
        return Err(format!("bundled_updates lists {dup} twice"));
    }
    if update.identity.revision_number < 0 {
        return Err(format!(
            "revision_number {} is negative",
            update.identity.revision_number
        ));
    }
    if let Some(kb) = update
        .kb_article_ids
        .iter()
        .find(|k| k.is_empty() || !k.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!(
            "KB article id {kb:?} must be digits only (write 5000001, not KB5000001)"
        ));
    }
    if update
        .eula_text
        .as_deref()
        .is_some_and(|t| t.trim().is_empty())
    {
        return Err("eula_text is empty; leave it out if the update has no licence terms".into());
    }
    if update.payload.sha256.len() != 64
        || !update
            .payload
            .sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!(
            "payload sha256 {:?} is not 64 lower-case hex digits",
            update.payload.sha256
        ));
    }
    if let HandlerSpec::Command { install, uninstall } = &update.handler {
        for spec in std::iter::once(install).chain(uninstall) {
            if relative_inside(&spec.program).is_none() {
                return Err(format!(
                    "command program {:?} must be a relative path inside the payload",
                    spec.program
                ));
            }
            if spec.timeout_secs == 0 {
                return Err("a command's timeout_secs must be at least 1".into());
            }
            if !spec.exit_codes.values().any(|a| *a != ExitAction::Failed) {
                return Err(format!(
                    "command {:?} maps no exit code to success",
                    spec.program
                ));
            }
        }
        let requests_reboot = |spec: &CommandSpec| {
            spec.exit_codes
                .values()
                .any(|a| *a == ExitAction::SucceededRebootRequired)
        };
        for (spec, behavior, what) in [
            (Some(install), &update.installation_behavior, "installation"),
            (
                uninstall.as_ref(),
                &update.uninstallation_behavior,
                "uninstallation",
            ),
        ] {
            if spec.is_some_and(requests_reboot)
                && behavior.reboot_behavior == InstallationRebootBehavior::NeverReboots
            {
                return Err(format!(
                    "an {what} exit code requests a restart, but {what}_behavior.reboot_behavior is never_reboots; make it can_request_reboot"
                ));
            }
        }
    }
    for (behavior, what) in [
        (&update.installation_behavior, "installation"),
        (&update.uninstallation_behavior, "uninstallation"),
    ] {
        if behavior.impact == InstallationImpact::Minor
            && behavior.reboot_behavior != InstallationRebootBehavior::NeverReboots
        {
            return Err(format!("a minor-impact {what} must not require a restart"));
        }
    }
    Ok(())
}

/// Permission bits an installed object keeps when its update does not set `allow_setid`: the
/// permission bits and the sticky bit. Payload entries with setuid or setgid are then refused
/// ([`walk_payload`]), and so are files a `command` handler's install command writes with them.
pub(crate) const MODE_MASK: u32 = 0o1777;
/// The setuid and setgid bits, kept only when the update sets `allow_setid`.
pub(crate) const SETID_BITS: u32 = 0o6000;

/// The bits of a mode an installed object keeps: [`MODE_MASK`], plus setuid and setgid when
/// the update allows them.
pub(crate) fn mode_mask(allow_setid: bool) -> u32 {
    if allow_setid {
        MODE_MASK | SETID_BITS
    } else {
        MODE_MASK
    }
}

/// Which of setuid and setgid `mode` has, in words.
pub(crate) fn setid_bits_named(mode: u32) -> &'static str {
    match (mode & 0o4000 != 0, mode & 0o2000 != 0) {
        (true, true) => "setuid and setgid bits",
        (true, false) => "setuid bit",
        _ => "setgid bit",
    }
}

/// The error for a payload entry with setuid or setgid that its update does not allow
/// (`WU_E_UH_INVALIDMETADATA`).
pub(crate) fn setid_refused(path: &Path, mode: u32) -> Error {
    invalid_payload(
        path,
        format!(
            "mode {:04o} has the {}, which the update's metadata does not allow (\"allow_setid\")",
            mode & 0o7777,
            setid_bits_named(mode)
        ),
    )
}

/// Decompressed tar bytes a payload may hold besides its file data and what each entry is
/// allowed ([`ENTRY_ALLOWANCE`]): the end-of-archive blocks and a few large extension headers.
pub(crate) const ARCHIVE_SLACK: u64 = 1 << 20;
/// Decompressed tar bytes allowed for each accepted entry besides its file data: its header,
/// the padding of its data and two extension headers (GNU long name and long link, or pax),
/// plus its path and link target rounded up to whole blocks.
pub(crate) const ENTRY_ALLOWANCE: u64 = 2048;

/// What a payload archive entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PayloadEntryKind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link to this target (relative; it stays inside the root).
    Symlink(PathBuf),
}

/// A payload archive entry that passed every check of [`walk_payload`].
#[derive(Clone, Debug)]
pub struct PayloadEntry {
    /// Its path relative to the root, normalised (no `.`, no `..`).
    pub path: PathBuf,
    /// What it is.
    pub kind: PayloadEntryKind,
    /// Its permission bits and sticky bit; setuid and setgid too when the walk allows them
    /// (refused otherwise). `0o777` for symlinks.
    pub mode: u32,
    /// Its size in bytes (files only; 0 otherwise).
    pub size: u64,
}

/// The error for a malformed payload entry (`WU_E_UH_INVALIDMETADATA`).
pub(crate) fn invalid_payload(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::code(
        crate::hresult::WU_E_UH_INVALIDMETADATA,
        format!(
            "payload entry {}: {what}; the payload is malformed, report it to its publisher",
            path.display()
        ),
    )
}

/// Reads a payload archive (`.tar.zst`) and checks every entry before handing it to `visit`
/// with its data (docs/catalog-format.md §4):
///
/// * relative paths only (a leading `./` is fine, `..` and absolute paths are not), each path
///   once, nothing named `.wua-staging` at the top;
/// * nothing below a symlink or a file of the same archive, and no file or symlink where
///   earlier entries need a directory;
/// * only directories, regular files and symlinks: hard links, devices, FIFOs, sparse files,
///   pax global headers and every other type are refused;
/// * symlink targets relative, staying inside the root, also when followed through the
///   archive's other symlinks (checked once the whole archive is read);
/// * setuid and setgid only when `allow_setid` (the update's `allow_setid`); then kept;
/// * no more file bytes in all than the declared `installed_size`, and no more decompressed
///   tar than that plus `ENTRY_ALLOWANCE` per entry and `ARCHIVE_SLACK`, so that padding,
///   headers or entries without content cannot make the walk run on.
///
/// Breaking a rule is `WU_E_UH_INVALIDMETADATA`, naming the entry and what is wrong.
pub fn walk_payload(
    reader: impl Read,
    payload: &PayloadRef,
    allow_setid: bool,
    visit: impl FnMut(&PayloadEntry, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    let here = Path::new(&payload.sha256);
    let decoder = zstd::Decoder::new(reader)
        .map_err(|e| invalid_payload(here, format!("cannot decompress: {e}")))?;
    walk_tar(decoder, payload, allow_setid, visit)
}

/// How much decompressed tar the walk may still read; shared by the walk, which raises the
/// limit for each accepted entry, and the reader, which stops at it.
#[derive(Default)]
struct Budget {
    read: std::cell::Cell<u64>,
    limit: std::cell::Cell<u64>,
    exceeded: std::cell::Cell<bool>,
    /// The raw path of the last entry handed out, for the message.
    last_entry: std::cell::RefCell<Option<PathBuf>>,
}

impl Budget {
    fn allow(&self, bytes: u64) {
        self.limit.set(self.limit.get().saturating_add(bytes));
    }
}

/// The decompressed tar stream, cut off where it goes beyond its [`Budget`].
struct Budgeted<R> {
    inner: R,
    budget: std::rc::Rc<Budget>,
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let b = &self.budget;
        let room = b.limit.get().saturating_sub(b.read.get());
        if room == 0 {
            // At the limit: fine if the stream ends here, refused if it goes on.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    b.exceeded.set(true);
                    Err(io::Error::other(
                        "the archive expands beyond its declared size",
                    ))
                }
            };
        }
        let cap = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..cap])?;
        b.read.set(b.read.get() + n as u64);
        Ok(n)
    }
}

/// What an accepted archive path is, for the checks of later entries.
enum Seen {
    Dir,
    File,
    Symlink(PathBuf),
}

/// A tar entry type in words, for the message refusing it.
fn refused_type(kind: tar::EntryType) -> String {
    use tar::EntryType as T;
    match kind {
        T::Link => "hard links are not allowed: a hard link would be installed as the file it \
                    links to, which can be any file the extraction can reach, and wua tracks \
                    installed paths, not inodes; ship a copy or a symlink"
            .into(),
        T::Char => {
            "character devices are not allowed (only files, directories and symlinks)".into()
        }
        T::Block => "block devices are not allowed (only files, directories and symlinks)".into(),
        T::Fifo => "FIFOs are not allowed (only files, directories and symlinks)".into(),
        T::GNUSparse => {
            "GNU sparse files are not allowed (only files, directories and symlinks)".into()
        }
        T::XGlobalHeader => {
            "pax global headers are not allowed (only files, directories and symlinks)".into()
        }
        other => format!(
            "entries of type {:?} ({:?}) are not allowed (only files, directories and symlinks)",
            other,
            char::from(other.as_byte())
        ),
    }
}

/// Bytes rounded up to whole 512-byte tar blocks.
fn in_blocks(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(512) * 512
}

/// [`walk_payload`] on the decompressed tar stream.
pub(crate) fn walk_tar(
    tar_stream: impl Read,
    payload: &PayloadRef,
    allow_setid: bool,
    mut visit: impl FnMut(&PayloadEntry, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    let here = Path::new(&payload.sha256);
    let budget = std::rc::Rc::new(Budget::default());
    budget.allow(payload.installed_size.saturating_add(ARCHIVE_SLACK));
    let mut archive = tar::Archive::new(Budgeted {
        inner: tar_stream,
        budget: budget.clone(),
    });
    let result = walk_entries(&mut archive, payload, allow_setid, &budget, &mut visit);
    match result {
        // Whatever failed, it failed because the reader stopped at the budget.
        Err(_) if budget.exceeded.get() => Err(invalid_payload(
            here,
            format!(
                "the archive expands beyond its declared size {}: more than {} bytes of tar for {} bytes of files (installed_size, plus {} bytes per entry and {} bytes for headers)",
                match budget.last_entry.borrow().as_ref() {
                    Some(last) => format!("after entry {}", last.display()),
                    None => "before its first entry".to_string(),
                },
                budget.limit.get(),
                payload.installed_size,
                ENTRY_ALLOWANCE,
                ARCHIVE_SLACK
            ),
        )),
        other => other,
    }
}

fn walk_entries<R: Read>(
    archive: &mut tar::Archive<Budgeted<R>>,
    payload: &PayloadRef,
    allow_setid: bool,
    budget: &Budget,
    visit: &mut impl FnMut(&PayloadEntry, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    let here = Path::new(&payload.sha256);
    let mut total = 0u64;
    // Every path an entry named, and what it is.
    let mut seen: HashMap<PathBuf, Seen> = HashMap::new();
    // Every directory the entries so far need: the parents of their paths.
    let mut needed_dirs: HashSet<PathBuf> = HashSet::new();
    let mut root_seen = false;
    let entries = archive
        .entries()
        .map_err(|e| invalid_payload(here, format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| invalid_payload(here, format!("unreadable: {e}")))?;
        let raw = entry
            .path()
            .map_err(|e| invalid_payload(here, format!("bad path: {e}")))?
            .into_owned();
        let kind = entry.header().entry_type();
        let path = match normalize_entry_path(&raw) {
            Some(p) if p.as_os_str().is_empty() && kind.is_dir() => {
                // The archive root itself ("./", as `tar -C dir -c .` writes): skipped, once.
                if std::mem::replace(&mut root_seen, true) {
                    return Err(invalid_payload(
                        &raw,
                        "the path appears twice in the archive",
                    ));
                }
                budget.allow(ENTRY_ALLOWANCE);
                continue;
            }
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => return Err(invalid_payload(&raw, "path is absolute or leaves the root")),
        };
        for ancestor in path.ancestors().skip(1) {
            match seen.get(ancestor) {
                Some(Seen::Symlink(_)) => {
                    return Err(invalid_payload(&raw, "path goes through a symlink"));
                }
                Some(Seen::File) => {
                    return Err(invalid_payload(
                        &raw,
                        format!(
                            "path goes below {}, a file of the archive",
                            ancestor.display()
                        ),
                    ));
                }
                Some(Seen::Dir) | None => {}
            }
        }
        if path.starts_with(crate::handlers::STAGING_DIR) {
            return Err(invalid_payload(
                &raw,
                format!(
                    "the name {} is reserved for wua",
                    crate::handlers::STAGING_DIR
                ),
            ));
        }
        if seen.contains_key(&path) {
            return Err(invalid_payload(
                &raw,
                "the path appears twice in the archive",
            ));
        }
        if !kind.is_dir() && needed_dirs.contains(&path) {
            return Err(invalid_payload(
                &raw,
                "earlier entries of the archive need a directory at this path",
            ));
        }
        let header_mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
        let size = if kind.is_file() { entry.size() } else { 0 };
        let (kind, mode, link_len) = if kind.is_dir() || kind.is_file() {
            if header_mode & SETID_BITS != 0 && !allow_setid {
                return Err(setid_refused(&raw, header_mode));
            }
            let mode = header_mode & mode_mask(allow_setid);
            if kind.is_dir() {
                (PayloadEntryKind::Dir, mode, 0)
            } else {
                total = total.saturating_add(size);
                if total > payload.installed_size {
                    return Err(invalid_payload(
                        &raw,
                        format!(
                            "the payload expands beyond its declared installed size of {} bytes",
                            payload.installed_size
                        ),
                    ));
                }
                (PayloadEntryKind::File, mode, 0)
            }
        } else if kind.is_symlink() {
            let link = entry
                .link_name()
                .map_err(|e| invalid_payload(&raw, format!("bad link target: {e}")))?
                .filter(|l| !l.as_os_str().is_empty())
                .ok_or_else(|| invalid_payload(&raw, "symlink without a target"))?
                .into_owned();
            if link.has_root() {
                return Err(invalid_payload(
                    &raw,
                    format!(
                        "symlink points outside the root: absolute target {}; use a relative target",
                        link.display()
                    ),
                ));
            }
            let resolved = path.parent().unwrap_or(Path::new("")).join(&link);
            if resolve_lexically(&resolved).is_none() {
                return Err(invalid_payload(
                    &raw,
                    format!(
                        "symlink points outside the root: {} climbs above the payload root",
                        link.display()
                    ),
                ));
            }
            let len = link.as_os_str().len();
            (PayloadEntryKind::Symlink(link), 0o777, len)
        } else {
            return Err(invalid_payload(&raw, refused_type(kind)));
        };
        seen.insert(
            path.clone(),
            match &kind {
                PayloadEntryKind::Dir => Seen::Dir,
                PayloadEntryKind::File => Seen::File,
                PayloadEntryKind::Symlink(link) => Seen::Symlink(link.clone()),
            },
        );
        for ancestor in path.ancestors().skip(1) {
            if ancestor.as_os_str().is_empty() || !needed_dirs.insert(ancestor.to_path_buf()) {
                break;
            }
        }
        budget.allow(
            ENTRY_ALLOWANCE
                .saturating_add(in_blocks(raw.as_os_str().len()))
                .saturating_add(in_blocks(link_len)),
        );
        budget.last_entry.replace(Some(raw));
        visit(
            &PayloadEntry {
                path,
                kind,
                mode,
                size,
            },
            &mut entry,
        )?;
    }
    // Each symlink stayed inside when read alone; followed through the archive's other
    // symlinks (which may come later in the archive), it must still.
    let links: HashMap<&Path, &Path> = seen
        .iter()
        .filter_map(|(path, s)| match s {
            Seen::Symlink(target) => Some((path.as_path(), target.as_path())),
            _ => None,
        })
        .collect();
    let mut sorted: Vec<_> = links.iter().collect();
    sorted.sort();
    for (link, target) in sorted {
        match follow_links(&links, link, target) {
            Followed::Inside => {}
            Followed::Outside => {
                return Err(invalid_payload(
                    link,
                    format!(
                        "symlink points outside the root: {}, followed through the archive's other symlinks, climbs above the payload root",
                        target.display()
                    ),
                ));
            }
            Followed::TooDeep => {
                return Err(invalid_payload(
                    link,
                    format!(
                        "symlink {} goes through more than {MAX_LINK_HOPS} of the archive's symlinks (a loop?)",
                        target.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// At most this many symlinks are followed resolving one path, as Linux (`MAXSYMLINKS`).
const MAX_LINK_HOPS: usize = 40;

/// Where following a symlink leads.
enum Followed {
    Inside,
    Outside,
    TooDeep,
}

/// Follows the symlink at `link` (to `target`) through the archive's symlinks (`links`), as the
/// kernel would once they are all installed: `..` after a symlink climbs from where that
/// symlink leads, not from the link itself.
fn follow_links(links: &HashMap<&Path, &Path>, link: &Path, target: &Path) -> Followed {
    let mut at = link.parent().unwrap_or(Path::new("")).to_path_buf();
    let mut pending: Vec<Component<'_>> = target.components().rev().collect();
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        match c {
            Component::Normal(part) => {
                let next = at.join(part);
                match links.get(next.as_path()) {
                    Some(to) => {
                        hops += 1;
                        if hops > MAX_LINK_HOPS {
                            return Followed::TooDeep;
                        }
                        pending.extend(to.components().rev());
                    }
                    None => at = next,
                }
            }
            Component::CurDir => {}
            Component::ParentDir => {
                if !at.pop() {
                    return Followed::Outside;
                }
            }
            Component::RootDir | Component::Prefix(_) => return Followed::Outside,
        }
    }
    Followed::Inside
}

/// An archive path as a relative path: `.` components dropped, `..` and absolute paths refused.
fn normalize_entry_path(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

/// Resolves `..` lexically; `None` if the path climbs above its start.
fn resolve_lexically(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Returns the path as a normal relative path if it stays inside its base (no `..`, not absolute).
pub(crate) fn relative_inside(path: &str) -> Option<PathBuf> {
    normalize_entry_path(Path::new(path)).filter(|p| !p.as_os_str().is_empty())
}

/// SHA-256 and length of everything `reader` yields.
pub(crate) fn sha256_reader(reader: &mut impl Read) -> io::Result<(String, u64)> {
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        ctx.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex::encode(ctx.finish().as_ref()), total))
}

/// The file in an update source folder that holds its metadata.
pub const SOURCE_METADATA: &str = "update.json";
/// The folder in an update source folder whose tree becomes the payload.
pub const SOURCE_PAYLOAD: &str = "payload";

/// What [`build`] produced.
#[derive(Debug)]
pub struct BuildReport {
    /// The built catalog.
    pub catalog: Catalog,
    /// Payload files written (new digests).
    pub payloads_written: usize,
}

/// Builds a catalog in `out` from a source tree.
///
/// `source` holds one folder per update (taken in name order), each with `update.json` (an
/// update definition without `payload`) and a `payload/` tree. The catalog's name is read from
/// `source/catalog-name` if present. Output is deterministic: archives have sorted entries,
/// zeroed owners and times, modes without group/other write bits, and fixed compression
/// settings. Payloads already present are kept; payloads no longer referenced are removed.
pub fn build(source: &Path, out: &Path) -> Result<BuildReport> {
    let name = match std::fs::read_to_string(source.join("catalog-name")) {
        Ok(s) => s.trim().to_string(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => "wua catalog".to_string(),
        Err(e) => return Err(Error::io("cannot read", source.join("catalog-name"), e)),
    };
    let mut folders: Vec<PathBuf> = std::fs::read_dir(source)
        .at("cannot list catalog sources in", source)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(SOURCE_METADATA).is_file())
        .collect();
    folders.sort();
    if folders.is_empty() {
        return Err(Error::code(
            WU_E_INVALID_FILE,
            format!(
                "{} holds no update folders (each needs an {SOURCE_METADATA} and a {SOURCE_PAYLOAD}/ tree)",
                source.display()
            ),
        ));
    }
    // Pack and validate everything before writing anything, so a bad source never leaves a
    // half-built catalog or stray payloads behind.
    let mut updates = Vec::new();
    let mut archives = Vec::new();
    for folder in folders {
        let meta_path = folder.join(SOURCE_METADATA);
        let text = std::fs::read(&meta_path).at("cannot read", &meta_path)?;
        let mut value: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| Error::invalid_file(&meta_path, format!("not valid JSON: {e}")))?;
        let archive = pack_tree(&folder.join(SOURCE_PAYLOAD))?;
        let (sha256, size) =
            sha256_reader(&mut archive.bytes.as_slice()).expect("reading memory cannot fail");
        let payload = PayloadRef {
            sha256,
            size,
            installed_size: archive.installed_size,
        };
        let obj = value
            .as_object_mut()
            .ok_or_else(|| Error::invalid_file(&meta_path, "must hold a JSON object"))?;
        obj.insert(
            "payload".into(),
            serde_json::to_value(&payload).expect("serialisable"),
        );
        let def: UpdateDefinition = serde_json::from_value(value).map_err(|e| {
            Error::invalid_file(&meta_path, format!("invalid update metadata: {e}"))
        })?;
        updates.push(Arc::new(def));
        archives.push((payload.sha256, archive.bytes));
    }
    let file = CatalogFile {
        format: FORMAT_MARKER.into(),
        format_version: FORMAT_VERSION,
        name,
        updates,
    };
    let mut json = serde_json::to_vec_pretty(&file).expect("serialisable");
    json.push(b'\n');
    let catalog_path = out.join(CATALOG_FILE);
    parse_catalog(&catalog_path, &json)?;

    let payload_dir = out.join(PAYLOAD_DIR);
    std::fs::create_dir_all(&payload_dir).at("cannot create directory", &payload_dir)?;
    let mut written = 0;
    for (sha256, bytes) in &archives {
        let target = payload_path(out, sha256);
        // A file of that name with other bytes (damaged, or written by hand) is replaced.
        if std::fs::read(&target).ok().as_deref() != Some(bytes.as_slice()) {
            write_atomically(&target, bytes)?;
            written += 1;
        }
    }
    write_atomically(&catalog_path, &json)?;
    // Payloads of earlier builds that this catalog no longer references are build output too.
    let keep: HashSet<PathBuf> = archives
        .iter()
        .map(|(sha256, _)| payload_path(out, sha256))
        .collect();
    for entry in std::fs::read_dir(&payload_dir).at("cannot list", &payload_dir)? {
        let path = entry.at("cannot list", &payload_dir)?.path();
        let is_payload = path.is_file()
            && path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(".tar.zst"));
        if is_payload && !keep.contains(&path) {
            std::fs::remove_file(&path).at("cannot remove stale payload", &path)?;
        }
    }
    Ok(BuildReport {
        catalog: Catalog::open(out)?,
        payloads_written: written,
    })
}

/// Writes `path` so that a crash leaves the old content or the new, never a mix: a temporary
/// file beside it, fsynced, renamed over it, and the directory fsynced.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_file_name(format!(
        "{}.wua-tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let mut f = File::create(&tmp).at("cannot create", &tmp)?;
    f.write_all(bytes).at("cannot write", &tmp)?;
    f.sync_all().at("cannot sync", &tmp)?;
    std::fs::rename(&tmp, path).at("cannot rename into place", path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .at("cannot sync directory", dir)?;
    }
    Ok(())
}

struct PackedTree {
    bytes: Vec<u8>,
    installed_size: u64,
}

/// Packs a directory tree into a deterministic `.tar.zst`.
///
/// A missing tree packs as an empty archive: bundles often carry nothing of their own, and git
/// cannot keep an empty folder.
fn pack_tree(root: &Path) -> Result<PackedTree> {
    let mut entries = Vec::new();
    match std::fs::symlink_metadata(root) {
        Ok(meta) if meta.is_dir() => collect(root, root, &mut entries)?,
        Ok(_) => return Err(Error::invalid_file(root, "the payload must be a directory")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("cannot read payload tree", root, e)),
    }
    entries.sort();
    let mut tar = tar::Builder::new(Vec::new());
    let mut installed_size = 0;
    for rel in entries {
        let full = root.join(&rel);
        let m = std::fs::symlink_metadata(&full).at("cannot read", &full)?;
        // Owners and times are zeroed and group/other write bits dropped, so the archive does
        // not depend on who checked the sources out, nor on the usual umasks (022, 002); a
        // private (0600) file stays private. A stricter umask (027, 077) does change modes.
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mode(std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o755);
        let ft = m.file_type();
        if ft.is_symlink() {
            let target = std::fs::read_link(&full).at("cannot read", &full)?;
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            tar.append_link(&mut header, &rel, &target)
                .at("cannot add to payload archive", &full)?;
        } else if ft.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            tar.append_data(&mut header, &rel, io::empty())
                .at("cannot add to payload archive", &full)?;
        } else {
            installed_size += m.len();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(m.len());
            let file = File::open(&full).at("cannot read", &full)?;
            tar.append_data(&mut header, &rel, file)
                .at("cannot add to payload archive", &full)?;
        }
    }
    let tar_bytes = tar.into_inner().at("cannot finish payload archive", root)?;
    let bytes = zstd::encode_all(tar_bytes.as_slice(), 10).at("cannot compress payload", root)?;
    Ok(PackedTree {
        bytes,
        installed_size,
    })
}

fn collect(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).at("cannot list", dir)? {
        let entry = entry.at("cannot list", dir)?;
        let path = entry.path();
        let rel = path.strip_prefix(base).expect("below base").to_path_buf();
        let ft = entry.file_type().at("cannot read", &path)?;
        if ft.is_dir() {
            out.push(rel);
            collect(base, &path, out)?;
        } else if ft.is_file() || ft.is_symlink() {
            out.push(rel);
        } else {
            return Err(Error::invalid_file(
                &path,
                "payloads may hold only regular files, directories and symlinks",
            ));
        }
    }
    Ok(())
}

/// A minimal valid definition, for unit tests.
#[cfg(test)]
pub(crate) fn test_definition(update_id: Uuid) -> UpdateDefinition {
    UpdateDefinition {
        identity: UpdateIdentity {
            update_id,
            revision_number: 1,
        },
        title: format!("Test update {update_id}"),
        description: String::new(),
        kb_article_ids: vec![],
        categories: vec![],
        msrc_severity: None,
        update_type: UpdateType::Software,
        deployment_action: DeploymentAction::Installation,
        is_mandatory: false,
        is_uninstallable: true,
        eula_text: None,
        installation_behavior: InstallationBehavior::default(),
        uninstallation_behavior: InstallationBehavior::default(),
        superseded_update_ids: vec![],
        support_url: String::new(),
        uninstallation_notes: String::new(),
        uninstallation_steps: vec![],
        deadline: None,
        browse_only: false,
        is_assigned: None,
        auto_select_on_web_sites: None,
        applicability: Applicability::default(),
        bundled_updates: vec![],
        allow_setid: false,
        payload: PayloadRef {
            sha256: "0".repeat(64),
            size: 0,
            installed_size: 0,
        },
        handler: HandlerSpec::Files {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A large catalog is parsed on several threads; it must read exactly as one pass would,
    /// and an error deep inside must name its line and column in the whole file.
    #[test]
    fn large_catalogs_parse_in_parallel_with_file_positions_in_errors() {
        let n = 3000;
        let lines: Vec<String> = (0..n)
            .map(|i| serde_json::to_string(&test_definition(Uuid::from_u128(i + 1))).unwrap())
            .collect();
        let json = |lines: &[String]| {
            format!(
                "{{\"format\": \"wua-catalog\", \"format_version\": 2, \"name\": \"big\",\n\"updates\": [\n{}\n]}}\n",
                lines.join(",\n")
            )
        };
        let file = parse_catalog(Path::new("big.json"), json(&lines).as_bytes()).unwrap();
        assert_eq!(file.updates.len(), n as usize);
        for (i, def) in file.updates.iter().enumerate() {
            assert_eq!(def.identity.update_id, Uuid::from_u128(i as u128 + 1));
        }
        // Update 2500 (line 2503: two header lines, then one update per line) gets a field
        // the format does not have, after its first 20 characters.
        let mut bad = lines.clone();
        bad[2500].insert_str(1, "\"colour\": 1, ");
        let e = parse_catalog(Path::new("big.json"), json(&bad).as_bytes()).unwrap_err();
        let text = e.to_string();
        assert_eq!(e.hresult(), WU_E_INVALID_FILE, "{text}");
        assert!(text.contains("unknown field `colour`"), "{text}");
        assert!(text.contains("at line 2503 column 9"), "{text}");
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn source_with_one_update(dir: &Path) {
        write(
            &dir.join("a/update.json"),
            r#"{"identity":{"update_id":"00000000-0000-0000-0000-000000000001","revision_number":1},
                "title":"A","handler":{"kind":"files"}}"#,
        );
        write(&dir.join("a/payload/etc/a.conf"), "a=1\n");
    }

    #[test]
    fn build_is_deterministic_and_verifiable() {
        let src = tempfile::tempdir().unwrap();
        source_with_one_update(src.path());
        let out1 = tempfile::tempdir().unwrap();
        let out2 = tempfile::tempdir().unwrap();
        let r1 = build(src.path(), out1.path()).unwrap();
        let r2 = build(src.path(), out2.path()).unwrap();
        assert_eq!(r1.payloads_written, 1);
        assert_eq!(r2.catalog.updates(), r1.catalog.updates());
        let j1 = std::fs::read(out1.path().join(CATALOG_FILE)).unwrap();
        let j2 = std::fs::read(out2.path().join(CATALOG_FILE)).unwrap();
        assert_eq!(j1, j2);
        let def = &r1.catalog.updates()[0];
        assert_eq!(def.payload.installed_size, 4);
        assert!(r1.catalog.has_payload(&def.payload));
        r1.catalog.open_verified_payload(&def.payload).unwrap();
    }

    #[test]
    fn tampered_payload_needs_another_download() {
        let src = tempfile::tempdir().unwrap();
        source_with_one_update(src.path());
        let out = tempfile::tempdir().unwrap();
        let cat = build(src.path(), out.path()).unwrap().catalog;
        let def = cat.updates()[0].clone();
        let path = cat.payload_path(&def.payload);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let err = cat.open_verified_payload(&def.payload).unwrap_err();
        assert_eq!(err.hresult(), WU_E_UH_NEEDANOTHERDOWNLOAD);
        std::fs::remove_file(&path).unwrap();
        assert!(!cat.has_payload(&def.payload));
        let err = cat.open_verified_payload(&def.payload).unwrap_err();
        assert_eq!(err.hresult(), WU_E_DM_NOTDOWNLOADED);
    }

    #[test]
    fn bad_catalogs_are_rejected_with_the_reason() {
        let p = Path::new("/c/catalog.json");
        let e = parse_catalog(p, b"{").unwrap_err();
        assert!(e.to_string().contains("not a JSON catalog"), "{e}");
        let e = parse_catalog(p, br#"{"format":"other","format_version":1}"#).unwrap_err();
        assert!(e.to_string().contains("not a wua catalog"), "{e}");
        let e = parse_catalog(
            p,
            br#"{"format":"wua-catalog","format_version":9,"name":"x","updates":[]}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("version 9 is not supported"), "{e}");
        let mut def = test_definition(Uuid::from_u128(1));
        def.handler = HandlerSpec::Command {
            install: CommandSpec {
                program: "../evil".into(),
                args: vec![],
                timeout_secs: 5,
                exit_codes: default_exit_codes(),
            },
            uninstall: None,
        };
        let file = CatalogFile {
            format: FORMAT_MARKER.into(),
            format_version: 1,
            name: "x".into(),
            updates: vec![Arc::new(def.clone()), Arc::new(def)],
        };
        let e = parse_catalog(p, &serde_json::to_vec(&file).unwrap()).unwrap_err();
        assert_eq!(e.hresult(), WU_E_INVALID_UPDATE, "{e}");
        assert!(e.to_string().contains("relative path inside"), "{e}");
    }

    #[test]
    fn strict_parsing_rejects_unknown_fields_everywhere() {
        let mut def = serde_json::to_value(test_definition(Uuid::from_u128(1))).unwrap();
        for (pointer, field) in [("/identity", "extra"), ("/handler", "extra"), ("", "extra")] {
            let mut d = def.clone();
            d.pointer_mut(pointer)
                .unwrap()
                .as_object_mut()
                .unwrap()
                .insert(field.into(), 1.into());
            let err = serde_json::from_value::<UpdateDefinition>(d).unwrap_err();
            assert!(
                err.to_string().contains("unknown field"),
                "{pointer}: {err}"
            );
        }
        def["handler"] = serde_json::json!({"kind": "command",
            "install": {"program": "x", "exit_codes": {" 0": "succeeded"}}});
        let err = serde_json::from_value::<UpdateDefinition>(def).unwrap_err();
        assert!(err.to_string().contains("not an integer"), "{err}");
    }

    #[test]
    fn definitions_are_checked_for_consistency() {
        let check = |f: &dyn Fn(&mut UpdateDefinition)| {
            let mut d = test_definition(Uuid::from_u128(1));
            f(&mut d);
            validate_definition(&d).unwrap_err()
        };
        assert!(check(&|d| d.kb_article_ids = vec!["KB1".into()]).contains("digits only"));
        assert!(check(&|d| d.identity.revision_number = -1).contains("negative"));
        assert!(check(&|d| d.eula_text = Some(" ".into())).contains("eula_text is empty"));
        assert!(
            check(&|d| {
                d.uninstallation_behavior.impact = InstallationImpact::Minor;
                d.uninstallation_behavior.reboot_behavior =
                    InstallationRebootBehavior::AlwaysRequiresReboot;
            })
            .contains("minor-impact uninstallation")
        );
        assert!(
            check(&|d| {
                d.handler = HandlerSpec::Command {
                    install: CommandSpec {
                        program: "x".into(),
                        args: vec![],
                        timeout_secs: 1,
                        exit_codes: BTreeMap::from([
                            (0, ExitAction::Succeeded),
                            (10, ExitAction::SucceededRebootRequired),
                        ]),
                    },
                    uninstall: None,
                }
            })
            .contains("make it can_request_reboot")
        );
        validate_definition(&test_definition(Uuid::from_u128(1))).unwrap();
    }

    #[test]
    fn builder_keeps_private_modes_and_prunes_stale_payloads() {
        use std::os::unix::fs::PermissionsExt;
        let src = tempfile::tempdir().unwrap();
        source_with_one_update(src.path());
        let secret = src.path().join("a/payload/etc/secret");
        std::fs::write(&secret, "s").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let out = tempfile::tempdir().unwrap();
        let first = build(src.path(), out.path()).unwrap().catalog;
        let mut modes = BTreeMap::new();
        let def = first.updates()[0].clone();
        walk_payload(
            first.open_verified_payload(&def.payload).unwrap(),
            &def.payload,
            false,
            |e, _| {
                modes.insert(e.path.clone(), e.mode);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(modes[Path::new("etc/secret")], 0o600);
        assert_eq!(modes[Path::new("etc/a.conf")] & 0o022, 0);
        first.check_payload(&def.payload).unwrap();
        // A changed payload: the old archive goes, the new one comes.
        std::fs::write(&secret, "changed").unwrap();
        let second = build(src.path(), out.path()).unwrap().catalog;
        let payloads = std::fs::read_dir(out.path().join(PAYLOAD_DIR))
            .unwrap()
            .count();
        assert_eq!(payloads, 1);
        assert!(!first.has_payload(&def.payload));
        assert!(second.has_payload(&second.updates()[0].payload));
        // A bad source writes nothing.
        let bad_out = tempfile::tempdir().unwrap();
        write(
            &src.path().join("b/update.json"),
            r#"{"title": "no identity"}"#,
        );
        std::fs::create_dir_all(src.path().join("b/payload")).unwrap();
        assert!(build(src.path(), bad_out.path()).is_err());
        assert_eq!(std::fs::read_dir(bad_out.path()).unwrap().count(), 0);
    }

    proptest::proptest! {
        /// Whatever bytes a catalog file holds, the reader answers with a value or an error,
        /// never a panic.
        #[test]
        fn parse_catalog_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse_catalog(Path::new("fuzz.json"), &bytes);
        }

        /// Near-valid catalogs: a real one with a byte changed.
        #[test]
        fn parse_catalog_survives_mutations(pos in 0usize..4096, byte in proptest::num::u8::ANY) {
            let file = CatalogFile {
                format: FORMAT_MARKER.into(),
                format_version: FORMAT_VERSION,
                name: "p".into(),
                updates: vec![Arc::new(test_definition(Uuid::from_u128(7)))],
            };
            let mut bytes = serde_json::to_vec(&file).unwrap();
            let at = pos % bytes.len();
            bytes[at] = byte;
            let _ = parse_catalog(Path::new("mutated.json"), &bytes);
        }

        /// A definition written out reads back the same.
        #[test]
        fn definitions_round_trip(
            id in proptest::num::u128::ANY,
            revision in 0i32..1000,
            title in "[A-Za-z0-9][A-Za-z0-9 ]{0,39}",
            kbs in proptest::collection::vec("[0-9]{1,8}", 0..4),
            timeout in 1u64..10_000,
            code in proptest::num::i32::ANY,
        ) {
            let mut def = test_definition(Uuid::from_u128(id));
            def.identity.revision_number = revision;
            def.title = title;
            def.kb_article_ids = kbs;
            def.handler = HandlerSpec::Command {
                install: CommandSpec {
                    program: "setup".into(),
                    args: vec!["--x".into()],
                    timeout_secs: timeout,
                    exit_codes: BTreeMap::from([(0, ExitAction::Succeeded), (code, ExitAction::Failed)]),
                },
                uninstall: None,
            };
            let file = CatalogFile {
                format: FORMAT_MARKER.into(),
                format_version: FORMAT_VERSION,
                name: "p".into(),
                updates: vec![Arc::new(def)],
            };
            let bytes = serde_json::to_vec(&file).unwrap();
            let back = parse_catalog(Path::new("rt.json"), &bytes);
            if code == 0 {
                // Code 0 listed twice: the later mapping (failed) wins and nothing succeeds.
                proptest::prop_assert!(back.is_err());
            } else {
                proptest::prop_assert_eq!(back.unwrap().updates, file.updates);
            }
        }
    }

    /// A `.tar.zst` of raw entries: (path, type, data or link target, mode).
    fn archive(entries: &[(&str, tar::EntryType, &str, u32)]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, kind, data, mode) in entries {
            let mut h = tar::Header::new_gnu();
            // set_path refuses `..`; write the raw name, as a hostile archive would.
            h.as_gnu_mut().unwrap().name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_entry_type(*kind);
            h.set_mode(*mode);
            if kind == &tar::EntryType::GNUSparse {
                h.as_gnu_mut().unwrap().set_real_size(data.len() as u64);
            }
            if kind.is_symlink() || kind == &tar::EntryType::Link {
                h.as_gnu_mut().unwrap().linkname[..data.len()].copy_from_slice(data.as_bytes());
                h.set_size(0);
                h.set_cksum();
                tar.append(&h, std::io::empty()).unwrap();
            } else {
                h.set_size(data.len() as u64);
                h.set_cksum();
                tar.append(&h, data.as_bytes()).unwrap();
            }
        }
        zstd::encode_all(tar.into_inner().unwrap().as_slice(), 3).unwrap()
    }

    /// Walks an archive of these entries (modes and whether setid is allowed given), declared
    /// with an installed size of 8 bytes; the paths and modes the walk hands out.
    fn walk_modes(
        entries: &[(&str, tar::EntryType, &str, u32)],
        allow_setid: bool,
    ) -> Result<Vec<(PathBuf, u32)>> {
        walk_bytes(&archive(entries), allow_setid)
    }

    fn walk_bytes(bytes: &[u8], allow_setid: bool) -> Result<Vec<(PathBuf, u32)>> {
        let payload = PayloadRef {
            sha256: "0".repeat(64),
            size: bytes.len() as u64,
            installed_size: 8,
        };
        let mut paths = Vec::new();
        walk_payload(bytes, &payload, allow_setid, |e, _| {
            paths.push((e.path.clone(), e.mode));
            Ok(())
        })?;
        Ok(paths)
    }

    /// [`walk_modes`] with mode 0644 everywhere and no setid allowed; the paths.
    fn walk(entries: &[(&str, tar::EntryType, &str)]) -> Result<Vec<PathBuf>> {
        let entries: Vec<_> = entries
            .iter()
            .map(|(p, k, d)| (*p, *k, *d, 0o644))
            .collect();
        Ok(walk_modes(&entries, false)?
            .into_iter()
            .map(|(p, _)| p)
            .collect())
    }

    fn assert_refused<T: std::fmt::Debug>(result: Result<T>, why: &str) {
        let e = result.unwrap_err();
        assert_eq!(e.hresult(), crate::hresult::WU_E_UH_INVALIDMETADATA, "{e}");
        assert!(e.to_string().contains(why), "{why:?} not in: {e}");
    }

    #[test]
    fn payload_entries_are_checked_before_use() {
        use tar::EntryType::{
            Block, Char, Continuous, Directory, Fifo, GNUSparse, Link, Regular, Symlink,
            XGlobalHeader,
        };
        let ok = walk(&[
            ("./", Directory, ""),
            ("./etc/", Directory, ""),
            ("./etc/a", Regular, "abc"),
            ("./etc/l", Symlink, "a"),
            ("./usr/bin/up", Symlink, "../../etc/a"),
        ])
        .unwrap();
        assert_eq!(
            ok,
            ["etc", "etc/a", "etc/l", "usr/bin/up"].map(PathBuf::from)
        );
        let refused = |entries: &[(&str, tar::EntryType, &str)], why: &str| {
            assert_refused(walk(entries), why)
        };
        // Paths.
        refused(&[("../x", Regular, "a")], "leaves the root");
        refused(&[("a/../../x", Regular, "a")], "leaves the root");
        refused(&[("/etc/x", Regular, "a")], "leaves the root");
        refused(
            &[("a", Regular, "1"), ("./a", Regular, "2")],
            "appears twice",
        );
        refused(
            &[("./", Directory, ""), (".", Directory, "")],
            "appears twice",
        );
        refused(&[(".wua-staging/x", Regular, "a")], "reserved");
        // Symlinks: inside the root, relative, and nothing written through them.
        refused(
            &[("l", Symlink, "../../etc"), ("x", Regular, "a")],
            "symlink points outside the root: ../../etc climbs above",
        );
        refused(
            &[("l", Symlink, "/etc/passwd")],
            "symlink points outside the root: absolute target /etc/passwd; use a relative target",
        );
        refused(&[("l", Symlink, "")], "symlink without a target");
        refused(
            &[("r", Symlink, "."), ("l", Symlink, "r/..")],
            "followed through the archive's other symlinks",
        );
        refused(
            &[("d/l", Symlink, "../r/../etc"), ("r", Symlink, ".")],
            "followed through the archive's other symlinks",
        );
        refused(
            &[("a", Symlink, "b"), ("b", Symlink, "a")],
            "more than 40 of the archive's symlinks",
        );
        refused(
            &[("l", Symlink, "sub"), ("l/x", Regular, "a")],
            "through a symlink",
        );
        refused(
            &[("d/x", Regular, "a"), ("d", Symlink, "e")],
            "need a directory at this path",
        );
        refused(
            &[("f", Regular, "1"), ("f/x", Regular, "2")],
            "a file of the archive",
        );
        // Types.
        refused(
            &[("a", Regular, "a"), ("h", Link, "a")],
            "hard links are not allowed",
        );
        refused(&[("c", Char, "")], "character devices are not allowed");
        refused(&[("b", Block, "")], "block devices are not allowed");
        refused(&[("f", Fifo, "")], "FIFOs are not allowed");
        refused(&[("s", GNUSparse, "")], "GNU sparse files are not allowed");
        refused(
            &[("g", XGlobalHeader, "")],
            "pax global headers are not allowed",
        );
        refused(&[("c", Continuous, "")], "are not allowed");
        // Sizes.
        refused(
            &[("big", Regular, "123456789")],
            "beyond its declared installed size",
        );
    }

    #[test]
    fn setid_bits_are_refused_unless_allowed_and_then_kept() {
        use tar::EntryType::{Directory, Regular, Symlink};
        for (mode, named) in [
            (0o4755, "mode 4755 has the setuid bit"),
            (0o2755, "mode 2755 has the setgid bit"),
            (0o6755, "setuid and setgid bits"),
        ] {
            assert_refused(walk_modes(&[("f", Regular, "x", mode)], false), named);
            assert_refused(walk_modes(&[("d", Directory, "", mode)], false), named);
            assert_eq!(
                walk_modes(&[("f", Regular, "x", mode)], true).unwrap(),
                [(PathBuf::from("f"), mode)]
            );
        }
        // The sticky bit stays; a symlink's mode means nothing and reads as 0777.
        assert_eq!(
            walk_modes(
                &[("t", Directory, "", 0o1777), ("l", Symlink, "t", 0o6777)],
                false
            )
            .unwrap(),
            [(PathBuf::from("t"), 0o1777), (PathBuf::from("l"), 0o777)]
        );
    }

    #[test]
    fn decompressed_tar_is_bounded_by_the_declared_sizes() {
        use tar::EntryType::{Directory, Regular};
        // A directory whose size field claims 4 MiB of zeros: no file bytes, but the reader
        // would have to skip the data.
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_path("pad").unwrap();
        h.set_entry_type(Directory);
        h.set_mode(0o755);
        h.set_size(4 << 20);
        h.set_cksum();
        tar.append(&h, std::io::repeat(0).take(4 << 20)).unwrap();
        let bytes = zstd::encode_all(tar.into_inner().unwrap().as_slice(), 3).unwrap();
        assert!(bytes.len() < 4096, "{} bytes", bytes.len());
        assert_refused(
            walk_bytes(&bytes, false),
            "the archive expands beyond its declared size",
        );
        // A pax header of 2 MiB: read before any entry is handed out.
        let mut tar = tar::Builder::new(Vec::new());
        let filler = format!("comment={}\n", "x".repeat(2 << 20));
        let record = pax_record(&filler);
        let mut h = tar::Header::new_ustar();
        h.set_path("pax").unwrap();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(record.len() as u64);
        h.set_cksum();
        tar.append(&h, record.as_bytes()).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_path("f").unwrap();
        h.set_entry_type(Regular);
        h.set_size(1);
        h.set_cksum();
        tar.append(&h, &b"f"[..]).unwrap();
        let bytes = zstd::encode_all(tar.into_inner().unwrap().as_slice(), 3).unwrap();
        assert_refused(
            walk_bytes(&bytes, false),
            "the archive expands beyond its declared size",
        );
        // Many small entries with long names are within the allowance.
        let mut tar = tar::Builder::new(Vec::new());
        for i in 0..2000 {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(Directory);
            h.set_mode(0o755);
            h.set_size(0);
            let name = format!("{}/{i:04}", "d".repeat(300));
            tar.append_data(&mut h, name, std::io::empty()).unwrap();
        }
        let bytes = zstd::encode_all(tar.into_inner().unwrap().as_slice(), 3).unwrap();
        assert_eq!(walk_bytes(&bytes, false).unwrap().len(), 2000);
    }

    /// One pax extended header record: `"<len> <key>=<value>\n"`, `len` counting itself.
    fn pax_record(key_value: &str) -> String {
        let mut len = key_value.len() + 2;
        while format!("{len} {key_value}").len() != len {
            len += 1;
        }
        format!("{len} {key_value}")
    }

    #[test]
    fn pax_paths_are_read() {
        let long = format!("usr/share/{}/file", "p".repeat(200));
        let record = pax_record(&format!("path={long}\n"));
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_path("PaxHeaders/x").unwrap();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(record.len() as u64);
        h.set_cksum();
        tar.append(&h, record.as_bytes()).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_path("short-name").unwrap();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(3);
        h.set_cksum();
        tar.append(&h, &b"abc"[..]).unwrap();
        let bytes = zstd::encode_all(tar.into_inner().unwrap().as_slice(), 3).unwrap();
        assert_eq!(
            walk_bytes(&bytes, false).unwrap(),
            [(PathBuf::from(long), 0o644)]
        );
    }

    #[test]
    fn relative_inside_rejects_escapes() {
        assert_eq!(relative_inside("bin/x"), Some(PathBuf::from("bin/x")));
        assert_eq!(relative_inside("./x"), Some(PathBuf::from("x")));
        assert_eq!(relative_inside("../x"), None);
        assert_eq!(relative_inside("/x"), None);
        assert_eq!(relative_inside(""), None);
    }
}
