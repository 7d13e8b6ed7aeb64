//! Expiry ([`Builder::max_age`](crate::Builder::max_age)): items too old to be worth sending
//! are handed to [`Builder::on_expire`](crate::Builder::on_expire) instead, at two moments: at
//! the cut (the lanes move expired items from the front of the buffer before they cut a batch)
//! and before a retry (a failed batch whose oldest item would be too old at its next attempt).

use std::fmt;

use batch_core::Instant;

use crate::handler::Batch;
use crate::shared::{CallbackGuard, Shared, State};

/// Items that expired: older than [`max_age`](crate::Builder::max_age) when their batch would
/// have been cut (`seq()` is `None`: they never left the buffer) or before a retry of their
/// batch (`seq()` names it). What [`on_expire`](crate::Builder::on_expire) receives, oldest
/// first.
///
/// Ages come from the core's arrival marks: an age is never underestimated, and an item may
/// expire early by at most the time between the arrivals of its batch's first item and its
/// own (see `batch_core::Config::max_age`). Batches loaded from a store have no arrival on
/// record and do not expire.
///
/// ```
/// use batch_tokio::{Batcher, handler};
/// use std::sync::{Arc, Mutex};
/// use std::time::Duration;
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let stale = Arc::new(Mutex::new(Vec::new()));
/// let s = Arc::clone(&stale);
/// let b = Batcher::builder()
///     .max_age(Duration::from_secs(60))
///     .on_expire(move |expired| s.lock().unwrap().extend(expired.into_items().unwrap()))
///     .spawn(handler::from_sync(|_: &[u32]| Ok::<_, std::io::Error>(())))
///     .unwrap();
/// b.pause(); // the uplink is down for two minutes
/// b.add(1).await.unwrap();
/// tokio::time::advance(Duration::from_secs(120)).await;
/// b.resume();
/// b.flush().await;
/// assert_eq!(*stale.lock().unwrap(), [1]);
/// assert_eq!((b.metrics().expired, b.metrics().delivered), (1, 0));
/// # }
/// ```
pub struct Expired<T> {
    pub(crate) batch: Batch<T>,
    pub(crate) seq: Option<u64>,
}

impl<T: fmt::Debug + 'static> fmt::Debug for Expired<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Expired")
            .field("seq", &self.seq)
            .field("items", &self.items())
            .finish_non_exhaustive()
    }
}

impl<T: 'static> Expired<T> {
    /// The items, oldest first.
    pub fn items(&self) -> &[T] {
        self.batch.items()
    }
    /// The batch they were in, if they expired before a retry or as they left the store
    /// (`None`: at their cut).
    pub fn seq(&self) -> Option<u64> {
        self.seq
    }
    /// Takes the items by value. Fails (handing them back) only if a handler kept a
    /// [shared handle](crate::handler::Batch::share) on their batch beyond its attempt.
    pub fn into_items(mut self) -> Result<Vec<T>, Self> {
        self.batch.take_items().ok_or(self)
    }
}

/// Moves the expired items at the front of the buffer into `buf` (the lane's empty batch
/// buffer), with the lock held. Returns the guard that keeps a `flush` waiting until
/// `on_expire` had them, if any expired.
pub(crate) fn poll<'a, T>(
    shared: &'a Shared<T>,
    st: &mut State<T>,
    buf: &mut Vec<T>,
    now: Instant,
) -> Option<CallbackGuard<'a, T>> {
    st.core.config().get_max_age()?;
    // The acceptance index of the oldest buffered item: the first one that may expire.
    let first = st.core.token().items_before() - st.core.len() as u64;
    if st.core.poll_expired(now, buf) == 0 {
        return None;
    }
    if st.waiting_producers > 0 {
        shared.space.notify_waiters();
    }
    Some(st.callback_starts(shared, first))
}

/// Hands expired items to `on_expire`, or logs and drops them (they are counted as expired
/// either way). A panic in the callback (or in an item's `Drop`) is contained and counted.
pub(crate) fn hand_over<T: 'static>(shared: &Shared<T>, expired: Expired<T>) {
    let contained = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if let Some(cb) = &shared.on_expire {
            cb(expired);
        } else {
            let len = expired.items().len();
            tracing::warn!(seq = expired.seq, len, "items expired (no on_expire callback)");
            drop(expired);
        }
    }));
    if contained.is_err() {
        shared.panicked("on_expire");
    }
}
