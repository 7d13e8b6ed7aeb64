//! The store run (feature `store`): the same application with store and forward on a simulated
//! flash, a power cut at a seeded moment and a reboot from the flash.
//!
//! - **The flash** ([`RamFlash`]): 8 KiB of RAM with true NOR semantics (a write only clears
//!   bits, in whole 4-byte words; an erase sets a 1 KiB page to `0xFF`), under batch-embassy's
//!   [`FlashStore`](batch_embassy::FlashStore): six pages of batches, two of sequence-number
//!   floors.
//! - **The policy** ([`STORE_CONFIG`]): [`CONFIG`](crate::CONFIG) with write-ahead (every batch is
//!   on flash before its first attempt and removed at its final outcome) and spill on overflow:
//!   during the link outage the runner holds its failed batch until the link is back, and the
//!   readings beyond RAM are spilled to flash by the store runner (in its second buffer) and
//!   loaded back, oldest first, after it, so the producers never wait for the uplink.
//! - **The power cut**: armed at a moment drawn from a seed; the first flash program unit (a word
//!   written or a page erased) at or after it is torn (a random part of its bits), the power is
//!   off from then on (every flash operation fails, nothing the first boot's tasks do counts) and
//!   the first boot is dropped where it stands: its batcher and runner, with everything they held
//!   in RAM. The flash keeps its bits. QEMU cannot keep a RAM region across a reset of these
//!   machines and reload the image, so the reboot is simulated in the same process: a fresh
//!   batcher, a fresh [`FlashStore`](batch_embassy::FlashStore) over the same flash, and the same
//!   code path as the first boot ([`run`]'s `boot`): the store runner recovers from the flash,
//!   delivers what it holds first, and the sensors and the supervisor resume their schedules.
//! - **The check** ([`check_power_cut`](crate::check::check_power_cut)): every reading reached a
//!   final outcome at least once, unless it was lost in RAM: produced before the cut and never
//!   acknowledged by the store (the [`Durable`] wrapper marks in the ledger every reading whose
//!   batch the store acknowledged). A reading may be delivered twice only if the store held it
//!   (a batch redelivered after the reboot); the counters of both boots add up to the ledger's;
//!   and an outage that one boot saw whole spilled (the [`Durable`] wrapper counts the spills).

use batch_core::storage::BatchBuf;
use batch_core::store::record::Codec;
use batch_core::store::{Recovered, Store, StoreError, StoredBatch};
use batch_embassy::{Config, FlashLayout, FlashStore, Metrics, StorePolicy};
use embassy_futures::join::{join_array, join4};
use embassy_futures::select::{Either, select};
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_sync::mutex::Mutex;
use embassy_time::{Duration, Instant, Timer};
use embedded_storage_async::nor_flash::{
    ErrorType, MultiwriteNorFlash, NorFlash, NorFlashErrorKind, ReadNorFlash,
};

use crate::log::{log_info, log_warn};
use crate::reading::{Reading, SENSOR_COUNT, SENSORS, Sensor, xorshift32};
use crate::{CONFIG, Ledger, PLAN, Plan, Report, Telemetry, Uplink, sense, supervise};

/// [`CONFIG`](crate::CONFIG) with store and forward: write-ahead, spill on overflow, sequence
/// numbers reserved 32 at a time.
pub const STORE_CONFIG: Config = CONFIG.store(StorePolicy::new().write_ahead(true).seq_block(32));

/// Bytes in a flash word (the unit of a write).
pub const WORD: usize = 4;
/// Bytes in a flash page (the unit of an erase).
pub const PAGE: usize = 1024;
/// Pages of the simulated flash: six for batches, two for floors.
pub const PAGES: usize = 8;

/// The flash ranges of the store.
pub const fn layout<'a>() -> FlashLayout<RamFlash<'a>> {
    FlashLayout::new(0..(6 * PAGE) as u32, (6 * PAGE) as u32..(PAGES * PAGE) as u32)
}

/// The record format's item type tag of [`Reading`] (change it when `Reading` changes).
pub const CODEC: Codec = Codec::new(0x7E1E_0001);

