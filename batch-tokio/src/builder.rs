//! Settings, checked when the batcher is built.

use std::sync::Arc;
use std::time::Duration;

use batch_core::storage::FixedDeque;
use batch_core::{Config, ConfigError, Overflow};

use crate::handle::Batcher;
use crate::handler::{BatchError, DeadLetter, Expired, Handler, RejectedItems};
use crate::shared::{Callbacks, Core, OnError, OnEvict, OnExpire, OnReject, Shared, WeighFn};
use crate::worker::{LaneConfig, Worker};

/// Why a batcher could not be built. Each variant names the setting at fault.
///
/// ```
/// use batch_tokio::{Batcher, BuildError, ConfigError, handler};
/// let err = Batcher::builder()
///     .capacity(10)
///     .max_batch(20)
///     .build(handler::from_sync(|_: &[u8]| Ok::<_, std::io::Error>(())))
///     .unwrap_err();
/// assert_eq!(err, BuildError::Config(ConfigError::MaxBatchAboveCapacity { max_batch: 20, capacity: 10 }));
/// assert!(err.to_string().starts_with("max_batch (20)"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// A setting the core checks.
    Config(ConfigError),
    /// `attempt_timeout` is zero, so every attempt would time out.
    ZeroAttemptTimeout,
    /// The memory a setting asks for cannot be allocated (the allocation failed, or its size
    /// overflows). Nothing was allocated for good.
    OutOfMemory {
        /// The setting: `capacity`, `max_in_flight` or `max_batch`.
        field: &'static str,
        /// The number of elements asked for.
        requested: usize,
    },
    /// [`Builder::spawn`] was called outside a tokio runtime.
    NoRuntime,
    /// The tokio runtime was built without timers (`enable_time`/`enable_all`): linger and
    /// retry delays could never fire.
    NoTimers,
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(e) => e.fmt(f),
            Self::ZeroAttemptTimeout => f.write_str("attempt_timeout is 0: every attempt would time out"),
            Self::OutOfMemory { field, requested } => {
                write!(f, "{field} ({requested}) asks for more memory than can be allocated")
            }
            Self::NoRuntime => f.write_str("spawn was called outside a tokio runtime"),
            Self::NoTimers => {
                f.write_str("the tokio runtime has no timers: build it with enable_time() (or enable_all())")
            }
        }
    }
}

impl std::error::Error for BuildError {}

impl From<ConfigError> for BuildError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

/// Builds a [`Batcher`]. Defaults: capacity 1024, `max_batch` the capacity, linger 500 ms,
/// one batch in flight, 4 attempts with retry delays of 100, 200, 400 ms (capped at 30 s), no
/// jitter, no weight limit, [`Overflow::Reject`], no attempt timeout.
///
/// ```
/// use batch_tokio::{Batcher, Overflow, handler};
/// use std::time::Duration;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let batcher = Batcher::builder()
///     .capacity(10_000)
///     .max_batch(500)
///     .linger(Duration::from_millis(20))
///     .max_in_flight(4)
///     .max_attempts(5)
///     .retry_delays(Duration::from_millis(50), Duration::from_secs(5))
///     .jitter(200, 42)
///     .max_weight(64 * 1024, |line: &String| line.len() as u32)
///     .overflow(Overflow::Reject)
///     .attempt_timeout(Duration::from_secs(10))
///     .on_error(|error, letter| eprintln!("batch {} lost after {error}", letter.seq()))
///     .spawn(handler::from_sync(|lines: &[String]| Ok::<_, std::io::Error>(())))
///     .unwrap();
/// batcher.shutdown().await;
/// # }
/// ```
pub struct Builder<T> {
    config: Config,
    capacity: usize,
    weigher: Option<Box<WeighFn<T>>>,
    attempt_timeout: Option<Duration>,
    on_error: Option<Arc<OnError<T>>>,
    on_evict: Option<Box<OnEvict<T>>>,
    on_reject: Option<Box<OnReject<T>>>,
    on_expire: Option<Box<OnExpire<T>>>,
    #[cfg(feature = "disk-store")]
    store: Option<Box<dyn crate::store_drive::ErasedStore<T>>>,
}

impl<T> std::fmt::Debug for Builder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .field("capacity", &self.capacity)
            .field("attempt_timeout", &self.attempt_timeout)
            .finish_non_exhaustive()
    }
}

