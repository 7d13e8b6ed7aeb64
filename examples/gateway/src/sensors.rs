//! Simulated temperature sensors: one tokio task each, producing readings at a fixed rate and
//! handing them to the batcher with `add(..).await` (which waits while the buffer is full), or,
//! with `--store`, with `add_durable(..).await` (which also waits until the reading is on disk).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use batch_tokio::{Batcher, DurableError};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::args::Options;
use crate::rng::SplitMix64;

/// How often a throttled sensor wakes up to emit the readings that became due. Tokio timers
/// have millisecond resolution, so a 2 kHz sensor emits small bursts rather than sleeping 500 µs.
const TICK: Duration = Duration::from_millis(5);
/// How many readings an unthrottled sensor adds between checks of the clock and the stop flag.
const UNTHROTTLED_BURST: u64 = 256;

/// One temperature reading, as a sensor reports it.
///
/// `accepted` stays on the gateway (it is not serialized): it is when the reading was handed to
/// the batcher, so the sink can measure each reading's latency up to delivery. A reading read
/// back from the store (spilled, or kept across a restart) gets it back from its wall-clock
/// `timestamp_ms` (millisecond resolution), so its latency includes its time on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "Stored")]
pub(crate) struct Reading {
    /// Which sensor produced it.
    pub(crate) sensor: u32,
    /// Per-sensor sequence number, 0, 1, 2, ... (with `--store`: from `run x 10^9`).
    pub(crate) seq: u64,
    /// Degrees Celsius.
    pub(crate) temperature: f64,
    /// Wall-clock time of the measurement, milliseconds since the Unix epoch.
    pub(crate) timestamp_ms: u64,
    /// When the reading was handed to the batcher (monotonic clock).
    #[serde(skip)]
    pub(crate) accepted: Instant,
}

/// A [`Reading`] as the store holds it (its serialized fields).
#[derive(Deserialize)]
struct Stored {
    sensor: u32,
    seq: u64,
    temperature: f64,
    timestamp_ms: u64,
}

impl From<Stored> for Reading {
    fn from(s: Stored) -> Self {
        let now = Instant::now();
        let age = Duration::from_millis(unix_ms().saturating_sub(s.timestamp_ms));
        let accepted = now.checked_sub(age).unwrap_or(now);
        Self {
            sensor: s.sensor,
            seq: s.seq,
            temperature: s.temperature,
            timestamp_ms: s.timestamp_ms,
            accepted,
        }
    }
}

impl Reading {
    /// The `i`-th reading of a round-robin over `sensors` sensors, for the unbatched baselines.
    pub(crate) fn synthetic(i: u64, sensors: u32) -> Self {
        let sensors = u64::from(sensors.max(1));
        Self {
            sensor: (i % sensors) as u32,
            seq: i / sensors,
            temperature: 21.5,
            timestamp_ms: unix_ms(),
            accepted: Instant::now(),
        }
    }
}

/// What one sensor did, returned when its task ends.
#[derive(Debug)]
pub(crate) struct SensorReport {
    /// The sensor's id.
    pub(crate) sensor: u32,
    /// Readings it produced: sequence numbers `seq_base..seq_base + produced`.
    pub(crate) produced: u64,
    /// Its first sequence number (0, or `run x 10^9` with `--store`).
    pub(crate) seq_base: u64,
    /// Sequence numbers the batcher refused (it was closed).
    pub(crate) refused: Vec<u64>,
    /// Readings that found the buffer full and waited for room (backpressure).
    pub(crate) waited: u64,
    /// Readings `add_durable` confirmed durable (`--store`).
    pub(crate) confirmed: u64,
}

/// How the sensors hand readings over.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Plan {
    /// The first sequence number of every sensor.
    pub(crate) seq_base: u64,
    /// `add_durable` instead of `add`: each reading waits until it is on disk (or delivered).
    /// The sensors then stop at the end of `--seconds` even if they fell behind their rate.
    pub(crate) durable: bool,
    /// With `durable`: print `durable SENSOR SEQ` on stdout for each confirmed reading.
    pub(crate) print_durable: bool,
}

/// Starts `opts.sensors` sensor tasks. They stop after `opts.duration`, or early when `stop`
/// turns true (Ctrl-C). `produced` counts readings across all sensors, for the progress line.
pub(crate) fn spawn(
    opts: &Options,
    plan: Plan,
    batcher: &Batcher<Reading>,
    produced: &Arc<AtomicU64>,
    stop: &watch::Receiver<bool>,
) -> Vec<JoinHandle<SensorReport>> {
    (0..opts.sensors)
        .map(|id| {
            let sensor = Sensor {
                id,
                plan,
                rate: opts.rate,
                duration: opts.duration,
                total: opts.readings_per_sensor(),
                batcher: batcher.clone(),
                produced: Arc::clone(produced),
                stop: stop.clone(),
                thermometer: Thermometer::new(id, opts.malformed_rate, opts.seed),
            };
            tokio::spawn(sensor.run())
        })
        .collect()
}

/// One simulated sensor.
struct Sensor {
    id: u32,
    plan: Plan,
    rate: u32,
    duration: Duration,
    total: Option<u64>,
    batcher: Batcher<Reading>,
    produced: Arc<AtomicU64>,
    stop: watch::Receiver<bool>,
    thermometer: Thermometer,
}

