//! Embassy firmware for an ESP32-C3 board (e.g. ESP32-C3 "Super Mini": LED on GPIO8, active low;
//! BOOT button on GPIO9, to ground), running the shared [`telemetry_app`].
//!
//! The same application as the QEMU firmware, with the same batcher configuration: four sensor
//! tasks feed one `batch-embassy` batcher, an uplink task runs its runner with the simulated
//! uplink, and a supervisor takes the link down for 500 ms, shuts the batcher down after three
//! seconds and logs the self-check through esp-println (decoded by `espflash monitor
//! --log-format defmt`). Board glue: the LED blinks while the firmware runs, and the BOOT button
//! flushes the batcher (a manual flush) while it is open.
#![no_std]
#![no_main]

use defmt::{error, info, unwrap};
use embassy_executor::Spawner;
use embassy_time::{Duration, Instant, Ticker};
use esp_backtrace as _;
use esp_hal::gpio::{Input, InputConfig, Level, Output, OutputConfig, Pull};
use esp_hal::timer::timg::TimerGroup;
use esp_println as _;
use telemetry_app::{PLAN, SENSORS, Sensor, Telemetry};

// The application descriptor that the ESP-IDF second-stage bootloader requires.
esp_bootloader_esp_idf::esp_app_desc!();

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

/// Link outage, shutdown and self-check, logged on the console.
#[embassy_executor::task]
async fn supervisor() {
    let report = telemetry_app::supervise(&APP, &PLAN).await;
    report.log();
    if report.passed() {
        info!("self-check passed");
    } else {
        error!("self-check FAILED");
    }
}

/// Toggles the LED every `period`.
#[embassy_executor::task]
async fn blink(mut led: Output<'static>, period: Duration) -> ! {
    let mut ticker = Ticker::every(period);
    loop {
        ticker.next().await;
        led.toggle();
    }
}

/// Flushes the batcher on each press of the button, and logs how long the flush took.
#[embassy_executor::task]
async fn button(mut key: Input<'static>) -> ! {
    loop {
        key.wait_for_falling_edge().await;
        let pressed = Instant::now();
        APP.readings().flush().await;
        info!("button: flushed in {=u64} ms", pressed.elapsed().as_millis());
    }
}

#[esp_rtos::main]
async fn main(spawner: Spawner) {
    let p = esp_hal::init(esp_hal::Config::default());
    // esp-rtos runs the embassy executor and provides the time driver, on TIMG0's timer 0.
    let timg0 = TimerGroup::new(p.TIMG0);
    esp_rtos::start(timg0.timer0, p.FROM_CPU_INTR0);
    info!("esp32c3 telemetry firmware starting");

    let led = Output::new(p.GPIO8, Level::High, OutputConfig::default());
    let key = Input::new(p.GPIO9, InputConfig::default().with_pull(Pull::Up));

    for s in &SENSORS {
        spawner.spawn(unwrap!(sensor(s)));
    }
    spawner.spawn(unwrap!(uplink()));
    spawner.spawn(unwrap!(supervisor()));
    spawner.spawn(unwrap!(blink(led, Duration::from_millis(250))));
    spawner.spawn(unwrap!(button(key)));
}
