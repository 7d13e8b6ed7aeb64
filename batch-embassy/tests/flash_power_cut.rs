//! Issue 10, item 5 (host): the power is cut at every word written and every page erased of a
//! scripted run of `FlashStore` (appends, removals of the oldest and of a newer batch, floors,
//! a full flash, a drained store), on a NOR mock whose cuts tear the word being written and leave
//! an erase undone, half done, done, or undefined. After each cut the flash is reopened and
//! recovered, and everything is read back: every batch acknowledged as stored is there, in seq
//! order; nothing was invented; a removal that was acknowledged stays done; the recovered floor is
//! above every seq appended and every floor persisted; and the store takes new batches again.
#![cfg(feature = "flash-store")]
#![allow(missing_docs)]

mod flash_support;

use std::collections::{BTreeMap, BTreeSet};

use batch_core::store::{Store, StoreError};
use batch_embassy::FlashStore;
use batch_embassy::flash_store::FlashError;
use embassy_futures::block_on;
use flash_support::{
    Batch, CODEC, EraseCut, Flash, LAYOUT, NorError, PAGES, Rng, Store as TestStore, checked, items_of, sb,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Recover,
    Append(u64),
    Read,
    Remove(u64),
    Floor(u64),
}

/// What the scripted run was told, up to the cut.
#[derive(Debug, Default)]
struct Model {
    /// Every batch an append was started for.
    written: BTreeMap<u64, Vec<u32>>,
    /// Appends acknowledged and not removed (acknowledged).
    stored: BTreeSet<u64>,
    /// Removals acknowledged.
    removed: BTreeSet<u64>,
    /// The highest seq whose append was acknowledged.
    newest: Option<u64>,
    /// The highest floor whose persisting was acknowledged.
    floor: u64,
    /// The operation the cut hit.
    cut_in: Option<Op>,
    fulls: u32,
}

/// Stops the script at the cut (the first error that is the power going off).
macro_rules! step {
    ($m:expr, $op:expr, $call:expr) => {
        match $call {
            Ok(v) => v,
            Err(StoreError::Io(FlashError::Flash(NorError::PowerOff))) => {
                $m.cut_in = Some($op);
                return;
            }
            Err(e) => panic!("{:?} failed with {e:?} before any cut", $op),
        }
    };
}

async fn append(store: &mut TestStore, m: &mut Model, seq: u64) -> Option<bool> {
    m.written.insert(seq, items_of(seq));
    match store.append(sb(seq), &items_of(seq)).await {
        Ok(()) => {
            m.stored.insert(seq);
            m.newest = Some(seq);
            Some(true)
        }
        Err(StoreError::Full) => {
            m.fulls += 1;
            Some(false)
        }
        Err(StoreError::Io(FlashError::Flash(NorError::PowerOff))) => {
            m.cut_in = Some(Op::Append(seq));
            None
        }
        Err(e) => panic!("append {seq} failed with {e:?} before any cut"),
    }
}

