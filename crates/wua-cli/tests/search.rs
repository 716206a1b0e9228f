//! End-to-end tests of `wua search` (criteria, filters, --explain, JSON), `hide`, `unhide`,
//! `accept-eula`, and the selection flags of `install` and `uninstall`, against the example
//! catalog and a fixture catalog built here.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use common::{Agent, example_catalog};

const TOOLS: &str = "0fa1201d-4330-4fa8-8ae9-b877473b6441";
const SECURITY: &str = "28bc880e-0592-4cbf-8f95-c79b17911d5f";
const DRIVERS: &str = "ebfc1fc5-71a4-4f7b-9aca-3b9a503104a0";
const FONT_ID: &str = "e1f2a3b4-c5d6-4e7f-8091-a2b3c4d5e6f7";
const HELLO_ID: &str = "3f1c9a52-7d1e-4b8e-9a0f-1e2d3c4b5a61";
const HELLO_OLD_ID: &str = "3f1c0009-7d1e-4b8e-9a0f-000000000009";
const EXTRAS_ID: &str = "7e5a0b11-1111-4a4a-8b8b-000000000011";

const ALPHA: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const ALPHA_OLD: &str = "99999999-0000-4000-8000-000000000007";
const DEADLINE: &str = "dddddddd-0000-4000-8000-000000000004";

/// A fixture catalog:
///
/// | id | title | KB | what |
/// |---|---|---|---|
/// | aaaaaaaa… | Alpha tool 2.0 | 7000001 | Tools, Critical, a 24 KiB payload; supersedes Alpha tool 1.0 |
/// | bbbbbbbb… | Beta driver | 7000002 | Drivers, Low, type driver |
/// | cccccccc… | Gamma baseline | 7000003 | Security Updates, Important, mandatory |
/// | dddddddd… | Delta with deadline | 7000004 | Tools, a deadline |
/// | eeeeeeee… | Epsilon add-on | 7000005 | Tools; applies once Alpha tool 2.0 is installed |
/// | ffffffff… | Zeta probe | 7000006 | Tools; applies when `etc/probe` exists (a loop in one test) |
/// | 99999999… | Alpha tool 1.0 | 7000000 | Tools; superseded by Alpha tool 2.0 |
fn fixture(dir: &Path) -> PathBuf {
    let tools = format!(r#"{{"id":"{TOOLS}","name":"Tools"}}"#);
    let updates = [
        (
            "01-alpha",
            ALPHA,
            "Alpha tool 2.0",
            "7000001",
            format!(
                r#""categories":[{tools}],"msrc_severity":"Critical","superseded_update_ids":["{ALPHA_OLD}"]"#
            ),
        ),
        (
            "02-beta",
            "bbbbbbbb-0000-4000-8000-000000000002",
            "Beta driver",
            "7000002",
            format!(
                r#""categories":[{{"id":"{DRIVERS}","name":"Drivers"}}],"msrc_severity":"Low","type":"driver""#
            ),
        ),
        (
            "03-gamma",
            "cccccccc-0000-4000-8000-000000000003",
            "Gamma baseline",
            "7000003",
            format!(
                r#""categories":[{{"id":"{SECURITY}","name":"Security Updates"}}],"msrc_severity":"Important","is_mandatory":true"#
            ),
        ),
        (
            "04-delta",
            DEADLINE,
            "Delta with deadline",
            "7000004",
            format!(r#""categories":[{tools}],"deadline":"2030-01-01T00:00:00Z""#),
        ),
        (
            "05-epsilon",
            "eeeeeeee-0000-4000-8000-000000000005",
            "Epsilon add-on",
            "7000005",
            format!(
                r#""categories":[{tools}],"applicability":{{"is_installable":{{"update_installed":"{ALPHA}"}}}}"#
            ),
        ),
        (
            "06-zeta",
            "ffffffff-0000-4000-8000-000000000006",
            "Zeta probe",
            "7000006",
            format!(
                r#""categories":[{tools}],"applicability":{{"is_installable":{{"file_exists":"etc/probe"}}}}"#
            ),
        ),
        (
            "07-alpha-old",
            ALPHA_OLD,
            "Alpha tool 1.0",
            "7000000",
            format!(r#""categories":[{tools}]"#),
        ),
    ];
    for (folder, id, title, kb, extra) in updates {
        let src = dir.join("src").join(folder);
        let payload = src.join("payload/usr/share").join(folder);
        fs::create_dir_all(&payload).unwrap();
        fs::write(
            src.join("update.json"),
            format!(
                r#"{{"identity":{{"update_id":"{id}","revision_number":1}},"title":"{title}",
                    "kb_article_ids":["{kb}"],{extra},"handler":{{"kind":"files"}}}}"#
            ),
        )
        .unwrap();
        fs::write(payload.join("README"), format!("{title}\n")).unwrap();
    }
    // Alpha's payload: 24 KiB that do not compress (a simple PRNG), so its download size is
    // well above 10K.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let noise: Vec<u8> = (0..24 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    fs::write(
        dir.join("src/01-alpha/payload/usr/share/01-alpha/noise"),
        noise,
    )
    .unwrap();
    let out = dir.join("catalog");
    wua::catalog::build(&dir.join("src"), &out).unwrap();
    out
}

fn titles(report: &Value) -> Vec<String> {
    report["updates"]
        .as_array()
        .unwrap_or_else(|| panic!("no updates: {report:#}"))
        .iter()
        .map(|u| u["title"].as_str().unwrap().to_string())
        .collect()
}

fn search(agent: &Agent, args: &[&str]) -> Vec<String> {
    let mut all = vec!["search"];
    all.extend_from_slice(args);
    let (code, report) = agent.json(&all);
    assert_eq!(code, 0, "{args:?}: {report:#}");
    titles(&report)
}

fn find<'a>(report: &'a Value, key: &str, title: &str) -> &'a Value {
    report[key]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["title"] == title)
        .unwrap_or_else(|| panic!("{title} not in {key}: {report:#}"))
}

