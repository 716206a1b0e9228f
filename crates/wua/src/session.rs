//! `IUpdateSession` and `ISystemInformation`: the entry point to an agent's state.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use crate::catalog::{Catalog, UpdateDefinition};
use crate::error::{Error, IoContext, Result};
use crate::hresult::*;
use crate::install::UpdateInstaller;
use crate::job::lock;
use crate::lock::InstallLock;
use crate::model::{Update, UpdateCollection, UpdateState};
use crate::search::UpdateSearcher;
use crate::service::{ServerSelection, ServicePaths, UpdateService};
use crate::store::{Store, UpdateHistoryEntry};

/// Where the Linux kernel publishes the id of the current boot.
pub const LINUX_BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// The value WUA reports for a `ClientApplicationID` that was never set.
pub const UNKNOWN_CLIENT: &str = "Unknown";

/// Where an agent keeps its state and what it installs into.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The target root updates are installed into (`/` on a real system).
    pub root: PathBuf,
    /// The agent's state directory: database, backups, saved uninstall scripts, lock.
    pub state_dir: PathBuf,
    /// An unsigned catalog directory to read instead of the registered services: for
    /// publishers trying a catalog before signing it, and for tests (`--catalog DIR`). `None`:
    /// updates come from the registered services, signed ([`crate::service`]).
    pub catalog_dir: Option<PathBuf>,
    /// A file holding the current boot id; `None` reads the kernel's
    /// ([`LINUX_BOOT_ID`]). Pending reboots recorded under another boot id are over.
    pub boot_id_file: Option<PathBuf>,
    /// Skip the `syncfs` calls that make installed content durable before it is recorded, like
    /// dpkg's `--force-unsafe-io`: for containers and CI, where a power cut does not matter. A
    /// killed process is still recovered correctly; a power cut may lose installed files.
    pub unsafe_io: bool,
    /// How services are reached over the network.
    pub network: crate::net::NetworkOptions,
    /// The service (id or name) default searches use instead of the registered default
    /// service; ignored with a `catalog_dir`.
    pub service: Option<String>,
}

impl AgentConfig {
    /// A configuration reading the unsigned catalog directory `catalog_dir`, with the kernel's
    /// boot id.
    pub fn new(
        root: impl Into<PathBuf>,
        state_dir: impl Into<PathBuf>,
        catalog_dir: impl Into<PathBuf>,
    ) -> Self {
        AgentConfig {
            catalog_dir: Some(catalog_dir.into()),
            ..AgentConfig::with_services(root, state_dir)
        }
    }

    /// A configuration whose updates come from the registered services (signed), with the
    /// kernel's boot id.
    pub fn with_services(root: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Self {
        AgentConfig {
            root: root.into(),
            state_dir: state_dir.into(),
            catalog_dir: None,
            boot_id_file: None,
            unsafe_io: false,
            network: crate::net::NetworkOptions::default(),
            service: None,
        }
    }

    /// The current boot id: the first line of `boot_id_file`, which must be readable and not
    /// empty, or else of the kernel's file; where the kernel has none, `unknown-boot` (then
    /// pending reboots never end by themselves).
    pub fn boot_id(&self) -> Result<String> {
        let first_line = |text: String| {
            text.lines()
                .next()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
        };
        match &self.boot_id_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| Error::io("cannot read the boot id file", path, e))?;
                first_line(text).ok_or_else(|| {
                    Error::code(
                        WU_E_INVALID_FILE,
                        format!(
                            "the boot id file {} is empty; write any text identifying the current boot into it",
                            path.display()
                        ),
                    )
                })
            }
            None => Ok(std::fs::read_to_string(LINUX_BOOT_ID)
                .ok()
                .and_then(first_line)
                .unwrap_or_else(|| "unknown-boot".to_string())),
        }
    }
}

