//! `IUpdateServiceManager` and `IUpdateService`: the update services (signed repositories) an
//! agent knows, and which one a search uses.
//!
//! A service is a TUF repository ([`crate::repository`]) in a local directory or at an HTTP(S)
//! URL, registered together with the `root.json` the agent trusts for it. Registering copies
//! that root into the agent's state; from then on only metadata that chains to it is believed.
//! Reference pages: `iupdateservicemanager-methods`, `iupdateservicemanager2-methods`,
//! `iupdateservice-properties`, `iupdateservice2-properties`, and `ServerSelection`
//! (DIGEST §5.4).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;
use serde::Serialize;
use url::Url;
use uuid::Uuid;

use crate::error::{Error, IoContext, Result};
use crate::hresult::*;
use crate::session::Agent;

/// `ServerSelection`: which service a search uses (DIGEST §5.4).
///
/// wua has no Windows Update and no managed (WSUS) server: `Default`, `ManagedServer` and
/// `WindowsUpdate` all mean the agent's default source — the catalog directory the session was
/// opened with, else the default service (see [`UpdateServiceManager::default_service`]).
/// `Others` uses the searcher's `ServiceID`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(i32)]
pub enum ServerSelection {
    /// `ssDefault` (0).
    #[default]
    Default = 0,
    /// `ssManagedServer` (1).
    ManagedServer = 1,
    /// `ssWindowsUpdate` (2).
    WindowsUpdate = 2,
    /// `ssOthers` (3): the service named by `ServiceID`.
    Others = 3,
}

/// Where a service's repository is: a directory (offline use; never touches the network) or an
/// HTTP(S) URL. Either way the repository has `metadata/` and `targets/` below it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceSource {
    /// A repository directory on this machine (or an unpacked exported bundle).
    Directory(PathBuf),
    /// A repository served over `http://` or `https://`.
    Url(Url),
}

impl ServiceSource {
    /// Parses what a user typed: an `http(s)://` URL, a `file://` URL, or a path (made
    /// absolute). Other schemes are `E_INVALIDARG`.
    pub fn parse(text: &str) -> Result<ServiceSource> {
        if let Ok(url) = Url::parse(text)
            && url.scheme().len() > 1
        {
            return match url.scheme() {
                "http" | "https" => Ok(ServiceSource::Url(url)),
                "file" => url.to_file_path().map(ServiceSource::Directory).map_err(|()| {
                    Error::code(
                        E_INVALIDARG,
                        format!("the file URL {text} does not name a local path; give a directory path instead"),
                    )
                }),
                scheme => Err(Error::code(
                    E_INVALIDARG,
                    format!(
                        "the service location {text} uses the scheme `{scheme}`; use an http:// or https:// URL or a directory path"
                    ),
                )),
            };
        }
        let path = std::path::absolute(text).at("cannot resolve path", Path::new(text))?;
        Ok(ServiceSource::Directory(path))
    }

    /// True when reading this source uses the network.
    pub fn is_network(&self) -> bool {
        matches!(self, ServiceSource::Url(_))
    }

    /// The base URL of the repository, with a trailing slash (`file://` for a directory).
    pub fn base_url(&self) -> Url {
        let mut url = match self {
            ServiceSource::Url(url) => url.clone(),
            ServiceSource::Directory(dir) => {
                Url::from_directory_path(dir).expect("directory sources are absolute paths")
            }
        };
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        url
    }

    /// The URL of the repository's `metadata/` directory.
    pub fn metadata_url(&self) -> Url {
        self.base_url()
            .join(&format!("{}/", crate::repository::METADATA_DIR))
            .expect("a relative path joins")
    }

    /// The URL of the repository's `targets/` directory.
    pub fn targets_url(&self) -> Url {
        self.base_url()
            .join(&format!("{}/", crate::repository::TARGETS_DIR))
            .expect("a relative path joins")
    }
}

impl std::fmt::Display for ServiceSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServiceSource::Directory(dir) => write!(f, "{}", dir.display()),
            ServiceSource::Url(url) => write!(f, "{url}"),
        }
    }
}

