//! The store record format against bad bytes: every record round-trips, and every corruption a
//! store can meet (a bit flipped, a write torn at any byte, bytes appended, another item type or
//! format version, random garbage) is refused with an error, never a panic, never an item that
//! was not written, and never a partly filled buffer.
#![cfg(feature = "store")]
#![allow(missing_docs)]

use batch_core::store::StoredBatch;
use batch_core::store::record::{Codec, Corrupt, FORMAT_VERSION, HEADER_LEN, TRAILER_LEN};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Reading {
    sensor: u8,
    seq: u32,
    value: i32,
    label: [u8; 3],
    ok: bool,
}

const CODEC: Codec = Codec::new(0xB0A7_0001);

fn reading() -> impl Strategy<Value = Reading> {
    (any::<u8>(), any::<u32>(), any::<i32>(), any::<[u8; 3]>(), any::<bool>())
        .prop_map(|(sensor, seq, value, label, ok)| Reading { sensor, seq, value, label, ok })
}

/// A batch whose birth is derived from its seq (so the round trip checks both).
fn batch(seq: u64) -> StoredBatch {
    StoredBatch { seq, born_ms: seq.rotate_left(17) ^ 0x5A5A }
}

fn encode(seq: u64, items: &[Reading]) -> Vec<u8> {
    let mut buf = vec![0u8; 64 + items.len() * 32];
    CODEC.encode(batch(seq), items, &mut buf).unwrap().to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn records_round_trip(seq in any::<u64>(), items in prop::collection::vec(reading(), 0..20)) {
        let bytes = encode(seq, &items);
        let mut out: heapless::Vec<Reading, 32> = heapless::Vec::new();
        prop_assert_eq!(CODEC.decode(&bytes, &mut out), Ok(batch(seq)));
        prop_assert_eq!(&out[..], &items[..]);
        prop_assert_eq!(CODEC.peek(&bytes), Ok((seq, items.len() as u32)));
    }

    #[test]
    fn a_flipped_bit_anywhere_is_refused(
        items in prop::collection::vec(reading(), 1..10),
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let mut bytes = encode(3, &items);
        let i = at.index(bytes.len());
        bytes[i] ^= 1 << bit;
        let mut out: heapless::Vec<Reading, 32> = heapless::Vec::new();
        prop_assert!(CODEC.decode(&bytes, &mut out).is_err());
        prop_assert!(out.is_empty(), "nothing decoded from a bad record");
    }

    #[test]
    fn a_write_torn_at_any_byte_is_refused(items in prop::collection::vec(reading(), 1..10), at in any::<prop::sample::Index>()) {
        let bytes = encode(9, &items);
        let cut = at.index(bytes.len()); // 0..len-1: always shorter than the record
        let mut out: heapless::Vec<Reading, 32> = heapless::Vec::new();
        prop_assert!(CODEC.decode(&bytes[..cut], &mut out).is_err());
        prop_assert!(out.is_empty());
    }

    #[test]
    fn bytes_appended_are_refused(items in prop::collection::vec(reading(), 0..10), extra in prop::collection::vec(any::<u8>(), 1..16)) {
        let mut bytes = encode(1, &items);
        bytes.extend_from_slice(&extra);
        let mut out: heapless::Vec<Reading, 32> = heapless::Vec::new();
        prop_assert_eq!(CODEC.decode(&bytes, &mut out), Err(Corrupt::TrailingBytes));
    }

    #[test]
    fn garbage_never_panics_nor_decodes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let mut out: heapless::Vec<Reading, 32> = heapless::Vec::new();
        prop_assert!(CODEC.decode(&bytes, &mut out).is_err());
        prop_assert!(out.is_empty());
    }

    /// Garbage behind a valid header (the magic, version and tag right): refused by the checksum
    /// or the length, never decoded.
    #[test]
    fn garbage_behind_a_valid_header_is_refused(seq in any::<u64>(), tail in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut bytes = encode(seq, &[]);
        bytes.truncate(HEADER_LEN);
        bytes.extend_from_slice(&tail);
        let mut out: heapless::Vec<Reading, 32> = heapless::Vec::new();
        prop_assert!(CODEC.decode(&bytes, &mut out).is_err());
        prop_assert!(out.is_empty());
    }
}

#[test]
fn another_item_type_or_format_version_is_named() {
    let bytes = encode(5, &[Reading { sensor: 1, seq: 2, value: 3, label: [0; 3], ok: true }]);
    let mut out: heapless::Vec<Reading, 4> = heapless::Vec::new();
    let other = Codec::new(0xB0A7_0002);
    assert_eq!(
        other.decode(&bytes, &mut out),
        Err(Corrupt::TypeTag { expected: 0xB0A7_0002, found: 0xB0A7_0001 })
    );
    let mut newer = bytes.clone();
    newer[4] = FORMAT_VERSION + 1;
    assert_eq!(CODEC.decode(&newer, &mut out), Err(Corrupt::Version { found: FORMAT_VERSION + 1 }));
    let erased = vec![0xFF; bytes.len()]; // erased NOR flash
    assert_eq!(CODEC.decode(&erased, &mut out), Err(Corrupt::BadMagic));
    assert!(Corrupt::TypeTag { expected: 1, found: 2 }.to_string().contains("item type"));
    assert!(out.is_empty());
}

#[test]
fn a_record_with_more_items_than_room_is_refused_whole() {
    let items: Vec<Reading> =
        (0..5).map(|i| Reading { sensor: i, seq: 0, value: 0, label: [0; 3], ok: true }).collect();
    let bytes = encode(0, &items);
    let mut out: heapless::Vec<Reading, 4> = heapless::Vec::new();
    assert_eq!(CODEC.decode(&bytes, &mut out), Err(Corrupt::TooManyItems { count: 5 }));
    assert!(out.is_empty());
}

#[test]
fn a_buffer_too_small_to_encode_into_is_an_error() {
    let items = [Reading { sensor: 1, seq: 2, value: 3, label: *b"abc", ok: false }];
    let mut small = [0u8; 30];
    assert!(CODEC.encode(batch(0), &items, &mut small).is_err());
}

/// CRC-32 (ISO-HDLC), bit by bit, independent of the crate's implementation.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[test]
fn a_record_of_format_version_1_is_still_read_with_its_birth_unknown() {
    let items = [Reading { sensor: 4, seq: 5, value: -6, label: *b"abc", ok: false }];
    let v2 = encode(77, &items);
    // Version 1 is version 2 without the 8-byte birth after the seq.
    let mut v1 = [&v2[..17], &v2[25..v2.len() - TRAILER_LEN]].concat();
    v1[4] = 1;
    let crc = crc32(&v1);
    v1.extend_from_slice(&crc.to_le_bytes());
    let mut out: heapless::Vec<Reading, 4> = heapless::Vec::new();
    let read = CODEC.decode(&v1, &mut out);
    assert_eq!(read, Ok(StoredBatch { seq: 77, born_ms: StoredBatch::BORN_UNKNOWN }));
    assert_eq!(&out[..], &items);
    assert_eq!(read.unwrap().age_at(u64::MAX - 1), batch_core::Duration::ZERO, "an unknown birth is no age");
    assert_eq!(CODEC.peek(&v1), Ok((77, 1)));
}
