//! Issue 10, item 7 for `FlashStore`: recovery from bad bytes, fuzzed deterministically. Random
//! flash images and valid images with mutations (bit flips, erased pages, garbage pages, pages
//! copied over others, zeroed words) are opened, recovered, read to the end, appended to and
//! drained. Nothing may panic or hang (every run has a read budget); every batch read back must
//! be one that was written, with its items, in seq order; from random images, none at all.
#![cfg(feature = "flash-store")]
#![allow(missing_docs)]

mod flash_support;

use std::collections::BTreeMap;

use batch_core::store::{Store, StoreError};
use batch_embassy::FlashStore;
use batch_embassy::flash_store::FlashError;
use embassy_futures::block_on;
use flash_support::{
    Batch, CODEC, Flash, LAYOUT, NorError, PAGES, Rng, Store as TestStore, checked, items_of, sb,
};

/// Reads allowed per image: far above what a pass over 4 KiB needs.
const READ_BUDGET: u64 = 2_000_000;
const PAGE: usize = 512;

#[derive(Debug, Default)]
struct Tally {
    images: u64,
    delivered: u64,
    wrong: u64,
    recover_errors: BTreeMap<String, u64>,
    corrupt_reported: u64,
    writable_after: u64,
}

/// Opens `flash`, recovers, reads everything, appends one batch and removes what it read.
/// Returns the batches delivered (checked against `written` by the caller).
async fn exercise(flash: Flash, t: &mut Tally) -> Vec<(u64, Vec<u32>)> {
    let mut flash = flash;
    flash.read_budget = Some(READ_BUDGET);
    let mut store: TestStore = FlashStore::new(flash, LAYOUT, CODEC);
    t.images += 1;
    let no_hang = |e: &StoreError<FlashError<NorError>>| {
        assert_ne!(
            *e,
            StoreError::Io(FlashError::Flash(NorError::ReadBudget)),
            "a store operation does not end"
        );
    };
    let found = match store.recover().await {
        Ok(found) => found,
        Err(e) => {
            no_hang(&e);
            *t.recover_errors.entry(format!("{e:?}")).or_default() += 1;
            return Vec::new();
        }
    };
    t.corrupt_reported += u64::from(store.recovery().corrupt);
    let mut got = Vec::new();
    let mut after = None;
    for _ in 0..1000 {
        let mut out = Batch::new();
        match store.read_after(after, &mut out).await.map(|b| b.map(checked)) {
            Ok(Some(seq)) => {
                got.push((seq, out.to_vec()));
                after = Some(seq);
            }
            Ok(None) => break,
            Err(e) => {
                no_hang(&e);
                break;
            }
        }
    }
    assert!(got.len() < 1000, "read_after does not end");
    for pair in got.windows(2) {
        assert!(pair[0].0 < pair[1].0, "delivered out of order");
    }
    let seq = found.seq_floor;
    match store.append(sb(seq), &[1, 2, 3]).await {
        Ok(()) => t.writable_after += 1,
        Err(e) => no_hang(&e),
    }
    for (old, _) in &got {
        if let Err(e) = store.remove(*old).await {
            no_hang(&e);
        }
    }
    got
}

fn check(got: &[(u64, Vec<u32>)], written: &BTreeMap<u64, Vec<u32>>, t: &mut Tally) {
    for (seq, items) in got {
        t.delivered += 1;
        if written.get(seq) != Some(items) {
            t.wrong += 1;
            eprintln!("delivered batch {seq} was never written: {items:?}");
        }
    }
}

