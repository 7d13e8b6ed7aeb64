//! Writes the memory layout of QEMU's mps2-an386 machine where `cortex-m-rt`'s `link.x` finds it.
//!
//! The layout lives in `OUT_DIR`, never in a file named `memory.x` in the package root: the linker
//! would pick that one first, and it must stay possible to point this package at another board by
//! changing only this script.

use std::env;
use std::fs;
use std::path::PathBuf;

/// FLASH (SSRAM1, where QEMU loads `-kernel`) and RAM (SSRAM2/3) of mps2-an386: 4 MiB each.
const MEMORY_X: &str = "\
MEMORY
{
  FLASH : ORIGIN = 0x00000000, LENGTH = 4M
  RAM   : ORIGIN = 0x20000000, LENGTH = 4M
}
";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR for build scripts"));
    fs::write(out.join("memory.x"), MEMORY_X).expect("could not write memory.x into OUT_DIR");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=build.rs");
}
