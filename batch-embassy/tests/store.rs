//! Store and forward on embassy (issue 10): `StoreRunner` drives a store with the core's policy.
//! Host tests on embassy-time's mock driver (virtual time moves only when no task is runnable):
//! spill while paused and drain in order, write-ahead across a "reboot" on the real
//! `FlashStore` over a NOR flash in RAM, runners cancelled in the middle of store operations,
//! several runners sharing one store, and an outage with one flight slot: the runner spills
//! while it holds its failing batch (also cancelled half-way), and a full store evicts.
#![cfg(feature = "flash-store")]
#![allow(missing_docs, clippy::cast_possible_truncation)]

mod common;
mod flash_support;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};

use batch_core::storage::BatchBuf;
use batch_core::store::{Recovered, Store, StoreError, StoredBatch};
use batch_embassy::{
    BatchInfo, Batcher, Config, FlashStore, Handler, Overflow, StorePolicy, StoreRunner, millis,
};
use common::{Exec, serial};
use embassy_futures::select::select;
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_sync::mutex::Mutex;
use embassy_time::{Duration, Instant, Timer};
use flash_support::{CODEC, Flash, LAYOUT, PAGES, Rng};
use heapless::vec::VecView;

/// What a store did, for the checks: the batches it acknowledged, the ones it holds, and
/// operations that were cancelled half-way or overlapped.
#[derive(Debug, Default)]
struct Log {
    /// Every batch whose append returned `Ok`, by seq.
    acked: BTreeMap<u64, Vec<u32>>,
    /// Operations dropped before they returned.
    cancelled: BTreeMap<&'static str, u32>,
    /// An operation started while another was under way (the mutex must prevent it).
    overlapped: bool,
    recovers: u32,
}

/// Marks an operation under way; counts it as cancelled if dropped before `done`.
struct Op<'l> {
    log: &'l RefCell<Log>,
    busy: &'l Cell<bool>,
    name: &'static str,
    finished: bool,
}

impl<'l> Op<'l> {
    fn start(log: &'l RefCell<Log>, busy: &'l Cell<bool>, name: &'static str) -> Self {
        if busy.replace(true) {
            log.borrow_mut().overlapped = true;
        }
        Op { log, busy, name, finished: false }
    }
    fn done(mut self) {
        self.finished = true;
    }
}

impl Drop for Op<'_> {
    fn drop(&mut self) {
        self.busy.set(false);
        if !self.finished {
            *self.log.borrow_mut().cancelled.entry(self.name).or_default() += 1;
        }
    }
}

/// Wraps a store: records what it acknowledged, and can take `delay` of virtual time after each
/// operation took effect and before it returns (a runner cancelled then leaves the operation
/// done but unacknowledged, as a flash write dropped after its last word).
struct Watched<'l, S> {
    inner: S,
    log: &'l RefCell<Log>,
    busy: Cell<bool>,
    delay: Option<Duration>,
}

impl<'l, S> Watched<'l, S> {
    fn new(inner: S, log: &'l RefCell<Log>) -> Self {
        Watched { inner, log, busy: Cell::new(false), delay: None }
    }
    async fn pause(&self) {
        if let Some(d) = self.delay {
            Timer::after(d).await;
        }
    }
}

impl<S: Store<u32>> Store<u32> for Watched<'_, S> {
    type Error = S::Error;
    async fn recover(&mut self) -> Result<Recovered, StoreError<S::Error>> {
        let op = Op::start(self.log, &self.busy, "recover");
        let found = self.inner.recover().await;
        self.log.borrow_mut().recovers += 1;
        op.done();
        found
    }
    async fn append(&mut self, batch: StoredBatch, items: &[u32]) -> Result<(), StoreError<S::Error>> {
        let op = Op::start(self.log, &self.busy, "append");
        let result = self.inner.append(batch, items).await;
        self.pause().await;
        if result.is_ok() {
            self.log.borrow_mut().acked.insert(batch.seq, items.to_vec());
        }
        op.done();
        result
    }
    async fn read_after<B: BatchBuf<u32>>(
        &mut self,
        after: Option<u64>,
        out: &mut B,
    ) -> Result<Option<StoredBatch>, StoreError<S::Error>> {
        let op = Op::start(self.log, &self.busy, "read");
        let result = self.inner.read_after(after, out).await;
        self.pause().await;
        op.done();
        result
    }
    async fn remove(&mut self, seq: u64) -> Result<(), StoreError<S::Error>> {
        let op = Op::start(self.log, &self.busy, "remove");
        let result = self.inner.remove(seq).await;
        self.pause().await;
        op.done();
        result
    }
    async fn persist_seq_floor(&mut self, floor: u64) -> Result<(), StoreError<S::Error>> {
        let op = Op::start(self.log, &self.busy, "floor");
        let result = self.inner.persist_seq_floor(floor).await;
        self.pause().await;
        op.done();
        result
    }
}

