//! Helpers shared by the command-line tests: run the built `hashsink`, read JSON numbers.
#![allow(dead_code, reason = "each test binary uses its own subset")]

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the built `hashsink` from the repository root.
pub fn hashsink(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hashsink"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("run hashsink")
}

/// The number at `path` in `v`, or a panic that names the path.
pub fn num(v: &Value, path: &[&str]) -> f64 {
    let mut cur = v;
    for key in path {
        cur = &cur[key];
    }
    cur.as_f64()
        .unwrap_or_else(|| panic!("{path:?} is not a number: {cur}"))
}
