//! A simulated uplink: a radio that takes a little air time per batch, is refused by the far end
//! on a fixed pseudo-random schedule, and fails while the link is down.

use batch_embassy::{BatchInfo, Handler};
use embassy_time::{Duration, Timer};
use heapless::vec::VecView;

use crate::Telemetry;
use crate::log::{log_info, log_warn};
use crate::reading::{Reading, xorshift32};

/// Percentage of attempts the far end refuses.
pub const FAILURE_PERCENT: u32 = 30;

/// The seed of the refusal schedule (chosen so that the checks below hold).
pub const UPLINK_SEED: u32 = 0x5EED_0001;

/// Whether attempt `attempt` of batch `seq` is refused, for the schedule seeded with `seed`: a
/// pure function of its inputs (xorshift32 over a mix of them), so a run's outcome does not
/// depend on timing, and the same on every board.
pub const fn attempt_refused(seed: u32, seq: u64, attempt: u32) -> bool {
    let mut x = seed
        ^ (seq as u32).wrapping_mul(0x9E37_79B9)
        ^ ((seq >> 32) as u32)
        ^ attempt.wrapping_mul(0x85EB_CA6B);
    if x == 0 {
        x = 0x2545_F491;
    }
    x = xorshift32(xorshift32(xorshift32(x)));
    x % 100 < FAILURE_PERCENT
}

/// Whether batch `seq` is refused on every one of `max_attempts` attempts (a dead letter).
pub const fn doomed(seed: u32, seq: u64, max_attempts: u32) -> bool {
    let mut attempt = 1;
    while attempt <= max_attempts {
        if !attempt_refused(seed, seq, attempt) {
            return false;
        }
        attempt += 1;
    }
    true
}

/// The first batch below `within` that the schedule dead-letters, if any.
pub const fn first_doomed(seed: u32, max_attempts: u32, within: u64) -> Option<u64> {
    let mut seq = 0;
    while seq < within {
        if doomed(seed, seq, max_attempts) {
            return Some(seq);
        }
        seq += 1;
    }
    None
}

/// Refused attempts per thousand over the first `batches` batches and `attempts` attempts each.
pub const fn refusal_permille(seed: u32, batches: u64, attempts: u32) -> u64 {
    let (mut refused, mut seq) = (0, 0);
    while seq < batches {
        let mut attempt = 1;
        while attempt <= attempts {
            refused += attempt_refused(seed, seq, attempt) as u64;
            attempt += 1;
        }
        seq += 1;
    }
    refused * 1000 / (batches * attempts as u64)
}

/// The batch that [`UPLINK_SEED`] dead-letters first. Every run cuts more batches than this (at
/// least produced / max_batch), so every run has a dead letter.
pub const DOOMED_BATCH: u64 = match first_doomed(UPLINK_SEED, crate::CONFIG.get_max_attempts(), 12) {
    Some(seq) => seq,
    None => panic!("UPLINK_SEED dead-letters none of the first 12 batches: pick another seed"),
};

const _: () = {
    let permille = refusal_permille(UPLINK_SEED, 400, 3);
    assert!(permille >= 250 && permille <= 350, "UPLINK_SEED refuses far from 30% of attempts");
};

/// Why an attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum UplinkError {
    /// The far end refused the batch.
    Refused,
    /// The link was down during the transfer.
    LinkDown,
}

/// The uplink handler: sends each batch over the simulated link and records the outcome (and
/// dead letters) in the [`Telemetry`] ledger.
#[derive(Debug)]
pub struct Uplink<'a> {
    app: &'a Telemetry,
    seed: u32,
}

impl<'a> Uplink<'a> {
    /// An uplink for `app`, refusing on the [`UPLINK_SEED`] schedule.
    pub const fn new(app: &'a Telemetry) -> Self {
        Self { app, seed: UPLINK_SEED }
    }

    /// Air time of a batch of `len` readings: 1.5 ms plus 150 µs per reading.
    pub const fn air_time(len: usize) -> Duration {
        Duration::from_micros(1_500 + 150 * len as u64)
    }
}

impl Handler<Reading> for Uplink<'_> {
    type Error = UplinkError;

    async fn handle(&mut self, batch: &[Reading], info: BatchInfo) -> Result<(), UplinkError> {
        let up_before = self.app.with_ledger(|l| l.link_up);
        Timer::after(Self::air_time(batch.len())).await;
        self.app.alive().await; // after a power cut, nothing comes back
        let result = if !up_before || !self.app.with_ledger(|l| l.link_up) {
            Err(UplinkError::LinkDown)
        } else if attempt_refused(self.seed, info.seq, info.attempt) {
            Err(UplinkError::Refused)
        } else {
            Ok(())
        };
        self.app.with_ledger(|l| {
            l.record_attempt(batch, info, result.is_err(), result == Err(UplinkError::LinkDown));
        });
        match result {
            Ok(()) => log_info!(
                "uplink: batch {=u64} ({=str}, {=usize} readings) delivered on attempt {=u32}",
                info.seq,
                info.trigger.name(),
                batch.len(),
                info.attempt
            ),
            Err(error) => log_warn!("uplink: batch {=u64} attempt {=u32}: {}", info.seq, info.attempt, error),
        }
        result
    }

    fn dead_letter(&mut self, items: &mut VecView<Reading>, info: BatchInfo, error: UplinkError) {
        self.app.with_ledger(|l| l.record_dead_letter(items, info));
        log_warn!(
            "uplink: batch {=u64} dead-lettered after {=u32} attempts ({}): {=usize} readings recorded",
            info.seq,
            info.attempt,
            error,
            items.len()
        );
        items.clear();
    }
}