/// What every object created from one session shares.
#[derive(Debug)]
pub(crate) struct Agent {
    pub config: AgentConfig,
    pub store: Arc<Store>,
    /// The newest catalog read of each source: the catalog directory's (key `None`) and each
    /// service's (its id). Replaced when a refresh brings new metadata.
    catalogs: Mutex<HashMap<Option<Uuid>, Arc<Catalog>>>,
    /// Detection answers searches reuse while nothing they rest on changed, with the catalog
    /// they were computed for.
    pub detection: Mutex<Option<(Arc<Catalog>, Arc<crate::search::engine::DetectionCache>)>>,
}

impl Agent {
    /// The source a search with this selection reads (DIGEST §5.4): `None` is the catalog
    /// directory. `Others` needs a registered `service_id`; the other selections mean the
    /// catalog directory if the agent has one, else the default service.
    pub(crate) fn resolve_source(
        &self,
        selection: ServerSelection,
        service_id: Option<&str>,
    ) -> Result<Option<UpdateService>> {
        if selection == ServerSelection::Others {
            let id = service_id.filter(|id| !id.trim().is_empty()).ok_or_else(|| {
                Error::code(
                    E_INVALIDARG,
                    "ServerSelection is Others but no ServiceID is set; set the id of a registered service (`wua service list`)",
                )
            })?;
            return self
                .store
                .find_service(id)?
                .map(Some)
                .ok_or_else(|| crate::service::unknown_service(id));
        }
        if self.config.catalog_dir.is_some() {
            return Ok(None);
        }
        if let Some(chosen) = &self.config.service {
            return self
                .store
                .find_service(chosen)?
                .map(Some)
                .ok_or_else(|| crate::service::unknown_service(chosen));
        }
        match self.store.default_service()? {
            Some(service) => Ok(Some(service)),
            None => Err(Error::code(
                WU_E_NO_SERVICE,
                "no update service is registered; add one with `wua service add NAME URL --trusted-root root.json`, or read a catalog directory with --catalog",
            )),
        }
    }

    /// The catalog of `source` (`None`: the catalog directory). With `online`, a service's
    /// signed metadata is refreshed first; without, the newest verified metadata is used and
    /// checked again, and the source is not touched.
    pub(crate) fn catalog(
        &self,
        source: Option<&UpdateService>,
        online: bool,
    ) -> Result<Arc<Catalog>> {
        let Some(service) = source else {
            return Ok(lock(&self.catalogs)
                .get(&None)
                .cloned()
                .expect("a catalog directory is read when the session opens"));
        };
        if !online && let Some(current) = lock(&self.catalogs).get(&Some(service.service_id)) {
            // Verified by this session already (refreshed or loaded): offline reads reuse it.
            return Ok(current.clone());
        }
        let paths = ServicePaths::new(&self.config.state_dir, service.service_id);
        let targets = if online {
            crate::repository::client::refresh(service, &paths, &self.config.network)?
        } else {
            crate::repository::client::load_trusted(service, &paths)?.ok_or_else(|| {
                Error::code(
                    WU_E_NO_CONNECTION,
                    format!(
                        "the service {} was never reached, so there is no verified catalog to read offline; search online first",
                        service.name
                    ),
                )
            })?
        };
        let key = Some(service.service_id);
        if let Some(current) = lock(&self.catalogs).get(&key)
            && let Some(origin) = current.origin()
            && origin.targets.catalog() == targets.catalog()
            && origin.service == *service
        {
            // Same signed catalog: keep the object, and with it the detection cache.
            return Ok(current.clone());
        }
        let catalog = Arc::new(Catalog::open_signed(
            &paths.catalog,
            crate::service::payload_cache_dir(&self.config.state_dir),
            crate::catalog::CatalogOrigin {
                service: service.clone(),
                targets: Arc::new(targets),
            },
        )?);
        lock(&self.catalogs).insert(key, catalog.clone());
        Ok(catalog)
    }

