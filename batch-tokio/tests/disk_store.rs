//! `DiskStore`: the store's contract on a real file, damaged files, and a process-kill crash test.
//! `cargo test -p batch-tokio --features disk-store --test disk_store`
#![cfg(feature = "disk-store")]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use batch_core::store::record::Corrupt;
use batch_core::store::{Recovered, Store, StoreError, StoredBatch};
use batch_tokio::DiskStore;
use batch_tokio::disk_store::{DiskStoreError, Problem};
use serde::{Deserialize, Serialize};

const TAG: u32 = 0x5EAD_0001;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Reading {
    ts: u64,
    sensor: u32,
    value: f64,
}

/// The items of batch `seq`: 1 to 50 readings, all derived from `seq`.
fn batch(seq: u64) -> Vec<Reading> {
    (0..=(seq % 50))
        .map(|i| Reading {
            ts: seq * 1000 + i,
            sensor: (i % 7) as u32,
            value: f64::from((seq + i) as u32) * 0.5,
        })
        .collect()
}

mod common;
use common::TempDir;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

async fn open(path: &Path) -> DiskStore<Reading> {
    DiskStore::open(path, TAG).await.unwrap()
}

/// Batch `seq`'s header as these tests store it (a birth derived from the seq).
fn sb(seq: u64) -> StoredBatch {
    StoredBatch { seq, born_ms: 1_764_000_000_000 + seq }
}

/// The seq of a header read back, after checking its birth came back as stored.
fn checked(b: StoredBatch) -> u64 {
    assert_eq!(b, sb(b.seq), "the birth is kept with the batch");
    b.seq
}

/// Every batch in the store, oldest first, through `read_after`.
async fn read_all(store: &mut DiskStore<Reading>) -> Vec<(u64, Vec<Reading>)> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let mut out = Vec::with_capacity(20_000);
        match store.read_after(after, &mut out).await.unwrap().map(checked) {
            Some(seq) => {
                all.push((seq, out));
                after = Some(seq);
            }
            None => return all,
        }
    }
}

fn seqs(all: &[(u64, Vec<Reading>)]) -> Vec<u64> {
    all.iter().map(|(s, _)| *s).collect()
}

fn send<S: Send>(s: S) -> S {
    s
}

#[tokio::test]
async fn round_trip_in_seq_order() {
    let dir = TempDir::new("disk-store-round-trip");
    let mut store = open(&dir.file()).await;
    assert_eq!(store.recover().await.unwrap(), Recovered { batches: 0, items: 0, seq_floor: 0 });
    for seq in [3, 7, 8, 120] {
        store.append(sb(seq), &batch(seq)).await.unwrap();
    }
    // The store and its futures are `Send`: a store can live in a spawned task.
    let items = batch(1);
    let mut out = Vec::with_capacity(64);
    let mut store = send(store);
    send(store.append(sb(1), &items)).await.unwrap();
    send(store.read_after(None, &mut out)).await.unwrap().map(checked);
    send(store.remove(1)).await.unwrap();
    send(store.recover()).await.unwrap();
    send(store.persist_seq_floor(0)).await.unwrap();
    let all = read_all(&mut store).await;
    assert_eq!(seqs(&all), [3, 7, 8, 120]);
    for (seq, items) in &all {
        assert_eq!(items, &batch(*seq));
    }
    let mut out = Vec::with_capacity(64);
    assert_eq!(store.read_after(Some(7), &mut out).await.unwrap().map(checked), Some(8));
    assert_eq!(out, batch(8));
    assert_eq!(store.read_after(Some(120), &mut out).await.unwrap().map(checked), None);
    assert_eq!(store.read_after(Some(u64::MAX), &mut out).await.unwrap().map(checked), None);
    // A buffer too small for the batch: an error, nothing delivered, the record kept.
    let mut small = Vec::with_capacity(2);
    assert_eq!(
        store
            .read_after(Some(7), &mut small)
            .await
            .map_err(|e| matches!(e, StoreError::Corrupt(Corrupt::TooManyItems { count: 9 }))),
        Err(true)
    );
    assert!(small.is_empty());
    assert_eq!(store.corrupt().count, 0);
    // A seq appended twice is refused (the first stays).
    assert!(matches!(store.append(sb(8), &batch(9)).await, Err(StoreError::Io(DiskStoreError::Database(_)))));
    // Empty batches and large ones.
    store.append(sb(200), &[]).await.unwrap();
    let big: Vec<Reading> = (0..20_000).map(|i| Reading { ts: i, sensor: 1, value: 2.0 }).collect();
    store.append(sb(201), &big).await.unwrap();
    let all = read_all(&mut store).await;
    assert_eq!(seqs(&all), [3, 7, 8, 120, 200, 201]);
    assert_eq!(all[2].1, batch(8));
    assert!(all[4].1.is_empty());
    let mut out = Vec::with_capacity(20_000);
    assert_eq!(store.read_after(Some(200), &mut out).await.unwrap().map(checked), Some(201));
    assert_eq!(out, big);
    store.close().await;
}