/// The record buffer: a header, up to 16 readings of at most 14 postcard bytes, a CRC.
pub const RECORD_BUF: usize = 320;

/// The store: batch-embassy's `FlashStore` on the simulated flash.
pub type Flash<'a> = FlashStore<RamFlash<'a>, Reading, RECORD_BUF>;

/// The most readings one sensor takes in [`PLAN`].
pub const MAX_READINGS: usize = {
    let (mut max, mut i) = (0, 0);
    while i < SENSOR_COUNT {
        let n = SENSORS[i].readings_in(PLAN.run_for) as usize;
        if n > max {
            max = n;
        }
        i += 1;
    }
    max
};

const MAP_WORDS: usize = MAX_READINGS.div_ceil(32);

/// One bit per reading of each sensor.
type Map = [[u32; MAP_WORDS]; SENSOR_COUNT];

fn bit(map: &Map, sensor: u8, seq: u32) -> bool {
    let (w, b) = ((seq / 32) as usize, seq % 32);
    map.get(usize::from(sensor)).and_then(|m| m.get(w)).is_some_and(|word| word & (1 << b) != 0)
}

/// Sets a bit; returns whether it was set before.
fn set(map: &mut Map, sensor: u8, seq: u32) -> bool {
    let (w, b) = ((seq / 32) as usize, seq % 32);
    match map.get_mut(usize::from(sensor)).and_then(|m| m.get_mut(w)) {
        Some(word) => {
            let was = *word & (1 << b) != 0;
            *word |= 1 << b;
            was
        }
        None => false,
    }
}

/// What the store run adds to the [`Ledger`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct StoreLedger {
    /// Readings whose batch the store acknowledged (an append returned `Ok`).
    durable: Map,
    /// Readings that reached a final outcome at least once.
    settled: Map,
    /// The power is off (after the cut, before the reboot).
    pub powered_off: bool,
    /// The second boot runs.
    pub rebooted: bool,
    /// When the power failed, in milliseconds since the start.
    pub cut_at_ms: Option<u64>,
    /// What each sensor had produced then.
    pub produced_at_cut: [u32; SENSOR_COUNT],
    /// What the store held at the second boot.
    pub recovered_batches: u64,
    /// Readings in those batches.
    pub recovered_items: u64,
    /// Readings delivered (or dead-lettered) again: their batch was in the store at the cut.
    pub redelivered: u32,
    /// The broken build's replay happened.
    pub replayed: bool,
    /// Batches the store acknowledged as spills (RAM full and the runner unable to send: the
    /// outage), and their readings.
    pub spilled_batches: u32,
    /// Readings in those batches.
    pub spilled_readings: u32,
}

impl Default for StoreLedger {
    fn default() -> Self {
        Self::new()
    }
}

impl StoreLedger {
    /// Nothing yet.
    pub const fn new() -> Self {
        Self {
            durable: [[0; MAP_WORDS]; SENSOR_COUNT],
            settled: [[0; MAP_WORDS]; SENSOR_COUNT],
            powered_off: false,
            rebooted: false,
            cut_at_ms: None,
            produced_at_cut: [0; SENSOR_COUNT],
            recovered_batches: 0,
            recovered_items: 0,
            redelivered: 0,
            replayed: false,
            spilled_batches: 0,
            spilled_readings: 0,
        }
    }

    /// Whether the store acknowledged reading `seq` of `sensor`.
    pub fn is_durable(&self, sensor: u8, seq: u32) -> bool {
        bit(&self.durable, sensor, seq)
    }

    /// Whether reading `seq` of `sensor` reached a final outcome.
    pub fn is_settled(&self, sensor: u8, seq: u32) -> bool {
        bit(&self.settled, sensor, seq)
    }

    /// Forgets that reading `seq` of `sensor` reached a final outcome (tests).
    #[cfg(test)]
    pub(crate) fn forget(&mut self, sensor: u8, seq: u32) {
        if let Some(word) =
            self.settled.get_mut(usize::from(sensor)).and_then(|m| m.get_mut((seq / 32) as usize))
        {
            *word &= !(1 << (seq % 32));
        }
    }
}

