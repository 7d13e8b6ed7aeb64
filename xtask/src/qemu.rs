//! `qemu`: builds `examples/firmware-qemu` for one architecture, boots it on a QEMU machine and
//! decodes its defmt logs.
//!
//! | `--arch` | Rust target | QEMU |
//! |---|---|---|
//! | `thumbv7em` (default) | `thumbv7em-none-eabihf` | `mps2-an386` (Cortex-M4F) |
//! | `thumbv6m` | `thumbv6m-none-eabi` | `mps2-an385` (a Cortex-M3 running the v6-M code) |
//! | `riscv32imc` | `riscv32imc-unknown-none-elf` | `virt`, `-bios none`, `-cpu rv32,a=off,f=off,d=off` |
//!
//! QEMU has no Cortex-M0 board with a timer an embassy time driver can use short of the nRF51
//! `microbit` (16 KiB of RAM), so the thumbv6m image runs on the Cortex-M3 of mps2-an385, which
//! executes v6-M code unchanged. A Cortex-M3 would also execute v7-M instructions, so before
//! booting the thumbv6m image is disassembled as ARMv6-M and any instruction outside it fails
//! the run. The RISC-V CPU, on the other hand, is configured without the A (atomics) extension,
//! so QEMU itself rejects an atomic instruction (an exception: exit status 102).
//!
//! The firmware reports through its exit status (semihosting, on both architectures): 0 when its
//! self-check passed, 1 when it failed, 101 after a panic, 102 after a fault. QEMU runs with
//! `-icount shift=0,sleep=off` so that virtual time is deterministic, under `timeout` so that a
//! hang fails too.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::{env, fs};

use crate::size::llvm_tool;
use crate::util::{Result, apt_install, cargo, have, output, root, run};

/// One QEMU machine and the Rust target whose firmware it runs.
#[derive(Debug)]
pub(crate) struct Machine {
    /// The name `--arch` takes, also used in step names.
    pub(crate) name: &'static str,
    /// The Rust target of the firmware.
    pub(crate) target: &'static str,
    /// The QEMU machine and CPU, for people.
    pub(crate) board: &'static str,
    /// The QEMU program.
    qemu: &'static str,
    /// The Debian package that provides [`Machine::qemu`].
    apt_package: &'static str,
    /// The machine-selecting arguments of the QEMU command.
    args: &'static [&'static str],
    /// Whether the image must hold only ARMv6-M instructions (checked by disassembly).
    v6m_only: bool,
}

/// Every machine the firmware runs on, in the order `--all` runs them.
pub(crate) const MACHINES: [Machine; 3] = [
    Machine {
        name: "thumbv7em",
        target: "thumbv7em-none-eabihf",
        board: "mps2-an386 (Cortex-M4F)",
        qemu: "qemu-system-arm",
        apt_package: "qemu-system-arm",
        args: &["-cpu", "cortex-m4", "-machine", "mps2-an386"],
        v6m_only: false,
    },
    Machine {
        name: "thumbv6m",
        target: "thumbv6m-none-eabi",
        board: "mps2-an385 (Cortex-M3 running ARMv6-M code)",
        qemu: "qemu-system-arm",
        apt_package: "qemu-system-arm",
        args: &["-cpu", "cortex-m3", "-machine", "mps2-an385"],
        v6m_only: true,
    },
    Machine {
        name: "riscv32imc",
        target: "riscv32imc-unknown-none-elf",
        board: "virt (RV32IMC: no atomics extension)",
        qemu: "qemu-system-riscv32",
        apt_package: "qemu-system-misc",
        // The default CPU is RV32GC; without A (and F, D) it is an RV32IMC like the ESP32-C3,
        // and an atomic instruction in the image is an illegal-instruction exception.
        args: &["-machine", "virt", "-bios", "none", "-cpu", "rv32,a=off,f=off,d=off"],
        v6m_only: false,
    },
];

/// The machine `cargo xtask qemu` runs without `--arch` (the STM32F4's target).
pub(crate) const DEFAULT: &Machine = &MACHINES[0];

/// The firmware binary that runs in QEMU.
const BIN: &str = "telemetry";
/// How long QEMU may run before it counts as hung, in seconds.
const TIMEOUT_SECS: u32 = 120;
/// The line the firmware logs when its self-check passes; a clean exit without it fails too.
const PASS_MARKER: &str = "self-check passed";
/// The exit status of a firmware whose self-check failed.
const EXIT_CHECK_FAILED: i32 = 1;

/// How a firmware run ended (building and starting it worked).
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Exit status 0 after logging [`PASS_MARKER`].
    Passed,
    /// Anything else: `code` is the pipeline's exit status, `None` when killed by a signal.
    Failed { code: Option<i32>, reason: String },
}

impl Verdict {
    /// Whether the firmware failed through its own self-check (not a panic, fault or hang).
    pub(crate) fn is_check_failure(&self) -> bool {
        matches!(self, Verdict::Failed { code: Some(EXIT_CHECK_FAILED), .. })
    }
}