/// A store in memory (batches by seq, a floor), for the tests that do not need flash; with a
/// `limit`, it refuses an append when it holds that many batches (`StoreError::Full`).
#[derive(Debug, Default)]
struct Mem {
    batches: BTreeMap<u64, Vec<u32>>,
    born: BTreeMap<u64, u64>,
    floor: u64,
    limit: Option<usize>,
}

impl Store<u32> for Mem {
    type Error = ();
    async fn recover(&mut self) -> Result<Recovered, StoreError<()>> {
        let items = self.batches.values().map(|b| b.len() as u64).sum();
        let above = self.batches.keys().next_back().map_or(0, |s| s + 1);
        Ok(Recovered { batches: self.batches.len() as u64, items, seq_floor: self.floor.max(above) })
    }
    async fn append(&mut self, batch: StoredBatch, items: &[u32]) -> Result<(), StoreError<()>> {
        let seq = batch.seq;
        assert!(self.batches.keys().all(|&s| s < seq), "appends in seq order");
        if self.limit.is_some_and(|limit| self.batches.len() >= limit) {
            return Err(StoreError::Full);
        }
        self.batches.insert(seq, items.to_vec());
        self.born.insert(seq, batch.born_ms);
        Ok(())
    }
    async fn read_after<B: BatchBuf<u32>>(
        &mut self,
        after: Option<u64>,
        out: &mut B,
    ) -> Result<Option<StoredBatch>, StoreError<()>> {
        let Some((seq, items)) = self.batches.iter().find(|(s, _)| after.is_none_or(|a| **s > a)) else {
            return Ok(None);
        };
        out.extend_from(items.iter().copied());
        Ok(Some(StoredBatch {
            seq: *seq,
            born_ms: self.born.get(seq).copied().unwrap_or(StoredBatch::BORN_UNKNOWN),
        }))
    }
    async fn remove(&mut self, seq: u64) -> Result<(), StoreError<()>> {
        self.batches.remove(&seq);
        Ok(())
    }
    async fn persist_seq_floor(&mut self, floor: u64) -> Result<(), StoreError<()>> {
        self.floor = self.floor.max(floor);
        Ok(())
    }
}

/// One attempt the handler was given.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Given {
    boot: u32,
    seq: u64,
    attempt: u32,
    items: Vec<u32>,
    ok: bool,
}

/// Items delivered at least once, each once, in first-delivery order.
fn first_deliveries(given: &[Given]) -> Vec<u32> {
    let mut seen = BTreeSet::new();
    given.iter().filter(|g| g.ok).flat_map(|g| g.items.iter().copied()).filter(|i| seen.insert(*i)).collect()
}

/// A busy loop shows up as more polls than this (the runs below take a few thousand).
const POLLS: u64 = 50_000;

