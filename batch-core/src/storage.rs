//! Where items and in-flight records live.
//!
//! The core is generic over three small traits so the same state machine runs on a fixed
//! `heapless` buffer inside a `static` (firmware) and on a buffer sized at run time, allocated
//! once and never grown (servers, with the `alloc` feature):
//!
//! - [`Queue`]: the FIFO of buffered items (`heapless::Deque<T, N>`, or [`FixedDeque`] with `alloc`);
//! - [`BatchBuf`]: where a cut batch is moved to (`heapless::Vec<T, N>`, or `Vec<T>` with `alloc`);
//! - [`Slots`]: the table of in-flight batches (`heapless::Vec<InFlight, F>`, or `Vec<InFlight>`).
//!
//! ```
//! use batch_core::storage::Queue;
//! let mut q: heapless::Deque<u8, 2> = heapless::Deque::new();
//! assert_eq!(Queue::push_back(&mut q, 1), Ok(()));
//! assert_eq!(Queue::push_back(&mut q, 2), Ok(()));
//! assert_eq!(Queue::push_back(&mut q, 3), Err(3)); // full: the item comes back
//! assert_eq!(Queue::pop_front(&mut q), Some(1));
//! ```

use crate::time::Instant;

/// A bounded FIFO of buffered items. Its capacity never changes.
///
/// ```
/// use batch_core::storage::Queue;
/// fn drain_len<T>(q: &mut impl Queue<T>) -> usize {
///     let mut n = 0;
///     while q.pop_front().is_some() { n += 1; }
///     n
/// }
/// let mut q: heapless::Deque<u8, 4> = heapless::Deque::new();
/// Queue::push_back(&mut q, 1).unwrap();
/// assert_eq!(drain_len(&mut q), 1);
/// ```
pub trait Queue<T> {
    /// How many items it can hold.
    fn capacity(&self) -> usize;
    /// How many items it holds.
    fn len(&self) -> usize;
    /// Whether it holds no item.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Appends an item, or hands it back when full.
    fn push_back(&mut self, item: T) -> Result<(), T>;
    /// Puts an item back at the front, or hands it back when full.
    fn push_front(&mut self, item: T) -> Result<(), T>;
    /// Removes the oldest item.
    fn pop_front(&mut self) -> Option<T>;
    /// The oldest item.
    fn front(&self) -> Option<&T>;
    /// Whether it keeps each item's weight beside the item ([`push_back_weighed`]). The core then
    /// reads weights back instead of calling a weigher again: the weigher (user code) runs once,
    /// at the push, and a driver can run it outside its lock ([`BatchCore::push_weighed`]).
    ///
    /// [`push_back_weighed`]: Self::push_back_weighed
    /// [`BatchCore::push_weighed`]: crate::BatchCore::push_weighed
    fn keeps_weights(&self) -> bool {
        false
    }
    /// Appends an item with its weight (kept only if [`keeps_weights`](Self::keeps_weights)).
    fn push_back_weighed(&mut self, item: T, weight: u32) -> Result<(), T> {
        let _ = weight;
        self.push_back(item)
    }
    /// Puts an item back at the front with its weight.
    fn push_front_weighed(&mut self, item: T, weight: u32) -> Result<(), T> {
        let _ = weight;
        self.push_front(item)
    }
    /// The oldest item's kept weight (`None` if weights are not kept).
    fn front_weight(&self) -> Option<u32> {
        None
    }
    /// Removes the `n` oldest items (fewer if it holds fewer), oldest first. Implementations
    /// override it with a bulk move where they can.
    fn drain_front(&mut self, n: usize) -> impl Iterator<Item = T> {
        let mut left = n;
        core::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            left -= 1;
            self.pop_front()
        })
    }
    /// Moves the `n` oldest items (fewer if it holds fewer) into `out`, which has room for them,
    /// oldest first: a batch cut. Implementations override it where the move can see both
    /// concrete types (a `VecDeque` drained into a `Vec` is a tight copy, not a push per item).
    fn move_front_into<B: BatchBuf<T>>(&mut self, n: usize, out: &mut B) {
        out.extend_from(self.drain_front(n));
    }
    /// Appends items from `items` while there is room, in order; returns how many. A staged run
    /// handed over in one piece (`BatchCore::push_staged`). Implementations override it with a
    /// bulk append where they can.
    fn extend_back(&mut self, items: &mut impl Iterator<Item = T>) -> usize {
        let mut n = 0;
        while self.len() < self.capacity() {
            let Some(item) = items.next() else { break };
            if let Err(item) = self.push_back(item) {
                drop(item); // not reachable: the loop checked for room
                break;
            }
            n += 1;
        }
        n
    }
}