/// On a single-thread runtime another task keeps running while the store's I/O is under way:
/// the futures only wait for the store's thread.
#[tokio::test(flavor = "current_thread")]
async fn the_runtime_thread_is_free_during_disk_io() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let dir = TempDir::new("disk-store-no-block");
    let ticks = Arc::new(AtomicU64::new(0));
    let ticker = tokio::spawn({
        let ticks = ticks.clone();
        async move {
            loop {
                ticks.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        }
    });
    let mut store = open(&dir.file()).await;
    store.recover().await.unwrap();
    for seq in 0..20 {
        let before = ticks.load(Ordering::Relaxed);
        store.append(sb(seq), &batch(seq)).await.unwrap();
        let mut out = Vec::with_capacity(64);
        store.read_after(None, &mut out).await.unwrap().map(checked);
        store.remove(seq).await.unwrap();
        assert!(ticks.load(Ordering::Relaxed) > before, "the runtime thread was blocked by the store");
    }
    ticker.abort();
    store.close().await;
}

#[tokio::test]
async fn removes_the_oldest_and_a_middle_one() {
    let dir = TempDir::new("disk-store-remove");
    let mut store = open(&dir.file()).await;
    store.recover().await.unwrap();
    for seq in 1..=6 {
        store.append(sb(seq), &batch(seq)).await.unwrap();
    }
    store.remove(1).await.unwrap();
    store.remove(4).await.unwrap();
    store.remove(4).await.unwrap(); // again: not an error
    store.remove(99).await.unwrap(); // never held: not an error
    assert_eq!(seqs(&read_all(&mut store).await), [2, 3, 5, 6]);
    let mut out = Vec::with_capacity(64);
    assert_eq!(store.read_after(None, &mut out).await.unwrap().map(checked), Some(2));
    store.close().await;

    let mut store = open(&dir.file()).await;
    let r = store.recover().await.unwrap();
    assert_eq!(r.batches, 4);
    assert_eq!(r.items, [2, 3, 5, 6].iter().map(|s| batch(*s).len() as u64).sum::<u64>());
    assert_eq!(seqs(&read_all(&mut store).await), [2, 3, 5, 6]);
    store.close().await;
}

#[tokio::test]
async fn full_at_its_byte_limit() {
    let dir = TempDir::new("disk-store-full");
    let mut store = open(&dir.file()).await;
    store.recover().await.unwrap();
    store.set_max_bytes(Some(2_000));
    let mut seq = 10;
    let full_at = loop {
        match store.append(sb(seq), &batch(seq)).await {
            Ok(()) => seq += 1,
            Err(StoreError::Full) => break seq,
            Err(e) => panic!("{e}"),
        }
    };
    let held: Vec<u64> = (10..full_at).collect();
    assert!(held.len() >= 3, "{held:?}");
    assert_eq!(seqs(&read_all(&mut store).await), held, "a refused batch is not written");
    // Removing the oldest makes room again.
    store.remove(10).await.unwrap();
    store.append(sb(full_at), &batch(full_at)).await.unwrap();
    assert!(matches!(store.append(sb(full_at + 1), &batch(full_at + 1)).await, Err(StoreError::Full)));
    store.close().await;
    // After a reopen the bytes held are counted from the file.
    let mut store = open(&dir.file()).await;
    store.recover().await.unwrap();
    store.set_max_bytes(Some(2_000));
    assert!(matches!(store.append(sb(full_at + 1), &batch(full_at + 1)).await, Err(StoreError::Full)));
    store.set_max_bytes(None);
    store.append(sb(full_at + 1), &batch(full_at + 1)).await.unwrap();
    store.close().await;
}