impl Ledger {
    /// Records readings the store acknowledged.
    pub(crate) fn mark_durable(&mut self, items: &[Reading]) {
        if !self.powered() {
            return;
        }
        for r in items {
            set(&mut self.store.durable, r.sensor, r.seq);
        }
    }

    /// Records a spill the store acknowledged.
    pub(crate) fn record_spill(&mut self, items: &[Reading]) {
        if self.powered() {
            self.store.spilled_batches += 1;
            self.store.spilled_readings += items.len() as u32;
        }
    }

    /// Checks the order of a final outcome in the store run: a reading's first outcome comes
    /// after those of the earlier readings it follows (gaps allowed: lost in RAM at the cut); a
    /// second one only for a reading the store held.
    pub(crate) fn order(&mut self, reading: &Reading) {
        let (sensor, seq) = (reading.sensor, reading.seq);
        let Some(expected) = self.sensors.get(usize::from(sensor)).map(|s| s.next_settle) else { return };
        if set(&mut self.store.settled, sensor, seq) {
            if self.store.is_durable(sensor, seq) {
                self.store.redelivered += 1;
            } else {
                self.anomaly(crate::Anomaly::Duplicate { sensor, seq, expected });
            }
        } else if seq < expected {
            self.anomaly(crate::Anomaly::Reordered { sensor, seq, expected });
        } else if let Some(s) = self.sensors.get_mut(usize::from(sensor)) {
            s.next_settle = seq + 1;
        }
    }
}

impl Telemetry {
    /// The store run's application state: batchers built from [`STORE_CONFIG`].
    pub const fn with_store() -> Self {
        Self::with_config(STORE_CONFIG)
    }

    /// The power fails now (called by the flash).
    fn power_fails(&self) {
        let at = Instant::now().duration_since(self.start()).as_millis();
        self.with_ledger(|l| {
            l.store.powered_off = true;
            l.store.cut_at_ms = Some(at);
            for (cut, s) in l.store.produced_at_cut.iter_mut().zip(&l.sensors) {
                *cut = s.produced;
            }
        });
        self.power_lost.signal(());
    }

    /// The power is back: the second boot, with a fresh batcher.
    fn reboot(&self, before: Metrics) {
        self.before_cut.lock(|b| b.set(Some(before)));
        self.with_ledger(|l| {
            l.store.powered_off = false;
            l.store.rebooted = true;
            l.last_batch = None; // batch order restarts with the batches redelivered from flash
        });
    }
}

/// A NOR flash in RAM with a power cut (see the [module documentation](self)).
pub struct RamFlash<'a> {
    app: &'a Telemetry,
    data: [u8; PAGES * PAGE],
    /// The first program unit at or after this instant is torn and the power fails.
    cut_at: Option<Instant>,
    rng: u32,
}

impl core::fmt::Debug for RamFlash<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RamFlash").field("cut_at", &self.cut_at).finish_non_exhaustive()
    }
}

impl<'a> RamFlash<'a> {
    /// An erased flash whose power fails at the first program unit at or after `cut_at`.
    pub fn new(app: &'a Telemetry, cut_at: Option<Instant>, seed: u32) -> Self {
        Self { app, data: [0xFF; PAGES * PAGE], cut_at, rng: seed | 1 }
    }

    fn random(&mut self) -> u32 {
        self.rng = xorshift32(self.rng);
        self.rng
    }

    fn check(
        &self,
        offset: u32,
        len: usize,
        align: usize,
    ) -> Result<core::ops::Range<usize>, NorFlashErrorKind> {
        if !self.app.with_ledger(|l| l.powered()) {
            return Err(NorFlashErrorKind::Other);
        }
        let start = offset as usize;
        if !start.is_multiple_of(align) || !len.is_multiple_of(align) {
            return Err(NorFlashErrorKind::NotAligned);
        }
        if start + len > self.data.len() {
            return Err(NorFlashErrorKind::OutOfBounds);
        }
        Ok(start..start + len)
    }

