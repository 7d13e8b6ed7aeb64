//! Store and forward on embassy (feature `store`): runners that perform the core's store
//! operations on a [`Store`] shared through an async mutex.
//!
//! The core decides (see [`batch_core::store`] and `batch_core::batcher::store`), the runners do
//! the I/O: a [`StoreRunner`] is a [`Runner`] that, whenever it holds no batch, asks the core for
//! the next store operation ([`poll_store`]) and performs it before it looks for a batch to cut.
//! Every runner of a batcher takes part; the store sits behind one
//! `embassy_sync::mutex::Mutex`, so their operations run one at a time:
//!
//! - **Recovery.** Until the store's content from before the boot is known, producers wait. The
//!   first runner to start locks the store, calls [`Store::recover`] and reports it
//!   ([`recovered`]); the others find it done when they get the lock. A failed recovery is
//!   retried after the configured base retry delay.
//! - **Spill, load, remove, floor, evict** ([`StoreOp`]): performed by a runner in its batch
//!   buffer when it holds no batch, or in its second buffer (see below) while it holds one. A
//!   [`StoreOp::Load`] reads the oldest stored batch into the batch buffer and the runner
//!   delivers it like any other batch (trigger [`Trigger::Store`](crate::Trigger::Store)).
//!   Removals come when the core asks for them: at a stored batch's final outcome. A batch
//!   evicted from a full store under [`Overflow::DropOldest`](crate::Overflow::DropOldest) goes
//!   to [`Handler::evicted`].
//! - **Write-ahead** ([`StorePolicy::write_ahead`]): the runner that cut the batch appends it
//!   before attempt 1 and reports it with [`handle_written`].
//!
//! Between store operations a runner waits on the batcher's waiter chain like any other: it is
//! polled when the state changes or when a deadline (a cut, a retry, a failed store operation's
//! retry) comes, never in a loop.
//!
//! # Cancellation
//!
//! [`StoreRunner::run`] is cancel-safe like [`Runner::run`]. Dropped in the middle of a store
//! operation (a `select` lost), it leaves the core consistent and loses no item:
//!
//! - a spill's items go back to the front of RAM ([`unspill`]), in order;
//! - a write-ahead append is reported as failed (the batch runs unprotected, counted);
//! - any other operation is reported as failed and retried after the base retry delay.
//!
//! The store may have completed the cancelled append anyway (a dropped flash write is a power cut
//! for the data). Such a batch is not counted by the core, so this runner removes it from the
//! store before its next operation; if the runner is dropped first, the batch stays in the store
//! until the next boot, which delivers it again (at least once: a consumer deduplicates by seq).
//!
//! # Store operations while a batch is held
//!
//! A runner waiting to retry its batch (a back-off), or holding it while the batcher is paused,
//! keeps that batch in its batch buffer. So that an outage still spills with one flight slot
//! (`max_in_flight(1)`, the common firmware setup), each `StoreRunner` owns a **second buffer of
//! `N` items** for the operations that do not start a batch: spills ([`StoreOp::Append`]),
//! removals, sequence-number floors and evictions. It costs `N * size_of::<T>()` bytes (plus a
//! length word) of RAM per store runner, in the runner task's future; it holds items only while
//! such an operation runs (a spill cancelled half-way gives them back to RAM with [`unspill`],
//! in order, as from the batch buffer).
//!
//! A load needs the batch buffer, so a runner that holds a batch must never be handed one: it
//! asks the core with `poll_store_without_load`, which hands out every store operation but
//! loads; loads go to an idle runner (one per slot). Between operations the holding runner
//! sleeps until its retry, the next store deadline
//! (a failed operation's retry) or a change (RAM filling up), never in a loop.
//!
//! [`poll_store`]: batch_core::BatchCore::poll_store
//! [`recovered`]: batch_core::BatchCore::recovered
//! [`handle_written`]: batch_core::BatchCore::handle_written
//! [`unspill`]: batch_core::BatchCore::unspill
//! [`StorePolicy::write_ahead`]: batch_core::store::StorePolicy::write_ahead