    /// The catalog of the default source as last read, without touching the network: the
    /// catalog directory, else the default service's newest verified catalog (empty if it was
    /// never refreshed, or if no service is registered).
    pub(crate) fn default_catalog(&self) -> Result<Arc<Catalog>> {
        if self.config.catalog_dir.is_some() {
            return self.catalog(None, false);
        }
        let service = match &self.config.service {
            Some(_) => self.resolve_source(ServerSelection::Default, None)?,
            None => self.store.default_service()?,
        };
        let Some(service) = service else {
            return Ok(Arc::new(Catalog::empty(
                "no update service",
                crate::service::payload_cache_dir(&self.config.state_dir),
                None,
            )));
        };
        if let Some(current) = lock(&self.catalogs).get(&Some(service.service_id)) {
            return Ok(current.clone());
        }
        match self.catalog(Some(&service), false) {
            Ok(catalog) => Ok(catalog),
            Err(e) if e.hresult() == WU_E_NO_CONNECTION => {
                let mut empty = Catalog::empty(
                    format!("{} (not refreshed yet)", service.name),
                    crate::service::payload_cache_dir(&self.config.state_dir),
                    None,
                );
                empty.set_dir(PathBuf::from(service.source.to_string()));
                Ok(Arc::new(empty))
            }
            Err(e) => Err(e),
        }
    }

    /// [`Self::default_catalog`], or an empty catalog when it cannot be read (its metadata
    /// expired, the service is unreachable offline…): for what works without a catalog —
    /// listing and uninstalling installed updates must not depend on a publisher re-signing.
    pub(crate) fn default_catalog_or_empty(&self) -> Arc<Catalog> {
        self.default_catalog().unwrap_or_else(|e| {
            tracing::info!("reading installed updates without the catalog: {e}");
            Arc::new(Catalog::empty(
                "catalog unavailable",
                crate::service::payload_cache_dir(&self.config.state_dir),
                None,
            ))
        })
    }

    /// Forgets what was read of a service (it was removed).
    pub(crate) fn forget(&self, service_id: Uuid) {
        lock(&self.catalogs).remove(&Some(service_id));
    }

    /// Where the payload of `update` comes from: a catalog directory's own file, or the
    /// service's signed target. A payload the signed targets metadata does not list is refused
    /// (TUF's extraneous-dependencies defence): `WU_E_DM_URLNOTAVAILABLE`.
    pub(crate) fn payload_source(&self, update: &Update) -> Result<crate::download::PayloadSource> {
        let catalog = match update.catalog() {
            Some(catalog) => catalog.clone(),
            None => self.default_catalog()?,
        };
        let payload = update.payload();
        let Some(origin) = catalog.origin() else {
            return Ok(crate::download::PayloadSource::InPlace(
                catalog.payload_path(payload),
            ));
        };
        let target = origin.targets.payload(&payload.sha256).ok_or_else(|| {
            Error::code(
                WU_E_DM_URLNOTAVAILABLE,
                format!(
                    "the payload {} of \"{}\" is not a signed target of the service {}: the catalog names content its publisher did not sign; refusing to download it (ask the publisher to republish)",
                    payload.sha256,
                    update.title(),
                    origin.service.name
                ),
            )
        })?;
        if target.length != payload.size || target.sha256 != payload.sha256 {
            return Err(Error::code(
                WU_E_DM_INCORRECTFILEHASH,
                format!(
                    "the payload {} of \"{}\" is described differently by the catalog ({} bytes) and the signed targets metadata of {} ({} bytes, SHA-256 {}); refusing to download it",
                    payload.sha256,
                    update.title(),
                    payload.size,
                    origin.service.name,
                    target.length,
                    target.sha256
                ),
            ));
        }
        Ok(crate::download::PayloadSource::Fetch {
            url: target.url.clone(),
            length: target.length,
            sha256: target.sha256.clone(),
        })
    }
}

static NEXT_OBJECT_ID: AtomicU64 = AtomicU64::new(1);

/// A process-unique id for installers, so a job can be matched to the object that started it.
pub(crate) fn next_object_id() -> u64 {
    NEXT_OBJECT_ID.fetch_add(1, Ordering::Relaxed)
}

