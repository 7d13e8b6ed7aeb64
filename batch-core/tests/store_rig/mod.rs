//! A virtual-time driver for the core's store policy, with a store in memory that survives
//! "power cuts".
//!
//! [`Rig`] owns a core over run-time storage, the buffers of its running batches, a [`MemStore`]
//! and a record of everything the handler was given. [`Rig::pump`] does what a real driver does
//! after every input: store operations (`poll_store` / `handle_store` / `unspill`) and cuts
//! (`poll_flush`, with write-ahead appends and `handle_written`), until neither has work.
//! Attempts run until the test ends them ([`Rig::deliver_all`], [`Rig::fail_all`]).
//! [`Rig::power_cut`] drops every bit of RAM state (the core, the batch buffers, a spill in
//! progress) and boots a new core from the store, through `recovered`, as a real reboot does.
//!
//! It checks after every step what any driver relies on: the metrics identity. Tests check the
//! durability promises on its record: every item the store acknowledged is delivered at least
//! once; a sequence number always names the same items; first deliveries come in acceptance
//! order.

#![allow(dead_code, reason = "each test crate uses a different part of the rig")]

use std::collections::BTreeMap;

use batch_core::storage::{FixedDeque, InFlight};
use batch_core::store::{Recovered, StoreDone, StoreOp, StoredBatch};
use batch_core::{BatchCore, Completion, Config, Duration, Instant, Outcome, Retry};

pub type Core = BatchCore<u32, FixedDeque<u32>, Vec<InFlight>>;

/// A store in memory: whole batches by seq, a seq floor, a limit on batches, and failures on
/// demand.
#[derive(Debug, Default, Clone)]
pub struct MemStore {
    pub batches: BTreeMap<u64, Vec<u32>>,
    /// Each batch's birth on the store clock (the rig's `now`, which runs on across power cuts
    /// as Unix time does), in milliseconds.
    pub born: BTreeMap<u64, u64>,
    pub floor: u64,
    /// At most this many batches (`None`: unlimited).
    pub limit: Option<usize>,
    /// The next this many operations fail.
    pub fail_next: u32,
    pub appends: u64,
    pub removes: u64,
}

impl MemStore {
    fn fail(&mut self) -> bool {
        if self.fail_next > 0 {
            self.fail_next -= 1;
            true
        } else {
            false
        }
    }

    fn recover(&self) -> Recovered {
        let items = self.batches.values().map(|b| b.len() as u64).sum();
        let above = self.batches.keys().next_back().map_or(0, |s| s + 1);
        Recovered { batches: self.batches.len() as u64, items, seq_floor: self.floor.max(above) }
    }

    /// `Ok(true)` appended, `Ok(false)` full, `Err` failed.
    fn append(&mut self, batch: StoredBatch, items: &[u32]) -> Result<bool, ()> {
        let seq = batch.seq;
        if self.fail() {
            return Err(());
        }
        if self.limit.is_some_and(|l| self.batches.len() >= l) {
            return Ok(false);
        }
        assert!(self.batches.keys().all(|&s| s < seq), "appends come in seq order");
        assert!(seq < self.floor, "seq {seq} was handed out at or above the durable floor {}", self.floor);
        self.batches.insert(seq, items.to_vec());
        self.born.insert(seq, batch.born_ms);
        self.appends += 1;
        Ok(true)
    }

    fn oldest_after(&self, after: Option<u64>) -> Option<(StoredBatch, Vec<u32>)> {
        let (seq, items) = self.batches.iter().find(|(s, _)| after.is_none_or(|a| **s > a))?;
        Some((StoredBatch { seq: *seq, born_ms: self.born[seq] }, items.clone()))
    }

    fn remove(&mut self, seq: u64) {
        self.batches.remove(&seq);
        self.born.remove(&seq);
    }
}

/// One attempt given to the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Given {
    pub boot: u32,
    pub seq: u64,
    pub items: Vec<u32>,
    pub delivered: bool,
}