#[test]
fn spill_while_paused_then_drain_in_order_after_resume() {
    let _g = serial();
    let log = RefCell::new(Log::default());
    let store = Mutex::<NoopRawMutex, _>::new(Watched::new(Mem::default(), &log));
    let config = Config::new().max_batch(4).linger(millis(10)).store(StorePolicy::new().seq_block(16));
    let b: Batcher<NoopRawMutex, u32, 8> = Batcher::new(config);
    let given = RefCell::new(Vec::new());
    let stored_at_resume = Cell::new(0);
    let mut exec = Exec::new();
    exec.spawn(async {
        let mut runner = b
            .runner(async |items: &[u32], info: BatchInfo| {
                let g =
                    Given { boot: 0, seq: info.seq, attempt: info.attempt, items: items.to_vec(), ok: true };
                given.borrow_mut().push(g);
                Ok::<(), ()>(())
            })
            .store(&store);
        runner.run().await;
    });
    exec.spawn(async {
        b.pause(); // the uplink is down before the first item
        for i in 0..40 {
            assert_eq!(b.add(i).await, Ok(None), "nothing is refused or evicted: RAM spills");
        }
        // 40 items in a buffer of 8: the oldest went to the store, whole batches in order.
        let m = b.metrics();
        assert!(m.stored >= 32, "{m:?}");
        assert!(given.borrow().is_empty(), "paused: nothing delivered");
        stored_at_resume.set(m.stored);
        b.resume();
        b.shutdown().await;
    });
    exec.run_all(Duration::from_secs(10), POLLS);

    let given = given.take();
    assert_eq!(first_deliveries(&given), (0..40).collect::<Vec<_>>(), "acceptance order across the store");
    let seqs: Vec<u64> = given.iter().map(|g| g.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seq order: {seqs:?}");
    let log = log.take();
    assert!(log.acked.len() >= 8, "spilled batches: {:?}", log.acked.keys());
    // Every spilled batch was delivered under its own seq, with its items.
    for (seq, items) in &log.acked {
        assert!(given.iter().any(|g| g.seq == *seq && &g.items == items), "stored batch {seq} not delivered");
    }
    assert!(store.try_lock().unwrap().inner.batches.is_empty(), "removed at their final outcome");
    let m = b.metrics();
    assert!(m.is_consistent(), "{m:?}");
    assert_eq!((m.delivered, m.stored, m.rejected, m.evicted), (40, 0, 0, 0));
    assert_eq!(m.flushes.get(batch_embassy::Trigger::Store), log.acked.len() as _);
    assert!(!log.overlapped);
    assert_eq!(log.recovers, 1);
    assert!(stored_at_resume.get() >= 32);
}

/// One boot of the write-ahead run: a producer adds `items` (1 ms apart), the uplink refuses
/// the attempts `refuse` names, the batcher pauses over `paused`; the power is cut at `cut`
/// (every task and the batcher dropped), or the boot drains and shuts down when `cut` is `None`.
fn boot(
    store: &Mutex<NoopRawMutex, Watched<'_, FlashStore<Flash, u32, 256>>>,
    boot: u32,
    items: std::ops::Range<u32>,
    cut: Option<Duration>,
    refuse: &dyn Fn(u64, u32) -> bool,
    given: &RefCell<Vec<Given>>,
) -> batch_embassy::Metrics {
    let config = Config::new()
        .max_batch(4)
        .linger(millis(5))
        .max_attempts(3)
        .retry_delays(millis(2), millis(8))
        .store(StorePolicy::new().write_ahead(true).seq_block(8));
    let b: Batcher<NoopRawMutex, u32, 8> = Batcher::new(config);
    let mut exec = Exec::new();
    exec.spawn(async {
        let mut runner = b
            .runner(async |batch: &[u32], info: BatchInfo| {
                Timer::after_millis(1).await; // air time
                let ok = !refuse(info.seq, info.attempt);
                let g = Given { boot, seq: info.seq, attempt: info.attempt, items: batch.to_vec(), ok };
                given.borrow_mut().push(g);
                if ok { Ok(()) } else { Err(()) }
            })
            .store(store);
        runner.run().await;
    });
    exec.spawn(async {
        for i in items.clone() {
            Timer::after_millis(1).await;
            if i == items.start + 20 {
                b.pause(); // the uplink is down for a while: RAM fills and spills
            }
            if i == items.start + 45 {
                b.resume();
            }
            b.add(i).await.unwrap();
        }
        if cut.is_none() {
            b.resume();
            b.shutdown().await;
        }
    });
    match cut {
        Some(at) => exec.run_for(at, POLLS),
        None => exec.run_all(Duration::from_secs(60), POLLS),
    }
    drop(exec); // the power cut: every task stops where it was, no drop guard left running
    b.metrics()
}

#[test]
fn write_ahead_and_a_reboot_redeliver_every_acknowledged_batch_at_least_once_in_seq_order() {
    let _g = serial();
    let log = RefCell::new(Log::default());
    let flash = FlashStore::new(Flash::new(PAGES), LAYOUT, CODEC);
    let store = Mutex::<NoopRawMutex, _>::new(Watched::new(flash, &log));
    let given = RefCell::new(Vec::new());
    // Boot 0: the uplink refuses batches 5 and 6 for good (dead letters) and every attempt
    // after 60 ms; the power goes at 70 ms, with a backlog in the store and in RAM.
    let t0 = embassy_time::Instant::now();
    let refuse0 = |seq: u64, _: u32| seq == 5 || seq == 6 || t0.elapsed().as_millis() > 60;
    let m0 = boot(&store, 0, 0..100, Some(Duration::from_millis(70)), &refuse0, &given);
    assert!(m0.is_consistent(), "{m0:?}");
    assert!(m0.stored > 0, "write-ahead and spills stored batches before the cut: {m0:?}");

    // Boot 1, over the same flash: recovery, then the stored batches first, then new items.
    let m1 = boot(&store, 1, 1000..1030, None, &|_, _| false, &given);
    assert!(m1.is_consistent(), "{m1:?}");
    assert_eq!((m1.stored, m1.buffered, m1.in_flight, m1.store_lost), (0, 0, 0, 0), "{m1:?}");

    let given = given.take();
    let log = log.take();
    // Every batch the store acknowledged reached a final outcome at least once, whole, under its
    // own seq: delivered, or dead-lettered in boot 0 (refused on every attempt).
    for (seq, items) in &log.acked {
        let outcomes: Vec<&Given> = given.iter().filter(|g| g.seq == *seq).collect();
        assert!(outcomes.iter().all(|g| &g.items == items), "seq {seq} was reused for other items");
        let delivered = outcomes.iter().any(|g| g.ok);
        let dead = outcomes.iter().filter(|g| g.boot == 0 && !g.ok).count() >= 3;
        assert!(delivered || dead, "acknowledged batch {seq} never reached a final outcome: {outcomes:?}");
    }
    // After the reboot the recovered batches come first, in seq order, then new ones above
    // every seq of boot 0.
    let boot1: Vec<&Given> = given.iter().filter(|g| g.boot == 1 && g.attempt == 1).collect();
    let recovered: Vec<u64> = boot1.iter().filter(|g| g.items[0] < 1000).map(|g| g.seq).collect();
    assert!(!recovered.is_empty(), "the reboot redelivered what was stored");
    assert!(recovered.windows(2).all(|w| w[0] < w[1]), "recovered in seq order: {recovered:?}");
    let firsts: Vec<u64> = boot1.iter().map(|g| g.seq).collect();
    assert_eq!(&firsts[..recovered.len()], &recovered[..], "stored batches go before new ones");
    let max0 = given.iter().filter(|g| g.boot == 0).map(|g| g.seq).max().unwrap();
    assert!(boot1.iter().filter(|g| g.items[0] >= 1000).all(|g| g.seq > max0), "no seq reused");
    assert_eq!(
        first_deliveries(&given).iter().filter(|i| **i >= 1000).count(),
        30,
        "every item of the new boot delivered"
    );
    assert!(!log.overlapped);
    assert_eq!(log.recovers, 2);
}

/// Runs `runner` until `b` is finished, losing to a timer of 1..7 ms (drawn from `seed`) again
/// and again; counts the times it lost in `cancels`.
async fn run_cancelled<H: Handler<u32>, S: Store<u32>>(
    b: &Batcher<NoopRawMutex, u32, 8>,
    runner: &mut StoreRunner<'_, '_, NoopRawMutex, u32, 8, 1, H, NoopRawMutex, S>,
    seed: u64,
    cancels: &Cell<u32>,
) {
    let mut rng = Rng(seed);
    while !b.is_finished() {
        let timeout = Timer::after_millis(1 + rng.below(7));
        if let embassy_futures::select::Either::Second(()) = select(runner.run(), timeout).await {
            cancels.set(cancels.get() + 1);
        }
    }
}

#[test]
fn runners_cancelled_in_the_middle_of_store_operations_lose_nothing() {
    let _g = serial();
    let log = RefCell::new(Log::default());
    let mut watched = Watched::new(Mem::default(), &log);
    watched.delay = Some(Duration::from_millis(3));
    let store = Mutex::<NoopRawMutex, _>::new(watched);
    let config = Config::new()
        .max_batch(4)
        .linger(millis(5))
        .max_attempts(1000)
        .retry_delays(millis(2), millis(8))
        .store(StorePolicy::new().write_ahead(true).seq_block(4));
    let b: Batcher<NoopRawMutex, u32, 8> = Batcher::new(config);
    let given = RefCell::new(Vec::new());
    let cancels = Cell::new(0u32);
    let mut exec = Exec::new();
    exec.spawn(async {
        let mut runner = b
            .runner(async |items: &[u32], info: BatchInfo| {
                Timer::after_millis(1).await;
                let g =
                    Given { boot: 0, seq: info.seq, attempt: info.attempt, items: items.to_vec(), ok: true };
                given.borrow_mut().push(g);
                Ok::<(), ()>(())
            })
            .store(&store);
        // In flash writes, reads, removals, waits.
        run_cancelled(&b, &mut runner, 7, &cancels).await;
    });
    exec.spawn(async {
        let mut rng = Rng(11);
        for i in 0..300 {
            if i % 50 == 10 {
                b.pause(); // spills
            }
            if i % 50 == 40 {
                b.resume(); // loads
            }
            b.add(i).await.unwrap();
            if rng.below(3) == 0 {
                Timer::after_millis(1).await;
            }
        }
        b.resume();
        b.shutdown().await;
    });
    exec.run_all(Duration::from_secs(600), POLLS);

    let given = given.take();
    let log = log.take();
    assert_eq!(first_deliveries(&given), (0..300).collect::<Vec<_>>(), "nothing lost, acceptance order");
    let m = b.metrics();
    assert!(m.is_consistent(), "{m:?}");
    assert_eq!((m.delivered, m.stored, m.returned), (300, 0, 0), "{m:?}");
    assert!(!log.overlapped);
    // The cancellations hit every kind of operation, also after it took effect.
    for op in ["append", "read", "remove", "floor"] {
        assert!(
            log.cancelled.get(op).copied().unwrap_or(0) > 0,
            "no {op} was cancelled: {:?}",
            log.cancelled
        );
    }
    // Appends that took effect but were never acknowledged were taken out again.
    assert!(store.try_lock().unwrap().inner.batches.is_empty(), "a cancelled append left a batch behind");
    assert!(cancels.get() > 100, "{}", cancels.get());
}

#[test]
fn several_runners_share_one_store_one_operation_at_a_time_and_recover_once() {
    let _g = serial();
    let log = RefCell::new(Log::default());
    // A batch left from the previous boot.
    let mut mem = Mem::default();
    mem.batches.insert(41, vec![1000, 1001]);
    mem.floor = 50;
    let mut watched = Watched::new(mem, &log);
    watched.delay = Some(Duration::from_millis(1));
    let store = Mutex::<NoopRawMutex, _>::new(watched);
    let config = Config::new()
        .max_batch(4)
        .linger(millis(5))
        .max_in_flight(3)
        .store(StorePolicy::new().write_ahead(true).seq_block(8));
    let b: Batcher<NoopRawMutex, u32, 16, 3> = Batcher::new(config);
    let given = RefCell::new(Vec::new());
    let mut exec = Exec::new();
    for _ in 0..3 {
        exec.spawn(async {
            let mut runner = b
                .runner(async |items: &[u32], info: BatchInfo| {
                    Timer::after_millis(2).await;
                    let g = Given {
                        boot: 0,
                        seq: info.seq,
                        attempt: info.attempt,
                        items: items.to_vec(),
                        ok: true,
                    };
                    given.borrow_mut().push(g);
                    Ok::<(), ()>(())
                })
                .store(&store);
            runner.run().await;
        });
    }
    exec.spawn(async {
        for i in 0..100 {
            b.add(i).await.unwrap();
        }
        b.shutdown().await;
    });
    exec.run_all(Duration::from_secs(60), POLLS);

    let given = given.take();
    let log = log.take();
    assert_eq!(log.recovers, 1, "one runner read the store at boot");
    assert!(!log.overlapped, "store operations never overlapped");
    assert_eq!(given.first().map(|g| g.seq), Some(41), "the recovered batch went first");
    let mut items: Vec<u32> = given.iter().flat_map(|g| g.items.iter().copied()).collect();
    items.sort_unstable();
    let mut want: Vec<u32> = (0..100).collect();
    want.extend([1000, 1001]);
    assert_eq!(items, want, "each item delivered once");
    assert!(given.iter().all(|g| g.seq == 41 || g.seq >= 50), "no seq below the recovered floor");
    let m = b.metrics();
    assert!(m.is_consistent(), "{m:?}");
    assert_eq!((m.delivered, m.stored, m.accepted), (102, 0, 102));
    assert!(store.try_lock().unwrap().inner.batches.is_empty());
}

/// An uplink that fails every attempt while `up` is false (the batcher is not paused: the
/// runner holds its batch in back-off), and keeps what it was given and what was evicted.
struct Flaky<'t> {
    up: &'t Cell<bool>,
    given: &'t RefCell<Vec<Given>>,
    evicted: &'t RefCell<Vec<(u64, Vec<u32>)>>,
}

