//! WUA's update object model: identities, updates, collections, behaviours and the enumerations,
//! with the numeric values of `wuapi.h` (DIGEST §3.6, §6).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::catalog::{HandlerSpec, PayloadRef, UpdateDefinition};
use crate::error::{Error, Result};
use crate::hresult::{WU_E_DS_DECLINENOTALLOWED, WU_E_INVALIDINDEX, WU_E_NOT_SUPPORTED};
use crate::store::{EulaAcceptance, Store};

macro_rules! wua_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $($(#[$vmeta:meta])* $variant:ident = $value:literal => $text:literal,)* }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        #[repr(i32)]
        pub enum $name {
            $($(#[$vmeta])* $variant = $value,)*
        }

        impl $name {
            /// The numeric value `wuapi.h` gives this member.
            pub const fn value(self) -> i32 {
                self as i32
            }

            /// The member with this numeric value, if there is one.
            pub const fn from_value(value: i32) -> Option<Self> {
                match value {
                    $($value => Some(Self::$variant),)*
                    _ => None,
                }
            }

            /// Every member, in numeric order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)*];
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self { $(Self::$variant => $text,)* })
            }
        }
    };
}

wua_enum! {
    /// `OperationResultCode` (`ne-wuapi-operationresultcode`): the result of a search, download,
    /// installation or uninstallation, overall or per update.
    OperationResultCode {
        /// `orcNotStarted`: the operation has not started.
        NotStarted = 0 => "NotStarted",
        /// `orcInProgress`: the operation is in progress.
        InProgress = 1 => "InProgress",
        /// `orcSucceeded`: the operation completed successfully.
        Succeeded = 2 => "Succeeded",
        /// `orcSucceededWithErrors`: the operation completed, but one or more errors occurred.
        SucceededWithErrors = 3 => "SucceededWithErrors",
        /// `orcFailed`: the operation failed.
        Failed = 4 => "Failed",
        /// `orcAborted`: the operation was cancelled.
        Aborted = 5 => "Aborted",
    }
}

wua_enum! {
    /// `InstallationImpact` (`ne-wuapi-installationimpact`).
    InstallationImpact {
        /// `iiNormal`: installing or uninstalling has the usual impact.
        Normal = 0 => "Normal",
        /// `iiMinor`: a minor update that must not reboot nor ask for input.
        Minor = 1 => "Minor",
        /// `iiRequiresExclusiveHandling`: must be installed alone.
        RequiresExclusiveHandling = 2 => "RequiresExclusiveHandling",
    }
}

wua_enum! {
    /// `InstallationRebootBehavior` (`ne-wuapi-installationrebootbehavior`).
    InstallationRebootBehavior {
        /// `irbNeverReboots`: never requires a restart.
        NeverReboots = 0 => "NeverReboots",
        /// `irbAlwaysRequiresReboot`: always requires a restart after a successful operation.
        AlwaysRequiresReboot = 1 => "AlwaysRequiresReboot",
        /// `irbCanRequestReboot`: may request a restart (here: by its command's exit code).
        CanRequestReboot = 2 => "CanRequestReboot",
    }
}

wua_enum! {
    /// `UpdateOperation` (`ne-wuapi-updateoperation`).
    UpdateOperation {
        /// `uoInstallation`.
        Installation = 1 => "Installation",
        /// `uoUninstallation`.
        Uninstallation = 2 => "Uninstallation",
    }
}

wua_enum! {
    /// `DeploymentAction` (`ne-wuapi-deploymentaction`); value 4 comes from Microsoft's sample
    /// (DIGEST §10.14).
    DeploymentAction {
        /// `daNone`: inherits the action of its bundled updates.
        None = 0 => "None",
        /// `daInstallation`.
        Installation = 1 => "Installation",
        /// `daUninstallation`.
        Uninstallation = 2 => "Uninstallation",
        /// `daDetection`: deployed only to determine applicability.
        Detection = 3 => "Detection",
        /// "Optional Installation", printed by the SDK sample.
        OptionalInstallation = 4 => "OptionalInstallation",
    }
}

wua_enum! {
    /// `UpdateType` (`ne-wuapi-updatetype`).
    UpdateType {
        /// `utSoftware`.
        Software = 1 => "Software",
        /// `utDriver`.
        Driver = 2 => "Driver",
    }
}

