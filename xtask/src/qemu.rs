//! `qemu`: builds `examples/firmware-qemu`, boots it on QEMU's mps2-an386 (Cortex-M4F) machine
//! and decodes its defmt logs.
//!
//! The firmware reports through its exit status (semihosting): 0 when its self-check passed, 1
//! when it failed, 101 after a panic, 102 after a fault. QEMU runs with `-icount` so that virtual
//! time is deterministic, under `timeout` so that a hang fails too.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::{env, fs};

use crate::util::{Result, cargo, have, output, root, run};

/// The Rust target of the firmware (Cortex-M4F, like the STM32F4 family).
pub(crate) const TARGET: &str = "thumbv7em-none-eabihf";
/// The firmware binary that runs in QEMU.
const BIN: &str = "telemetry";
/// How long QEMU may run before it counts as hung, in seconds.
const TIMEOUT_SECS: u32 = 120;
/// The line the firmware logs when its self-check passes; a clean exit without it fails too.
const PASS_MARKER: &str = "self-check passed";

/// The firmware package.
fn firmware_dir() -> PathBuf {
    root().join("examples").join("firmware-qemu")
}

/// Where the tools installed by [`ensure_tools`] live, reused from run to run.
fn tools_dir() -> PathBuf {
    root().join("target").join("tools")
}

/// The cached `defmt-print`.
fn defmt_print() -> PathBuf {
    tools_dir().join("bin").join(format!("defmt-print{}", env::consts::EXE_SUFFIX))
}

/// Where [`qemu`] keeps the firmware it last built, with or without the `broken` feature.
pub(crate) fn firmware_elf(broken: bool) -> PathBuf {
    let name = if broken { "telemetry-broken" } else { BIN };
    root().join("target").join("firmware-qemu").join(name)
}

/// Installs the rustup target `target` unless it is there already.
///
/// Without rustup (a toolchain from elsewhere) it assumes the target's standard library is there.
pub(crate) fn rustup_target(target: &str) -> Result {
    if !have("rustup") {
        eprintln!("rustup not found: assuming the {target} standard library is installed");
        return Ok(());
    }
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if installed.lines().any(|line| line.trim() == target) {
        return Ok(());
    }
    run(Command::new("rustup").args(["target", "add", target]))
}

/// Whether this process runs as root.
fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_ok_and(|uid| uid.trim() == "0")
}

/// Installs a Debian package, running `apt-get update` first; tries a second time on failure,
/// which has been seen to clear a transient "pkgProblemResolver ... breaks".
fn apt_install(package: &str) -> Result {
    if !have("apt-get") {
        return Err(format!("{package} is missing and apt-get is not available: install it by hand"));
    }
    let script = format!("apt-get update && apt-get install -y --no-install-recommends {package}");
    let sudo = !is_root() && have("sudo");
    let attempt = || {
        let mut cmd = if sudo {
            let mut cmd = Command::new("sudo");
            cmd.arg("env");
            cmd
        } else {
            Command::new("env")
        };
        cmd.args(["DEBIAN_FRONTEND=noninteractive", "sh", "-c", &script]);
        run(&mut cmd)
    };
    attempt()
        .or_else(|first| {
            eprintln!("{first}; trying once more");
            attempt()
        })
        .map_err(|e| format!("could not install {package} with apt-get: {e}"))
}

/// Installs what [`qemu`] needs and is missing: the rustup target, `qemu-system-arm` (apt-get)
/// and `defmt-print` (`cargo install`, cached in `target/tools`).
pub(crate) fn ensure_tools() -> Result {
    rustup_target(TARGET)?;
    if !have("qemu-system-arm") {
        apt_install("qemu-system-arm")?;
    }
    if !defmt_print().is_file() {
        let mut install = cargo(&root());
        install.args(["install", "defmt-print", "--locked", "--root"]).arg(tools_dir());
        run(&mut install).map_err(|e| format!("could not install defmt-print: {e}"))?;
    }
    Ok(())
}

