//! HRESULT values of the Windows Update Agent API.
//!
//! Every code below comes from one table: the names, values and meanings are copied from the
//! WUA SDK guide ("WUA Success and Error Codes", "WUA Networking Error Codes"), the Windows IT Pro
//! error reference and `winerror.h` for the few standard COM codes the API pages name (see
//! `DIGEST.md` §9). The `hresults!` macro turns that table into constants, [`HResult::name`] and
//! [`HResult::message`], so no value is typed twice.

use std::fmt;

/// A COM `HRESULT`: the 32-bit status code every WUA method returns.
///
/// Negative values (bit 31 set) are failures, non-negative ones successes. `Display` shows the
/// symbolic name, the hexadecimal value and the documented meaning, e.g.
/// `WU_E_NO_UPDATE (0x80240024): There are no updates.`
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HResult(pub i32);

impl HResult {
    /// Builds an `HRESULT` from its unsigned 32-bit form (`0x8024xxxx`).
    pub const fn from_u32(value: u32) -> Self {
        HResult(value as i32)
    }

    /// The unsigned 32-bit form, as the reference writes it.
    pub const fn as_u32(self) -> u32 {
        self.0 as u32
    }

    /// True for success codes (`S_OK` and the `WU_S_*` codes).
    pub const fn is_success(self) -> bool {
        self.0 >= 0
    }

    /// True for failure codes.
    pub const fn is_failure(self) -> bool {
        self.0 < 0
    }

    /// Wraps a Win32 error number the way `HRESULT_FROM_WIN32` does (`0x8007xxxx`).
    pub const fn from_win32(code: u32) -> Self {
        if code == 0 {
            S_OK
        } else {
            HResult::from_u32((code & 0xFFFF) | 0x8007_0000)
        }
    }
}

impl fmt::Debug for HResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}(0x{:08X})", self.as_u32()),
            None => write!(f, "HResult(0x{:08X})", self.as_u32()),
        }
    }
}

impl fmt::Display for HResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.name(), self.message()) {
            (Some(name), Some(message)) => {
                write!(f, "{name} (0x{:08X}): {message}", self.as_u32())
            }
            _ => write!(f, "0x{:08X}", self.as_u32()),
        }
    }
}

/// Serialised as the signed 32-bit number (what `IUpdateHistoryEntry.HResult` holds).
impl serde::Serialize for HResult {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_i32(self.0)
    }
}
/// Read from the signed 32-bit number.
impl<'de> serde::Deserialize<'de> for HResult {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        i32::deserialize(d).map(HResult)
    }
}

macro_rules! hresults {
    ($($name:ident = $value:literal, $message:literal;)*) => {
        $(
            #[doc = $message]
            pub const $name: HResult = HResult::from_u32($value);
        )*

        impl HResult {
            /// The symbolic name (`WU_E_NO_UPDATE`), if the code is in the reference table.
            pub fn name(self) -> Option<&'static str> {
                match self.as_u32() {
                    $($value => Some(stringify!($name)),)*
                    _ => None,
                }
            }

            /// The documented meaning, if the code is in the reference table.
            pub fn message(self) -> Option<&'static str> {
                match self.as_u32() {
                    $($value => Some($message),)*
                    _ => None,
                }
            }

            /// Looks a code up by its symbolic name (case-sensitive, as in `wuerror.h`).
            pub fn from_name(name: &str) -> Option<HResult> {
                match name {
                    $(stringify!($name) => Some($name),)*
                    _ => None,
                }
            }

            /// Every code in the reference table, in table order.
            pub fn all() -> &'static [HResult] {
                &[$($name,)*]
            }
        }
    };
}