wua_enum! {
    /// `SearchScope` (`ne-wuapi-searchscope`): whose updates a search returns.
    SearchScope {
        /// `searchScopeDefault`: the same as `MachineOnly`.
        Default = 0 => "Default",
        /// `searchScopeMachineOnly`.
        MachineOnly = 1 => "MachineOnly",
        /// `searchScopeCurrentUserOnly`: per-user updates of the calling user.
        CurrentUserOnly = 2 => "CurrentUserOnly",
        /// `searchScopeMachineAndCurrentUser`: documented as not supported.
        MachineAndCurrentUser = 3 => "MachineAndCurrentUser",
        /// `searchScopeMachineAndAllUsers`: documented as not supported.
        MachineAndAllUsers = 4 => "MachineAndAllUsers",
        /// `searchScopeAllUsers`: documented as not supported.
        AllUsers = 5 => "AllUsers",
    }
}

wua_enum! {
    /// `UpdateExceptionContext` (`ne-wuapi-updateexceptioncontext`): where a search warning
    /// arose.
    UpdateExceptionContext {
        /// `uecGeneral`.
        General = 1 => "General",
        /// `uecWindowsDriver`.
        WindowsDriver = 2 => "WindowsDriver",
        /// `uecWindowsInstaller`.
        WindowsInstaller = 3 => "WindowsInstaller",
        /// `uecSearchIncomplete`.
        SearchIncomplete = 4 => "SearchIncomplete",
    }
}

impl OperationResultCode {
    /// True for `Succeeded` and `SucceededWithErrors`.
    pub fn is_success(self) -> bool {
        matches!(self, Self::Succeeded | Self::SucceededWithErrors)
    }
}

/// `IUpdateIdentity`: the revision-independent update id and its revision number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateIdentity {
    /// `UpdateID`.
    pub update_id: Uuid,
    /// `RevisionNumber`.
    pub revision_number: i32,
}

impl fmt::Display for UpdateIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.update_id, self.revision_number)
    }
}

/// `IInstallationBehavior`: how installing or uninstalling an update affects the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InstallationBehavior {
    /// `CanRequestUserInput`.
    pub can_request_user_input: bool,
    /// `Impact`.
    pub impact: InstallationImpact,
    /// `RebootBehavior`.
    pub reboot_behavior: InstallationRebootBehavior,
    /// `RequiresNetworkConnectivity`.
    pub requires_network_connectivity: bool,
}

impl Default for InstallationBehavior {
    fn default() -> Self {
        InstallationBehavior {
            can_request_user_input: false,
            impact: InstallationImpact::Normal,
            reboot_behavior: InstallationRebootBehavior::NeverReboots,
            requires_network_connectivity: false,
        }
    }
}

/// `ICategory`, reduced to what a catalog carries: an id and a name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Category {
    /// `CategoryID`.
    pub id: Uuid,
    /// `Name`.
    pub name: String,
}

/// `IUpdate`: one update of the catalog, with its state on this machine at the time it was read.
///
/// `is_installed`, `is_installable`, `is_present` and `is_downloaded` are snapshots taken when
/// the update was obtained, as WUA's are "when the search was performed"
/// (`iupdate-get_isinstalled`). The EULA and hidden flags are live: [`Update::accept_eula`] and
/// [`Update::set_hidden`] record the change in the agent's store.
#[derive(Debug)]
pub struct Update {
    definition: Arc<UpdateDefinition>,
    state: UpdateState,
    eula_accepted: AtomicBool,
    is_hidden: AtomicBool,
    bundled: Vec<Arc<Update>>,
    store: Option<Arc<Store>>,
    /// The catalog the update was read from: where its payload is, and for a signed catalog
    /// the service and trusted targets its download is checked against.
    catalog: Option<Arc<crate::catalog::Catalog>>,
}

/// An update's state on a machine when it was read (see [`Update`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct UpdateState {
    pub is_installed: bool,
    pub is_installable: bool,
    pub is_present: bool,
    pub is_downloaded: bool,
    pub is_hidden: bool,
    pub eula_accepted: bool,
}