use batch_core::store::{Store, StoreDone, StoreError, StoreOp, StoredBatch};
use embassy_sync::blocking_mutex::raw::RawMutex;
use embassy_sync::mutex::{Mutex, MutexGuard};
use embassy_time::{Duration, Timer};

use crate::batcher::{Batcher, State, Step};
use crate::handler::{BatchInfo, Handler};
use crate::runner::{End, Go, Runner};

/// A [`Runner`] that also drives the batcher's store: recovery at boot, spills, loads, removals,
/// the sequence-number floor and write-ahead appends, as the core's store policy asks (see the
/// [module documentation](self)). Made by [`Runner::store`]; run one per flight slot, all over
/// the same store mutex.
///
/// ```
/// use batch_embassy::{BatchInfo, Batcher, Config, StorePolicy, millis};
/// use batch_core::store::{Recovered, Store, StoreError, StoredBatch};
/// use batch_core::storage::BatchBuf;
/// use embassy_sync::blocking_mutex::raw::NoopRawMutex;
/// use embassy_sync::mutex::{Mutex, MutexGuard};
///
/// /// A store that keeps nothing (a real firmware uses `FlashStore`).
/// struct Nowhere;
/// impl Store<u16> for Nowhere {
///     type Error = ();
///     async fn recover(&mut self) -> Result<Recovered, StoreError<()>> { Ok(Recovered::default()) }
///     async fn append(&mut self, _: StoredBatch, _: &[u16]) -> Result<(), StoreError<()>> { Err(StoreError::Full) }
///     async fn read_after<B: BatchBuf<u16>>(&mut self, _: Option<u64>, _: &mut B)
///         -> Result<Option<StoredBatch>, StoreError<()>> { Ok(None) }
///     async fn remove(&mut self, _: u64) -> Result<(), StoreError<()>> { Ok(()) }
///     async fn persist_seq_floor(&mut self, _: u64) -> Result<(), StoreError<()>> { Ok(()) }
/// }
///
/// const CONFIG: Config = Config::new().max_batch(8).linger(millis(100)).store(StorePolicy::new());
/// let batcher: Batcher<NoopRawMutex, u16, 32> = Batcher::new(CONFIG);
/// let store = Mutex::<NoopRawMutex, _>::new(Nowhere);
/// # embassy_futures::block_on(async {
/// let mut runner = batcher.runner(async |_: &[u16], _: BatchInfo| Ok::<(), ()>(())).store(&store);
/// batcher.close();
/// runner.run().await; // recovers, then drains and returns
/// assert!(batcher.is_finished());
/// # });
/// ```
pub struct StoreRunner<'a, 's, M, T, const N: usize, const F: usize, H, SM, S>
where
    M: RawMutex,
    H: Handler<T>,
    SM: RawMutex,
{
    runner: Runner<'a, M, T, N, F, H>,
    store: &'s Mutex<SM, S>,
    /// The buffer for store operations while `runner` holds a batch in its own (see the
    /// [module documentation](self)): empty between operations.
    spare: heapless::Vec<T, N>,
    /// A batch this runner's cancelled append may have left in the store without the core
    /// counting it: removed before its next operation.
    undo: Option<u64>,
}

impl<M: RawMutex, T, const N: usize, const F: usize, H: Handler<T>, SM: RawMutex, S> core::fmt::Debug
    for StoreRunner<'_, '_, M, T, N, F, H, SM, S>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StoreRunner")
            .field("runner", &self.runner)
            .field("spare", &self.spare.len())
            .field("undo", &self.undo)
            .finish_non_exhaustive()
    }
}