impl Handler<u32> for Flaky<'_> {
    type Error = ();
    async fn handle(&mut self, items: &[u32], info: BatchInfo) -> Result<(), ()> {
        Timer::after_millis(1).await; // air time
        let ok = self.up.get();
        let g = Given { boot: 0, seq: info.seq, attempt: info.attempt, items: items.to_vec(), ok };
        self.given.borrow_mut().push(g);
        if ok { Ok(()) } else { Err(()) }
    }
    fn evicted(&mut self, items: &mut VecView<u32>, seq: u64) {
        self.evicted.borrow_mut().push((seq, items.drain(..).collect()));
    }
}

/// One flight slot, retries without end: the first batch cut is held (failing, backing off)
/// for as long as the uplink is down.
const OUTAGE: Config = Config::new()
    .max_batch(4)
    .linger(millis(5))
    .max_attempts(1000)
    .retry_delays(millis(2), millis(8))
    .max_in_flight(1)
    .store(StorePolicy::new().seq_block(16));

/// Every item delivered exactly once (no duplicate among the successful attempts), in
/// acceptance order.
fn assert_delivered_once_in_order(given: &[Given], want: &[u32]) {
    let delivered: Vec<u32> = given.iter().filter(|g| g.ok).flat_map(|g| g.items.iter().copied()).collect();
    assert_eq!(delivered, want, "each item delivered once, FIFO across the store");
}

