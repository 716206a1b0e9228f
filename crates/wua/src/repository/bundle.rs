//! Exported bundles: a whole repository (`metadata/` and `targets/`) in one `.tar` file, for
//! machines that never reach the publisher — WUA's offline scan package
//! (`AddScanPackageService`). A bundle is not trusted for being local: once imported it is read
//! like any service, its metadata verified against the root the administrator trusts.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::hresult::*;

use super::{METADATA_DIR, TARGETS_DIR};

/// Writes the repository at `repo` into the tar file `out` (written beside and renamed into
/// place). Only `metadata/` and `targets/` and the regular files in them are included.
pub fn export(repo: &Path, out: &Path) -> Result<u64> {
    if !repo.join(METADATA_DIR).is_dir() {
        return Err(Error::code(
            E_INVALIDARG,
            format!(
                "{} is not a signed repository: it has no {METADATA_DIR}/ directory",
                repo.display()
            ),
        ));
    }
    let tmp = out.with_file_name(format!(
        ".{}.wua-tmp",
        out.file_name().unwrap_or_default().to_string_lossy()
    ));
    let file = File::create(&tmp).at("cannot create", &tmp)?;
    let mut builder = tar::Builder::new(io::BufWriter::new(file));
    builder.mode(tar::HeaderMode::Deterministic);
    let mut files = 0;
    for top in [METADATA_DIR, TARGETS_DIR] {
        let dir = repo.join(top);
        if !dir.is_dir() {
            continue;
        }
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .at("cannot list", &dir)?
            .collect::<io::Result<_>>()
            .at("cannot list", &dir)?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let kind = entry.file_type().at("cannot read", &path)?;
            if !kind.is_file() {
                continue;
            }
            let name = Path::new(top).join(entry.file_name());
            builder
                .append_path_with_name(&path, &name)
                .at("cannot add to the bundle", &path)?;
            files += 1;
        }
    }
    let writer = builder.into_inner().at("cannot write", &tmp)?;
    let file = writer
        .into_inner()
        .map_err(|e| Error::io("cannot write", &tmp, e.into_error()))?;
    file.sync_all().at("cannot sync", &tmp)?;
    fs::rename(&tmp, out).at("cannot rename into place", out)?;
    Ok(files)
}

/// Copies a bundle — a repository directory or a `.tar` made by [`export`] — into `dest`
/// (which must not exist). Only directories and regular files below `metadata/` and
/// `targets/` are taken; anything else (links, devices, paths leaving the bundle) is refused.
pub fn import(bundle: &Path, dest: &Path) -> Result<()> {
    let meta = fs::metadata(bundle)
        .map_err(|e| Error::io("cannot read the bundle", bundle, e).with_hresult(E_INVALIDARG))?;
    let staging = dest.with_file_name(format!(
        "{}.importing",
        dest.file_name().unwrap_or_default().to_string_lossy()
    ));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).at("cannot create", &staging)?;
    let result = if meta.is_dir() {
        copy_repository(bundle, &staging)
    } else {
        let file = File::open(bundle).at("cannot open the bundle", bundle)?;
        unpack(bundle, file, &staging)
    };
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&staging);
        return Err(e);
    }
    if !staging.join(METADATA_DIR).is_dir() {
        let _ = fs::remove_dir_all(&staging);
        return Err(Error::code(
            WU_E_INVALID_FILE,
            format!(
                "{} is not a repository bundle: it has no {METADATA_DIR}/ directory; make one with `wua catalog export`",
                bundle.display()
            ),
        ));
    }
    fs::rename(&staging, dest).at("cannot rename into place", dest)
}

fn copy_repository(from: &Path, to: &Path) -> Result<()> {
    for top in [METADATA_DIR, TARGETS_DIR] {
        let dir = from.join(top);
        if !dir.is_dir() {
            continue;
        }
        let out = to.join(top);
        fs::create_dir_all(&out).at("cannot create", &out)?;
        for entry in fs::read_dir(&dir).at("cannot list", &dir)? {
            let entry = entry.at("cannot list", &dir)?;
            let path = entry.path();
            if entry.file_type().at("cannot read", &path)?.is_file() {
                let target = out.join(entry.file_name());
                fs::copy(&path, &target).at("cannot copy", &path)?;
            }
        }
    }
    Ok(())
}

fn unpack(origin: &Path, file: File, to: &Path) -> Result<()> {
    let bad = |what: String| {
        Error::code(
            WU_E_INVALID_FILE,
            format!(
                "{} is not a usable repository bundle: {what}; make one with `wua catalog export`",
                origin.display()
            ),
        )
    };
    let mut archive = tar::Archive::new(io::BufReader::new(file));
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("not a tar file ({e})")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("unreadable ({e})")))?;
        let raw = entry
            .path()
            .map_err(|e| bad(format!("a bad path ({e})")))?
            .into_owned();
        let Some(relative) = inside_repository(&raw) else {
            return Err(bad(format!(
                "the entry {} is outside {METADATA_DIR}/ and {TARGETS_DIR}/",
                raw.display()
            )));
        };
        let kind = entry.header().entry_type();
        let target = to.join(&relative);
        if kind.is_dir() {
            fs::create_dir_all(&target).at("cannot create", &target)?;
        } else if kind.is_file() {
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).at("cannot create", parent)?;
            }
            let mut out = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&target)
                .at("cannot create", &target)?;
            io::copy(&mut (&mut entry).take(u64::MAX), &mut out).at("cannot write", &target)?;
        } else {
            return Err(bad(format!(
                "the entry {} is a {kind:?}; only files and directories are allowed",
                raw.display()
            )));
        }
    }
    Ok(())
}

/// `metadata/…` or `targets/…` with only normal components, else `None`.
fn inside_repository(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            _ => return None,
        }
    }
    let top = out.components().next()?;
    (top.as_os_str() == METADATA_DIR || top.as_os_str() == TARGETS_DIR).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_then_import_gives_the_same_files() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        fs::create_dir_all(repo.join("metadata")).unwrap();
        fs::create_dir_all(repo.join("targets")).unwrap();
        fs::write(repo.join("metadata/1.root.json"), b"{}").unwrap();
        fs::write(repo.join("targets/abc.catalog.json"), b"[]").unwrap();
        fs::write(repo.join("stray.txt"), b"not exported").unwrap();
        let out = tmp.path().join("bundle.tar");
        assert_eq!(export(&repo, &out).unwrap(), 2);
        let dest = tmp.path().join("imported");
        import(&out, &dest).unwrap();
        assert_eq!(fs::read(dest.join("metadata/1.root.json")).unwrap(), b"{}");
        assert_eq!(
            fs::read(dest.join("targets/abc.catalog.json")).unwrap(),
            b"[]"
        );
        assert!(!dest.join("stray.txt").exists());
    }

    #[test]
    fn entries_outside_the_repository_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("evil.tar");
        let mut builder = tar::Builder::new(File::create(&out).unwrap());
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, "etc/passwd", &b"x"[..])
            .unwrap();
        builder.finish().unwrap();
        drop(builder);
        let dest = tmp.path().join("imported");
        let err = import(&out, &dest).unwrap_err();
        assert_eq!(err.hresult(), WU_E_INVALID_FILE);
        assert!(err.to_string().contains("etc/passwd"), "{err}");
        assert!(!dest.exists());
    }
}