/// The titles `wua search` prints in its table.
fn table_titles(stdout: &str) -> Vec<String> {
    let mut lines = stdout.lines();
    let header = lines.next().unwrap_or_default();
    assert!(header.starts_with("STATUS"), "{stdout}");
    let at = header.find("TITLE").unwrap();
    lines
        .take_while(|l| !l.starts_with("Status:"))
        .map(|l| l[at..].to_string())
        .collect()
}

const DEFAULT_EIGHT: [&str; 8] = [
    "Hello Tools 1.0",
    "Hello Tools configuration update",
    "Toolkit 2.1 (scripted setup)",
    "Demo kernel refresh",
    "Demo Sans font",
    "Monitoring agent 0.9 (fails to install)",
    "Security baseline 2026-11",
    "Demo controller firmware 3.2",
];

#[test]
fn search_shows_wuas_default_result_as_a_table() {
    let agent = Agent::new(example_catalog());
    let out = agent.run(&["search"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(table_titles(&out.stdout), DEFAULT_EIGHT, "{}", out.stdout);
    let row = |title: &str| {
        out.stdout
            .lines()
            .find(|l| l.ends_with(title))
            .unwrap()
            .to_string()
    };
    // STATUS letters: I D H M U L O B R S.
    assert!(row("Security baseline 2026-11").starts_with("-D-M------ "));
    assert!(row("Demo Sans font").starts_with("-D--UL---- "));
    assert!(row("Demo kernel refresh").starts_with("-D--U---R- "));
    assert!(row("Hello Tools 1.0").contains(" 3f1c9a52  KB5000001  "));
    assert!(
        out.stdout.contains(
            "Status: D downloaded, M mandatory, U uninstallable, L licence terms to accept, R restart"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("8 updates found (criteria: IsInstalled = 0 and IsHidden = 0)."),
        "{}",
        out.stdout
    );
    assert!(out.stderr.is_empty(), "{out:?}");
    // The letters are documented in the long help.
    let help = agent.run(&["search", "--help"]);
    assert!(
        help.stdout.contains("L  licence terms to accept"),
        "{help:?}"
    );
}

#[test]
fn search_json_has_the_documented_fields() {
    let agent = Agent::new(example_catalog());
    let (code, report) = agent.json(&["search", "--include-superseded"]);
    assert_eq!(code, 0);
    assert_eq!(report["schema_version"], 1);
    assert_eq!(report["criteria"], "IsInstalled = 0 and IsHidden = 0");
    assert_eq!(report["include_superseded"], true);
    assert_eq!(report["filters"], serde_json::json!([]));
    assert_eq!(report["result_code"], "succeeded");
    assert_eq!(report["matched_criteria"], 9);
    assert_eq!(report["warnings"], serde_json::json!([]));
    assert!(report.get("explanations").is_none());
    assert!(report["catalog"].as_str().unwrap().ends_with("catalog"));
    let font = find(&report, "updates", "Demo Sans font");
    for (key, value) in [
        ("update_id", serde_json::json!(FONT_ID)),
        ("revision_number", serde_json::json!(1)),
        ("kb_article_ids", serde_json::json!(["5000005"])),
        ("categories", serde_json::json!(["Tools"])),
        ("category_ids", serde_json::json!([TOOLS])),
        ("msrc_severity", Value::Null),
        ("type", serde_json::json!("software")),
        ("deployment_action", serde_json::json!("installation")),
        ("status", serde_json::json!("-D--UL----")),
        ("is_installed", serde_json::json!(false)),
        ("is_installable", serde_json::json!(true)),
        ("is_present", serde_json::json!(false)),
        ("is_downloaded", serde_json::json!(true)),
        ("is_hidden", serde_json::json!(false)),
        ("is_mandatory", serde_json::json!(false)),
        ("is_uninstallable", serde_json::json!(true)),
        ("browse_only", serde_json::json!(false)),
        ("is_assigned", serde_json::json!(true)),
        ("has_eula", serde_json::json!(true)),
        ("eula_accepted", serde_json::json!(false)),
        ("eula_accepted_by", Value::Null),
        ("eula_accepted_at", Value::Null),
        ("impact", serde_json::json!("normal")),
        ("reboot_behavior", serde_json::json!("never_reboots")),
        ("reboot_required", serde_json::json!(false)),
        ("deadline", Value::Null),
        ("bundled_update_ids", serde_json::json!([])),
        ("superseded_update_ids", serde_json::json!([])),
        ("superseded_by", serde_json::json!([])),
    ] {
        assert_eq!(font[key], value, "{key}: {font:#}");
    }
    assert!(font["max_download_size"].as_u64().unwrap() > 0);
    assert_eq!(font["max_download_size"], font["payload_size"]);
    assert!(!font["description"].as_str().unwrap().is_empty());
    let hello = find(&report, "updates", "Hello Tools 1.0");
    assert_eq!(
        hello["superseded_update_ids"],
        serde_json::json!([HELLO_OLD_ID])
    );
    let old = find(&report, "updates", "Hello Tools 0.9");
    assert_eq!(old["superseded_by"], serde_json::json!([HELLO_ID]));
    assert_eq!(old["status"], "-D--U----S");
    // A bundle, once it applies: its parts and their sizes.
    agent.run(&["install", "KB5000001"]);
    let (_, report) = agent.json(&["search"]);
    let extras = find(&report, "updates", "Hello extras (optional bundle)");
    assert_eq!(
        extras["bundled_update_ids"],
        serde_json::json!([
            "2c0c0a12-1111-4a4a-8b8b-000000000012",
            "4a4b0c13-1111-4a4a-8b8b-000000000013"
        ])
    );
    assert_eq!(extras["status"], "-D--U-OB--");
    assert_eq!(extras["browse_only"], true);
    assert!(
        extras["max_download_size"].as_u64().unwrap() > extras["payload_size"].as_u64().unwrap()
    );
}

#[test]
fn criteria_are_printed_canonically_and_errors_exit_64_with_the_position() {
    let agent = Agent::new(example_catalog());
    let (code, report) = agent.json(&["search", "isinstalled=0 AND (type='driver')"]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["criteria"], "IsInstalled = 0 and Type = 'Driver'");
    assert_eq!(titles(&report), ["Demo controller firmware 3.2"]);
    let (_, report) = agent.json(&["search", "BrowseOnly = 1 or Type = 'Driver'"]);
    assert_eq!(report["criteria"], "(BrowseOnly = 1) or (Type = 'Driver')");

    let out = agent.run(&["search", "IsInstalled = 0 and Type = 1"]);
    assert_eq!(out.code, 64, "{out:?}");
    assert!(
        out.stderr
            .contains("wua: error: invalid search criteria at position 27"),
        "{out:?}"
    );
    assert!(out.stderr.contains("WU_E_INVALID_CRITERIA"), "{out:?}");
    assert!(out.stdout.is_empty());
    let (code, err) = agent.json(&["search", "(IsInstalled = 0 or IsHidden = 0)"]);
    assert_eq!(code, 64);
    assert_eq!(err["error"]["hresult"]["name"], "WU_E_INVALID_CRITERIA");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at position"),
        "{err:#}"
    );
    // The same for install's --criteria, before anything is installed.
    let out = agent.run(&["install", "--criteria", "Nonsense = 1"]);
    assert_eq!(out.code, 64, "{out:?}");
    assert!(out.stderr.contains("position 0"), "{out:?}");
    assert!(fs::read_dir(agent.root()).unwrap().next().is_none());
}

#[test]
fn a_bad_regular_expression_exits_64_and_points_at_the_error() {
    let agent = Agent::new(example_catalog());
    let out = agent.run(&["search", "--title", "hello("]);
    assert_eq!(out.code, 64, "{out:?}");
    assert!(
        out.stderr
            .contains("--title \"hello(\" is not a valid regular expression"),
        "{out:?}"
    );
    assert!(out.stderr.contains("unclosed group"), "{out:?}");
    // The regex crate marks the position with a caret under the pattern.
    assert!(out.stderr.contains("\n         ^"), "{out:?}");
    let (code, err) = agent.json(&["search", "--not-title", "[a-"]);
    assert_eq!(code, 64);
    assert_eq!(err["error"]["hresult"], Value::Null);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("--not-title \"[a-\" is not a valid regular expression")
    );
}

#[test]
fn kb_filters_select_and_leave_out_by_kb_article() {
    let agent = Agent::new(example_catalog());
    assert_eq!(search(&agent, &["--kb", "5000001"]), ["Hello Tools 1.0"]);
    assert_eq!(
        search(&agent, &["--kb", "KB5000002", "--kb", "kb5000004"]),
        ["Hello Tools configuration update", "Demo kernel refresh"]
    );
    let without = search(&agent, &["--not-kb", "5000001", "--not-kb", "KB5000008"]);
    assert_eq!(without, DEFAULT_EIGHT[1..7]);
    // A KB the criteria left out is not brought back by the filter.
    assert!(search(&agent, &["--kb", "4999999"]).is_empty());
    let out = agent.run(&["search", "--kb", "KBx1"]);
    assert_eq!(out.code, 64, "{out:?}");
    assert!(out.stderr.contains("is not a KB number"), "{out:?}");
}

#[test]
fn title_filters_are_case_insensitive_regular_expressions() {
    let agent = Agent::new(example_catalog());
    assert_eq!(
        search(&agent, &["--title", "^HELLO"]),
        ["Hello Tools 1.0", "Hello Tools configuration update"]
    );
    assert_eq!(
        search(&agent, &["--title", "hello", "--not-title", "config"]),
        ["Hello Tools 1.0"]
    );
    assert_eq!(
        search(&agent, &["--not-title", "hello|demo|toolkit"]),
        [
            "Monitoring agent 0.9 (fails to install)",
            "Security baseline 2026-11"
        ]
    );
}

#[test]
fn category_filters_take_names_or_ids() {
    let agent = Agent::new(example_catalog());
    assert_eq!(
        search(&agent, &["--category", "security UPDATES"]),
        ["Demo kernel refresh", "Security baseline 2026-11"]
    );
    assert_eq!(
        search(&agent, &["--category", DRIVERS]),
        ["Demo controller firmware 3.2"]
    );
    assert_eq!(
        search(&agent, &["--not-category", "tools"]),
        [
            "Demo kernel refresh",
            "Security baseline 2026-11",
            "Demo controller firmware 3.2"
        ]
    );
    assert_eq!(
        search(&agent, &["--category", "drivers", "--category", SECURITY]).len(),
        3
    );
    // A name no update has is most likely a typo: said on stderr, with the names there are.
    let out = agent.run(&["search", "--category", "Tols"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains(
            "no catalog update is in a category named \"Tols\" (the catalog's categories: Tools, Security Updates, Drivers)"
        ),
        "{out:?}"
    );
    assert!(out.stdout.contains("No updates found"), "{out:?}");
}

#[test]
fn severity_filters_match_msrc_severity() {
    let fixtures = tempfile::tempdir().unwrap();
    let agent = Agent::new(fixture(fixtures.path()));
    assert_eq!(
        search(&agent, &["--severity", "critical"]),
        ["Alpha tool 2.0"]
    );
    assert_eq!(
        search(&agent, &["--severity", "Important", "--severity", "LOW"]),
        ["Beta driver", "Gamma baseline"]
    );
    assert_eq!(
        search(&agent, &["--severity", "unspecified"]),
        ["Delta with deadline"]
    );
    assert_eq!(
        search(
            &agent,
            &["--not-severity", "unspecified", "--not-severity", "low"]
        ),
        ["Alpha tool 2.0", "Gamma baseline"]
    );
    let out = agent.run(&["search", "--severity", "severe"]);
    assert_eq!(out.code, 64, "{out:?}");
    assert!(out.stderr.contains("possible values"), "{out:?}");
}

#[test]
fn update_id_filters_match_full_ids() {
    let agent = Agent::new(example_catalog());
    assert_eq!(
        search(&agent, &["--update-id", FONT_ID]),
        ["Demo Sans font"]
    );
    let rest = search(&agent, &["--not-update-id", FONT_ID]);
    assert_eq!(rest.len(), 7);
    assert!(!rest.contains(&"Demo Sans font".to_string()));
    let out = agent.run(&["search", "--update-id", "e1f2"]);
    assert_eq!(out.code, 64, "a prefix is not an id: {out:?}");
}

#[test]
fn max_size_filter_takes_binary_suffixes() {
    let fixtures = tempfile::tempdir().unwrap();
    let agent = Agent::new(fixture(fixtures.path()));
    let all = search(&agent, &[]);
    assert_eq!(
        all,
        [
            "Alpha tool 2.0",
            "Beta driver",
            "Gamma baseline",
            "Delta with deadline"
        ]
    );
    let (_, report) = agent.json(&["search"]);
    let alpha = find(&report, "updates", "Alpha tool 2.0")["max_download_size"]
        .as_u64()
        .unwrap();
    assert!(alpha > 20 * 1024, "{alpha}");
    assert_eq!(search(&agent, &["--max-size", "10K"]), all[1..]);
    assert_eq!(search(&agent, &["--max-size", "10kib"]), all[1..]);
    assert_eq!(search(&agent, &["--max-size", "1MB"]), all);
    assert_eq!(
        search(&agent, &["--max-size", &alpha.to_string()]),
        all,
        "the limit is inclusive"
    );
    assert_eq!(
        search(&agent, &["--max-size", &(alpha - 1).to_string()]),
        all[1..]
    );
    assert!(search(&agent, &["--max-size", "0"]).is_empty());
    let out = agent.run(&["search", "--max-size", "10 parsecs"]);
    assert_eq!(out.code, 64, "{out:?}");
    assert!(out.stderr.contains("is not a size"), "{out:?}");
    // The size in the table is short and binary.
    let out = agent.run(&["search", "--kb", "7000001"]);
    assert!(
        out.stdout.contains("  24KB  Alpha tool 2.0"),
        "{}",
        out.stdout
    );
}

#[test]
fn include_superseded_returns_superseded_updates() {
    let agent = Agent::new(example_catalog());
    assert!(!search(&agent, &[]).contains(&"Hello Tools 0.9".to_string()));
    let with = search(&agent, &["--include-superseded"]);
    assert!(with.contains(&"Hello Tools 0.9".to_string()), "{with:?}");
    let out = agent.run(&["search", "--include-superseded", "--kb", "4999999"]);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("-D--U----S ") && l.ends_with("Hello Tools 0.9")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("superseded updates included"),
        "{}",
        out.stdout
    );
}

/// The reason line printed under an update's line by `--explain`.
fn explained(stdout: &str, title: &str) -> (String, String) {
    let mut lines = stdout.lines();
    while let Some(line) = lines.next() {
        if line.ends_with(&format!("  {title}")) {
            let verdict = line[..8].to_string();
            let reason = lines.next().unwrap().trim().to_string();
            return (verdict, reason);
        }
    }
    panic!("{title} not explained:\n{stdout}");
}

#[test]
fn explain_names_the_deciding_criterion_rule_or_filter_for_every_update() {
    let agent = Agent::new(example_catalog());
    let out = agent.run(&["search", "--explain", "--kb", "5000001", "--kb", "5000010"]);
    assert_eq!(out.code, 0, "{out:?}");
    let text = &out.stdout;
    assert!(
        text.starts_with(
            "Criteria: IsInstalled = 0 and IsHidden = 0\nFilters:  --kb 5000001 --kb 5000010\n"
        ),
        "{text}"
    );
    assert_eq!(
        explained(text, "Hello Tools 1.0"),
        (
            "selected".into(),
            "matches IsInstalled = 0 and IsHidden = 0; applies everywhere (no is_installable rule)"
                .into()
        )
    );
    assert_eq!(
        explained(text, "Hello Tools configuration update"),
        (
            "left out".into(),
            "by --kb 5000001 --kb 5000010: its KB articles are 5000002".into()
        )
    );
    let (verdict, reason) = explained(text, "Hello Tools 0.9");
    assert_eq!(verdict, "left out");
    assert_eq!(
        reason,
        format!(
            "superseded by \"Hello Tools 1.0\" ({HELLO_ID}), which the criteria select too (--include-superseded keeps it)"
        )
    );
    let (verdict, reason) = explained(text, "Demo OS 2 settings migration");
    assert_eq!(verdict, "left out");
    assert!(
        reason.starts_with("does not apply to this machine: os_release ID = demo-os:"),
        "{reason}"
    );
    let (_, reason) = explained(text, "Hello extras (optional bundle)");
    assert_eq!(
        reason,
        format!("does not apply to this machine: update_installed {HELLO_ID}: not installed")
    );
    let (verdict, reason) = explained(text, "Hello shell completions");
    assert_eq!(verdict, "left out");
    assert!(
        reason.starts_with(&format!(
            "part of the bundle \"Hello extras (optional bundle)\" ({EXTRAS_ID})"
        )),
        "{reason}"
    );
    // Every catalog update, and a summary.
    assert_eq!(text.matches("\nselected  ").count(), 1, "{text}");
    assert_eq!(text.matches("\nleft out  ").count(), 12, "{text}");
    assert!(
        text.contains(
            "1 of 13 catalog updates selected; left out: 2 not applicable, 1 superseded, 2 parts of bundles, 7 by the filters."
        ),
        "{text}"
    );

    // The criteria: the first unmet criterion of each AND-group, and what the update has.
    let out = agent.run(&["search", "--explain", "IsInstalled = 1"]);
    assert_eq!(
        explained(&out.stdout, "Demo Sans font").1,
        "by the criteria: IsInstalled = 1: it is not installed: not installed"
    );
    let out = agent.run(&["search", "--explain", "Type = 'Driver' or BrowseOnly = 1"]);
    assert_eq!(
        explained(&out.stdout, "Hello Tools 1.0").1,
        "by the criteria, no AND-group matched: group 1: Type = 'Driver': it is Software; group 2: BrowseOnly = 1: it is not browse-only"
    );
    // Each --not-* filter names itself and what matched.
    let out = agent.run(&[
        "search",
        "--explain",
        "--not-title",
        "kernel",
        "--not-category",
        "drivers",
        "--not-kb",
        "5000005",
    ]);
    assert_eq!(
        explained(&out.stdout, "Demo kernel refresh").1,
        "by --not-title kernel: its title \"Demo kernel refresh\" matches"
    );
    assert_eq!(
        explained(&out.stdout, "Demo controller firmware 3.2").1,
        "by --not-category drivers: it is in category drivers"
    );
    assert_eq!(
        explained(&out.stdout, "Demo Sans font").1,
        "by --not-kb 5000005: it has KB article 5000005"
    );
}

#[test]
fn explain_in_json_gives_each_verdict_with_its_details() {
    let fixtures = tempfile::tempdir().unwrap();
    let agent = Agent::new(fixture(fixtures.path()));
    let (code, report) = agent.json(&[
        "search",
        "--explain",
        "Type = 'Software'",
        "--max-size",
        "10K",
        "--not-severity",
        "unspecified",
    ]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(titles(&report), ["Gamma baseline"]);
    let explanations = report["explanations"].as_array().unwrap();
    assert_eq!(explanations.len(), 7);
    let by_title = |t: &str| find(&report, "explanations", t);
    let gamma = by_title("Gamma baseline");
    assert_eq!(gamma["selected"], true);
    assert_eq!(gamma["verdict"], "selected");
    assert_eq!(gamma["matched"], "Type = 'Software'");
    let alpha = by_title("Alpha tool 2.0");
    assert_eq!(alpha["verdict"], "filtered_out");
    assert_eq!(alpha["selected"], false);
    assert_eq!(alpha["filter"], "--max-size 10K");
    assert!(
        alpha["reason"]
            .as_str()
            .unwrap()
            .starts_with("by --max-size 10K: its download size is 24KB ("),
        "{alpha:#}"
    );
    let beta = by_title("Beta driver");
    assert_eq!(beta["verdict"], "criteria_not_met");
    assert_eq!(
        beta["unmet"],
        serde_json::json!(["Type = 'Software': it is Driver"])
    );
    let delta = by_title("Delta with deadline");
    assert_eq!(delta["verdict"], "filtered_out");
    assert_eq!(delta["filter"], "--not-severity Unspecified");
    assert_eq!(
        delta["reason"],
        "by --not-severity Unspecified: it has no severity rating (Unspecified)"
    );
    let epsilon = by_title("Epsilon add-on");
    assert_eq!(epsilon["verdict"], "not_applicable");
    assert!(
        epsilon["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("update_installed {ALPHA}: not installed"))
    );
    let zeta = by_title("Zeta probe");
    assert_eq!(zeta["verdict"], "not_applicable");
    assert!(
        zeta["reason"]
            .as_str()
            .unwrap()
            .contains("file_exists etc/probe: not found"),
        "{zeta:#}"
    );
    let old = by_title("Alpha tool 1.0");
    assert_eq!(old["verdict"], "superseded");
    assert_eq!(
        old["superseded_by"],
        serde_json::json!({"update_id": ALPHA, "title": "Alpha tool 2.0", "installed": false})
    );
    // Once Alpha 2.0 is installed, it supersedes from there.
    agent.run(&["install", "KB7000001"]);
    let (_, report) = agent.json(&["search", "--explain"]);
    let old = find(&report, "explanations", "Alpha tool 1.0");
    assert_eq!(old["superseded_by"]["installed"], true);
    let epsilon = find(&report, "explanations", "Epsilon add-on");
    assert_eq!(epsilon["verdict"], "selected");
    // Bundles, in the example catalog.
    let agent = Agent::new(example_catalog());
    let (_, report) = agent.json(&["search", "--explain"]);
    let part = find(&report, "explanations", "Hello manual page");
    assert_eq!(part["verdict"], "bundled");
    assert_eq!(
        part["bundled_in"],
        serde_json::json!({"update_id": EXTRAS_ID, "title": "Hello extras (optional bundle)"})
    );
}

#[test]
fn search_warnings_go_to_stderr_and_into_json() {
    let fixtures = tempfile::tempdir().unwrap();
    let agent = Agent::new(fixture(fixtures.path()));
    // A symbolic-link loop where Zeta's rule looks: its state cannot be known.
    fs::create_dir_all(agent.root().join("etc")).unwrap();
    std::os::unix::fs::symlink("probe", agent.root().join("etc/probe")).unwrap();
    let out = agent.run(&["search"]);
    assert_eq!(out.code, 2, "succeeded with errors: {out:?}");
    assert!(
        out.stderr.contains("wua: warning: update ffffffff-0000-4000-8000-000000000006 (Zeta probe): is_installable could not be evaluated"),
        "{out:?}"
    );
    assert!(!table_titles(&out.stdout).contains(&"Zeta probe".to_string()));
    let (code, report) = agent.json(&["search"]);
    assert_eq!(code, 2);
    assert_eq!(report["result_code"], "succeeded_with_errors");
    let warning = &report["warnings"][0];
    assert_eq!(warning["context"], "general");
    assert!(
        warning["hresult"]["value"]
            .as_str()
            .unwrap()
            .starts_with("0x8")
    );
    assert!(
        warning["message"].as_str().unwrap().contains("Zeta probe"),
        "{warning:#}"
    );
}

#[test]
fn hide_and_unhide_persist_and_change_what_searches_find() {
    let agent = Agent::new(example_catalog());
    let out = agent.run(&["hide", "KB5000002"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout,
        "Hidden: \"Hello Tools configuration update\" (KB5000002)\n"
    );
    // Every later invocation sees it hidden: default searches leave it out…
    let found = search(&agent, &[]);
    assert!(!found.contains(&"Hello Tools configuration update".to_string()));
    assert_eq!(found.len(), 7);
    let (_, report) = agent.json(&["search", "--explain"]);
    assert_eq!(
        find(&report, "explanations", "Hello Tools configuration update")["reason"],
        "by the criteria: IsHidden = 0: it is hidden"
    );
    // …IsHidden = 1 finds it, flagged H…
    let (_, report) = agent.json(&["search", "IsHidden = 1"]);
    assert_eq!(titles(&report), ["Hello Tools configuration update"]);
    assert_eq!(report["updates"][0]["is_hidden"], true);
    assert_eq!(report["updates"][0]["status"], "-DH-U-----");
    // …list shows it…
    let (_, list) = agent.json(&["list"]);
    assert_eq!(
        find(&list, "updates", "Hello Tools configuration update")["is_hidden"],
        true
    );
    assert!(agent.run(&["list"]).stdout.contains("hidden"));
    // …hiding again says so, and install --all does not install it.
    let out = agent.run(&["hide", "KB5000002"]);
    assert_eq!(
        out.stdout,
        "Already hidden: \"Hello Tools configuration update\" (KB5000002)\n"
    );
    let (_, report) = agent.json(&["install", "--all", "--not-kb", "5000004"]);
    assert!(
        !report["updates"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["title"] == "Hello Tools configuration update"),
        "{report:#}"
    );

    // unhide with no names: everything hidden.
    let (code, report) = agent.json(&["unhide", "--all"]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["operation"], "unhide");
    assert_eq!(report["result_code"], "succeeded");
    assert_eq!(
        report["updates"][0]["title"],
        "Hello Tools configuration update"
    );
    assert_eq!(report["updates"][0]["result"], "unhidden");
    assert!(search(&agent, &["IsHidden = 1"]).is_empty());
    assert!(
        search(&agent, &["IsInstalled = 0"])
            .contains(&"Hello Tools configuration update".to_string())
    );
    let out = agent.run(&["unhide", "KB5000002"]);
    assert!(out.stdout.contains("Not hidden:"), "{out:?}");

    // Hide takes the selection flags: filters over the default search.
    let (code, report) = agent.json(&["hide", "--title", "^monitoring"]);
    assert_eq!(code, 0);
    assert_eq!(titles(&report), ["Monitoring agent 0.9 (fails to install)"]);
    assert_eq!(report["updates"][0]["result"], "hidden");
    let out = agent.run(&["hide"]);
    assert_eq!(out.code, 64, "nothing named hides nothing: {out:?}");
    assert!(out.stderr.contains("name the updates to hide"), "{out:?}");
}

#[test]
fn hiding_a_mandatory_or_deadline_update_is_refused_and_the_others_are_hidden() {
    let agent = Agent::new(example_catalog());
    let out = agent.run(&["hide", "KB5000007", "KB5000002"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains(
            "wua: cannot hide \"Security baseline 2026-11\" (9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a): it is mandatory"
        ),
        "{out:?}"
    );
    assert!(out.stderr.contains("WU_E_DS_DECLINENOTALLOWED"), "{out:?}");
    assert!(
        out.stdout
            .contains("Hidden: \"Hello Tools configuration update\" (KB5000002)"),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains("Result: SucceededWithErrors (1 hidden, 1 failed)"),
        "{out:?}"
    );
    assert_eq!(
        search(&agent, &["IsHidden = 1"]),
        ["Hello Tools configuration update"]
    );

    let fixtures = tempfile::tempdir().unwrap();
    let agent = Agent::new(fixture(fixtures.path()));
    let (code, report) = agent.json(&["hide", DEADLINE]);
    assert_eq!(code, 1, "all failed: {report:#}");
    assert_eq!(report["result_code"], "failed");
    let delta = &report["updates"][0];
    assert_eq!(delta["result"], "failed");
    assert_eq!(
        delta["error"]["hresult"]["name"],
        "WU_E_DS_DECLINENOTALLOWED"
    );
    assert!(
        delta["error"]["message"]
            .as_str()
            .unwrap()
            .contains("it has a deadline")
    );
    assert!(search(&agent, &["IsHidden = 1"]).is_empty());
}

#[test]
fn accept_eula_shows_the_terms_and_records_who_accepted_them() {
    let agent = Agent::new(example_catalog());
    let out = agent
        .cmd()
        .env("USER", "alice")
        .args(["accept-eula", "KB5000005", "KB5000001"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        stdout.starts_with(
            "Licence terms of \"Demo Sans font\" (KB5000005):\n    DEMO SANS LICENCE\n"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("Licence terms of \"Demo Sans font\" (KB5000005) accepted by alice on "),
        "{stdout}"
    );
    assert!(
        stdout.contains("\"Hello Tools 1.0\" (KB5000001) has no licence terms; nothing to accept."),
        "{stdout}"
    );
    // Another user later: already accepted, by alice, and the terms are not shown again.
    let out = agent
        .cmd()
        .env("USER", "bob")
        .args(["accept-eula", "KB5000005"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("already accepted by alice on "), "{stdout}");
    assert!(!stdout.contains("DEMO SANS LICENCE"), "{stdout}");
    let (code, report) = agent.json(&["accept-eula", "KB5000005"]);
    assert_eq!(code, 0);
    assert_eq!(report["operation"], "accept_eula");
    let font = &report["updates"][0];
    assert_eq!(font["result"], "already_accepted");
    assert_eq!(font["eula_accepted_by"], "alice");
    assert!(font["eula_accepted_at"].as_str().unwrap().ends_with('Z'));
    // Searches and installs see the acceptance.
    let (_, report) = agent.json(&["search", "--kb", "5000005"]);
    assert_eq!(report["updates"][0]["eula_accepted"], true);
    assert_eq!(report["updates"][0]["eula_accepted_by"], "alice");
    assert_eq!(report["updates"][0]["status"], "-D--U-----");
    let out = agent.run(&["install", "--all", "--kb", "5000005"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("Demo Sans font: Succeeded"), "{out:?}");
}

#[test]
fn accept_eula_is_silent_with_quiet_and_json() {
    let agent = Agent::new(example_catalog());
    let out = agent.run(&["--quiet", "accept-eula", "--all"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    let (_, report) = agent.json(&["search", "--kb", "5000005"]);
    assert_eq!(report["updates"][0]["eula_accepted"], true);
    // --all chose only the updates with terms.
    let fixtures = tempfile::tempdir().unwrap();
    let other = Agent::new(fixture(fixtures.path()));
    let (code, report) = other.json(&["accept-eula", "--all"]);
    assert_eq!(code, 0);
    assert_eq!(report["updates"], serde_json::json!([]));
    let out = agent.run(&["accept-eula", "--all"]);
    assert!(
        out.stdout
            .starts_with("Licence terms of \"Demo Sans font\" (KB5000005) already accepted by "),
        "{out:?}"
    );
    assert_eq!(out.stdout.lines().count(), 1, "{out:?}");
}

#[test]
fn install_takes_filters_and_criteria_and_skips_unaccepted_terms() {
    let agent = Agent::new(example_catalog());
    // Filters over the default search; the font's terms are not accepted: skipped, said why.
    let (code, report) = agent.json(&["install", "--title", "^hello|font"]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        titles(&report),
        ["Hello Tools 1.0", "Hello Tools configuration update"]
    );
    assert_eq!(report["skipped"][0]["title"], "Demo Sans font");
    assert_eq!(
        report["skipped"][0]["reason"],
        "licence terms not accepted (pass --accept-eula or --accept-all)"
    );
    // Criteria choose too.
    let (code, report) = agent.json(&["install", "--criteria", "Type = 'Driver'"]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(titles(&report), ["Demo controller firmware 3.2"]);
    let (code, report) = agent.json(&["install", "--criteria", "Type = 'Driver'"]);
    assert_eq!(code, 0);
    assert_eq!(
        report["skipped"][0]["reason"],
        "already installed (pass --force to reinstall)"
    );
    // A named update a filter rejects is reported, with the filter.
    let (code, report) = agent.json(&["install", "KB5000003", "KB5000004", "--not-kb", "5000004"]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(titles(&report), ["Toolkit 2.1 (scripted setup)"]);
    assert_eq!(report["skipped"][0]["title"], "Demo kernel refresh");
    assert_eq!(
        report["skipped"][0]["reason"],
        "left out by --not-kb 5000004: it has KB article 5000004"
    );
    // A search that finds nothing installs nothing.
    let out = agent.run(&["install", "--kb", "5000001"]);
    assert_eq!(out.code, 0);
    assert_eq!(out.stdout, "Nothing to install.\n");
}

#[test]
fn install_accept_all_installs_the_whole_selection_and_accepts_terms() {
    let agent = Agent::new(example_catalog());
    let (code, report) = agent.json(&["install", "--category", "Tools", "--accept-all"]);
    assert_eq!(code, 2, "the monitoring agent fails: {report:#}");
    assert_eq!(
        titles(&report),
        [
            "Hello Tools 1.0",
            "Hello Tools configuration update",
            "Toolkit 2.1 (scripted setup)",
            "Demo Sans font",
            "Monitoring agent 0.9 (fails to install)"
        ]
    );
    assert_eq!(report["skipped"], serde_json::json!([]));
    assert_eq!(report["updates"][3]["result_code"], "succeeded");
    assert_eq!(
        report["became_applicable"],
        serde_json::json!([{
            "update_id": EXTRAS_ID,
            "revision_number": 1,
            "title": "Hello extras (optional bundle)",
            "kb_article_ids": ["5000011"]
        }])
    );
    let (_, list) = agent.json(&["list"]);
    assert_eq!(
        find(&list, "updates", "Demo Sans font")["eula_accepted"],
        true
    );

    // --accept-all alone: everything the default search finds now.
    let (code, report) = agent.json(&["install", "--accept-all", "--not-kb", "5000006"]);
    assert_eq!(code, 3, "the kernel needs a restart: {report:#}");
    assert_eq!(
        titles(&report),
        [
            "Demo controller firmware 3.2",
            "Demo kernel refresh",
            "Security baseline 2026-11",
            "Hello extras (optional bundle)"
        ]
    );
    assert_eq!(report["became_applicable"], serde_json::json!([]));
    let (_, list) = agent.json(&["list", "--installed"]);
    let installed = titles(&list);
    assert!(
        installed.contains(&"Hello shell completions".to_string()),
        "{installed:?}"
    );
    assert!(installed.contains(&"Hello manual page".to_string()));
}

#[test]
fn names_find_hidden_superseded_and_inapplicable_updates() {
    let agent = Agent::new(example_catalog());
    agent.run(&["hide", "KB5000002"]);
    let (code, report) = agent.json(&["install", "KB5000002", "KB4999999"]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        titles(&report),
        ["Hello Tools configuration update", "Hello Tools 0.9"]
    );
    // An update that does not apply is passed on, and the installer refuses it.
    let out = agent.run(&["install", "KB5000010"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout
            .contains("Failed \"Demo OS 2 settings migration\": WU_E_NOT_APPLICABLE (0x80240017)"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("`wua search --explain` says why"),
        "{out:?}"
    );
}

#[test]
fn the_became_applicable_note_names_the_command_to_run() {
    let fixtures = tempfile::tempdir().unwrap();
    let agent = Agent::new(fixture(fixtures.path()));
    let out = agent.run(&["install", "KB7000002"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!out.stdout.contains("now that did not before"), "{out:?}");
    let out = agent.run(&["install", "KB7000001"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.ends_with(
            "1 update applies now that did not before:\n  KB7000005  Epsilon add-on\nInstall it with: wua install KB7000005\n"
        ),
        "{}",
        out.stdout
    );
    // …and the command works.
    let (code, report) = agent.json(&["install", "KB7000005"]);
    assert_eq!(code, 0);
    assert_eq!(titles(&report), ["Epsilon add-on"]);
    assert_eq!(report["became_applicable"], serde_json::json!([]));
    // A failed install makes nothing applicable, and uninstall reports carry no such field.
    let (_, report) = agent.json(&["uninstall", "KB7000005"]);
    assert!(report.get("became_applicable").is_none(), "{report:#}");
}

#[test]
fn uninstall_takes_filters_criteria_and_accept_all() {
    let agent = Agent::new(example_catalog());
    let out = agent.run(&[
        "install",
        "KB5000001",
        "KB5000002",
        "KB5000003",
        "KB5000007",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    // Filters over the installed updates.
    let (code, report) = agent.json(&["uninstall", "--title", "config"]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(titles(&report), ["Hello Tools configuration update"]);
    // Criteria keep the installed updates the search finds.
    let criteria = format!("CategoryIDs contains '{SECURITY}'");
    let (code, report) = agent.json(&["uninstall", "--criteria", &criteria]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(titles(&report), Vec::<String>::new());
    assert_eq!(report["skipped"][0]["title"], "Security baseline 2026-11");
    assert_eq!(report["skipped"][0]["reason"], "not uninstallable");
    // --accept-all alone: every installed update that can be uninstalled.
    let (code, report) = agent.json(&["uninstall", "--accept-all"]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        titles(&report),
        ["Hello Tools 1.0", "Toolkit 2.1 (scripted setup)"]
    );
    let (_, list) = agent.json(&["list", "--installed"]);
    assert_eq!(titles(&list), ["Security baseline 2026-11"]);
    let out = agent.run(&["uninstall"]);
    assert_eq!(out.code, 64, "{out:?}");
}

#[test]
fn uninstalling_a_bundle_removes_its_parts() {
    let agent = Agent::new(example_catalog());
    agent.run(&["install", "KB5000001"]);
    let before: Vec<_> = walk(&agent.root());
    let out = agent.run(&["install", "KB5000011"]);
    assert_eq!(out.code, 0, "{out:?}");
    let (_, list) = agent.json(&["list", "--installed"]);
    assert_eq!(
        titles(&list),
        [
            "Hello Tools 1.0",
            "Hello extras (optional bundle)",
            "Hello shell completions",
            "Hello manual page"
        ]
    );
    let (code, report) = agent.json(&["uninstall", "KB5000011"]);
    assert_eq!(code, 0, "{report:#}");
    let (_, list) = agent.json(&["list", "--installed"]);
    assert_eq!(titles(&list), ["Hello Tools 1.0"]);
    assert_eq!(walk(&agent.root()), before, "the parts' files are gone");
    // With --all the parts are not uninstalled twice: the bundle takes them.
    agent.run(&["install", "KB5000011"]);
    let (code, report) = agent.json(&["uninstall", "--all"]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        titles(&report),
        ["Hello Tools 1.0", "Hello extras (optional bundle)"]
    );
    assert_eq!(report["skipped"].as_array().unwrap().len(), 2);
    assert!(
        report["skipped"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("part of the bundle \"Hello extras (optional bundle)\"")
    );
    assert!(
        walk(&agent.root()).iter().all(|p| !p.contains("hello")),
        "{:?}",
        walk(&agent.root())
    );
}

fn walk(dir: &Path) -> Vec<String> {
    fn go(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            out.push(path.strip_prefix(base).unwrap().display().to_string());
            if path.is_dir() && !path.is_symlink() {
                go(base, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    go(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn list_shows_every_catalog_update_with_its_relations() {
    let agent = Agent::new(example_catalog());
    let (code, list) = agent.json(&["list"]);
    assert_eq!(code, 0);
    assert_eq!(list["updates"].as_array().unwrap().len(), 13);
    let old = find(&list, "updates", "Hello Tools 0.9");
    assert_eq!(old["superseded_by"], serde_json::json!([HELLO_ID]));
    assert_eq!(old["is_installable"], true);
    let migration = find(&list, "updates", "Demo OS 2 settings migration");
    assert_eq!(migration["is_installable"], false);
    let part = find(&list, "updates", "Hello shell completions");
    assert_eq!(part["bundled_in"], EXTRAS_ID);
    assert_eq!(part["browse_only"], true);
    let bundle = find(&list, "updates", "Hello extras (optional bundle)");
    assert_eq!(bundle["bundled_update_ids"].as_array().unwrap().len(), 2);
    assert_eq!(bundle["bundled_in"], Value::Null);
    // The fields of the first version are all still there.
    for key in [
        "update_id",
        "revision_number",
        "title",
        "kb_article_ids",
        "categories",
        "msrc_severity",
        "type",
        "handler",
        "is_installed",
        "is_downloaded",
        "is_mandatory",
        "is_uninstallable",
        "has_eula",
        "eula_accepted",
        "impact",
        "reboot_behavior",
        "reboot_required",
        "in_catalog",
    ] {
        assert!(bundle.get(key).is_some(), "{key} missing: {bundle:#}");
    }
    let text = agent.run(&["list"]).stdout;
    let line = |title: &str| {
        text.lines()
            .find(|l| l.contains(title))
            .unwrap()
            .to_string()
    };
    assert!(line("Hello Tools 0.9").ends_with("superseded by \"Hello Tools 1.0\""));
    assert!(line("Demo OS 2 settings migration").ends_with("does not apply"));
    assert!(
        line("Hello manual page").ends_with("part of \"Hello extras (optional bundle)\", optional")
    );
    assert!(line("Hello extras (optional bundle)").contains("does not apply, bundle of 2"));
}

#[test]
fn the_new_commands_are_in_completions_and_the_man_page() {
    let agent = Agent::new(example_catalog());
    let out = agent.run(&["completions", "bash"]);
    assert_eq!(out.code, 0);
    for word in [
        "search",
        "hide",
        "unhide",
        "accept-eula",
        "--not-kb",
        "--explain",
        "--accept-all",
        "--max-size",
    ] {
        assert!(out.stdout.contains(word), "{word} missing from completions");
    }
    let out = agent.run(&["completions", "fish"]);
    assert!(
        out.stdout.contains("critical") || out.stdout.contains("Critical"),
        "severities complete"
    );
    let out = agent.run(&["man"]);
    for word in ["search", "accept\\-eula", "unhide"] {
        assert!(
            out.stdout.contains(word),
            "{word} missing from the man page"
        );
    }
}
