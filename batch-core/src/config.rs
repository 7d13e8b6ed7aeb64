//! Configuration and its validation.
//!
//! A [`Config`] is built with `const` methods, so it can be a `const` and a batcher built from it
//! can be a `static`. It is checked when the batcher is built: every impossible value gives a
//! distinct [`ConfigError`] naming the field, never a panic.
//!
//! ```
//! use batch_core::{Config, ConfigError, Duration, Overflow};
//!
//! const CONFIG: Config = Config::new()
//!     .max_batch(32)
//!     .linger(Duration::from_millis(200))
//!     .max_attempts(5)
//!     .overflow(Overflow::DropOldest);
//! assert_eq!(CONFIG.validate(64, 1), Ok(()));
//!
//! let too_big = Config::new().max_batch(128);
//! assert_eq!(
//!     too_big.validate(64, 1),
//!     Err(ConfigError::MaxBatchAboveCapacity { max_batch: 128, capacity: 64 })
//! );
//! ```

use core::fmt;

use crate::time::Duration;

/// What to do with a new item when the buffer is full.
///
/// ```
/// use batch_core::Overflow;
/// assert_eq!(Overflow::default(), Overflow::Reject);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Overflow {
    /// Refuse the new item and hand it back to the caller (`PushError::Full`).
    #[default]
    Reject,
    /// Evict the oldest buffered item, hand it back to the caller, and accept the new one.
    DropOldest,
}

/// Every setting of a batcher. Build it with the `const` methods, starting from [`Config::new`].
///
/// Defaults: `max_batch` the buffer's capacity, `linger` 500 ms, `max_in_flight` 1, `max_attempts` 4 (delays of
/// 100, 200 and 400 ms), `max_delay` 30 s, no jitter, no weight limit, [`Overflow::Reject`].
///
/// ```
/// use batch_core::{Config, Duration};
/// let c = Config::new().max_batch(10).retry_delays(Duration::from_millis(50), Duration::from_secs(2));
/// assert_eq!(c.get_max_batch(), Some(10));
/// assert_eq!(c.get_base_delay(), Duration::from_millis(50));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Config {
    max_batch: Option<usize>,
    linger: Duration,
    max_in_flight: usize,
    max_attempts: u32,
    base_delay: Duration,
    max_delay: Duration,
    jitter_permille: u16,
    jitter_seed: u32,
    max_weight: Option<u32>,
    overflow: Overflow,
    #[cfg(feature = "uplink")]
    max_age: Option<Duration>,
    /// `(min_interval, burst)`: at most `burst` batches at once, then one per `min_interval`.
    #[cfg(feature = "uplink")]
    pace: Option<(Duration, u32)>,
    #[cfg(feature = "store")]
    store: Option<crate::store::StorePolicy>,
}

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

impl Config {
    /// The default configuration.
    pub const fn new() -> Self {
        Self {
            max_batch: None,
            linger: Duration::from_millis(500),
            max_in_flight: 1,
            max_attempts: 4,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(30),
            jitter_permille: 0,
            jitter_seed: 0x9E37_79B9,
            max_weight: None,
            overflow: Overflow::Reject,
            #[cfg(feature = "uplink")]
            max_age: None,
            #[cfg(feature = "uplink")]
            pace: None,
            #[cfg(feature = "store")]
            store: None,
        }
    }