    /// Whether the power fails during this program unit.
    fn cut_now(&mut self) -> bool {
        if self.cut_at.is_some_and(|at| Instant::now() >= at) {
            self.cut_at = None;
            self.app.power_fails();
            true
        } else {
            false
        }
    }
}

impl ErrorType for RamFlash<'_> {
    type Error = NorFlashErrorKind;
}

impl ReadNorFlash for RamFlash<'_> {
    const READ_SIZE: usize = WORD;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let range = self.check(offset, bytes.len(), WORD)?;
        bytes.copy_from_slice(&self.data[range]);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.data.len()
    }
}

impl NorFlash for RamFlash<'_> {
    const WRITE_SIZE: usize = WORD;
    const ERASE_SIZE: usize = PAGE;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        let range = self.check(from, to.saturating_sub(from) as usize, PAGE)?;
        for page in range.step_by(PAGE) {
            if self.cut_now() {
                // Erased from the start of the page up to a random point.
                let end = self.random() as usize % PAGE;
                self.data[page..page + end].fill(0xFF);
                log_warn!(
                    "power: cut in the erase of flash page {=usize} ({=usize} bytes erased)",
                    page / PAGE,
                    end
                );
                return Err(NorFlashErrorKind::Other);
            }
            self.data[page..page + PAGE].fill(0xFF);
        }
        Ok(())
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        let range = self.check(offset, bytes.len(), WORD)?;
        for (at, word) in range.step_by(WORD).zip(bytes.chunks_exact(WORD)) {
            let cut = self.cut_now();
            let mask = if cut { self.random().to_le_bytes() } else { [0xFF; WORD] };
            // A torn word clears a random part of the bits it was clearing.
            for ((cell, new), m) in self.data[at..at + WORD].iter_mut().zip(word).zip(mask) {
                *cell &= !(!*new & m);
            }
            if cut {
                log_warn!("power: cut in a flash write at {=usize:#x} (a torn word)", at);
                return Err(NorFlashErrorKind::Other);
            }
        }
        Ok(())
    }
}

impl MultiwriteNorFlash for RamFlash<'_> {}

/// A store that tells the ledger what it acknowledged (appends) and what it found at boot,
/// independently of the batcher.
#[derive(Debug)]
pub struct Durable<'a, S> {
    app: &'a Telemetry,
    inner: S,
}

impl<'a, S> Durable<'a, S> {
    /// Wraps `inner`.
    pub fn new(app: &'a Telemetry, inner: S) -> Self {
        Self { app, inner }
    }

    /// The store back.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Store<Reading>> Store<Reading> for Durable<'_, S> {
    type Error = S::Error;

    async fn recover(&mut self) -> Result<Recovered, StoreError<S::Error>> {
        let found = self.inner.recover().await?;
        self.app.with_ledger(|l| {
            l.store.recovered_batches += found.batches;
            l.store.recovered_items += found.items;
        });
        Ok(found)
    }

    async fn append(&mut self, batch: StoredBatch, items: &[Reading]) -> Result<(), StoreError<S::Error>> {
        // A spill's items count as stored while it is written; a write-ahead append comes only
        // with nothing stored ahead of RAM (stored batches go first): nothing counts as stored.
        let spill = self.app.readings().metrics().stored > 0;
        self.inner.append(batch, items).await?;
        self.app.with_ledger(|l| {
            l.mark_durable(items);
            if spill {
                l.record_spill(items);
            }
        });
        Ok(())
    }

    async fn read_after<B: BatchBuf<Reading>>(
        &mut self,
        after: Option<u64>,
        out: &mut B,
    ) -> Result<Option<StoredBatch>, StoreError<S::Error>> {
        self.inner.read_after(after, out).await
    }

    async fn remove(&mut self, seq: u64) -> Result<(), StoreError<S::Error>> {
        self.inner.remove(seq).await
    }

