//! What a board support crate would provide on QEMU: time, executor, exit. One API on every
//! architecture; the target selects the pieces.
//!
//! | target | QEMU machine | time driver | memory |
//! |---|---|---|---|
//! | `thumbv7em-none-eabihf` | `mps2-an386` (Cortex-M4F) | SysTick (`systick.rs`) | FLASH 0x0, RAM 0x2000_0000 |
//! | `thumbv6m-none-eabi` | `mps2-an385` (Cortex-M3 running v6-M code) | SysTick (`systick.rs`) | the same |
//! | `riscv32imc-unknown-none-elf` | `virt`, `-bios none`, `-cpu rv32,a=off,f=off,d=off` | CLINT `mtime`/`mtimecmp` (`clint.rs`) | FLASH 0x8000_0000, RAM 0x8040_0000 |
//!
//! (`build.rs` writes the memory layout for the target.)
//!
//! - [`Executor`]: an embassy executor that sleeps with WFI inside a critical section. The stock
//!   cortex-m executor sleeps with WFE, which QEMU treats as a no-op, so it would spin a host core.
//! - defmt timestamps in microseconds of virtual time, a panic handler and fault handlers that log
//!   and leave QEMU with a non-zero status, and [`exit`] helpers built on semihosting (which QEMU
//!   offers on both architectures).
//! - [`entry`]: the reset entry point attribute of the architecture's runtime crate
//!   (`cortex-m-rt` or `riscv-rt`), so that one binary source serves every target.
//!
//! Read-modify-write atomics come from `portable-atomic`: native on thumbv7em, and emulated with
//! `critical-section` on thumbv6m and riscv32imc, which have atomic loads and stores but no
//! compare-and-swap. The critical section masks interrupts (one core, one hart).
//!
//! Call [`init`] first, then [`start`] (or [`Executor::run`]).

#[cfg(target_arch = "arm")]
mod arm;
#[cfg(target_arch = "riscv32")]
mod clint;
mod executor;
#[cfg(target_arch = "riscv32")]
mod riscv32;
#[cfg(target_arch = "arm")]
mod systick;

use core::panic::PanicInfo;

use defmt_semihosting as _;
use embassy_executor::Spawner;
use portable_atomic::{AtomicBool, Ordering};

#[cfg(target_arch = "arm")]
use arm as arch;
#[cfg(target_arch = "riscv32")]
use riscv32 as arch;

pub use arch::{entry, init};
pub use executor::Executor;

/// Exit status after a panic (the same as a panicking Rust program on a host).
pub const EXIT_PANIC: i32 = 101;
/// Exit status after a fault or an unexpected interrupt.
pub const EXIT_FAULT: i32 = 102;

/// Runs the one [`Executor`] of the firmware; `init` spawns the first tasks.
///
/// # Panics
///
/// If called twice.
pub fn start(init: impl FnOnce(Spawner)) -> ! {
    let executor = arch::executor_singleton();
    defmt::unwrap!(executor, "rt::start called twice").run(init)
}

defmt::timestamp!("{=u64:us}", embassy_time::Instant::now().as_micros());

/// Ends the QEMU process with `code` as its exit status (through semihosting).
pub fn exit(code: i32) -> ! {
    semihosting::process::exit(code)
}

/// Ends the QEMU process with status 0.
pub fn exit_success() -> ! {
    exit(0)
}

/// Ends the QEMU process with status 1.
pub fn exit_failure() -> ! {
    exit(1)
}

/// Guards against a panic while logging a panic.
static PANICKED: AtomicBool = AtomicBool::new(false);

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    if !PANICKED.swap(true, Ordering::Relaxed) {
        defmt::error!("panic: {}", defmt::Display2Format(info));
    }
    exit(EXIT_PANIC)
}