#[test]
fn an_outage_with_one_flight_slot_spills_while_the_runner_holds_its_batch_and_loses_nothing() {
    let _g = serial();
    let log = RefCell::new(Log::default());
    let store = Mutex::<NoopRawMutex, _>::new(Watched::new(Mem::default(), &log));
    let b: Batcher<NoopRawMutex, u32, 8> = Batcher::new(OUTAGE);
    let (up, given, evicted) = (Cell::new(false), RefCell::new(Vec::new()), RefCell::new(Vec::new()));
    let longest_wait = Cell::new(Duration::from_ticks(0));
    let mut exec = Exec::new();
    let runner = exec.spawn(async {
        let handler = Flaky { up: &up, given: &given, evicted: &evicted };
        b.runner(handler).store(&store).run().await;
    });
    exec.spawn(async {
        // 200 items, 25 times the RAM, while every attempt fails.
        for i in 0..200 {
            let asked = Instant::now();
            assert_eq!(b.add(i).await, Ok(None), "nothing is refused or evicted: RAM spills");
            longest_wait.set(longest_wait.get().max(asked.elapsed()));
            Timer::after_millis(1).await;
        }
        Timer::after_millis(200).await; // still down, nothing to do but retry
        up.set(true);
        b.shutdown().await;
    });
    exec.run_for(Duration::from_millis(250), POLLS);
    // The outage so far: the runner holds its first batch and spilled everything beyond RAM.
    let m = b.metrics();
    assert_eq!(m.batches_in_flight, 1, "{m:?}");
    assert!(given.borrow().iter().all(|g| !g.ok && g.seq == given.borrow()[0].seq), "one batch, failing");
    assert!(given.borrow().len() > 10, "retried: {}", given.borrow().len());
    assert!(m.stored >= 200 - 8 - 4, "everything beyond RAM and the held batch is stored: {m:?}");
    assert_eq!(m.stored as usize, store.try_lock().unwrap().inner.batches.values().map(Vec::len).sum());
    assert_eq!(longest_wait.get(), Duration::from_ticks(0), "no producer waited for the uplink");
    // Quiet outage: the held runner sleeps until its retries (every 8 ms), it does not spin.
    let before = exec.polls(runner);
    exec.run_for(Duration::from_millis(100), POLLS);
    let quiet = exec.polls(runner) - before;
    assert!(quiet <= 50, "{quiet} polls of the runner in 100 ms of back-off (12 retries)");

    exec.run_all(Duration::from_secs(60), POLLS);
    let given = given.take();
    assert_delivered_once_in_order(&given, &(0..200).collect::<Vec<_>>());
    let log = log.take();
    assert!(log.acked.len() >= 45, "spilled batches: {}", log.acked.len());
    for (seq, items) in &log.acked {
        assert!(given.iter().any(|g| g.ok && g.seq == *seq && &g.items == items), "stored batch {seq}");
    }
    assert!(store.try_lock().unwrap().inner.batches.is_empty(), "removed at their final outcome");
    let m = b.metrics();
    assert!(m.is_consistent(), "{m:?}");
    assert_eq!((m.delivered, m.stored, m.rejected, m.evicted, m.dead_lettered), (200, 0, 0, 0, 0));
    assert_eq!(m.flushes.get(batch_embassy::Trigger::Store), log.acked.len() as _);
    assert!(evicted.borrow().is_empty());
    assert!(!log.overlapped);
}

