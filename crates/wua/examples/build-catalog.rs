//! Builds a catalog from a source tree and, optionally, publishes it as a signed repository:
//! `cargo run -p wua --example build-catalog -- SRC OUT [REPOSITORY KEYS]`.
//!
//! The repository's example catalog and example signed repository are regenerated with
//!
//! ```sh
//! cargo run -p wua --example build-catalog -- examples/catalog-src examples/catalog examples/repository examples/keys
//! ```
//!
//! (`wua catalog build` and `wua catalog init`/`publish` do the same once the CLI is built; this
//! one has no dependency on what the CLI embeds.)
//!
//! With REPOSITORY and KEYS, the repository is rebuilt from scratch — created with the keys in
//! KEYS and the catalog in OUT published as release 1 — with every role (root included)
//! expiring at [`EXAMPLE_EXPIRES`], so the same sources and keys always give the same bytes.
//! The new repository is built beside the old one and then replaces it. KEYS must hold the
//! keys (`wua catalog keygen KEYS`); if it has none, new ones are generated there (a new
//! example trust anchor: commit them).

use std::path::{Path, PathBuf};

/// When every role of the example repository expires. Fixed, for reproducible output.
const EXAMPLE_EXPIRES: &str = "2036-01-01T00:00:00Z";

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (source, out, signed) = match args.as_slice() {
        [source, out] => (source, out, None),
        [source, out, repository, keys] => (source, out, Some((repository, keys))),
        _ => {
            eprintln!("usage: build-catalog SOURCE_DIR OUT_DIR [REPOSITORY_DIR KEYS_DIR]");
            return std::process::ExitCode::from(64);
        }
    };
    let report = match wua::catalog::build(source.as_ref(), out.as_ref()) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("build-catalog: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!(
        "Built catalog \"{}\" in {out}: {} updates, {} new payloads",
        report.catalog.name(),
        report.catalog.updates().len(),
        report.payloads_written
    );
    if let Some((repository, keys)) = signed {
        match publish_example(Path::new(out), Path::new(repository), Path::new(keys)) {
            Ok(summary) => println!(
                "Published it to {repository}: {} targets, every role expiring {EXAMPLE_EXPIRES}; trust anchor {repository}/metadata/1.root.json",
                summary.targets
            ),
            Err(e) => {
                eprintln!("build-catalog: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    std::process::ExitCode::SUCCESS
}

/// Rebuilds `repository` from scratch: init and one release of `catalog`, fixed expiry.
fn publish_example(
    catalog: &Path,
    repository: &Path,
    keys: &Path,
) -> wua::Result<wua::repository::author::PublishSummary> {
    use wua::repository::author::{self, InitOptions, PublishOptions};
    if !keys.join("root.pem").exists() {
        author::generate_keys(keys)?;
        println!(
            "Generated new example keys in {}: commit them with the repository",
            keys.display()
        );
    }
    let expires: jiff::Timestamp = EXAMPLE_EXPIRES.parse().expect("a valid timestamp");
    let fresh = sibling(repository, "new");
    let old = sibling(repository, "old");
    for leftover in [&fresh, &old] {
        if leftover.exists() {
            std::fs::remove_dir_all(leftover)
                .map_err(|e| wua::Error::io("cannot remove", leftover, e))?;
        }
    }
    author::init_repository(&fresh, keys, &InitOptions::until(expires))?;
    let summary = author::publish(&fresh, keys, catalog, &PublishOptions::until(expires))?;
    if repository.exists() {
        std::fs::rename(repository, &old)
            .map_err(|e| wua::Error::io("cannot move", repository, e))?;
    }
    std::fs::rename(&fresh, repository)
        .map_err(|e| wua::Error::io("cannot rename into place", repository, e))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| wua::Error::io("cannot remove", &old, e))?;
    }
    Ok(summary)
}

/// `DIR.wua-SUFFIX` next to `dir`.
fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".wua-{suffix}"));
    dir.with_file_name(name)
}
