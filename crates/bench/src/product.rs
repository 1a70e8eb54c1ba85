//! The product binary that the process benchmarks drive (the daemon, the emulator): `hashsink`,
//! built beside this one, so that what is measured is what ships.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Result, anyhow};

/// The `hashsink` binary of this build profile. Run through cargo (`cargo hashsink-bench`), it is
/// built first (a no-op when it is up to date); otherwise it must be there already.
pub fn hashsink() -> Result<PathBuf> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND.get_or_init(locate).clone().map_err(|e| anyhow!(e))
}

fn locate() -> Result<PathBuf, String> {
    let here = std::env::current_exe().map_err(|e| format!("where am I: {e}"))?;
    let exe = here.with_file_name("hashsink");
    let release = !cfg!(debug_assertions);
    if let Ok(cargo) = std::env::var("CARGO") {
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "-p", "hashsink", "--bin", "hashsink"]);
        if release {
            build.arg("--release");
        }
        let status = build
            .status()
            .map_err(|e| format!("cargo build -p hashsink: {e}"))?;
        if !status.success() {
            return Err("cargo build -p hashsink failed (see above)".into());
        }
    }
    if exe.is_file() {
        Ok(exe)
    } else {
        let flag = if release { " --release" } else { "" };
        Err(format!(
            "{} is missing: build it with `cargo build{flag} -p hashsink`",
            exe.display()
        ))
    }
}

/// Starts `hashsink emulate ARGS` in a process of its own and waits until its miners listen.
pub fn emulate(args: &[&str]) -> Result<std::process::Child> {
    use std::io::{BufRead, BufReader};
    let mut emulator = Command::new(hashsink()?)
        .arg("emulate")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .map_err(|e| anyhow!("start the emulator: {e}"))?;
    let stdout = emulator
        .stdout
        .take()
        .ok_or_else(|| anyhow!("the emulator's output"))?;
    for line in BufReader::new(stdout).lines() {
        if line?.contains("Ctrl-C") {
            return Ok(emulator);
        }
    }
    Err(anyhow!("the emulator did not start"))
}
