//! Store and forward on flash: [`FlashStore`] keeps batches in a
//! [`sequential-storage`](sequential_storage) queue over any `embedded-storage-async`
//! [`MultiwriteNorFlash`] (embassy-stm32's flash, `esp-storage` behind
//! `embassy_embedded_hal::adapter::BlockingAsync` on the ESP32-C3, an external SPI NOR chip), and
//! implements [`batch_core::store::Store`] for the core's store-and-forward policy.
//!
//! # Layout
//!
//! Two page-aligned flash ranges, given once as a [`FlashLayout`]:
//!
//! - **batches** (one page or more; two or more let the queue wrap around while batches are
//!   stored): one queue item per batch, the batch's [record](batch_core::store::record) — a
//!   header with magic, format version, your item type's tag, seq and item count, the items in
//!   postcard, and a CRC-32. Appends go to the back, removals pop (normally) the front.
//! - **floors** (two pages or more): the persisted sequence-number floor, as records of the same
//!   format with no items, under the complement of your tag (`!tag`, so that a floor record is
//!   never taken for a batch, nor a batch for a floor, even if a page lands in the wrong range),
//!   whose seq field is the floor. The newest record is written before the
//!   older ones are popped, so a valid floor record is on flash at every instant, and recovery
//!   takes the highest valid one.
//!
//! # Why it is crash-safe
//!
//! `sequential-storage` writes an item's header (length, CRC of the length, CRC-32 of the data)
//! before its data and pops an item by zeroing its data CRC; an item cut short by a power failure
//! fails its CRC and is never returned, and an interrupted page erase is detected from the page's
//! markers and redone. So a batch record is on flash whole or not at all, and a removal either
//! happened or did not. On top of that:
//!
//! - `append` returns `Ok` only once the record is written: an acknowledged batch survives any
//!   later cut. Seqs only grow in the queue (`append` refuses a seq that does not), so queue order
//!   is seq order.
//! - The floor never goes back: `seq_floor` is the higher of the highest valid floor record and
//!   the highest stored seq + 1, and before the batch with the highest seq is removed (the store
//!   would then forget its seq), `remove` first persists a floor above it. A cut between the two
//!   leaves the batch and the floor: it is delivered again, which at-least-once allows.
//! - Each record is checked twice (the queue's CRC, then the record's own CRC, magic, version and
//!   type tag). A record that fails is counted in [`Recovery`], never delivered, and popped by the
//!   next `remove` that passes it, so it cannot pin a flash page for ever. Records written for
//!   another item type or format version count as corrupt the same way.
//!
//! Host tests cut the power at every word written and every page erased of a scripted run, on a
//! NOR mock whose cuts leave torn words and half-erased pages, and fuzz recovery with random and
//! mutated flash images (`batch-embassy/tests/flash_*.rs`).
//!
//! # Rules for the caller
//!
//! Run every call from one task and never cancel one mid-way (no `select` with a timeout around
//! it): a cancelled call is a power cut for the data (recovered the same way), but a flash driver
//! may not like an operation dropped half-way. The flash must be [`MultiwriteNorFlash`] (removal
//! rewrites an item's header); flashes with ECC that forbid a second write to a word (STM32 L4,
//! G4, H7, U5…) are not supported.
//!
//! ```
//! # use embedded_storage_async::nor_flash::{ErrorType, MultiwriteNorFlash, NorFlash, NorFlashErrorKind, ReadNorFlash};
//! # /// 8 pages of 256 bytes of NOR flash in RAM (a real firmware passes its HAL's flash).
//! # struct RamFlash([u8; 2048]);
//! # impl ErrorType for RamFlash { type Error = NorFlashErrorKind; }
//! # impl ReadNorFlash for RamFlash {
//! #     const READ_SIZE: usize = 4;
//! #     async fn read(&mut self, at: u32, out: &mut [u8]) -> Result<(), Self::Error> {
//! #         out.copy_from_slice(&self.0[at as usize..at as usize + out.len()]);
//! #         Ok(())
//! #     }
//! #     fn capacity(&self) -> usize { self.0.len() }
//! # }
//! # impl NorFlash for RamFlash {
//! #     const WRITE_SIZE: usize = 4;
//! #     const ERASE_SIZE: usize = 256;
//! #     async fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
//! #         self.0[from as usize..to as usize].fill(0xFF);
//! #         Ok(())
//! #     }
//! #     async fn write(&mut self, at: u32, data: &[u8]) -> Result<(), Self::Error> {
//! #         for (b, d) in self.0[at as usize..].iter_mut().zip(data) { *b &= *d; }
//! #         Ok(())
//! #     }
//! # }
//! # impl MultiwriteNorFlash for RamFlash {}
//! use batch_core::store::record::Codec;
//! use batch_core::store::{Store, StoredBatch};
//! use batch_embassy::{FlashLayout, FlashStore};
//!
//! /// Six pages for batches, two for the floor; an invalid layout fails the build here.
//! const LAYOUT: FlashLayout<RamFlash> = FlashLayout::new(0..0x600, 0x600..0x800);
//! /// Change the tag whenever the item type's encoding changes.
//! const READINGS: Codec = Codec::new(0x5EAD_0001);
//!
//! # embassy_futures::block_on(async {
//! # let flash = RamFlash([0xFF; 2048]);
//! // Records up to 128 bytes (the buffer lives in the store: no allocator).
//! let mut store: FlashStore<_, u16, 128> = FlashStore::new(flash, LAYOUT, READINGS);
//! let found = store.recover().await.unwrap(); // at boot, before anything else
//! assert_eq!(found.batches, 0);
//!
//! let stored = StoredBatch { seq: found.seq_floor, born_ms: 1_500 }; // ms since boot
//! store.append(stored, &[20, 21, 22]).await.unwrap();
//! let mut batch: heapless::Vec<u16, 16> = heapless::Vec::new();
//! assert_eq!(store.read_after(None, &mut batch).await.unwrap(), Some(stored));
//! assert_eq!(&batch[..], &[20, 21, 22]);
//! store.remove(found.seq_floor).await.unwrap();
//!
//! // After a reboot, no seq below the floor is handed out again.
//! let mut store: FlashStore<_, u16, 128> = FlashStore::new(store.into_flash(), LAYOUT, READINGS);
//! let again = store.recover().await.unwrap();
//! assert_eq!((again.batches, again.seq_floor), (0, found.seq_floor + 1));
//! # });
//! ```

