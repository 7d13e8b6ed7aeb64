//! `cargo xtask size`, with the batcher: a producer adds 1000 `u32`s to a
//! `Batcher<CriticalSectionRawMutex, u32, 64>` and a runner task hands them to a trivial handler.
//! Compared with `size-baseline` (the same program calling the handler directly), it measures
//! what batch-core and batch-embassy cost in flash and RAM. It also runs in QEMU.
#![no_std]
#![no_main]

use batch_embassy::{BatchInfo, Batcher, Config};
use defmt::{info, unwrap};
use embassy_executor::Spawner;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_time::Timer;
use firmware_qemu::rt::{self, entry};
use portable_atomic::{AtomicU32, Ordering};

/// The batcher whose size `cargo xtask size` reads from the ELF's symbol table.
static BATCHER: Batcher<CriticalSectionRawMutex, u32, 64> = Batcher::new(Config::new().max_batch(16));

/// What the handler saw.
static SINK: AtomicU32 = AtomicU32::new(0);

/// The trivial handler work, the same in both binaries.
fn handle(batch: &[u32]) {
    for &x in batch {
        SINK.fetch_add(core::hint::black_box(x), Ordering::Relaxed);
    }
}

#[embassy_executor::task]
async fn producer() {
    for i in 0..1000 {
        Timer::after_micros(100).await;
        unwrap!(BATCHER.add(i).await);
    }
    BATCHER.shutdown().await;
    info!("handled sum {=u32}", SINK.load(Ordering::Relaxed));
    rt::exit_success()
}

#[embassy_executor::task]
async fn runner() {
    let mut runner = BATCHER.runner(async |batch: &[u32], _: BatchInfo| {
        handle(batch);
        Ok::<(), ()>(())
    });
    runner.run().await;
}

/// The reset entry point.
#[entry]
fn main() -> ! {
    rt::init();
    info!("size-batcher starting");
    rt::start(|spawner: Spawner| {
        spawner.spawn(unwrap!(producer()));
        spawner.spawn(unwrap!(runner()));
    })
}
