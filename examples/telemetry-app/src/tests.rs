//! Host tests of the ledger and the self-check (the firmware runs the real thing in QEMU).

use batch_embassy::{BatchInfo, Metrics, Trigger};

use crate::{
    Anomaly, CONFIG, Counter, DOOMED_BATCH, Failure, Ledger, MAX_BATCH, PLAN, Reading, Report, SENSORS,
    UPLINK_SEED, check, doomed, refusal_permille,
};

fn info(seq: u64, attempt: u32) -> BatchInfo {
    BatchInfo { seq, attempt, trigger: Trigger::Size }
}

/// A run as the uplink would record it: every sensor's readings in batches of one sensor,
/// batch 0 refused once then delivered, batch 1 dead-lettered; and the matching metrics.
fn perfect_run() -> (Ledger, Metrics) {
    let mut ledger = Ledger::new();
    let mut metrics = Metrics::default();
    let mut seq = 0;
    for sensor in &SENSORS {
        let count = sensor.readings_in(PLAN.run_for);
        let readings: Vec<Reading> = (0..count)
            .map(|n| Reading { sensor: sensor.id, value: sensor.sample(n), seq: n, at_ms: 0 })
            .collect();
        for r in &readings {
            ledger.record_push(r.sensor, r.seq, false, 0, Ok(None));
        }
        metrics.accepted += u64::from(count);
        for batch in readings.chunks(MAX_BATCH) {
            let len = batch.len() as u64;
            if seq == 0 {
                ledger.record_attempt(batch, info(seq, 1), true, false);
                metrics.failed_attempts += 1;
                metrics.retries += 1;
                ledger.record_attempt(batch, info(seq, 2), false, false);
            } else if seq == 1 {
                for attempt in 1..=3 {
                    ledger.record_attempt(batch, info(seq, attempt), true, false);
                }
                ledger.record_dead_letter(batch, info(seq, 3));
                metrics.failed_attempts += 3;
                metrics.retries += 2;
            } else {
                ledger.record_attempt(batch, info(seq, 1), false, false);
            }
            if seq == 1 {
                metrics.dead_lettered += len;
                metrics.batches_dead_lettered += 1;
            } else {
                metrics.delivered += len;
                metrics.batches_delivered += 1;
            }
            seq += 1;
        }
        ledger.stop(sensor.id);
    }
    (ledger, metrics)
}

fn failures(report: &Report) -> Vec<Failure> {
    report.failures.iter().copied().collect()
}

#[test]
fn a_perfect_run_passes() {
    let (ledger, metrics) = perfect_run();
    let report = check(&ledger, &metrics, &PLAN);
    assert_eq!(failures(&report), []);
    assert!(report.passed());
}

#[test]
fn a_duplicate_delivery_fails() {
    let (mut ledger, mut metrics) = perfect_run();
    let replay = Reading { sensor: 0, value: 0, seq: 3, at_ms: 0 };
    ledger.record_attempt(&[replay], info(1000, 1), false, false);
    metrics.accepted += 1;
    metrics.delivered += 1;
    metrics.batches_delivered += 1;
    let report = check(&ledger, &metrics, &PLAN);
    let found = failures(&report);
    assert!(!report.passed());
    assert!(found.contains(&Failure::Anomalies {
        count: 1,
        first: Anomaly::Duplicate { sensor: 0, seq: 3, expected: 300 }
    }));
    assert!(found.contains(&Failure::Mismatch { counter: Counter::Accepted, ledger: 485, metrics: 486 }));
}

#[test]
#[cfg(not(feature = "store"))] // the store run allows gaps (readings lost in RAM at the power cut)
fn a_lost_reading_fails() {
    let mut ledger = Ledger::new();
    for seq in 0..3 {
        ledger.record_push(1, seq, false, 0, Ok(None));
    }
    let r = |seq| Reading { sensor: 1, value: 0, seq, at_ms: 0 };
    // Reading 1 never reaches the uplink.
    ledger.record_attempt(&[r(0), r(2)], info(0, 1), false, false);
    assert_eq!(ledger.first_anomaly, Some(Anomaly::Skipped { sensor: 1, seq: 2, expected: 1 }));
    let metrics = Metrics { accepted: 3, delivered: 3, batches_delivered: 1, ..Metrics::default() };
    let report = check(&ledger, &metrics, &PLAN);
    let found = failures(&report);
    assert!(found.contains(&Failure::Unsettled {
        sensor: 1,
        produced: 3,
        delivered: 2,
        dead_lettered: 0,
        next_settle: 3
    }));
    assert!(found.contains(&Failure::Mismatch { counter: Counter::Delivered, ledger: 2, metrics: 3 }));
    assert!(found.contains(&Failure::NoRetries));
    // The other sensors never ran either: more failures than the report keeps.
    assert!(found.contains(&Failure::SensorRunning { sensor: 3 }));
    assert_eq!((found.len(), report.more_failures), (crate::MAX_FAILURES, 1));
}