impl<T, const N: usize> Queue<T> for heapless::Deque<T, N> {
    #[inline]
    fn capacity(&self) -> usize {
        N
    }
    /// Out of line: heapless computes the length from three fields with two branches, and the
    /// core asks for it in most of its methods (about 400 bytes of code when inlined everywhere
    /// on a Cortex-M; a call is 4).
    #[inline(never)]
    fn len(&self) -> usize {
        heapless::Deque::len(self)
    }
    #[inline]
    fn push_back(&mut self, item: T) -> Result<(), T> {
        heapless::Deque::push_back(self, item)
    }
    #[inline]
    fn push_front(&mut self, item: T) -> Result<(), T> {
        heapless::Deque::push_front(self, item)
    }
    #[inline(never)]
    fn pop_front(&mut self) -> Option<T> {
        heapless::Deque::pop_front(self)
    }
    #[inline(never)]
    fn front(&self) -> Option<&T> {
        heapless::Deque::front(self)
    }
}

/// The destination a batch is cut into, owned by the driver so it can be held across `.await`.
///
/// ```
/// use batch_core::storage::BatchBuf;
/// let mut out: heapless::Vec<u8, 2> = heapless::Vec::new();
/// assert_eq!(out.spare(), 2);
/// BatchBuf::push(&mut out, 7).unwrap();
/// assert_eq!(out.spare(), 1);
/// ```
pub trait BatchBuf<T> {
    /// How many more items fit.
    fn spare(&self) -> usize;
    /// Appends an item, or hands it back when full.
    fn push(&mut self, item: T) -> Result<(), T>;
    /// Appends every item of `items`, which the caller guarantees fit (`spare()` or fewer).
    /// Implementations override it with a bulk append where they can.
    fn extend_from(&mut self, items: impl Iterator<Item = T>) {
        for item in items {
            let pushed = self.push(item);
            debug_assert!(pushed.is_ok(), "extend_from beyond spare()");
        }
    }
}

impl<T, const N: usize> BatchBuf<T> for heapless::Vec<T, N> {
    #[inline]
    fn spare(&self) -> usize {
        N - self.len()
    }
    #[inline]
    fn push(&mut self, item: T) -> Result<(), T> {
        heapless::Vec::push(self, item)
    }
}

/// The state of one in-flight batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub(crate) enum Phase {
    /// An attempt is with the handler.
    Running,
    /// The last attempt failed; the next may start at this instant.
    Backoff(Instant),
    /// Final (delivered or dead-lettered), and in the store: the slot is kept until the store
    /// removed the batch, so a power cut before that redelivers it.
    #[cfg(feature = "store")]
    Removing,
}

/// The core's record of one batch between its cut and its final outcome. Opaque: it is public
/// only so storage for it can be named (`heapless::Vec<InFlight, F>`).
///
/// ```
/// use batch_core::{BatchCore, Config, storage::InFlight};
/// // Room for 3 batches in flight at once.
/// let slots: heapless::Vec<InFlight, 3> = heapless::Vec::new();
/// let core = BatchCore::<u8, _, _>::with_storage(
///     Config::new().max_in_flight(3), heapless::Deque::<u8, 8>::new(), slots, None).unwrap();
/// assert_eq!(core.in_flight(), 0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct InFlight {
    pub(crate) seq: u64,
    pub(crate) first: u64,
    pub(crate) len: u32,
    pub(crate) attempt: u32,
    pub(crate) phase: Phase,
    /// The last moment it may start an attempt under `max_age` (its oldest item's arrival, as
    /// far as the marks or the store's record tell, plus `max_age`; `Instant::MAX` without).
    #[cfg(feature = "uplink")]
    pub(crate) expires: Instant,
    /// The batch is in the store (loaded from it, or written ahead and acknowledged).
    #[cfg(feature = "store")]
    pub(crate) stored: bool,
}