use core::fmt;
use core::marker::PhantomData;
use core::ops::Range;

use batch_core::storage::BatchBuf;
use batch_core::store::record::{Codec, Corrupt, EncodeError, HEADER_LEN, TRAILER_LEN};
use batch_core::store::{Recovered, Store, StoreError, StoredBatch};
use embedded_storage_async::nor_flash::{MultiwriteNorFlash, NorFlash};
use sequential_storage::cache::{Cache, CacheImpl, Uncached};
use sequential_storage::queue::{QueueConfig, QueueConfigError, QueueStorage};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// No cache: no RAM, and every operation reads the page states and item headers it needs.
/// `sequential-storage`'s array caches (`Cache::new(page_states::ArrayPageStates::<PAGES>::new(),
/// page_pointers::ArrayPagePointers::<PAGES>::new(), Uncached)`, 9 bytes per page of the batches range) cut the
/// reads of a queue operation to a few percent; pass one to [`FlashStore::with_cache`].
pub type NoCache = Cache<Uncached, Uncached, Uncached>;

/// Bytes of a floor record (a record with no items).
pub const FLOOR_RECORD_LEN: usize = HEADER_LEN + TRAILER_LEN;

/// Bytes of the queue's own header in front of each item, before padding to the flash word.
const ITEM_HEADER: usize = 8;

const fn word<S: NorFlash>() -> usize {
    if S::READ_SIZE > S::WRITE_SIZE { S::READ_SIZE } else { S::WRITE_SIZE }
}

const fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// The two flash ranges of a [`FlashStore`], checked against the flash's page and word sizes.
pub struct FlashLayout<S> {
    batches: QueueConfig<S>,
    batches_range: Range<u32>,
    floors: Range<u32>,
}

impl<S> fmt::Debug for FlashLayout<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlashLayout")
            .field("batches", &self.batches_range)
            .field("floors", &self.floors)
            .finish()
    }
}

/// Why two ranges are not a valid [`FlashLayout`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LayoutError {
    /// The batches range is not a run of whole pages (or the flash's pages or words do not suit
    /// `sequential-storage`).
    Batches(QueueConfigError),
    /// The floors range is not a run of whole pages.
    Floors(QueueConfigError),
    /// The floors range has fewer than two pages (a new floor is written before the old one is
    /// popped, which needs a second page when the first is full).
    FloorsTooSmall,
    /// The ranges overlap.
    Overlap,
    /// A page cannot hold a floor record.
    PageTooSmall,
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Batches(e) => write!(f, "flash store: bad batches range: {e:?}"),
            Self::Floors(e) => write!(f, "flash store: bad floors range: {e:?}"),
            Self::FloorsTooSmall => f.write_str("flash store: the floors range needs two pages or more"),
            Self::Overlap => f.write_str("flash store: the batches and floors ranges overlap"),
            Self::PageTooSmall => f.write_str("flash store: a flash page cannot hold a floor record"),
        }
    }
}

impl core::error::Error for LayoutError {}

impl<S: NorFlash> FlashLayout<S> {
    /// The layout, or a panic naming what is wrong (a build error in a `const`).
    pub const fn new(batches: Range<u32>, floors: Range<u32>) -> Self {
        match Self::try_new(batches, floors) {
            Ok(layout) => layout,
            Err(LayoutError::Batches(_)) => {
                panic!("flash store: bad batches range (whole pages, one or more)")
            }
            Err(LayoutError::Floors(_)) => panic!("flash store: bad floors range (whole pages)"),
            Err(LayoutError::FloorsTooSmall) => {
                panic!("flash store: the floors range needs two pages or more")
            }
            Err(LayoutError::Overlap) => panic!("flash store: the batches and floors ranges overlap"),
            Err(LayoutError::PageTooSmall) => panic!("flash store: a flash page cannot hold a floor record"),
        }
    }

    /// The layout, or why the ranges do not suit this flash.
    pub const fn try_new(batches: Range<u32>, floors: Range<u32>) -> Result<Self, LayoutError> {
        let (b0, b1, f0, f1) = (batches.start, batches.end, floors.start, floors.end);
        if let Err(e) = QueueConfig::<S>::try_new(f0..f1) {
            return Err(LayoutError::Floors(e));
        }
        if ((f1 - f0) as usize) < 2 * S::ERASE_SIZE {
            return Err(LayoutError::FloorsTooSmall);
        }
        if b0 < f1 && f0 < b1 {
            return Err(LayoutError::Overlap);
        }
        let w = word::<S>();
        if S::ERASE_SIZE < 2 * w + round_up(ITEM_HEADER, w) + round_up(FLOOR_RECORD_LEN, w) {
            return Err(LayoutError::PageTooSmall);
        }
        match QueueConfig::<S>::try_new(b0..b1) {
            Ok(config) => Ok(Self { batches: config, batches_range: b0..b1, floors: f0..f1 }),
            Err(e) => Err(LayoutError::Batches(e)),
        }
    }
}

