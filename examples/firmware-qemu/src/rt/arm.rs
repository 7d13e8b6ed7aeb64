//! Cortex-M glue (mps2-an386 for thumbv7em, mps2-an385 for thumbv6m): start-up, sleep, faults.

use cortex_m_rt::{ExceptionFrame, exception};

use super::{EXIT_FAULT, Executor, exit, systick};

/// The reset entry point (`cortex-m-rt`'s): `#[entry] fn main() -> ! { ... }`.
pub use cortex_m_rt::entry;

/// Starts the time base (SysTick). Call it once, before anything reads the time.
///
/// # Panics
///
/// If the core peripherals were taken already.
pub fn init() {
    let peripherals = defmt::unwrap!(cortex_m::Peripherals::take(), "rt::init called twice");
    systick::start(peripherals.SYST);
}

/// Sleeps until an interrupt is pending (also with interrupts masked).
pub(super) fn wait_for_interrupt() {
    cortex_m::asm::wfi();
}

/// The one executor, or `None` on a second call.
pub(super) fn executor_singleton() -> Option<&'static mut Executor> {
    cortex_m::singleton!(: Executor = Executor::new())
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    defmt::error!("hard fault: pc={=u32:#010x} lr={=u32:#010x}", frame.pc(), frame.lr());
    exit(EXIT_FAULT)
}

#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    defmt::error!("unexpected exception or interrupt {=i16}", irqn);
    exit(EXIT_FAULT)
}
