//! Counters that always add up.
//!
//! ```
//! use batch_core::{Batcher, Config, Instant};
//!
//! let mut b: Batcher<u32, 8> = Batcher::new(Config::new().max_batch(4));
//! b.push(Instant::ZERO, 1).unwrap();
//! let m = b.metrics();
//! assert_eq!((m.accepted, m.buffered), (1, 1));
//! assert!(m.is_consistent());
//! ```

use crate::time::Duration;

/// The type of the item and batch counters in [`Metrics`] and [`FlushCounts`]: `u64` on 64-bit
/// targets, `u32` on 32-bit (and smaller) ones, where a `u64` takes two registers and two
/// instructions per update. A `u32` counter wraps (after 4 294 967 295 items, 49 days at
/// 1 000 items/s): every update and [`Metrics::is_consistent`] use wrapping arithmetic, so the
/// counters still add up, modulo 2^32. (Sequence numbers and acceptance indices, which order
/// things, stay `u64` everywhere.)
#[cfg(target_pointer_width = "64")]
pub type Count = u64;
/// The type of the item and batch counters (see the 64-bit documentation): `u32` here.
#[cfg(not(target_pointer_width = "64"))]
pub type Count = u32;

/// Why a batch was cut.
///
/// ```
/// use batch_core::Trigger;
/// assert_eq!(Trigger::Linger.name(), "linger");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Trigger {
    /// `max_batch` items were buffered.
    Size,
    /// The next item would have pushed the batch over `max_weight`.
    Weight,
    /// The oldest item had waited `linger`.
    Linger,
    /// A manual flush asked for it.
    Manual,
    /// An urgent item asked for it.
    Urgent,
    /// The batcher is closing and drains what it holds.
    Close,
    /// Not a cut from the buffer: a batch loaded from the store (spilled there during an
    /// overflow, or recovered after a boot), under the sequence number it was stored with.
    Store,
}

impl Trigger {
    /// Every trigger, in the order of [`FlushCounts`]'s fields.
    pub const ALL: [Trigger; 7] = [
        Trigger::Size,
        Trigger::Weight,
        Trigger::Linger,
        Trigger::Manual,
        Trigger::Urgent,
        Trigger::Close,
        Trigger::Store,
    ];

    /// A short lower-case name, for logs.
    pub const fn name(self) -> &'static str {
        match self {
            Trigger::Size => "size",
            Trigger::Weight => "weight",
            Trigger::Linger => "linger",
            Trigger::Manual => "manual",
            Trigger::Urgent => "urgent",
            Trigger::Close => "close",
            Trigger::Store => "store",
        }
    }
}

/// How many batches each trigger cut.
///
/// ```
/// use batch_core::{FlushCounts, Trigger};
/// let mut f = FlushCounts::default();
/// f.record(Trigger::Size);
/// assert_eq!((f.size, f.get(Trigger::Size), f.total()), (1, 1, 1));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FlushCounts {
    /// Cut because `max_batch` items were buffered.
    pub size: Count,
    /// Cut because of the weight limit.
    pub weight: Count,
    /// Cut because the oldest item had waited `linger`.
    pub linger: Count,
    /// Cut by a manual flush.
    pub manual: Count,
    /// Cut by an urgent item.
    pub urgent: Count,
    /// Cut while closing.
    pub close: Count,
    /// Loaded from the store ([`Trigger::Store`]).
    pub store: Count,
}

impl FlushCounts {
    /// Counts one batch cut by `trigger`.
    pub fn record(&mut self, trigger: Trigger) {
        let slot = self.slot(trigger);
        *slot = slot.wrapping_add(1);
    }
    /// The count for one trigger.
    pub const fn get(&self, trigger: Trigger) -> Count {
        match trigger {
            Trigger::Size => self.size,
            Trigger::Weight => self.weight,
            Trigger::Linger => self.linger,
            Trigger::Manual => self.manual,
            Trigger::Urgent => self.urgent,
            Trigger::Close => self.close,
            Trigger::Store => self.store,
        }
    }
    /// All batches cut.
    pub const fn total(&self) -> Count {
        self.size
            .wrapping_add(self.weight)
            .wrapping_add(self.linger)
            .wrapping_add(self.manual)
            .wrapping_add(self.urgent)
            .wrapping_add(self.close)
            .wrapping_add(self.store)
    }
    fn slot(&mut self, trigger: Trigger) -> &mut Count {
        match trigger {
            Trigger::Size => &mut self.size,
            Trigger::Weight => &mut self.weight,
            Trigger::Linger => &mut self.linger,
            Trigger::Manual => &mut self.manual,
            Trigger::Urgent => &mut self.urgent,
            Trigger::Close => &mut self.close,
            Trigger::Store => &mut self.store,
        }
    }
}