/// Why a flash operation failed (the `Io` case of [`StoreError`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum FlashError<E> {
    /// The flash driver failed.
    Flash(E),
    /// `sequential-storage` found a flash state it could not repair. Nothing invented is
    /// delivered; [`FlashStore::erase_all`] makes the store usable again, losing what it held.
    Corrupted,
    /// A stored record is larger than the record buffer (written by a build with a larger `BUF`).
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
    },
    /// The batch does not fit the record buffer or a flash page: it can never be stored.
    RecordTooBig,
    /// An item failed to serialize.
    Item,
    /// `append` was given a seq not above the newest stored one (the queue is kept in seq order).
    SeqNotIncreasing {
        /// The seq given.
        seq: u64,
        /// The newest seq stored.
        newest: u64,
    },
    /// `sequential-storage` reported an internal error.
    Internal,
}

impl<E: fmt::Debug> fmt::Display for FlashError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Flash(e) => write!(f, "flash error: {e:?}"),
            Self::Corrupted => f.write_str("flash store state is corrupted beyond repair (erase it)"),
            Self::BufferTooSmall { needed } => write!(f, "stored record needs a {needed}-byte buffer"),
            Self::RecordTooBig => f.write_str("batch record larger than the record buffer or a flash page"),
            Self::Item => f.write_str("an item failed to serialize"),
            Self::SeqNotIncreasing { seq, newest } => {
                write!(f, "batch {seq} appended after batch {newest}: seqs must grow")
            }
            Self::Internal => f.write_str("sequential-storage internal error"),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for FlashError<E> {}

type Error<E> = StoreError<FlashError<E>>;

fn ss<E>(e: sequential_storage::Error<E>) -> Error<E> {
    use sequential_storage::Error as Ss;
    match e {
        Ss::Storage { value, .. } => StoreError::Io(FlashError::Flash(value)),
        Ss::FullStorage => StoreError::Full,
        Ss::Corrupted { .. } => StoreError::Io(FlashError::Corrupted),
        Ss::BufferTooSmall(needed) => StoreError::Io(FlashError::BufferTooSmall { needed }),
        Ss::ItemTooBig => StoreError::Io(FlashError::RecordTooBig),
        _ => StoreError::Io(FlashError::Internal),
    }
}

fn encode_error<E>(e: EncodeError) -> Error<E> {
    match e {
        EncodeError::BufferTooSmall => StoreError::Io(FlashError::RecordTooBig),
        EncodeError::Item => StoreError::Io(FlashError::Item),
    }
}

/// What [`FlashStore::recover`] found, in more detail than [`Recovered`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Recovery {
    /// Valid batches held.
    pub batches: u64,
    /// Items in them.
    pub items: u64,
    /// Batch records that failed their checks (torn, flipped bits, another item type or format
    /// version, garbage): skipped, never delivered.
    pub corrupt: u32,
    /// What was wrong with the first of them.
    pub first_corrupt: Option<Corrupt>,
    /// Valid records whose seq is not above the one before (skipped, never delivered).
    pub out_of_order: u32,
    /// The highest seq held.
    pub newest: Option<u64>,
    /// The highest floor persisted (0 if none).
    pub floor: u64,
    /// Valid floor records (1 normally, 2 after a cut between writing a floor and popping the
    /// old one).
    pub floor_records: u32,
    /// Floor records that failed their checks.
    pub corrupt_floors: u32,
}

#[derive(Debug, Clone, Copy, Default)]
struct State {
    recovered: bool,
    /// No floor above this is durable... and this one is: the highest floor written or found.
    floor: u64,
    /// The highest seq known to be stored.
    newest: Option<u64>,
    skipped: u32,
}

/// The record buffer, aligned for flash drivers that need it (and `sequential-storage`'s own).
#[repr(C, align(4))]
struct RecordBuf<const N: usize>([u8; N]);

/// A [`Store`] on NOR flash: batches in a `sequential-storage` queue, the seq floor in a second
/// range (see the [module documentation](self) for the layout and why it is crash-safe).
///
/// `T` is the item type, `BUF` the record buffer's size (the largest batch record, so
/// [`HEADER_LEN`] + [`TRAILER_LEN`] + the postcard bytes of `max_batch` items, rounded down to the
/// flash word; it lives inside the store, no allocator), `C` a `sequential-storage` cache.
///
/// The operations of [`Store`] need a [`MultiwriteNorFlash`]. Any of them runs
/// [`recover`](Store::recover) first if it has not run yet.
pub struct FlashStore<S: NorFlash, T, const BUF: usize, C: CacheImpl<()> = NoCache> {
    queue: QueueStorage<S, C>,
    floors: Range<u32>,
    codec: Codec,
    buf: RecordBuf<BUF>,
    state: State,
    recovery: Recovery,
    _items: PhantomData<fn(T) -> T>,
}