/// The effective user id of this process.
pub fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// `IUpdateSession`: opens an agent's state and creates installers from it.
#[derive(Debug, Clone)]
pub struct UpdateSession {
    agent: Arc<Agent>,
    client_application_id: String,
}

impl UpdateSession {
    /// Opens the agent described by `config`: loads and validates the catalog, opens (or
    /// creates) the state database, and recovers any install or uninstall a crash interrupted
    /// (see `transaction::recover`).
    pub fn open(mut config: AgentConfig) -> Result<UpdateSession> {
        // Journals record the paths they touch; they must not depend on the working directory
        // of the process that recovers them.
        for path in [&mut config.root, &mut config.state_dir]
            .into_iter()
            .chain(config.catalog_dir.as_mut())
        {
            *path = std::path::absolute(&*path).at("cannot resolve path", path)?;
        }
        let mut catalogs = HashMap::new();
        if let Some(dir) = &config.catalog_dir {
            catalogs.insert(None, Arc::new(Catalog::open(dir)?));
        }
        let store = Arc::new(Store::open(&config.state_dir, config.boot_id()?)?);
        // Settle what a crash left behind, unless a job (here or in another process) holds the
        // install lock: then its transactions are not interrupted, only running.
        // Only when something is there to settle: taking the lock for nothing could make a
        // concurrent begin_install fail.
        if crate::transaction::pending(&config.root)
            && let Some(_lock) = InstallLock::try_acquire(&config.state_dir)?
        {
            crate::transaction::recover(&config.root, &store)?;
        }
        Ok(UpdateSession {
            agent: Arc::new(Agent {
                config,
                store,
                catalogs: Mutex::new(catalogs),
                detection: Mutex::new(None),
            }),
            client_application_id: UNKNOWN_CLIENT.to_string(),
        })
    }

    /// `ClientApplicationID`; `"Unknown"` until set.
    pub fn client_application_id(&self) -> &str {
        &self.client_application_id
    }

    /// Sets `ClientApplicationID`. Installers created afterwards start with this value
    /// (DIGEST §10.26).
    pub fn set_client_application_id(&mut self, id: impl Into<String>) {
        self.client_application_id = id.into();
    }

    /// `CreateUpdateInstaller()`.
    pub fn create_update_installer(&self) -> UpdateInstaller {
        UpdateInstaller::new(self.agent.clone(), self.client_application_id.clone())
    }

    /// The agent's configuration.
    pub fn config(&self) -> &AgentConfig {
        &self.agent.config
    }

    /// The catalog of the session's default source as last read, without touching the
    /// network: its catalog directory, else the default service's newest verified catalog
    /// (empty before the first refresh). [`Self::refresh`] reads the service again.
    pub fn catalog(&self) -> Result<Arc<Catalog>> {
        self.agent.default_catalog()
    }

    /// Refreshes the signed metadata of a service (`None`: the default source) and returns
    /// its verified catalog: what an online search does first. For a catalog directory, the
    /// catalog as read when the session opened.
    pub fn refresh(&self, service: Option<&UpdateService>) -> Result<Arc<Catalog>> {
        match service {
            Some(service) => self.agent.catalog(Some(service), true),
            None => {
                let source = self.agent.resolve_source(ServerSelection::Default, None)?;
                self.agent.catalog(source.as_ref(), true)
            }
        }
    }

    /// `CreateUpdateServiceManager()`: the services of this agent.
    pub fn create_update_service_manager(&self) -> crate::service::UpdateServiceManager {
        crate::service::UpdateServiceManager::new(self.agent.clone())
    }

    /// `CreateUpdateDownloader()`.
    pub fn create_update_downloader(&self) -> crate::download::UpdateDownloader {
        crate::download::UpdateDownloader::new(
            self.agent.clone(),
            self.client_application_id.clone(),
        )
    }

