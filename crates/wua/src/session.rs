//! `IUpdateSession` and `ISystemInformation`: the entry point to an agent's state.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use uuid::Uuid;

use crate::catalog::{Catalog, UpdateDefinition};
use crate::error::{Error, IoContext, Result};
use crate::hresult::WU_E_INVALID_FILE;
use crate::install::UpdateInstaller;
use crate::lock::InstallLock;
use crate::model::{Update, UpdateCollection, UpdateState};
use crate::search::UpdateSearcher;
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
    /// The catalog directory updates come from.
    pub catalog_dir: PathBuf,
    /// A file holding the current boot id; `None` reads the kernel's
    /// ([`LINUX_BOOT_ID`]). Pending reboots recorded under another boot id are over.
    pub boot_id_file: Option<PathBuf>,
    /// Skip the `syncfs` calls that make installed content durable before it is recorded, like
    /// dpkg's `--force-unsafe-io`: for containers and CI, where a power cut does not matter. A
    /// killed process is still recovered correctly; a power cut may lose installed files.
    pub unsafe_io: bool,
}

impl AgentConfig {
    /// A configuration with the kernel's boot id.
    pub fn new(
        root: impl Into<PathBuf>,
        state_dir: impl Into<PathBuf>,
        catalog_dir: impl Into<PathBuf>,
    ) -> Self {
        AgentConfig {
            root: root.into(),
            state_dir: state_dir.into(),
            catalog_dir: catalog_dir.into(),
            boot_id_file: None,
            unsafe_io: false,
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
    pub catalog: Catalog,
    pub store: Arc<Store>,
    /// Detection answers searches reuse while nothing they rest on changed.
    pub detection: std::sync::Mutex<Option<Arc<crate::search::engine::DetectionCache>>>,
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
        for path in [
            &mut config.root,
            &mut config.state_dir,
            &mut config.catalog_dir,
        ] {
            *path = std::path::absolute(&*path).at("cannot resolve path", path)?;
        }
        let catalog = Catalog::open(&config.catalog_dir)?;
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
                catalog,
                store,
                detection: std::sync::Mutex::new(None),
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

    /// The catalog this session reads.
    pub fn catalog(&self) -> &Catalog {
        &self.agent.catalog
    }

    /// The agent's store.
    pub fn store(&self) -> &Arc<Store> {
        &self.agent.store
    }

    /// Every update of the catalog with its state on this machine now, in publication order, as
    /// a read-only collection: updates that do not apply and bundled parts included. Searches
    /// ([`Self::create_update_searcher`]) are what narrow this down.
    pub fn catalog_updates(&self) -> Result<UpdateCollection> {
        Ok(UpdateCollection::read_only_from(
            crate::search::engine::all_updates(&self.agent)?,
        ))
    }

    /// Every update wua has installed, including ones the catalog no longer lists, oldest first.
    /// Each is the revision recorded at install time; a bundle carries its parts (the installed
    /// revision of each, else the catalog's), so uninstalling it removes them too.
    pub fn installed_updates(&self) -> Result<UpdateCollection> {
        let snapshot = self.agent.store.snapshot()?;
        // The same `IsDownloaded` as searches give: the payload file is present.
        let payloads = crate::search::engine::payload_names(&self.agent.catalog);
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
                        None => self
                            .agent
                            .catalog
                            .find(*part)
                            .map(|d| make(d, false, Vec::new())),
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