impl<S: NorFlash, T, const BUF: usize, C: CacheImpl<()>> fmt::Debug for FlashStore<S, T, BUF, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlashStore")
            .field("batches", &self.queue.flash_range())
            .field("floors", &self.floors)
            .field("codec", &self.codec)
            .field("floor", &self.state.floor)
            .field("newest", &self.state.newest)
            .finish_non_exhaustive()
    }
}

impl<S: NorFlash, T, const BUF: usize> FlashStore<S, T, BUF> {
    /// A store on `flash`, without a cache. Call [`recover`](Store::recover) first.
    pub fn new(flash: S, layout: FlashLayout<S>, codec: Codec) -> Self {
        Self::with_cache(flash, layout, codec, NoCache::new_uncached())
    }

    /// Erases both ranges: every batch and the floor are gone. For a store that reports
    /// [`FlashError::Corrupted`]; the next seqs start from 0 again, so persist a floor first if
    /// the consumer still remembers older ones. (A store with a cache: take it apart with
    /// [`into_parts`](Self::into_parts), erase, and open it again with a new cache.)
    pub async fn erase_all(&mut self) -> Result<(), FlashError<S::Error>> {
        self.state = State { recovered: true, ..State::default() };
        self.recovery = Recovery::default();
        let (batches, floors) = (self.queue.flash_range(), self.floors.clone());
        let flash = self.queue.flash();
        flash.erase(batches.start, batches.end).await.map_err(FlashError::Flash)?;
        flash.erase(floors.start, floors.end).await.map_err(FlashError::Flash)
    }
}

impl<S: NorFlash, T, const BUF: usize, C: CacheImpl<()>> FlashStore<S, T, BUF, C> {
    /// The usable part of the record buffer: whole flash words (an item is read a word at a time).
    const USABLE: usize = {
        let usable = BUF / word::<S>() * word::<S>();
        assert!(usable >= FLOOR_RECORD_LEN, "FlashStore: BUF is too small for a record");
        usable
    };

    /// A store on `flash` with a `sequential-storage` cache for the batches range (a new one, or
    /// one handed back by [`into_parts`](Self::into_parts) with the flash untouched since).
    pub fn with_cache(flash: S, layout: FlashLayout<S>, codec: Codec, cache: C) -> Self {
        let () = const { assert!(Self::USABLE > 0) };
        Self {
            queue: QueueStorage::new(flash, layout.batches, cache),
            floors: layout.floors,
            codec,
            buf: RecordBuf([0; BUF]),
            state: State::default(),
            recovery: Recovery::default(),
            _items: PhantomData,
        }
    }

    /// The codec (and so the item type tag) of this store.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// What the last [`recover`](Store::recover) found.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// Corrupt records skipped by reads since the store was opened (they are not counted again by
    /// [`Recovery::corrupt`]).
    pub fn skipped(&self) -> u32 {
        self.state.skipped
    }

    /// The flash back.
    pub fn into_flash(self) -> S {
        self.queue.destroy().0
    }

    /// The flash and the cache back.
    pub fn into_parts(self) -> (S, C) {
        self.queue.destroy()
    }
}

/// A sink that validates items and counts them.
struct Count<T>(u32, PhantomData<fn(T)>);

impl<T> BatchBuf<T> for Count<T> {
    fn spare(&self) -> usize {
        usize::MAX
    }
    fn push(&mut self, _item: T) -> Result<(), T> {
        self.0 += 1;
        Ok(())
    }
}