#[tokio::test]
async fn seq_floor_survives_reopen() {
    let dir = TempDir::new("disk-store-floor");
    let mut store = open(&dir.file()).await;
    store.recover().await.unwrap();
    store.persist_seq_floor(100).await.unwrap();
    store.persist_seq_floor(50).await.unwrap(); // never lowered
    store.close().await;

    let mut store = open(&dir.file()).await;
    assert_eq!(store.recover().await.unwrap(), Recovered { batches: 0, items: 0, seq_floor: 100 });
    // A batch above the persisted floor lifts the floor above it.
    store.append(sb(300), &batch(300)).await.unwrap();
    store.close().await;
    let mut store = open(&dir.file()).await;
    let r = store.recover().await.unwrap();
    assert_eq!((r.batches, r.seq_floor), (1, 301));
    // Removing it keeps the floor above it: a seq is never handed out twice.
    store.remove(300).await.unwrap();
    store.close().await;
    let mut store = open(&dir.file()).await;
    assert_eq!(store.recover().await.unwrap(), Recovered { batches: 0, items: 0, seq_floor: 301 });
    assert!(matches!(
        store.persist_seq_floor(u64::MAX).await,
        Err(StoreError::Io(DiskStoreError::SeqRange(u64::MAX)))
    ));
    store.close().await;
}

#[cfg(unix)]
#[tokio::test]
async fn files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("disk-store-mode");
    let path = dir.file();
    let mut store = open(&path).await;
    store.recover().await.unwrap();
    store.append(sb(1), &batch(1)).await.unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    let wal = dir.0.join("store.db-wal");
    assert!(wal.exists(), "the WAL is there while the store is open");
    assert_eq!(mode(&wal), 0o600);
    assert!(!dir.0.join("store.db-shm").exists(), "exclusive locking: no shared-memory file");
    store.close().await;
    assert_eq!(mode(&path), 0o600);
}

