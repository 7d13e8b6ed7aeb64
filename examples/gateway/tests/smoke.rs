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

/// The number after `label` in the summary (thousands separators removed).
fn figure(out: &str, label: &str) -> u64 {
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} in {out}"));
    let rest = line.trim_start()[label.len()..].trim_start();
    let digits: String =
        rest.chars().take_while(|c| c.is_ascii_digit() || *c == ',').filter(char::is_ascii_digit).collect();
    digits.parse().unwrap_or_else(|_| panic!("no number in {line:?}"))
}

#[test]
fn http_mode_passes_its_self_check_with_retries_and_dead_letters() {
    // A garbled reading in ten and a 400 ms outage: per-item rejections, retries, expiry.
    let out = run(
        "http",
        &["--http", "--outage-ms", "400", "--malformed-rate", "0.1", "--dead-letters", "dead.jsonl"],
    );
    assert!(out.contains("unique readings stored by the collector"), "{out}");
    assert!(out.contains("one reading per request"), "{out}");
    // delivered, rejected, dead-lettered and expired apart, adding up to accepted (the
    // self-check, asserted by `run`, checks the same against each reading's key).
    let [produced, delivered, rejected, dead, expired, refused] =
        ["produced", "delivered", "rejected by the sink", "dead-lettered", "expired", "refused at add"]
            .map(|label| figure(&out, label));
    assert_eq!(figure(&out, "accepted"), produced - refused, "{out}");
    assert_eq!(delivered + rejected + dead + expired + refused, produced, "{out}");
    assert!(rejected > 0 && expired + dead > 0, "{out}");
    assert!(out.contains("readings sent again alone (per-item answers)"), "{out}");
    let garbled = format!("readings rejected by the sink ({rejected}) = the garbled ones that reached it");
    assert!(out.contains(&garbled), "{out}");
    assert!(out.contains("no temperature value") && out.contains("temperature out of range"), "{out}");
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

/// `--store DIR` twice on one directory: each run prints a `durable SENSOR SEQ` line per
/// confirmed reading (stdout is a pipe here), numbers its readings from `run x 10^9`, and the
/// kept sink (read back with `--dump-db`) holds every confirmed reading of both runs.
#[test]
fn store_mode_confirms_readings_and_keeps_the_sink_across_runs() {
    let dir = scratch("store");
    let store = dir.join("store");
    let gateway = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gateway"));
        cmd.args(["--seconds", "0.3", "--rate", "200", "--sensors", "2", "--metrics-addr", "off", "--store"])
            .arg(&store);
        cmd
    };
    let mut durable = Vec::new();
    for run in 0..2u64 {
        let out = gateway().output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "run {run}: {}\n{stdout}", out.status);
        assert!(stdout.contains("all checks passed"), "{stdout}");
        assert!(stdout.contains(&format!("run {run} of this directory")), "{stdout}");
        let lines: Vec<(u32, u64)> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("durable "))
            .map(|l| {
                let (sensor, seq) = l.split_once(' ').unwrap();
                (sensor.parse().unwrap(), seq.parse().unwrap())
            })
            .collect();
        assert!(!lines.is_empty(), "{stdout}");
        assert!(lines.iter().all(|&(_, seq)| seq / 1_000_000_000 == run), "{lines:?}");
        durable.extend(lines);
    }
    let dump = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("--dump-db")
        .arg(store.join("gateway.db"))
        .output()
        .unwrap();
    assert!(dump.status.success());
    let rows: Vec<(u32, u64)> = String::from_utf8_lossy(&dump.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!((f[0], f.len()), ("row", 7), "{l}");
            (f[2].parse().unwrap(), f[3].parse().unwrap())
        })
        .collect();
    for key in &durable {
        assert!(rows.contains(key), "confirmed reading {key:?} is not in the sink");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