impl<'a, M: RawMutex, T, const N: usize, const F: usize, H: Handler<T>> Runner<'a, M, T, N, F, H> {
    /// This runner, also driving the batcher's store behind `store` (for a batcher whose
    /// [`Config`](crate::Config) has a [store policy](crate::StorePolicy); without one it only
    /// delivers). Every runner of the batcher needs it, with the same mutex.
    ///
    /// ```
    /// # use batch_core::store::{Recovered, Store, StoreError, StoredBatch};
    /// # use batch_core::storage::BatchBuf;
    /// # struct Flash;
    /// # impl Store<u8> for Flash {
    /// #     type Error = ();
    /// #     async fn recover(&mut self) -> Result<Recovered, StoreError<()>> { Ok(Recovered::default()) }
    /// #     async fn append(&mut self, _: StoredBatch, _: &[u8]) -> Result<(), StoreError<()>> { Ok(()) }
    /// #     async fn read_after<B: BatchBuf<u8>>(&mut self, _: Option<u64>, _: &mut B)
    /// #         -> Result<Option<StoredBatch>, StoreError<()>> { Ok(None) }
    /// #     async fn remove(&mut self, _: u64) -> Result<(), StoreError<()>> { Ok(()) }
    /// #     async fn persist_seq_floor(&mut self, _: u64) -> Result<(), StoreError<()>> { Ok(()) }
    /// # }
    /// use batch_embassy::{BatchInfo, Batcher, Config, StorePolicy};
    /// use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
    /// use embassy_sync::mutex::{Mutex, MutexGuard};
    ///
    /// static READINGS: Batcher<CriticalSectionRawMutex, u8, 64> =
    ///     Batcher::new(Config::new().max_batch(16).store(StorePolicy::new().write_ahead(true)));
    ///
    /// async fn uplink(store: &Mutex<CriticalSectionRawMutex, Flash>) {
    ///     let mut runner = READINGS.runner(async |_: &[u8], _: BatchInfo| Ok::<(), ()>(())).store(store);
    ///     runner.run().await;
    /// }
    /// # let _ = uplink;
    /// ```
    pub fn store<'s, SM: RawMutex, S: Store<T>>(
        self,
        store: &'s Mutex<SM, S>,
    ) -> StoreRunner<'a, 's, M, T, N, F, H, SM, S> {
        StoreRunner { runner: self, store, spare: heapless::Vec::new(), undo: None }
    }
}

/// What a store runner does next (decided under the batcher's lock).
enum Next {
    /// Read the store's content from before the boot.
    Recover,
    /// Perform a store operation (a spill's items are in the batch buffer).
    Store(StoreOp),
    /// Run the held batch's attempt, after appending it (its oldest item `age` old) when
    /// `write_ahead`.
    Run { write_ahead: Option<batch_core::Duration> },
    /// Hand the held batch back (given up), or stop if none is held.
    GiveBack,
    /// Items too old to send are in the batch buffer: hand them to the expiry path (with the
    /// batch held, if they expired at its retry).
    Expired,
}

