//! Embassy firmware for an ESP32-C3 board (e.g. ESP32-C3 "Super Mini": LED on GPIO8, active low;
//! BOOT button on GPIO9, to ground).
//!
//! For now: a heartbeat task, an LED task and a button task, logging with defmt through
//! esp-println (decoded by `espflash monitor --log-format defmt`). The shared batching application
//! plugs in here later.
#![no_std]
#![no_main]

use defmt::{info, unwrap};
use embassy_executor::Spawner;
use embassy_time::{Duration, Ticker};
use esp_backtrace as _;
use esp_hal::gpio::{Input, InputConfig, Level, Output, OutputConfig, Pull};
use esp_hal::timer::timg::TimerGroup;
use esp_println as _;

// The application descriptor that the ESP-IDF second-stage bootloader requires.
esp_bootloader_esp_idf::esp_app_desc!();

/// Logs a heartbeat with a counter every `period`.
#[embassy_executor::task]
async fn heartbeat(period: Duration) -> ! {
    let mut ticker = Ticker::every(period);
    let mut beats: u32 = 0;
    loop {
        ticker.next().await;
        beats = beats.wrapping_add(1);
        info!("heartbeat #{=u32}", beats);
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

/// Logs each press of the button.
#[embassy_executor::task]
async fn button(mut key: Input<'static>) -> ! {
    let mut presses: u32 = 0;
    loop {
        key.wait_for_falling_edge().await;
        presses = presses.wrapping_add(1);
        info!("button pressed ({=u32} so far)", presses);
    }
}

#[esp_rtos::main]
async fn main(spawner: Spawner) {
    let p = esp_hal::init(esp_hal::Config::default());
    // esp-rtos runs the embassy executor and provides the time driver, on TIMG0's timer 0.
    let timg0 = TimerGroup::new(p.TIMG0);
    esp_rtos::start(timg0.timer0, p.FROM_CPU_INTR0);
    info!("esp32c3 firmware starting");

    let led = Output::new(p.GPIO8, Level::High, OutputConfig::default());
    let key = Input::new(p.GPIO9, InputConfig::default().with_pull(Pull::Up));

    spawner.spawn(unwrap!(heartbeat(Duration::from_secs(1))));
    spawner.spawn(unwrap!(blink(led, Duration::from_millis(250))));
    spawner.spawn(unwrap!(button(key)));
}