fn micros(d: Duration) -> batch_core::Duration {
    batch_core::Duration::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

impl BuildError {
    /// The setting at fault (`"runtime"` for the two runtime errors).
    ///
    /// ```
    /// use batch_tokio::{Batcher, handler};
    /// let err = Batcher::builder()
    ///     .capacity(usize::MAX)
    ///     .build(handler::from_sync(|_: &[u64]| Ok::<_, std::io::Error>(())))
    ///     .unwrap_err();
    /// assert_eq!(err.field(), "capacity");
    /// ```
    pub fn field(&self) -> &'static str {
        match self {
            Self::Config(e) => e.field(),
            Self::ZeroAttemptTimeout => "attempt_timeout",
            Self::OutOfMemory { field, .. } => field,
            Self::NoRuntime | Self::NoTimers => "runtime",
        }
    }
}

/// Allocates an empty `Vec` with room for `n` elements, or reports which setting asked too much.
pub(crate) fn try_vec<E>(n: usize, field: &'static str) -> Result<Vec<E>, BuildError> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| BuildError::OutOfMemory { field, requested: n })?;
    Ok(v)
}

impl<T: Send + 'static> Builder<T> {
    pub(crate) fn new() -> Self {
        Self {
            config: Config::new(),
            capacity: 1024,
            weigher: None,
            attempt_timeout: None,
            on_error: None,
            on_evict: None,
            on_reject: None,
            on_expire: None,
            #[cfg(feature = "disk-store")]
            store: None,
        }
    }

    /// How many items may wait in the buffer; allocated once when built, never grown.
    #[must_use]
    pub fn capacity(mut self, n: usize) -> Self {
        self.capacity = n;
        self
    }
    /// Cut a batch at this many items (default: the capacity).
    #[must_use]
    pub fn max_batch(mut self, n: usize) -> Self {
        self.config = self.config.max_batch(n);
        self
    }
    /// Cut a batch when its oldest item has waited this long.
    #[must_use]
    pub fn linger(mut self, d: Duration) -> Self {
        self.config = self.config.linger(micros(d));
        self
    }
    /// How many batches may be with the handler (or waiting to retry) at once.
    #[must_use]
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.config = self.config.max_in_flight(n);
        self
    }
    /// Attempts per batch, the first included.
    #[must_use]
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.config = self.config.max_attempts(n);
        self
    }
    /// Retry `k` waits `min(base * 2^(k-1), max)`.
    #[must_use]
    pub fn retry_delays(mut self, base: Duration, max: Duration) -> Self {
        self.config = self.config.retry_delays(micros(base), micros(max));
        self
    }
    /// Shortens each retry delay by a random share of up to `permille`/1000, from a generator
    /// seeded with `seed` (repeatable runs).
    #[must_use]
    pub fn jitter(mut self, permille: u16, seed: u32) -> Self {
        self.config = self.config.jitter(permille, seed);
        self
    }
    /// Cut a batch before its weight (per `weigher`, e.g. encoded bytes) would exceed `max`;
    /// an item heavier than `max` alone is refused. The weigher runs once per item, on the
    /// producer's task and outside the batcher's lock (its weight is kept beside the item); a
    /// weigher that panics is contained and counted, and the item is taken as weighing `max`.
    #[must_use]
    pub fn max_weight(mut self, max: u32, weigher: impl Fn(&T) -> u32 + Send + Sync + 'static) -> Self {
        self.config = self.config.max_weight(max);
        self.weigher = Some(Box::new(weigher));
        self
    }
    /// What an add into a full buffer does: wait/refuse ([`Overflow::Reject`]) or evict the
    /// oldest ([`Overflow::DropOldest`], evicted items go to [`on_evict`](Self::on_evict)).
    #[must_use]
    pub fn overflow(mut self, policy: Overflow) -> Self {
        self.config = self.config.overflow(policy);
        self
    }
    /// Fail an attempt that runs longer than this (it is cancelled; the sink may still have
    /// received it, so retries make delivery at-least-once for such batches).
    #[must_use]
    pub fn attempt_timeout(mut self, d: Duration) -> Self {
        self.attempt_timeout = Some(d);
        self
    }
    /// Called with the last error and the items of every batch that failed all its attempts.
    /// It runs on the worker: hand slow work off. Without it, dead letters are logged with
    /// `tracing` and counted.
    #[must_use]
    ///
    /// A panic in it is contained and counted ([`Metrics::panics`](crate::Metrics::panics)); the
    /// batch still counts as dead-lettered (the callback had its items).
    pub fn on_error(mut self, f: impl Fn(BatchError, DeadLetter<T>) + Send + Sync + 'static) -> Self {
        self.on_error = Some(Arc::new(f));
        self
    }
    /// Called with each item evicted by [`Overflow::DropOldest`], on the producer's task.
    /// Without it, evicted items are dropped and counted. A panic in it is contained and counted
    /// ([`Metrics::panics`](crate::Metrics::panics)); the producer's add still succeeds.
    #[must_use]
    pub fn on_evict(mut self, f: impl Fn(T) + Send + Sync + 'static) -> Self {
        self.on_evict = Some(Box::new(f));
        self
    }
    /// Called with the items a handler rejected for good in an attempt, each with its reason
    /// (the handler answered per item with a [`PartialFailure`](crate::handler::PartialFailure)),
    /// at once, on the worker: hand slow work off. Without it, rejections are logged with
    /// `tracing` and counted ([`Metrics::rejected_by_handler`](crate::Metrics::rejected_by_handler)).
    /// A panic in it is contained and counted ([`Metrics::panics`](crate::Metrics::panics));
    /// the items still count as rejected (the callback had them).
    ///
    /// A callback of its own rather than `on_error`'s [`DeadLetter`]: a dead letter is a batch
    /// that failed every attempt, with one error; rejected items leave at any attempt, each with
    /// its own reason, while the rest of their batch goes on, and they are counted apart.
    ///
    /// ```
    /// use batch_tokio::{Batcher, handler::{self, PartialFailure}};
    /// let b = Batcher::builder()
    ///     .on_reject(|rejected| {
    ///         for (line, reason) in rejected.iter() {
    ///             eprintln!("batch {} dropped {line}: {reason}", rejected.seq());
    ///         }
    ///     })
    ///     .build(handler::from_sync(|_: &[String]| Ok::<_, PartialFailure>(())));
    /// # let _ = b;
    /// ```
    #[must_use]
    pub fn on_reject(mut self, f: impl Fn(RejectedItems<T>) + Send + Sync + 'static) -> Self {
        self.on_reject = Some(Box::new(f));
        self
    }
    /// Items older than this are not sent: items that are too old when their batch would be
    /// cut, and the rest of a failed batch whose oldest item would be too old at its next
    /// attempt, go to [`on_expire`](Self::on_expire) instead, counted in
    /// [`Metrics::expired`](crate::Metrics::expired). A zero age is a
    /// [`BuildError`] naming `max_age`. See [`Expired`] for how exact ages are.
    ///
    /// ```
    /// use batch_tokio::{Batcher, handler};
    /// use std::time::Duration;
    /// let b = Batcher::builder()
    ///     .max_age(Duration::from_secs(3600)) // a reading an hour old is not worth sending
    ///     .on_expire(|expired| eprintln!("{} stale readings dropped", expired.items().len()))
    ///     .build(handler::from_sync(|_: &[f32]| Ok::<_, std::io::Error>(())));
    /// # let _ = b;
    /// ```
    #[must_use]
    pub fn max_age(mut self, age: Duration) -> Self {
        self.config = self.config.max_age(micros(age));
        self
    }
    /// Called with the items that expired (see [`max_age`](Self::max_age)), oldest first, on
    /// the worker: hand slow work off. Without it, they are logged and counted. A panic in it
    /// is contained and counted ([`Metrics::panics`](crate::Metrics::panics)); the items still
    /// count as expired. `flush` waits for it, as it does for `on_error`.
    #[must_use]
    pub fn on_expire(mut self, f: impl Fn(Expired<T>) + Send + Sync + 'static) -> Self {
        self.on_expire = Some(Box::new(f));
        self
    }
    /// A paced drain: batches start at most `burst` at once and then one per `min_interval`
    /// (a token bucket in the core's time), so that draining a backlog (after
    /// [`resume`](crate::Batcher::resume), or from a store after a restart) cannot exceed what
    /// the uplink was sized for. Size and linger still decide what a batch holds; pacing only
    /// decides when it may start. Retries are not paced. A zero `burst` is a [`BuildError`]
    /// naming `pace`.
    ///
    /// ```
    /// use batch_tokio::{Batcher, handler};
    /// use std::time::Duration;
    /// let b = Batcher::builder()
    ///     .pace(Duration::from_millis(100), 5) // 10 batches/s, bursts of 5
    ///     .build(handler::from_sync(|_: &[u8]| Ok::<_, std::io::Error>(())));
    /// # let _ = b;
    /// ```
    #[must_use]
    pub fn pace(mut self, min_interval: Duration, burst: u32) -> Self {
        self.config = self.config.pace(micros(min_interval), burst);
        self
    }

    /// Builds the batcher and its worker future, for callers who spawn it themselves (tower's
    /// `Buffer::pair`). Nothing is delivered until the worker runs. Every setting is checked and
    /// every buffer allocated here, fallibly: a size that cannot be allocated is a
    /// [`BuildError::OutOfMemory`] naming the setting, never an abort. Called inside a tokio
    /// runtime without timers, it fails with [`BuildError::NoTimers`]; a worker that finds no
    /// timers when it first runs (spawned on such a runtime, or polled outside tokio) stops at
    /// once, closing the batcher: adds get their item back and `shutdown` reports what was
    /// accepted in its remainder.
    pub fn build<H: Handler<T>>(self, handler: H) -> Result<(Batcher<T>, Worker), BuildError> {
        if self.attempt_timeout == Some(Duration::ZERO) {
            return Err(BuildError::ZeroAttemptTimeout);
        }
        let lanes = self.config.get_max_in_flight();
        self.config.validate(self.capacity, lanes)?;
        if tokio::runtime::Handle::try_current().is_ok() && !crate::deadline::tokio_timers_available() {
            return Err(BuildError::NoTimers);
        }
        let max_batch = self.config.max_batch_for(self.capacity);
        let queue = if self.weigher.is_some() {
            FixedDeque::try_with_capacity_weighed(self.capacity)
        } else {
            FixedDeque::try_with_capacity(self.capacity)
        }
        .map_err(|_| BuildError::OutOfMemory { field: "capacity", requested: self.capacity })?;
        // No weigher for the core: weights come with each push (`Shared::weigh`).
        let core: Core<T> =
            batch_core::BatchCore::with_storage(self.config, queue, try_vec(lanes, "max_in_flight")?, None)?;
        let weigher = self.config.get_max_weight().zip(self.weigher);
        // One batch buffer per flight slot. Probe the total first: many buffers that are each
        // small enough can add up to more than the machine has, which one request reveals.
        let total = lanes.saturating_mul(max_batch);
        drop(try_vec::<T>(total, "max_in_flight")?);
        let mut bufs = try_vec(lanes, "max_in_flight")?;
        for _ in 0..lanes {
            bufs.push(try_vec(max_batch, "max_batch")?);
        }
        let staging = weigher.is_none() && self.config.get_overflow() == Overflow::Reject;
        let places = crate::stage::places_per_run(max_batch, staging);
        let callbacks = Callbacks {
            error: self.on_error,
            evict: self.on_evict,
            reject: self.on_reject,
            expire: self.on_expire,
        };
        #[allow(unused_mut, reason = "set only with the disk-store feature")]
        let mut shared = Shared::new(core, lanes, callbacks, weigher, places);
        #[cfg(feature = "disk-store")]
        {
            let now = shared.now();
            shared.store = self.store.map(|store| Arc::new(crate::store_drive::StoreLink::new(store, now)));
        }
        let shared = Arc::new(shared);
        let worker = Worker::new(
            Arc::clone(&shared),
            handler,
            LaneConfig { max_batch, attempt_timeout: self.attempt_timeout, lanes },
            bufs,
        );
        Ok((Batcher::from_shared(shared), worker))
    }

    /// Store and forward (feature `disk-store`): batches go to `store` as `policy` says (spill
    /// when the buffer is full and nothing can be sent, write-ahead before the first attempt),
    /// stored batches are delivered first after a restart, in seq order, at least once, and
    /// sequence numbers are never reused (see `batch_core::store`). Until the worker has
    /// recovered the store, adds wait (and `try_add` is refused as full).
    ///
    /// ```no_run
    /// use batch_tokio::{Batcher, DiskStore, handler, StorePolicy};
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = DiskStore::<u64>::open("/var/lib/gateway/batches.db", 0x5EAD_0001).await?;
    /// let batcher = Batcher::builder()
    ///     .disk_store(store, StorePolicy::new().write_ahead(true))
    ///     .spawn(handler::from_fn(|batch: handler::Batch<u64>| async move {
    ///         println!("seq {}: {} readings", batch.seq(), batch.len()); // dedup key: the seq
    ///         Ok::<_, std::io::Error>(())
    ///     }))?;
    /// batcher.add_durable(42).await?; // in the store (one fsync per batch) or delivered
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "disk-store")]
    #[must_use]
    pub fn disk_store(mut self, store: crate::DiskStore<T>, policy: batch_core::store::StorePolicy) -> Self
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Sync,
    {
        self.config = self.config.store(policy);
        self.store = Some(Box::new(store));
        self
    }

    /// Builds the batcher and spawns its worker on the current tokio runtime. Outside a runtime
    /// it fails with [`BuildError::NoRuntime`], on a runtime without timers with
    /// [`BuildError::NoTimers`].
    pub fn spawn<H: Handler<T>>(self, handler: H) -> Result<Batcher<T>, BuildError> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Err(BuildError::NoRuntime);
        };
        let (batcher, worker) = self.build(handler)?;
        runtime.spawn(worker);
        Ok(batcher)
    }
}