#[tokio::test]
async fn one_owner_at_a_time() {
    let dir = TempDir::new("disk-store-in-use");
    let mut store = open(&dir.file()).await;
    store.recover().await.unwrap();
    let second = DiskStore::<Reading>::open(dir.file(), TAG).await;
    assert!(matches!(second, Err(DiskStoreError::InUse(_))), "{second:?}");
    store.close().await;
    // Reopened (nothing written yet): still one owner.
    let mut again = open(&dir.file()).await;
    again.recover().await.unwrap();
    let second = DiskStore::<Reading>::open(dir.file(), TAG).await;
    assert!(matches!(second, Err(DiskStoreError::InUse(_))), "{second:?}");
    again.close().await;
    // Dropped without `close`: the thread closes the file soon after.
    drop(open(&dir.file()).await);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match DiskStore::<Reading>::open(dir.file(), TAG).await {
            Ok(store) => break store.close().await,
            Err(DiskStoreError::InUse(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// Overwrites every occurrence of `find` in the file with `with` (same length).
fn patch(path: &Path, find: &[u8], with: &[u8]) -> usize {
    assert_eq!(find.len(), with.len());
    let mut bytes = std::fs::read(path).unwrap();
    let mut n = 0;
    let mut i = 0;
    while i + find.len() <= bytes.len() {
        if &bytes[i..i + find.len()] == find {
            bytes[i..i + find.len()].copy_from_slice(with);
            n += 1;
        }
        i += 1;
    }
    std::fs::write(path, bytes).unwrap();
    n
}

/// The first bytes of batch `seq`'s record: magic, version, type tag, seq.
fn header(seq: u64, tag: u32) -> Vec<u8> {
    let mut h = b"BTCH\x02".to_vec();
    h.extend_from_slice(&tag.to_le_bytes());
    h.extend_from_slice(&seq.to_le_bytes());
    h
}

/// Writes batches 1..=7 and closes the store (its WAL checkpointed into the file).
async fn seven_batches(path: &Path) {
    let mut store = open(path).await;
    store.recover().await.unwrap();
    for seq in 1..=7 {
        store.append(sb(seq), &batch(seq)).await.unwrap();
    }
    store.close().await;
    assert!(!path.with_extension("db-wal").exists());
}

/// Damages records 2 to 6 in the file: a flipped bit, another item type, another seq, a payload
/// length cut short, another record format version.
fn damage(path: &Path) {
    let mut h = header(2, TAG);
    h.extend_from_slice(&sb(2).born_ms.to_le_bytes());
    let mut flipped = h.clone();
    h.extend_from_slice(&[3, 0, 0, 0]); // item count
    flipped.extend_from_slice(&[3 ^ 0x40, 0, 0, 0]);
    assert_eq!(patch(path, &h, &flipped), 1);
    assert_eq!(patch(path, &header(3, TAG), &header(3, 0x0BAD_0001)), 1);
    assert_eq!(patch(path, &header(4, TAG), &header(40, TAG)), 1);
    // Batch 5 has 6 items; its payload length is cut by 5 bytes.
    let mut h = header(5, TAG);
    h.extend_from_slice(&sb(5).born_ms.to_le_bytes());
    h.extend_from_slice(&6u32.to_le_bytes());
    let bytes = std::fs::read(path).unwrap();
    let at = bytes.windows(h.len()).position(|w| w == &h[..]).unwrap() + h.len();
    let mut cut = h.clone();
    h.push(bytes[at]);
    cut.push(bytes[at] - 5);
    assert_eq!(patch(path, &h, &cut), 1);
    let mut newer = header(6, TAG);
    newer[4] = 3;
    assert_eq!(patch(path, &header(6, TAG), &newer), 1);
}

#[tokio::test]
async fn corrupt_records_are_skipped_quarantined_and_reported() {
    let dir = TempDir::new("disk-store-corrupt");
    let path = dir.file();
    seven_batches(&path).await;
    damage(&path);

    let mut store = open(&path).await;
    let r = store.recover().await.unwrap();
    assert_eq!(r.batches, 2);
    assert_eq!(r.items, (batch(1).len() + batch(7).len()) as u64);
    assert_eq!(r.seq_floor, 8, "the quarantined seqs still count");
    let report = store.corrupt();
    assert_eq!(report.count, 5);
    assert!(
        matches!(report.first, Some((2, Problem::Corrupt(Corrupt::Checksum | Corrupt::Items)))),
        "{report:?}"
    );
    let all = read_all(&mut store).await;
    assert_eq!(seqs(&all), [1, 7]);
    assert_eq!(all[0].1, batch(1));
    assert_eq!(all[1].1, batch(7));
    store.close().await;

    // Quarantined, not reported again; the floor stays above them.
    let mut store = open(&path).await;
    let r = store.recover().await.unwrap();
    assert_eq!((r.batches, r.seq_floor), (2, 8));
    assert_eq!(store.corrupt().count, 0);
    store.close().await;
}

#[tokio::test]
async fn reads_skip_corrupt_records_without_recover() {
    let dir = TempDir::new("disk-store-corrupt-read");
    let path = dir.file();
    seven_batches(&path).await;
    damage(&path);
    let mut store = open(&path).await;
    let all = read_all(&mut store).await;
    assert_eq!(seqs(&all), [1, 7]);
    let report = store.corrupt();
    assert_eq!(report.count, 5);
    let kinds: Vec<_> = [report.first.unwrap().1].into();
    assert!(matches!(kinds[0], Problem::Corrupt(_)));
    store.close().await;
    let mut store = open(&path).await;
    assert_eq!(store.recover().await.unwrap().batches, 2);
    store.close().await;
}

#[tokio::test]
async fn files_that_are_not_a_store_are_refused() {
    let dir = TempDir::new("disk-store-not-a-store");
    let path = dir.file();
    let not_a_store = |r: Result<DiskStore<Reading>, DiskStoreError>| match r {
        Err(e @ DiskStoreError::NotAStore { .. }) => e.to_string(),
        other => panic!("expected NotAStore, got {other:?}"),
    };

    // Garbage.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let garbage: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&path, &garbage).unwrap();
    let msg = not_a_store(DiskStore::open(&path, TAG).await);
    assert!(msg.contains("not a batch store"), "{msg}");
    assert_eq!(std::fs::read(&path).unwrap(), garbage, "a refused file is left as it was");

    // Text.
    std::fs::write(&path, "[server]\nport = 8080\n".repeat(300)).unwrap();
    not_a_store(DiskStore::open(&path, TAG).await);

    // A store cut short inside its header.
    std::fs::remove_file(&path).unwrap();
    seven_batches(&path).await;
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..60]).unwrap();
    not_a_store(DiskStore::open(&path, TAG).await);

    // Another program's SQLite database (another application id), another schema version,
    // another item type.
    std::fs::write(&path, &bytes).unwrap();
    let mut other = bytes.clone();
    other[68..72].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    std::fs::write(&path, &other).unwrap();
    let msg = not_a_store(DiskStore::open(&path, TAG).await);
    assert!(msg.contains("another application"), "{msg}");
    let mut newer = bytes.clone();
    newer[60..64].copy_from_slice(&2u32.to_be_bytes());
    std::fs::write(&path, &newer).unwrap();
    assert!(matches!(
        DiskStore::<Reading>::open(&path, TAG).await,
        Err(DiskStoreError::Version { found: 2, expected: 1 })
    ));
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        DiskStore::<Reading>::open(&path, 0x0BAD_0001).await,
        Err(DiskStoreError::ItemType { expected: 0x0BAD_0001, found: TAG })
    ));

    // A store truncated after its header: refused by SQLite's structure check.
    for keep in [4096, bytes.len() / 2, bytes.len() - 100] {
        std::fs::write(&path, &bytes[..keep]).unwrap();
        let msg = not_a_store(DiskStore::open(&path, TAG).await);
        assert!(msg.contains("malformed") || msg.contains("damaged"), "{msg}");
    }

    // A directory.
    let msg = not_a_store(DiskStore::open(&dir.0, TAG).await);
    assert!(msg.contains("not a regular file"), "{msg}");
}