/// A sink for no item: decoding into it accepts only records with none.
struct NoItems;

impl<T> BatchBuf<T> for NoItems {
    fn spare(&self) -> usize {
        0
    }
    fn push(&mut self, item: T) -> Result<(), T> {
        Err(item)
    }
}

/// Checks a batch record fully (queue CRC already passed): its seq and item count.
fn check<T: DeserializeOwned>(codec: Codec, bytes: &[u8]) -> Result<(u64, u32), Corrupt> {
    let mut count = Count::<T>(0, PhantomData);
    let batch = codec.decode::<T, _>(bytes, &mut count)?;
    Ok((batch.seq, count.0))
}

/// A floor record: the floor in the seq field, no items.
const fn floor_record(floor: u64) -> StoredBatch {
    StoredBatch { seq: floor, born_ms: StoredBatch::BORN_UNKNOWN }
}

/// The codec of floor records: the batches' tag, complemented.
fn floor_codec(codec: Codec) -> Codec {
    Codec::new(!codec.tag())
}

/// A floor record's floor.
fn floor_of<T: DeserializeOwned>(codec: Codec, bytes: &[u8]) -> Option<u64> {
    floor_codec(codec).decode::<T, _>(bytes, &mut NoItems).ok().map(|floor| floor.seq)
}

/// An upper bound on the items a range can hold: every loop over a queue stops there.
fn max_items<S: NorFlash>(range: &Range<u32>) -> usize {
    (range.end - range.start) as usize / round_up(ITEM_HEADER, word::<S>()) + 1
}

/// Walks a whole queue once: `sequential-storage` erases, as an iteration passes them, pages
/// whose items are all popped (torn items included, which `push` alone would count as live).
async fn walk<F: NorFlash, C: CacheImpl<()>>(
    queue: &mut QueueStorage<F, C>,
    buf: &mut [u8],
) -> Result<(), Error<F::Error>> {
    let bound = max_items::<F>(&queue.flash_range());
    let mut it = queue.iter().await.map_err(ss)?;
    for _ in 0..bound {
        if it.next(buf).await.map_err(ss)?.is_none() {
            return Ok(());
        }
    }
    Err(StoreError::Io(FlashError::Internal))
}

/// Pops the floor records below `keep` and those that fail their checks.
async fn prune_floors<T: DeserializeOwned, F: MultiwriteNorFlash>(
    queue: &mut QueueStorage<F, NoCache>,
    codec: Codec,
    buf: &mut [u8],
    keep: u64,
) -> Result<(), Error<F::Error>> {
    let bound = max_items::<F>(&queue.flash_range());
    let mut it = queue.iter().await.map_err(ss)?;
    for _ in 0..bound {
        let Some(entry) = it.next(buf).await.map_err(ss)? else { return Ok(()) };
        if floor_of::<T>(codec, &entry).is_none_or(|floor| floor < keep) {
            entry.pop().await.map_err(ss)?;
        }
    }
    Err(StoreError::Io(FlashError::Internal))
}