pub struct Rig {
    pub config: Config,
    pub cap: usize,
    pub core: Core,
    pub now: Instant,
    pub store: MemStore,
    /// Buffers of the batches in flight, by seq.
    pub flights: BTreeMap<u64, Vec<u32>>,
    /// Every final delivery, in order.
    pub delivered: Vec<Given>,
    /// Items handed back: evicted, dead-lettered.
    pub evicted: Vec<u32>,
    pub dead: Vec<u32>,
    /// Items the handler rejected for good, and items expired.
    pub rejected: Vec<u32>,
    pub expired: Vec<u32>,
    /// Items the store acknowledged at some point (spilled, or written ahead).
    pub acknowledged: Vec<u32>,
    pub next_item: u32,
    pub boot: u32,
    /// Store operations issued (for tests that look at the order).
    pub ops: Vec<StoreOp>,
    /// The items each seq was cut (or spilled) with, across boots.
    pub cuts: BTreeMap<u64, Vec<u32>>,
    /// When each item was accepted.
    pub pushed_at: BTreeMap<u32, Instant>,
}

impl Rig {
    pub fn new(config: Config, cap: usize, slots: usize) -> Self {
        let store = MemStore::default();
        let core = boot(config, cap, slots, &store);
        let mut rig = Rig {
            config,
            cap,
            core,
            now: Instant::from_millis(1),
            store,
            flights: BTreeMap::new(),
            delivered: Vec::new(),
            evicted: Vec::new(),
            dead: Vec::new(),
            rejected: Vec::new(),
            expired: Vec::new(),
            acknowledged: Vec::new(),
            next_item: 0,
            boot: 0,
            ops: Vec::new(),
            cuts: BTreeMap::new(),
            pushed_at: BTreeMap::new(),
        };
        rig.pump();
        rig
    }

    pub fn check(&self) {
        let m = self.core.metrics();
        assert!(m.is_consistent(), "metrics do not add up: {m:?}");
    }

    /// Pushes `n` new items (numbered in push order); returns how many were accepted.
    pub fn push(&mut self, n: usize) -> usize {
        let mut accepted = 0;
        for _ in 0..n {
            let item = self.next_item;
            match self.core.push(self.now, item) {
                Ok(evicted) => {
                    self.pushed_at.insert(item, self.now);
                    self.next_item += 1;
                    accepted += 1;
                    self.evicted.extend(evicted);
                }
                Err(_) => break,
            }
            self.pump();
        }
        accepted
    }

    /// Does every store operation and cut that is due, as a driver does after an input.
    pub fn pump(&mut self) {
        for _ in 0..10_000 {
            let mut io = Vec::with_capacity(self.cap);
            let mut progressed = false;
            if let Some(op) = self.core.poll_store(self.now, &mut io) {
                self.ops.push(op);
                self.perform(op, io);
                progressed = true;
            }
            #[cfg(feature = "uplink")]
            {
                let mut stale = Vec::with_capacity(self.cap);
                if self.core.poll_expired(self.now, &mut stale) > 0 {
                    self.expired.extend(stale);
                    progressed = true;
                }
            }
            let mut batch = Vec::with_capacity(self.cap);
            if let Some(flush) = self.core.poll_flush(self.now, &mut batch) {
                self.note_cut(flush.seq, &batch);
                self.check_fresh(&batch, "cut");
                if flush.write_ahead {
                    let stored = StoredBatch::at(flush.seq, self.clock_ms(), flush.oldest_age);
                    let ok = matches!(self.store.append(stored, &batch), Ok(true));
                    if ok {
                        self.acknowledged.extend(&batch);
                    }
                    assert!(self.core.handle_written(flush.seq, ok));
                }
                self.flights.insert(flush.seq, batch);
                progressed = true;
            }
            for seq in self.flights.keys().copied().collect::<Vec<_>>() {
                match self.core.poll_retry(self.now, seq) {
                    Some(Retry::Attempt(_)) => self.check_fresh(&self.flights[&seq], "retry"),
                    Some(Retry::Expired { len }) => {
                        let items = self.flights.remove(&seq).expect("held");
                        assert_eq!(items.len(), len);
                        self.expired.extend(items);
                    }
                    None => continue,
                }
                progressed = true;
            }
            self.check();
            if !progressed {
                return;
            }
        }
        panic!("the driver never ran out of work: a busy loop");
    }