/// A snapshot of a batcher's counters. Item counts obey `accepted = delivered + dead_lettered +
/// evicted + returned + abandoned + rejected_by_handler + expired + buffered + in_flight` (`+
/// stored + store_lost` with the `store` feature) at every moment ([`Metrics::is_consistent`]); `returned` and `abandoned` (items a shutdown
/// that hit its deadline handed back, or could not hand back) are zero unless that happens, which
/// gives DESIGN.md's identity.
///
/// ```
/// use batch_core::Metrics;
/// let m = Metrics { accepted: 3, delivered: 2, buffered: 1, ..Metrics::default() };
/// assert!(m.is_consistent());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Metrics {
    /// Items taken in.
    pub accepted: Count,
    /// Items refused and handed back to the caller (full, closed or too heavy).
    pub rejected: Count,
    /// Items in batches the handler accepted.
    pub delivered: Count,
    /// Items in batches that failed every attempt and were handed back (dead letters).
    pub dead_lettered: Count,
    /// Items evicted by [`Overflow::DropOldest`](crate::Overflow::DropOldest) and handed back.
    pub evicted: Count,
    /// Items handed back undelivered by a shutdown that hit its deadline.
    pub returned: Count,
    /// Items of batches a handler still held when a shutdown deadline expired (a clone kept by
    /// a detached task, a handler blocked in its thread): they could not be handed back by value
    /// and may or may not have reached the sink. Never counted as returned.
    pub abandoned: Count,
    /// Items waiting in the buffer.
    pub buffered: Count,
    /// Items in batches that are with the handler or waiting to retry.
    pub in_flight: Count,
    /// Attempts after the first.
    pub retries: Count,
    /// Attempts that failed.
    pub failed_attempts: Count,
    /// Batches the handler accepted.
    pub batches_delivered: Count,
    /// Batches that failed every attempt.
    pub batches_dead_lettered: Count,
    /// Batches currently in flight.
    pub batches_in_flight: Count,
    /// Batches cut, by trigger.
    pub flushes: FlushCounts,
    /// The largest age of a batch's oldest item when the batch was cut.
    pub max_item_age: Duration,
    /// Panics in user code (handler, callbacks, weigher, an item's `Drop`) that the adapter
    /// caught and contained. Always 0 where a panic aborts (firmware).
    pub panics: Count,
    /// Items the handler rejected for good ([`Outcome::Partial`](crate::Outcome::Partial)):
    /// handed to the dead-letter path at once, with the handler's reason, never retried.
    pub rejected_by_handler: Count,
    /// Items not sent because they were older than `max_age` (at their cut, or before a
    /// retry), handed back through the expiry path.
    pub expired: Count,
    /// Items in the store waiting to be loaded, or being written to it by a spill (feature
    /// `store`). Items of a batch that is in flight count as in flight, also while the store
    /// keeps a copy.
    #[cfg(feature = "store")]
    pub stored: Count,
    /// Items the store acknowledged but could not produce again (a medium that lost or
    /// corrupted them): final, and the only way a store loses items (feature `store`).
    #[cfg(feature = "store")]
    pub store_lost: Count,
    /// Store operations that failed (feature `store`); each is retried after the retry base
    /// delay, and a failed write-ahead lets its batch run unprotected.
    #[cfg(feature = "store")]
    pub store_failures: Count,
}

impl Metrics {
    /// Whether the item counts add up (see the type's documentation).
    pub const fn is_consistent(&self) -> bool {
        self.accepted
            == self
                .settled()
                .wrapping_add(self.buffered)
                .wrapping_add(self.in_flight)
                .wrapping_add(self.stored())
    }

    /// Items in the store, not in flight ([`Metrics::stored`] with the `store` feature; 0
    /// without).
    #[cfg_attr(not(feature = "store"), allow(clippy::unused_self))]
    pub const fn stored(&self) -> Count {
        #[cfg(feature = "store")]
        return self.stored;
        #[cfg(not(feature = "store"))]
        0
    }

    /// Items that have reached a final outcome (delivered, dead-lettered, evicted, returned or
    /// abandoned).
    pub const fn settled(&self) -> Count {
        self.delivered
            .wrapping_add(self.dead_lettered)
            .wrapping_add(self.evicted)
            .wrapping_add(self.returned)
            .wrapping_add(self.abandoned)
            .wrapping_add(self.rejected_by_handler)
            .wrapping_add(self.expired)
            .wrapping_add(self.lost())
    }

    /// [`Metrics::store_lost`] with the `store` feature; 0 without.
    #[cfg_attr(not(feature = "store"), allow(clippy::unused_self))]
    const fn lost(&self) -> Count {
        #[cfg(feature = "store")]
        return self.store_lost;
        #[cfg(not(feature = "store"))]
        0
    }
}

