//! Fuzzes the search-criteria parser: any UTF-8 gives criteria or an error, never a panic, and
//! accepted criteria print (`Display`) as text that parses back equal.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(criteria) = wua::search::criteria::parse(text) {
        let printed = criteria.to_string();
        let back = wua::search::criteria::parse(&printed)
            .unwrap_or_else(|e| panic!("{printed:?} (from {text:?}) does not parse: {e}"));
        assert_eq!(back, criteria, "{printed:?} (from {text:?})");
    }
});