impl Update {
    /// An update built from a catalog definition, with the machine state given.
    pub(crate) fn new(
        definition: Arc<UpdateDefinition>,
        state: UpdateState,
        bundled: Vec<Arc<Update>>,
        store: Option<Arc<Store>>,
        catalog: Option<Arc<crate::catalog::Catalog>>,
    ) -> Self {
        Update {
            eula_accepted: AtomicBool::new(state.eula_accepted),
            is_hidden: AtomicBool::new(state.is_hidden),
            definition,
            state,
            bundled,
            store,
            catalog,
        }
    }

    /// The catalog this update was read from; `None` for a detached update.
    pub fn catalog(&self) -> Option<&Arc<crate::catalog::Catalog>> {
        self.catalog.as_ref()
    }

    /// The service this update came from (`IUpdateHistoryEntry.ServiceID` records it); `None`
    /// for a catalog directory or a detached update.
    pub fn service_id(&self) -> Option<uuid::Uuid> {
        self.catalog
            .as_ref()
            .and_then(|c| c.origin())
            .map(|o| o.service.service_id)
    }

    /// An update that is not attached to any agent: not installed, installable, not downloaded,
    /// not hidden, bundling nothing, and its EULA accepted only if it has none. Useful for tests
    /// and tools that build catalogs.
    pub fn detached(definition: UpdateDefinition) -> Self {
        let state = UpdateState {
            is_installable: true,
            eula_accepted: definition.eula_text.is_none(),
            ..UpdateState::default()
        };
        Update::new(Arc::new(definition), state, Vec::new(), None, None)
    }

    /// The catalog definition this update was built from.
    pub fn definition(&self) -> &UpdateDefinition {
        &self.definition
    }