impl<'a, M, T, const N: usize, const F: usize, H, SM, S> StoreRunner<'a, '_, M, T, N, F, H, SM, S>
where
    M: RawMutex,
    H: Handler<T>,
    SM: RawMutex,
    S: Store<T>,
{
    /// The runner inside (its handler, the batch it holds).
    ///
    /// ```
    /// # use batch_core::store::{Recovered, Store, StoreError, StoredBatch};
    /// # use batch_core::storage::BatchBuf;
    /// # struct Flash;
    /// # impl Store<u8> for Flash {
    /// #     type Error = ();
    /// #     async fn recover(&mut self) -> Result<Recovered, StoreError<()>> { Ok(Recovered::default()) }
    /// #     async fn append(&mut self, _: StoredBatch, _: &[u8]) -> Result<(), StoreError<()>> { Ok(()) }
    /// #     async fn read_after<B: BatchBuf<u8>>(&mut self, _: Option<u64>, _: &mut B)
    /// #         -> Result<Option<StoredBatch>, StoreError<()>> { Ok(None) }
    /// #     async fn remove(&mut self, _: u64) -> Result<(), StoreError<()>> { Ok(()) }
    /// #     async fn persist_seq_floor(&mut self, _: u64) -> Result<(), StoreError<()>> { Ok(()) }
    /// # }
    /// use batch_embassy::{BatchInfo, Batcher, Config, StorePolicy};
    /// use embassy_sync::blocking_mutex::raw::NoopRawMutex;
    /// use embassy_sync::mutex::{Mutex, MutexGuard};
    /// let b: Batcher<NoopRawMutex, u8, 8> = Batcher::new(Config::new().store(StorePolicy::new()));
    /// let store = Mutex::<NoopRawMutex, _>::new(Flash);
    /// let runner = b.runner(async |_: &[u8], _: BatchInfo| Ok::<(), ()>(())).store(&store);
    /// assert_eq!(runner.runner().holding(), None);
    /// ```
    pub fn runner(&self) -> &Runner<'a, M, T, N, F, H> {
        &self.runner
    }

    /// Runs until the batcher is closed and drained (stored batches included) or a shutdown
    /// deadline gave up the rest: delivers batches as [`Runner::run`] does and performs the
    /// store operations the core asks for. Cancel-safe: see the [module documentation](self).
    ///
    /// ```
    /// # use batch_core::store::{Recovered, Store, StoreError, StoredBatch};
    /// # use batch_core::storage::BatchBuf;
    /// # struct Flash;
    /// # impl Store<u8> for Flash {
    /// #     type Error = ();
    /// #     async fn recover(&mut self) -> Result<Recovered, StoreError<()>> { Ok(Recovered::default()) }
    /// #     async fn append(&mut self, _: StoredBatch, _: &[u8]) -> Result<(), StoreError<()>> { Ok(()) }
    /// #     async fn read_after<B: BatchBuf<u8>>(&mut self, _: Option<u64>, _: &mut B)
    /// #         -> Result<Option<StoredBatch>, StoreError<()>> { Ok(None) }
    /// #     async fn remove(&mut self, _: u64) -> Result<(), StoreError<()>> { Ok(()) }
    /// #     async fn persist_seq_floor(&mut self, _: u64) -> Result<(), StoreError<()>> { Ok(()) }
    /// # }
    /// use batch_embassy::{BatchInfo, Batcher, Config, StorePolicy};
    /// use embassy_futures::select::select;
    /// use embassy_sync::blocking_mutex::raw::NoopRawMutex;
    /// use embassy_sync::mutex::{Mutex, MutexGuard};
    /// use embassy_time::Timer;
    ///
    /// async fn uplink(b: &Batcher<NoopRawMutex, u8, 8>, store: &Mutex<NoopRawMutex, Flash>) {
    ///     let mut runner = b.runner(async |_: &[u8], _: BatchInfo| Ok::<(), ()>(())).store(store);
    ///     // Lose to the timer at any point, even in a flash write: nothing is lost.
    ///     while !b.is_finished() {
    ///         select(runner.run(), Timer::after_secs(60)).await;
    ///     }
    /// }
    /// # let _ = uplink;
    /// ```
    pub async fn run(&mut self) {
        loop {
            if let Some(seq) = self.undo {
                // Removing a seq the store does not hold is not an error. Cancelled here, the
                // removal is tried again on the next `run`.
                let (_turn, mut store) = lock(self.runner.batcher, self.store).await;
                let _ = store.remove(seq).await;
                self.undo = None;
            }
            let runner = &mut self.runner;
            if runner.held.is_none() {
                // Outside the lock: an item's `Drop` is user code.
                runner.batch.clear();
            }
            self.spare.clear();
            let (batch, held, spare) = (&mut runner.batch, &mut runner.held, &mut self.spare);
            let next = runner.batcher.wait(|st, _| Self::next(st, batch, held, spare)).await;
            match next {
                Next::Recover => self.recover().await,
                Next::Store(op) => self.perform(op).await,
                Next::Run { write_ahead } => {
                    let Some(info) = self.runner.held else { continue };
                    if let Some(age) = write_ahead {
                        self.write_ahead(info.seq, age).await;
                    }
                    match self.runner.attempt().await {
                        End::Done(result) => self.runner.complete(info, result),
                        End::Gone => self.runner.give_back(info),
                    }
                }
                Next::GiveBack => match self.runner.held {
                    Some(info) => self.runner.give_back(info),
                    None => return,
                },
                Next::Expired => self.runner.expire(self.runner.held),
            }
        }
    }

    /// Under the lock: with a batch held, what [`Runner`] does with it, or else a store
    /// operation in `spare`; otherwise recovery, then the next store operation, then the next
    /// cut.
    fn next(
        st: &mut State<T, N, F>,
        batch: &mut heapless::Vec<T, N>,
        held: &mut Option<BatchInfo>,
        spare: &mut heapless::Vec<T, N>,
    ) -> Step<Next> {
        if held.is_some() {
            return match Runner::<'_, M, T, N, F, H>::next(st, batch, held) {
                Step::Ready(Go::Run) => Step::Ready(Next::Run { write_ahead: None }),
                Step::Ready(Go::Stop) => Step::Ready(Next::GiveBack),
                Step::Ready(Go::Expired) => Step::Ready(Next::Expired),
                Step::Wait(retry_at) => Self::next_while_holding(st, spare, retry_at),
            };
        }
        if st.aborted {
            return Step::Ready(Next::GiveBack);
        }
        if st.core.needs_recovery() {
            return Step::Ready(Next::Recover);
        }
        if let Some(op) = st.core.poll_store(crate::now(), batch) {
            return Step::Ready(Next::Store(op));
        }
        if Runner::<'_, M, T, N, F, H>::poll_expired(st, batch) {
            return Step::Ready(Next::Expired);
        }
        if let Some(flush) = Runner::<'_, M, T, N, F, H>::cut(st, batch, held) {
            return Step::Ready(Next::Run { write_ahead: flush.write_ahead.then_some(flush.oldest_age) });
        }
        if st.core.is_finished() {
            return Step::Ready(Next::GiveBack);
        }
        // The next cut, or a failed store operation's retry.
        Step::Wait(st.core.poll_timeout().map(crate::to_embassy))
    }

    /// Under the lock, for a runner that holds a batch waiting for `retry_at` (`None`: paused):
    /// the next store operation other than a load (`poll_store_without_load`), performed in
    /// `spare`; else wait for the retry or the next store deadline.
    fn next_while_holding(
        st: &mut State<T, N, F>,
        spare: &mut heapless::Vec<T, N>,
        retry_at: Option<embassy_time::Instant>,
    ) -> Step<Next> {
        let core = &mut st.core;
        let now = crate::now();
        // Never a load: a loaded batch needs a batch buffer to run in, so an idle runner takes it.
        if let Some(op) = core.poll_store_without_load(now, spare) {
            return Step::Ready(Next::Store(op));
        }
        // A failed store operation's retry (`poll_store` forgot a passed one, so a past instant
        // here is another deadline, some other runner's: not waited for, or it would spin).
        let store_at = core.poll_timeout().filter(|at| *at > now).map(crate::to_embassy);
        Step::Wait(match (retry_at, store_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Reads the store's content from before the boot, unless another runner did.
    async fn recover(&mut self) {
        let batcher = self.runner.batcher;
        let failed = {
            let (_turn, mut store) = lock(batcher, self.store).await;
            if !batcher.with(|st| st.core.needs_recovery()) {
                return;
            }
            match store.recover().await {
                Ok(found) => {
                    batcher.with(|st| {
                        let _ = st.core.recovered(found);
                        st.settle();
                    });
                    #[cfg(feature = "defmt")]
                    defmt::info!(
                        "store: recovered {} batches ({} items), seq floor {}",
                        found.batches,
                        found.items,
                        found.seq_floor
                    );
                    false
                }
                Err(_error) => true,
            }
        };
        if failed {
            #[cfg(feature = "defmt")]
            defmt::error!("store: recovery failed; trying again");
            let delay = batcher.with(|st| st.core.config().get_base_delay());
            Timer::after(Duration::from_micros(delay.as_micros())).await;
        }
    }

    /// Performs `op` (handed out by `poll_store`) and reports it: in the batch buffer, or in the
    /// second buffer while the runner holds a batch.
    async fn perform(&mut self, op: StoreOp) {
        let Runner { batcher, handler, batch, held, .. } = &mut self.runner;
        let batcher = *batcher;
        let holding = held.is_some();
        let buffer = if holding { &mut self.spare } else { batch };
        let mut guard = OpGuard { batcher, batch: buffer, op: Some(op), undo: &mut self.undo };
        let (turn, mut store) = lock(batcher, self.store).await;
        let done = match op {
            StoreOp::PersistFloor { floor } => {
                store.persist_seq_floor(floor).await.map(|()| StoreDone::FloorPersisted)
            }
            StoreOp::Append { seq, age, .. } => {
                *guard.undo = Some(seq); // kept if cancelled from here on
                let result = store.append(header(seq, age), &guard.batch[..]).await;
                *guard.undo = None;
                drop((store, turn));
                let full = match result {
                    Ok(()) => {
                        guard.op = None;
                        report(batcher, StoreDone::Appended);
                        guard.batch.clear(); // written: the store has them
                        return;
                    }
                    Err(error) => matches!(error, StoreError::Full),
                };
                // Refused: the items go back to the front of RAM.
                guard.op = None;
                let batch = &mut *guard.batch;
                batcher.with(|st| {
                    st.core.unspill(crate::now(), full, batch.drain(..));
                    st.settle();
                });
                return;
            }
            // Not reachable while holding (`next_while_holding` asks with
            // `poll_store_without_load`): failed, and retried by a runner with a free buffer.
            StoreOp::Load { .. } if holding => Err(StoreError::Full),
            StoreOp::Load { after } => match store.read_after(after, &mut *guard.batch).await {
                Ok(Some(stored)) => {
                    drop((store, turn));
                    guard.op = None;
                    let (seq, len, now) = (stored.seq, guard.batch.len(), crate::now());
                    let age = stored.age_at(now.as_millis());
                    let loaded = batcher.with(|st| {
                        let flush = st.core.handle_store(now, StoreDone::Loaded { seq, len, age });
                        match &flush {
                            Some(f) if !f.expired => Runner::<'_, M, T, N, F, H>::hold(st, held, f),
                            _ => {}
                        }
                        st.settle();
                        flush.map(|f| f.expired)
                    });
                    match loaded {
                        Some(false) => {}
                        Some(true) => {
                            // Too old by now: to the expiry path; the store removes it.
                            let info = BatchInfo { seq, attempt: 0, trigger: batch_core::Trigger::Store };
                            handler.expired(guard.batch.as_mut_view(), Some(info));
                            guard.batch.clear();
                        }
                        None => guard.batch.clear(),
                    }
                    return;
                }
                Ok(None) => Ok(StoreDone::Empty),
                Err(error) => Err(error),
            },
            StoreOp::Remove { seq } => store.remove(seq).await.map(|()| StoreDone::Removed),
            StoreOp::Evict { after } => match store.read_after(after, &mut *guard.batch).await {
                Ok(Some(StoredBatch { seq, .. })) => {
                    let len = guard.batch.len();
                    store.remove(seq).await.map(|()| StoreDone::Evicted { seq, len })
                }
                Ok(None) => Ok(StoreDone::Empty),
                Err(error) => Err(error),
            },
        };
        drop((store, turn));
        guard.op = None;
        let done = done.unwrap_or(StoreDone::Failed);
        #[cfg(feature = "defmt")]
        if done == StoreDone::Failed {
            defmt::warn!("store: {} failed; retried later", op);
        }
        report(batcher, done);
        // Items of an evicted batch (they count as evicted), outside the lock.
        if let StoreDone::Evicted { seq, .. } = done {
            handler.evicted(guard.batch.as_mut_view(), seq);
        }
        guard.batch.clear();
    }

    /// Appends the batch just cut (write-ahead) before its first attempt, and reports it.
    async fn write_ahead(&mut self, seq: u64, age: batch_core::Duration) {
        let batcher = self.runner.batcher;
        let mut guard = WriteGuard { batcher, seq: Some(seq), undo: &mut self.undo };
        let (turn, mut store) = lock(batcher, self.store).await;
        let ok = store.append(header(seq, age), &self.runner.batch).await.is_ok();
        drop((store, turn));
        guard.seq = None;
        batcher.with(|st| {
            let _ = st.core.handle_written(seq, ok);
            st.settle();
        });
    }
}

/// Store runners take turns at the store through the batcher's waiter chain: embassy's
/// `Mutex` keeps one waker, so two tasks waiting on its `lock()` would wake each other in turn (a
/// busy loop). The mutex is then contended only by code outside the runners.
#[derive(Debug)]
pub(crate) struct Turn {
    /// A runner has the store.
    taken: bool,
    /// Another waits for it (wake the chain when it is given back).
    wanted: bool,
}

impl Turn {
    pub(crate) const fn new() -> Self {
        Self { taken: false, wanted: false }
    }
}

/// The store's turn, given back (and the waiting runners woken) when dropped.
struct Held<'b, M: RawMutex, T, const N: usize, const F: usize> {
    batcher: &'b Batcher<M, T, N, F>,
}

impl<M: RawMutex, T, const N: usize, const F: usize> Drop for Held<'_, M, T, N, F> {
    fn drop(&mut self) {
        self.batcher.with(|st| {
            st.store_turn.taken = false;
            if core::mem::take(&mut st.store_turn.wanted) {
                st.chain.notify();
            }
        });
    }
}

