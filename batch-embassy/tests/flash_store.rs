//! Issue 10, item 3: `FlashStore` on a NOR flash in RAM — round trip, order, removal (oldest and
//! not), Full, the seq floor across reopening, and records it must refuse (another item type,
//! another format version, a batch larger than the caller's buffer).
#![cfg(feature = "flash-store")]
#![allow(missing_docs)]

mod flash_support;

use batch_core::store::record::{Codec, Corrupt, FORMAT_VERSION};
use batch_core::store::{Store, StoreError};
use batch_embassy::flash_store::{FlashError, NoCache};
use batch_embassy::{FlashLayout, FlashStore};
use embassy_futures::block_on;
use flash_support::{Batch, CODEC, Flash, LAYOUT, PAGES, Store as TestStore, checked, items_of, sb};
use sequential_storage::cache::page_pointers::ArrayPagePointers;
use sequential_storage::cache::page_states::ArrayPageStates;
use sequential_storage::cache::{Cache, Uncached};
use sequential_storage::queue::{QueueConfig, QueueStorage};

fn open(flash: Flash) -> TestStore {
    FlashStore::new(flash, LAYOUT, CODEC)
}

/// Every batch, oldest first.
async fn read_all<S: Store<u32>>(store: &mut S) -> Vec<(u64, Vec<u32>)> {
    let mut got = Vec::new();
    let mut after = None;
    while let Some(seq) = {
        let mut out = Batch::new();
        let seq = store.read_after(after, &mut out).await.map(|b| b.map(checked)).unwrap();
        if let Some(seq) = seq {
            got.push((seq, out.to_vec()));
        }
        seq
    } {
        after = Some(seq);
        assert!(got.len() < 10_000, "read_after does not end");
    }
    got
}

fn seqs(batches: &[(u64, Vec<u32>)]) -> Vec<u64> {
    batches.iter().map(|(seq, _)| *seq).collect()
}

#[test]
fn round_trip_in_order_and_removal_of_oldest_and_not() {
    block_on(async {
        let mut store = open(Flash::new(PAGES));
        let found = store.recover().await.unwrap();
        assert_eq!((found.batches, found.items, found.seq_floor), (0, 0, 0));
        for seq in 1..=5 {
            store.append(sb(seq), &items_of(seq)).await.unwrap();
        }
        let all = read_all(&mut store).await;
        assert_eq!(seqs(&all), [1, 2, 3, 4, 5]);
        for (seq, items) in &all {
            assert_eq!(items, &items_of(*seq));
        }
        // Not the oldest.
        store.remove(3).await.unwrap();
        assert_eq!(seqs(&read_all(&mut store).await), [1, 2, 4, 5]);
        // The oldest; a repeated removal is not an error.
        store.remove(1).await.unwrap();
        store.remove(1).await.unwrap();
        store.remove(3).await.unwrap();
        assert_eq!(seqs(&read_all(&mut store).await), [2, 4, 5]);
        let mut out = Batch::new();
        assert_eq!(store.read_after(Some(2), &mut out).await.map(|b| b.map(checked)).unwrap(), Some(4));
        assert_eq!(&out[..], &items_of(4)[..]);

        // Everything survives a reopen.
        let mut store = open(store.into_flash());
        let found = store.recover().await.unwrap();
        let items: usize = [2, 4, 5].iter().map(|s| items_of(*s).len()).sum();
        assert_eq!((found.batches, found.items, found.seq_floor), (3, items as u64, 6));
        assert_eq!(seqs(&read_all(&mut store).await), [2, 4, 5]);
        assert_eq!(store.recovery().corrupt, 0);
    });
}

#[test]
fn seqs_must_grow() {
    block_on(async {
        let mut store = open(Flash::new(PAGES));
        store.append(sb(7), &[1]).await.unwrap();
        assert_eq!(
            store.append(sb(7), &[2]).await,
            Err(StoreError::Io(FlashError::SeqNotIncreasing { seq: 7, newest: 7 }))
        );
        assert_eq!(seqs(&read_all(&mut store).await), [7]);
    });
}