// --- The process-kill crash test -------------------------------------------------------------

const CHILD_ENV: &str = "BATCH_DISK_STORE_CRASH_CHILD";
const KILLS: u32 = 30;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The child: appends, removes and persists floors at random until it is killed, printing each
/// operation before it starts (`@a 5`) and once it returned `Ok` (`@A 5`).
#[test]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let (path, seed) = spec.split_once(';').unwrap();
    let mut rng = Rng(seed.parse::<u64>().unwrap() | 1);
    rt().block_on(async {
        let mut store = open(Path::new(path)).await;
        let r = store.recover().await.unwrap();
        println!("@O {}", r.seq_floor);
        let mut next = r.seq_floor;
        let mut floor = r.seq_floor;
        for _ in 0..100_000 {
            match rng.below(10) {
                0..=5 => {
                    if next >= floor {
                        let f = next + 1 + rng.below(16);
                        store.persist_seq_floor(f).await.unwrap();
                        println!("@F {f}");
                        floor = f;
                    }
                    println!("@a {next}");
                    store.append(sb(next), &batch(next)).await.unwrap();
                    println!("@A {next}");
                    next += 1;
                }
                6..=8 => {
                    let mut out = Vec::with_capacity(64);
                    let Some(oldest) = store.read_after(None, &mut out).await.unwrap().map(checked) else {
                        continue;
                    };
                    // The oldest, or now and then the one after it.
                    let mut seq = oldest;
                    if rng.below(3) == 0 {
                        out.clear();
                        if let Some(s) = store.read_after(Some(oldest), &mut out).await.unwrap().map(checked)
                        {
                            seq = s;
                        }
                    }
                    println!("@r {seq}");
                    store.remove(seq).await.unwrap();
                    println!("@R {seq}");
                }
                _ => {
                    let f = floor.max(next) + rng.below(8);
                    store.persist_seq_floor(f).await.unwrap();
                    println!("@F {f}");
                    floor = floor.max(f);
                }
            }
        }
    });
}

/// What the parent knows from the children's acknowledgements.
#[derive(Default)]
struct Model {
    /// Batches the store must hold.
    present: BTreeSet<u64>,
    highest_acked: Option<u64>,
    highest_floor: u64,
    acked_appends: u64,
    acked_removes: u64,
}

/// The operations a kill interrupted: started, not acknowledged.
struct Pending {
    append: Option<u64>,
    remove: Option<u64>,
}