    /// `Identity`.
    pub fn identity(&self) -> UpdateIdentity {
        self.definition.identity
    }
    /// `Title`.
    pub fn title(&self) -> &str {
        &self.definition.title
    }
    /// `Description`.
    pub fn description(&self) -> &str {
        &self.definition.description
    }
    /// `KBArticleIDs` (digits only, as WUA gives them).
    pub fn kb_article_ids(&self) -> &[String] {
        &self.definition.kb_article_ids
    }
    /// `Categories`.
    pub fn categories(&self) -> &[Category] {
        &self.definition.categories
    }
    /// `MsrcSeverity` (`Critical`, `Important`, `Moderate`, `Low`), if rated.
    pub fn msrc_severity(&self) -> Option<&str> {
        self.definition.msrc_severity.as_deref()
    }
    /// `Type`.
    pub fn update_type(&self) -> UpdateType {
        self.definition.update_type
    }
    /// `DeploymentAction`.
    pub fn deployment_action(&self) -> DeploymentAction {
        self.definition.deployment_action
    }
    /// `IsMandatory`.
    pub fn is_mandatory(&self) -> bool {
        self.definition.is_mandatory
    }
    /// `IsUninstallable`.
    pub fn is_uninstallable(&self) -> bool {
        self.definition.is_uninstallable
    }
    /// `EulaText`, if the update has licence terms.
    pub fn eula_text(&self) -> Option<&str> {
        self.definition.eula_text.as_deref()
    }
    /// `EulaAccepted`: true when the update has no EULA or it was accepted on this machine.
    pub fn eula_accepted(&self) -> bool {
        self.eula_accepted.load(Ordering::Acquire)
    }
    /// `InstallationBehavior`.
    pub fn installation_behavior(&self) -> InstallationBehavior {
        self.definition.installation_behavior
    }
    /// `UninstallationBehavior`.
    pub fn uninstallation_behavior(&self) -> InstallationBehavior {
        self.definition.uninstallation_behavior
    }
    /// `SupersededUpdateIDs`.
    pub fn superseded_update_ids(&self) -> &[Uuid] {
        &self.definition.superseded_update_ids
    }
    /// `SupportUrl`.
    pub fn support_url(&self) -> &str {
        &self.definition.support_url
    }
    /// `UninstallationNotes`.
    pub fn uninstallation_notes(&self) -> &str {
        &self.definition.uninstallation_notes
    }
    /// `UninstallationSteps`.
    pub fn uninstallation_steps(&self) -> &[String] {
        &self.definition.uninstallation_steps
    }
    /// `IUpdate2.RebootRequired`: this update needs a restart to finish installing or
    /// uninstalling (it is installed and a reboot it asked for is still pending).
    pub fn reboot_required(&self) -> bool {
        self.store
            .as_ref()
            .and_then(|store| store.reboot_pending_for(self.identity().update_id).ok())
            .unwrap_or(false)
    }
    /// `IsInstalled`, as it was when the update was read: wua installed this revision, or the
    /// update's `is_installed` detection rule held (`crate::rules`).
    pub fn is_installed(&self) -> bool {
        self.state.is_installed
    }
    /// The update applies to this machine, as it did when the update was read: its
    /// `is_installable` rule (prerequisites included) held, or it has none. WSUS metadata calls
    /// this `IsInstallable`; the installer checks it again before installing.
    pub fn is_installable(&self) -> bool {
        self.state.is_installable
    }
    /// `IUpdate2.IsPresent`: some revision of this update is installed (`iupdate2-get_ispresent`
    /// says "installed for one or more products"; wua has one product, the target root).
    pub fn is_present(&self) -> bool {
        self.state.is_present
    }
    /// `IsDownloaded`: all content is on this machine (the payload file is in the catalog's
    /// content store; its digest is verified before installing). A bundle is downloaded when
    /// it and every update it bundles are.
    pub fn is_downloaded(&self) -> bool {
        self.state.is_downloaded && self.bundled.iter().all(|b| b.is_downloaded())
    }
    /// `IsHidden`: a user hid this update; default searches leave it out.
    pub fn is_hidden(&self) -> bool {
        self.is_hidden.load(Ordering::Acquire)
    }
    /// `BrowseOnly` (`IUpdate3`): an optional update.
    pub fn browse_only(&self) -> bool {
        self.definition.browse_only
    }
    /// `IsAssigned` as search criteria use it: meant for automatic deployment.
    pub fn is_assigned(&self) -> bool {
        self.definition.is_assigned()
    }
    /// `AutoSelectOnWebSites`.
    pub fn auto_select_on_web_sites(&self) -> bool {
        self.definition.auto_select_on_web_sites()
    }
    /// `BundledUpdates`: the updates this one bundles, in install order, as a read-only
    /// collection (`nn-wuapi-iupdate`). Installing a bundle installs them first.
    pub fn bundled_updates(&self) -> UpdateCollection {
        UpdateCollection::read_only_from(self.bundled.clone())
    }
    /// `MaxDownloadSize`: the bytes to download for this update and the updates it bundles.
    pub fn max_download_size(&self) -> u64 {
        self.definition.payload.size
            + self
                .bundled
                .iter()
                .map(|b| b.max_download_size())
                .sum::<u64>()
    }
    /// `Deadline`, if the update has one.
    pub fn deadline(&self) -> Option<Timestamp> {
        self.definition.deadline
    }
    /// `HandlerID`: `files` or `command`.
    pub fn handler_id(&self) -> &'static str {
        match self.definition.handler {
            HandlerSpec::Files {} => "files",
            HandlerSpec::Command { .. } => "command",
        }
    }
    /// The payload archive this update installs.
    pub fn payload(&self) -> &PayloadRef {
        &self.definition.payload
    }

    /// `AcceptEula()`: accepts the licence terms on this machine, persistently when the update
    /// came from an agent session, recording who and when (`iupdate-accepteula`). Accepting an
    /// update without terms does nothing.
    pub fn accept_eula(&self) -> Result<()> {
        if self.eula_text().is_some()
            && let Some(store) = &self.store
        {
            store.accept_eula(self.identity(), &current_user_name())?;
        }
        self.eula_accepted.store(true, Ordering::Release);
        Ok(())
    }

    /// Who accepted this revision's licence terms and when; `None` if not accepted or the
    /// update is detached.
    pub fn eula_acceptance(&self) -> Result<Option<EulaAcceptance>> {
        match &self.store {
            Some(store) if self.eula_text().is_some() => store.eula_acceptance(self.identity()),
            _ => Ok(None),
        }
    }

    /// `put_IsHidden`: hides or unhides the update on this machine, for all its revisions,
    /// persistently when it came from an agent session. Hiding a mandatory update, or one with
    /// a deadline, fails with `WU_E_DS_DECLINENOTALLOWED` (`iupdate-put_ishidden`, DIGEST §10.21);
    /// unhiding is always allowed.
    pub fn set_hidden(&self, hidden: bool) -> Result<()> {
        if hidden && (self.is_mandatory() || self.deadline().is_some()) {
            let why = if self.is_mandatory() {
                "it is mandatory"
            } else {
                "it has a deadline"
            };
            return Err(Error::code(
                WU_E_DS_DECLINENOTALLOWED,
                format!(
                    "cannot hide \"{}\" ({}): {why}; mandatory and deadline updates cannot be hidden",
                    self.title(),
                    self.identity().update_id
                ),
            ));
        }
        if let Some(store) = &self.store {
            store.set_hidden(self.identity().update_id, hidden, &current_user_name())?;
        }
        self.is_hidden.store(hidden, Ordering::Release);
        Ok(())
    }
}

