//! What a board support crate would provide on QEMU's mps2-an386: time, executor, exit.
//!
//! - A SysTick time driver for `embassy-time`: a 64-bit tick count that the SysTick exception
//!   advances once per millisecond, refined between interrupts by reading the SysTick counter,
//!   and `embassy_time_queue_utils::Queue` for the timers. Alarms are checked on every SysTick
//!   interrupt, so a timer fires at most one millisecond late.
//! - [`Executor`]: an embassy executor that sleeps with WFI inside a critical section. The stock
//!   cortex-m executor sleeps with WFE, which QEMU treats as a no-op, so it would spin a host core.
//! - defmt timestamps in microseconds of virtual time, a panic handler and fault handlers that log
//!   and leave QEMU with a non-zero status, and [`exit`] helpers built on semihosting.
//!
//! Call [`init`] first, then [`start`] (or [`Executor::run`]).

use core::cell::{Cell, RefCell};
use core::marker::PhantomData;
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::Waker;

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::{SCB, SYST};
use cortex_m_rt::{ExceptionFrame, exception};
use critical_section::{CriticalSection, Mutex};
use defmt_semihosting as _;
use embassy_executor::{Spawner, raw};
use embassy_time_driver::{Driver, TICK_HZ};
use embassy_time_queue_utils::Queue;

/// The core clock of mps2-an386, which SysTick counts: 25 MHz.
pub const CORE_HZ: u64 = 25_000_000;
/// SysTick interrupts per second; also the granularity of alarms.
pub const IRQ_HZ: u64 = 1_000;
/// Exit status after a panic (the same as a panicking Rust program on a host).
pub const EXIT_PANIC: i32 = 101;
/// Exit status after a fault or an unexpected interrupt.
pub const EXIT_FAULT: i32 = 102;

const CYCLES_PER_IRQ: u64 = CORE_HZ / IRQ_HZ;
const TICKS_PER_IRQ: u64 = TICK_HZ / IRQ_HZ;
const _: () = assert!(
    CORE_HZ.is_multiple_of(IRQ_HZ) && TICK_HZ.is_multiple_of(IRQ_HZ) && TICK_HZ <= CORE_HZ,
    "embassy-time's tick rate must be a multiple of IRQ_HZ and at most CORE_HZ",
);
const _: () = assert!(CYCLES_PER_IRQ <= 1 << 24, "SysTick's reload value has 24 bits");

/// Configures SysTick as the time base. Call it once, before anything reads the time.
pub fn init(mut syst: SYST) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload((CYCLES_PER_IRQ - 1) as u32);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
}

/// The `embassy-time` driver: time since [`init`], and the queue of pending timers.
struct SysTickDriver {
    /// Ticks at the start of the current SysTick period.
    base: Mutex<Cell<u64>>,
    /// The latest time read, which the next one may not precede.
    last: Mutex<Cell<u64>>,
    /// When the earliest queued timer expires (`u64::MAX` when none is queued).
    alarm: Mutex<Cell<u64>>,
    /// The timers of every task.
    queue: Mutex<RefCell<Queue>>,
}

embassy_time_driver::time_driver_impl!(static DRIVER: SysTickDriver = SysTickDriver {
    base: Mutex::new(Cell::new(0)),
    last: Mutex::new(Cell::new(0)),
    alarm: Mutex::new(Cell::new(u64::MAX)),
    queue: Mutex::new(RefCell::new(Queue::new())),
});

impl SysTickDriver {
    fn now_in(&self, cs: CriticalSection<'_>) -> u64 {
        let mut base = self.base.borrow(cs).get();
        let mut current = SYST::get_current();
        if SCB::is_pendst_pending() {
            // The counter wrapped, and the exception that accounts for it waits for the end of
            // this critical section. Read again: the first value may predate the wrap.
            current = SYST::get_current();
            base += TICKS_PER_IRQ;
        }
        // The exception pends when the counter reaches 0, which it shows for one cycle before
        // it reloads and counts down again: 0 starts a period, then RELOAD, ..., 1.
        let cycles = (CYCLES_PER_IRQ - u64::from(current)) % CYCLES_PER_IRQ;
        // Without -icount, QEMU can show that 0 before it pends the exception: never go back.
        let last = self.last.borrow(cs);
        let now = (base + cycles * TICK_HZ / CORE_HZ).max(last.get());
        last.set(now);
        now
    }

    /// Wakes the expired timers and remembers when the next one expires.
    fn rearm(&self, cs: CriticalSection<'_>, now: u64) {
        let next = self.queue.borrow_ref_mut(cs).next_expiration(now);
        self.alarm.borrow(cs).set(next);
    }

    fn on_systick(&self) {
        critical_section::with(|cs| {
            let base = self.base.borrow(cs);
            base.set(base.get() + TICKS_PER_IRQ);
            let now = self.now_in(cs);
            if now >= self.alarm.borrow(cs).get() {
                self.rearm(cs, now);
            }
        });
    }
}

impl Driver for SysTickDriver {
    fn now(&self) -> u64 {
        critical_section::with(|cs| self.now_in(cs))
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        critical_section::with(|cs| {
            if self.queue.borrow_ref_mut(cs).schedule_wake(at, waker) {
                let now = self.now_in(cs);
                self.rearm(cs, now);
            }
        });
    }
}

#[exception]
fn SysTick() {
    DRIVER.on_systick();
}

/// Set by the pender (from any task or interrupt) when the executor has work to do.
static WORK: AtomicBool = AtomicBool::new(false);

#[unsafe(export_name = "__pender")]
fn pender(_context: *mut ()) {
    WORK.store(true, Ordering::Release);
}

/// A thread-mode embassy executor that sleeps with WFI until an interrupt brings work.
pub struct Executor {
    inner: raw::Executor,
    not_send: PhantomData<*mut ()>,
}

impl core::fmt::Debug for Executor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Executor").finish_non_exhaustive()
    }
}

impl Default for Executor {
    fn default() -> Self {
        Self::new()
    }
}

impl Executor {
    /// Creates an executor; [`Executor::run`] needs it in a `'static` place.
    pub fn new() -> Self {
        Self { inner: raw::Executor::new(core::ptr::null_mut()), not_send: PhantomData }
    }

    /// Calls `init` with a spawner for this executor, then runs its tasks forever.
    pub fn run(&'static mut self, init: impl FnOnce(Spawner)) -> ! {
        init(self.inner.spawner());
        loop {
            // SAFETY: only this loop polls the executor, and the pender never does.
            unsafe { self.inner.poll() };
            // With interrupts masked, a wake-up cannot slip in between the check and the WFI;
            // WFI still returns on a pending interrupt, which runs when the section ends.
            critical_section::with(|_| {
                if !WORK.swap(false, Ordering::AcqRel) {
                    cortex_m::asm::wfi();
                }
            });
        }
    }
}

/// Runs the one [`Executor`] of the firmware; `init` spawns the first tasks.
///
/// # Panics
///
/// If called twice.
pub fn start(init: impl FnOnce(Spawner)) -> ! {
    let executor = cortex_m::singleton!(: Executor = Executor::new());
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