impl Model {
    /// Takes in a killed child's output.
    fn told(&mut self, lines: &[String]) -> Pending {
        let mut pending = Pending { append: None, remove: None };
        for line in lines {
            let Some(at) = line.find('@') else { continue };
            let (op, n) = line[at + 1..].split_once(' ').unwrap();
            let n: u64 = n.trim().parse().unwrap();
            match op {
                "O" => assert!(n >= self.highest_floor && self.highest_acked.is_none_or(|h| n > h)),
                "a" => {
                    assert!(self.highest_acked.is_none_or(|h| n > h), "seq {n} handed out again");
                    pending.append = Some(n);
                }
                "A" => {
                    self.present.insert(n);
                    self.highest_acked = Some(n);
                    self.acked_appends += 1;
                    pending.append = None;
                }
                "r" => pending.remove = Some(n),
                "R" => {
                    self.present.remove(&n);
                    self.acked_removes += 1;
                    pending.remove = None;
                }
                "F" => self.highest_floor = self.highest_floor.max(n),
                _ => panic!("unexpected line {line}"),
            }
        }
        pending
    }

    /// Checks what the store holds after the kill; it is then the truth for the interrupted
    /// operations.
    fn check(&mut self, round: u32, recovered: Recovered, all: &[(u64, Vec<Reading>)], pending: &Pending) {
        assert_eq!(recovered.batches, all.len() as u64, "round {round}");
        let held: BTreeSet<u64> = all.iter().map(|(s, _)| *s).collect();
        assert!(seqs(all).windows(2).all(|w| w[0] < w[1]), "round {round}: out of order");
        for (seq, items) in all {
            assert_eq!(items, &batch(*seq), "round {round}: batch {seq} is not what was appended");
        }
        let lost: Vec<u64> = self
            .present
            .iter()
            .filter(|s| !held.contains(s) && Some(**s) != pending.remove)
            .copied()
            .collect();
        assert!(lost.is_empty(), "round {round}: acknowledged batches lost: {lost:?}");
        let invented: Vec<u64> = held
            .iter()
            .filter(|s| !self.present.contains(s) && Some(**s) != pending.append)
            .copied()
            .collect();
        assert!(
            invented.is_empty(),
            "round {round}: batches never appended or removed for good: {invented:?}"
        );
        assert!(recovered.seq_floor >= self.highest_floor, "round {round}: floor went back");
        if let Some(h) = self.highest_acked.max(held.last().copied()) {
            assert!(
                recovered.seq_floor > h,
                "round {round}: floor {} not above seq {h}",
                recovered.seq_floor
            );
        }
        if let Some(s) = pending.append.filter(|s| held.contains(s)) {
            self.highest_acked = self.highest_acked.max(Some(s));
        }
        self.present = held;
    }
}

#[test]
fn survives_being_killed_at_random_moments() {
    let dir = TempDir::new("disk-store-crash");
    let path = dir.file();
    let mut rng = Rng(0x5EED_0000_0000_0010);
    let exe = std::env::current_exe().unwrap();
    let runtime = rt();
    let started = Instant::now();
    let mut model = Model::default();
    let mut kills = 0;
    for round in 0..KILLS {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, format!("{};{}", path.display(), rng.next()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<String>>()
        });
        std::thread::sleep(Duration::from_millis(5 + rng.below(150)));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(status.code().is_none(), "round {round}: the child ended before it was killed: {status}");
        kills += 1;
        let pending = model.told(&reader.join().unwrap());

        let (recovered, all, corrupt) = runtime.block_on(async {
            let mut store = open(&path).await;
            let recovered = store.recover().await.unwrap();
            let all = read_all(&mut store).await;
            let corrupt = store.corrupt().count;
            store.close().await;
            (recovered, all, corrupt)
        });
        assert_eq!(corrupt, 0, "round {round}");
        model.check(round, recovered, &all, &pending);
    }
    println!(
        "disk store crash test: {kills} kills, {} batches acknowledged, {} removals acknowledged, lost 0 ({:.1} s)",
        model.acked_appends,
        model.acked_removes,
        started.elapsed().as_secs_f64()
    );
    assert!(model.acked_appends >= 100, "too few batches acknowledged to mean much: {}", model.acked_appends);
}