impl InFlight {
    /// The record of batch `seq` at its first attempt: `len` items from acceptance index
    /// `first`, to be sent no later than `expires` (for `max_age`), in the store or not.
    #[allow(unused_variables, reason = "expires and stored are kept only with their features")]
    pub(crate) const fn first_attempt(
        seq: u64,
        first: u64,
        len: u32,
        expires: Instant,
        stored: bool,
    ) -> Self {
        Self {
            seq,
            first,
            len,
            attempt: 1,
            phase: Phase::Running,
            #[cfg(feature = "uplink")]
            expires,
            #[cfg(feature = "store")]
            stored,
        }
    }
}

/// A bounded table of in-flight batch records.
///
/// ```
/// use batch_core::storage::{InFlight, Slots};
/// let table: heapless::Vec<InFlight, 2> = heapless::Vec::new();
/// assert_eq!((Slots::capacity(&table), table.as_slice().len()), (2, 0));
/// ```
pub trait Slots {
    /// How many records it can hold.
    fn capacity(&self) -> usize;
    /// The records.
    fn as_slice(&self) -> &[InFlight];
    /// The records, mutably.
    fn as_mut_slice(&mut self) -> &mut [InFlight];
    /// Adds a record, or hands it back when full.
    fn push(&mut self, slot: InFlight) -> Result<(), InFlight>;
    /// Removes the last record.
    fn pop(&mut self) -> Option<InFlight>;
}

impl<const F: usize> Slots for heapless::Vec<InFlight, F> {
    fn capacity(&self) -> usize {
        F
    }
    fn as_slice(&self) -> &[InFlight] {
        self
    }
    fn as_mut_slice(&mut self) -> &mut [InFlight] {
        self
    }
    fn push(&mut self, slot: InFlight) -> Result<(), InFlight> {
        heapless::Vec::push(self, slot)
    }
    fn pop(&mut self) -> Option<InFlight> {
        heapless::Vec::pop(self)
    }
}

#[cfg(feature = "alloc")]
pub use self::alloc_impls::FixedDeque;

#[cfg(feature = "alloc")]
mod alloc_impls {
    extern crate alloc;

    use alloc::collections::VecDeque;
    use alloc::vec::Vec;

    use super::{BatchBuf, InFlight, Queue, Slots};

    /// A FIFO whose capacity is chosen at run time, allocated once and never grown.
    ///
    /// ```
    /// use batch_core::storage::{FixedDeque, Queue};
    /// let mut q = FixedDeque::with_capacity(1);
    /// assert_eq!(q.push_back('a'), Ok(()));
    /// assert_eq!(q.push_back('b'), Err('b'));
    /// ```
    #[derive(Debug, Clone)]
    pub struct FixedDeque<T> {
        items: VecDeque<T>,
        /// Each item's weight, beside it, when built with [`FixedDeque::try_with_capacity_weighed`].
        weights: Option<VecDeque<u32>>,
        capacity: usize,
    }

    impl<T> FixedDeque<T> {
        /// Allocates room for exactly `capacity` items.
        pub fn with_capacity(capacity: usize) -> Self {
            Self { items: VecDeque::with_capacity(capacity), weights: None, capacity }
        }

        /// Like [`with_capacity`](Self::with_capacity), but reports an allocation that cannot be
        /// made (a capacity too large for memory) instead of aborting.
        ///
        /// ```
        /// use batch_core::storage::FixedDeque;
        /// assert!(FixedDeque::<u64>::try_with_capacity(1 << 60).is_err());
        /// assert!(FixedDeque::<u64>::try_with_capacity(16).is_ok());
        /// ```
        pub fn try_with_capacity(capacity: usize) -> Result<Self, alloc::collections::TryReserveError> {
            let mut items = VecDeque::new();
            items.try_reserve_exact(capacity)?;
            Ok(Self { items, weights: None, capacity })
        }

        /// Like [`try_with_capacity`](Self::try_with_capacity), keeping each item's weight beside
        /// it (see [`Queue::keeps_weights`]).
        ///
        /// ```
        /// use batch_core::storage::{FixedDeque, Queue};
        /// let mut q = FixedDeque::try_with_capacity_weighed(2).unwrap();
        /// q.push_back_weighed('a', 7).unwrap();
        /// assert_eq!((q.front_weight(), q.pop_front()), (Some(7), Some('a')));
        /// ```
        pub fn try_with_capacity_weighed(
            capacity: usize,
        ) -> Result<Self, alloc::collections::TryReserveError> {
            let mut q = Self::try_with_capacity(capacity)?;
            let mut weights = VecDeque::new();
            weights.try_reserve_exact(capacity)?;
            q.weights = Some(weights);
            Ok(q)
        }
    }