    /// Cut a batch when this many items are buffered (the size trigger). At least 1, at most the
    /// capacity.
    #[must_use]
    pub const fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = Some(n);
        self
    }
    /// Cut a batch when its oldest item has waited this long (the time trigger). Zero cuts at the
    /// next poll.
    #[must_use]
    pub const fn linger(mut self, d: Duration) -> Self {
        self.linger = d;
        self
    }
    /// How many batches may be with the handler (or waiting to retry) at once. 1 keeps strict
    /// order, retries included.
    #[must_use]
    pub const fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }
    /// Attempts per batch, the first included. 1 means no retry.
    #[must_use]
    pub const fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }
    /// The retry delay after the first failure (`base`) and its cap: attempt `k` waits
    /// `min(base * 2^(k-1), max)`.
    #[must_use]
    pub const fn retry_delays(mut self, base: Duration, max: Duration) -> Self {
        self.base_delay = base;
        self.max_delay = max;
        self
    }
    /// Shorten each retry delay by a random share of up to `permille`/1000 of it, drawn from a
    /// generator seeded with `seed` (so runs are repeatable). 0 turns jitter off.
    #[must_use]
    pub const fn jitter(mut self, permille: u16, seed: u32) -> Self {
        self.jitter_permille = permille;
        self.jitter_seed = seed;
        self
    }
    /// Cut a batch before its total weight would exceed `max` (needs a weigher, see
    /// `BatchCore::with_weigher`). An item heavier than `max` on its own is rejected.
    #[must_use]
    pub const fn max_weight(mut self, max: u32) -> Self {
        self.max_weight = Some(max);
        self
    }
    /// What a push into a full buffer does.
    #[must_use]
    pub const fn overflow(mut self, policy: Overflow) -> Self {
        self.overflow = policy;
        self
    }

    /// See [`Config::max_batch`]; `None` (the default) means the buffer's capacity.
    pub const fn get_max_batch(&self) -> Option<usize> {
        self.max_batch
    }

    /// The batch size for a buffer of `capacity`: the configured `max_batch`, or the capacity.
    pub const fn max_batch_for(&self, capacity: usize) -> usize {
        match self.max_batch {
            Some(n) => n,
            None => capacity,
        }
    }
    /// See [`Config::linger`].
    pub const fn get_linger(&self) -> Duration {
        self.linger
    }
    /// See [`Config::max_in_flight`].
    pub const fn get_max_in_flight(&self) -> usize {
        self.max_in_flight
    }
    /// See [`Config::max_attempts`].
    pub const fn get_max_attempts(&self) -> u32 {
        self.max_attempts
    }
    /// See [`Config::retry_delays`].
    pub const fn get_base_delay(&self) -> Duration {
        self.base_delay
    }
    /// See [`Config::retry_delays`].
    pub const fn get_max_delay(&self) -> Duration {
        self.max_delay
    }
    /// See [`Config::jitter`].
    pub const fn get_jitter_permille(&self) -> u16 {
        self.jitter_permille
    }
    /// See [`Config::jitter`].
    pub const fn get_jitter_seed(&self) -> u32 {
        self.jitter_seed
    }
    /// See [`Config::max_weight`].
    pub const fn get_max_weight(&self) -> Option<u32> {
        self.max_weight
    }
    /// See [`Config::overflow`].
    pub const fn get_overflow(&self) -> Overflow {
        self.overflow
    }
    /// Items older than this are not sent: checked when their batch is cut (items at the front
    /// of the buffer that are too old are handed back through the expiry path instead,
    /// [`BatchCore::poll_expired`](crate::BatchCore::poll_expired)) and before a retry (a
    /// failed batch whose oldest item would be too old at its next attempt is final,
    /// [`Completion::Expired`](crate::Completion::Expired)). Ages come from the arrival marks:
    /// an item's age is never underestimated, and it may expire early by at most the time
    /// between the arrivals of its batch's first item and itself.
    ///
    /// ```
    /// use batch_core::{Config, Duration};
    /// let c = Config::new().max_age(Duration::from_secs(3600));
    /// assert_eq!(c.get_max_age(), Some(Duration::from_secs(3600)));
    /// ```
    #[cfg(feature = "uplink")]
    #[must_use]
    pub const fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }
    /// See `Config::max_age` (feature `uplink`; always `None` without it).
    pub const fn get_max_age(&self) -> Option<Duration> {
        #[cfg(feature = "uplink")]
        return self.max_age;
        #[cfg(not(feature = "uplink"))]
        None
    }
    /// A paced drain: batches start (cut from the buffer, or loaded from the store) at most
    /// `burst` at once and then one per `min_interval`, a token bucket in the core's virtual
    /// time. Size and linger still decide what a batch holds; pacing only decides when it may
    /// start. Retries of a batch already started are not paced.
    ///
    /// ```
    /// use batch_core::{Config, Duration};
    /// let c = Config::new().pace(Duration::from_millis(100), 5); // 10 batches/s, bursts of 5
    /// assert_eq!(c.get_pace(), Some((Duration::from_millis(100), 5)));
    /// ```
    #[cfg(feature = "uplink")]
    #[must_use]
    pub const fn pace(mut self, min_interval: Duration, burst: u32) -> Self {
        self.pace = Some((min_interval, burst));
        self
    }
    /// See `Config::pace` (feature `uplink`; always `None` without it).
    pub const fn get_pace(&self) -> Option<(Duration, u32)> {
        #[cfg(feature = "uplink")]
        return self.pace;
        #[cfg(not(feature = "uplink"))]
        None
    }
    /// Store and forward (feature `store`): batches go to a durable store as the
    /// [`StorePolicy`](crate::store::StorePolicy) says, and the driver must report what the store
    /// holds at boot ([`BatchCore::recovered`](crate::BatchCore::recovered)) before items are
    /// accepted.
    ///
    /// ```
    /// use batch_core::{Config, store::StorePolicy};
    /// let c = Config::new().store(StorePolicy::new().spill(true).write_ahead(true));
    /// assert!(c.get_store().unwrap().get_write_ahead());
    /// ```
    #[cfg(feature = "store")]
    #[must_use]
    pub const fn store(mut self, policy: crate::store::StorePolicy) -> Self {
        self.store = Some(policy);
        self
    }
    /// See [`Config::store`].
    #[cfg(feature = "store")]
    pub const fn get_store(&self) -> Option<crate::store::StorePolicy> {
        self.store
    }

    /// The retry delay after failed attempt number `attempt` (1-based), before jitter:
    /// `min(base * 2^(attempt-1), max_delay)`.
    ///
    /// ```
    /// use batch_core::{Config, Duration};
    /// let c = Config::new().retry_delays(Duration::from_millis(100), Duration::from_millis(300));
    /// assert_eq!(c.backoff(1), Duration::from_millis(100));
    /// assert_eq!(c.backoff(2), Duration::from_millis(200));
    /// assert_eq!(c.backoff(3), Duration::from_millis(300)); // capped
    /// assert_eq!(c.backoff(200), Duration::from_millis(300));
    /// ```
    pub const fn backoff(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1);
        let base = self.base_delay.as_micros();
        let scaled = if shift >= 64 || base.leading_zeros() < shift { u64::MAX } else { base << shift };
        let max = self.max_delay.as_micros();
        Duration::from_micros(if scaled < max { scaled } else { max })
    }

    /// Checks this configuration for a batcher with room for `capacity` items and `slots`
    /// in-flight batches. `BatchCore` runs it when it is built.
    pub const fn validate(&self, capacity: usize, slots: usize) -> Result<(), ConfigError> {
        if capacity == 0 {
            return Err(ConfigError::ZeroCapacity);
        }
        let max_batch = self.max_batch_for(capacity);
        if max_batch == 0 {
            return Err(ConfigError::ZeroMaxBatch);
        }
        if max_batch > capacity {
            return Err(ConfigError::MaxBatchAboveCapacity { max_batch, capacity });
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError::ZeroMaxInFlight);
        }
        if self.max_in_flight > slots {
            return Err(ConfigError::MaxInFlightAboveSlots { max_in_flight: self.max_in_flight, slots });
        }
        if self.max_attempts == 0 {
            return Err(ConfigError::ZeroMaxAttempts);
        }
        if self.base_delay.as_micros() > self.max_delay.as_micros() {
            return Err(ConfigError::BaseDelayAboveMaxDelay {
                base_delay: self.base_delay,
                max_delay: self.max_delay,
            });
        }
        if self.jitter_permille > 1000 {
            return Err(ConfigError::JitterAboveOne { permille: self.jitter_permille });
        }
        if let Some(0) = self.max_weight {
            return Err(ConfigError::ZeroMaxWeight);
        }
        if let Some(age) = self.get_max_age()
            && age.as_micros() == 0
        {
            return Err(ConfigError::ZeroMaxAge);
        }
        if let Some((_, 0)) = self.get_pace() {
            return Err(ConfigError::ZeroPaceBurst);
        }
        #[cfg(feature = "store")]
        if let Some(policy) = self.store
            && policy.get_seq_block() == 0
        {
            return Err(ConfigError::ZeroSeqBlock);
        }
        Ok(())
    }
}

