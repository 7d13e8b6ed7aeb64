//! `cargo xtask size`, without the batcher: the producer of `size-batcher` calling the same
//! trivial handler directly, one item at a time. The difference between the two binaries is what
//! batch-core and batch-embassy cost. It also runs in QEMU.
//!
//! Like any real firmware (the telemetry app included) it reads the clock and has a reachable
//! panic, so the time driver's clock path and the panic handler's formatting code are in both
//! binaries and the difference is only what the batcher brings.
#![no_std]
#![no_main]

use defmt::{info, unwrap};
use embassy_executor::Spawner;
use embassy_time::Timer;
use firmware_qemu::rt::{self, entry};
use portable_atomic::{AtomicU32, Ordering};

/// What the handler saw.
static SINK: AtomicU32 = AtomicU32::new(0);

/// The trivial handler work, the same in both binaries.
fn handle(batch: &[u32]) {
    for &x in batch {
        SINK.fetch_add(core::hint::black_box(x), Ordering::Relaxed);
    }
}

/// Readings by slot: a bounds-checked index, the reachable panic every firmware has.
static SLOTS: [u32; 4] = [1, 2, 3, 4];

#[embassy_executor::task]
async fn producer() {
    for i in 0..1000 {
        Timer::after_micros(100).await;
        let stamp = embassy_time::Instant::now().as_micros() as u32;
        let slot = SLOTS[core::hint::black_box(i as usize & 3) + usize::from(stamp == u32::MAX)];
        handle(&[i + slot - slot]);
    }
    info!("handled sum {=u32}", SINK.load(Ordering::Relaxed));
    rt::exit_success()
}

/// The reset entry point.
#[entry]
fn main() -> ! {
    rt::init();
    info!("size-baseline starting");
    rt::start(|spawner: Spawner| {
        spawner.spawn(unwrap!(producer()));
    })
}