    fn perform(&mut self, op: StoreOp, io: Vec<u32>) {
        let now = self.now;
        let done = match op {
            StoreOp::PersistFloor { floor } => {
                if self.store.fail() {
                    StoreDone::Failed
                } else {
                    self.store.floor = self.store.floor.max(floor);
                    StoreDone::FloorPersisted
                }
            }
            StoreOp::Append { seq, len, age } => {
                assert_eq!(io.len(), len);
                self.note_cut(seq, &io);
                match self.store.append(StoredBatch::at(seq, self.clock_ms(), age), &io) {
                    Ok(true) => {
                        self.acknowledged.extend(&io);
                        StoreDone::Appended
                    }
                    refused => {
                        let full = refused.is_ok();
                        assert_eq!(self.core.unspill(now, full, io.into_iter()), len);
                        return;
                    }
                }
            }
            StoreOp::Load { after } => {
                if self.store.fail() {
                    StoreDone::Failed
                } else {
                    match self.store.oldest_after(after) {
                        Some((stored, items)) => {
                            let (seq, len, age) = (stored.seq, items.len(), stored.age_at(self.clock_ms()));
                            let flush = self.core.handle_store(now, StoreDone::Loaded { seq, len, age });
                            let flush = flush.expect("a load asked for starts a batch");
                            assert_eq!((flush.seq, flush.len), (seq, len));
                            if flush.expired {
                                self.expired.extend(items);
                            } else {
                                self.check_fresh(&items, "load");
                                self.flights.insert(seq, items);
                            }
                            return;
                        }
                        None => StoreDone::Empty,
                    }
                }
            }
            StoreOp::Remove { seq } => {
                if self.store.fail() {
                    StoreDone::Failed
                } else {
                    self.store.remove(seq);
                    self.store.removes += 1;
                    StoreDone::Removed
                }
            }
            StoreOp::Evict { after } => match self.store.oldest_after(after) {
                Some((stored, items)) => {
                    let seq = stored.seq;
                    self.store.remove(seq);
                    let len = items.len();
                    self.evicted.extend(items);
                    StoreDone::Evicted { seq, len }
                }
                None => StoreDone::Empty,
            },
        };
        assert_eq!(self.core.handle_store(now, done), None);
    }

    /// Ends every running attempt with `outcome`. A partial outcome delivers the first
    /// `delivered` items of each batch, rejects the next `rejected` (as many as it holds), and
    /// keeps the rest for the retry.
    pub fn complete_all(&mut self, outcome: Outcome) {
        let running: Vec<u64> = self.flights.keys().copied().collect();
        for seq in running {
            let held = self.flights[&seq].len() as u32;
            let outcome = match outcome {
                Outcome::Partial { delivered, rejected } => {
                    let delivered = delivered.min(held);
                    Outcome::Partial { delivered, rejected: rejected.min(held - delivered) }
                }
                other => other,
            };
            let Some(c) = self.core.handle_completion(self.now, seq, outcome) else { continue };
            if let Outcome::Partial { delivered, rejected } = outcome {
                let batch = self.flights.get_mut(&seq).expect("running");
                let taken: Vec<u32> = batch.drain(..delivered as usize).collect();
                self.rejected.extend(batch.drain(..rejected as usize));
                if !taken.is_empty() {
                    self.delivered.push(Given { boot: self.boot, seq, items: taken, delivered: true });
                }
            }
            let items = self.flights[&seq].clone();
            match c {
                Completion::Delivered { .. } => {
                    self.flights.remove(&seq);
                    if !matches!(outcome, Outcome::Partial { .. }) {
                        self.delivered.push(Given { boot: self.boot, seq, items, delivered: true });
                    }
                }
                Completion::DeadLettered { .. } => {
                    self.flights.remove(&seq);
                    self.dead.extend(items);
                }
                Completion::Expired { .. } => {
                    self.flights.remove(&seq);
                    self.expired.extend(items);
                }
                Completion::Retry { .. } => {}
            }
            self.check();
        }
        self.pump();
    }