/// Why a configuration was refused. Each variant names the field at fault.
///
/// ```
/// use batch_core::{Config, ConfigError};
/// let err = Config::new().max_attempts(0).validate(64, 1).unwrap_err();
/// assert_eq!(err, ConfigError::ZeroMaxAttempts);
/// assert_eq!(err.field(), "max_attempts");
/// assert!(err.to_string().contains("max_attempts"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ConfigError {
    /// The buffer has room for no item at all.
    ZeroCapacity,
    /// `max_batch` is 0.
    ZeroMaxBatch,
    /// `max_batch` is larger than the buffer's capacity, so the size trigger could never fire.
    MaxBatchAboveCapacity {
        /// The configured `max_batch`.
        max_batch: usize,
        /// The buffer's capacity.
        capacity: usize,
    },
    /// `max_in_flight` is 0, so no batch could ever start.
    ZeroMaxInFlight,
    /// `max_in_flight` is larger than the in-flight table the batcher was built with.
    MaxInFlightAboveSlots {
        /// The configured `max_in_flight`.
        max_in_flight: usize,
        /// The size of the in-flight table.
        slots: usize,
    },
    /// `max_attempts` is 0, so no batch could ever be attempted.
    ZeroMaxAttempts,
    /// The first retry delay is longer than the cap on retry delays.
    BaseDelayAboveMaxDelay {
        /// The configured base delay.
        base_delay: Duration,
        /// The configured cap.
        max_delay: Duration,
    },
    /// Jitter above 1000 permille would make delays negative.
    JitterAboveOne {
        /// The configured jitter.
        permille: u16,
    },
    /// `max_weight` is 0, so every item would be too heavy.
    ZeroMaxWeight,
    /// `max_weight` is set but no weigher was given to measure items.
    MaxWeightWithoutWeigher,
    /// A weigher was given but no `max_weight` to compare against.
    WeigherWithoutMaxWeight,
    /// The store policy's `seq_block` is 0, so no sequence number could ever be reserved.
    ZeroSeqBlock,
    /// `max_age` is 0, so every item would expire before it could be sent.
    ZeroMaxAge,
    /// The pace's `burst` is 0, so no batch could ever start.
    ZeroPaceBurst,
}