/// The counters a core keeps: every field of [`Metrics`] with the `metrics` feature; without
/// it, none: every counter is a zero-sized [`Off`] whose updates compile to nothing, and
/// [`BatchCore::in_flight_items`](crate::BatchCore::in_flight_items) adds up the flight table
/// instead. Updates name the same fields either way (`add(&mut counters.delivered, n)`,
/// `counters.in_flight += n`).
#[cfg(feature = "metrics")]
pub(crate) type Counters = Metrics;

#[cfg(feature = "metrics")]
impl Metrics {
    /// Every counter at zero, for a `const` core.
    pub(crate) const ZERO: Metrics = Metrics {
        accepted: 0,
        rejected: 0,
        delivered: 0,
        dead_lettered: 0,
        evicted: 0,
        returned: 0,
        abandoned: 0,
        buffered: 0,
        in_flight: 0,
        retries: 0,
        failed_attempts: 0,
        batches_delivered: 0,
        batches_dead_lettered: 0,
        batches_in_flight: 0,
        flushes: FlushCounts { size: 0, weight: 0, linger: 0, manual: 0, urgent: 0, close: 0, store: 0 },
        max_item_age: Duration::ZERO,
        panics: 0,
        rejected_by_handler: 0,
        expired: 0,
        #[cfg(feature = "store")]
        stored: 0,
        #[cfg(feature = "store")]
        store_lost: 0,
        #[cfg(feature = "store")]
        store_failures: 0,
    };

    /// Keeps the largest age of a batch's oldest item at its cut.
    pub(crate) fn note_age(&mut self, age: Duration) {
        if age > self.max_item_age {
            self.max_item_age = age;
        }
    }
}

/// A counter, or its absence: what `add` updates.
pub(crate) trait Counter {
    /// `self += n`, wrapping (a `u32` counter on a 32-bit target wraps after 2^32; see
    /// [`Count`]).
    fn add(&mut self, n: Count);
}

impl Counter for Count {
    #[inline]
    fn add(&mut self, n: Count) {
        *self = self.wrapping_add(n);
    }
}

/// A counter left out (without the `metrics` feature): zero bytes, and updating it is no code.
#[cfg(not(feature = "metrics"))]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Off;

#[cfg(not(feature = "metrics"))]
impl Counter for Off {
    #[inline]
    fn add(&mut self, _n: Count) {}
}

#[cfg(not(feature = "metrics"))]
impl core::ops::AddAssign<Count> for Off {
    #[inline]
    fn add_assign(&mut self, _n: Count) {}
}

#[cfg(not(feature = "metrics"))]
impl core::ops::SubAssign<Count> for Off {
    #[inline]
    fn sub_assign(&mut self, _n: Count) {}
}

#[cfg(not(feature = "metrics"))]
#[allow(clippy::unused_self, reason = "the same calls as on the counters kept with the feature")]
impl Off {
    /// [`FlushCounts::record`], left out.
    #[inline]
    pub(crate) fn record(&mut self, _trigger: Trigger) {}
}

/// The counters without the `metrics` feature (see the `metrics` version): the same field
/// names as [`Metrics`], all left out.
#[cfg(not(feature = "metrics"))]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counters {
    pub(crate) rejected: Off,
    pub(crate) delivered: Off,
    pub(crate) dead_lettered: Off,
    pub(crate) evicted: Off,
    pub(crate) returned: Off,
    pub(crate) abandoned: Off,
    pub(crate) in_flight: Off,
    pub(crate) retries: Off,
    pub(crate) failed_attempts: Off,
    pub(crate) batches_delivered: Off,
    pub(crate) batches_dead_lettered: Off,
    pub(crate) flushes: Off,
    pub(crate) panics: Off,
    pub(crate) rejected_by_handler: Off,
    pub(crate) expired: Off,
}

#[cfg(not(feature = "metrics"))]
#[allow(clippy::unused_self, reason = "the same calls as on the counters kept with the feature")]
impl Counters {
    /// Every counter at zero, for a `const` core.
    pub(crate) const ZERO: Counters = Counters {
        rejected: Off,
        delivered: Off,
        dead_lettered: Off,
        evicted: Off,
        returned: Off,
        abandoned: Off,
        in_flight: Off,
        retries: Off,
        failed_attempts: Off,
        batches_delivered: Off,
        batches_dead_lettered: Off,
        flushes: Off,
        panics: Off,
        rejected_by_handler: Off,
        expired: Off,
    };

    /// [`Metrics`]'s largest age at a cut, left out.
    #[inline]
    pub(crate) fn note_age(&mut self, _age: Duration) {}
}
