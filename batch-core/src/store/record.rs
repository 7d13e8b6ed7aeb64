//! The on-store record of one batch: a header naming the format, the item type and the batch
//! (its seq and its oldest item's birth on the store clock), the items encoded with postcard,
//! and a CRC-32 over all of it. Records of format version 1 (no birth) are still read, with the
//! birth unknown. Anything that does not decode
//! exactly (another format or item type, a torn or truncated write, flipped bits, garbage) is a
//! [`Corrupt`] error naming what was wrong; decoding never panics and never yields an item that
//! was not written.
//!
//! ```
//! use batch_core::store::StoredBatch;
//! use batch_core::store::record::{Codec, Corrupt};
//!
//! let codec = Codec::new(0x5E45_0001); // the item type's tag: change it when the type changes
//! let mut buf = [0u8; 128];
//! let batch = StoredBatch { seq: 7, born_ms: 1_700_000_000_000 };
//! let bytes = codec.encode(batch, &[21u16, 22, 23], &mut buf).unwrap();
//! let mut items: heapless::Vec<u16, 8> = heapless::Vec::new();
//! assert_eq!(codec.decode(bytes, &mut items), Ok(batch));
//! assert_eq!(&items[..], &[21, 22, 23]);
//!
//! let mut torn = bytes.to_vec();
//! torn.truncate(bytes.len() - 3); // a write cut short by a power failure
//! assert_eq!(codec.decode(&torn, &mut items), Err(Corrupt::Truncated));
//! ```

use crc::{CRC_32_ISO_HDLC, Crc, NoTable};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StoredBatch;
use crate::storage::BatchBuf;

/// The first bytes of every record.
pub const MAGIC: [u8; 4] = *b"BTCH";
/// The record format this crate writes (it also reads version 1, which has no birth).
pub const FORMAT_VERSION: u8 = 2;
/// Bytes before the items: magic, version, type tag, seq, birth, item count, payload length.
pub const HEADER_LEN: usize = 4 + 1 + 4 + 8 + 8 + 4 + 4;
/// The header of format version 1: no birth.
const HEADER_LEN_V1: usize = HEADER_LEN - 8;
/// Bytes after the items: the CRC-32.
pub const TRAILER_LEN: usize = 4;

/// CRC-32 (ISO-HDLC, as zip and Ethernet), computed bitwise: no 1 KiB table in flash.
const CRC: Crc<u32, NoTable> = Crc::<u32, NoTable>::new(&CRC_32_ISO_HDLC);

/// Why bytes read from a store are not a record of this codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Corrupt {
    /// Shorter than its header says (a torn write, a truncated file).
    Truncated,
    /// Not a record of this crate (garbage, or erased flash).
    BadMagic,
    /// Written by another version of the record format.
    Version {
        /// The version found.
        found: u8,
    },
    /// Written for another item type (or another version of it).
    TypeTag {
        /// The tag this codec expects.
        expected: u32,
        /// The tag found.
        found: u32,
    },
    /// The checksum does not match: bits changed after the write.
    Checksum,
    /// The payload does not decode as the number of items the header gives.
    Items,
    /// Bytes after the checksum: the record's length does not match its header.
    TrailingBytes,
    /// More items than the buffer they are decoded into can take.
    TooManyItems {
        /// Items in the record.
        count: u32,
    },
}

impl core::fmt::Display for Corrupt {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Truncated => f.write_str("stored record is truncated"),
            Self::BadMagic => f.write_str("stored bytes are not a batch record"),
            Self::Version { found } => {
                write!(f, "stored record has format version {found}, this build reads 1 to {FORMAT_VERSION}")
            }
            Self::TypeTag { expected, found } => {
                write!(f, "stored record holds item type {found:#010x}, expected {expected:#010x}")
            }
            Self::Checksum => f.write_str("stored record fails its checksum"),
            Self::Items => f.write_str("stored record's items do not decode"),
            Self::TrailingBytes => f.write_str("stored record is longer than its header says"),
            Self::TooManyItems { count } => write!(f, "stored record has {count} items, more than fit"),
        }
    }
}

impl core::error::Error for Corrupt {}

/// Why a batch could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum EncodeError {
    /// The buffer is too small for the record.
    BufferTooSmall,
    /// An item failed to serialize (its `Serialize` implementation returned an error).
    Item,
}

impl core::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BufferTooSmall => f.write_str("record buffer too small for the batch"),
            Self::Item => f.write_str("an item failed to serialize"),
        }
    }
}

impl core::error::Error for EncodeError {}

/// Encodes and decodes batch records for one item type, named by its `tag`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    tag: u32,
}

impl Codec {
    /// A codec for items whose type is named `tag`. Choose a constant per item type and change it
    /// whenever the type's encoding changes: records of another tag are refused, not misread.
    pub const fn new(tag: u32) -> Self {
        Self { tag }
    }

    /// The item type tag.
    pub const fn tag(&self) -> u32 {
        self.tag
    }

