//! Signed catalogs: a catalog published as a TUF repository (The Update Framework,
//! <https://theupdateframework.github.io/specification/latest/>), read with the `tough` crate.
//!
//! A repository is a directory, or the same tree served over HTTP(S):
//!
//! ```text
//! metadata/   root.json chain (1.root.json, 2.root.json, …), timestamp.json,
//!             <version>.snapshot.json, <version>.targets.json (consistent snapshots)
//! targets/    <sha256>.<target name>: catalog.json and one <sha256>.tar.zst per payload
//! ```
//!
//! The targets are the catalog's own files (`docs/catalog-format.md`): [`CATALOG_TARGET`] is the
//! `catalog.json` of the catalog, and each payload archive is the target named by
//! [`payload_target`]. Because a payload's name is its own SHA-256, a payload target's name,
//! its TUF hash and the content-addressed cache key are the same string.
//!
//! * [`author`]: creating keys and repositories, publishing and signing (`wua catalog …`).
//! * [`bundle`]: exporting a repository as one file for offline machines, and importing it.
//! * [`client`]: refreshing a service's signed metadata with rollback protection, and the
//!   verified view of its targets that downloads check payloads against.

pub mod author;
pub mod bundle;
pub mod client;
mod datastore;

/// The target holding the catalog's `catalog.json`.
pub const CATALOG_TARGET: &str = "catalog.json";

/// The metadata directory of a repository.
pub const METADATA_DIR: &str = "metadata";

/// The targets directory of a repository.
pub const TARGETS_DIR: &str = "targets";

/// The target name of the payload archive with this SHA-256 (lower-case hex).
pub fn payload_target(sha256: &str) -> String {
    format!("{sha256}.tar.zst")
}
