//! `size-batcher` with store and forward: the same producer, batcher and trivial handler, with a
//! store policy (write-ahead: every batch goes to flash before its first attempt) and the runner
//! driving batch-embassy's `FlashStore` on a NOR flash in RAM. Beside `size-batcher` it measures
//! what the store costs in flash (`FlashStore`, `sequential-storage`, the record format, the
//! store runner and the core's store policy) and RAM (the batcher's store state, the store and
//! its record buffer in the runner task). Built only with the `store` feature; it also runs in
//! QEMU.
#![no_std]
#![no_main]

use core::cell::RefCell;

use batch_core::store::record::Codec;
use batch_embassy::{BatchInfo, Batcher, Config, FlashLayout, FlashStore, StorePolicy};
use defmt::{info, unwrap};
use embassy_executor::Spawner;
use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::blocking_mutex::raw::{CriticalSectionRawMutex, NoopRawMutex};
use embassy_time::Timer;
use embedded_storage_async::nor_flash::{
    ErrorType, MultiwriteNorFlash, NorFlash, NorFlashErrorKind, ReadNorFlash,
};
use firmware_qemu::rt::{self, entry};
use portable_atomic::{AtomicU32, Ordering};

/// The batcher, as in `size-batcher`, with write-ahead to the store.
static BATCHER: Batcher<CriticalSectionRawMutex, u32, 64> =
    Batcher::new(Config::new().max_batch(16).store(StorePolicy::new().write_ahead(true)));

/// Bytes of a flash page.
const PAGE: usize = 1024;

/// The flash medium (a board's flash is not RAM: it is kept out of the measured task storage).
static MEDIUM: Mutex<CriticalSectionRawMutex, RefCell<[u8; 8 * PAGE]>> =
    Mutex::new(RefCell::new([0xFF; 8 * PAGE]));

/// A NOR flash driver over [`MEDIUM`]: writes clear bits in 4-byte words, erases set pages.
struct RamNor;

impl ErrorType for RamNor {
    type Error = NorFlashErrorKind;
}

fn range(offset: u32, len: usize, align: usize) -> Result<core::ops::Range<usize>, NorFlashErrorKind> {
    let start = offset as usize;
    if !start.is_multiple_of(align) || !len.is_multiple_of(align) {
        return Err(NorFlashErrorKind::NotAligned);
    }
    if start + len > 8 * PAGE {
        return Err(NorFlashErrorKind::OutOfBounds);
    }
    Ok(start..start + len)
}

impl ReadNorFlash for RamNor {
    const READ_SIZE: usize = 4;
    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let r = range(offset, bytes.len(), 4)?;
        MEDIUM.lock(|m| bytes.copy_from_slice(&m.borrow()[r]));
        Ok(())
    }
    fn capacity(&self) -> usize {
        8 * PAGE
    }
}

impl NorFlash for RamNor {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = PAGE;
    async fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        let r = range(from, to.saturating_sub(from) as usize, PAGE)?;
        MEDIUM.lock(|m| m.borrow_mut()[r].fill(0xFF));
        Ok(())
    }
    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        let r = range(offset, bytes.len(), 4)?;
        MEDIUM.lock(|m| {
            for (cell, new) in m.borrow_mut()[r].iter_mut().zip(bytes) {
                *cell &= new;
            }
        });
        Ok(())
    }
}

impl MultiwriteNorFlash for RamNor {}

/// Six pages of batches, two of sequence-number floors.
const LAYOUT: FlashLayout<RamNor> = FlashLayout::new(0..6 * PAGE as u32, 6 * PAGE as u32..8 * PAGE as u32);

/// What the handler saw.
static SINK: AtomicU32 = AtomicU32::new(0);

/// The trivial handler work, the same in every size binary.
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
    // Records of up to 16 `u32`s: a 29-byte header, at most 80 bytes of items, a CRC.
    let store: FlashStore<RamNor, u32, 128> = FlashStore::new(RamNor, LAYOUT, Codec::new(0x5122_0001));
    let store = embassy_sync::mutex::Mutex::<NoopRawMutex, _>::new(store);
    let mut runner = BATCHER
        .runner(async |batch: &[u32], _: BatchInfo| {
            handle(batch);
            Ok::<(), ()>(())
        })
        .store(&store);
    runner.run().await;
}

/// The reset entry point.
#[entry]
fn main() -> ! {
    rt::init();
    info!("size-store starting");
    rt::start(|spawner: Spawner| {
        spawner.spawn(unwrap!(producer()));
        spawner.spawn(unwrap!(runner()));
    })
}