/// The name recorded as who accepted a EULA.
fn current_user_name() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid {}", crate::session::current_uid()))
}

/// `IUpdateCollection`: an ordered list of updates, read-only or writable.
///
/// Collections WUA hands out (a job's `updates`, an installer's snapshot) are read-only; mutating
/// one fails with `WU_E_NOT_SUPPORTED`, as `iupdatecollection-add` documents. [`Self::copy`] gives
/// a writable shallow copy: the same update objects, as in WUA.
#[derive(Clone, Debug, Default)]
pub struct UpdateCollection {
    items: Vec<Arc<Update>>,
    read_only: bool,
}

impl UpdateCollection {
    /// A new, empty, writable collection (`Microsoft.Update.UpdateColl`).
    pub fn new() -> Self {
        UpdateCollection::default()
    }

    /// A read-only collection of these updates.
    pub fn read_only_from(items: Vec<Arc<Update>>) -> Self {
        UpdateCollection {
            items,
            read_only: true,
        }
    }

    /// `ReadOnly`.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }
    /// `Count`.
    pub fn len(&self) -> usize {
        self.items.len()
    }
    /// True when the collection holds no update.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    /// `Item(index)`; a bad index is `WU_E_INVALIDINDEX`.
    pub fn get(&self, index: usize) -> Result<&Arc<Update>> {
        self.items.get(index).ok_or_else(|| self.bad_index(index))
    }
    /// Iterates over the updates in order (`_NewEnum`).
    pub fn iter(&self) -> std::slice::Iter<'_, Arc<Update>> {
        self.items.iter()
    }
    /// `Add(update)`: appends and returns the new index.
    pub fn add(&mut self, update: Arc<Update>) -> Result<usize> {
        self.check_writable("add")?;
        self.items.push(update);
        Ok(self.items.len() - 1)
    }
    /// `put_Item(index, update)`.
    pub fn set(&mut self, index: usize, update: Arc<Update>) -> Result<()> {
        self.check_writable("set")?;
        let bad = self.bad_index(index);
        *self.items.get_mut(index).ok_or(bad)? = update;
        Ok(())
    }
    /// `Insert(index, update)`; `index` may equal the length (append).
    pub fn insert(&mut self, index: usize, update: Arc<Update>) -> Result<()> {
        self.check_writable("insert")?;
        if index > self.items.len() {
            return Err(self.bad_index(index));
        }
        self.items.insert(index, update);
        Ok(())
    }
    /// `RemoveAt(index)`.
    pub fn remove_at(&mut self, index: usize) -> Result<Arc<Update>> {
        self.check_writable("remove")?;
        if index >= self.items.len() {
            return Err(self.bad_index(index));
        }
        Ok(self.items.remove(index))
    }
    /// `Clear()`.
    pub fn clear(&mut self) -> Result<()> {
        self.check_writable("clear")?;
        self.items.clear();
        Ok(())
    }
    /// `Copy()`: a writable shallow copy (the same update objects).
    pub fn copy(&self) -> UpdateCollection {
        UpdateCollection {
            items: self.items.clone(),
            read_only: false,
        }
    }
    /// A read-only shallow copy, as installers and jobs keep.
    pub(crate) fn read_only_copy(&self) -> UpdateCollection {
        UpdateCollection::read_only_from(self.items.clone())
    }

    fn check_writable(&self, what: &str) -> Result<()> {
        if self.read_only {
            return Err(Error::code(
                WU_E_NOT_SUPPORTED,
                format!(
                    "cannot {what} an update: this collection is read-only; call copy() for a writable copy"
                ),
            ));
        }
        Ok(())
    }

    fn bad_index(&self, index: usize) -> Error {
        Error::code(
            WU_E_INVALIDINDEX,
            format!(
                "index {index} is out of range for a collection of {} updates",
                self.items.len()
            ),
        )
    }
}