#[test]
fn full_flash_says_full_and_takes_batches_again_after_removal() {
    block_on(async {
        let mut store = open(Flash::new(PAGES));
        store.recover().await.unwrap();
        let mut seq = 0;
        let full = loop {
            match store.append(sb(seq), &items_of(seq)).await {
                Ok(()) => seq += 1,
                Err(e) => break e,
            }
            assert!(seq < 1000, "never full");
        };
        assert_eq!(full, StoreError::Full);
        let stored = seq;
        assert!(stored > 20, "{stored} batches fill 3 KiB");
        assert_eq!(seqs(&read_all(&mut store).await), (0..stored).collect::<Vec<_>>());
        // Full again and again, with nothing lost.
        assert_eq!(store.append(sb(seq), &items_of(seq)).await, Err(StoreError::Full));
        // Freeing the oldest batches frees their pages.
        for old in 0..stored / 2 {
            store.remove(old).await.unwrap();
        }
        store.append(sb(seq), &items_of(seq)).await.unwrap();
        let mut expect: Vec<u64> = (stored / 2..stored).collect();
        expect.push(seq);
        assert_eq!(seqs(&read_all(&mut store).await), expect);

        // A batch larger than the record buffer can never be stored: not Full, an error.
        let huge: Vec<u32> = (0..200).map(|i| i << 20).collect();
        assert_eq!(store.append(sb(seq + 1), &huge).await, Err(StoreError::Io(FlashError::RecordTooBig)));
    });
}

#[test]
fn the_seq_floor_survives_reopening_and_removal_of_the_newest_batch() {
    block_on(async {
        let mut store = open(Flash::new(PAGES));
        store.recover().await.unwrap();
        store.persist_seq_floor(50).await.unwrap();
        store.persist_seq_floor(10).await.unwrap(); // lower: nothing to do
        let mut store = open(store.into_flash());
        assert_eq!(store.recover().await.unwrap().seq_floor, 50);
        assert_eq!(store.recovery().floor_records, 1);

        // The store's newest batch raises the floor, even once it is removed.
        store.append(sb(60), &[6]).await.unwrap();
        store.append(sb(61), &[6]).await.unwrap();
        store.remove(60).await.unwrap();
        store.remove(61).await.unwrap();
        let mut store = open(store.into_flash());
        let found = store.recover().await.unwrap();
        assert_eq!((found.batches, found.seq_floor), (0, 62));

        // Many floors wrap the two floor pages around without filling them.
        for floor in 100..1100 {
            store.persist_seq_floor(floor).await.unwrap();
        }
        let mut store = open(store.into_flash());
        assert_eq!(store.recover().await.unwrap().seq_floor, 1099);
        assert_eq!(store.recovery().floor_records, 1);
    });
}

#[test]
fn records_of_another_item_type_are_reported_and_never_delivered() {
    block_on(async {
        let mut store = open(Flash::new(PAGES));
        for seq in 1..=3 {
            store.append(sb(seq), &items_of(seq)).await.unwrap();
        }
        let other: FlashStore<Flash, u32, 256> =
            FlashStore::new(store.into_flash(), LAYOUT, Codec::new(0x0BAD_7A90));
        let mut other = other;
        let found = other.recover().await.unwrap();
        assert_eq!(found.batches, 0);
        assert_eq!(other.recovery().corrupt, 3);
        assert_eq!(
            other.recovery().first_corrupt,
            Some(Corrupt::TypeTag { expected: 0x0BAD_7A90, found: CODEC.tag() })
        );
        assert!(read_all(&mut other).await.is_empty());
        // The store stays usable; a removal pops the corrupt records in front of it.
        other.append(sb(10), &[1, 2]).await.unwrap();
        assert_eq!(read_all(&mut other).await, [(10, vec![1, 2])]);
        other.remove(10).await.unwrap();
        let mut other: FlashStore<Flash, u32, 256> =
            FlashStore::new(other.into_flash(), LAYOUT, Codec::new(0x0BAD_7A90));
        other.recover().await.unwrap();
        assert_eq!(other.recovery().corrupt, 0);
    });
}