hresults! {
    WU_S_SERVICE_STOP = 0x00240001, "WUA was stopped successfully.";
    WU_S_SELFUPDATE = 0x00240002, "WUA updated itself.";
    WU_S_UPDATE_ERROR = 0x00240003, "The operation completed successfully but errors occurred applying the updates.";
    WU_S_MARKED_FOR_DISCONNECT = 0x00240004, "A callback was marked to be disconnected later because the request to disconnect the operation came while a callback was executing.";
    WU_S_REBOOT_REQUIRED = 0x00240005, "The system must be restarted to complete installation of the update.";
    WU_S_ALREADY_INSTALLED = 0x00240006, "The update to be installed is already installed on the system.";
    WU_S_ALREADY_UNINSTALLED = 0x00240007, "The update to be removed is not installed on the system.";
    WU_S_ALREADY_DOWNLOADED = 0x00240008, "The update to be downloaded has already been downloaded.";
    WU_S_UH_INSTALLSTILLPENDING = 0x00242015, "The installation operation for the update is still in progress.";
    WU_E_NO_SERVICE = 0x80240001, "WUA was unable to provide the service.";
    WU_E_MAX_CAPACITY_REACHED = 0x80240002, "The maximum capacity of the service was exceeded.";
    WU_E_UNKNOWN_ID = 0x80240003, "WUA cannot find an ID.";
    WU_E_NOT_INITIALIZED = 0x80240004, "The object could not be initialized.";
    WU_E_RANGEOVERLAP = 0x80240005, "The update handler requested a byte range overlapping a previously requested range.";
    WU_E_TOOMANYRANGES = 0x80240006, "The requested number of byte ranges exceeds the maximum number (2³¹ - 1).";
    WU_E_INVALIDINDEX = 0x80240007, "The index to a collection was invalid.";
    WU_E_ITEMNOTFOUND = 0x80240008, "The key for the item queried could not be found.";
    WU_E_OPERATIONINPROGRESS = 0x80240009, "Another conflicting operation was in progress. Some operations such as installation cannot be performed twice simultaneously.";
    WU_E_COULDNOTCANCEL = 0x8024000A, "Cancellation of the operation was not allowed.";
    WU_E_CALL_CANCELLED = 0x8024000B, "Operation was cancelled.";
    WU_E_NOOP = 0x8024000C, "No operation was required.";
    WU_E_XML_MISSINGDATA = 0x8024000D, "WUA could not find required information in the update's XML data.";
    WU_E_XML_INVALID = 0x8024000E, "WUA found invalid information in the update's XML data.";
    WU_E_CYCLE_DETECTED = 0x8024000F, "Circular update relationships were detected in the metadata.";
    WU_E_TOO_DEEP_RELATION = 0x80240010, "Update relationships too deep to evaluate were evaluated.";
    WU_E_INVALID_RELATIONSHIP = 0x80240011, "An invalid update relationship was detected.";
    WU_E_REG_VALUE_INVALID = 0x80240012, "An invalid registry value was read.";
    WU_E_DUPLICATE_ITEM = 0x80240013, "Operation tried to add a duplicate item to a list.";
    WU_E_INVALID_INSTALL_REQUESTED = 0x80240014, "Updates that are requested for install are not installable by the caller.";
    WU_E_INSTALL_NOT_ALLOWED = 0x80240016, "Operation tried to install while another installation was in progress or the system was pending a mandatory restart.";
    WU_E_NOT_APPLICABLE = 0x80240017, "Operation was not performed because there are no applicable updates.";
    WU_E_NO_USERTOKEN = 0x80240018, "Operation failed because a required user token is missing.";
    WU_E_EXCLUSIVE_INSTALL_CONFLICT = 0x80240019, "An exclusive update can't be installed with other updates at the same time.";
    WU_E_POLICY_NOT_SET = 0x8024001A, "A policy value was not set.";
    WU_E_SELFUPDATE_IN_PROGRESS = 0x8024001B, "The operation could not be performed because the Windows Update Agent is self-updating.";
    WU_E_INVALID_UPDATE = 0x8024001D, "An update contains invalid metadata.";
    WU_E_SERVICE_STOP = 0x8024001E, "Operation did not complete because the service or system was being shut down.";
    WU_E_NO_CONNECTION = 0x8024001F, "Operation did not complete because the network connection was unavailable.";
    WU_E_NO_INTERACTIVE_USER = 0x80240020, "Operation did not complete because there is no logged-on interactive user.";
    WU_E_TIME_OUT = 0x80240021, "Operation did not complete because it timed out.";
    WU_E_ALL_UPDATES_FAILED = 0x80240022, "Operation failed for all the updates.";
    WU_E_EULAS_DECLINED = 0x80240023, "The license terms for all updates were declined.";
    WU_E_NO_UPDATE = 0x80240024, "There are no updates.";
    WU_E_USER_ACCESS_DISABLED = 0x80240025, "Group Policy settings prevented access to Windows Update.";
    WU_E_INVALID_UPDATE_TYPE = 0x80240026, "The type of update is invalid.";
    WU_E_URL_TOO_LONG = 0x80240027, "The URL exceeded the maximum length.";
    WU_E_UNINSTALL_NOT_ALLOWED = 0x80240028, "The update could not be uninstalled because the request did not originate from a Windows Server Update Services (WSUS) server.";
    WU_E_INVALID_PRODUCT_LICENSE = 0x80240029, "Search may have missed some updates before there is an unlicensed application on the system.";
    WU_E_MISSING_HANDLER = 0x8024002A, "A component required to detect applicable updates was missing.";
    WU_E_LEGACYSERVER = 0x8024002B, "An operation did not complete because it requires a newer version of server.";
    WU_E_BIN_SOURCE_ABSENT = 0x8024002C, "A delta-compressed update could not be installed because it required the source.";
    WU_E_SOURCE_ABSENT = 0x8024002D, "A full-file update could not be installed because it required the source.";
    WU_E_WU_DISABLED = 0x8024002E, "Access to an unmanaged server is not allowed.";
    WU_E_CALL_CANCELLED_BY_POLICY = 0x8024002F, "Operation did not complete because the DisableWindowsUpdateAccess policy was set in the registry.";
    WU_E_INVALID_PROXY_SERVER = 0x80240030, "The format of the proxy list was invalid.";
    WU_E_INVALID_FILE = 0x80240031, "The file is in the wrong format.";
    WU_E_INVALID_CRITERIA = 0x80240032, "The search criteria string was invalid.";
    WU_E_EULA_UNAVAILABLE = 0x80240033, "License terms could not be downloaded.";
    WU_E_DOWNLOAD_FAILED = 0x80240034, "Update failed to download.";
    WU_E_UPDATE_NOT_PROCESSED = 0x80240035, "The update was not processed.";
    WU_E_INVALID_OPERATION = 0x80240036, "The object's current state did not allow the operation.";
    WU_E_NOT_SUPPORTED = 0x80240037, "The functionality for the operation is not supported.";
    WU_E_TOO_MANY_RESYNC = 0x80240039, "Agent is asked by server to resync too many times.";
    WU_E_NO_SERVER_CORE_SUPPORT = 0x80240040, "The WUA API method does not run on the server core installation.";
    WU_E_SYSPREP_IN_PROGRESS = 0x80240041, "Service is not available while sysprep is running.";
    WU_E_UNKNOWN_SERVICE = 0x80240042, "The update service is no longer registered with automatic updates.";
    WU_E_NO_UI_SUPPORT = 0x80240043, "No support for the WUA user interface.";
    WU_E_PER_MACHINE_UPDATE_ACCESS_DENIED = 0x80240044, "Only administrators can perform this operation on per-computer updates.";
    WU_E_UNSUPPORTED_SEARCHSCOPE = 0x80240045, "A search was attempted with a scope that is not currently supported for this type of search.";
    WU_E_BAD_FILE_URL = 0x80240046, "The URL does not point to a file.";
    WU_E_NOTSUPPORTED = 0x80240047, "The operation requested is not supported.";
    WU_E_INVALID_NOTIFICATION_INFO = 0x80240048, "The featured update notification info returned by the server is invalid.";
    WU_E_OUTOFRANGE = 0x80240049, "The data is out of range.";
    WU_E_SETUP_IN_PROGRESS = 0x8024004A, "WUA operations are not available while operating system setup is running.";
    WU_E_UNEXPECTED = 0x80240FFF, "An operation failed due to reasons not covered by another error code.";
    WU_E_WINHTTP_INVALID_FILE = 0x80240038, "The downloaded file has an unexpected content type.";
    WU_E_PT_HTTP_STATUS_NOT_FOUND = 0x80244019, "Same as HTTP status 404 – The server cannot find the requested URI (Uniform Resource Identifier).";
    WU_E_PT_HTTP_STATUS_PROXY_AUTH_REQ = 0x8024401B, "Same as HTTP status 407 – Proxy authentication is required.";
    WU_E_PT_HTTP_STATUS_SERVICE_UNAVAIL = 0x80244022, "Same as HTTP status 503 – The service is temporarily overloaded.";
    WU_E_PT_HTTP_STATUS_NOT_MAPPED = 0x8024402B, "The request could not be completed and the reason did not correspond to any of the WU_E_PT_HTTP_* error codes.";
    WU_E_PT_WINHTTP_NAME_NOT_RESOLVED = 0x8024402C, "Same as ERROR_WINHTTP_NAME_NOT_RESOLVED - The proxy server or target server name cannot be resolved.";
    WU_E_UH_REMOTEUNAVAILABLE = 0x80242000, "A request for a remote update handler could not be completed because no remote process is available.";
    WU_E_UH_LOCALONLY = 0x80242001, "A request for a remote update handler could not be completed because the handler is local only.";
    WU_E_UH_UNKNOWNHANDLER = 0x80242002, "A request for an update handler could not be completed because the handler could not be recognized.";
    WU_E_UH_REMOTEALREADYACTIVE = 0x80242003, "A remote update handler could not be created because one already exists.";
    WU_E_UH_DOESNOTSUPPORTACTION = 0x80242004, "The update does not support install (uninstall), so the handler could not install (uninstall) it.";
    WU_E_UH_WRONGHANDLER = 0x80242005, "The wrong handler was specified.";
    WU_E_UH_INVALIDMETADATA = 0x80242006, "The update contains invalid metadata.";
    WU_E_UH_INSTALLERHUNG = 0x80242007, "The installer exceeded the time limit.";
    WU_E_UH_OPERATIONCANCELLED = 0x80242008, "An operation being done by the update handler was canceled.";
    WU_E_UH_BADHANDLERXML = 0x80242009, "The handler-specific metadata is invalid.";
    WU_E_UH_CANREQUIREINPUT = 0x8024200A, "The update requires user input, so the handler could not install it.";
    WU_E_UH_INSTALLERFAILURE = 0x8024200B, "The installer failed to install (uninstall) one or more updates.";
    WU_E_UH_FALLBACKTOSELFCONTAINED = 0x8024200C, "The handler should download self-contained content rather than delta-compressed content.";
    WU_E_UH_NEEDANOTHERDOWNLOAD = 0x8024200D, "The handler did not install the update because it needs to be downloaded again.";
    WU_E_UH_NOTIFYFAILURE = 0x8024200E, "The handler failed to send notification of the install (uninstall) status.";
    WU_E_UH_INCONSISTENT_FILE_NAMES = 0x8024200F, "File names in the update metadata and in the package are inconsistent.";
    WU_E_UH_FALLBACKERROR = 0x80242010, "The handler failed to fall back to the self-contained content.";
    WU_E_UH_TOOMANYDOWNLOADREQUESTS = 0x80242011, "The handler exceeded the maximum number of download requests.";
    WU_E_UH_UNEXPECTEDCBSRESPONSE = 0x80242012, "Unexpected response from CBS.";
    WU_E_UH_BADCBSPACKAGEID = 0x80242013, "The update metadata contains an invalid CBS package identifier.";
    WU_E_UH_POSTREBOOTSTILLPENDING = 0x80242014, "The post-reboot operation for the update is still in progress.";
    WU_E_UH_POSTREBOOTRESULTUNKNOWN = 0x80242015, "The result of the post-reboot operation could not be determined.";
    WU_E_UH_POSTREBOOTUNEXPECTEDSTATE = 0x80242016, "The update state after its post-reboot operation is unexpected.";
    WU_E_UH_NEW_SERVICING_STACK_REQUIRED = 0x80242017, "The OS servicing stack must be updated before this update is downloaded or installed.";
    WU_E_UH_UNEXPECTED = 0x80242FFF, "Update handler error not covered by another WU_E_UH_* code.";
    WU_E_INSTALLATION_RESULTS_UNKNOWN_VERSION = 0x80243001, "Download/installation results could not be read from the registry: unrecognized data format version.";
    WU_E_INSTALLATION_RESULTS_INVALID_DATA = 0x80243002, "Download/installation results could not be read from the registry: invalid data format.";
    WU_E_INSTALLATION_RESULTS_NOT_FOUND = 0x80243003, "Download/installation results are not available; the operation may have failed to start.";
    WU_E_DM_URLNOTAVAILABLE = 0x80246001, "The requested file does not have a URL.";
    WU_E_DM_INCORRECTFILEHASH = 0x80246002, "The file digest was not recognized.";
    WU_E_DM_UNKNOWNALGORITHM = 0x80246003, "The file metadata requested an unrecognized hash algorithm.";
    WU_E_DM_NEEDDOWNLOADREQUEST = 0x80246004, "A download request is required from the download handler.";
    WU_E_DM_NONETWORK = 0x80246005, "The network connection was unavailable.";
    WU_E_DM_WRONGBITSVERSION = 0x80246006, "The BITS version is incompatible.";
    WU_E_DM_NOTDOWNLOADED = 0x80246007, "The update has not been downloaded.";
    WU_E_DM_FAILTOCONNECTTOBITS = 0x80246008, "The download manager could not connect to BITS.";
    WU_E_DM_BITSTRANSFERERROR = 0x80246009, "Unspecified BITS transfer error.";
    WU_E_DM_DOWNLOADLOCATIONCHANGED = 0x8024600A, "The download must be restarted because the source location changed.";
    WU_E_DM_CONTENTCHANGED = 0x8024600B, "The download must be restarted because the content changed in a new revision.";
    WU_E_DM_UNEXPECTED = 0x80246FFF, "Download manager error not covered by another WU_E_DM_* code.";
    WU_E_DS_SHUTDOWN = 0x80248000, "An operation failed because WUA is shutting down.";
    WU_E_DS_DECLINENOTALLOWED = 0x80248016, "A request to hide an update was declined: it is mandatory or was deployed with a deadline.";
    WU_E_OL_INVALID_SCANFILE = 0x80247001, "The scan package was invalid.";
    WU_E_OL_NEWCLIENT_REQUIRED = 0x80247002, "The scan package requires a newer Windows Update Agent.";
    WU_E_AU_NOSERVICE = 0x8024A000, "Automatic Updates was unable to service incoming requests.";
    WU_E_AU_PAUSED = 0x8024A004, "Automatic Updates was paused and could not process incoming requests.";
    WU_E_PT_SOAPCLIENT_CONNECT = 0x80244004, "SOAP client failed to connect to the server.";
    WU_E_PT_HTTP_STATUS_DENIED = 0x80244017, "Same as HTTP status 401.";
    WU_E_PT_HTTP_STATUS_FORBIDDEN = 0x80244018, "Same as HTTP status 403.";
    WU_E_PT_HTTP_STATUS_SERVER_ERROR = 0x8024401F, "Same as HTTP status 500.";
    WU_E_PT_UNEXPECTED = 0x80244FFF, "Communication error not covered by another WU_E_PT_* code.";
    WU_E_PT_HTTP_STATUS_BAD_REQUEST = 0x80244016, "Same as HTTP status 400 – The server could not process the request due to invalid syntax.";
    WU_E_PT_HTTP_STATUS_BAD_METHOD = 0x8024401A, "Same as HTTP status 405 – The HTTP method is not allowed.";
    WU_E_PT_HTTP_STATUS_REQUEST_TIMEOUT = 0x8024401C, "Same as HTTP status 408 – The server timed out waiting for the request.";
    WU_E_PT_HTTP_STATUS_CONFLICT = 0x8024401D, "Same as HTTP status 409 – The request was not completed due to a conflict with the current state of the resource.";
    WU_E_PT_HTTP_STATUS_GONE = 0x8024401E, "Same as HTTP status 410 – Requested resource is no longer available at the server.";
    WU_E_PT_HTTP_STATUS_NOT_SUPPORTED = 0x80244020, "Same as HTTP status 501 – Server does not support the functionality required to fulfill the request.";
    WU_E_PT_HTTP_STATUS_BAD_GATEWAY = 0x80244021, "Same as HTTP status 502 – The server, while acting as a gateway or proxy, received an invalid response from the upstream server it accessed in attempting to fulfill the request.";
    WU_E_PT_HTTP_STATUS_GATEWAY_TIMEOUT = 0x80244023, "Same as HTTP status 504 – The request was timed out waiting for a gateway.";
    WU_E_PT_HTTP_STATUS_VERSION_NOT_SUP = 0x80244024, "Same as HTTP status 505 – The server does not support the HTTP protocol version used for the request.";
    S_OK = 0x00000000, "Success.";
    E_POINTER = 0x80004003, "Invalid or NULL pointer parameter (documented on Search/BeginSearch/EndSearch/QueryHistory/EscapeString/Add/Copy).";
    E_ACCESSDENIED = 0x80070005, "Caller lacks permission, or method not callable from a remote computer.";
    E_INVALIDARG = 0x80070057, "A parameter value is invalid (CreateUpdateInstaller, CopyFromCache, CopyToCache).";
    STG_E_PATHNOTFOUND = 0x80030003, "CopyFromCache: file or directory could not be located.";
    COR_E_DIRECTORYNOTFOUND = 0x80070003, "CopyFromCache: file or directory could not be located.";
    E_NOTIMPL = 0x80004001, "Not implemented.";
    // Signature and trust failures of signed (TUF) metadata. WUA reports a bad signature on its
    // own content with these winerror.h codes (WinVerifyTrust's); the reference tables have no
    // WU_E_* code for them. docs/signed-catalogs.md maps each TUF failure to its code.
    TRUST_E_BAD_DIGEST = 0x80096010, "The digital signature of the object did not verify.";
    TRUST_E_NOSIGNATURE = 0x800B0100, "No signature was present in the subject.";
    TRUST_E_SUBJECT_NOT_TRUSTED = 0x800B0004, "The subject is not trusted for the specified action.";
    CERT_E_EXPIRED = 0x800B0101, "A required certificate is not within its validity period when verifying against the current system clock or the timestamp in the signed file.";
    E_FAIL = 0x80004005, "Unspecified failure.";
}

