//! A CLINT time driver for `embassy-time` on QEMU `virt`: the 64-bit `mtime` counter (10 MHz) is
//! the clock, and hart 0's `mtimecmp` raises the machine timer interrupt when the earliest timer
//! in `embassy_time_queue_utils::Queue` expires. Alarms are exact (no periodic tick).

use core::cell::RefCell;
use core::ptr;
use core::task::Waker;

use critical_section::{CriticalSection, Mutex};
use embassy_time_driver::{Driver, TICK_HZ};
use embassy_time_queue_utils::Queue;
use riscv::interrupt::Interrupt;

/// `mtime`, split in 32-bit halves (a 32-bit hart cannot read it in one access).
const MTIME_LO: *const u32 = 0x0200_BFF8 as *const u32;
const MTIME_HI: *const u32 = 0x0200_BFFC as *const u32;
/// Hart 0's `mtimecmp`.
const MTIMECMP_LO: *mut u32 = 0x0200_4000 as *mut u32;
const MTIMECMP_HI: *mut u32 = 0x0200_4004 as *mut u32;
/// The rate of `mtime` on QEMU `virt`.
const MTIME_HZ: u64 = 10_000_000;
/// `mtime` counts per embassy-time tick.
const MTIME_PER_TICK: u64 = MTIME_HZ / TICK_HZ;
const _: () =
    assert!(MTIME_HZ.is_multiple_of(TICK_HZ), "embassy-time's tick rate must divide the CLINT's 10 MHz");

/// Reads `mtime`, retrying when the low half wrapped between the two reads.
fn mtime() -> u64 {
    loop {
        // SAFETY: the CLINT's `mtime` registers, always readable in machine mode.
        let (hi, lo, again) = unsafe {
            (ptr::read_volatile(MTIME_HI), ptr::read_volatile(MTIME_LO), ptr::read_volatile(MTIME_HI))
        };
        if hi == again {
            return (u64::from(hi) << 32) | u64::from(lo);
        }
    }
}

/// Sets hart 0's `mtimecmp` without passing through a value below both the old and the new one
/// (which would raise a spurious interrupt).
fn set_mtimecmp(at: u64) {
    // SAFETY: the CLINT's `mtimecmp` registers of hart 0, only written here, in a critical section.
    unsafe {
        ptr::write_volatile(MTIMECMP_HI, u32::MAX);
        ptr::write_volatile(MTIMECMP_LO, at as u32);
        ptr::write_volatile(MTIMECMP_HI, (at >> 32) as u32);
    }
}

/// Disarms the timer; the driver arms it when the first timer is queued.
pub(super) fn start() {
    set_mtimecmp(u64::MAX);
}

/// The `embassy-time` driver: `mtime` as the clock, and the queue of pending timers.
struct ClintDriver {
    /// The timers of every task.
    queue: Mutex<RefCell<Queue>>,
}

embassy_time_driver::time_driver_impl!(static DRIVER: ClintDriver = ClintDriver {
    queue: Mutex::new(RefCell::new(Queue::new())),
});

impl ClintDriver {
    /// Wakes the expired timers and points `mtimecmp` at the next one. If that one expires before
    /// `mtimecmp` is written, the interrupt is simply pending at once (it is level-triggered).
    fn rearm(&self, cs: CriticalSection<'_>) {
        let next = self.queue.borrow_ref_mut(cs).next_expiration(self.now());
        set_mtimecmp(next.saturating_mul(MTIME_PER_TICK));
    }
}

impl Driver for ClintDriver {
    fn now(&self) -> u64 {
        mtime() / MTIME_PER_TICK
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        critical_section::with(|cs| {
            if self.queue.borrow_ref_mut(cs).schedule_wake(at, waker) {
                self.rearm(cs);
            }
        });
    }
}

#[riscv_rt::core_interrupt(Interrupt::MachineTimer)]
fn machine_timer() {
    critical_section::with(|cs| DRIVER.rearm(cs));
}