/// `IUpdateService` (+`IUpdateService2`): one registered service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UpdateService {
    /// `ServiceID`.
    pub service_id: Uuid,
    /// `Name`: unique among the agent's services.
    pub name: String,
    /// `ServiceUrl`: where its repository is.
    pub source: ServiceSource,
    /// `IsDefaultAUService`: the service a default search uses when the session has no catalog
    /// directory of its own. At most one service is the default.
    pub is_default_au_service: bool,
    /// `IsScanPackageService`: registered from an exported bundle (offline scan package), which
    /// wua unpacked into its state directory.
    pub is_scan_package_service: bool,
    /// `IssueDate`: when the service was registered here.
    pub issue_date: Timestamp,
    /// `ContentValidationCert`: the SHA-256 of the `root.json` first trusted for this service
    /// (WUA gives a SHA-1 of a certificate; a TUF root plays that part here).
    pub content_validation_cert: String,
}

/// Where an agent keeps one service's files, below `<state_dir>/services/<service_id>/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePaths {
    /// The service's directory.
    pub dir: PathBuf,
    /// The `root.json` trusted when the service was registered (the trust anchor).
    pub trusted_root: PathBuf,
    /// tough's datastore: the newest verified metadata (root, timestamp, snapshot, targets),
    /// which gives rollback and freeze protection across runs.
    pub datastore: PathBuf,
    /// The verified `catalog.json` target of the newest metadata.
    pub catalog: PathBuf,
    /// For a scan-package service: the unpacked repository.
    pub bundle: PathBuf,
}

impl ServicePaths {
    /// The paths of service `service_id` in `state_dir`.
    pub fn new(state_dir: &Path, service_id: Uuid) -> ServicePaths {
        let dir = state_dir.join("services").join(service_id.to_string());
        ServicePaths {
            trusted_root: dir.join("trusted-root.json"),
            datastore: dir.join("tuf"),
            catalog: dir.join("catalog.json"),
            bundle: dir.join("bundle"),
            dir,
        }
    }
}

/// The content-addressed payload cache shared by every service of an agent:
/// `<state_dir>/cache/payloads/<sha256>.tar.zst`, each file verified before it was put there.
pub fn payload_cache_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("cache").join("payloads")
}

/// Where partial downloads wait to be resumed: `<state_dir>/cache/partial/`.
pub fn partial_download_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("cache").join("partial")
}

/// The error for an unknown service id or name.
pub(crate) fn unknown_service(what: &str) -> Error {
    Error::code(
        WU_E_UNKNOWN_SERVICE,
        format!(
            "no update service {what} is registered; see `wua service list`, or add one with `wua service add`"
        ),
    )
}

/// `IUpdateServiceManager` (+`IUpdateServiceManager2`): registers and removes the agent's
/// services (`iupdateservicemanager-methods`, `iupdateservicemanager2-methods`).
#[derive(Debug, Clone)]
pub struct UpdateServiceManager {
    agent: Arc<Agent>,
}

impl UpdateServiceManager {
    pub(crate) fn new(agent: Arc<Agent>) -> Self {
        UpdateServiceManager { agent }
    }

    /// `Services`: every registered service, oldest first.
    pub fn services(&self) -> Result<Vec<UpdateService>> {
        self.agent.store.services()
    }

    /// The service with this id or name; `WU_E_UNKNOWN_SERVICE` if none.
    pub fn find(&self, id_or_name: &str) -> Result<UpdateService> {
        self.agent
            .store
            .find_service(id_or_name)?
            .ok_or_else(|| unknown_service(id_or_name))
    }

    /// `AddService2`: registers the repository at `source` under `name`, trusting
    /// `trusted_root` (a TUF `root.json` the publisher handed out). The root is checked — a TUF
    /// root signed by a threshold of its own keys — and copied into the agent's state; the
    /// repository is not contacted (the first search does that). The first service registered
    /// becomes the default. A name in use is `WU_E_DUPLICATE_ITEM`; a bad root or a directory
    /// that is not a repository is `E_INVALIDARG`/`WU_E_INVALID_FILE`.
    pub fn add_service(
        &self,
        name: &str,
        source: ServiceSource,
        trusted_root: &Path,
    ) -> Result<UpdateService> {
        self.register(name, source, trusted_root, false, |_| Ok(()))
    }

    /// `AddScanPackageService`: registers an exported bundle of a repository (a directory, or a
    /// `.tar` file made by `wua catalog export`) for offline use. The bundle is copied into the
    /// agent's state, so the service keeps working after the medium is gone, and it never
    /// touches the network. Its metadata is verified like any service's, against
    /// `trusted_root`.
    pub fn add_scan_package_service(
        &self,
        name: &str,
        bundle: &Path,
        trusted_root: &Path,
    ) -> Result<UpdateService> {
        let id = Uuid::new_v4();
        let paths = ServicePaths::new(&self.agent.config.state_dir, id);
        self.register_with_id(
            id,
            name,
            ServiceSource::Directory(paths.bundle.clone()),
            trusted_root,
            true,
            |paths| crate::repository::bundle::import(bundle, &paths.bundle),
        )
    }