/// The machine called `name`.
pub(crate) fn machine(name: &str) -> Result<&'static Machine> {
    MACHINES.iter().find(|m| m.name == name).ok_or_else(|| {
        let names: Vec<&str> = MACHINES.iter().map(|m| m.name).collect();
        format!("unknown --arch `{name}` (one of: {})", names.join(", "))
    })
}

/// The firmware package.
pub(crate) fn firmware_dir() -> PathBuf {
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

/// Where [`run`] keeps the firmware it last built for `machine`, with or without `broken`.
fn firmware_elf(machine: &Machine, broken: bool) -> PathBuf {
    let name = if broken { "telemetry-broken" } else { BIN };
    root().join("target").join("firmware-qemu").join(machine.target).join(name)
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

/// Installs what running on `machine` needs and is missing: the rustup target, the QEMU program
/// (`qemu-system-arm`, or `qemu-system-misc` for `qemu-system-riscv32`, with apt-get) and
/// `defmt-print` (`cargo install`, cached in `target/tools`).
pub(crate) fn ensure_tools(machine: &Machine) -> Result {
    rustup_target(machine.target)?;
    if !have(machine.qemu) {
        apt_install(machine.apt_package)?;
    }
    if !defmt_print().is_file() {
        let mut install = cargo(&root());
        install.args(["install", "defmt-print", "--locked", "--root"]).arg(tools_dir());
        run(&mut install).map_err(|e| format!("could not install defmt-print: {e}"))?;
    }
    Ok(())
}

/// A `cargo` command in the firmware package for `target`, its own target folder, and none of
/// the host's rustflags (they would replace the firmware's linker scripts).
pub(crate) fn firmware_cargo(subcommand: &str, target: &str) -> Command {
    let dir = firmware_dir();
    let mut cmd = cargo(&dir);
    cmd.args([subcommand, "--release", "--locked", "--target", target])
        .arg("--target-dir")
        .arg(dir.join("target"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS");
    cmd
}

/// Where [`firmware_cargo`] puts the release binaries for `target`.
pub(crate) fn release_dir(target: &str) -> PathBuf {
    firmware_dir().join("target").join(target).join("release")
}

/// Builds the firmware for `machine` in release mode from its lock file and copies it to
/// [`firmware_elf`].
fn build(machine: &Machine, broken: bool) -> Result<PathBuf> {
    let mut build = firmware_cargo("build", machine.target);
    // The store run: write-ahead on a simulated flash, a power cut and a reboot from the flash.
    build.args(["--bin", BIN, "--features", if broken { "store,broken" } else { "store" }]);
    run(&mut build)?;

    let built = release_dir(machine.target).join(BIN);
    let elf = firmware_elf(machine, broken);
    if let Some(parent) = elf.parent() {
        fs::create_dir_all(parent).map_err(|e| format!("could not create {}: {e}", parent.display()))?;
    }
    fs::copy(&built, &elf)
        .map_err(|e| format!("could not copy {} to {}: {e}", built.display(), elf.display()))?;
    Ok(elf)
}

/// Fails unless every instruction of `elf` is an ARMv6-M one: disassembled as ARMv6-M, a v7-M
/// instruction (`udiv`, `ldrex`, `cbz`, `it`, most 32-bit encodings) is `<unknown>`.
fn check_v6m_only(elf: &Path) -> Result {
    let objdump = llvm_tool("llvm-objdump")?;
    let listing = output(
        Command::new(objdump).args(["-d", "--no-show-raw-insn", "--triple=thumbv6m-none-eabi"]).arg(elf),
    )?;
    let mut instructions = 0_usize;
    let mut foreign = Vec::new();
    for line in listing.lines() {
        // "  1a2: \tmovs\tr0, #0x1"; labels and headers have no tab.
        let Some((_, insn)) = line.split_once('\t') else { continue };
        instructions += 1;
        let mnemonic = insn.split_whitespace().next().unwrap_or("");
        if insn.contains("<unknown>") || ["udiv", "sdiv", "ldrex", "strex", "cbz", "cbnz"].contains(&mnemonic)
        {
            foreign.push(line.trim().to_owned());
        }
    }
    if instructions == 0 {
        return Err(format!("llvm-objdump listed no instructions in {}", elf.display()));
    }
    if !foreign.is_empty() {
        let shown: Vec<&str> = foreign.iter().take(5).map(String::as_str).collect();
        return Err(format!(
            "{} of {instructions} instructions are not ARMv6-M, e.g.:\n  {}",
            foreign.len(),
            shown.join("\n  ")
        ));
    }
    eprintln!("ARMv6-M only: all {instructions} instructions of {} decode as ARMv6-M", elf.display());
    Ok(())
}

/// What a non-zero exit status of the QEMU pipeline means.
fn explain(code: Option<i32>) -> String {
    match code {
        Some(EXIT_CHECK_FAILED) => "the firmware's self-check failed (exit status 1)".into(),
        Some(101) => "the firmware panicked (exit status 101)".into(),
        Some(102) => "the firmware hit a fault or an unexpected interrupt (exit status 102)".into(),
        Some(124) => format!("QEMU did not finish within {TIMEOUT_SECS} s (timeout)"),
        Some(3) => "defmt-print could not decode the firmware's output".into(),
        Some(code) => format!("QEMU exited with status {code}"),
        None => "QEMU was killed by a signal".into(),
    }
}

/// Boots `elf` on `machine`, prints its decoded defmt logs, and says whether it exited 0 after
/// logging the self-check line. `Err` only when QEMU could not be started.
fn boot(machine: &Machine, elf: &Path) -> Result<Verdict> {
    // `$1` is the ELF, `$2` defmt-print. PIPESTATUS carries QEMU's status past the pipe.
    let script = format!(
        "timeout {TIMEOUT_SECS} {qemu} {args} \
         -nographic -monitor none -serial none \
         -semihosting-config enable=on,target=native -icount shift=0,sleep=off \
         -kernel \"$1\" | \"$2\" -e \"$1\"
         status=(\"${{PIPESTATUS[@]}}\")
         if [ \"${{status[0]}}\" -ne 0 ]; then exit \"${{status[0]}}\"; fi
         if [ \"${{status[1]}}\" -ne 0 ]; then exit 3; fi",
        qemu = machine.qemu,
        args = machine.args.join(" "),
    );
    let mut cmd = Command::new("bash");
    cmd.args(["-c", &script, "bash"]).arg(elf).arg(defmt_print()).stdout(Stdio::piped());
    eprintln!(
        "$ {} {} -icount shift=0,sleep=off ... -kernel {2} | defmt-print -e {2}",
        machine.qemu,
        machine.args.join(" "),
        elf.display()
    );
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
    Ok(if !status.success() {
        Verdict::Failed { code: status.code(), reason: explain(status.code()) }
    } else if passed {
        Verdict::Passed
    } else {
        Verdict::Failed { code: Some(0), reason: format!("exited 0 but never logged `{PASS_MARKER}`") }
    })
}

/// Installs the tools, builds the firmware for `machine` (with the `broken` feature when `broken`
/// is set), checks its instruction set where that matters, and runs it in QEMU. `Err` means the
/// run could not happen (tools, build, instruction set); how the firmware ended is the verdict.
pub(crate) fn run_on(machine: &Machine, broken: bool) -> Result<Verdict> {
    ensure_tools(machine)?;
    let elf = build(machine, broken)?;
    if machine.v6m_only {
        check_v6m_only(&elf)?;
    }
    boot(machine, &elf)
}

/// [`run_on`] as a plain result: `Ok` only when the self-check passed.
pub(crate) fn run_passing(machine: &Machine, broken: bool) -> Result {
    match run_on(machine, broken)? {
        Verdict::Passed => {
            eprintln!("{} on {}: self-check passed", machine.target, machine.board);
            Ok(())
        }
        Verdict::Failed { reason, .. } => {
            Err(format!("{} on {}: firmware run failed: {reason}", machine.target, machine.board))
        }
    }
}

/// [`run_on`] for the broken variant, which must fail through its self-check: `Ok` when it did.
pub(crate) fn run_broken_must_fail(machine: &Machine) -> Result {
    match run_on(machine, true)? {
        verdict if verdict.is_check_failure() => {
            eprintln!("{}: the broken variant failed its self-check, as it must", machine.name);
            Ok(())
        }
        Verdict::Passed => Err("the deliberately broken firmware passed its self-check".into()),
        Verdict::Failed { reason, .. } => {
            Err(format!("the broken firmware failed, but not through its self-check: {reason}"))
        }
    }
}

/// `cargo xtask qemu [--arch NAME | --all] [--broken]`: runs on one machine (thumbv7em by
/// default) or on all of them; fails unless every run passed its self-check (with `--broken`,
/// failing is what the firmware is meant to do).
pub(crate) fn qemu(args: &[String]) -> Result {
    let mut broken = false;
    let mut all = false;
    let mut chosen = DEFAULT;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--broken" => broken = true,
            "--all" => all = true,
            "--arch" => chosen = machine(args.next().ok_or("--arch needs a name")?)?,
            other => return Err(format!("unknown qemu option `{other}`")),
        }
    }
    let machines: Vec<&Machine> = if all { MACHINES.iter().collect() } else { vec![chosen] };
    let mut failures = Vec::new();
    for m in &machines {
        eprintln!("\n=== {} on QEMU {}{}", m.target, m.board, if broken { ", broken variant" } else { "" });
        if let Err(e) = run_passing(m, broken) {
            eprintln!("xtask: {e}");
            failures.push(m.name);
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("failed on {} of {} machines: {}", failures.len(), machines.len(), failures.join(", ")))
    }
}
