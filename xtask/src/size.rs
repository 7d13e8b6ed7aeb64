//! `size`: what the batcher costs in flash and RAM on a Cortex-M4F.
//!
//! Builds `examples/firmware-qemu` in release mode (opt-level "s", fat LTO) and compares two
//! binaries that differ only by the batcher: `size-batcher` (a producer adding `u32`s to a
//! `Batcher<CriticalSectionRawMutex, u32, 64>`, a runner task with a trivial handler) and
//! `size-baseline` (the same producer calling the handler directly). Section sizes come from
//! `llvm-size` (rustup's `llvm-tools`, installed when missing) or `arm-none-eabi-size`; the static
//! batcher's size (its `size_of` on the target) comes from the symbol table. Prints Markdown
//! tables; the targets are reported, not enforced.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::qemu::{TARGET, rustup_target};
use crate::util::{Result, cargo, have, output, root, run};

/// The binary with the batcher, and the static whose size is reported.
const WITH: &str = "size-batcher";
/// The binary without it.
const WITHOUT: &str = "size-baseline";
/// The full application, for reference.
const APP: &str = "telemetry";
/// The batcher static in `size-batcher` (demangled, without the hash).
const BATCHER_SYMBOL: &str = "size_batcher::BATCHER";
/// The runner task's storage in `size-batcher` (its future, holding one batch buffer).
const RUNNER_SYMBOL: &str = "size_batcher::runner::POOL";
/// Target: .text of batch-core + batch-embassy with a u32 batcher at opt-level "s".
const TEXT_TARGET: u64 = 3 * 1024;
/// Capacity and item size of the measured batcher.
const CAPACITY: u64 = 64;
const ITEM: u64 = 4;
/// Target: the static batcher holds its items plus at most this much.
const OVERHEAD_TARGET: u64 = 64;

/// The size and symbol tools.
struct Tools {
    size: PathBuf,
    nm: PathBuf,
}

/// Section sizes of one ELF, in bytes.
#[derive(Clone, Copy, Default)]
struct Sections {
    vectors: u64,
    text: u64,
    rodata: u64,
    data: u64,
    bss: u64,
}

impl Sections {
    /// What the image occupies in flash: vector table, code, constants, `.data`'s initial values.
    fn flash(self) -> u64 {
        self.vectors + self.text + self.rodata + self.data
    }

    /// Static RAM (the stack comes on top).
    fn ram(self) -> u64 {
        self.data + self.bss
    }
}

/// `rustc`'s sysroot and host triple.
fn rustc_sysroot_and_host() -> Result<(PathBuf, String)> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = output(Command::new(&rustc).args(["--print", "sysroot"]))?;
    let version = output(Command::new(&rustc).arg("-vV"))?;
    let host = version
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .ok_or("`rustc -vV` printed no host line")?
        .trim()
        .to_owned();
    Ok((PathBuf::from(sysroot.trim()), host))
}

/// Finds `llvm-size`/`llvm-nm` (adding rustup's `llvm-tools` if needed), or falls back to
/// `arm-none-eabi-size`/`arm-none-eabi-nm`.
fn tools() -> Result<Tools> {
    let (sysroot, host) = rustc_sysroot_and_host()?;
    let bin = sysroot.join("lib").join("rustlib").join(host).join("bin");
    let exe = std::env::consts::EXE_SUFFIX;
    let llvm = Tools { size: bin.join(format!("llvm-size{exe}")), nm: bin.join(format!("llvm-nm{exe}")) };
    let present = |t: &Tools| t.size.is_file() && t.nm.is_file();
    if !present(&llvm)
        && have("rustup")
        && let Err(e) = run(Command::new("rustup").args(["component", "add", "llvm-tools"]))
    {
        eprintln!("{e}; looking for arm-none-eabi-size instead");
    }
    if present(&llvm) {
        return Ok(llvm);
    }
    if have("arm-none-eabi-size") && have("arm-none-eabi-nm") {
        return Ok(Tools { size: "arm-none-eabi-size".into(), nm: "arm-none-eabi-nm".into() });
    }
    Err("neither llvm-size (rustup component add llvm-tools) nor arm-none-eabi-size is available".into())
}

/// Builds the three binaries of the QEMU firmware in release mode from its lock file.
fn build(dir: &Path) -> Result<PathBuf> {
    let target_dir = dir.join("target");
    let mut build = cargo(dir);
    build
        .args(["build", "--release", "--locked", "--target", TARGET])
        .args(["--bin", WITH, "--bin", WITHOUT, "--bin", APP])
        .arg("--target-dir")
        .arg(&target_dir)
        // Flags meant for host builds would replace the firmware's linker scripts.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS");
    run(&mut build)?;
    Ok(target_dir.join(TARGET).join("release"))
}

