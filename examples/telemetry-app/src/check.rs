//! The self-check: compares the ledger with the batcher's metrics once everything has drained.

use batch_embassy::{Count, Metrics, Trigger};

use crate::Plan;
use crate::ledger::{Anomaly, Ledger, SensorLedger};
use crate::log::{log_error, log_info};
use crate::reading::{SENSORS, Sensor};

/// A counter that the ledger and the batcher's metrics both keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Counter {
    /// Readings produced (ledger) and accepted (metrics).
    Accepted,
    /// Readings delivered.
    Delivered,
    /// Readings dead-lettered.
    DeadLettered,
    /// Batches delivered.
    BatchesDelivered,
    /// Batches dead-lettered.
    BatchesDeadLettered,
    /// Failed attempts.
    FailedAttempts,
    /// Attempts (metrics: settled batches plus retries).
    Attempts,
}

/// One thing the self-check found wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Failure {
    /// A sensor task never finished its run.
    SensorRunning {
        /// The sensor.
        sensor: u8,
    },
    /// A sensor produced another number of readings than its period and the run length give.
    WrongProduction {
        /// The sensor.
        sensor: u8,
        /// What it produced.
        produced: u32,
        /// What it should have.
        expected: u32,
    },
    /// Not every reading of a sensor reached exactly one final outcome.
    Unsettled {
        /// The sensor.
        sensor: u8,
        /// Readings produced.
        produced: u32,
        /// Readings delivered.
        delivered: u32,
        /// Readings dead-lettered.
        dead_lettered: u32,
        /// The first reading that has not settled in order.
        next_settle: u32,
    },
    /// Anomalies were recorded during the run.
    Anomalies {
        /// How many.
        count: u32,
        /// The first one.
        first: Anomaly,
    },
    /// The metrics' item counts do not add up.
    MetricsInconsistent,
    /// Items are still buffered or in flight after the shutdown.
    NotDrained {
        /// Items buffered.
        buffered: u64,
        /// Items in flight.
        in_flight: u64,
    },
    /// The ledger and the metrics disagree.
    Mismatch {
        /// On what.
        counter: Counter,
        /// The ledger's count.
        ledger: u64,
        /// The metrics' count.
        metrics: u64,
    },
    /// No attempt was retried, so retries were not exercised.
    NoRetries,
    /// No batch was dead-lettered, so dead letters were not exercised.
    NoDeadLetter,
    /// A reading never reached a final outcome although the store had acknowledged it, or was
    /// produced after the power cut (the store run; the first such reading of the sensor).
    Lost {
        /// The sensor.
        sensor: u8,
        /// The reading.
        seq: u32,
        /// Whether the store had acknowledged it.
        durable: bool,
    },
    /// More readings were lost at the power cut than RAM can hold (the store run).
    TooManyLost {
        /// Readings lost.
        lost: u64,
    },
    /// The store run: an outage that produced more readings than RAM holds, all in one boot,
    /// spilled nothing to the store (store and forward broken: producers waited instead).
    NothingSpilled {
        /// Readings produced during the outage (at the sensors' rates).
        outage_readings: u32,
    },
}

/// Up to this many failures are kept; more are only counted.
pub const MAX_FAILURES: usize = 12;

/// What the self-check saw: the ledger, the batcher's metrics, and what it found wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The ledger at the end of the run.
    pub ledger: Ledger,
    /// The batcher's metrics at the end of the run.
    pub metrics: Metrics,
    /// The failures, in the order checked (empty when the check passed).
    pub failures: heapless::Vec<Failure, MAX_FAILURES>,
    /// Failures beyond [`MAX_FAILURES`], not kept.
    pub more_failures: u32,
    /// The store run: the first boot's metrics at the power cut (`metrics` then adds both boots
    /// up) and the readings lost in RAM (produced before the cut, never acknowledged by the
    /// store).
    #[cfg(feature = "store")]
    pub power_cut: Option<(Metrics, u64)>,
}

