//! Runs the demo binary on short settings in both modes: it must finish quickly, pass its own
//! self-check (exit code 0) and print the summary.

use std::path::PathBuf;
use std::process::Command;

/// A fresh scratch directory for one run (the demo writes its database in the current dir).
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gateway-smoke-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(name: &str, args: &[&str]) -> String {
    let dir = scratch(name);
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--seconds", "0.5", "--rate", "400", "--sensors", "4"])
        .args(args)
        .current_dir(&dir)
        .output()
        .expect("the gateway binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "gateway {args:?} failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("all checks passed"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
    stdout
}

#[test]
fn sqlite_mode_passes_its_self_check() {
    let out = run("sqlite", &["--db", "smoke.db", "--fail-rate", "0.2"]);
    assert!(out.contains("rows in the database"), "{out}");
    assert!(out.contains("one row per transaction"), "{out}");
}

#[test]
fn http_mode_passes_its_self_check_with_retries_and_dead_letters() {
    let out = run("http", &["--http", "--outage-ms", "150", "--dead-letters", "dead.jsonl"]);
    assert!(out.contains("unique readings stored by the collector"), "{out}");
    assert!(out.contains("one reading per request"), "{out}");
}

#[test]
fn help_and_bad_arguments() {
    let help = Command::new(env!("CARGO_BIN_EXE_gateway")).arg("--help").output().unwrap();
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--fail-rate"), "{help}");
    assert!(help.contains("--mqtt"), "{help}");
    let bad = Command::new(env!("CARGO_BIN_EXE_gateway")).arg("--nope").output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
