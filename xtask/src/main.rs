//! `cargo xtask <command>`: set-up and test orchestration for the workspace.
//!
//! - `test`: everything CI checks, installing what a fresh machine lacks (rustup targets, QEMU,
//!   defmt-print, Mosquitto). Ends with a `tests: N passed, M failed` line.
//! - `qemu [--arch NAME | --all] [--broken]`: build and run the QEMU firmware (thumbv7em,
//!   thumbv6m, riscv32imc), decoding its defmt logs.
//! - `boards`: build the STM32F411 and ESP32-C3 examples.
//! - `size [--check]`: flash and RAM of the batcher on the three MCU targets, beside embassy-sync's
//!   `Channel`; `--check` enforces the size budgets.
//! - `bench`: run the benchmarks against the peers and write the report.
//! - `soak [ITEMS]`: a long batch-tokio run that checks accounting and RSS (not in CI).
//! - `crash [--seed N] [--kills K]`: SIGKILL the gateway with `--store` at seeded moments,
//!   restart it, and check the sink against every reading it confirmed durable.

mod bench;
mod boards;
mod crash;
mod qemu;
mod size;
mod soak;
mod util;

use std::process::{Command, ExitCode};

use util::{Result, cargo, root};

/// The MCU targets batch-core and batch-embassy must build for.
const MCU_TARGETS: [&str; 3] = ["thumbv6m-none-eabi", "thumbv7em-none-eabihf", "riscv32imc-unknown-none-elf"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("qemu") => qemu::qemu(&args[1..]),
        Some("boards") => boards::boards(),
        Some("size") => size::size(&args[1..]),
        Some("bench") => bench::bench(&args[1..]),
        Some("soak") => soak::soak(&args[1..]),
        Some("crash") => crash::crash(&args[1..]),
        Some("help" | "--help" | "-h") | None => {
            println!("{HELP}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command `{other}`\n\n{HELP}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

const HELP: &str = "usage: cargo xtask <command>

commands:
  test      every check CI runs (installs missing rustup targets, QEMU, defmt-print, Mosquitto)
  qemu      build and run the QEMU firmware on mps2-an386 (thumbv7em); --arch thumbv6m|riscv32imc
            for another machine, --all for all three; --broken for the variant that must fail
  boards    build the STM32F411 and ESP32-C3 examples
  size      flash and RAM of the batcher and of embassy-sync's Channel on the three MCU targets
            (Markdown tables); --check fails when a size budget is exceeded
  bench     batch-tokio against its peers; writes docs/bench/ (--smoke: quick check, writes nothing)
  soak      long run of batch-tokio (10^8 items by default) checking accounting and RSS growth
  crash     kill the gateway (--store) with SIGKILL at seeded moments, restart it, and check that
            every reading it confirmed durable reached the sink (--seed N, --kills K)
  help      this text";

/// Counts what the test steps ran, for the closing summary line.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
    steps: Vec<(String, bool)>,
}

impl Tally {
    /// Runs one step; a failing step is recorded and the run goes on, so one report shows all.
    fn step(&mut self, name: &str, f: impl FnOnce(&mut Self) -> Result) {
        eprintln!("\n=== {name}");
        let ok = match f(self) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("xtask: step `{name}` failed: {e}");
                false
            }
        };
        self.steps.push((name.to_owned(), ok));
    }

    /// Runs `cargo test` style commands, echoing output and adding up their result lines.
    fn cargo_test(&mut self, cmd: &mut Command) -> Result {
        let out = util::run_tee(cmd)?;
        for line in out.lines() {
            // "test result: ok. 12 passed; 0 failed; ..."
            if let Some(rest) = line.trim().strip_prefix("test result: ") {
                let count = |key: &str| {
                    rest.split(';')
                        .find_map(|part| {
                            part.trim().strip_suffix(key).map(|n| {
                                n.trim().rsplit(' ').next().unwrap_or("0").parse::<u64>().unwrap_or(0)
                            })
                        })
                        .unwrap_or(0)
                };
                self.passed += count(" passed");
                self.failed += count(" failed");
            }
        }
        Ok(())
    }
}

