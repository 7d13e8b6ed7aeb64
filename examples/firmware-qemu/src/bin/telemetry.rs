//! Telemetry firmware for QEMU's mps2-an386: the shared [`telemetry_app`] on a Cortex-M4F.
//!
//! Four sensor tasks (every 10, 25, 70 and 130 ms) feed one `batch-embassy` batcher for three
//! seconds of virtual time; one uplink task runs the batcher's runner with the simulated
//! [`Uplink`](telemetry_app::Uplink) (about 30% of attempts refused, one batch refused on every
//! attempt); a supervisor takes the link down for 500 ms (pausing the batcher), brings it back,
//! waits for the sensors, shuts the batcher down, runs the self-check, logs a summary and exits
//! 0 when the check passed, 1 when it failed.
//!
//! Build with the `broken` feature to add a buggy producer that replays an old reading: the
//! self-check must catch the duplicate (and the accepted count above the produced one) and the
//! firmware exits 1.
//!
//! Build with the `store` feature (as `cargo xtask qemu` does) for the store run
//! ([`telemetry_app::power_cut`]): write-ahead on a simulated NOR flash, a power cut at a moment
//! drawn from [`POWER_CUT_SEED`], and a second boot from the flash through the same code path;
//! the self-check then finds every reading delivered at least once, or lost in RAM at the cut
//! (never acknowledged by the store).
#![no_std]
#![no_main]

use defmt::{error, info, unwrap};
use embassy_executor::Spawner;
use firmware_qemu::rt::{self, entry};
#[cfg(not(feature = "store"))]
use telemetry_app::Sensor;
use telemetry_app::{PLAN, SENSORS, Telemetry};

/// The application: the batcher, the ledger and the sensors' done signal.
#[cfg(not(feature = "store"))]
static APP: Telemetry = Telemetry::new();
/// The application, with store and forward.
#[cfg(feature = "store")]
static APP: Telemetry = Telemetry::with_store();

/// The seed of the power cut's moment (the store run).
#[cfg(feature = "store")]
pub const POWER_CUT_SEED: u32 = 0x0C07_5EED;

/// The store run: both boots, then the verdict.
#[cfg(feature = "store")]
#[embassy_executor::task]
async fn power_cut() {
    let report = telemetry_app::power_cut::run(&APP, &PLAN, POWER_CUT_SEED, cfg!(feature = "broken")).await;
    verdict(&report);
}

/// Logs the report and exits with the verdict.
fn verdict(report: &telemetry_app::Report) -> ! {
    report.log();
    if report.passed() {
        info!("self-check passed");
        rt::exit_success()
    } else {
        error!("self-check FAILED");
        rt::exit_failure()
    }
}

/// One sensor's sampling loop (embassy tasks cannot be generic: this wraps the shared one).
#[cfg(not(feature = "store"))]
#[embassy_executor::task(pool_size = telemetry_app::SENSOR_COUNT)]
async fn sensor(sensor: &'static Sensor) {
    telemetry_app::sense(&APP, sensor, &PLAN).await;
}

/// The uplink: the batcher's runner with the simulated uplink handler; returns once drained.
#[cfg(not(feature = "store"))]
#[embassy_executor::task]
async fn uplink() {
    telemetry_app::run_uplink(&APP).await;
}

/// Link outage, shutdown and self-check; sets QEMU's exit status.
#[cfg(not(feature = "store"))]
#[embassy_executor::task]
async fn supervisor() {
    let report = telemetry_app::supervise(&APP, &PLAN).await;
    verdict(&report);
}

/// A producer bug for the `broken` build: sends reading 3 of the first sensor a second time.
#[cfg(all(feature = "broken", not(feature = "store")))]
#[embassy_executor::task]
async fn replay() {
    use telemetry_app::Reading;
    embassy_time::Timer::after_millis(1000).await;
    let sensor = &SENSORS[0];
    let old = Reading { sensor: sensor.id, value: sensor.sample(3), seq: 3, at_ms: 30 };
    defmt::warn!("broken build: replaying reading 3 of sensor {=str}", sensor.name);
    unwrap!(APP.readings().add(old).await);
}

/// The reset entry point.
#[entry]
fn main() -> ! {
    rt::init();
    info!(
        "telemetry firmware starting: {=usize} sensors, batches of up to {=usize}, buffer of {=usize} readings",
        SENSORS.len(),
        telemetry_app::MAX_BATCH,
        telemetry_app::CAPACITY
    );
    rt::start(|spawner: Spawner| {
        #[cfg(feature = "store")]
        spawner.spawn(unwrap!(power_cut()));
        #[cfg(not(feature = "store"))]
        {
            for s in &SENSORS {
                spawner.spawn(unwrap!(sensor(s)));
            }
            spawner.spawn(unwrap!(uplink()));
            spawner.spawn(unwrap!(supervisor()));
            #[cfg(feature = "broken")]
            spawner.spawn(unwrap!(replay()));
        }
    })
}
