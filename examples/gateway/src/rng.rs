//! A tiny seeded pseudo-random generator (SplitMix64) and the fault injector built on it.
//!
//! Runs are repeatable for a given `--seed`: the same sequence of draws decides which deliveries
//! fail (which batch gets which draw still depends on timing).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// SplitMix64: small, fast and good enough for simulated noise and failure draws.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform draw in `[0, 1)`.
    pub(crate) fn next_f64(&mut self) -> f64 {
        // 53 random bits: exactly representable in an f64.
        #[allow(clippy::cast_precision_loss, reason = "53 bits fit an f64 mantissa")]
        let bits = (self.next_u64() >> 11) as f64;
        bits / 9_007_199_254_740_992.0 // 2^53
    }
}

/// Decides, per delivery attempt, whether to fail it on purpose.
#[derive(Debug)]
pub(crate) struct Faults {
    rate: f64,
    rng: Mutex<SplitMix64>,
    injected: AtomicU64,
}

impl Faults {
    /// Fails a `rate` share (0.0..=1.0) of the draws, from a generator seeded with `seed`.
    pub(crate) fn new(rate: f64, seed: u64) -> Self {
        Self { rate, rng: Mutex::new(SplitMix64::new(seed)), injected: AtomicU64::new(0) }
    }

    /// Whether this attempt should fail.
    pub(crate) fn should_fail(&self) -> bool {
        if self.rate <= 0.0 {
            return false;
        }
        let draw = self.rng.lock().unwrap_or_else(std::sync::PoisonError::into_inner).next_f64();
        let fail = draw < self.rate;
        if fail {
            self.injected.fetch_add(1, Ordering::Relaxed);
        }
        fail
    }

    /// How many failures were injected so far.
    pub(crate) fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }
}
