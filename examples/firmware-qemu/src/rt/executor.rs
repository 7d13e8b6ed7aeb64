//! An embassy executor that sleeps with WFI until an interrupt brings work (the pattern of
//! embassy's riscv32 executor), the same on every architecture.

use core::marker::PhantomData;

use embassy_executor::{Spawner, raw};
use portable_atomic::{AtomicBool, Ordering};

use super::arch;

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
            // WFI still returns on a pending interrupt, which runs when the section ends. (The
            // swap is a read-modify-write: a critical section of its own where the CPU has no
            // compare-and-swap, nested in this one.)
            critical_section::with(|_| {
                if !WORK.swap(false, Ordering::AcqRel) {
                    arch::wait_for_interrupt();
                }
            });
        }
    }
}
