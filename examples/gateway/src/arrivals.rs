//! What the MQTT subscriber received, deduplicated by `(sensor, seq)` and checked for order.
//!
//! QoS 1 is at-least-once on both legs (gateway to broker, broker to subscriber): a batch whose
//! PUBACK was lost is published again, and a broker resends what its subscriber had not
//! acknowledged. So the consumer keeps the first copy of each `(sensor, seq)`, counts the
//! others as duplicates, and checks that each sensor's first copies arrive in increasing `seq`
//! order (a reading that first shows up after a later one of its sensor is an order violation).
//!
//! This module uses the standard library only, so the tests in `tests/` include it by path.

use std::collections::{BTreeMap, HashSet};

/// What became of one received reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// First copy, in order.
    New,
    /// A copy of a reading received before: dropped.
    Duplicate,
    /// First copy, but a later reading of the same sensor arrived before it.
    OutOfOrder,
}

/// One sensor's received readings.
#[derive(Debug, Default)]
struct SensorLog {
    seen: HashSet<u64>,
    /// Highest `seq` received so far.
    highest: Option<u64>,
    order_violations: u64,
}

/// The subscriber's ledger (`Arrivals::default()` is empty).
#[derive(Debug, Default)]
pub(crate) struct Arrivals {
    sensors: BTreeMap<u32, SensorLog>,
    /// Unique `(sensor, seq)` in first-arrival order.
    keys: Vec<(u32, u64)>,
    received: u64,
    duplicates: u64,
    publishes: u64,
    batches: HashSet<u64>,
    duplicate_batches: u64,
}

impl Arrivals {
    /// Records one publish: the batch `batch_seq` with its readings' keys, in payload order.
    pub(crate) fn record_batch(&mut self, batch_seq: u64, readings: impl IntoIterator<Item = (u32, u64)>) {
        self.publishes += 1;
        if !self.batches.insert(batch_seq) {
            self.duplicate_batches += 1;
        }
        for (sensor, seq) in readings {
            self.record(sensor, seq);
        }
    }

    /// Records one reading.
    pub(crate) fn record(&mut self, sensor: u32, seq: u64) -> Arrival {
        self.received += 1;
        let log = self.sensors.entry(sensor).or_default();
        if !log.seen.insert(seq) {
            self.duplicates += 1;
            return Arrival::Duplicate;
        }
        self.keys.push((sensor, seq));
        match log.highest {
            Some(h) if seq < h => {
                log.order_violations += 1;
                Arrival::OutOfOrder
            }
            _ => {
                log.highest = Some(seq);
                Arrival::New
            }
        }
    }

    /// Readings received, copies included.
    pub(crate) fn received(&self) -> u64 {
        self.received
    }

    /// Distinct `(sensor, seq)` received.
    pub(crate) fn unique(&self) -> u64 {
        self.keys.len() as u64
    }

    /// Copies dropped by the dedup.
    pub(crate) fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Publishes received.
    pub(crate) fn publishes(&self) -> u64 {
        self.publishes
    }

    /// Distinct batches received.
    pub(crate) fn batches(&self) -> u64 {
        self.batches.len() as u64
    }

    /// Publishes that repeated a batch already received.
    pub(crate) fn duplicate_batches(&self) -> u64 {
        self.duplicate_batches
    }

    /// Unique keys, in first-arrival order.
    pub(crate) fn keys(&self) -> &[(u32, u64)] {
        &self.keys
    }

    /// Whether `(sensor, seq)` was received.
    pub(crate) fn contains(&self, sensor: u32, seq: u64) -> bool {
        self.sensors.get(&sensor).is_some_and(|log| log.seen.contains(&seq))
    }

    /// Order violations over all sensors.
    pub(crate) fn order_violations(&self) -> u64 {
        self.sensors.values().map(|log| log.order_violations).sum()
    }

    /// `(sensor, violations)` for every sensor with at least one.
    pub(crate) fn order_violations_by_sensor(&self) -> Vec<(u32, u64)> {
        self.sensors
            .iter()
            .filter(|(_, log)| log.order_violations > 0)
            .map(|(&sensor, log)| (sensor, log.order_violations))
            .collect()
    }

    /// Sensors heard from.
    pub(crate) fn sensors(&self) -> usize {
        self.sensors.len()
    }

    /// How many of `expected` were never received.
    pub(crate) fn missing<'a>(&self, expected: impl IntoIterator<Item = &'a (u32, u64)>) -> u64 {
        expected.into_iter().filter(|&&(sensor, seq)| !self.contains(sensor, seq)).count() as u64
    }
}