#[test]
fn random_images_deliver_nothing_and_never_panic_or_hang() {
    block_on(async {
        let mut t = Tally::default();
        let none = BTreeMap::new();
        for seed in 0..400u64 {
            let mut rng = Rng(seed ^ 0x00F1_A511);
            let mut flash = Flash::new(PAGES);
            for page in flash.data.chunks_mut(PAGE) {
                // Page by page: erased, random, or random with page markers (closed or open).
                let shape = rng.below(4);
                if shape == 0 {
                    continue;
                }
                for b in page.iter_mut() {
                    *b = rng.byte();
                }
                if shape >= 2 {
                    page[..4].fill(0);
                }
                if shape == 3 {
                    page[PAGE - 4..].fill(0);
                }
            }
            let got = exercise(flash, &mut t).await;
            check(&got, &none, &mut t);
        }
        println!(
            "fuzz, random images: {} opened, {} batches delivered (0 expected), {} corrupt records reported, recover errors {:?}, {} stores writable after",
            t.images, t.delivered, t.corrupt_reported, t.recover_errors, t.writable_after
        );
        assert_eq!(t.delivered, 0);
    });
}

/// A valid image: a run of appends and removals with floors, and what it wrote.
async fn valid_image() -> (Flash, BTreeMap<u64, Vec<u32>>) {
    let mut store: TestStore = FlashStore::new(Flash::new(PAGES), LAYOUT, CODEC);
    store.recover().await.unwrap();
    let mut written = BTreeMap::new();
    for seq in 0..52 {
        written.insert(seq, items_of(seq));
        store.append(sb(seq), &items_of(seq)).await.unwrap();
        if seq % 4 != 3 {
            let mut out = Batch::new();
            let oldest = store.read_after(None, &mut out).await.map(|b| b.map(checked)).unwrap().unwrap();
            if seq % 3 == 0 {
                store.remove(oldest).await.unwrap();
            }
        }
        if seq % 7 == 0 {
            store.persist_seq_floor(seq + 5).await.unwrap();
        }
        if seq > 30 && seq % 2 == 0 {
            let mut out = Batch::new();
            let oldest = store.read_after(None, &mut out).await.map(|b| b.map(checked)).unwrap().unwrap();
            store.remove(oldest).await.unwrap();
        }
    }
    let mut store: TestStore = FlashStore::new(store.into_flash(), LAYOUT, CODEC);
    assert!(store.recover().await.unwrap().batches > 10);
    (store.into_flash(), written)
}

#[test]
fn mutated_images_deliver_only_written_batches_and_never_panic_or_hang() {
    block_on(async {
        let (image, written) = valid_image().await;
        let mut t = Tally::default();
        for seed in 0..1000u64 {
            let mut rng = Rng(seed ^ 0xB17_F11B);
            let mut flash = image.clone();
            let len = flash.data.len();
            for _ in 0..=rng.below(3) {
                let page = rng.below(PAGES as u64) as usize * PAGE;
                match rng.below(6) {
                    // Bit rot: flips both ways.
                    0 | 1 => {
                        for _ in 0..=rng.below(8) {
                            let at = rng.below(len as u64) as usize;
                            flash.data[at] ^= 1 << rng.below(8);
                        }
                    }
                    2 => flash.data[page..page + PAGE].fill(0xFF),
                    3 => flash.data[page..page + PAGE].iter_mut().for_each(|b| *b = rng.byte()),
                    4 => {
                        let from = rng.below(PAGES as u64) as usize * PAGE;
                        flash.data.copy_within(from..from + PAGE, page);
                    }
                    _ => {
                        let at = rng.below(len as u64 / 4) as usize * 4;
                        let end = (at + 4 * (1 + rng.below(8) as usize)).min(len);
                        flash.data[at..end].fill(0);
                    }
                }
            }
            let got = exercise(flash, &mut t).await;
            check(&got, &written, &mut t);
        }
        println!(
            "fuzz, mutated images: {} opened, {} batches delivered, {} not as written (0 expected), {} corrupt records reported, recover errors {:?}, {} stores writable after",
            t.images, t.delivered, t.wrong, t.corrupt_reported, t.recover_errors, t.writable_after
        );
        assert_eq!(t.wrong, 0);
        assert!(t.delivered > 0);
    });
}
