//! Why an item was refused. Every error hands the item back.
//!
//! ```
//! use batch_core::{Batcher, Config, Instant, PushError};
//!
//! let mut b: Batcher<&str, 1> = Batcher::new(Config::new().max_batch(1));
//! b.push(Instant::ZERO, "a").unwrap();
//! assert_eq!(b.push(Instant::ZERO, "b"), Err(PushError::Full("b")));
//! ```

use core::fmt;

/// A refused push, with the item handed back (as `heapless::Vec::push` does).
///
/// ```
/// use batch_core::PushError;
/// let e = PushError::Closed(7);
/// assert_eq!(e.into_inner(), 7);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PushError<T> {
    /// The buffer is full and the overflow policy is `Reject`.
    Full(T),
    /// The batcher is closed (stopped or draining).
    Closed(T),
    /// The item alone weighs more than `max_weight`, so no batch could carry it.
    TooHeavy(T),
}

impl<T> PushError<T> {
    /// The refused item.
    pub fn into_inner(self) -> T {
        match self {
            Self::Full(t) | Self::Closed(t) | Self::TooHeavy(t) => t,
        }
    }
    /// The refused item, by reference.
    pub fn item(&self) -> &T {
        match self {
            Self::Full(t) | Self::Closed(t) | Self::TooHeavy(t) => t,
        }
    }
}

impl<T> fmt::Display for PushError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Full(_) => "the batcher is full",
            Self::Closed(_) => "the batcher is closed",
            Self::TooHeavy(_) => "the item weighs more than max_weight",
        })
    }
}

impl<T: fmt::Debug> core::error::Error for PushError<T> {}