impl<S, T, const BUF: usize, C> FlashStore<S, T, BUF, C>
where
    S: MultiwriteNorFlash,
    T: Serialize + DeserializeOwned,
    C: CacheImpl<()>,
{
    async fn ensure_recovered(&mut self) -> Result<(), Error<S::Error>> {
        if !self.state.recovered {
            self.recover().await?;
        }
        Ok(())
    }

    /// Writes floor `new` (above the durable one), then pops the older floor records.
    async fn write_floor(&mut self, new: u64) -> Result<(), Error<S::Error>> {
        let Self { queue, floors, codec, buf, state, .. } = self;
        let codec = *codec;
        let config = QueueConfig::<&mut S>::try_new(floors.clone())
            .map_err(|_| StoreError::Io(FlashError::Internal))?;
        let mut floors = QueueStorage::new(queue.flash(), config, NoCache::new_uncached());
        // Leftovers of a cut between a write and its pops (never the highest floor).
        prune_floors::<T, _>(&mut floors, codec, &mut buf.0, state.floor).await?;
        let len = floor_codec(codec)
            .encode::<T>(floor_record(new), &[], &mut buf.0[..Self::USABLE])
            .map_err(encode_error)?
            .len();
        match floors.push(&buf.0[..len], false).await {
            Err(sequential_storage::Error::FullStorage) => {
                walk(&mut floors, &mut buf.0).await?;
                let len = floor_codec(codec)
                    .encode::<T>(floor_record(new), &[], &mut buf.0[..Self::USABLE])
                    .map_err(encode_error)?
                    .len();
                floors.push(&buf.0[..len], false).await.map_err(ss)?;
            }
            other => other.map_err(ss)?,
        }
        state.floor = new;
        prune_floors::<T, _>(&mut floors, codec, &mut buf.0, new).await
    }

    /// Reads the floors range: the highest valid floor record.
    async fn recover_floor(&mut self, found: &mut Recovery) -> Result<(), Error<S::Error>> {
        let Self { queue, floors, codec, buf, .. } = self;
        let config = QueueConfig::<&mut S>::try_new(floors.clone())
            .map_err(|_| StoreError::Io(FlashError::Internal))?;
        let mut floors = QueueStorage::new(queue.flash(), config, NoCache::new_uncached());
        let bound = max_items::<S>(&floors.flash_range());
        let mut it = floors.iter().await.map_err(ss)?;
        for _ in 0..bound {
            let Some(entry) = it.next(&mut buf.0).await.map_err(ss)? else { return Ok(()) };
            match floor_of::<T>(*codec, &entry) {
                Some(floor) => {
                    found.floor_records += 1;
                    found.floor = found.floor.max(floor);
                }
                None => found.corrupt_floors += 1,
            }
        }
        Err(StoreError::Io(FlashError::Internal))
    }

    async fn push_batch(&mut self, batch: StoredBatch, items: &[T]) -> Result<(), Error<S::Error>> {
        let len =
            self.codec.encode(batch, items, &mut self.buf.0[..Self::USABLE]).map_err(encode_error)?.len();
        self.queue.push(&self.buf.0[..len], false).await.map_err(ss)
    }
}

