//! Embassy adapter for [`batch_core`]: a batcher that lives in a `static`, fed by any task, and
//! drained by a [`Runner`] task that waits on `embassy_time::Timer::at(deadline)`.
//!
//! `#![no_std]`, no allocator. Time comes from `embassy-time`; this crate never enables a tick
//! rate or a time driver: the firmware picks those (esp-rtos, embassy-stm32's `time-driver-*`,
//! or your own). Locks are `embassy-sync` blocking mutexes over a `RawMutex` you choose
//! (`CriticalSectionRawMutex` to share with interrupts and other executors,
//! `NoopRawMutex`/`ThreadModeRawMutex` within one executor). `async-lock` is not used: it needs
//! an allocator and compare-and-swap atomics, which thumbv6m and riscv32imc lack.
//!
//! ```
//! use batch_embassy::{Batcher, BatchInfo, Config};
//! use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
//! use embassy_time::Duration;
//!
//! const CONFIG: Config = Config::new().max_batch(16).linger(batch_embassy::millis(500)).max_attempts(3);
//! // An invalid CONFIG fails the build here, naming the field.
//! static READINGS: Batcher<CriticalSectionRawMutex, u32, 64> = Batcher::new(CONFIG);
//!
//! // In a sensor task:
//! async fn sense() {
//!     READINGS.add(21).await.unwrap();
//! }
//!
//! // In the uplink task (spawned once; `run` returns after `close` once drained):
//! async fn uplink() {
//!     let mut runner = READINGS.runner(async |batch: &[u32], info: BatchInfo| {
//!         // send the batch; an Err is retried with backoff, then dead-lettered
//!         let _ = (batch, info);
//!         Ok::<(), ()>(())
//!     });
//!     runner.run().await;
//! }
//! # let _ = (sense, uplink, Duration::from_secs(1));
//! ```
//!
//! Nothing is lost and nothing hangs: [`Runner::run`] is cancel-safe (a `select` with a timer
//! may lose at any point; the next `run` resumes the held batch), a dropped runner hands its
//! batch to [`Handler::returned`], any number of tasks may wait on one batcher without being
//! polled while nothing changes, a handler may call back into its own batcher without a
//! deadlock, and [`Batcher::shutdown_timeout`] with [`Batcher::take_unsent`] bounds a shutdown
//! and hands every unsent item back. The [`Batcher`] and [`Runner`] docs say where items go and
//! how long each call can take in each case.
#![no_std]
#![forbid(unsafe_code)]

mod batcher;
#[cfg(feature = "flash-store")]
pub mod flash_store;
mod handler;
mod runner;
#[cfg(feature = "store")]
pub mod store_runner;
mod wait;

#[cfg(feature = "store")]
pub use batch_core::store::{Store, StorePolicy};
pub use batch_core::{
    Config, ConfigError, Count, Duration as CoreDuration, FlushCounts, Metrics, Overflow, PushError, Trigger,
};
pub use batcher::{Batcher, ShutdownReport};
#[cfg(feature = "flash-store")]
pub use flash_store::{FlashError, FlashLayout, FlashStore};
pub use handler::{BatchInfo, Handler, Verdict, WithDeadLetter};
pub use runner::Runner;
#[cfg(feature = "store")]
pub use store_runner::StoreRunner;

/// A core [`Config`] duration from milliseconds, for `const` configurations.
///
/// ```
/// assert_eq!(batch_embassy::millis(5).as_micros(), 5_000);
/// ```
pub const fn millis(ms: u64) -> batch_core::Duration {
    batch_core::Duration::from_millis(ms)
}

/// The current embassy time as core time.
pub(crate) fn now() -> batch_core::Instant {
    batch_core::Instant::from_micros(embassy_time::Instant::now().as_micros())
}

/// Core time as embassy time, rounded up to the next tick. (`Instant::from_micros` rounds down:
/// at a tick rate that does not divide 1 MHz, such as 32 768 Hz, a timer would then fire on the
/// tick before the deadline, the core would find nothing due yet, and the runner would re-arm
/// the same, already past, tick and busy-poll until the next one.)
pub(crate) fn to_embassy(at: batch_core::Instant) -> embassy_time::Instant {
    const fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    const GCD: u64 = gcd(embassy_time::TICK_HZ, 1_000_000);
    const NUM: u64 = embassy_time::TICK_HZ / GCD;
    const DEN: u64 = 1_000_000 / GCD;
    let ticks = at.as_micros().checked_mul(NUM).map_or(u64::MAX, |t| t.div_ceil(DEN));
    embassy_time::Instant::from_ticks(ticks)
}