/// Waits for the store's turn (in the waiter chain), then for the mutex.
async fn lock<'b, 's, M: RawMutex, T, const N: usize, const F: usize, SM: RawMutex, S>(
    batcher: &'b Batcher<M, T, N, F>,
    store: &'s Mutex<SM, S>,
) -> (Held<'b, M, T, N, F>, MutexGuard<'s, SM, S>) {
    batcher
        .wait(|st, _| {
            if st.store_turn.taken {
                st.store_turn.wanted = true;
                Step::Wait(None)
            } else {
                st.store_turn.taken = true;
                Step::Ready(())
            }
        })
        .await;
    let held = Held { batcher };
    (held, store.lock().await)
}

/// Reports a store operation's outcome.
fn report<M: RawMutex, T, const N: usize, const F: usize>(batcher: &Batcher<M, T, N, F>, done: StoreDone) {
    batcher.with(|st| {
        let _ = st.core.handle_store(crate::now(), done);
        st.settle();
    });
}

/// Reports a store operation cancelled half-way: a spill's items come back, anything else
/// failed.
struct OpGuard<'b, 'u, M: RawMutex, T, const N: usize, const F: usize> {
    batcher: &'b Batcher<M, T, N, F>,
    batch: &'u mut heapless::Vec<T, N>,
    /// The operation under way (`None` once reported).
    op: Option<StoreOp>,
    undo: &'u mut Option<u64>,
}