/// The scripted run. Returns at the cut, or at its end.
async fn script(store: &mut TestStore, m: &mut Model) {
    let found = step!(m, Op::Recover, store.recover().await);
    let mut next = found.seq_floor;
    // Like a core reserving seqs ahead.
    step!(m, Op::Floor(next + 8), store.persist_seq_floor(next + 8).await);
    m.floor = next + 8;

    macro_rules! append {
        () => {{
            let Some(ok) = append(store, m, next).await else { return };
            next += 1;
            ok
        }};
    }
    macro_rules! remove_oldest {
        () => {{
            let mut out = Batch::new();
            if let Some(seq) =
                step!(m, Op::Read, store.read_after(None, &mut out).await.map(|b| b.map(checked)))
            {
                assert_eq!(&out[..], &items_of(seq)[..]);
                step!(m, Op::Remove(seq), store.remove(seq).await);
                m.stored.remove(&seq);
                m.removed.insert(seq);
            }
        }};
    }
    macro_rules! persist {
        () => {{
            step!(m, Op::Floor(next + 8), store.persist_seq_floor(next + 8).await);
            m.floor = m.floor.max(next + 8);
        }};
    }

    // A: steady traffic.
    for i in 0..12 {
        append!();
        if i % 3 == 2 {
            remove_oldest!();
        }
        if i % 5 == 4 {
            persist!();
        }
    }
    // B: fill the flash.
    for _ in 0..100 {
        if !append!() {
            break;
        }
    }
    assert!(m.fulls > 0, "the script fills the flash");
    // C: remove a batch that is not the oldest, then drain to two.
    let second = *m.stored.iter().nth(1).expect("two batches stored");
    step!(m, Op::Remove(second), store.remove(second).await);
    m.stored.remove(&second);
    m.removed.insert(second);
    while m.stored.len() > 2 {
        remove_oldest!();
    }
    // D: wrap around the pages.
    for i in 0..24 {
        append!();
        if i % 2 == 1 {
            remove_oldest!();
        }
        if i % 3 == 2 {
            persist!();
        }
    }
    // E: drain.
    while !m.stored.is_empty() {
        remove_oldest!();
    }
    // F: past the persisted floor, then drain: removing the newest batch first persists a floor
    // above it.
    for _ in 0..12 {
        if !append!() {
            break;
        }
    }
    assert!(m.newest.is_some_and(|newest| newest >= m.floor), "the script appends past the floor");
    while !m.stored.is_empty() {
        remove_oldest!();
    }
    // G: many floors (the floor pages wrap around).
    for _ in 0..30 {
        next += 1;
        persist!();
    }
    // H: a few more batches.
    for _ in 0..2 {
        append!();
    }
}

#[derive(Debug, Default)]
struct Tally {
    cuts: u64,
    cuts_in_erase: u64,
    checked: u64,
    lost: u64,
    invented: u64,
    back: u64,
    redelivered: u64,
    low_floor: u64,
}

async fn read_all(store: &mut TestStore) -> Vec<(u64, Vec<u32>)> {
    let mut got = Vec::new();
    let mut after = None;
    loop {
        let mut out = Batch::new();
        match store.read_after(after, &mut out).await.map(|b| b.map(checked)).expect("read after recovery") {
            Some(seq) => {
                got.push((seq, out.to_vec()));
                after = Some(seq);
            }
            None => return got,
        }
        assert!(got.len() < 1000, "read_after does not end");
    }
}

