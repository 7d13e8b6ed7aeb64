//! RISC-V glue (QEMU `virt`, one hart in machine mode): start-up, sleep, traps.

use riscv::interrupt::Interrupt;
use riscv::register::{mcause, mepc, mtval};

use super::{EXIT_FAULT, Executor, clint, exit};

/// The reset entry point (`riscv-rt`'s): `#[entry] fn main() -> ! { ... }`.
pub use riscv_rt::entry;

/// Starts the time base (the CLINT timer) and enables the machine timer interrupt. Call it once,
/// before anything reads the time.
pub fn init() {
    clint::start();
    // SAFETY: the machine timer handler is `clint`'s, and nothing runs in a critical section yet.
    unsafe {
        riscv::interrupt::enable_interrupt(Interrupt::MachineTimer);
        riscv::interrupt::enable();
    }
}

/// Sleeps until an interrupt is pending (WFI returns on a pending enabled interrupt even while
/// `mstatus.MIE` masks it).
pub(super) fn wait_for_interrupt() {
    riscv::asm::wfi();
}

/// The one executor, or `None` on a second call.
pub(super) fn executor_singleton() -> Option<&'static mut Executor> {
    riscv::singleton!(: Executor = Executor::new())
}

/// Any exception: an illegal instruction, a misaligned or faulting access.
#[unsafe(export_name = "ExceptionHandler")]
extern "C" fn exception_handler(_frame: &riscv_rt::TrapFrame) -> ! {
    defmt::error!(
        "exception: mcause={=usize:#x} mepc={=usize:#010x} mtval={=usize:#010x}",
        mcause::read().bits(),
        mepc::read(),
        mtval::read()
    );
    exit(EXIT_FAULT)
}

/// Any interrupt without a handler of its own.
#[unsafe(export_name = "DefaultHandler")]
extern "C" fn default_handler() -> ! {
    defmt::error!("unexpected interrupt: mcause={=usize:#x}", mcause::read().bits());
    exit(EXIT_FAULT)
}
