//! What the runner calls with each batch.

use heapless::vec::VecView;

use batch_core::Trigger;

/// Where a batch stands: its sequence number, attempt and trigger.
///
/// ```
/// use batch_embassy::{BatchInfo, Trigger};
/// let info = BatchInfo { seq: 3, attempt: 1, trigger: Trigger::Size };
/// assert_eq!(info.attempt, 1);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BatchInfo {
    /// Sequence number: 0, 1, 2, ... in cut order, the same on every retry.
    pub seq: u64,
    /// 1 for the first attempt, 2 for the first retry, ...
    pub attempt: u32,
    /// Why the batch was cut.
    pub trigger: Trigger,
}

/// What became of one item of a failed attempt, answered by [`Handler::verdict`].
///
/// ```
/// use batch_embassy::Verdict;
/// assert_ne!(Verdict::Delivered, Verdict::Retry);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Verdict {
    /// The sink took it.
    Delivered,
    /// Send it again (with the rest of the batch's retries, same seq, same back-off).
    Retry,
    /// The sink refused it for good: it goes to [`Handler::rejected`] at once, never retried.
    Rejected,
}

/// Delivers batches. Any `async |batch: &[T], info: BatchInfo| -> Result<(), E>` closure is a
/// handler; implement the trait for a stateful uplink, and override
/// [`dead_letter`](Handler::dead_letter) to keep batches that failed every attempt
/// (or wrap a closure with [`WithDeadLetter`]) and [`returned`](Handler::returned) to keep
/// batches given up unsent (a shutdown deadline, a dropped runner).
///
/// ```
/// use batch_embassy::{BatchInfo, Handler};
/// use heapless::vec::VecView;
///
/// struct Uplink { sent: u32, lost: u32, unsent: heapless::Vec<u16, 32> }
/// impl Handler<u16> for Uplink {
///     type Error = ();
///     async fn handle(&mut self, batch: &[u16], _info: BatchInfo) -> Result<(), ()> {
///         self.sent += batch.len() as u32;
///         Ok(())
///     }
///     fn dead_letter(&mut self, items: &mut VecView<u16>, _info: BatchInfo, _error: ()) {
///         self.lost += items.len() as u32; // e.g. write them to flash instead
///     }
///     fn returned(&mut self, items: &mut VecView<u16>, _info: BatchInfo) {
///         // Given up unsent (shutdown deadline, runner dropped): keep them to save later.
///         for item in items.drain(..) {
///             let _ = self.unsent.push(item);
///         }
///     }
/// }
/// ```
#[allow(async_fn_in_trait, reason = "embassy executors run tasks on one core: no Send bound wanted")]
pub trait Handler<T> {
    /// What a failed attempt reports.
    type Error;

    /// Delivers one batch (one attempt). `Ok` delivers it; `Err` fails this attempt.
    async fn handle(&mut self, batch: &[T], info: BatchInfo) -> Result<(), Self::Error>;

    /// Receives a batch that failed every attempt, with its items by value (take them with
    /// `items.drain(..)` or `pop`; whatever is left is dropped). The default logs it with defmt
    /// (with the `defmt` feature) and drops it; it is counted in the metrics either way.
    fn dead_letter(&mut self, items: &mut VecView<T>, info: BatchInfo, error: Self::Error) {
        let _ = (items, error);
        #[cfg(feature = "defmt")]
        defmt::error!("batch {} dead-lettered after {} attempts", info.seq, info.attempt);
        #[cfg(not(feature = "defmt"))]
        let _ = info;
    }

    /// Receives, by value, a batch this runner held that was given up before a final outcome:
    /// a [`Batcher::shutdown_timeout`](crate::Batcher::shutdown_timeout) deadline passed (the
    /// running attempt, if any, was cancelled), or the runner was dropped. `info.attempt` is the
    /// attempt that was running or last ran; it may have reached the sink (at least once). The
    /// items count as `returned` in the metrics. Take them (e.g. to save them in flash before a
    /// reboot) with `items.drain(..)`; the default logs it with defmt (with the `defmt` feature)
    /// and drops them.
    fn returned(&mut self, items: &mut VecView<T>, info: BatchInfo) {
        let _ = items;
        #[cfg(feature = "defmt")]
        defmt::warn!("batch {} given up unsent after attempt {}", info.seq, info.attempt);
        #[cfg(not(feature = "defmt"))]
        let _ = info;
    }

    /// After a failed attempt (`handle` returned `Err`), what became of the batch's item
    /// `index` (its position in the batch as given to `handle`): a sink that answers per item
    /// (a bulk insert that refused two rows, an HTTP 207) keeps its answer in `self` during
    /// `handle` and reports it here, once per item, in order. Only the items answered
    /// [`Verdict::Retry`] are retried; [`Verdict::Rejected`] ones go to
    /// [`rejected`](Self::rejected) at once and count as `rejected_by_handler`. The default
    /// answers `Retry` for every item: the whole batch is retried.
    ///
    /// ```
    /// use batch_embassy::{BatchInfo, Handler, Verdict};
    /// /// A sink that refuses odd readings for good and takes the rest.
    /// struct Picky { refused: u32 }
    /// impl Handler<u16> for Picky {
    ///     type Error = ();
    ///     async fn handle(&mut self, batch: &[u16], _: BatchInfo) -> Result<(), ()> {
    ///         if batch.iter().any(|r| r % 2 == 1) { Err(()) } else { Ok(()) }
    ///     }
    ///     fn verdict(&mut self, item: &u16, _index: usize, _: BatchInfo, _: &()) -> Verdict {
    ///         if item % 2 == 1 { Verdict::Rejected } else { Verdict::Delivered }
    ///     }
    ///     fn rejected(&mut self, _item: u16, _index: usize, _: BatchInfo) {
    ///         self.refused += 1;
    ///     }
    /// }
    /// ```
    fn verdict(&mut self, item: &T, index: usize, info: BatchInfo, error: &Self::Error) -> Verdict {
        let _ = (item, index, info, error);
        Verdict::Retry
    }