/// Builds the firmware in release mode from its lock file and copies it to [`firmware_elf`].
fn build(broken: bool) -> Result<PathBuf> {
    let dir = firmware_dir();
    let target_dir = dir.join("target");
    let mut build = cargo(&dir);
    build
        .args(["build", "--release", "--locked", "--target", TARGET, "--bin", BIN])
        .arg("--target-dir")
        .arg(&target_dir)
        // Flags meant for host builds would replace the firmware's linker scripts.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS");
    if broken {
        build.args(["--features", "broken"]);
    }
    run(&mut build)?;

    let built = target_dir.join(TARGET).join("release").join(BIN);
    let elf = firmware_elf(broken);
    if let Some(parent) = elf.parent() {
        fs::create_dir_all(parent).map_err(|e| format!("could not create {}: {e}", parent.display()))?;
    }
    fs::copy(&built, &elf)
        .map_err(|e| format!("could not copy {} to {}: {e}", built.display(), elf.display()))?;
    Ok(elf)
}

/// What a non-zero exit status of the QEMU pipeline means.
fn explain(code: Option<i32>) -> String {
    match code {
        Some(1) => "the firmware's self-check failed (exit status 1)".into(),
        Some(101) => "the firmware panicked (exit status 101)".into(),
        Some(102) => "the firmware hit a fault or an unexpected interrupt (exit status 102)".into(),
        Some(124) => format!("QEMU did not finish within {TIMEOUT_SECS} s (timeout)"),
        Some(3) => "defmt-print could not decode the firmware's output".into(),
        Some(code) => format!("QEMU exited with status {code}"),
        None => "QEMU was killed by a signal".into(),
    }
}

/// Boots `elf` in QEMU, prints its decoded defmt logs, and fails unless it exits 0 after logging
/// the self-check line.
fn boot(elf: &std::path::Path) -> Result {
    // `$1` is the ELF, `$2` defmt-print. PIPESTATUS carries QEMU's status past the pipe.
    let script = format!(
        "timeout {TIMEOUT_SECS} qemu-system-arm -cpu cortex-m4 -machine mps2-an386 \
         -nographic -monitor none -serial none \
         -semihosting-config enable=on,target=native -icount shift=0,sleep=off \
         -kernel \"$1\" | \"$2\" -e \"$1\"
         status=(\"${{PIPESTATUS[@]}}\")
         if [ \"${{status[0]}}\" -ne 0 ]; then exit \"${{status[0]}}\"; fi
         if [ \"${{status[1]}}\" -ne 0 ]; then exit 3; fi"
    );
    let mut cmd = Command::new("bash");
    cmd.args(["-c", &script, "bash"]).arg(elf).arg(defmt_print()).stdout(Stdio::piped());
    eprintln!("$ qemu-system-arm -machine mps2-an386 ... -kernel {0} | defmt-print -e {0}", elf.display());
    let mut child = cmd.spawn().map_err(|e| format!("could not start bash for QEMU: {e}"))?;
    let mut passed = false;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(|e| format!("could not read the decoded logs: {e}"))?;
            passed |= line.contains(PASS_MARKER);
            println!("{line}");
        }
    }
    let status = child.wait().map_err(|e| format!("could not wait for QEMU: {e}"))?;
    if !status.success() {
        return Err(format!("firmware run failed: {}", explain(status.code())));
    }
    if !passed {
        return Err(format!("QEMU exited 0 but the firmware never logged `{PASS_MARKER}`"));
    }
    Ok(())
}

/// Installs the tools, builds the firmware (with the `broken` feature when `broken` is set) and
/// runs it in QEMU. A failing self-check, a panic, a fault or a hang returns `Err`; with `broken`
/// that is the expected outcome.
pub(crate) fn qemu(broken: bool) -> Result {
    ensure_tools()?;
    let elf = build(broken)?;
    boot(&elf)
}
