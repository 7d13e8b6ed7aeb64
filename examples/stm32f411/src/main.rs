//! Embassy firmware for an STM32F411CE board (the WeAct "Black Pill": LED on PC13, active low;
//! button KEY on PA0, to ground), running the shared [`telemetry_app`].
//!
//! The same application as the QEMU firmware, with the same batcher configuration: four sensor
//! tasks feed one `batch-embassy` batcher, an uplink task runs its runner with the simulated
//! uplink, and a supervisor takes the link down for 500 ms, shuts the batcher down after three
//! seconds and logs the self-check over RTT. Board glue: the LED blinks while the firmware runs,
//! and the button flushes the batcher (a manual flush) while it is open.
#![no_std]
#![no_main]

use defmt::{error, info, unwrap};
use defmt_rtt as _;
use embassy_executor::Spawner;
use embassy_stm32::exti::{self, ExtiInput};
use embassy_stm32::gpio::{Level, Output, Pull, Speed};
use embassy_stm32::mode::Async;
use embassy_stm32::{bind_interrupts, interrupt};
use embassy_time::{Duration, Instant, Ticker};
use panic_probe as _;
use telemetry_app::{PLAN, SENSORS, Sensor, Telemetry};

bind_interrupts!(struct Irqs {
    EXTI0 => exti::InterruptHandler<interrupt::typelevel::EXTI0>;
});

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

/// Link outage, shutdown and self-check, logged over RTT.
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
async fn button(mut key: ExtiInput<'static, Async>) -> ! {
    loop {
        key.wait_for_falling_edge().await;
        let pressed = Instant::now();
        APP.readings().flush().await;
        info!("button: flushed in {=u64} ms", pressed.elapsed().as_millis());
    }
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let p = embassy_stm32::init(embassy_stm32::Config::default());
    info!("stm32f411 telemetry firmware starting");

    let led = Output::new(p.PC13, Level::High, Speed::Low);
    let key = ExtiInput::new(p.PA0, p.EXTI0, Pull::Up, Irqs);

    for s in &SENSORS {
        spawner.spawn(unwrap!(sensor(s)));
    }
    spawner.spawn(unwrap!(uplink()));
    spawner.spawn(unwrap!(supervisor()));
    spawner.spawn(unwrap!(blink(led, Duration::from_millis(250))));
    spawner.spawn(unwrap!(button(key)));
}
