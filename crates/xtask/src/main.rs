//! `cargo xtask`: the project's developer tasks, apart from the product (rust-analyzer's
//! pattern). `cargo xtask test` is the README's test command: `cargo test --workspace
//! --no-fail-fast` (every test binary runs, so that the closing count covers the whole suite even
//! when one fails; any further arguments passed on), then which tests did not run because a peer
//! is missing (a broker, a Python package, a browser, a database: each test that skips notes it
//! through `hashsink_units::note_skipped_peer`), by peer with how to install it, and one closing
//! line that counts them apart from the tests that passed.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

const USAGE: &str = "usage: cargo xtask test [ARGS for cargo test]";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("test") => match test(args.collect()) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("xtask: {e}");
                ExitCode::from(2)
            }
        },
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// Counts from libtest's `test result:` lines.
#[derive(Debug, Default, PartialEq)]
struct Counts {
    passed: u64,
    failed: u64,
}

impl Counts {
    /// Adds a `test result: ok. 7 passed; 0 failed; ...` line; other lines change nothing.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split([';', '.']) {
            let mut words = part.split_whitespace();
            if let (Some(n), Some(what)) = (words.next(), words.next())
                && let Ok(n) = n.parse::<u64>()
            {
                match what {
                    "passed" => self.passed += n,
                    "failed" => self.failed += n,
                    _ => {}
                }
            }
        }
    }
}

fn test(args: Vec<String>) -> Result<ExitCode, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let skipped_dir = root
        .join("target/skipped-peers")
        .join(std::process::id().to_string());
    let _ = std::fs::remove_dir_all(&skipped_dir);
    std::fs::create_dir_all(&skipped_dir)
        .map_err(|e| format!("cannot make {}: {e}", skipped_dir.display()))?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let started = std::time::Instant::now();
    let mut child = Command::new(cargo)
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(&args)
        .current_dir(&root)
        .env("HASHSINK_SKIPPED_DIR", &skipped_dir)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run cargo test: {e}"))?;
    let mut counts = Counts::default();
    let stdout = child.stdout.take().ok_or("cargo test's output")?;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        println!("{line}");
        counts.add_line(&line);
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for cargo test: {e}"))?;
    let skipped = skipped_by_peer(&skipped_dir);
    let skipped_tests = skipped_tests(&skipped_dir);
    let _ = std::fs::remove_dir_all(&skipped_dir);
    if skipped.is_empty() {
        println!("\nno test was skipped for a missing peer");
    } else {
        println!(
            "\nskipped for a missing peer (these tests returned at once and count as passed above):"
        );
        for (peer, (n, install)) in &skipped {
            println!("  {peer}: {n} test(s); {install}");
        }
    }
    println!("cargo test took {} s", started.elapsed().as_secs());
    println!(
        "xtask: {} passed, {} failed, {skipped_tests} skipped",
        counts.passed.saturating_sub(skipped_tests),
        counts.failed
    );
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Tests that skipped, each once however many peers it missed (a note is
/// `PEER--TEST--PID`).
fn skipped_tests(dir: &std::path::Path) -> u64 {
    let tests: std::collections::BTreeSet<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.split_once("--").map(|(_, test)| test.to_string())
        })
        .collect();
    tests.len() as u64
}

/// The notes the skipping tests left: peer -> (tests, how to install it).
fn skipped_by_peer(dir: &std::path::Path) -> BTreeMap<String, (u64, String)> {
    let mut by_peer: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let peer = name.split("--").next().unwrap_or(&name).to_string();
        let install = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let slot = by_peer.entry(peer).or_insert((0, install));
        slot.0 += 1;
    }
    by_peer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_result_lines_are_summed_and_other_lines_ignored() {
        let mut c = Counts::default();
        c.add_line("test result: ok. 7 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.17s");
        c.add_line("test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 5 filtered out; finished in 1.00s");
        c.add_line("running 7 tests");
        c.add_line("test a_test_named_7_passed ... ok");
        assert_eq!(
            c,
            Counts {
                passed: 10,
                failed: 1
            }
        );
    }

    #[test]
    fn notes_are_grouped_by_peer() {
        let dir = std::env::temp_dir().join(format!("xtask-notes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (file, install) in [
            ("mosquitto--a--1", "apt-get install mosquitto"),
            ("mosquitto--b--1", "apt-get install mosquitto"),
            ("pymodbus--c--2", "pip install pymodbus"),
        ] {
            std::fs::write(dir.join(file), install).unwrap();
        }
        std::fs::write(dir.join("pymodbus--a--1"), "pip install pymodbus").unwrap();
        let by_peer = skipped_by_peer(&dir);
        let tests = skipped_tests(&dir);
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(tests, 3, "test a missed two peers and counts once");
        assert_eq!(
            by_peer["mosquitto"],
            (2, "apt-get install mosquitto".into())
        );
        assert_eq!(by_peer["pymodbus"], (2, "pip install pymodbus".into()));
    }
}