    impl<T> Queue<T> for FixedDeque<T> {
        #[inline]
        fn capacity(&self) -> usize {
            self.capacity
        }
        #[inline]
        fn len(&self) -> usize {
            self.items.len()
        }
        #[inline]
        fn push_back(&mut self, item: T) -> Result<(), T> {
            self.push_back_weighed(item, 0)
        }
        #[inline]
        fn push_front(&mut self, item: T) -> Result<(), T> {
            self.push_front_weighed(item, 0)
        }
        #[inline]
        fn pop_front(&mut self) -> Option<T> {
            if let Some(w) = &mut self.weights {
                w.pop_front();
            }
            self.items.pop_front()
        }
        #[inline]
        fn front(&self) -> Option<&T> {
            self.items.front()
        }
        #[inline]
        fn drain_front(&mut self, n: usize) -> impl Iterator<Item = T> {
            let n = n.min(self.items.len());
            if let Some(w) = &mut self.weights {
                w.drain(..n);
            }
            self.items.drain(..n)
        }
        #[inline]
        fn move_front_into<B: BatchBuf<T>>(&mut self, n: usize, out: &mut B) {
            let n = n.min(self.items.len());
            if let Some(w) = &mut self.weights {
                w.drain(..n);
            }
            out.extend_from(self.items.drain(..n));
        }
        fn extend_back(&mut self, items: &mut impl Iterator<Item = T>) -> usize {
            let room = self.capacity.saturating_sub(self.items.len());
            let before = self.items.len();
            if let Some(w) = &mut self.weights {
                // Items without a weight of their own weigh nothing here (the core grants no
                // staging places under a weight limit).
                for item in items.take(room) {
                    self.items.push_back(item);
                    w.push_back(0);
                }
            } else {
                self.items.extend(items.take(room));
            }
            self.items.len() - before
        }
        fn keeps_weights(&self) -> bool {
            self.weights.is_some()
        }
        #[inline]
        fn push_back_weighed(&mut self, item: T, weight: u32) -> Result<(), T> {
            if self.items.len() < self.capacity {
                self.items.push_back(item);
                if let Some(w) = &mut self.weights {
                    w.push_back(weight);
                }
                Ok(())
            } else {
                Err(item)
            }
        }
        fn push_front_weighed(&mut self, item: T, weight: u32) -> Result<(), T> {
            if self.items.len() < self.capacity {
                self.items.push_front(item);
                if let Some(w) = &mut self.weights {
                    w.push_front(weight);
                }
                Ok(())
            } else {
                Err(item)
            }
        }
        fn front_weight(&self) -> Option<u32> {
            self.weights.as_ref()?.front().copied()
        }
    }

    /// A `Vec` is filled up to the capacity it had when handed to the core; it never grows.
    impl<T> BatchBuf<T> for Vec<T> {
        #[inline]
        fn spare(&self) -> usize {
            self.capacity() - self.len()
        }
        #[inline]
        fn push(&mut self, item: T) -> Result<(), T> {
            if self.len() < self.capacity() {
                Vec::push(self, item);
                Ok(())
            } else {
                Err(item)
            }
        }
        #[inline]
        fn extend_from(&mut self, items: impl Iterator<Item = T>) {
            // Internal iteration: a `VecDeque` drain (the cut) walks its two slices in a tight
            // loop, where `Vec::extend` would ask `next` per item (it is not `TrustedLen`):
            // measured about 0.6 ns an item less for a u64 cut of 16 to 1024 items.
            items.for_each(|item| Vec::push(self, item));
        }
    }

    impl Slots for Vec<InFlight> {
        fn capacity(&self) -> usize {
            Vec::capacity(self)
        }
        fn as_slice(&self) -> &[InFlight] {
            self
        }
        fn as_mut_slice(&mut self) -> &mut [InFlight] {
            self
        }
        fn push(&mut self, slot: InFlight) -> Result<(), InFlight> {
            if self.len() < Vec::capacity(self) {
                Vec::push(self, slot);
                Ok(())
            } else {
                Err(slot)
            }
        }
        fn pop(&mut self) -> Option<InFlight> {
            Vec::pop(self)
        }
    }
}
