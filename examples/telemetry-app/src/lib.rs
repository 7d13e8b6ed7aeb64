//! The telemetry application that every firmware example runs, on any chip embassy supports.
//!
//! Sensor loops ([`sense`]) sample at different rates and feed one [`Readings`] batcher with
//! `add().await` (alarms with `add_urgent`); an [`Uplink`] handler, driven by the batcher's
//! runner ([`run_uplink`]), sends batches over a simulated link that the far end refuses on a
//! fixed pseudo-random schedule (about 30% of attempts, with at least one batch refused on every
//! attempt: a dead letter); a supervisor ([`supervise`]) takes the link down for a while
//! (pausing the batcher), brings it back, waits for the sensors to finish, shuts the batcher
//! down and runs the [self-check](check()) against an independent [`Ledger`].
//!
//! Everything is static: put one [`Telemetry`] in a `static`, and wrap the async functions in
//! the firmware's own `#[embassy_executor::task]`s (tasks cannot be generic, so they live in each
//! firmware):
//!
//! ```ignore
//! static APP: Telemetry = Telemetry::new();
//!
//! #[embassy_executor::task(pool_size = telemetry_app::SENSOR_COUNT)]
//! async fn sensor(sensor: &'static Sensor) {
//!     telemetry_app::sense(&APP, sensor, &PLAN).await;
//! }
//! #[embassy_executor::task]
//! async fn uplink() {
//!     telemetry_app::run_uplink(&APP).await;
//! }
//! #[embassy_executor::task]
//! async fn supervisor() {
//!     let report = telemetry_app::supervise(&APP, &PLAN).await;
//!     report.log();
//!     if report.passed() { /* ... */ }
//! }
//! ```
//!
//! Memory: the batcher holds [`CAPACITY`] readings of 12 bytes, the runner one batch buffer of
//! the same size (the store run's store runner a second one, for spills while it holds a
//! batch), the ledger about 200 bytes; no allocator.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

mod check;
mod ledger;
mod log;
#[cfg(feature = "store")]
pub mod power_cut;
mod reading;
mod uplink;

#[cfg(test)]
mod tests;

use core::cell::{Cell, RefCell};

use batch_embassy::{Batcher, Config, Metrics};
use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::signal::Signal;
use embassy_time::{Duration, Instant, Timer};

pub use batch_embassy;
#[cfg(feature = "store")]
pub use check::check_power_cut;
pub use check::{Counter, Failure, MAX_FAILURES, Report, check};
pub use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
pub use ledger::{Anomaly, Ledger, SensorLedger};
pub use reading::{Reading, SENSOR_COUNT, SENSORS, Sensor};
pub use uplink::{
    DOOMED_BATCH, FAILURE_PERCENT, UPLINK_SEED, Uplink, UplinkError, attempt_refused, doomed, first_doomed,
    refusal_permille,
};

use crate::log::log_info;

/// Readings the batcher buffers at most; a producer waits (backpressure) when it is full.
pub const CAPACITY: usize = 64;

/// Readings per batch at most.
pub const MAX_BATCH: usize = 16;

/// The batcher's settings, the same on every board: batches of up to [`MAX_BATCH`] readings,
/// cut when full or when the oldest reading has waited 100 ms; three attempts per batch, retried
/// after 20 ms then 40 ms (at most 200 ms); one batch in flight, so batches settle in order.
pub const CONFIG: Config = Config::new()
    .max_batch(MAX_BATCH)
    .linger(batch_embassy::millis(100))
    .max_attempts(3)
    .retry_delays(batch_embassy::millis(20), batch_embassy::millis(200))
    .max_in_flight(1);

/// The batcher type: [`CAPACITY`] readings behind a critical-section mutex (sensors may run in
/// interrupt executors too).
pub type Readings = Batcher<CriticalSectionRawMutex, Reading, CAPACITY>;

/// How a run goes, in time since the tasks started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// How long the sensors sample.
    pub run_for: Duration,
    /// When the link goes down.
    pub outage_at: Duration,
    /// How long it stays down (the batcher is paused meanwhile).
    pub outage_for: Duration,
}

