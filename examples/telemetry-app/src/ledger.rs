//! The ledger: what the sensors produced and what the uplink delivered or dead-lettered, kept
//! independently of the batcher's own metrics so that the self-check can compare the two.

use batch_embassy::{BatchInfo, PushError};

use crate::reading::{Reading, SENSOR_COUNT};

/// Something that must never happen, recorded when it happens (the first one is kept).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Anomaly {
    /// The batcher refused a reading (`add` returned an error).
    Refused {
        /// The sensor.
        sensor: u8,
        /// The refused reading.
        seq: u32,
    },
    /// The batcher evicted a reading to make room.
    Evicted {
        /// The sensor.
        sensor: u8,
        /// The evicted reading.
        seq: u32,
    },
    /// A reading carried a sensor id outside [`SENSORS`](crate::SENSORS).
    UnknownSensor {
        /// The id.
        sensor: u8,
    },
    /// A reading reached a final outcome a second time.
    Duplicate {
        /// The sensor.
        sensor: u8,
        /// The reading that came back.
        seq: u32,
        /// The reading that was due next.
        expected: u32,
    },
    /// A reading reached its final outcome before an earlier one of the same sensor (which was
    /// lost or comes late).
    Skipped {
        /// The sensor.
        sensor: u8,
        /// The reading that arrived.
        seq: u32,
        /// The reading that was due instead.
        expected: u32,
    },
    /// A reading reached its first final outcome after a later reading of its sensor (the store
    /// run, where gaps are allowed: readings lost in RAM at the power cut).
    Reordered {
        /// The sensor.
        sensor: u8,
        /// The reading that arrived.
        seq: u32,
        /// The reading that was due at the earliest.
        expected: u32,
    },
    /// A batch reached its final outcome after a batch cut later than itself.
    BatchOrder {
        /// The batch.
        seq: u64,
        /// The batch settled before it.
        after: u64,
    },
}

/// One sensor's accounts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SensorLedger {
    /// Readings the sensor took (`0..produced` are the sequence numbers), accepted or not.
    pub produced: u32,
    /// Of those, alarms sent with `add_urgent`.
    pub urgent: u32,
    /// Readings the uplink delivered (every delivery counts, a duplicate too).
    pub delivered: u32,
    /// Readings that failed every attempt (dead letters).
    pub dead_lettered: u32,
    /// The sequence number that must reach its final outcome next: every reading before it
    /// did, once and in order.
    pub next_settle: u32,
    /// The longest time one `add().await` waited for room (backpressure), in microseconds.
    pub max_wait_us: u64,
    /// Whether the sensor task finished its run.
    pub stopped: bool,
}

/// The application's accounts, written by the sensor loops and the uplink. A copy is a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Ledger {
    /// Per sensor, indexed by [`Sensor::id`](crate::Sensor::id).
    pub sensors: [SensorLedger; SENSOR_COUNT],
    /// Uplink attempts (first tries and retries).
    pub attempts: u32,
    /// Attempts that failed (refused by the far end, or the link was down).
    pub failed_attempts: u32,
    /// Of those, attempts that failed because the link was down.
    pub link_down_failures: u32,
    /// Batches delivered.
    pub batches_delivered: u32,
    /// Batches dead-lettered.
    pub batches_dead_lettered: u32,
    /// The last batch that reached its final outcome.
    pub last_batch: Option<u64>,
    /// How many anomalies were recorded.
    pub anomalies: u32,
    /// The first one.
    pub first_anomaly: Option<Anomaly>,
    /// Whether the simulated link is up.
    pub link_up: bool,
    /// How many times the link went down.
    pub outages: u32,
    /// What the store run adds: durability per reading, the power cut, the reboot.
    #[cfg(feature = "store")]
    pub store: crate::power_cut::StoreLedger,
}

impl Default for Ledger {
    fn default() -> Self {
        Self::new()
    }
}

impl Ledger {
    /// An empty ledger, link up.
    pub const fn new() -> Self {
        const ZERO: SensorLedger = SensorLedger {
            produced: 0,
            urgent: 0,
            delivered: 0,
            dead_lettered: 0,
            next_settle: 0,
            max_wait_us: 0,
            stopped: false,
        };
        Self {
            sensors: [ZERO; SENSOR_COUNT],
            attempts: 0,
            failed_attempts: 0,
            link_down_failures: 0,
            batches_delivered: 0,
            batches_dead_lettered: 0,
            last_batch: None,
            anomalies: 0,
            first_anomaly: None,
            link_up: true,
            outages: 0,
            #[cfg(feature = "store")]
            store: crate::power_cut::StoreLedger::new(),
        }
    }

    /// Whether the (simulated) power is on: after a power cut nothing the firmware does counts,
    /// until the reboot.
    pub fn powered(&self) -> bool {
        #[cfg(feature = "store")]
        return !self.store.powered_off;
        #[cfg(not(feature = "store"))]
        true
    }

