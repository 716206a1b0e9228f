//! What the end-to-end tests share: a temporary agent (root, state, boot id) driving the real
//! `wua` binary.

// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use assert_cmd::cargo::CommandCargoExt;
use serde_json::Value;
use tempfile::TempDir;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn example_catalog() -> PathBuf {
    repo().join("examples/catalog")
}

/// A temporary agent: root, state and boot id of its own.
pub struct Agent {
    pub dir: TempDir,
    pub catalog: PathBuf,
    /// A state directory elsewhere than the default one inside `dir`.
    pub state_override: Option<PathBuf>,
}

impl Agent {
    pub fn new(catalog: PathBuf) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("boot_id"), "boot-1\n").unwrap();
        fs::create_dir(dir.path().join("root")).unwrap();
        Agent {
            dir,
            catalog,
            state_override: None,
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn state(&self) -> PathBuf {
        self.state_override
            .clone()
            .unwrap_or_else(|| self.dir.path().join("state"))
    }

    /// Simulates a restart: a new boot id.
    pub fn reboot(&self, n: u32) {
        fs::write(self.dir.path().join("boot_id"), format!("boot-{n}\n")).unwrap();
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("wua").unwrap();
        c.arg("--catalog")
            .arg(&self.catalog)
            .arg("--root")
            .arg(self.root())
            .arg("--state-dir")
            .arg(self.state())
            .arg("--boot-id-file")
            .arg(self.dir.path().join("boot_id"))
            .env("HOME", self.dir.path())
            .env_remove("WUA_LOG")
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let out = self.cmd().args(args).output().unwrap();
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn json(&self, args: &[&str]) -> (i32, Value) {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        let value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", out.stdout, out.stderr));
        (out.code, value)
    }
}

#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}