/// Reopens the flash after the cut and checks everything; returns the flash.
async fn check_after_cut(flash: Flash, m: &Model, t: &mut Tally, cut: u64) -> Flash {
    let mut store: TestStore = FlashStore::new(flash, LAYOUT, CODEC);
    let found = store
        .recover()
        .await
        .unwrap_or_else(|e| panic!("cut {cut} in {:?}: recover failed: {e:?}", m.cut_in));
    let got = read_all(&mut store).await;
    assert_eq!(found.batches, got.len() as u64, "cut {cut}: recover counts what reads deliver");
    for pair in got.windows(2) {
        assert!(pair[0].0 < pair[1].0, "cut {cut}: out of order");
    }
    let got_seqs: BTreeSet<u64> = got.iter().map(|(seq, _)| *seq).collect();
    for (seq, items) in &got {
        if m.written.get(seq) != Some(items) {
            t.invented += 1;
            eprintln!("cut {cut} in {:?}: batch {seq} was never written: {items:?}", m.cut_in);
        }
        if m.removed.contains(seq) {
            t.back += 1;
            eprintln!(
                "cut {cut} in {:?}: batch {seq} came back after its removal was acknowledged",
                m.cut_in
            );
        }
    }
    if let Some(Op::Remove(seq)) = m.cut_in {
        t.redelivered += u64::from(got_seqs.contains(&seq));
    }
    for seq in &m.stored {
        t.checked += 1;
        if !got_seqs.contains(seq) && m.cut_in != Some(Op::Remove(*seq)) {
            t.lost += 1;
            eprintln!("cut {cut} in {:?}: acknowledged batch {seq} is lost", m.cut_in);
        }
    }
    let above_all = m.newest.map_or(0, |n| n + 1).max(m.removed.last().map_or(0, |r| r + 1)).max(m.floor);
    if found.seq_floor < above_all {
        t.low_floor += 1;
        eprintln!("cut {cut} in {:?}: floor {} below {above_all}", m.cut_in, found.seq_floor);
    }
    // The store works on: a new batch at the floor, read back, everything removed.
    let seq = found.seq_floor;
    let mut freed = 0;
    loop {
        match store.append(sb(seq), &[7, 7, 7]).await {
            Ok(()) => break,
            // The cut hit a full flash: make room as a core would, by delivering the oldest.
            Err(StoreError::Full) if freed < got.len() => {
                store.remove(got[freed].0).await.unwrap();
                freed += 1;
            }
            Err(e) => panic!("cut {cut} in {:?}: append after recovery ({freed} removed): {e:?}", m.cut_in),
        }
    }
    let again = read_all(&mut store).await;
    assert_eq!(again.last(), Some(&(seq, vec![7, 7, 7])), "cut {cut}");
    for (old, _) in again {
        store.remove(old).await.unwrap();
    }
    let mut store: TestStore = FlashStore::new(store.into_flash(), LAYOUT, CODEC);
    let last = store.recover().await.unwrap();
    assert_eq!((last.batches, last.seq_floor > seq), (0, true), "cut {cut}");
    store.into_flash()
}

#[test]
fn power_cut_at_every_write_and_erase_recovers_every_acknowledged_batch() {
    block_on(async {
        // The run without a cut: how many program units it has.
        let mut store: TestStore = FlashStore::new(Flash::new(PAGES), LAYOUT, CODEC);
        let mut full = Model::default();
        script(&mut store, &mut full).await;
        assert_eq!(full.cut_in, None);
        let flash = store.into_flash();
        let units = flash.units;
        let appended = full.written.len();

        // Every unit with a random tear or erase shape, then every erase once more with each shape.
        let shapes = [EraseCut::Untouched, EraseCut::Prefix, EraseCut::Done, EraseCut::Undefined];
        let runs = (0..units)
            .map(|cut| (cut, None))
            .chain(flash.erase_units.iter().flat_map(|&cut| shapes.map(|shape| (cut, Some(shape)))));
        let mut t = Tally::default();
        for (cut, shape) in runs {
            let mut flash = Flash::new(PAGES);
            flash.cut_at = Some(cut);
            flash.erase_cut = shape;
            flash.rng = Rng(cut.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x5EED);
            let mut store: TestStore = FlashStore::new(flash, LAYOUT, CODEC);
            let mut m = Model::default();
            script(&mut store, &mut m).await;
            let mut flash = store.into_flash();
            assert!(m.cut_in.is_some() && flash.off, "cut {cut} of {units} did not happen");
            t.cuts += 1;
            t.cuts_in_erase += u64::from(flash.cut_in_erase);
            flash.power_on();
            check_after_cut(flash, &m, &mut t, cut).await;
        }
        println!(
            "power cuts: {} injected ({} in page erases, every erase with each of 4 outcomes), {} acknowledged batches checked after them, {} lost, {} invented, {} came back after an acknowledged removal, {} floors too low; {} batches redelivered after a cut in their removal; run of {appended} appends, {} word writes, {} erases",
            t.cuts,
            t.cuts_in_erase,
            t.checked,
            t.lost,
            t.invented,
            t.back,
            t.low_floor,
            t.redelivered,
            flash.words,
            flash.erases,
        );
        assert_eq!((t.lost, t.invented, t.back, t.low_floor), (0, 0, 0, 0), "{t:?}");
        assert!(t.cuts_in_erase > 0 && t.checked > 0);
    });
}
