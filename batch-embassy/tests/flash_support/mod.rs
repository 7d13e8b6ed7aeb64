//! Shared by the flash store tests: a NOR flash in RAM with true NOR semantics and power cuts,
//! a seeded random source, and the store type the tests use.
#![allow(dead_code, unreachable_pub)]

use batch_core::store::StoredBatch;
use batch_core::store::record::Codec;
use batch_embassy::{FlashLayout, FlashStore};
use embedded_storage_async::nor_flash::{
    ErrorType, MultiwriteNorFlash, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// splitmix64: small, seedable, good enough to pick cut shapes and mutations.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// How an interrupted erase leaves its page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EraseCut {
    /// Power failed before the erase started: the page is as it was.
    Untouched,
    /// Bytes erased from the start of the page up to a random point (how `sequential-storage`'s
    /// own mock, and flash erased in sub-blocks, behave).
    Prefix,
    /// The erase finished but was not acknowledged.
    Done,
    /// Every bit of the page somewhere between its old value and erased: old | random.
    Undefined,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NorError {
    /// The power is off (a cut happened).
    PowerOff,
    OutOfBounds,
    NotAligned,
    /// The test's read budget ran out (a loop that would not end).
    ReadBudget,
}

impl NorFlashError for NorError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            Self::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            Self::NotAligned => NorFlashErrorKind::NotAligned,
            Self::PowerOff | Self::ReadBudget => NorFlashErrorKind::Other,
        }
    }
}

/// NOR flash in RAM: a write can only clear bits (1 → 0) and is done in whole `WORD`s at aligned
/// offsets; an erase sets a whole `PAGE` to 0xFF. A power cut can be set at any program unit (one
/// word written, or one page erased, counted from 0 since the flash was made): the word being
/// written when it hits is torn (a random subset of the bits it was clearing are cleared), an
/// erase is left as [`EraseCut`] says, and every operation after it fails until
/// [`power_on`](Self::power_on).
#[derive(Debug, Clone)]
pub struct Nor<const WORD: usize, const PAGE: usize> {
    pub data: Vec<u8>,
    /// Program units (words written, pages erased) done so far.
    pub units: u64,
    /// Words written, pages erased (for the summary).
    pub words: u64,
    pub erases: u64,
    /// The units that were page erases.
    pub erase_units: Vec<u64>,
    /// The unit at which the power fails.
    pub cut_at: Option<u64>,
    pub off: bool,
    /// The cut hit an erase (not a write).
    pub cut_in_erase: bool,
    /// How a cut erase is left; `None` picks one of the four from the seed.
    pub erase_cut: Option<EraseCut>,
    pub rng: Rng,
    pub reads: u64,
    /// Reads allowed before every read fails with [`NorError::ReadBudget`].
    pub read_budget: Option<u64>,
}

impl<const WORD: usize, const PAGE: usize> Nor<WORD, PAGE> {
    pub fn new(pages: usize) -> Self {
        Self {
            data: vec![0xFF; pages * PAGE],
            units: 0,
            words: 0,
            erases: 0,
            erase_units: Vec::new(),
            cut_at: None,
            off: false,
            cut_in_erase: false,
            erase_cut: None,
            rng: Rng(0),
            reads: 0,
            read_budget: None,
        }
    }

    /// Power comes back: operations work again, no cut is armed.
    pub fn power_on(&mut self) {
        self.off = false;
        self.cut_at = None;
    }

    fn cut_now(&mut self) -> bool {
        if self.cut_at == Some(self.units) {
            self.off = true;
            true
        } else {
            self.units += 1;
            false
        }
    }

    fn check(&self, offset: u32, len: usize, align: usize) -> Result<std::ops::Range<usize>, NorError> {
        if self.off {
            return Err(NorError::PowerOff);
        }
        let start = offset as usize;
        if !start.is_multiple_of(align) || !len.is_multiple_of(align) {
            return Err(NorError::NotAligned);
        }
        if start + len > self.data.len() {
            return Err(NorError::OutOfBounds);
        }
        Ok(start..start + len)
    }
}

