//! A SysTick time driver for `embassy-time` (both mps2 machines clock SysTick at 25 MHz).
//!
//! A 64-bit tick count that the SysTick exception advances once per millisecond, refined between
//! interrupts by reading the SysTick counter, and `embassy_time_queue_utils::Queue` for the
//! timers. Alarms are checked on every SysTick interrupt, so a timer fires at most one millisecond
//! late.

use core::cell::{Cell, RefCell};
use core::task::Waker;

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::{SCB, SYST};
use cortex_m_rt::exception;
use critical_section::{CriticalSection, Mutex};
use embassy_time_driver::{Driver, TICK_HZ};
use embassy_time_queue_utils::Queue;

/// The core clock of mps2-an385/an386, which SysTick counts: 25 MHz.
const CORE_HZ: u64 = 25_000_000;
/// SysTick interrupts per second; also the granularity of alarms.
const IRQ_HZ: u64 = 1_000;

const CYCLES_PER_IRQ: u64 = CORE_HZ / IRQ_HZ;
const TICKS_PER_IRQ: u64 = TICK_HZ / IRQ_HZ;
const _: () = assert!(
    CORE_HZ.is_multiple_of(IRQ_HZ) && TICK_HZ.is_multiple_of(IRQ_HZ) && TICK_HZ <= CORE_HZ,
    "embassy-time's tick rate must be a multiple of IRQ_HZ and at most CORE_HZ",
);
const _: () = assert!(CYCLES_PER_IRQ <= 1 << 24, "SysTick's reload value has 24 bits");

/// Configures SysTick as the time base and starts it.
pub(super) fn start(mut syst: SYST) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload((CYCLES_PER_IRQ - 1) as u32);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
}

/// The `embassy-time` driver: time since [`start`], and the queue of pending timers.
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
