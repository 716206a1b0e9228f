//! The one HTTP client of the agent, shared by signed-metadata refreshes ([`crate::repository`])
//! and payload downloads ([`crate::download`]), and how its failures map to HRESULTs.
//!
//! Network failures use the codes DIGEST §10.11 names: `WU_E_PT_HTTP_STATUS_*` for an HTTP
//! status, `WU_E_DM_NONETWORK` when no connection could be made, `WU_E_TIME_OUT` when the server
//! stalls (TUF's "slow retrieval" attack).

use std::time::Duration;

use crate::error::Error;
use crate::hresult::*;

/// How the agent talks to update services over the network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkOptions {
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// A transfer that receives no byte for this long fails with `WU_E_TIME_OUT`. This is the
    /// defence against slow-retrieval attacks (a server dripping bytes forever): every read must
    /// make progress within this window. Also the time allowed for response headers.
    pub stall_timeout: Duration,
    /// How many payloads download at once.
    pub parallel_downloads: usize,
}

impl Default for NetworkOptions {
    fn default() -> Self {
        NetworkOptions {
            connect_timeout: Duration::from_secs(15),
            stall_timeout: Duration::from_secs(30),
            parallel_downloads: 4,
        }
    }
}

impl NetworkOptions {
    /// Builds the HTTP client: rustls with the platform's trust store, no automatic
    /// decompression (payloads are hashed byte for byte), a `wua/<version>` user agent.
    pub fn client(&self) -> crate::Result<reqwest::Client> {
        reqwest::Client::builder()
            .user_agent(concat!("wua/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(self.connect_timeout)
            .read_timeout(self.stall_timeout)
            .build()
            .map_err(|e| {
                Error::code(
                    WU_E_PT_UNEXPECTED,
                    format!("cannot set up the HTTP client: {e}"),
                )
            })
    }
}

/// The HRESULT for an HTTP status that is not a success (`WU_E_PT_HTTP_STATUS_*`).
pub fn status_hresult(status: u16) -> HResult {
    match status {
        400 => WU_E_PT_HTTP_STATUS_BAD_REQUEST,
        401 => WU_E_PT_HTTP_STATUS_DENIED,
        403 => WU_E_PT_HTTP_STATUS_FORBIDDEN,
        404 => WU_E_PT_HTTP_STATUS_NOT_FOUND,
        405 => WU_E_PT_HTTP_STATUS_BAD_METHOD,
        407 => WU_E_PT_HTTP_STATUS_PROXY_AUTH_REQ,
        408 => WU_E_PT_HTTP_STATUS_REQUEST_TIMEOUT,
        409 => WU_E_PT_HTTP_STATUS_CONFLICT,
        410 => WU_E_PT_HTTP_STATUS_GONE,
        500 => WU_E_PT_HTTP_STATUS_SERVER_ERROR,
        501 => WU_E_PT_HTTP_STATUS_NOT_SUPPORTED,
        502 => WU_E_PT_HTTP_STATUS_BAD_GATEWAY,
        503 => WU_E_PT_HTTP_STATUS_SERVICE_UNAVAIL,
        504 => WU_E_PT_HTTP_STATUS_GATEWAY_TIMEOUT,
        505 => WU_E_PT_HTTP_STATUS_VERSION_NOT_SUP,
        _ => WU_E_PT_HTTP_STATUS_NOT_MAPPED,
    }
}

/// The HRESULT for a failed request or transfer, from the error's kind.
pub fn reqwest_hresult(e: &reqwest::Error) -> HResult {
    if let Some(status) = e.status() {
        status_hresult(status.as_u16())
    } else if e.is_timeout() {
        WU_E_TIME_OUT
    } else if e.is_connect() {
        WU_E_DM_NONETWORK
    } else {
        WU_E_PT_UNEXPECTED
    }
}

/// A failed request or transfer of `url` as an [`Error`] that says what to do.
pub fn request_error(what: &str, url: &str, e: &reqwest::Error) -> Error {
    let hresult = reqwest_hresult(e);
    let advice = match hresult {
        WU_E_TIME_OUT => {
            "the server stopped sending data; try again later, or check the service URL"
        }
        WU_E_DM_NONETWORK => {
            "check the network connection and the service URL (`wua service list`)"
        }
        _ => "check the service URL (`wua service list`) and try again",
    };
    // reqwest's Display omits the cause ("error sending request"); the chain has it.
    let mut cause = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause.push_str(": ");
        cause.push_str(&s.to_string());
        source = s.source();
    }
    Error::code(hresult, format!("cannot {what} {url}: {cause}; {advice}"))
}

/// An HTTP status that is not a success, for `url`.
pub fn status_error(what: &str, url: &str, status: reqwest::StatusCode) -> Error {
    Error::code(
        status_hresult(status.as_u16()),
        format!(
            "cannot {what} {url}: the server answered {status}; check the service URL (`wua service list`)"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_their_documented_codes() {
        assert_eq!(status_hresult(404), WU_E_PT_HTTP_STATUS_NOT_FOUND);
        assert_eq!(status_hresult(503), WU_E_PT_HTTP_STATUS_SERVICE_UNAVAIL);
        assert_eq!(status_hresult(418), WU_E_PT_HTTP_STATUS_NOT_MAPPED);
    }
}