    /// Writes the record of `batch` into `buf`, returning the bytes written.
    pub fn encode<'b, T: Serialize>(
        &self,
        batch: StoredBatch,
        items: &[T],
        buf: &'b mut [u8],
    ) -> Result<&'b [u8], EncodeError> {
        if buf.len() < HEADER_LEN + TRAILER_LEN {
            return Err(EncodeError::BufferTooSmall);
        }
        let count = u32::try_from(items.len()).map_err(|_| EncodeError::BufferTooSmall)?;
        let body_end = buf.len() - TRAILER_LEN;
        let mut at = HEADER_LEN;
        for item in items {
            let used = match postcard::to_slice(item, &mut buf[at..body_end]) {
                Ok(written) => written.len(),
                Err(postcard::Error::SerializeBufferFull) => return Err(EncodeError::BufferTooSmall),
                Err(_) => return Err(EncodeError::Item),
            };
            at += used;
        }
        let payload = u32::try_from(at - HEADER_LEN).map_err(|_| EncodeError::BufferTooSmall)?;
        buf[0..4].copy_from_slice(&MAGIC);
        buf[4] = FORMAT_VERSION;
        buf[5..9].copy_from_slice(&self.tag.to_le_bytes());
        buf[9..17].copy_from_slice(&batch.seq.to_le_bytes());
        buf[17..25].copy_from_slice(&batch.born_ms.to_le_bytes());
        buf[25..29].copy_from_slice(&count.to_le_bytes());
        buf[29..33].copy_from_slice(&payload.to_le_bytes());
        let crc = CRC.checksum(&buf[..at]);
        buf[at..at + TRAILER_LEN].copy_from_slice(&crc.to_le_bytes());
        Ok(&buf[..at + TRAILER_LEN])
    }

    /// Reads only the header of a record: its seq and item count, after checking the magic,
    /// version, tag and length (not the checksum: [`decode`](Self::decode) does).
    pub fn peek(&self, bytes: &[u8]) -> Result<(u64, u32), Corrupt> {
        let h = self.header(bytes)?;
        Ok((h.batch.seq, h.count))
    }

    /// Decodes a record into `out` (appending), returning its header. On any error `out` is
    /// left as it was.
    pub fn decode<T: DeserializeOwned, B: BatchBuf<T>>(
        &self,
        bytes: &[u8],
        out: &mut B,
    ) -> Result<StoredBatch, Corrupt> {
        let Header { batch, count, start, end } = self.header(bytes)?;
        let stored = u32::from_le_bytes(le4(&bytes[end..end + TRAILER_LEN]));
        if CRC.checksum(&bytes[..end]) != stored {
            return Err(Corrupt::Checksum);
        }
        if count as usize > out.spare() {
            return Err(Corrupt::TooManyItems { count });
        }
        // Decode everything first, then move: a bad item must leave `out` untouched.
        let mut rest = &bytes[start..end];
        for _ in 0..count {
            let (_, tail) = postcard::take_from_bytes::<T>(rest).map_err(|_| Corrupt::Items)?;
            rest = tail;
        }
        if !rest.is_empty() {
            return Err(Corrupt::Items);
        }
        let mut rest = &bytes[start..end];
        for _ in 0..count {
            let Ok((item, tail)) = postcard::take_from_bytes::<T>(rest) else { return Err(Corrupt::Items) };
            rest = tail;
            if out.push(item).is_err() {
                return Err(Corrupt::TooManyItems { count });
            }
        }
        Ok(batch)
    }

    /// Checks the header of either format version.
    fn header(self, bytes: &[u8]) -> Result<Header, Corrupt> {
        if bytes.len() < 4 {
            return Err(Corrupt::Truncated);
        }
        if bytes[..4] != MAGIC {
            return Err(Corrupt::BadMagic);
        }
        if bytes.len() < HEADER_LEN_V1 + TRAILER_LEN {
            return Err(Corrupt::Truncated);
        }
        let start = match bytes[4] {
            1 => HEADER_LEN_V1,
            FORMAT_VERSION => HEADER_LEN,
            found => return Err(Corrupt::Version { found }),
        };
        if bytes.len() < start + TRAILER_LEN {
            return Err(Corrupt::Truncated);
        }
        let tag = u32::from_le_bytes(le4(&bytes[5..9]));
        if tag != self.tag {
            return Err(Corrupt::TypeTag { expected: self.tag, found: tag });
        }
        let seq = le8(&bytes[9..17]);
        let born_ms = if start == HEADER_LEN { le8(&bytes[17..25]) } else { StoredBatch::BORN_UNKNOWN };
        let count = u32::from_le_bytes(le4(&bytes[start - 8..start - 4]));
        let payload = u32::from_le_bytes(le4(&bytes[start - 4..start])) as usize;
        let end = start.checked_add(payload).ok_or(Corrupt::Truncated)?;
        if bytes.len() < end.saturating_add(TRAILER_LEN) {
            return Err(Corrupt::Truncated);
        }
        if bytes.len() > end + TRAILER_LEN {
            return Err(Corrupt::TrailingBytes);
        }
        Ok(Header { batch: StoredBatch { seq, born_ms }, count, start, end })
    }
}

/// A checked header: the batch, its item count, and where its payload starts and ends.
struct Header {
    batch: StoredBatch,
    count: u32,
    start: usize,
    end: usize,
}

fn le4(b: &[u8]) -> [u8; 4] {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    a
}

fn le8(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}