/// The run every firmware makes: three seconds of sampling, with the link down for 500 ms from
/// 1.167 s: long enough to fill the buffer, so that producers feel backpressure (in the store
/// run the readings beyond RAM spill to flash instead), and (in the QEMU run) in the middle of a
/// transfer, so that one attempt fails with the link down and its retry waits for the link to
/// come back (the runner holds that batch throughout the outage).
pub const PLAN: Plan = Plan {
    run_for: Duration::from_secs(3),
    outage_at: Duration::from_millis(1167),
    outage_for: Duration::from_millis(500),
};

// Every run cuts at least produced / MAX_BATCH batches: more than the index of the batch the
// uplink's schedule dead-letters, so every run has a dead letter.
const _: () = {
    let mut readings = 0;
    let mut i = 0;
    while i < SENSOR_COUNT {
        readings += SENSORS[i].readings_in(PLAN.run_for) as u64;
        i += 1;
    }
    assert!(readings / MAX_BATCH as u64 > DOOMED_BATCH, "the run is too short to reach a dead letter");
};

/// Everything the application keeps, in one `static`: the batcher, the ledger, and the signal
/// that the sensors are done.
pub struct Telemetry {
    readings: Readings,
    /// The batcher of the boot after the power cut (the store run): a fresh one, as after a
    /// reset.
    #[cfg(feature = "store")]
    after_cut: Readings,
    ledger: Mutex<CriticalSectionRawMutex, RefCell<Ledger>>,
    sensors_done: Signal<CriticalSectionRawMutex, ()>,
    /// When the run started (the first call of [`Telemetry::start`]); kept across a reboot, as a
    /// real-time clock would be.
    start: Mutex<CriticalSectionRawMutex, Cell<Option<Instant>>>,
    /// The first boot's metrics at the power cut (the store run).
    before_cut: Mutex<CriticalSectionRawMutex, Cell<Option<Metrics>>>,
    /// Raised by the simulated flash when the power fails (the store run).
    #[cfg(feature = "store")]
    power_lost: Signal<CriticalSectionRawMutex, ()>,
}

impl core::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Telemetry")
            .field("readings", &self.readings)
            .field("ledger", &self.ledger())
            .finish_non_exhaustive()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// The application's state, with a batcher built from [`CONFIG`].
    pub const fn new() -> Self {
        Self::with_config(CONFIG)
    }

    /// The application's state, with batchers built from `config`.
    pub const fn with_config(config: Config) -> Self {
        Self {
            readings: Batcher::new(config),
            #[cfg(feature = "store")]
            after_cut: Batcher::new(config),
            ledger: Mutex::new(RefCell::new(Ledger::new())),
            sensors_done: Signal::new(),
            start: Mutex::new(Cell::new(None)),
            before_cut: Mutex::new(Cell::new(None)),
            #[cfg(feature = "store")]
            power_lost: Signal::new(),
        }
    }

    /// The batcher of the running boot (to add readings from elsewhere, flush, or read its
    /// metrics).
    pub fn readings(&self) -> &Readings {
        #[cfg(feature = "store")]
        if self.with_ledger(|l| l.store.rebooted) {
            return &self.after_cut;
        }
        &self.readings
    }

    /// When the run started: now, on the first call.
    pub fn start(&self) -> Instant {
        self.start.lock(|start| {
            let at = start.get().unwrap_or_else(Instant::now);
            start.set(Some(at));
            at
        })
    }

    /// Returns while the power is on; never after a power cut (the store run), so that nothing
    /// the first boot's tasks do after the cut counts.
    pub async fn alive(&self) {
        if !self.with_ledger(|l| l.powered()) {
            core::future::pending::<()>().await;
        }
    }

    /// A snapshot of the ledger.
    pub fn ledger(&self) -> Ledger {
        self.with_ledger(|l| *l)
    }

    /// Runs `f` on the ledger inside its lock (never across an `.await`).
    pub(crate) fn with_ledger<R>(&self, f: impl FnOnce(&mut Ledger) -> R) -> R {
        self.ledger.lock(|cell| f(&mut cell.borrow_mut()))
    }

    /// The link goes down: attempts under way fail, and the batcher pauses (no batch starts, no
    /// retry clock runs, readings keep buffering up to capacity, then producers wait).
    pub fn link_down(&self) {
        self.with_ledger(|l| {
            l.link_up = false;
            l.outages += 1;
        });
        self.readings().pause();
    }

    /// The link is back: the batcher resumes and drains the backlog in order.
    pub fn link_up(&self) {
        self.with_ledger(|l| l.link_up = true);
        self.readings().resume();
    }

    /// Waits until every sensor in [`SENSORS`] finished its run.
    pub async fn sensors_done(&self) {
        if !self.with_ledger(|l| l.all_stopped()) {
            self.sensors_done.wait().await;
        }
    }

    /// The [self-check](check()) of the ledger against the batcher's metrics now (after a power
    /// cut: against both boots' metrics).
    pub fn self_check(&self, plan: &Plan) -> Report {
        let after = self.readings().metrics();
        match self.before_cut.lock(Cell::get) {
            #[cfg(feature = "store")]
            Some(before) => check::check_power_cut(&self.ledger(), &before, &after, plan),
            _ => check(&self.ledger(), &after, plan),
        }
    }
}

