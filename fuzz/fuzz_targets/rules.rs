//! Fuzzes detection rules: any JSON gives a rule or an error, never a panic; a rule that parses
//! serialises back to an equal rule; validating and evaluating it (against an empty root) never
//! panics.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wua::rules::{Machine, Rule};

fn root() -> &'static std::path::Path {
    static ROOT: OnceLock<tempfile::TempDir> = OnceLock::new();
    ROOT.get_or_init(|| tempfile::tempdir().expect("temporary root"))
        .path()
}

fuzz_target!(|data: &[u8]| {
    let Ok(rule) = serde_json::from_slice::<Rule>(data) else {
        return;
    };
    let json = serde_json::to_string(&rule).expect("a rule serialises");
    let back: Rule = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("{json} (from {:?}) does not parse back: {e}", data));
    assert_eq!(back, rule);
    let _ = wua::rules::validate(&rule);
    let _ = rule.to_string();
    let _ = rule.evaluate(&Machine::new(root()), &mut |id| id.as_u128() % 2 == 0);
});
