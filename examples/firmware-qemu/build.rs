//! Writes the memory layout of the QEMU machine the target runs on where the runtime crate's
//! `link.x` finds it (`cortex-m-rt` and `riscv-rt` both `INCLUDE memory.x`).
//!
//! The layout lives in `OUT_DIR`, never in a file named `memory.x` in the package root: the linker
//! would pick that one first.

use std::env;
use std::fs;
use std::path::PathBuf;

/// mps2-an386 (thumbv7em) and mps2-an385 (thumbv6m): FLASH is SSRAM1, where QEMU loads
/// `-kernel`; RAM is SSRAM2/3. 4 MiB each.
const CORTEX_M: &str = "\
MEMORY
{
  FLASH : ORIGIN = 0x00000000, LENGTH = 4M
  RAM   : ORIGIN = 0x20000000, LENGTH = 4M
}
";

/// QEMU `virt` with `-bios none` jumps to the start of DRAM (0x80000000), where `riscv-rt` puts
/// `_start`. The DRAM (128 MiB by default) is split into a read-only half for code and constants
/// and a read-write half, as on a microcontroller; the stack takes the rest of RAM.
const RISCV: &str = "\
MEMORY
{
  FLASH : ORIGIN = 0x80000000, LENGTH = 4M
  RAM   : ORIGIN = 0x80400000, LENGTH = 4M
}
REGION_ALIAS(\"REGION_TEXT\", FLASH);
REGION_ALIAS(\"REGION_RODATA\", FLASH);
REGION_ALIAS(\"REGION_DATA\", RAM);
REGION_ALIAS(\"REGION_BSS\", RAM);
REGION_ALIAS(\"REGION_HEAP\", RAM);
REGION_ALIAS(\"REGION_STACK\", RAM);
";

fn main() {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets CARGO_CFG_TARGET_ARCH");
    let layout = match arch.as_str() {
        "arm" => CORTEX_M,
        "riscv32" => RISCV,
        // Host builds (`cargo check` without a target) link nothing.
        _ => return,
    };
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR for build scripts"));
    fs::write(out.join("memory.x"), layout).expect("could not write memory.x into OUT_DIR");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=build.rs");
}