#[test]
fn a_spill_cancelled_while_the_runner_holds_its_batch_gives_the_items_back_in_order() {
    let _g = serial();
    let log = RefCell::new(Log::default());
    let mut watched = Watched::new(Mem::default(), &log);
    watched.delay = Some(Duration::from_millis(3));
    let store = Mutex::<NoopRawMutex, _>::new(watched);
    let b: Batcher<NoopRawMutex, u32, 8> = Batcher::new(OUTAGE);
    let (up, given, evicted) = (Cell::new(false), RefCell::new(Vec::new()), RefCell::new(Vec::new()));
    let cancels = Cell::new(0u32);
    let mut exec = Exec::new();
    exec.spawn(async {
        let handler = Flaky { up: &up, given: &given, evicted: &evicted };
        let mut runner = b.runner(handler).store(&store);
        // In spills, removals, loads, back-offs.
        run_cancelled(&b, &mut runner, 5, &cancels).await;
    });
    exec.spawn(async {
        for i in 0..150 {
            b.add(i).await.unwrap();
            Timer::after_millis(1).await;
        }
        up.set(true);
        b.shutdown().await;
    });
    exec.run_for(Duration::from_millis(140), POLLS);
    // Still down: every append so far was a spill made while the runner held its batch.
    assert_eq!(b.metrics().batches_in_flight, 1);
    assert!(given.borrow().iter().all(|g| !g.ok));
    let cancelled = log.borrow().cancelled.get("append").copied().unwrap_or(0);
    assert!(cancelled > 0, "no spill was cancelled: {:?}", log.borrow().cancelled);
    assert!(!log.borrow().acked.is_empty(), "spills went through too");

    exec.run_all(Duration::from_secs(600), POLLS);
    assert_delivered_once_in_order(&given.take(), &(0..150).collect::<Vec<_>>());
    let m = b.metrics();
    assert!(m.is_consistent(), "{m:?}");
    assert_eq!((m.delivered, m.stored, m.returned, m.evicted), (150, 0, 0, 0), "{m:?}");
    assert!(m.store_failures > 0, "a cancelled spill counts as a failed store operation");
    assert!(store.try_lock().unwrap().inner.batches.is_empty(), "a cancelled append left a batch behind");
    assert!(!log.borrow().overlapped);
    assert!(cancels.get() > 20, "{}", cancels.get());
}