fn test() -> Result {
    let root = root();
    let mut t = Tally::default();
    t.step("rustup targets", |_| add_targets(&MCU_TARGETS));
    t.step("cargo fmt --check", |_| util::run(cargo(&root).args(["fmt", "--all", "--check"])));
    t.step("clippy (all targets, -D warnings)", |_| {
        util::run(cargo(&root).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ]))
    });
    t.step("cargo test --workspace", |t| {
        t.cargo_test(cargo(&root).args(["test", "--workspace", "--locked"]))
    });
    t.step("batch-core with the store feature: tests and clippy", |t| {
        test_and_lint(t, &root, "batch-core", "store,alloc,uplink")
    });
    no_counters_steps(&mut t, &root);
    disk_store_steps(&mut t, &root);
    flash_store_steps(&mut t, &root);
    metrics_steps(&mut t, &root);
    t.step("cargo doc (warnings denied)", |_| {
        util::run(cargo(&root).env("RUSTDOCFLAGS", "-D warnings").args([
            "doc",
            "--workspace",
            "--no-deps",
            "--locked",
        ]))
    });
    mcu_steps(&mut t, &root);
    // MQTT: the demo starts its own Mosquitto on a free loopback port and stops it for 400 ms
    // half-way; the package is installed if missing. RAM holds 1,000 readings, so the outage's
    // backlog spills to the disk store (the demo checks it went through the store).
    let mqtt = &["--mqtt", "--outage-ms", "400", "--capacity", "1000"][..];
    for (mode, extra) in [("SQLite", &[][..]), ("HTTP", &["--http"][..]), ("MQTT (broker outage)", mqtt)] {
        t.step(&format!("gateway demo, {mode} mode (README command, short settings)"), |_| {
            if extra.contains(&"--mqtt") {
                util::ensure_installed("mosquitto", "mosquitto")?;
            }
            let dir = std::env::temp_dir().join(format!("batch-gateway-ci-{}", std::process::id()));
            std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
            let db = dir.join("gateway.db");
            util::run(
                cargo(&root)
                    .args(["run", "--release", "--locked", "-p", "gateway", "--bin", "gateway", "--"])
                    .args(["--seconds", "1", "--rate", "500", "--db"])
                    .arg(&db)
                    .args(extra),
            )
        });
    }
    t.step("crash test: the gateway with --store killed by SIGKILL 24 times (cargo xtask crash)", |_| {
        crash::crash(&[])
    });
    t.step("bench smoke (every implementation delivers every item; no timing)", |_| {
        bench::bench(&["--smoke".to_owned()])
    });
    let app = root.join("examples/telemetry-app");
    t.step("telemetry-app (shared firmware code) host tests, without and with the store", |t| {
        t.cargo_test(cargo(&app).args(["test", "--locked"]))?;
        t.cargo_test(cargo(&app).args(["test", "--locked", "--features", "store"]))
    });
    t.step("telemetry-app clippy for thumbv7em (+defmt, +defmt,store)", |_| {
        for features in ["defmt", "defmt,store"] {
            util::run(cargo(&app).args([
                "clippy",
                "--locked",
                "--target",
                "thumbv7em-none-eabihf",
                "--features",
                features,
                "--",
                "-D",
                "warnings",
            ]))?;
        }
        Ok(())
    });
    firmware_steps(&mut t);
    t.step("board examples (STM32F411, ESP32-C3)", |_| boards::boards());
    finish(&t)
}

/// `cargo test` and `cargo clippy --all-targets -D warnings` of one package with `features`.
fn test_and_lint(t: &mut Tally, root: &std::path::Path, package: &str, features: &str) -> Result {
    t.cargo_test(cargo(root).args(["test", "-p", package, "--locked", "--features", features]))?;
    util::run(cargo(root).args([
        "clippy",
        "-p",
        package,
        "--all-targets",
        "--locked",
        "--features",
        features,
        "--",
        "-D",
        "warnings",
    ]))
}

/// `cargo doc --no-deps` of one package with `features`, warnings denied.
fn doc_with(root: &std::path::Path, package: &str, features: &str) -> Result {
    util::run(cargo(root).env("RUSTDOCFLAGS", "-D warnings").args([
        "doc",
        "-p",
        package,
        "--no-deps",
        "--locked",
        "--features",
        features,
    ]))
}

/// batch-tokio's `DiskStore`: its tests (the process-kill crash test among them) and clippy with
/// the `disk-store` feature, and clippy on the store measurement binary.
fn disk_store_steps(t: &mut Tally, root: &std::path::Path) {
    t.step("batch-tokio with the disk-store feature: tests (crash test included) and clippy", |t| {
        test_and_lint(t, root, "batch-tokio", "disk-store")?;
        doc_with(root, "batch-tokio", "disk-store")?;
        // The disk store measurement (docs/bench/stores.md) builds and passes clippy; it is run
        // by hand: `cargo run --release -p batch-bench --features stores --bin stores`.
        util::run(cargo(root).args([
            "clippy",
            "-p",
            "batch-bench",
            "--bin",
            "stores",
            "--locked",
            "--features",
            "stores",
            "--",
            "-D",
            "warnings",
        ]))
    });
}

/// batch-core and batch-embassy as a firmware without the counters builds them (no default
/// features, so no `metrics`): clippy, and the core's unit tests (the scenario and model tests
/// read the counters; with them, `metrics()` checks the in-flight sum the build without them
/// uses).
fn no_counters_steps(t: &mut Tally, root: &std::path::Path) {
    t.step(
        "batch-core and batch-embassy without the counters (no default features): clippy, core unit tests",
        |t| {
            util::run(
                cargo(root).args(["clippy", "-p", "batch-core", "-p", "batch-embassy", "--locked"]).args([
                    "--no-default-features",
                    "--features",
                    "batch-core/alloc,flash-store,uplink",
                    "--",
                    "-D",
                    "warnings",
                ]),
            )?;
            t.cargo_test(cargo(root).args(["test", "-p", "batch-core", "--locked", "--lib"]).args([
                "--no-default-features",
                "--features",
                "store,alloc,uplink",
            ]))
        },
    );
}

