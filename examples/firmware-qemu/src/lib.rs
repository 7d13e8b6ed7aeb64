//! Runtime support for embassy firmware on QEMU's mps2-an386 (Cortex-M4F) machine.
//!
//! [`rt`] holds the pieces a board support crate would normally provide: a SysTick time driver
//! for `embassy-time`, an executor that sleeps with WFI, defmt timestamps, and a panic handler
//! and exit helpers that report to the host through semihosting. The binaries in `src/bin/` are
//! the applications.
#![no_std]

pub mod rt;
