//! The parts of `--mqtt` that need no broker: the payload format and the subscriber's ledger
//! (dedup by `(sensor, seq)`, order per sensor, missing readings). The end-to-end run against a
//! real Mosquitto is a step of `cargo xtask test`.

#[allow(dead_code)]
#[path = "../src/wire.rs"]
mod wire;

#[allow(dead_code)]
#[path = "../src/arrivals.rs"]
mod arrivals;

use arrivals::{Arrival, Arrivals};
use wire::{Header, WireError, WireReading};

fn reading(sensor: u32, seq: u64) -> WireReading {
    WireReading {
        sensor,
        seq,
        temperature: 19.0 + f64::from(sensor) * 0.75 + f64::from(u32::try_from(seq % 1000).unwrap()) / 100.0,
        timestamp_ms: 1_700_000_000_000 + seq,
    }
}

#[test]
fn payload_round_trip_keeps_every_field_bit_for_bit() {
    let readings = vec![
        reading(0, 0),
        reading(7, 41),
        WireReading { sensor: u32::MAX, seq: u64::MAX, temperature: -0.0, timestamp_ms: u64::MAX },
        WireReading { sensor: 3, seq: 9, temperature: f64::MIN_POSITIVE, timestamp_ms: 0 },
        WireReading { sensor: 4, seq: 10, temperature: 21.37, timestamp_ms: 1 },
    ];
    let header = Header { batch_seq: 123_456_789_012, attempt: 3 };
    let payload = wire::encode(header, readings.iter().copied());
    assert_eq!(payload.len(), wire::HEADER_LEN + readings.len() * wire::READING_LEN);
    assert_eq!(payload[0], wire::VERSION);
    let decoded = wire::decode(&payload).unwrap();
    assert_eq!(decoded.header, header);
    assert_eq!(decoded.readings.len(), readings.len());
    for (got, sent) in decoded.readings.iter().zip(&readings) {
        assert_eq!((got.sensor, got.seq, got.timestamp_ms), (sent.sensor, sent.seq, sent.timestamp_ms));
        assert_eq!(got.temperature.to_bits(), sent.temperature.to_bits());
    }
}

#[test]
fn payload_of_a_full_batch_and_of_an_empty_one() {
    let batch: Vec<WireReading> = (0..500).map(|i| reading(i % 8, u64::from(i / 8))).collect();
    let payload = wire::encode(Header { batch_seq: 1, attempt: 1 }, batch.iter().copied());
    // 500 readings fit well inside one MQTT packet of the size the demo allows (1 MiB).
    assert_eq!(payload.len(), 17 + 500 * 28);
    assert_eq!(wire::decode(&payload).unwrap().readings, batch);

    let empty = wire::encode(Header { batch_seq: 0, attempt: 1 }, std::iter::empty());
    assert_eq!(empty.len(), wire::HEADER_LEN);
    assert!(wire::decode(&empty).unwrap().readings.is_empty());
}

#[test]
fn damaged_payloads_are_refused() {
    let payload =
        wire::encode(Header { batch_seq: 5, attempt: 1 }, [reading(1, 2), reading(1, 3)].into_iter());
    assert_eq!(wire::decode(&payload[..10]), Err(WireError::TooShort(10)));
    assert_eq!(wire::decode(&[]), Err(WireError::TooShort(0)));
    let truncated = &payload[..payload.len() - 1];
    assert!(matches!(wire::decode(truncated), Err(WireError::Length { count: 2, .. })));
    let mut longer = payload.clone();
    longer.push(0);
    assert!(matches!(wire::decode(&longer), Err(WireError::Length { count: 2, .. })));
    let mut other_version = payload;
    other_version[0] = 2;
    assert_eq!(wire::decode(&other_version), Err(WireError::Version(2)));
    // The errors say what is wrong.
    assert!(WireError::Version(2).to_string().contains("version 2"));
}

/// Keys of a batch: `per_sensor` readings for each of `sensors`, round robin, from `first`.
fn batch(sensors: u32, first: u64, per_sensor: u64) -> Vec<(u32, u64)> {
    (first..first + per_sensor).flat_map(|seq| (0..sensors).map(move |s| (s, seq))).collect()
}

#[test]
fn in_order_batches_have_no_duplicates_violations_or_gaps() {
    let mut a = Arrivals::default();
    let mut expected = Vec::new();
    for b in 0..10 {
        let keys = batch(4, b * 5, 5);
        expected.extend(keys.iter().copied());
        a.record_batch(b, keys);
    }
    assert_eq!((a.received(), a.unique(), a.duplicates()), (200, 200, 0));
    assert_eq!((a.publishes(), a.batches(), a.duplicate_batches()), (10, 10, 0));
    assert_eq!(a.order_violations(), 0);
    assert_eq!(a.sensors(), 4);
    assert_eq!(a.missing(&expected), 0);
    assert_eq!(a.keys(), &expected[..]);
}

#[test]
fn a_batch_published_again_after_a_lost_puback_is_deduplicated_not_out_of_order() {
    // Batch 1 reached the subscriber, its PUBACK was lost with the connection, and the
    // batcher published it again after the reconnect, before batch 2 (one batch in flight).
    let mut a = Arrivals::default();
    a.record_batch(0, batch(2, 0, 3));
    a.record_batch(1, batch(2, 3, 3));
    a.record_batch(1, batch(2, 3, 3));
    a.record_batch(2, batch(2, 6, 3));
    // And the broker, restarted, resent a message the subscriber had not acknowledged: an old
    // copy arriving after newer readings is still only a duplicate.
    a.record_batch(0, batch(2, 0, 3));
    assert_eq!(a.unique(), 18);
    assert_eq!(a.duplicates(), 12);
    assert_eq!(a.duplicate_batches(), 2);
    assert_eq!(a.order_violations(), 0);
    assert_eq!(a.missing(&batch(2, 0, 9)), 0);
}

#[test]
fn a_reading_first_seen_after_a_later_one_is_an_order_violation_of_its_sensor_only() {
    let mut a = Arrivals::default();
    assert_eq!(a.record(0, 0), Arrival::New);
    assert_eq!(a.record(0, 2), Arrival::New);
    assert_eq!(a.record(1, 5), Arrival::New);
    assert_eq!(a.record(0, 1), Arrival::OutOfOrder);
    assert_eq!(a.record(0, 1), Arrival::Duplicate);
    assert_eq!(a.record(1, 6), Arrival::New);
    assert_eq!(a.record(0, 3), Arrival::New);
    assert_eq!(a.order_violations(), 1);
    assert_eq!(a.order_violations_by_sensor(), vec![(0, 1)]);
    assert_eq!(a.unique(), 6);
}

#[test]
fn missing_counts_acknowledged_readings_that_never_arrived() {
    let mut a = Arrivals::default();
    a.record_batch(0, batch(3, 0, 4));
    // Batch 1 was acknowledged by the broker but never reached the subscriber.
    a.record_batch(2, batch(3, 8, 4));
    let acknowledged = batch(3, 0, 12);
    assert_eq!(a.missing(&acknowledged), 12);
    assert!(!a.contains(1, 5));
    assert!(a.contains(2, 11));
    // The gap is not an order violation: nothing arrived late, something never arrived.
    assert_eq!(a.order_violations(), 0);
}
