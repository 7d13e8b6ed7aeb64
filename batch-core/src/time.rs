//! Microsecond time, independent of any clock.
//!
//! The core never reads a clock: every input takes an [`Instant`] that the driver converts from
//! its runtime's time (tokio, embassy-time, a test's virtual clock). All arithmetic saturates, so a
//! clock that stands still or jumps years ahead never panics.
//!
//! ```
//! use batch_core::{Duration, Instant};
//!
//! let t0 = Instant::from_millis(5);
//! let t1 = t0 + Duration::from_millis(20);
//! assert_eq!(t1 - t0, Duration::from_millis(20));
//! assert_eq!(t0 - t1, Duration::ZERO); // saturates instead of panicking
//! assert_eq!(Instant::MAX + Duration::from_secs(1), Instant::MAX);
//! ```

use core::fmt;
use core::ops::{Add, AddAssign, Sub};

/// A point in time, in microseconds since an epoch the driver chooses.
///
/// ```
/// use batch_core::Instant;
/// assert_eq!(Instant::from_secs(2).as_millis(), 2_000);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Instant {
    micros: u64,
}

/// A span of time in microseconds.
///
/// ```
/// use batch_core::Duration;
/// assert_eq!(Duration::from_millis(3).as_micros(), 3_000);
/// assert_eq!(Duration::MAX.saturating_mul(2), Duration::MAX);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Duration {
    micros: u64,
}

impl Instant {
    /// The epoch.
    pub const ZERO: Self = Self { micros: 0 };
    /// The latest representable instant.
    pub const MAX: Self = Self { micros: u64::MAX };

    /// An instant `micros` microseconds after the epoch.
    pub const fn from_micros(micros: u64) -> Self {
        Self { micros }
    }
    /// An instant `millis` milliseconds after the epoch (saturating).
    pub const fn from_millis(millis: u64) -> Self {
        Self::from_micros(millis.saturating_mul(1_000))
    }
    /// An instant `secs` seconds after the epoch (saturating).
    pub const fn from_secs(secs: u64) -> Self {
        Self::from_micros(secs.saturating_mul(1_000_000))
    }
    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> u64 {
        self.micros
    }
    /// Whole milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.micros / 1_000
    }
    /// `self + d`, or [`Instant::MAX`] on overflow.
    #[must_use]
    pub const fn saturating_add(self, d: Duration) -> Self {
        Self::from_micros(self.micros.saturating_add(d.micros))
    }
    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    #[must_use]
    pub const fn saturating_duration_since(self, earlier: Self) -> Duration {
        Duration::from_micros(self.micros.saturating_sub(earlier.micros))
    }
    /// The later of two instants (usable in `const` context).
    #[must_use]
    pub const fn max_of(self, other: Self) -> Self {
        if self.micros >= other.micros { self } else { other }
    }
}

impl Duration {
    /// No time at all.
    pub const ZERO: Self = Self { micros: 0 };
    /// The longest representable span.
    pub const MAX: Self = Self { micros: u64::MAX };

    /// `micros` microseconds.
    pub const fn from_micros(micros: u64) -> Self {
        Self { micros }
    }
    /// `millis` milliseconds (saturating).
    pub const fn from_millis(millis: u64) -> Self {
        Self::from_micros(millis.saturating_mul(1_000))
    }
    /// `secs` seconds (saturating).
    pub const fn from_secs(secs: u64) -> Self {
        Self::from_micros(secs.saturating_mul(1_000_000))
    }
    /// The span in microseconds.
    pub const fn as_micros(self) -> u64 {
        self.micros
    }
    /// The span in whole milliseconds.
    pub const fn as_millis(self) -> u64 {
        self.micros / 1_000
    }
    /// `self * k`, or [`Duration::MAX`] on overflow.
    #[must_use]
    pub const fn saturating_mul(self, k: u64) -> Self {
        Self::from_micros(self.micros.saturating_mul(k))
    }
    /// `self + other`, or [`Duration::MAX`] on overflow.
    #[must_use]
    pub const fn saturating_add(self, other: Self) -> Self {
        Self::from_micros(self.micros.saturating_add(other.micros))
    }
    /// Whether this span is zero.
    pub const fn is_zero(self) -> bool {
        self.micros == 0
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    /// Saturating: never panics.
    fn add(self, d: Duration) -> Instant {
        self.saturating_add(d)
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, d: Duration) {
        *self = self.saturating_add(d);
    }
}

impl Sub for Instant {
    type Output = Duration;
    /// Saturating: an earlier minus a later instant is zero.
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

impl Add for Duration {
    type Output = Duration;
    fn add(self, other: Duration) -> Duration {
        self.saturating_add(other)
    }
}

/// Converts to `core::time::Duration` (the same type as `std::time::Duration`).
///
/// ```
/// let d: core::time::Duration = batch_core::Duration::from_millis(3).into();
/// assert_eq!(d, core::time::Duration::from_millis(3));
/// ```
impl From<Duration> for core::time::Duration {
    fn from(d: Duration) -> Self {
        core::time::Duration::from_micros(d.as_micros())
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.micros.is_multiple_of(1_000) {
            write!(f, "{}ms", self.micros / 1_000)
        } else {
            write!(f, "{}us", self.micros)
        }
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t+{}us", self.micros)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Instant::MAX + Duration::MAX, Instant::MAX);
        assert_eq!(Instant::ZERO - Instant::MAX, Duration::ZERO);
        assert_eq!(Duration::from_secs(u64::MAX), Duration::MAX);
        assert_eq!(Instant::from_millis(u64::MAX), Instant::MAX);
    }

    #[test]
    fn units_convert() {
        assert_eq!(Duration::from_secs(1).as_millis(), 1_000);
        assert_eq!(Instant::from_millis(7).as_micros(), 7_000);
        assert_eq!(Instant::from_micros(3).max_of(Instant::from_micros(9)).as_micros(), 9);
    }
}