impl<S, T, const BUF: usize, C> Store<T> for FlashStore<S, T, BUF, C>
where
    S: MultiwriteNorFlash,
    T: Serialize + DeserializeOwned,
    C: CacheImpl<()>,
{
    type Error = FlashError<S::Error>;

    /// Reads both ranges: counts the valid batches (skipping, counting and keeping corrupt
    /// records, see [`FlashStore::recovery`]) and the highest floor.
    async fn recover(&mut self) -> Result<Recovered, StoreError<Self::Error>> {
        let mut found = Recovery::default();
        self.recover_floor(&mut found).await?;
        let Self { queue, codec, buf, .. } = self;
        let bound = max_items::<S>(&queue.flash_range());
        let mut it = queue.iter().await.map_err(ss)?;
        let mut steps = 0;
        while let Some(entry) = it.next(&mut buf.0).await.map_err(ss)? {
            steps += 1;
            if steps > bound {
                return Err(StoreError::Io(FlashError::Internal));
            }
            match check::<T>(*codec, &entry) {
                Ok((seq, _)) if found.newest.is_some_and(|newest| seq <= newest) => found.out_of_order += 1,
                Ok((seq, count)) => {
                    found.batches += 1;
                    found.items += u64::from(count);
                    found.newest = Some(seq);
                }
                Err(corrupt) => {
                    found.corrupt += 1;
                    found.first_corrupt.get_or_insert(corrupt);
                }
            }
        }
        self.state =
            State { recovered: true, floor: found.floor, newest: found.newest, skipped: self.state.skipped };
        self.recovery = found;
        let above_newest = found.newest.map_or(0, |newest| newest.saturating_add(1));
        Ok(Recovered { batches: found.batches, items: found.items, seq_floor: found.floor.max(above_newest) })
    }

    /// Appends the batch's record; [`StoreError::Full`] when the batches range has no room.
    async fn append(&mut self, batch: StoredBatch, items: &[T]) -> Result<(), StoreError<Self::Error>> {
        self.ensure_recovered().await?;
        let seq = batch.seq;
        if let Some(newest) = self.state.newest.filter(|newest| seq <= *newest) {
            return Err(StoreError::Io(FlashError::SeqNotIncreasing { seq, newest }));
        }
        match self.push_batch(batch, items).await {
            Err(StoreError::Full) => {
                // Pages holding only popped and torn items are freed by a walk; then retry once.
                walk(&mut self.queue, &mut self.buf.0).await?;
                self.push_batch(batch, items).await?;
            }
            other => other?,
        }
        self.state.newest = Some(seq);
        Ok(())
    }

    /// The oldest valid batch above `after`, skipping (and counting, see
    /// [`FlashStore::skipped`]) corrupt records. A batch with more items than `out` has room for
    /// is an error ([`Corrupt::TooManyItems`]), and `out` is left as it was.
    async fn read_after<B: BatchBuf<T>>(
        &mut self,
        after: Option<u64>,
        out: &mut B,
    ) -> Result<Option<StoredBatch>, StoreError<Self::Error>> {
        self.ensure_recovered().await?;
        let Self { queue, codec, buf, state, .. } = self;
        let bound = max_items::<S>(&queue.flash_range());
        let mut it = queue.iter().await.map_err(ss)?;
        for _ in 0..bound {
            let Some(entry) = it.next(&mut buf.0).await.map_err(ss)? else { return Ok(None) };
            match codec.peek(&entry) {
                Ok((seq, _)) if after.is_some_and(|after| seq <= after) => {}
                Ok(_) => match codec.decode(&entry, out) {
                    Ok(batch) => return Ok(Some(batch)),
                    Err(too_many @ Corrupt::TooManyItems { .. }) => {
                        return Err(StoreError::Corrupt(too_many));
                    }
                    Err(_) => state.skipped += 1,
                },
                Err(_) => state.skipped += 1,
            }
        }
        Err(StoreError::Io(FlashError::Internal))
    }

    /// Pops batch `seq` (and the corrupt records in front of it). Before it removes the batch
    /// with the highest seq, it persists a floor above that seq, so the seq is never reused.
    async fn remove(&mut self, seq: u64) -> Result<(), StoreError<Self::Error>> {
        self.ensure_recovered().await?;
        let newest = self.state.newest.is_none_or(|newest| seq >= newest);
        if newest && self.state.floor <= seq {
            self.write_floor(seq.saturating_add(1)).await?;
        }
        let Self { queue, codec, buf, .. } = self;
        let bound = max_items::<S>(&queue.flash_range());
        let mut it = queue.iter().await.map_err(ss)?;
        let mut previous: Option<u64> = None;
        for _ in 0..bound {
            let Some(entry) = it.next(&mut buf.0).await.map_err(ss)? else { return Ok(()) };
            match check::<T>(*codec, &entry) {
                Ok((found, _)) if found == seq => {
                    entry.pop().await.map_err(ss)?;
                    return Ok(());
                }
                Ok((found, _)) if found > seq => return Ok(()),
                // An older batch: kept (this removal is not of the oldest), unless it is out of
                // order, and so never delivered.
                Ok((found, _)) if previous.is_none_or(|previous| found > previous) => previous = Some(found),
                Ok(_) | Err(_) => {
                    entry.pop().await.map_err(ss)?;
                }
            }
        }
        Err(StoreError::Io(FlashError::Internal))
    }

    /// Writes a floor record if `floor` is above the persisted one (otherwise nothing).
    async fn persist_seq_floor(&mut self, floor: u64) -> Result<(), StoreError<Self::Error>> {
        self.ensure_recovered().await?;
        if floor > self.state.floor {
            self.write_floor(floor).await?;
        }
        Ok(())
    }
}
