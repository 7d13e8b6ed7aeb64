//! Runtime support for embassy firmware on QEMU: `mps2-an386` (thumbv7em), `mps2-an385`
//! (thumbv6m) and `virt` (riscv32imc).
//!
//! [`rt`] holds the pieces a board support crate would normally provide, selected by target: a
//! time driver for `embassy-time` (SysTick on Cortex-M, the CLINT on RISC-V), an executor that
//! sleeps with WFI, defmt timestamps, and a panic handler and exit helpers that report to the
//! host through semihosting. The binaries in `src/bin/` are the applications.
#![no_std]

pub mod rt;