/// batch-tokio's `metrics` feature (`MetricsExporter`): its tests (every exported value equals
/// `metrics()`), clippy, and its docs with warnings denied. The gateway's `/metrics` test runs in
/// `cargo test --workspace`.
fn metrics_steps(t: &mut Tally, root: &std::path::Path) {
    t.step("batch-tokio with the metrics feature: tests, clippy and docs", |t| {
        test_and_lint(t, root, "batch-tokio", "metrics")?;
        doc_with(root, "batch-tokio", "metrics")
    });
}

/// The flash store of batch-embassy: host tests (power cut at every write and erase, fuzzed
/// recovery) and clippy with the feature.
fn flash_store_steps(t: &mut Tally, root: &std::path::Path) {
    t.step("batch-embassy with the flash-store feature: tests (power cuts, fuzzing) and clippy", |t| {
        test_and_lint(t, root, "batch-embassy", "flash-store,uplink")
    });
}

/// batch-core and batch-embassy build for every MCU target, with and without their features.
fn mcu_steps(t: &mut Tally, root: &std::path::Path) {
    for target in MCU_TARGETS {
        for features in [None, Some("defmt"), Some("store"), Some("store,defmt")] {
            let name =
                format!("batch-core for {target}{}", features.map_or(String::new(), |f| format!(" +{f}")));
            t.step(&name, |_| {
                let mut cmd = cargo(root);
                // Without the default `metrics` (no counters), as a firmware may build it.
                cmd.args([
                    "build",
                    "-p",
                    "batch-core",
                    "--locked",
                    "--target",
                    target,
                    "--no-default-features",
                ]);
                if let Some(f) = features {
                    cmd.args(["--features", f]);
                }
                util::run(&mut cmd)
            });
        }
    }
    t.step("batch-embassy for MCU targets", |_| {
        for target in MCU_TARGETS {
            for features in [
                None,
                Some("defmt"),
                Some("flash-store"),
                Some("flash-store,defmt"),
                Some("flash-store,uplink"),
            ] {
                let mut cmd = cargo(root);
                cmd.args(["build", "-p", "batch-embassy", "--locked", "--target", target]);
                if let Some(f) = features {
                    cmd.args(["--features", f]);
                }
                util::run(&mut cmd)?;
            }
            // Without the default `metrics` (no counters), as `size-batcher` builds it.
            util::run(
                cargo(root).args(["build", "-p", "batch-embassy", "--locked", "--target", target]).args([
                    "--no-default-features",
                    "--features",
                    "defmt,flash-store,uplink",
                ]),
            )?;
        }
        Ok(())
    });
}

/// The firmware checks: lints, a QEMU run per architecture (and its broken variant, which must
/// fail), and the size budgets.
fn firmware_steps(t: &mut Tally) {
    t.step("firmware-qemu clippy for the three MCU targets (-D warnings)", |_| {
        for machine in &qemu::MACHINES {
            util::run(
                // `app`: the `telemetry` binary too (it needs the feature).
                qemu::firmware_cargo("clippy", machine.target).args([
                    "--features",
                    "app",
                    "--bins",
                    "--lib",
                    "--",
                    "-D",
                    "warnings",
                ]),
            )?;
        }
        Ok(())
    });
    for machine in &qemu::MACHINES {
        t.step(&format!("QEMU {} on {} (self-check passes)", machine.target, machine.board), |_| {
            qemu::run_passing(machine, false)
        });
        t.step(&format!("QEMU {}, broken variant (self-check must fail)", machine.target), |_| {
            qemu::run_broken_must_fail(machine)
        });
    }
    t.step("size budgets (batcher .text and state on three targets)", |_| {
        size::size(&["--check".to_owned()])
    });
}

fn add_targets(targets: &[&str]) -> Result {
    let installed = util::output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    let missing: Vec<&str> =
        targets.iter().copied().filter(|t| !installed.lines().any(|l| l.trim() == *t)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    util::run(Command::new("rustup").args(["target", "add"]).args(&missing))
}

fn finish(t: &Tally) -> Result {
    eprintln!("\n=== summary");
    for (name, ok) in &t.steps {
        eprintln!("  {} {name}", if *ok { "ok  " } else { "FAIL" });
    }
    let failed_steps = t.steps.iter().filter(|(_, ok)| !ok).count() as u64;
    // The closing line CI reads: tests run by cargo test, plus every other step as one check.
    let passed = t.passed + (t.steps.len() as u64 - failed_steps);
    println!("tests: {passed} passed, {} failed", t.failed + failed_steps);
    if failed_steps == 0 && t.failed == 0 { Ok(()) } else { Err(format!("{failed_steps} step(s) failed")) }
}
