//! Embassy firmware for an STM32F411CE board (the WeAct "Black Pill": LED on PC13, active low;
//! button KEY on PA0, to ground).
//!
//! For now: a heartbeat task, an LED task and a button task, logging with defmt over RTT. The
//! shared batching application plugs in here later.
#![no_std]
#![no_main]

use defmt::{info, unwrap};
use defmt_rtt as _;
use embassy_executor::Spawner;
use embassy_stm32::exti::{self, ExtiInput};
use embassy_stm32::gpio::{Level, Output, Pull, Speed};
use embassy_stm32::mode::Async;
use embassy_stm32::{bind_interrupts, interrupt};
use embassy_time::{Duration, Ticker};
use panic_probe as _;

bind_interrupts!(struct Irqs {
    EXTI0 => exti::InterruptHandler<interrupt::typelevel::EXTI0>;
});

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
async fn button(mut key: ExtiInput<'static, Async>) -> ! {
    let mut presses: u32 = 0;
    loop {
        key.wait_for_falling_edge().await;
        presses = presses.wrapping_add(1);
        info!("button pressed ({=u32} so far)", presses);
    }
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let p = embassy_stm32::init(embassy_stm32::Config::default());
    info!("stm32f411 firmware starting");

    let led = Output::new(p.PC13, Level::High, Speed::Low);
    let key = ExtiInput::new(p.PA0, p.EXTI0, Pull::Up, Irqs);

    spawner.spawn(unwrap!(heartbeat(Duration::from_secs(1))));
    spawner.spawn(unwrap!(blink(led, Duration::from_millis(250))));
    spawner.spawn(unwrap!(button(key)));
}