    /// Receives, by value, an item the sink refused for good ([`Verdict::Rejected`]); `index`
    /// is its position in the batch of that attempt. The default logs it with defmt (with the
    /// `defmt` feature) and drops it.
    fn rejected(&mut self, item: T, index: usize, info: BatchInfo) {
        #[cfg(feature = "defmt")]
        defmt::warn!("batch {} item {} rejected by the sink", info.seq, index);
        let _ = (item, index, info);
    }

    /// Receives, by value, items not sent because they were older than the configured
    /// `max_age` ([`Config::max_age`](batch_core::Config::max_age)): at their cut (oldest first,
    /// `info` is `None`), before a retry (the rest of batch `info`, also when a pause made the
    /// retry late), or as a stored batch leaves the store (batch `info`, attempt 0, trigger
    /// `Store`; ages count time since boot, so time before a reboot is not counted). They count
    /// as `expired` in the metrics. The default logs them with defmt (with the `defmt` feature) and drops
    /// them.
    fn expired(&mut self, items: &mut VecView<T>, info: Option<BatchInfo>) {
        #[cfg(feature = "defmt")]
        defmt::warn!("{} items expired (batch {})", items.len(), info.map(|i| i.seq));
        let _ = (items, info);
    }

    /// Receives, by value, the items of stored batch `seq`, evicted from a full store under
    /// [`Overflow::DropOldest`](crate::Overflow::DropOldest) to make room for a newer spill
    /// (feature `store`; called by a [`StoreRunner`](crate::StoreRunner)). They count as
    /// `evicted` in the metrics. The default logs it with defmt (with the `defmt` feature) and
    /// drops them.
    ///
    /// ```
    /// use batch_embassy::{BatchInfo, Handler};
    /// use heapless::vec::VecView;
    /// /// Counts what a full flash pushed out.
    /// struct Uplink { evicted: usize }
    /// impl Handler<u16> for Uplink {
    ///     type Error = ();
    ///     async fn handle(&mut self, _: &[u16], _: BatchInfo) -> Result<(), ()> { Ok(()) }
    ///     fn evicted(&mut self, items: &mut VecView<u16>, _seq: u64) {
    ///         self.evicted += items.len(); // or summarise them, or keep the newest
    ///     }
    /// }
    /// ```
    #[cfg(feature = "store")]
    fn evicted(&mut self, items: &mut VecView<T>, seq: u64) {
        #[cfg(feature = "defmt")]
        defmt::warn!("stored batch {} evicted ({} items): the store is full", seq, items.len());
        let _ = (items, seq);
    }
}

impl<T, E, F> Handler<T> for F
where
    F: AsyncFnMut(&[T], BatchInfo) -> Result<(), E>,
{
    type Error = E;
    // The closure's own future, not an `async` wrapper around it (one state machine less).
    fn handle(&mut self, batch: &[T], info: BatchInfo) -> impl Future<Output = Result<(), E>> {
        self(batch, info)
    }
}

/// A handler with a dead-letter callback: `WithDeadLetter(handler, |items, info, error| ...)`.
///
/// ```
/// use batch_embassy::{BatchInfo, WithDeadLetter};
/// let mut lost = 0usize;
/// let h = WithDeadLetter(
///     async |_: &[u8], _: BatchInfo| Err::<(), &str>("uplink down"),
///     |items: &mut heapless::vec::VecView<u8>, _: BatchInfo, _: &str| lost += items.len(),
/// );
/// # let _ = h;
/// ```
#[derive(Debug)]
pub struct WithDeadLetter<H, D>(pub H, pub D);

impl<T, H, D> Handler<T> for WithDeadLetter<H, D>
where
    H: Handler<T>,
    D: FnMut(&mut VecView<T>, BatchInfo, H::Error),
{
    type Error = H::Error;
    async fn handle(&mut self, batch: &[T], info: BatchInfo) -> Result<(), H::Error> {
        self.0.handle(batch, info).await
    }
    fn dead_letter(&mut self, items: &mut VecView<T>, info: BatchInfo, error: H::Error) {
        (self.1)(items, info, error);
    }
    fn returned(&mut self, items: &mut VecView<T>, info: BatchInfo) {
        self.0.returned(items, info);
    }
    fn expired(&mut self, items: &mut VecView<T>, info: Option<BatchInfo>) {
        self.0.expired(items, info);
    }
    fn verdict(&mut self, item: &T, index: usize, info: BatchInfo, error: &H::Error) -> Verdict {
        self.0.verdict(item, index, info, error)
    }
    fn rejected(&mut self, item: T, index: usize, info: BatchInfo) {
        self.0.rejected(item, index, info);
    }
    #[cfg(feature = "store")]
    fn evicted(&mut self, items: &mut VecView<T>, seq: u64) {
        self.0.evicted(items, seq);
    }
}