impl FromIterator<Arc<Update>> for UpdateCollection {
    fn from_iter<T: IntoIterator<Item = Arc<Update>>>(iter: T) -> Self {
        UpdateCollection {
            items: iter.into_iter().collect(),
            read_only: false,
        }
    }
}

impl<'a> IntoIterator for &'a UpdateCollection {
    type Item = &'a Arc<Update>;
    type IntoIter = std::slice::Iter<'a, Arc<Update>>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::test_definition;

    fn update(n: u128) -> Arc<Update> {
        Arc::new(Update::detached(test_definition(Uuid::from_u128(n))))
    }

    #[test]
    fn enum_values_follow_wuapi_h() {
        assert_eq!(OperationResultCode::NotStarted.value(), 0);
        assert_eq!(OperationResultCode::SucceededWithErrors.value(), 3);
        assert_eq!(OperationResultCode::Aborted.value(), 5);
        assert_eq!(InstallationImpact::RequiresExclusiveHandling.value(), 2);
        assert_eq!(InstallationRebootBehavior::CanRequestReboot.value(), 2);
        assert_eq!(UpdateOperation::Uninstallation.value(), 2);
        assert_eq!(DeploymentAction::OptionalInstallation.value(), 4);
        assert_eq!(UpdateType::Driver.value(), 2);
        for code in OperationResultCode::ALL {
            assert_eq!(OperationResultCode::from_value(code.value()), Some(*code));
        }
        assert_eq!(OperationResultCode::from_value(6), None);
    }

    #[test]
    fn writable_collection_supports_every_mutation() {
        let mut c = UpdateCollection::new();
        assert_eq!(c.add(update(1)).unwrap(), 0);
        assert_eq!(c.add(update(2)).unwrap(), 1);
        c.insert(0, update(3)).unwrap();
        c.set(2, update(4)).unwrap();
        let ids: Vec<u128> = c.iter().map(|u| u.identity().update_id.as_u128()).collect();
        assert_eq!(ids, [3, 1, 4]);
        assert_eq!(c.remove_at(0).unwrap().identity().update_id.as_u128(), 3);
        assert_eq!(c.get(5).unwrap_err().hresult(), WU_E_INVALIDINDEX);
        c.clear().unwrap();
        assert!(c.is_empty());
    }

    #[test]
    fn read_only_collection_refuses_mutation_with_not_supported() {
        let ro = UpdateCollection::read_only_from(vec![update(1)]);
        let mut ro2 = ro.clone();
        assert_eq!(
            ro2.add(update(2)).unwrap_err().hresult(),
            WU_E_NOT_SUPPORTED
        );
        assert_eq!(
            ro2.set(0, update(2)).unwrap_err().hresult(),
            WU_E_NOT_SUPPORTED
        );
        assert_eq!(
            ro2.insert(0, update(2)).unwrap_err().hresult(),
            WU_E_NOT_SUPPORTED
        );
        assert_eq!(ro2.remove_at(0).unwrap_err().hresult(), WU_E_NOT_SUPPORTED);
        assert_eq!(ro2.clear().unwrap_err().hresult(), WU_E_NOT_SUPPORTED);
        assert_eq!(ro2.len(), 1);
        // Copy is writable and shallow: the same update object.
        let mut copy = ro.copy();
        assert!(!copy.is_read_only());
        assert!(Arc::ptr_eq(copy.get(0).unwrap(), ro.get(0).unwrap()));
        copy.add(update(2)).unwrap();
        assert_eq!(ro.len(), 1);
    }

    #[test]
    fn detached_update_with_eula_starts_unaccepted() {
        let mut def = test_definition(Uuid::from_u128(9));
        def.eula_text = Some("terms".into());
        let u = Update::detached(def);
        assert!(!u.eula_accepted());
        u.accept_eula().unwrap();
        assert!(u.eula_accepted());
    }
}