impl ConfigError {
    /// The configuration field at fault.
    pub const fn field(&self) -> &'static str {
        match self {
            Self::ZeroCapacity => "capacity",
            Self::ZeroMaxBatch | Self::MaxBatchAboveCapacity { .. } => "max_batch",
            Self::ZeroMaxInFlight | Self::MaxInFlightAboveSlots { .. } => "max_in_flight",
            Self::ZeroMaxAttempts => "max_attempts",
            Self::BaseDelayAboveMaxDelay { .. } => "base_delay",
            Self::JitterAboveOne { .. } => "jitter",
            Self::ZeroMaxWeight | Self::MaxWeightWithoutWeigher => "max_weight",
            Self::WeigherWithoutMaxWeight => "weigher",
            Self::ZeroSeqBlock => "seq_block",
            Self::ZeroMaxAge => "max_age",
            Self::ZeroPaceBurst => "pace",
        }
    }
}

impl ConfigError {
    /// A fixed sentence naming the field and the reason (what `Display` says, without the
    /// numbers), usable in `const` context.
    pub const fn message(&self) -> &'static str {
        match self {
            Self::ZeroCapacity => "capacity is 0: the buffer must hold at least one item",
            Self::ZeroMaxBatch => "max_batch is 0: a batch must hold at least one item",
            Self::MaxBatchAboveCapacity { .. } => {
                "max_batch is larger than the capacity: a full batch could never be buffered"
            }
            Self::ZeroMaxInFlight => "max_in_flight is 0: at least one batch must be allowed to run",
            Self::MaxInFlightAboveSlots { .. } => {
                "max_in_flight is larger than the in-flight table (the F parameter)"
            }
            Self::ZeroMaxAttempts => "max_attempts is 0: every batch needs at least one attempt",
            Self::BaseDelayAboveMaxDelay { .. } => {
                "base_delay is longer than max_delay: the cap would undercut the first retry"
            }
            Self::JitterAboveOne { .. } => {
                "jitter is above 1000 permille: a delay cannot shrink by more than itself"
            }
            Self::ZeroMaxWeight => "max_weight is 0: every item would be too heavy",
            Self::MaxWeightWithoutWeigher => "max_weight is set but no weigher was given to measure items",
            Self::WeigherWithoutMaxWeight => "a weigher was given but max_weight is not set",
            Self::ZeroSeqBlock => {
                "seq_block is 0: the store policy must reserve at least one sequence number at a time"
            }
            Self::ZeroMaxAge => "max_age is 0: every item would expire before it could be sent",
            Self::ZeroPaceBurst => "pace burst is 0: no batch could ever start",
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::ZeroCapacity => f.write_str("capacity is 0: the buffer must hold at least one item"),
            Self::ZeroMaxBatch => f.write_str("max_batch is 0: a batch must hold at least one item"),
            Self::MaxBatchAboveCapacity { max_batch, capacity } => write!(
                f,
                "max_batch ({max_batch}) is larger than the capacity ({capacity}): a full batch could never be buffered"
            ),
            Self::ZeroMaxInFlight => {
                f.write_str("max_in_flight is 0: at least one batch must be allowed to run")
            }
            Self::MaxInFlightAboveSlots { max_in_flight, slots } => write!(
                f,
                "max_in_flight ({max_in_flight}) is larger than the in-flight table ({slots} slots)"
            ),
            Self::ZeroMaxAttempts => f.write_str("max_attempts is 0: every batch needs at least one attempt"),
            Self::BaseDelayAboveMaxDelay { base_delay, max_delay } => write!(
                f,
                "base_delay ({base_delay}) is longer than max_delay ({max_delay}): the cap would undercut the first retry"
            ),
            Self::JitterAboveOne { permille } => write!(
                f,
                "jitter ({permille} permille) is above 1000: a delay cannot shrink by more than itself"
            ),
            Self::ZeroMaxWeight => f.write_str("max_weight is 0: every item would be too heavy"),
            Self::MaxWeightWithoutWeigher => {
                f.write_str("max_weight is set but no weigher was given to measure items")
            }
            Self::WeigherWithoutMaxWeight => f.write_str("a weigher was given but max_weight is not set"),
            Self::ZeroSeqBlock | Self::ZeroMaxAge | Self::ZeroPaceBurst => f.write_str(self.message()),
        }
    }
}