#[test]
fn batches_evicted_from_a_full_store_reach_the_handler() {
    let _g = serial();
    let log = RefCell::new(Log::default());
    let mem = Mem { limit: Some(3), ..Mem::default() };
    let store = Mutex::<NoopRawMutex, _>::new(Watched::new(mem, &log));
    let b: Batcher<NoopRawMutex, u32, 8> = Batcher::new(OUTAGE.overflow(Overflow::DropOldest));
    let (up, given, evicted) = (Cell::new(false), RefCell::new(Vec::new()), RefCell::new(Vec::new()));
    let dropped = RefCell::new(Vec::new()); // evicted from RAM by a push, if any
    let mut exec = Exec::new();
    exec.spawn(async {
        let handler = Flaky { up: &up, given: &given, evicted: &evicted };
        b.runner(handler).store(&store).run().await;
    });
    exec.spawn(async {
        for i in 0..100 {
            if let Some(old) = b.add(i).await.unwrap() {
                dropped.borrow_mut().push(old);
            }
            Timer::after_millis(1).await;
        }
        up.set(true);
        b.shutdown().await;
    });
    exec.run_all(Duration::from_secs(60), POLLS);

    let evicted = evicted.take();
    assert!(evicted.len() >= 10, "a store of 3 batches evicted the oldest: {evicted:?}");
    let seqs: Vec<u64> = evicted.iter().map(|(seq, _)| *seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "oldest first: {seqs:?}");
    assert!(evicted.iter().all(|(_, items)| items.len() == 4), "whole batches");
    let log = log.take();
    for (seq, items) in &evicted {
        assert_eq!(log.acked.get(seq), Some(items), "batch {seq} was stored with these items");
    }
    // Every item either delivered (once, in order) or evicted: from the store to the handler, or
    // from RAM back to the producer.
    let given = given.take();
    let delivered: Vec<u32> = given.iter().filter(|g| g.ok).flat_map(|g| g.items.iter().copied()).collect();
    assert!(delivered.windows(2).all(|w| w[0] < w[1]), "in order: {delivered:?}");
    let mut all: Vec<u32> = delivered.clone();
    all.extend(evicted.iter().flat_map(|(_, items)| items.iter().copied()));
    all.extend(dropped.borrow().iter().copied());
    all.sort_unstable();
    assert_eq!(all, (0..100).collect::<Vec<_>>(), "nothing lost without a trace, nothing twice");
    let m = b.metrics();
    assert!(m.is_consistent(), "{m:?}");
    let by_handler = evicted.iter().map(|(_, items)| items.len()).sum::<usize>();
    assert_eq!(m.evicted as usize, by_handler + dropped.borrow().len(), "{m:?}");
    assert_eq!((m.delivered as usize, m.stored), (delivered.len(), 0));
    assert!(store.try_lock().unwrap().inner.batches.is_empty());
}