/// `SUS_E_NOT_INITIALIZED`, named by the download pages but by no table; an alias of
/// [`WU_E_NOT_INITIALIZED`] (DIGEST §10.10).
pub const SUS_E_NOT_INITIALIZED: HResult = WU_E_NOT_INITIALIZED;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn values_match_the_reference_table() {
        assert_eq!(WU_E_NO_UPDATE.as_u32(), 0x8024_0024);
        assert_eq!(WU_E_INSTALL_NOT_ALLOWED.as_u32(), 0x8024_0016);
        assert_eq!(
            WU_E_UH_NEEDANOTHERDOWNLOAD.0, -2145116147,
            "the sample's number"
        );
        assert_eq!(WU_S_MARKED_FOR_DISCONNECT.as_u32(), 0x0024_0004);
        assert!(WU_S_REBOOT_REQUIRED.is_success());
        assert!(WU_E_NOT_SUPPORTED.is_failure());
    }

    #[test]
    fn names_and_values_are_unique_and_round_trip() {
        let mut values = HashSet::new();
        for code in HResult::all() {
            assert!(values.insert(code.as_u32()), "{code:?} twice");
            let name = code.name().unwrap();
            assert_eq!(HResult::from_name(name), Some(*code));
            assert!(!code.message().unwrap().is_empty());
        }
        assert!(values.len() > 130);
    }

    #[test]
    fn display_shows_name_value_and_meaning() {
        assert_eq!(
            WU_E_NO_UPDATE.to_string(),
            "WU_E_NO_UPDATE (0x80240024): There are no updates."
        );
        assert_eq!(HResult::from_u32(0x8024_FFFE).to_string(), "0x8024FFFE");
        assert_eq!(HResult::from_win32(2).as_u32(), 0x8007_0002);
    }
}
