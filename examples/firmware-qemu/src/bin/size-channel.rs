//! `cargo xtask size`, the same job without this library: the producer of `size-batcher` sends
//! into an `embassy_sync::channel::Channel<CriticalSectionRawMutex, u32, 64>`, and a consumer task
//! collects what it receives into batches of up to 16 (or whatever arrived within the 500 ms
//! linger of the first item) for the same trivial handler. This is what a firmware engineer
//! writes by hand; it has no retries, no dead letters, no pause, no urgent items and no metrics.
//! Compared with `size-baseline`, it measures what a hand-rolled batcher on a `Channel` costs.
//! It also runs in QEMU.
#![no_std]
#![no_main]

use defmt::{info, unwrap};
use embassy_executor::Spawner;
use embassy_futures::select::{Either, select};
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::channel::Channel;
use embassy_time::{Duration, Instant, Timer};
use firmware_qemu::rt::{self, entry};
use heapless::Vec;
use portable_atomic::{AtomicU32, Ordering};

/// Items the producer sends.
const ITEMS: u32 = 1000;
/// The largest batch, as `Config::new().max_batch(16)` in `size-batcher`.
const MAX_BATCH: usize = 16;
/// How long the first item of a batch may wait for more (the batcher's default linger).
const LINGER: Duration = Duration::from_millis(500);

/// The channel whose size `cargo xtask size` reads from the ELF's symbol table.
static CHANNEL: Channel<CriticalSectionRawMutex, u32, 64> = Channel::new();

/// What the handler saw.
static SINK: AtomicU32 = AtomicU32::new(0);
/// How many items the handler saw (the producer waits for all of them).
static HANDLED: AtomicU32 = AtomicU32::new(0);

/// The trivial handler work, the same in every binary.
fn handle(batch: &[u32]) {
    for &x in batch {
        SINK.fetch_add(core::hint::black_box(x), Ordering::Relaxed);
    }
    HANDLED.fetch_add(batch.len() as u32, Ordering::Relaxed);
}

#[embassy_executor::task]
async fn producer() {
    for i in 0..ITEMS {
        Timer::after_micros(100).await;
        CHANNEL.send(i).await;
    }
    // Wait for the consumer to hand the last (lingering) batch over.
    while HANDLED.load(Ordering::Relaxed) < ITEMS {
        Timer::after_millis(10).await;
    }
    info!("handled sum {=u32}", SINK.load(Ordering::Relaxed));
    rt::exit_success()
}

/// Collects received items into batches: a batch closes when full or when its first item has
/// waited `LINGER`.
#[embassy_executor::task]
async fn consumer() {
    let mut batch: Vec<u32, MAX_BATCH> = Vec::new();
    loop {
        let first = CHANNEL.receive().await;
        let _ = batch.push(first);
        let deadline = Instant::now() + LINGER;
        while !batch.is_full() {
            match select(CHANNEL.receive(), Timer::at(deadline)).await {
                Either::First(item) => {
                    let _ = batch.push(item);
                }
                Either::Second(()) => break,
            }
        }
        handle(&batch);
        batch.clear();
    }
}

/// The reset entry point.
#[entry]
fn main() -> ! {
    rt::init();
    info!("size-channel starting");
    rt::start(|spawner: Spawner| {
        spawner.spawn(unwrap!(producer()));
        spawner.spawn(unwrap!(consumer()));
    })
}
