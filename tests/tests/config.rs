//! Invalid configuration: `build` returns a `BuildError` naming the setting at fault, never a
//! panic and never a worker.
#![allow(missing_docs)]
#![allow(clippy::trivially_copy_pass_by_ref, reason = "weighers have the signature `fn(&T) -> u32`")]

use batch_tests::{Log, ms};
use batch_tokio::{Batcher, BuildError, Builder, ConfigError};

fn builder() -> Builder<u32> {
    Batcher::builder()
}

fn refused(b: Builder<u32>) -> ConfigError {
    match b.build(Log::new().handler()).unwrap_err() {
        BuildError::Config(e) => e,
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[track_caller]
fn names(err: ConfigError, field: &str) {
    assert_eq!(err.field(), field);
    let message = BuildError::Config(err).to_string();
    assert!(message.contains(field), "{message:?} does not name {field}");
}

#[tokio::test(start_paused = true)]
async fn zero_capacity_names_capacity() {
    let err = refused(builder().capacity(0));
    assert_eq!(err, ConfigError::ZeroCapacity);
    names(err, "capacity");
}

#[tokio::test(start_paused = true)]
async fn zero_or_oversized_max_batch_names_max_batch() {
    let err = refused(builder().max_batch(0));
    assert_eq!(err, ConfigError::ZeroMaxBatch);
    names(err, "max_batch");
    let err = refused(builder().capacity(8).max_batch(9));
    assert_eq!(err, ConfigError::MaxBatchAboveCapacity { max_batch: 9, capacity: 8 });
    names(err, "max_batch");
}

#[tokio::test(start_paused = true)]
async fn zero_max_in_flight_names_max_in_flight() {
    let err = refused(builder().max_in_flight(0));
    assert_eq!(err, ConfigError::ZeroMaxInFlight);
    names(err, "max_in_flight");
}

#[tokio::test(start_paused = true)]
async fn zero_max_attempts_names_max_attempts() {
    let err = refused(builder().max_attempts(0));
    assert_eq!(err, ConfigError::ZeroMaxAttempts);
    names(err, "max_attempts");
}

#[tokio::test(start_paused = true)]
async fn a_base_delay_above_the_cap_names_base_delay() {
    let err = refused(builder().retry_delays(ms(500), ms(100)));
    assert!(matches!(err, ConfigError::BaseDelayAboveMaxDelay { .. }), "{err:?}");
    names(err, "base_delay");
}

#[tokio::test(start_paused = true)]
async fn jitter_above_1000_permille_names_jitter() {
    let err = refused(builder().jitter(1001, 7));
    assert_eq!(err, ConfigError::JitterAboveOne { permille: 1001 });
    names(err, "jitter");
}

#[tokio::test(start_paused = true)]
async fn zero_max_weight_names_max_weight() {
    fn weigh(_: &u32) -> u32 {
        1
    }
    let err = refused(builder().max_weight(0, weigh));
    assert_eq!(err, ConfigError::ZeroMaxWeight);
    names(err, "max_weight");
}

#[tokio::test(start_paused = true)]
async fn valid_edge_values_are_accepted() {
    fn weigh(_: &u32) -> u32 {
        1
    }
    let log = Log::new();
    let b = builder()
        .capacity(1)
        .max_batch(1)
        .max_in_flight(4)
        .max_attempts(1)
        .retry_delays(ms(0), ms(0))
        .jitter(1000, 0)
        .max_weight(1, weigh)
        .linger(ms(0))
        .attempt_timeout(ms(1))
        .spawn(log.handler())
        .unwrap();
    b.add(1).await.unwrap();
    b.shutdown().await;
    assert_eq!(log.delivered(), vec![1]);
}

#[tokio::test(start_paused = true)]
async fn the_builder_debug_shows_the_settings() {
    let text = format!("{:?}", builder().capacity(77).max_batch(7));
    assert!(text.contains("77"), "{text}");
}