impl Report {
    /// Whether the self-check passed (found nothing wrong).
    pub fn passed(&self) -> bool {
        self.failures.is_empty() && self.more_failures == 0
    }

    fn fail(&mut self, failure: Failure) {
        if self.failures.push(failure).is_err() {
            self.more_failures = self.more_failures.saturating_add(1);
        }
    }

    /// Logs the summary, then every failure, with defmt (nothing without the `defmt` feature).
    pub fn log(&self) {
        self.log_summary();
        for failure in &self.failures {
            log_error!("self-check: {}", failure);
        }
        if self.more_failures > 0 {
            log_error!("self-check: and {=u32} more failures", self.more_failures);
        }
    }

    /// Logs what happened: readings, batches, attempts, triggers, ages and waits.
    pub fn log_summary(&self) {
        let (ledger, m) = (&self.ledger, &self.metrics);
        let produced = |i: usize| ledger.sensors.get(i).map_or(0, |s| s.produced);
        log_info!(
            "summary: produced {=u64} readings ({=str} {=u32}, {=str} {=u32}, {=str} {=u32}, {=str} {=u32}; {=u32} urgent), accepted {}",
            ledger.produced(),
            SENSORS[0].name,
            produced(0),
            SENSORS[1].name,
            produced(1),
            SENSORS[2].name,
            produced(2),
            SENSORS[3].name,
            produced(3),
            ledger.sensors.iter().map(|s| s.urgent).sum::<u32>(),
            m.accepted
        );
        log_info!(
            "summary: delivered {} readings in {} batches, dead-lettered {} readings in {} batches",
            m.delivered,
            m.batches_delivered,
            m.dead_lettered,
            m.batches_dead_lettered
        );
        log_info!(
            "summary: {=u32} attempts, {} failed ({=u32} while the link was down), {} retries",
            ledger.attempts,
            m.failed_attempts,
            ledger.link_down_failures,
            m.retries
        );
        let flushes = &m.flushes;
        log_info!(
            "summary: batches by trigger: size {}, linger {}, manual {}, urgent {}, close {}, weight {}",
            flushes.get(Trigger::Size),
            flushes.get(Trigger::Linger),
            flushes.get(Trigger::Manual),
            flushes.get(Trigger::Urgent),
            flushes.get(Trigger::Close),
            flushes.get(Trigger::Weight)
        );
        log_info!(
            "summary: max item age {=u64} ms, longest producer wait (backpressure) {=u64} ms, rejected {}, evicted {}",
            m.max_item_age.as_millis(),
            ledger.max_wait_us() / 1000,
            m.rejected,
            m.evicted
        );
        #[cfg(feature = "store")]
        if let Some((before, lost)) = self.power_cut {
            let s = &ledger.store;
            log_info!(
                "summary: power cut at {=u64} ms; boot 2 recovered {=u64} batches ({=u64} readings) from flash; {=u32} readings settled again (at least once), {=u64} lost in RAM (never acknowledged by the store)",
                s.cut_at_ms.unwrap_or(0),
                s.recovered_batches,
                s.recovered_items,
                s.redelivered,
                lost
            );
            log_info!(
                "summary: store: {=u32} readings spilled in {=u32} batches, {} batches loaded from flash, {} store operations failed, {} readings lost by the store",
                s.spilled_readings,
                s.spilled_batches,
                m.flushes.get(Trigger::Store),
                before.store_failures + m.store_failures,
                m.store_lost
            );
        }
    }
}