#[test]
fn batches_settling_out_of_order_fail() {
    let mut ledger = Ledger::new();
    let r = |seq| Reading { sensor: 2, value: 0, seq, at_ms: 0 };
    ledger.record_attempt(&[r(0)], info(5, 1), false, false);
    ledger.record_attempt(&[r(1)], info(4, 1), false, false);
    assert_eq!(ledger.first_anomaly, Some(Anomaly::BatchOrder { seq: 4, after: 5 }));
}

#[test]
fn inconsistent_or_undrained_metrics_fail() {
    let (ledger, mut metrics) = perfect_run();
    metrics.buffered = 1;
    let found = failures(&check(&ledger, &metrics, &PLAN));
    assert!(found.contains(&Failure::MetricsInconsistent));
    assert!(found.contains(&Failure::NotDrained { buffered: 1, in_flight: 0 }));
}

#[test]
fn the_uplink_schedule_dead_letters_early_and_refuses_about_30_percent() {
    assert!(doomed(UPLINK_SEED, DOOMED_BATCH, CONFIG.get_max_attempts()));
    let permille = refusal_permille(UPLINK_SEED, 10_000, 3);
    assert!((270..=330).contains(&permille), "{permille}");
}

#[test]
fn sensors_sample_deterministically_with_alarms() {
    let vibration = &SENSORS[3];
    let alarms: Vec<u32> =
        (0..vibration.readings_in(PLAN.run_for)).filter(|&n| vibration.is_alarm(n)).collect();
    assert_eq!(alarms, [3, 7, 11, 15, 19]);
    assert!(vibration.sample(3) > vibration.sample(2) + 100);
    assert_eq!(SENSORS[0].readings_in(PLAN.run_for), 300);
    assert_eq!(SENSORS[0].sample(17), SENSORS[0].sample(17));
}

/// The store run's check: a power cut after the perfect run's production (`before`: its
/// metrics), and a second boot with nothing left to do.
#[cfg(feature = "store")]
mod power_cut {
    use super::{Anomaly, Failure, Ledger, Metrics, PLAN, Reading, failures, info, perfect_run};
    use crate::check_power_cut;

    #[test]
    fn a_stored_reading_may_settle_twice_any_other_may_not() {
        let mut ledger = Ledger::new();
        let r = |seq| Reading { sensor: 1, value: 0, seq, at_ms: 0 };
        ledger.mark_durable(&[r(0), r(1)]);
        ledger.record_attempt(&[r(0), r(1)], info(0, 1), false, false);
        ledger.last_batch = None; // the reboot: batch 0 comes back from the store
        ledger.record_attempt(&[r(0), r(1)], info(0, 1), false, false);
        assert_eq!((ledger.first_anomaly, ledger.store.redelivered), (None, 2));
        ledger.record_attempt(&[r(2)], info(1, 1), false, false);
        ledger.record_attempt(&[r(2)], info(2, 1), false, false);
        assert_eq!(ledger.first_anomaly, Some(Anomaly::Duplicate { sensor: 1, seq: 2, expected: 3 }));
    }

    #[test]
    fn a_reading_lost_in_ram_passes_and_counts_a_lost_stored_one_fails() {
        let (mut ledger, metrics) = perfect_run();
        ledger.store.produced_at_cut = ledger.sensors.map(|s| s.produced);
        ledger.store.forget(2, 7); // never settled, never acknowledged by the store
        let report = check_power_cut(&ledger, &metrics, &Metrics::default(), &PLAN);
        assert_eq!(failures(&report), []);
        assert_eq!(report.power_cut.map(|(_, lost)| lost), Some(1));
        ledger.mark_durable(&[Reading { sensor: 2, value: 0, seq: 7, at_ms: 0 }]);
        let report = check_power_cut(&ledger, &metrics, &Metrics::default(), &PLAN);
        assert_eq!(failures(&report), [Failure::Lost { sensor: 2, seq: 7, durable: true }]);
    }

    #[test]
    fn an_outage_seen_whole_by_one_boot_must_spill() {
        let (mut ledger, metrics) = perfect_run();
        ledger.store.produced_at_cut = ledger.sensors.map(|s| s.produced);
        let end = (PLAN.outage_at + PLAN.outage_for).as_millis();
        // The cut fell inside the outage: no boot saw it whole, no spill needed.
        ledger.store.cut_at_ms = Some(end - 1);
        assert_eq!(failures(&check_power_cut(&ledger, &metrics, &Metrics::default(), &PLAN)), []);
        // After it: the first boot saw it whole, and spilled nothing.
        ledger.store.cut_at_ms = Some(end);
        let report = check_power_cut(&ledger, &metrics, &Metrics::default(), &PLAN);
        assert_eq!(failures(&report), [Failure::NothingSpilled { outage_readings: 80 }]);
        ledger.record_spill(&[Reading { sensor: 0, value: 0, seq: 5, at_ms: 0 }]);
        assert_eq!(failures(&check_power_cut(&ledger, &metrics, &Metrics::default(), &PLAN)), []);
    }
}