/// One sensor's loop: takes a reading at the end of every `sensor.period` for `plan.run_for`
/// (catching up when backpressure made it late), pushes it with `add().await` (`add_urgent`
/// for alarms) and records it in the ledger with how long the push waited. Returns when done.
///
/// After a reboot it resumes the schedule at the first reading the ledger has not recorded.
pub async fn sense(app: &Telemetry, sensor: &Sensor, plan: &Plan) {
    let start = app.start();
    let count = sensor.readings_in(plan.run_for);
    let first = app.with_ledger(|l| l.sensors.get(usize::from(sensor.id)).map_or(0, |s| s.produced));
    for seq in first..count {
        Timer::at(start + sensor.period * (seq + 1)).await;
        app.alive().await;
        let reading = Reading {
            sensor: sensor.id,
            value: sensor.sample(seq),
            seq,
            at_ms: Instant::now().as_millis() as u32,
        };
        let urgent = sensor.is_alarm(seq);
        let asked = Instant::now();
        let readings = app.readings();
        let result = if urgent { readings.add_urgent(reading).await } else { readings.add(reading).await };
        let waited = asked.elapsed().as_micros();
        app.with_ledger(|l| l.record_push(sensor.id, seq, urgent, waited, result));
    }
    log_info!("sensor {=str}: {=u32} readings taken", sensor.name, count);
    if app.with_ledger(|l| l.stop(sensor.id)) {
        app.sensors_done.signal(());
    }
}

/// The uplink's loop: runs the batcher's runner with an [`Uplink`] handler until the batcher is
/// shut down and drained. Run it in exactly one task ([`CONFIG`] allows one batch in flight).
pub async fn run_uplink(app: &Telemetry) {
    let mut runner = app.readings().runner(Uplink::new(app));
    runner.run().await;
    log_info!("uplink: batcher drained, runner done");
}

/// The supervisor: takes the link down at `plan.outage_at` for `plan.outage_for`, then flushes
/// the backlog, waits for the sensors to finish, shuts the batcher down (close, then wait until
/// everything is delivered or dead-lettered) and runs the self-check.
///
/// After a reboot it picks the plan up where it is: a batcher that boots during the outage
/// starts paused.
pub async fn supervise(app: &Telemetry, plan: &Plan) -> Report {
    let start = app.start();
    let (down_at, up_at) = (start + plan.outage_at, start + plan.outage_at + plan.outage_for);
    if Instant::now() < down_at {
        Timer::at(down_at).await;
        app.alive().await;
        log_info!(
            "supervisor: link down, pausing the batcher ({=usize} readings buffered)",
            app.readings().len()
        );
        app.link_down();
    } else if !app.with_ledger(|l| l.link_up) {
        log_info!("supervisor: booted during the outage: the batcher starts paused");
        app.readings().pause();
    }
    if !app.with_ledger(|l| l.link_up) {
        Timer::at(up_at).await;
        app.alive().await;
        let backlog = app.readings().len();
        app.link_up();
        log_info!("supervisor: link up, resuming with {=usize} readings buffered", backlog);
        let resumed = Instant::now();
        app.readings().flush().await;
        log_info!("supervisor: backlog flushed in {=u64} ms", resumed.elapsed().as_millis());
    }

    app.sensors_done().await;
    log_info!("supervisor: sensors done, shutting down ({=usize} readings buffered)", app.readings().len());
    app.readings().shutdown().await;
    app.self_check(plan)
}