    fn register(
        &self,
        name: &str,
        source: ServiceSource,
        trusted_root: &Path,
        scan_package: bool,
        prepare: impl FnOnce(&ServicePaths) -> Result<()>,
    ) -> Result<UpdateService> {
        self.register_with_id(
            Uuid::new_v4(),
            name,
            source,
            trusted_root,
            scan_package,
            prepare,
        )
    }

    fn register_with_id(
        &self,
        service_id: Uuid,
        name: &str,
        source: ServiceSource,
        trusted_root: &Path,
        scan_package: bool,
        prepare: impl FnOnce(&ServicePaths) -> Result<()>,
    ) -> Result<UpdateService> {
        let name = name.trim();
        if name.is_empty() || Uuid::parse_str(name).is_ok() {
            return Err(Error::code(
                E_INVALIDARG,
                format!(
                    "\"{name}\" cannot name a service: give a non-empty name that is not a UUID (ids are assigned)"
                ),
            ));
        }
        if let ServiceSource::Directory(dir) = &source
            && !scan_package
            && !dir.join(crate::repository::METADATA_DIR).is_dir()
        {
            return Err(Error::code(
                E_INVALIDARG,
                format!(
                    "{} is not a signed repository: it has no {}/ directory; publish one with `wua catalog publish`, or give its URL",
                    dir.display(),
                    crate::repository::METADATA_DIR
                ),
            ));
        }
        if self.agent.store.find_service(name)?.is_some() {
            return Err(Error::code(
                WU_E_DUPLICATE_ITEM,
                format!(
                    "a service named \"{name}\" is already registered; choose another name or remove it first (`wua service remove {name}`)"
                ),
            ));
        }
        let root = std::fs::read(trusted_root).map_err(|e| {
            Error::io("cannot read the trusted root", trusted_root, e).with_hresult(E_INVALIDARG)
        })?;
        let cert = crate::repository::client::check_trusted_root(&root, trusted_root)?;
        let paths = ServicePaths::new(&self.agent.config.state_dir, service_id);
        let service = UpdateService {
            service_id,
            name: name.to_string(),
            source,
            is_default_au_service: false,
            is_scan_package_service: scan_package,
            issue_date: Timestamp::now(),
            content_validation_cert: cert,
        };
        let result = (|| {
            std::fs::create_dir_all(&paths.dir).at("cannot create", &paths.dir)?;
            crate::catalog::write_atomically(&paths.trusted_root, &root)?;
            prepare(&paths)?;
            self.agent.store.add_service(&service)
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&paths.dir);
        }
        result
    }

    /// `RemoveService`: forgets a service, its trusted metadata and its verified catalog.
    /// Downloaded payloads stay in the shared cache (another service may publish the same
    /// content). If it was the default, the oldest remaining service becomes the default.
    pub fn remove_service(&self, id_or_name: &str) -> Result<UpdateService> {
        let service = self.find(id_or_name)?;
        self.agent.store.remove_service(service.service_id)?;
        self.agent.forget(service.service_id);
        let paths = ServicePaths::new(&self.agent.config.state_dir, service.service_id);
        if let Err(e) = std::fs::remove_dir_all(&paths.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(
                "the service {} is removed, but its files in {} could not be deleted: {e}",
                service.name,
                paths.dir.display()
            );
        }
        Ok(service)
    }

    /// `RegisterServiceWithAU`: makes the service the default (`IsDefaultAUService`), the one
    /// default searches use.
    pub fn register_service_with_au(&self, id_or_name: &str) -> Result<UpdateService> {
        let service = self.find(id_or_name)?;
        self.agent
            .store
            .set_default_service(Some(service.service_id))?;
        self.find(id_or_name)
    }

    /// `UnregisterServiceWithAU`: the service stops being the default; default searches then
    /// need another default (or `ServerSelection::Others`).
    pub fn unregister_service_with_au(&self, id_or_name: &str) -> Result<UpdateService> {
        let service = self.find(id_or_name)?;
        if service.is_default_au_service {
            self.agent.store.set_default_service(None)?;
        }
        self.find(id_or_name)
    }
}
