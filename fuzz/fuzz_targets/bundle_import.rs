//! Fuzzes importing an exported repository bundle (`wua service add NAME FILE --bundle`): any
//! bytes are imported or refused, never a panic; what is imported is only directories and
//! regular files below `metadata/` and `targets/` of the destination, and a refused bundle
//! leaves no destination behind.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fn check(base: &Path, dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        let path = entry.path();
        assert!(kind.is_dir() || kind.is_file(), "{path:?} is {kind:?}");
        let top = path.strip_prefix(base).unwrap().components().next().unwrap();
        assert!(
            top.as_os_str() == "metadata" || top.as_os_str() == "targets",
            "{path:?} is outside metadata/ and targets/"
        );
        if kind.is_dir() {
            check(base, &path);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle.tar");
    std::fs::write(&bundle, data).unwrap();
    let dest = tmp.path().join("imported");
    match wua::repository::bundle::import(&bundle, &dest) {
        Ok(()) => check(&dest, &dest),
        Err(_) => assert!(!dest.exists(), "a refused bundle left {dest:?}"),
    }
    // Nothing was written beside the destination but the bundle itself.
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(names.len() <= 2, "{names:?}");
});