    /// Readings produced by every sensor.
    pub fn produced(&self) -> u64 {
        self.sensors.iter().map(|s| u64::from(s.produced)).sum()
    }

    /// Readings delivered, every sensor.
    pub fn delivered(&self) -> u64 {
        self.sensors.iter().map(|s| u64::from(s.delivered)).sum()
    }

    /// Readings dead-lettered, every sensor.
    pub fn dead_lettered(&self) -> u64 {
        self.sensors.iter().map(|s| u64::from(s.dead_lettered)).sum()
    }

    /// The longest producer wait of any sensor, in microseconds.
    pub fn max_wait_us(&self) -> u64 {
        self.sensors.iter().map(|s| s.max_wait_us).max().unwrap_or(0)
    }

    /// Whether every sensor finished its run.
    pub fn all_stopped(&self) -> bool {
        self.sensors.iter().all(|s| s.stopped)
    }

    /// Records an anomaly.
    pub(crate) fn anomaly(&mut self, anomaly: Anomaly) {
        self.anomalies = self.anomalies.saturating_add(1);
        if self.first_anomaly.is_none() {
            self.first_anomaly = Some(anomaly);
        }
    }

    fn sensor(&mut self, sensor: u8) -> Option<&mut SensorLedger> {
        if usize::from(sensor) < SENSOR_COUNT {
            self.sensors.get_mut(usize::from(sensor))
        } else {
            self.anomaly(Anomaly::UnknownSensor { sensor });
            None
        }
    }

    /// Records reading `seq` of `sensor` as produced, with what `add` answered and how long it
    /// waited.
    pub(crate) fn record_push(
        &mut self,
        sensor: u8,
        seq: u32,
        urgent: bool,
        waited_us: u64,
        result: Result<Option<Reading>, PushError<Reading>>,
    ) {
        if !self.powered() {
            return;
        }
        if let Some(s) = self.sensor(sensor) {
            s.produced += 1;
            s.urgent += u32::from(urgent);
            s.max_wait_us = s.max_wait_us.max(waited_us);
        }
        match result {
            Ok(None) => {}
            Ok(Some(evicted)) => self.anomaly(Anomaly::Evicted { sensor: evicted.sensor, seq: evicted.seq }),
            Err(_) => self.anomaly(Anomaly::Refused { sensor, seq }),
        }
    }

    /// Marks `sensor` as finished; returns whether every sensor is.
    pub(crate) fn stop(&mut self, sensor: u8) -> bool {
        if !self.powered() {
            return false;
        }
        if let Some(s) = self.sensor(sensor) {
            s.stopped = true;
        }
        self.all_stopped()
    }

    /// Records one uplink attempt and, when it delivered the batch, the batch's final outcome.
    pub(crate) fn record_attempt(
        &mut self,
        batch: &[Reading],
        info: BatchInfo,
        failed: bool,
        link_down: bool,
    ) {
        if !self.powered() {
            return;
        }
        self.attempts += 1;
        if failed {
            self.failed_attempts += 1;
            self.link_down_failures += u32::from(link_down);
        } else {
            self.batches_delivered += 1;
            self.settle_batch(info.seq);
            for reading in batch {
                self.settle(reading, true);
            }
        }
    }

    /// Records a batch that failed every attempt.
    pub(crate) fn record_dead_letter(&mut self, batch: &[Reading], info: BatchInfo) {
        if !self.powered() {
            return;
        }
        self.batches_dead_lettered += 1;
        self.settle_batch(info.seq);
        for reading in batch {
            self.settle(reading, false);
        }
    }

    fn settle_batch(&mut self, seq: u64) {
        if let Some(after) = self.last_batch
            && seq <= after
        {
            self.anomaly(Anomaly::BatchOrder { seq, after });
        }
        self.last_batch = Some(seq);
    }

    /// Records the final outcome of one reading, checking that it is the one due next.
    fn settle(&mut self, reading: &Reading, delivered: bool) {
        let Some(s) = self.sensor(reading.sensor) else { return };
        if delivered {
            s.delivered += 1;
        } else {
            s.dead_lettered += 1;
        }
        self.order(reading);
    }

    /// Checks that `reading` is the one of its sensor due next.
    #[cfg(not(feature = "store"))]
    fn order(&mut self, reading: &Reading) {
        let Some(s) = self.sensor(reading.sensor) else { return };
        let expected = s.next_settle;
        if reading.seq >= expected {
            s.next_settle = reading.seq + 1;
        }
        let (sensor, seq) = (reading.sensor, reading.seq);
        if seq < expected {
            self.anomaly(Anomaly::Duplicate { sensor, seq, expected });
        } else if seq > expected {
            self.anomaly(Anomaly::Skipped { sensor, seq, expected });
        }
    }
}