/// A handler that records deliveries and expired items with their batch (`max_age`).
#[cfg(feature = "uplink")]
struct Aging<'c> {
    delivered: &'c RefCell<Vec<u32>>,
    expired: &'c RefCell<Vec<(Option<BatchInfo>, Vec<u32>)>>,
}

#[cfg(feature = "uplink")]
impl Handler<u32> for Aging<'_> {
    type Error = ();
    async fn handle(&mut self, batch: &[u32], _: BatchInfo) -> Result<(), ()> {
        self.delivered.borrow_mut().extend_from_slice(batch);
        Ok(())
    }
    fn expired(&mut self, items: &mut heapless::vec::VecView<u32>, info: Option<BatchInfo>) {
        self.expired.borrow_mut().push((info, items.iter().copied().collect()));
    }
}

#[cfg(feature = "uplink")]
#[test]
fn a_stored_batch_older_than_max_age_when_it_leaves_the_store_goes_to_the_expiry_path() {
    let _g = serial();
    let log = RefCell::new(Log::default());
    let store = Mutex::<NoopRawMutex, _>::new(Watched::new(Mem::default(), &log));
    let config = Config::new().max_batch(4).linger(millis(10)).max_age(millis(500)).store(StorePolicy::new());
    let b: Batcher<NoopRawMutex, u32, 8> = Batcher::new(config);
    let (delivered, expired) = (RefCell::new(Vec::new()), RefCell::new(Vec::new()));
    let mut exec = Exec::new();
    exec.spawn(async {
        b.runner(Aging { delivered: &delivered, expired: &expired }).store(&store).run().await;
    });
    exec.spawn(async {
        b.pause(); // the uplink is down for a second
        for i in 0..16 {
            b.add(i).await.unwrap();
        }
        assert!(b.metrics().stored >= 8, "spilled: {:?}", b.metrics());
        Timer::after_millis(1000).await;
        for i in 16..20 {
            b.add(i).await.unwrap();
        }
        b.resume();
        b.shutdown().await;
    });
    exec.run_all(Duration::from_secs(10), POLLS);

    assert_eq!(delivered.take(), (16..20).collect::<Vec<_>>(), "only the fresh ones were sent");
    let expired = expired.take();
    let mut all: Vec<u32> = expired.iter().flat_map(|(_, items)| items.iter().copied()).collect();
    all.sort_unstable();
    assert_eq!(all, (0..16).collect::<Vec<_>>(), "a second old: every one expired, once");
    let from_store: Vec<&(Option<BatchInfo>, Vec<u32>)> = expired
        .iter()
        .filter(|(info, _)| info.is_some_and(|i| i.trigger == batch_embassy::Trigger::Store))
        .collect();
    assert!(!from_store.is_empty(), "stored batches expired as they left the store: {expired:?}");
    for (info, items) in from_store {
        assert_eq!(log.borrow().acked.get(&info.unwrap().seq), Some(items), "with the items stored");
    }
    let m = b.metrics();
    assert!(m.is_consistent(), "{m:?}");
    assert_eq!((m.expired, m.delivered, m.stored), (16, 4, 0), "{m:?}");
    assert!(store.try_lock().unwrap().inner.batches.is_empty(), "removed from the store");
}