/// Checks a finished run: every reading produced reached exactly one final outcome (delivered
/// or dead-lettered), in order per sensor; each sensor produced what its period gives over
/// `plan.run_for`; nothing anomalous happened; the metrics add up, are drained and agree with the
/// ledger; and both retries and dead letters happened. [`Report::passed`] tells the verdict.
pub fn check(ledger: &Ledger, metrics: &Metrics, plan: &Plan) -> Report {
    let mut report = Report {
        ledger: *ledger,
        metrics: *metrics,
        failures: heapless::Vec::new(),
        more_failures: 0,
        #[cfg(feature = "store")]
        power_cut: None,
    };
    for (sensor, s) in SENSORS.iter().zip(&ledger.sensors) {
        report.sensor_ran(sensor, s, plan);
        if s.next_settle != s.produced || s.delivered + s.dead_lettered != s.produced {
            report.fail(Failure::Unsettled {
                sensor: sensor.id,
                produced: s.produced,
                delivered: s.delivered,
                dead_lettered: s.dead_lettered,
                next_settle: s.next_settle,
            });
        }
    }
    if let Some(first) = ledger.first_anomaly {
        report.fail(Failure::Anomalies { count: ledger.anomalies, first });
    }
    if !metrics.is_consistent() {
        report.fail(Failure::MetricsInconsistent);
    }
    if metrics.buffered != 0 || metrics.in_flight != 0 {
        report.fail(Failure::NotDrained {
            buffered: wide(metrics.buffered),
            in_flight: wide(metrics.in_flight),
        });
    }
    let attempts =
        wide(metrics.batches_delivered) + wide(metrics.batches_dead_lettered) + wide(metrics.retries);
    report.compare(ledger, metrics, attempts);
    report
}

impl Report {
    /// The sensor's task finished and produced what its period gives over `plan.run_for`.
    fn sensor_ran(&mut self, sensor: &Sensor, s: &SensorLedger, plan: &Plan) {
        if !s.stopped {
            self.fail(Failure::SensorRunning { sensor: sensor.id });
        }
        let expected = sensor.readings_in(plan.run_for);
        if s.produced != expected {
            self.fail(Failure::WrongProduction { sensor: sensor.id, produced: s.produced, expected });
        }
    }

    /// The ledger's counters equal the metrics' (`attempts`: the metrics' count of attempts), and
    /// retries and dead letters happened.
    fn compare(&mut self, ledger: &Ledger, m: &Metrics, attempts: u64) {
        let pairs = [
            (Counter::Accepted, ledger.produced(), wide(m.accepted)),
            (Counter::Delivered, ledger.delivered(), wide(m.delivered)),
            (Counter::DeadLettered, ledger.dead_lettered(), wide(m.dead_lettered)),
            (Counter::BatchesDelivered, u64::from(ledger.batches_delivered), wide(m.batches_delivered)),
            (
                Counter::BatchesDeadLettered,
                u64::from(ledger.batches_dead_lettered),
                wide(m.batches_dead_lettered),
            ),
            (Counter::FailedAttempts, u64::from(ledger.failed_attempts), wide(m.failed_attempts)),
            (Counter::Attempts, u64::from(ledger.attempts), attempts),
        ];
        for (counter, ledger, metrics) in pairs {
            if ledger != metrics {
                self.fail(Failure::Mismatch { counter, ledger, metrics });
            }
        }
        if m.retries == 0 {
            self.fail(Failure::NoRetries);
        }
        if m.batches_dead_lettered == 0 || ledger.batches_dead_lettered == 0 {
            self.fail(Failure::NoDeadLetter);
        }
    }
}

/// A counter as a `u64` ([`Count`] is `u32` on the MCU, `u64` on a 64-bit host).
#[allow(clippy::useless_conversion, reason = "a no-op on 64-bit hosts only")]
fn wide(count: Count) -> u64 {
    count.into()
}