    /// The agent's store.
    pub fn store(&self) -> &Arc<Store> {
        &self.agent.store
    }

    /// Every update of the catalog with its state on this machine now, in publication order, as
    /// a read-only collection: updates that do not apply and bundled parts included. Searches
    /// ([`Self::create_update_searcher`]) are what narrow this down.
    pub fn catalog_updates(&self) -> Result<UpdateCollection> {
        let catalog = self.agent.default_catalog()?;
        Ok(UpdateCollection::read_only_from(
            crate::search::engine::all_updates(&self.agent, &catalog)?,
        ))
    }

    /// Every update wua has installed, including ones the catalog no longer lists, oldest first.
    /// Each is the revision recorded at install time; a bundle carries its parts (the installed
    /// revision of each, else the catalog's), so uninstalling it removes them too.
    pub fn installed_updates(&self) -> Result<UpdateCollection> {
        let snapshot = self.agent.store.snapshot()?;
        // The same `IsDownloaded` as searches give: the payload file is present.
        let catalog = self.agent.default_catalog_or_empty();
        let payloads = crate::search::engine::payload_names(&catalog);
        let installed: Vec<Arc<UpdateDefinition>> = self
            .agent
            .store
            .installed_updates()?
            .into_iter()
            .map(|i| Arc::new(i.definition))
            .collect();
        let by_id: HashMap<Uuid, &Arc<UpdateDefinition>> = installed
            .iter()
            .map(|d| (d.identity.update_id, d))
            .collect();
        let make = |def: &Arc<UpdateDefinition>, is_installed: bool, parts: Vec<Arc<Update>>| {
            let id = def.identity.update_id;
            let state = UpdateState {
                is_installed,
                is_installable: true,
                is_present: is_installed || snapshot.installed.contains_key(&id),
                is_downloaded: payloads.contains(def.payload.sha256.as_str()),
                is_hidden: snapshot.hidden.contains(&id),
                eula_accepted: def.eula_text.is_none()
                    || snapshot.eulas.contains_key(&def.identity),
            };
            Arc::new(Update::new(
                def.clone(),
                state,
                parts,
                Some(self.agent.store.clone()),
                Some(catalog.clone()),
            ))
        };
        let updates = installed
            .iter()
            .map(|def| {
                let parts = def
                    .bundled_updates
                    .iter()
                    .filter_map(|part| match by_id.get(part) {
                        Some(d) => Some(make(d, true, Vec::new())),
                        None => catalog.find(*part).map(|d| make(d, false, Vec::new())),
                    })
                    .collect();
                make(def, true, parts)
            })
            .collect();
        Ok(UpdateCollection::read_only_from(updates))
    }

    /// `CreateUpdateSearcher()`.
    pub fn create_update_searcher(&self) -> UpdateSearcher {
        UpdateSearcher::new(self.agent.clone(), self.client_application_id.clone())
    }

    /// `QueryHistory(startIndex, count)`: newest first (`iupdatesearcher-queryhistory`).
    pub fn query_history(&self, start_index: i64, count: i64) -> Result<Vec<UpdateHistoryEntry>> {
        self.agent.store.query_history(start_index, count)
    }

    /// `GetTotalHistoryCount()`.
    pub fn get_total_history_count(&self) -> Result<i64> {
        self.agent.store.total_history_count()
    }

    /// `ISystemInformation` for this agent.
    pub fn system_information(&self) -> SystemInformation {
        SystemInformation {
            store: self.agent.store.clone(),
        }
    }
}

/// `ISystemInformation`.
#[derive(Debug, Clone)]
pub struct SystemInformation {
    store: Arc<Store>,
}

impl SystemInformation {
    /// `RebootRequired`: a restart is needed to complete the installation or uninstallation of
    /// one or more updates (`isysteminformation-get_rebootrequired`). Cleared by a real reboot:
    /// the boot id changes.
    pub fn reboot_required(&self) -> Result<bool> {
        self.store.reboot_required()
    }
}