/// Section sizes from `size -A` (System V format: name, size, address).
fn sections(tools: &Tools, elf: &Path) -> Result<Sections> {
    let text = output(Command::new(&tools.size).arg("-A").arg(elf))?;
    let mut s = Sections::default();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(name), Some(size)) = (fields.next(), fields.next()) else { continue };
        let Ok(size) = size.parse::<u64>() else { continue };
        match name {
            ".vector_table" => s.vectors += size,
            ".text" | ".gnu.sgstubs" => s.text += size,
            ".rodata" => s.rodata += size,
            ".data" => s.data += size,
            ".bss" | ".uninit" => s.bss += size,
            _ => {}
        }
    }
    if s.text == 0 {
        return Err(format!("no .text section in the output of `size -A {}`", elf.display()));
    }
    Ok(s)
}

/// The size of the symbol whose demangled name, without its hash, is `name`.
fn symbol_size(tools: &Tools, elf: &Path, name: &str) -> Result<u64> {
    // -S: print sizes, -C: demangle (both llvm-nm and GNU nm).
    let table = output(Command::new(&tools.nm).args(["-S", "-C"]).arg(elf))?;
    for line in table.lines() {
        let fields: Vec<&str> = line.splitn(4, ' ').collect();
        let [_, size, _, symbol] = fields[..] else { continue };
        let symbol = match symbol.rsplit_once("::h") {
            Some((base, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => base,
            _ => symbol,
        };
        if symbol == name {
            return u64::from_str_radix(size, 16).map_err(|e| format!("bad size of {name} in nm: {e}"));
        }
    }
    Err(format!("symbol {name} not found in {}", elf.display()))
}

/// A signed difference, printed with its sign.
fn delta(with: u64, without: u64) -> String {
    let d = i128::from(with) - i128::from(without);
    if d > 0 { format!("+{d}") } else { d.to_string() }
}

fn verdict(value: u64, target: u64) -> &'static str {
    if value <= target { "within target" } else { "over target" }
}

/// Builds the binaries and prints the tables.
pub(crate) fn size() -> Result {
    rustup_target(TARGET)?;
    let tools = tools()?;
    let dir = root().join("examples").join("firmware-qemu");
    let out = build(&dir)?;
    let with = sections(&tools, &out.join(WITH))?;
    let without = sections(&tools, &out.join(WITHOUT))?;
    let app = sections(&tools, &out.join(APP))?;
    let batcher = symbol_size(&tools, &out.join(WITH), BATCHER_SYMBOL)?;
    let runner = symbol_size(&tools, &out.join(WITH), RUNNER_SYMBOL)?;

    println!("## Flash and RAM on {TARGET} (release: opt-level \"s\", fat LTO, defmt on)\n");
    println!("Bytes. Flash = vector table + .text + .rodata + .data; RAM = .data + .bss (no stack).\n");
    println!("| binary | .text | .rodata | .data | .bss | flash | RAM |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let row = |name: &str, s: Sections| {
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} |",
            s.text,
            s.rodata,
            s.data,
            s.bss,
            s.flash(),
            s.ram()
        );
    };
    row(&format!("`{WITHOUT}`: direct call, no batcher"), without);
    row(&format!("`{WITH}`: `Batcher<_, u32, 64>` + runner"), with);
    println!(
        "| **batcher's cost** | **{}** | **{}** | **{}** | **{}** | **{}** | **{}** |",
        delta(with.text, without.text),
        delta(with.rodata, without.rodata),
        delta(with.data, without.data),
        delta(with.bss, without.bss),
        delta(with.flash(), without.flash()),
        delta(with.ram(), without.ram())
    );
    row(&format!("`{APP}`: the QEMU application, for reference"), app);

    let text_cost = with.text.saturating_sub(without.text);
    let items = CAPACITY * ITEM;
    let static_target = items + OVERHEAD_TARGET;
    println!("\n| measure | value | target | verdict |");
    println!("|---|---:|---:|---|");
    println!(
        "| .text of batch-core + batch-embassy (difference above) | {text_cost} | ≤ {TEXT_TARGET} | {} |",
        verdict(text_cost, TEXT_TARGET)
    );
    println!(
        "| `size_of::<Batcher<CriticalSectionRawMutex, u32, 64>>()` (the static) | {batcher} | ≤ {CAPACITY} × {ITEM} + {OVERHEAD_TARGET} = {static_target} | {} ({} bytes beside the items) |",
        verdict(batcher, static_target),
        batcher.saturating_sub(items)
    );
    println!("| runner task storage (its future, with a {CAPACITY}-item batch buffer) | {runner} | — | — |");
    Ok(())
}
