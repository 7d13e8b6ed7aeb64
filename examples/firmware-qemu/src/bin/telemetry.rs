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
#![no_std]
#![no_main]

use defmt::{error, info, unwrap};
use embassy_executor::Spawner;
use firmware_qemu::rt::{self, entry};
use telemetry_app::{PLAN, SENSORS, Sensor, Telemetry};

/// The application: the batcher, the ledger and the sensors' done signal.
static APP: Telemetry = Telemetry::new();

/// One sensor's sampling loop (embassy tasks cannot be generic: this wraps the shared one).
#[embassy_executor::task(pool_size = telemetry_app::SENSOR_COUNT)]
async fn sensor(sensor: &'static Sensor) {
    telemetry_app::sense(&APP, sensor, &PLAN).await;
}

/// The uplink: the batcher's runner with the simulated uplink handler; returns once drained.
#[embassy_executor::task]
async fn uplink() {
    telemetry_app::run_uplink(&APP).await;
}

/// Link outage, shutdown and self-check; sets QEMU's exit status.
#[embassy_executor::task]
async fn supervisor() {
    let report = telemetry_app::supervise(&APP, &PLAN).await;
    report.log();
    if report.passed() {
        info!("self-check passed");
        rt::exit_success()
    } else {
        error!("self-check FAILED");
        rt::exit_failure()
    }
}

/// A producer bug for the `broken` build: sends reading 3 of the first sensor a second time.
#[cfg(feature = "broken")]
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
        for s in &SENSORS {
            spawner.spawn(unwrap!(sensor(s)));
        }
        spawner.spawn(unwrap!(uplink()));
        spawner.spawn(unwrap!(supervisor()));
        #[cfg(feature = "broken")]
        spawner.spawn(unwrap!(replay()));
    })
}
