//! The MQTT mode's payload: one publish carries one batch, in a compact little-endian binary
//! format (28 bytes per reading, about a third of the JSON the HTTP mode posts).
//!
//! ```text
//! offset  size  field
//!      0     1  format version (1)
//!      1     8  batch sequence number (the batcher's; one per batch, only grows)
//!      9     4  attempt (1 for the first publish of a batch, 2 for its first retry, ...)
//!     13     4  number of readings N
//!     17  28*N  readings: sensor u32, seq u64, temperature f64 (IEEE 754 bits), timestamp_ms u64
//! ```
//!
//! The consumer's dedup key is `(sensor, seq)`: a batch published again after a lost PUBACK
//! arrives twice, with the same readings.
//!
//! This module uses the standard library only, so the tests in `tests/` include it by path.

/// The format version this module writes and reads.
pub(crate) const VERSION: u8 = 1;
/// Bytes before the first reading.
pub(crate) const HEADER_LEN: usize = 17;
/// Bytes per reading.
pub(crate) const READING_LEN: usize = 28;

/// One reading as it travels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct WireReading {
    /// Which sensor produced it.
    pub(crate) sensor: u32,
    /// Per-sensor sequence number.
    pub(crate) seq: u64,
    /// Degrees Celsius.
    pub(crate) temperature: f64,
    /// Milliseconds since the Unix epoch.
    pub(crate) timestamp_ms: u64,
}

/// What a payload says about its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// The batcher's sequence number for the batch.
    pub(crate) batch_seq: u64,
    /// Which attempt this publish was (1 = first).
    pub(crate) attempt: u32,
}

/// A decoded payload.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decoded {
    /// The batch it carried.
    pub(crate) header: Header,
    /// Its readings, in batch order.
    pub(crate) readings: Vec<WireReading>,
}

/// Why a payload could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WireError {
    /// Shorter than the header.
    TooShort(usize),
    /// A format version this code does not know.
    Version(u8),
    /// The length does not match the reading count in the header.
    Length {
        /// Readings the header announces.
        count: u32,
        /// Bytes the payload has.
        bytes: usize,
    },
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::TooShort(n) => {
                write!(f, "payload of {n} bytes is shorter than the {HEADER_LEN}-byte header")
            }
            Self::Version(v) => write!(f, "unknown payload version {v} (expected {VERSION})"),
            Self::Length { count, bytes } => write!(
                f,
                "payload of {bytes} bytes does not hold the {count} readings its header announces \
                 ({} bytes expected)",
                HEADER_LEN + count as usize * READING_LEN
            ),
        }
    }
}

impl std::error::Error for WireError {}

/// The payload for one batch.
pub(crate) fn encode(header: Header, readings: impl ExactSizeIterator<Item = WireReading>) -> Vec<u8> {
    let count = u32::try_from(readings.len()).expect("a batch holds fewer than 2^32 readings");
    let mut out = Vec::with_capacity(HEADER_LEN + readings.len() * READING_LEN);
    out.push(VERSION);
    out.extend_from_slice(&header.batch_seq.to_le_bytes());
    out.extend_from_slice(&header.attempt.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    for r in readings {
        out.extend_from_slice(&r.sensor.to_le_bytes());
        out.extend_from_slice(&r.seq.to_le_bytes());
        out.extend_from_slice(&r.temperature.to_bits().to_le_bytes());
        out.extend_from_slice(&r.timestamp_ms.to_le_bytes());
    }
    out
}

/// Reads a payload written by [`encode`].
pub(crate) fn decode(payload: &[u8]) -> Result<Decoded, WireError> {
    if payload.len() < HEADER_LEN {
        return Err(WireError::TooShort(payload.len()));
    }
    if payload[0] != VERSION {
        return Err(WireError::Version(payload[0]));
    }
    let header = Header { batch_seq: u64_at(payload, 1), attempt: u32_at(payload, 9) };
    let count = u32_at(payload, 13);
    let body = &payload[HEADER_LEN..];
    if body.len() != count as usize * READING_LEN {
        return Err(WireError::Length { count, bytes: payload.len() });
    }
    let readings = body
        .chunks_exact(READING_LEN)
        .map(|r| WireReading {
            sensor: u32_at(r, 0),
            seq: u64_at(r, 4),
            temperature: f64::from_bits(u64_at(r, 12)),
            timestamp_ms: u64_at(r, 20),
        })
        .collect();
    Ok(Decoded { header, readings })
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}