/// The self-check of the store run, after the power cut and the second boot: every reading
/// produced reached a final outcome at least once, or was lost in RAM at the cut (produced before
/// it, never acknowledged by the store), and no more were lost than RAM holds; a reading settled
/// twice only if the store held it, first outcomes in order per sensor, batches in order within
/// each boot (the ledger's anomalies); each boot's metrics add up, the second drained its store;
/// and the ledger's counters equal both boots' together (`before` at the cut, `after` now; the
/// recovered readings count as accepted once).
#[cfg(feature = "store")]
pub fn check_power_cut(ledger: &Ledger, before: &Metrics, after: &Metrics, plan: &Plan) -> Report {
    let metrics = combined(before, after, ledger.store.recovered_items);
    let mut report = Report {
        ledger: *ledger,
        metrics,
        failures: heapless::Vec::new(),
        more_failures: 0,
        power_cut: None,
    };
    let mut lost = 0;
    for (sensor, s) in SENSORS.iter().zip(&ledger.sensors) {
        report.sensor_ran(sensor, s, plan);
        let at_cut = ledger.store.produced_at_cut.get(usize::from(sensor.id)).copied().unwrap_or(0);
        let mut first_bad = None;
        for seq in 0..s.produced {
            if ledger.store.is_settled(sensor.id, seq) {
                continue;
            }
            let durable = ledger.store.is_durable(sensor.id, seq);
            if durable || seq >= at_cut {
                first_bad = first_bad.or(Some((seq, durable)));
            } else {
                lost += 1;
            }
        }
        if let Some((seq, durable)) = first_bad {
            report.fail(Failure::Lost { sensor: sensor.id, seq, durable });
        }
    }
    if lost > (crate::CAPACITY + crate::MAX_BATCH) as u64 {
        report.fail(Failure::TooManyLost { lost });
    }
    // An outage longer than RAM spills, if one boot saw it whole (the cut fell outside it).
    let (down, up) = (plan.outage_at.as_millis(), (plan.outage_at + plan.outage_for).as_millis());
    let outage_readings: u32 = SENSORS.iter().map(|s| s.readings_in(plan.outage_for)).sum();
    if let Some(cut) = ledger.store.cut_at_ms
        && (cut < down || cut >= up)
        && outage_readings as usize > crate::CAPACITY
        && ledger.store.spilled_readings == 0
    {
        report.fail(Failure::NothingSpilled { outage_readings });
    }
    report.power_cut = Some((*before, lost));
    if let Some(first) = ledger.first_anomaly {
        report.fail(Failure::Anomalies { count: ledger.anomalies, first });
    }
    if !before.is_consistent() || !after.is_consistent() {
        report.fail(Failure::MetricsInconsistent);
    }
    if after.buffered != 0 || after.in_flight != 0 || after.stored != 0 {
        report.fail(Failure::NotDrained { buffered: wide(after.buffered), in_flight: wide(after.in_flight) });
    }
    // An attempt cut short by the power cut is in neither: every recorded attempt either failed
    // or delivered its batch.
    let attempts = wide(metrics.failed_attempts) + wide(metrics.batches_delivered);
    report.compare(ledger, &metrics, attempts);
    report
}

/// Both boots' counters together: `after`'s gauges, the sum of the counts, with the readings
/// recovered from the store counted as accepted once (by the first boot).
#[cfg(feature = "store")]
fn combined(before: &Metrics, after: &Metrics, recovered: u64) -> Metrics {
    let mut m = *after;
    let sum = |a: Count, b: Count| a.wrapping_add(b);
    m.accepted = sum(before.accepted, after.accepted).wrapping_sub(recovered as Count);
    m.rejected = sum(before.rejected, after.rejected);
    m.delivered = sum(before.delivered, after.delivered);
    m.dead_lettered = sum(before.dead_lettered, after.dead_lettered);
    m.evicted = sum(before.evicted, after.evicted);
    m.returned = sum(before.returned, after.returned);
    m.retries = sum(before.retries, after.retries);
    m.failed_attempts = sum(before.failed_attempts, after.failed_attempts);
    m.batches_delivered = sum(before.batches_delivered, after.batches_delivered);
    m.batches_dead_lettered = sum(before.batches_dead_lettered, after.batches_dead_lettered);
    m.panics = sum(before.panics, after.panics);
    m.store_failures = sum(before.store_failures, after.store_failures);
    m.store_lost = sum(before.store_lost, after.store_lost);
    m.max_item_age =
        if before.max_item_age > after.max_item_age { before.max_item_age } else { after.max_item_age };
    for trigger in batch_embassy::Trigger::ALL {
        for _ in 0..before.flushes.get(trigger) {
            m.flushes.record(trigger);
        }
    }
    m
}
