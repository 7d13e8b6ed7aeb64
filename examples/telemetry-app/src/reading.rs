//! What the sensors produce.

use embassy_time::Duration;

/// One sample of one sensor, as the uplink carries it: 12 bytes, `Copy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "store", derive(serde::Serialize, serde::Deserialize))]
pub struct Reading {
    /// Which sensor took it: its index in [`SENSORS`].
    pub sensor: u8,
    /// The measured value, in the sensor's own unit.
    pub value: i16,
    /// The sensor's sequence number: 0, 1, 2, ... with no gap.
    pub seq: u32,
    /// When it was taken, in milliseconds since boot (wraps after 49 days).
    pub at_ms: u32,
}

const _: () = assert!(size_of::<Reading>() == 12, "a reading is 12 bytes: 64 of them take 768 bytes");

/// A simulated sensor: what it is called, how often it is sampled and what it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sensor {
    /// Its index in [`SENSORS`] (and in the ledger), carried by each [`Reading`].
    pub id: u8,
    /// A short name for logs.
    pub name: &'static str,
    /// Time between two samples.
    pub period: Duration,
    /// The middle of the simulated signal.
    pub base: i16,
    /// How far the simulated signal swings around `base`.
    pub swing: i16,
    /// Every `alarm_every`-th reading is an alarm (a spike), sent with `add_urgent` so that it
    /// cuts its batch at once; 0 for never.
    pub alarm_every: u32,
}

/// How many sensors the application runs: every one of [`SENSORS`] must get a sensor task.
pub const SENSOR_COUNT: usize = 4;

/// The sensors, at different rates: 100, 40, about 14 and about 8 readings per second; every
/// fourth vibration reading is an alarm.
pub const SENSORS: [Sensor; SENSOR_COUNT] = [
    Sensor { id: 0, name: "accel", period: Duration::from_millis(10), base: 0, swing: 400, alarm_every: 0 },
    Sensor { id: 1, name: "temp", period: Duration::from_millis(25), base: 2150, swing: 40, alarm_every: 0 },
    Sensor {
        id: 2,
        name: "humidity",
        period: Duration::from_millis(70),
        base: 4500,
        swing: 300,
        alarm_every: 0,
    },
    Sensor {
        id: 3,
        name: "vibration",
        period: Duration::from_millis(130),
        base: 100,
        swing: 50,
        alarm_every: 4,
    },
];

const _: () = {
    let mut i = 0;
    while i < SENSOR_COUNT {
        assert!(SENSORS[i].id as usize == i, "a sensor's id is its index in SENSORS");
        assert!(SENSORS[i].period.as_ticks() > 0, "a sensor's period is not zero");
        i += 1;
    }
};

/// One step of Marsaglia's xorshift32 (never maps a non-zero state to zero).
pub(crate) const fn xorshift32(mut x: u32) -> u32 {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    x
}

impl Sensor {
    /// The simulated value of reading `seq`: a triangle wave of period 64 readings around
    /// `base`, plus a little noise; an alarm reading is a spike of four swings.
    pub const fn sample(&self, seq: u32) -> i16 {
        let phase = (seq % 64).cast_signed();
        let triangle = if phase < 32 { phase } else { 64 - phase } - 16; // -16 ..= 16
        let seed = (seq.wrapping_mul(0x9E37_79B9) ^ ((self.id as u32) << 24)) | 1;
        let noise = (xorshift32(seed) % 7).cast_signed() - 3;
        let swing = self.swing as i32;
        let mut value = self.base as i32 + triangle * swing / 16 + noise;
        if self.is_alarm(seq) {
            value += 4 * swing;
        }
        if value > i16::MAX as i32 {
            value = i16::MAX as i32;
        } else if value < i16::MIN as i32 {
            value = i16::MIN as i32;
        }
        value as i16
    }

    /// Whether reading `seq` is an alarm (see [`alarm_every`](Self::alarm_every)).
    pub const fn is_alarm(&self, seq: u32) -> bool {
        self.alarm_every != 0 && seq % self.alarm_every == self.alarm_every - 1
    }

    /// How many readings the sensor takes in `run_for`: one at the end of each full period.
    pub const fn readings_in(&self, run_for: Duration) -> u32 {
        (run_for.as_ticks() / self.period.as_ticks()) as u32
    }
}
