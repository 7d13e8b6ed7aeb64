//! The paced drain ([`Config::pace`](crate::Config::pace)): a token bucket in the core's
//! virtual time, kept as one instant (the generic cell rate algorithm's "theoretical arrival
//! time"): a batch may start once `now >= tat - (burst - 1) * min_interval`, and each start moves
//! `tat` to `max(tat, now) + min_interval`. Bursts of up to `burst` batches, then one per
//! `min_interval`, whatever the backlog. Starts are cuts from the buffer and loads from the
//! store; retries are not paced (their batch already started).
//!
//! ```
//! use batch_core::{Batch, Batcher, Config, Duration, Instant};
//! let config = Config::new().max_batch(1).pace(Duration::from_millis(100), 2);
//! let mut core: Batcher<u32, 8> = Batcher::new(config);
//! for i in 0..5 {
//!     core.push(Instant::ZERO, i).unwrap();
//! }
//! let mut started = Vec::new();
//! let mut now = Instant::ZERO;
//! while started.len() < 5 {
//!     let mut batch = Batch::<u32, 8>::new();
//!     if let Some(f) = core.poll_flush(now, &mut batch) {
//!         let _ = core.handle_completion(now, f.seq, batch_core::Outcome::Delivered);
//!         started.push(now.as_millis());
//!     } else {
//!         now = core.poll_timeout().unwrap(); // the pace says when
//!     }
//! }
//! assert_eq!(started, [0, 0, 100, 200, 300]); // a burst of 2, then 10 per second
//! ```

use super::BatchCore;
use crate::storage::{Queue, Slots};
use crate::time::Instant;

impl<T, Q: Queue<T>, S: Slots> BatchCore<T, Q, S> {
    /// When the pace lets the next batch start (`None`: no pacing).
    pub(super) fn pace_ready_at(&self) -> Option<Instant> {
        let (interval, burst) = self.config.get_pace()?;
        let tau = interval.saturating_mul(u64::from(burst.saturating_sub(1)));
        Some(Instant::from_micros(self.pace_tat.as_micros().saturating_sub(tau.as_micros())))
    }

    /// Whether the pace lets a batch start at `now`.
    pub(super) fn pace_allows(&self, now: Instant) -> bool {
        self.pace_ready_at().is_none_or(|at| now >= at)
    }

    /// A batch starts at `now`: it takes a token.
    pub(super) fn pace_take(&mut self, now: Instant) {
        if let Some((interval, _)) = self.config.get_pace() {
            self.pace_tat = self.pace_tat.max_of(now) + interval;
        }
    }
}