impl core::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_invalid_field_has_its_own_error() {
        let ok = Config::new();
        assert_eq!(ok.validate(64, 1), Ok(()));
        assert_eq!(ok.validate(0, 1), Err(ConfigError::ZeroCapacity));
        assert_eq!(ok.max_batch(0).validate(64, 1), Err(ConfigError::ZeroMaxBatch));
        assert_eq!(ok.max_in_flight(0).validate(64, 1), Err(ConfigError::ZeroMaxInFlight));
        assert_eq!(
            ok.max_in_flight(2).validate(64, 1),
            Err(ConfigError::MaxInFlightAboveSlots { max_in_flight: 2, slots: 1 })
        );
        assert_eq!(ok.max_attempts(0).validate(64, 1), Err(ConfigError::ZeroMaxAttempts));
        assert_eq!(
            ok.retry_delays(Duration::from_secs(2), Duration::from_secs(1)).validate(64, 1),
            Err(ConfigError::BaseDelayAboveMaxDelay {
                base_delay: Duration::from_secs(2),
                max_delay: Duration::from_secs(1)
            })
        );
        assert_eq!(ok.jitter(1001, 1).validate(64, 1), Err(ConfigError::JitterAboveOne { permille: 1001 }));
        assert_eq!(ok.max_weight(0).validate(64, 1), Err(ConfigError::ZeroMaxWeight));
        #[cfg(feature = "uplink")]
        assert_eq!(ok.max_age(Duration::ZERO).validate(64, 1), Err(ConfigError::ZeroMaxAge));
        #[cfg(feature = "uplink")]
        assert_eq!(ok.pace(Duration::from_millis(1), 0).validate(64, 1), Err(ConfigError::ZeroPaceBurst));
    }

    #[test]
    fn backoff_doubles_and_caps_without_overflow() {
        let c = Config::new();
        assert_eq!(c.backoff(1), Duration::from_millis(100));
        assert_eq!(c.backoff(2), Duration::from_millis(200));
        assert_eq!(c.backoff(3), Duration::from_millis(400));
        assert_eq!(c.backoff(u32::MAX), Duration::from_secs(30));
        let huge = Config::new().retry_delays(Duration::MAX, Duration::MAX);
        assert_eq!(huge.backoff(9), Duration::MAX);
    }
}