    pub fn deliver_all(&mut self) {
        self.complete_all(Outcome::Delivered);
    }

    pub fn fail_all(&mut self) {
        self.complete_all(Outcome::Failed);
    }

    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.pump();
    }

    /// Jumps to the core's next deadline, if any.
    pub fn advance_to_deadline(&mut self) -> bool {
        match self.core.poll_timeout() {
            Some(at) => {
                if at > self.now {
                    self.now = at;
                }
                self.pump();
                true
            }
            None => false,
        }
    }

    /// Power cut: all RAM state is gone; a new core boots from the store.
    pub fn power_cut(&mut self) {
        self.flights.clear();
        self.boot += 1;
        let slots = self.config.get_max_in_flight();
        self.core = boot(self.config, self.cap, slots, &self.store);
        self.pump();
    }

    /// Resumes, closes and delivers everything (retries included) until the core is finished.
    pub fn drain(&mut self) {
        self.core.resume(self.now);
        self.core.close();
        self.pump();
        for _ in 0..10_000 {
            if self.core.is_finished() {
                return;
            }
            self.deliver_all();
            if !self.advance_to_deadline() {
                self.pump();
            }
        }
        panic!("the drain never finished: {:?}", self.core.metrics());
    }

    /// Items delivered at least once, each once, in first-delivery order.
    pub fn first_deliveries(&self) -> Vec<u32> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for g in &self.delivered {
            for &i in &g.items {
                if seen.insert(i) {
                    out.push(i);
                }
            }
        }
        out
    }

    /// The store clock: the rig's time in milliseconds (it runs on across power cuts).
    pub fn clock_ms(&self) -> u64 {
        self.now.as_millis()
    }

    /// `max_age` holds at an attempt's start: no item older than it is sent (the store clock's
    /// millisecond resolution allows 1 ms).
    #[allow(clippy::unused_self, reason = "used with the uplink feature")]
    fn check_fresh(&self, items: &[u32], at: &str) {
        #[cfg(feature = "uplink")]
        if let Some(max) = self.config.get_max_age() {
            for i in items {
                let age = self.now - self.pushed_at[i];
                assert!(
                    age <= max + Duration::from_millis(1),
                    "item {i} sent {age:?} old at a {at}, max_age {max:?}"
                );
            }
        }
        let _ = (items, at);
    }

    /// A new cut or spill never takes a seq already used for other items (in this boot or an
    /// earlier one).
    fn note_cut(&mut self, seq: u64, items: &[u32]) {
        if let Some(prev) = self.cuts.get(&seq) {
            assert_eq!(prev, items, "seq {seq} was reused for other items");
        } else {
            self.cuts.insert(seq, items.to_vec());
        }
    }

    /// Every delivery under a seq holds items that seq was cut with (a partial answer delivers
    /// a part), across boots.
    pub fn check_seqs_never_reused(&self) {
        for g in &self.delivered {
            let cut = &self.cuts[&g.seq];
            assert!(
                g.items.iter().all(|i| cut.contains(i)),
                "seq {} delivered {:?}, cut with {cut:?}",
                g.seq,
                g.items
            );
        }
    }
}

fn boot(config: Config, cap: usize, slots: usize, store: &MemStore) -> Core {
    let queue = FixedDeque::try_with_capacity(cap).expect("capacity");
    let mut core = Core::with_storage(config, queue, Vec::with_capacity(slots), None).expect("valid config");
    assert!(core.recovered(store.recover()));
    core
}