    async fn persist_seq_floor(&mut self, floor: u64) -> Result<(), StoreError<S::Error>> {
        self.inner.persist_seq_floor(floor).await
    }
}

/// The store behind the runners' mutex.
pub type SharedStore<'a> = Mutex<NoopRawMutex, Durable<'a, Flash<'a>>>;

/// The uplink's loop with the store: the batcher's store runner (recovery, write-ahead, spills,
/// loads, removals) with an [`Uplink`] handler, until the batcher is shut down and drained.
pub async fn run_uplink_with_store<S: Store<Reading>>(app: &Telemetry, store: &Mutex<NoopRawMutex, S>) {
    let mut runner = app.readings().runner(Uplink::new(app)).store(store);
    runner.run().await;
    log_info!("uplink: batcher drained, runner done");
}

/// When the power fails for `seed`: between 0.3 s and 2.7 s into the run (inside
/// `plan.run_for`, so that readings are still coming).
pub const fn cut_moment(seed: u32, plan: &Plan) -> Duration {
    let window = plan.run_for.as_millis().saturating_sub(600);
    Duration::from_millis(300 + xorshift32(seed | 1) as u64 % window)
}

/// A producer bug for the broken build: sends reading 3 of the first sensor a second time, at
/// 1 s (in whichever boot runs then; once).
pub async fn replay_bug(app: &Telemetry) {
    if app.with_ledger(|l| l.store.replayed) {
        return;
    }
    Timer::at(app.start() + Duration::from_secs(1)).await;
    app.alive().await;
    app.with_ledger(|l| l.store.replayed = true);
    let sensor = &SENSORS[0];
    let old = Reading { sensor: sensor.id, value: sensor.sample(3), seq: 3, at_ms: 30 };
    log_warn!("broken build: replaying reading 3 of sensor {=str}", sensor.name);
    if app.readings().add(old).await.is_err() {
        log_warn!("broken build: the replay was refused");
    }
}

/// One boot: the sensors, the uplink with the store, the supervisor (and the broken build's
/// replay), all until the supervisor's report.
async fn boot<'a>(app: &'a Telemetry, store: &SharedStore<'a>, plan: &Plan, broken: bool) -> Report {
    let sensors: &'static [Sensor; SENSOR_COUNT] = &SENSORS;
    let sensing = join_array(sensors.each_ref().map(|s| sense(app, s, plan)));
    let replay = async {
        if broken {
            replay_bug(app).await;
        }
    };
    let (_, (), report, ()) =
        join4(sensing, run_uplink_with_store(app, store), supervise(app, plan), replay).await;
    report
}

/// The store run: boots, loses the power at the moment [`cut_moment`] draws from `seed`, boots
/// again from the flash through the same code path, and returns the self-check's report.
/// `broken` adds the producer bug the self-check must catch.
pub async fn run(app: &Telemetry, plan: &Plan, seed: u32, broken: bool) -> Report {
    let start = app.start();
    let cut = cut_moment(seed, plan);
    log_info!(
        "power: cut armed at {=u64} ms (seed {=u32:#x}): the first flash write or erase from then on is torn",
        cut.as_millis(),
        seed
    );
    let flash = RamFlash::new(app, Some(start + cut), seed);
    let store: SharedStore<'_> = Mutex::new(Durable::new(app, Flash::new(flash, layout(), CODEC)));
    if let Either::Second(report) = select(app.power_lost.wait(), boot(app, &store, plan, broken)).await {
        log_warn!("power: the run ended before the cut");
        return report;
    }
    // The first boot is gone: its tasks stopped where they were, its batcher is never used again.
    let before = app.readings().metrics();
    log_info!(
        "power: boot 1 lost its RAM: {} readings buffered, {} held by the runner",
        before.buffered,
        before.returned
    );
    let flash = store.into_inner().into_inner().into_flash();
    app.reboot(before);
    log_info!("power: boot 2 starts from the flash");
    let store: SharedStore<'_> = Mutex::new(Durable::new(app, Flash::new(flash, layout(), CODEC)));
    boot(app, &store, plan, broken).await
}
