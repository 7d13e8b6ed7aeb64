//! Telemetry firmware for QEMU's mps2-an386: sensor tasks sample at different rates, and after two
//! seconds of virtual time a self-check verifies what happened and sets QEMU's exit status.
//!
//! Build with the `broken` feature to see the self-check fail (exit status 1).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m_rt::entry;
use defmt::{error, info, unwrap};
use embassy_executor::Spawner;
use embassy_time::{Duration, Instant, Timer};
use firmware_qemu::rt;

/// How long the firmware runs before the self-check.
const RUN_FOR: Duration = Duration::from_secs(2);
/// How late a sample may be: alarms fire on the next 1 ms SysTick boundary, and QEMU without
/// `-icount` adds host scheduling noise.
const MAX_LATENESS: Duration = Duration::from_millis(2);

/// A sensor sampled periodically by one [`sensor`] task.
struct Sensor {
    name: &'static str,
    period: Duration,
    samples: AtomicU32,
}

impl Sensor {
    const fn new(name: &'static str, period_ms: u64) -> Self {
        Self { name, period: Duration::from_millis(period_ms), samples: AtomicU32::new(0) }
    }
}

static SENSORS: [Sensor; 3] =
    [Sensor::new("fast", 100), Sensor::new("medium", 250), Sensor::new("slow", 500)];

/// The worst lateness of any sample, in microseconds.
static WORST_LATENESS_US: AtomicU32 = AtomicU32::new(0);
// (ARMv7-M has no 64-bit atomics.)

#[embassy_executor::task(pool_size = 3)]
async fn sensor(sensor: &'static Sensor) -> ! {
    let start = Instant::now();
    let mut reading: u32 = 17;
    for n in 1.. {
        let due = start + sensor.period * n;
        Timer::at(due).await;
        let late = Instant::now() - due;
        WORST_LATENESS_US.fetch_max(late.as_micros() as u32, Ordering::Relaxed);
        // A stand-in for a measurement; the batching pipeline will consume these.
        reading = reading.wrapping_mul(1_103_515_245).wrapping_add(12_345) >> 8;
        sensor.samples.fetch_add(1, Ordering::Relaxed);
        info!(
            "{=str} #{=u32}: reading {=u32} ({=u64} us late)",
            sensor.name,
            n,
            reading % 1000,
            late.as_micros()
        );
    }
    unreachable!()
}

/// Reads the clock many times across SysTick interrupts; counts how often it went backwards.
fn clock_regressions(reads: u32) -> u32 {
    let mut last = Instant::now();
    let mut backwards = 0;
    for _ in 0..reads {
        let now = Instant::now();
        if now < last {
            backwards += 1;
        }
        last = now;
    }
    backwards
}

#[embassy_executor::task]
async fn supervisor() {
    let backwards = clock_regressions(20_000);
    Timer::at(Instant::MIN + RUN_FOR).await;

    let elapsed = Instant::now().as_micros();
    let worst = WORST_LATENESS_US.load(Ordering::Relaxed);
    let mut ok =
        backwards == 0 && elapsed >= RUN_FOR.as_micros() && u64::from(worst) <= MAX_LATENESS.as_micros();
    for s in &SENSORS {
        let mut expected = (RUN_FOR.as_ticks() / s.period.as_ticks()) as u32;
        if cfg!(feature = "broken") {
            // Deliberately wrong: expect the samples of a sensor twice as fast.
            expected *= 2;
        }
        let samples = s.samples.load(Ordering::Relaxed);
        // The last sample is due exactly when the check runs, so it may not have happened yet.
        let sensor_ok = samples == expected || samples + 1 == expected;
        if !sensor_ok {
            error!("{=str}: {=u32} samples, expected {=u32}", s.name, samples, expected);
        }
        ok &= sensor_ok;
    }

    if ok {
        info!(
            "self-check passed: {=u32}/{=u32}/{=u32} samples, worst lateness {=u32} us, clock never went backwards, at {=u64} us",
            SENSORS[0].samples.load(Ordering::Relaxed),
            SENSORS[1].samples.load(Ordering::Relaxed),
            SENSORS[2].samples.load(Ordering::Relaxed),
            worst,
            elapsed
        );
        rt::exit_success()
    } else {
        error!(
            "self-check FAILED: clock went backwards {=u32} times, worst lateness {=u32} us, at {=u64} us",
            backwards, worst, elapsed
        );
        rt::exit_failure()
    }
}

#[entry]
fn main() -> ! {
    let peripherals = unwrap!(cortex_m::Peripherals::take());
    rt::init(peripherals.SYST);
    info!("telemetry firmware starting");
    rt::start(|spawner: Spawner| {
        for s in &SENSORS {
            spawner.spawn(unwrap!(sensor(s)));
        }
        spawner.spawn(unwrap!(supervisor()));
    })
}