#[test]
fn records_of_another_format_version_are_reported_and_never_delivered() {
    block_on(async {
        // Valid records as far as the queue is concerned, but of format version 2.
        let mut buf = [0u8; 256];
        let mut queue =
            QueueStorage::new(Flash::new(PAGES), QueueConfig::new(0..6 * 512), Cache::new_uncached());
        let mut aligned = Aligned([0; 256]);
        for seq in 1..=2 {
            let record = CODEC.encode(sb(seq), &items_of(seq), &mut buf).unwrap();
            let len = record.len();
            aligned.0[..len].copy_from_slice(record);
            aligned.0[4] = FORMAT_VERSION + 1;
            queue.push(&aligned.0[..len], false).await.unwrap();
        }
        let mut store = open(queue.destroy().0);
        assert_eq!(store.recover().await.unwrap().batches, 0);
        assert_eq!(store.recovery().corrupt, 2);
        assert_eq!(store.recovery().first_corrupt, Some(Corrupt::Version { found: FORMAT_VERSION + 1 }));
        assert!(read_all(&mut store).await.is_empty());
        assert_eq!(store.skipped(), 2);
    });
}

#[repr(align(4))]
struct Aligned([u8; 256]);

#[test]
fn a_batch_larger_than_the_readers_buffer_is_an_error_and_leaves_it_untouched() {
    block_on(async {
        let mut store = open(Flash::new(PAGES));
        store.append(sb(1), &[1, 2, 3, 4, 5]).await.unwrap();
        let mut small: heapless::Vec<u32, 4> = heapless::Vec::new();
        small.push(99).unwrap();
        assert_eq!(
            store.read_after(None, &mut small).await.map(|b| b.map(checked)),
            Err(StoreError::Corrupt(Corrupt::TooManyItems { count: 5 }))
        );
        assert_eq!(&small[..], &[99]);
    });
}

#[test]
fn a_store_with_sequential_storage_caches_behaves_the_same() {
    type Cached = FlashStore<Flash, u32, 256, Cache<ArrayPageStates<6>, ArrayPagePointers<6>, Uncached>>;
    block_on(async {
        let cache = || Cache::new(ArrayPageStates::<6>::new(), ArrayPagePointers::<6>::new(), Uncached);
        let mut store: Cached = FlashStore::with_cache(Flash::new(PAGES), LAYOUT, CODEC, cache());
        store.recover().await.unwrap();
        for seq in 0..200 {
            store.append(sb(seq), &items_of(seq)).await.unwrap();
            if seq >= 10 {
                let mut out = Batch::new();
                let oldest = store.read_after(None, &mut out).await.map(|b| b.map(checked)).unwrap().unwrap();
                store.remove(oldest).await.unwrap();
            }
        }
        let kept = read_all(&mut store).await;
        assert_eq!(seqs(&kept), (190..200).collect::<Vec<_>>());
        let (flash, _) = store.into_parts();
        let mut store: Cached = FlashStore::with_cache(flash, LAYOUT, CODEC, cache());
        assert_eq!(store.recover().await.unwrap().batches, 10);
        assert_eq!(read_all(&mut store).await, kept);
    });
}

#[test]
fn layouts_are_checked() {
    use batch_embassy::flash_store::LayoutError;
    assert_eq!(FlashLayout::<Flash>::try_new(0..1024, 1024..1536).unwrap_err(), LayoutError::FloorsTooSmall);
    assert_eq!(FlashLayout::<Flash>::try_new(0..2048, 1024..2048).unwrap_err(), LayoutError::Overlap);
    assert!(matches!(FlashLayout::<Flash>::try_new(0..1000, 1024..2048), Err(LayoutError::Batches(_))));
    assert!(matches!(FlashLayout::<Flash>::try_new(0..1024, 1024..2000), Err(LayoutError::Floors(_))));
    let _: FlashStore<Flash, u32, 64, NoCache> = FlashStore::new(Flash::new(PAGES), LAYOUT, CODEC);
}