impl<const WORD: usize, const PAGE: usize> ErrorType for Nor<WORD, PAGE> {
    type Error = NorError;
}

impl<const WORD: usize, const PAGE: usize> ReadNorFlash for Nor<WORD, PAGE> {
    const READ_SIZE: usize = WORD;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), NorError> {
        let range = self.check(offset, bytes.len(), WORD)?;
        self.reads += 1;
        if self.read_budget.is_some_and(|budget| self.reads > budget) {
            return Err(NorError::ReadBudget);
        }
        bytes.copy_from_slice(&self.data[range]);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.data.len()
    }
}

impl<const WORD: usize, const PAGE: usize> NorFlash for Nor<WORD, PAGE> {
    const WRITE_SIZE: usize = WORD;
    const ERASE_SIZE: usize = PAGE;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), NorError> {
        let range = self.check(from, (to - from) as usize, PAGE)?;
        for page in range.step_by(PAGE) {
            let bytes = &mut self.data[page..page + PAGE];
            if self.cut_at == Some(self.units) {
                self.off = true;
                self.cut_in_erase = true;
                let shape = self.erase_cut.unwrap_or(match self.rng.below(4) {
                    0 => EraseCut::Untouched,
                    1 => EraseCut::Prefix,
                    2 => EraseCut::Done,
                    _ => EraseCut::Undefined,
                });
                match shape {
                    EraseCut::Untouched => {}
                    EraseCut::Prefix => {
                        let end = self.rng.below(PAGE as u64) as usize;
                        bytes[..end].fill(0xFF);
                    }
                    EraseCut::Done => bytes.fill(0xFF),
                    EraseCut::Undefined => {
                        for b in bytes.iter_mut() {
                            *b |= self.rng.byte();
                        }
                    }
                }
                return Err(NorError::PowerOff);
            }
            self.erase_units.push(self.units);
            self.units += 1;
            self.erases += 1;
            bytes.fill(0xFF);
        }
        Ok(())
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), NorError> {
        assert!(
            (bytes.as_ptr() as usize).is_multiple_of(4),
            "flash writes must come from 4-byte aligned buffers (DMA-driven flash needs it)"
        );
        let range = self.check(offset, bytes.len(), WORD)?;
        for (at, word) in range.step_by(WORD).zip(bytes.chunks_exact(WORD)) {
            if self.cut_now() {
                // Torn: each bit this word was clearing is cleared or not.
                for (cell, new) in self.data[at..at + WORD].iter_mut().zip(word) {
                    let clearing = *cell & !new;
                    *cell &= !(clearing & self.rng.byte());
                }
                return Err(NorError::PowerOff);
            }
            self.words += 1;
            for (cell, new) in self.data[at..at + WORD].iter_mut().zip(word) {
                *cell &= new;
            }
        }
        Ok(())
    }
}

impl<const WORD: usize, const PAGE: usize> MultiwriteNorFlash for Nor<WORD, PAGE> {}

/// The flash the scripted tests use: 4-byte words, 512-byte pages; 6 pages of batches, 2 of
/// floors.
pub type Flash = Nor<4, 512>;
pub const PAGES: usize = 8;
pub const LAYOUT: FlashLayout<Flash> = FlashLayout::new(0..6 * 512, 6 * 512..8 * 512);
pub const CODEC: Codec = Codec::new(0x7E57_0001);
pub type Store = FlashStore<Flash, u32, 256>;

/// The items of batch `seq` in the scripted tests: 1 to 24 of them, each naming its batch.
/// Batch `seq`'s header as these tests store it (a birth derived from the seq).
pub fn sb(seq: u64) -> StoredBatch {
    StoredBatch { seq, born_ms: 10_000 + seq }
}

/// The seq of a header read back, after checking its birth came back as stored.
pub fn checked(b: StoredBatch) -> u64 {
    assert_eq!(b, sb(b.seq), "the birth is kept with the batch");
    b.seq
}

pub fn items_of(seq: u64) -> Vec<u32> {
    let len = 1 + (seq * 7 % 24) as u32;
    (0..len).map(|i| (seq as u32) * 1000 + i * 37).collect()
}

pub type Batch = heapless::Vec<u32, 64>;