impl<M: RawMutex, T, const N: usize, const F: usize> Drop for OpGuard<'_, '_, M, T, N, F> {
    fn drop(&mut self) {
        let Some(op) = self.op.take() else { return };
        let now = crate::now();
        let batch = &mut *self.batch;
        self.batcher.with(|st| {
            if let StoreOp::Append { .. } = op {
                st.core.unspill(now, false, batch.drain(..));
            } else {
                let _ = st.core.handle_store(now, StoreDone::Failed);
            }
            st.settle();
        });
        // What a cancelled read left in the buffer (outside the lock: an item's `Drop`).
        self.batch.clear();
    }
}

/// Reports a write-ahead append cancelled half-way as failed: the batch runs unprotected.
struct WriteGuard<'b, 'u, M: RawMutex, T, const N: usize, const F: usize> {
    batcher: &'b Batcher<M, T, N, F>,
    /// The batch being written (`None` once reported).
    seq: Option<u64>,
    undo: &'u mut Option<u64>,
}

impl<M: RawMutex, T, const N: usize, const F: usize> Drop for WriteGuard<'_, '_, M, T, N, F> {
    fn drop(&mut self) {
        let Some(seq) = self.seq.take() else { return };
        *self.undo = Some(seq);
        self.batcher.with(|st| {
            let _ = st.core.handle_written(seq, false);
            st.settle();
        });
    }
}

/// The header to store batch `seq` under, its oldest item `age` old now. The store clock is the
/// time since boot (embassy-time): exact within a boot; after a reboot a record's birth looks
/// recent, so ages are underestimated and stored items expire late, never early.
fn header(seq: u64, age: batch_core::Duration) -> StoredBatch {
    StoredBatch::at(seq, crate::now().as_millis(), age)
}