impl Sensor {
    async fn run(mut self) -> SensorReport {
        let mut report = SensorReport {
            sensor: self.id,
            produced: 0,
            seq_base: self.plan.seq_base,
            refused: Vec::new(),
            waited: 0,
            confirmed: 0,
        };
        let start = Instant::now();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            if *self.stop.borrow() {
                break;
            }
            let elapsed = start.elapsed();
            let due = match self.total {
                // A durable sensor that fell behind does not catch up after the end.
                Some(_) if self.plan.durable && elapsed >= self.duration => break,
                Some(total) if elapsed >= self.duration => total,
                Some(total) => {
                    #[allow(
                        clippy::cast_sign_loss,
                        clippy::cast_precision_loss,
                        reason = "positive and far below 2^52"
                    )]
                    let due = (elapsed.as_secs_f64() * f64::from(self.rate)) as u64;
                    due.min(total)
                }
                None => report.produced + UNTHROTTLED_BURST,
            };
            while report.produced < due {
                self.emit(&mut report).await;
                if self.plan.durable && start.elapsed() >= self.duration {
                    break;
                }
            }
            match self.total {
                Some(total) if report.produced >= total => break,
                Some(_) => {
                    tokio::select! {
                        biased;
                        _ = self.stop.changed() => break,
                        _ = tick.tick() => {}
                    }
                }
                None if start.elapsed() >= self.duration => break,
                None => tokio::task::yield_now().await,
            }
        }
        tracing::debug!(sensor = self.id, produced = report.produced, "sensor stopped");
        report
    }

    /// Measures, stamps and hands one reading to the batcher.
    async fn emit(&mut self, report: &mut SensorReport) {
        let seq = self.plan.seq_base + report.produced;
        let reading = Reading {
            sensor: self.id,
            seq,
            temperature: self.thermometer.read(),
            timestamp_ms: unix_ms(),
            accepted: Instant::now(),
        };
        report.produced += 1;
        self.produced.fetch_add(1, Ordering::Relaxed);
        if self.plan.durable {
            match self.batcher.add_durable(reading).await {
                Ok(()) => {
                    report.confirmed += 1;
                    if self.plan.print_durable {
                        println!("durable {} {seq}", self.id);
                    }
                }
                Err(DurableError::Refused(refused)) => report.refused.push(refused.into_inner().seq),
                // Accepted, then stopped by the drain deadline: in the shutdown's remainder.
                Err(DurableError::Stopped) => {}
            }
            return;
        }
        // Waits while the buffer is full (backpressure); fails only once the batcher is closed.
        // An add that is not done at its first poll found the buffer full: counted as a wait.
        let mut add = std::pin::pin!(self.batcher.add(reading));
        let mut waited = false;
        let added = std::future::poll_fn(|cx| {
            let poll = add.as_mut().poll(cx);
            waited |= poll.is_pending();
            poll
        })
        .await;
        report.waited += u64::from(waited);
        if let Err(refused) = added {
            report.refused.push(refused.into_inner().seq);
        }
    }
}

/// A temperature that drifts slowly around a per-sensor base, with a little noise; a seeded
/// share of the readings are garbled ([`garbled`]).
#[derive(Debug)]
struct Thermometer {
    id: u32,
    rng: SplitMix64,
    drift: f64,
    base: f64,
    /// Readings taken so far (the next one's index).
    reads: u64,
    /// Share of readings garbled, and the seed that picks them.
    garble: (f64, u64),
}

impl Thermometer {
    fn new(id: u32, garble_rate: f64, seed: u64) -> Self {
        Self {
            id,
            rng: SplitMix64::new(0x5EED_0000 + u64::from(id)),
            drift: 0.0,
            base: 19.0 + f64::from(id % 7) * 0.75,
            reads: 0,
            garble: (garble_rate, seed),
        }
    }

    fn read(&mut self) -> f64 {
        self.drift = (self.drift + (self.rng.next_f64() - 0.5) * 0.02).clamp(-3.0, 3.0);
        let noise = (self.rng.next_f64() - 0.5) * 0.1;
        let n = self.reads;
        self.reads += 1;
        if let Some(value) = garbled(self.id, n, self.garble.0, self.garble.1) {
            return value;
        }
        // Two decimals, as a real sensor would report.
        ((self.base + self.drift + noise) * 100.0).round() / 100.0
    }
}

/// What sensor `id` reports instead of its `n`-th reading, if that reading is garbled: a share
/// `rate` of the readings, picked by `seed` (the same ones every run): half of them -127 °C (a
/// DS18B20's answer when its probe is disconnected), half no value at all (NaN, sent as `null`).
/// The collector rejects both.
pub(crate) fn garbled(id: u32, n: u64, rate: f64, seed: u64) -> Option<f64> {
    if rate <= 0.0 {
        return None;
    }
    let mut rng = SplitMix64::new(seed ^ (u64::from(id) << 40) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    (rng.next_f64() < rate).then(|| if rng.next_u64().is_multiple_of(2) { -127.0 } else { f64::NAN })
}

/// The `(sensor, seq)` keys of the garbled readings the sensors produced (sequence numbers
/// from 0: the HTTP mode, the only one that garbles).
pub(crate) fn garbled_keys(reports: &[SensorReport], rate: f64, seed: u64) -> Vec<(u32, u64)> {
    reports
        .iter()
        .flat_map(|r| {
            (0..r.produced)
                .filter(move |&n| garbled(r.sensor, n, rate, seed).is_some())
                .map(move |n| (r.sensor, n))
        })
        .collect()
}

/// Milliseconds since the Unix epoch.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
