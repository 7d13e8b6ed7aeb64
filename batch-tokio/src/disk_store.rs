//! A disk store for store and forward: [`DiskStore`], a [`batch_core::store::Store`] in one
//! SQLite database file (WAL journal, `synchronous=FULL`), run on a thread of its own.
//!
//! Enabled by the `disk-store` feature. Why SQLite, and the measurement behind the choice, are in
//! `docs/bench/stores.md`: redb, SQLite and fjall all commit one batch per `fsync` at the disk's
//! pace, and SQLite has the longest record of crash-safety testing (simulated power loss in its
//! own test suite), a file format that stays readable across versions, and is already in this
//! workspace.
//!
//! # The file
//!
//! - One database file (the path given to [`DiskStore::open`]), created with mode `0o600`
//!   (readable and writable by its owner only; SQLite gives its `-wal` file the same mode),
//!   plus a `-wal` file beside it while the store is open. Its SQLite header carries an
//!   application id ("BTCH") and a schema version, and a table records the item type tag: a file
//!   of another program, another schema version or another item type is refused by `open` with
//!   a [`DiskStoreError`] naming what was found. A file that is not a database at all (garbage,
//!   a truncated header) is refused the same way; nothing panics.
//! - Each batch is one row, keyed by its seq, holding the record written by
//!   [`Codec`] (header with the item type tag and the format
//!   version, postcard items, CRC-32). A record that fails its checks when read (flipped bits,
//!   a record of another item type) is never delivered: it is moved to a quarantine table (kept
//!   for inspection, its seq still counted in the floor), logged with `tracing`, and counted in
//!   [`DiskStore::corrupt`].
//! - Every operation is one SQLite transaction, durable (the WAL is `fsync`ed) when its future
//!   resolves. The database is opened in exclusive locking mode: a second `DiskStore` on the
//!   same file, in this process or another, gets [`DiskStoreError::InUse`].
//!
//! # Threads
//!
//! The database runs on a dedicated thread (`batch-disk-store`) fed through a channel; the
//! store's futures encode or decode the items and await the thread's reply, so no blocking I/O
//! ever runs on a runtime worker thread, and the futures work on any executor. Dropping the
//! store ends the thread once its last operation is done; [`DiskStore::close`] waits for that
//! (needed before the same file is opened again).
//!
//! ```no_run
//! use batch_core::store::{Store, StoredBatch};
//! use batch_tokio::DiskStore;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! const READING_TAG: u32 = 0x5EAD_0001; // change it whenever the item type's encoding changes
//! let mut store = DiskStore::<(u64, f32)>::open("/var/lib/gateway/batches.db", READING_TAG).await?;
//! let recovered = store.recover().await?;
//! println!("{} batches kept across the restart, next seq >= {}", recovered.batches, recovered.seq_floor);
//! let now_ms = 1_764_720_000_000; // the store clock: Unix time in milliseconds
//! store.append(StoredBatch { seq: recovered.seq_floor, born_ms: now_ms }, &[(1, 20.5), (2, 21.0)]).await?;
//! let mut out = Vec::with_capacity(64);
//! if let Some(batch) = store.read_after(None, &mut out).await? {
//!     // deliver `out`, then:
//!     store.remove(batch.seq).await?;
//! }
//! store.close().await;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use batch_core::storage::BatchBuf;
use batch_core::store::record::{Codec, Corrupt, EncodeError};
use batch_core::store::{Recovered, Store, StoreError, StoredBatch};
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

/// The SQLite application id of a store file: "BTCH".
const APPLICATION_ID: i32 = 0x4254_4348;
/// The schema of the store's tables; a file of another version is refused.
const SCHEMA_VERSION: i32 = 1;
const SCHEMA: &str = "
    CREATE TABLE batches (seq INTEGER PRIMARY KEY, record BLOB NOT NULL) STRICT;
    CREATE TABLE quarantine (seq INTEGER PRIMARY KEY, record BLOB NOT NULL, problem TEXT NOT NULL) STRICT;
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT;
";

/// Why a [`DiskStore`] could not be opened or an operation failed (the `E` of
/// [`StoreError::Io`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum DiskStoreError {
    /// Creating or opening the file failed.
    Io(std::io::Error),
    /// The file is not a batch store: not a database at all (garbage, a truncated or damaged
    /// file), or another program's database.
    NotAStore {
        /// The file.
        path: PathBuf,
        /// What was found.
        reason: String,
    },
    /// A batch store written with another schema version of this crate.
    Version {
        /// The version found.
        found: i32,
        /// The version this build reads.
        expected: i32,
    },
    /// A batch store of another item type (its tag differs from the one given to `open`).
    ItemType {
        /// The tag given to `open`.
        expected: u32,
        /// The tag the store was created with.
        found: u32,
    },
    /// Another `DiskStore`, in this process or another, has the file open.
    InUse(PathBuf),
    /// A sequence number above `i64::MAX` (SQLite's integer key).
    SeqRange(u64),
    /// An item failed to serialize.
    Encode(EncodeError),
    /// The database reported an error (SQLite's message, e.g. an I/O error or a damaged page).
    Database(String),
    /// The store's thread is gone (the store was closed, or its thread panicked).
    Closed,
}

impl fmt::Display for DiskStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "disk store file: {e}"),
            Self::NotAStore { path, reason } => {
                write!(f, "{} is not a batch store: {reason}", path.display())
            }
            Self::Version { found, expected } => {
                write!(f, "batch store has schema version {found}, this build reads version {expected}")
            }
            Self::ItemType { expected, found } => {
                write!(f, "batch store holds item type {found:#010x}, expected {expected:#010x}")
            }
            Self::InUse(path) => write!(f, "batch store {} is open elsewhere", path.display()),
            Self::SeqRange(seq) => write!(f, "seq {seq} is above the disk store's range (i64::MAX)"),
            Self::Encode(e) => write!(f, "{e}"),
            Self::Database(e) => write!(f, "disk store database: {e}"),
            Self::Closed => f.write_str("disk store thread has ended"),
        }
    }
}

impl std::error::Error for DiskStoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            Self::Encode(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for DiskStoreError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

/// What was wrong with a record that was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// The record fails the codec's checks.
    Corrupt(Corrupt),
    /// A valid record stored under another seq than its own.
    SeqMismatch {
        /// The seq in the record.
        found: u64,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Corrupt(c) => write!(f, "{c}"),
            Self::SeqMismatch { found } => write!(f, "stored record holds seq {found}"),
        }
    }
}

/// Records found corrupt and moved to the quarantine table since the store was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CorruptReport {
    /// How many.
    pub count: u64,
    /// The first: its key (seq) and what was wrong.
    pub first: Option<(u64, Problem)>,
}

impl CorruptReport {
    fn note(&mut self, seq: u64, problem: Problem) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some((seq, problem));
        }
        tracing::warn!(seq, %problem, "disk store: corrupt batch record skipped and quarantined");
    }
}

/// A durable FIFO of batches in a SQLite file, for `batch-tokio`'s store and forward; see the
/// [module documentation](self).
pub struct DiskStore<T> {
    jobs: mpsc::Sender<Job>,
    codec: Codec,
    path: PathBuf,
    buf: Vec<u8>,
    corrupt: CorruptReport,
    max_bytes: Option<u64>,
    _items: PhantomData<fn(T) -> T>,
}

impl<T> fmt::Debug for DiskStore<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiskStore")
            .field("path", &self.path)
            .field("tag", &self.codec.tag())
            .field("corrupt", &self.corrupt)
            .finish_non_exhaustive()
    }
}

impl<T: Serialize + DeserializeOwned + Send + 'static> DiskStore<T> {
    /// Opens the store at `path` for items of the type named `tag`, creating it (mode `0o600`)
    /// if there is no file. `tag` is the item type's [`Codec`] tag: a store created with another
    /// tag is refused. The file is opened on the store's thread; call
    /// [`recover`](Store::recover) next.
    pub async fn open(path: impl AsRef<Path>, tag: u32) -> Result<Self, DiskStoreError> {
        let path = path.as_ref().to_path_buf();
        let codec = Codec::new(tag);
        let check: Check = Arc::new(move |bytes: &[u8]| {
            let mut count = Count::<T>(0, PhantomData);
            codec.decode(bytes, &mut count).map(|batch| (batch.seq, count.0))
        });
        let (jobs, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let thread_path = path.clone();
        std::thread::Builder::new().name("batch-disk-store".into()).spawn(move || {
            match Db::open(&thread_path, tag) {
                Ok(db) => {
                    if ready_tx.send(Ok(())).is_ok() {
                        db.serve(&rx, &check);
                    }
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        })?;
        ready_rx.await.map_err(|_| DiskStoreError::Closed)??;
        Ok(Self {
            jobs,
            codec,
            path,
            buf: Vec::new(),
            corrupt: CorruptReport::default(),
            max_bytes: None,
            _items: PhantomData,
        })
    }
}

impl<T> DiskStore<T> {
    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Limits the bytes of the batch records held (by default there is no limit but the disk):
    /// an [`append`](Store::append) that would go beyond it returns [`StoreError::Full`] and
    /// writes nothing, so the batcher applies its overflow policy. The file is larger than the
    /// records (SQLite's pages and the WAL, up to about 4 MiB), and does not shrink when batches
    /// are removed: their space is reused. A full disk is [`StoreError::Full`] too.
    pub fn set_max_bytes(&mut self, max: Option<u64>) {
        self.max_bytes = max;
    }

    /// Records skipped as corrupt (and quarantined) since the store was opened, by
    /// [`recover`](Store::recover) and by reads.
    pub fn corrupt(&self) -> CorruptReport {
        self.corrupt
    }

    /// Closes the database and waits until its thread has ended (the file can then be opened
    /// again). Dropping the store closes it too, without waiting.
    pub async fn close(self) {
        let (tx, rx) = oneshot::channel();
        if self.jobs.send((Op::Close, tx)).is_ok() {
            // The thread replies once the connection is closed and the file unlocked.
            let _ = rx.await;
        }
    }

    async fn call(&self, op: Op) -> Result<Reply, StoreError<DiskStoreError>> {
        let (tx, rx) = oneshot::channel();
        self.jobs.send((op, tx)).map_err(|_| StoreError::Io(DiskStoreError::Closed))?;
        match rx.await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(Failure::Full)) => Err(StoreError::Full),
            Ok(Err(Failure::Error(e))) => Err(StoreError::Io(e)),
            Err(_) => Err(StoreError::Io(DiskStoreError::Closed)),
        }
    }
}

fn key(seq: u64) -> Result<i64, StoreError<DiskStoreError>> {
    i64::try_from(seq).map_err(|_| StoreError::Io(DiskStoreError::SeqRange(seq)))
}

impl<T: Serialize + DeserializeOwned + Send + 'static> Store<T> for DiskStore<T> {
    type Error = DiskStoreError;

    async fn recover(&mut self) -> Result<Recovered, StoreError<DiskStoreError>> {
        let Reply::Recovered(scan) = self.call(Op::Recover).await? else { unreachable!() };
        for (seq, problem) in scan.skipped {
            self.corrupt.note(seq, problem);
        }
        Ok(scan.recovered)
    }

    async fn append(&mut self, batch: StoredBatch, items: &[T]) -> Result<(), StoreError<DiskStoreError>> {
        let key = key(batch.seq)?;
        if self.buf.is_empty() {
            self.buf.resize(4096, 0);
        }
        let len = loop {
            let size = self.buf.len();
            match self.codec.encode(batch, items, &mut self.buf) {
                Ok(bytes) => break bytes.len(),
                Err(EncodeError::BufferTooSmall) if size < 1 << 30 => self.buf.resize(size * 2, 0),
                Err(e) => return Err(StoreError::Io(DiskStoreError::Encode(e))),
            }
        };
        let record = self.buf[..len].to_vec();
        self.call(Op::Append { seq: key, record, max_bytes: self.max_bytes }).await.map(drop)
    }

    async fn read_after<B: BatchBuf<T>>(
        &mut self,
        after: Option<u64>,
        out: &mut B,
    ) -> Result<Option<StoredBatch>, StoreError<DiskStoreError>> {
        let mut after = match after.map(i64::try_from) {
            None => -1,
            Some(Ok(a)) => a,
            Some(Err(_)) => return Ok(None), // no seq above i64::MAX is ever stored
        };
        loop {
            let Reply::Record(found) = self.call(Op::ReadAfter { after }).await? else { unreachable!() };
            let Some((key, record)) = found else { return Ok(None) };
            let seq = key.cast_unsigned();
            // The header first: a record under another key must not reach `out` at all.
            let problem = match self.codec.peek(&record) {
                Err(c) => Problem::Corrupt(c),
                Ok((found, _)) if found != seq => Problem::SeqMismatch { found },
                Ok(_) => match self.codec.decode(&record, out) {
                    Ok(batch) => return Ok(Some(batch)),
                    // The record is fine; `out` has no room for it.
                    Err(c @ Corrupt::TooManyItems { .. }) => return Err(StoreError::Corrupt(c)),
                    Err(c) => Problem::Corrupt(c),
                },
            };
            self.corrupt.note(seq, problem);
            self.call(Op::Quarantine { seq: key, problem: problem.to_string() }).await?;
            after = key;
        }
    }

    async fn remove(&mut self, seq: u64) -> Result<(), StoreError<DiskStoreError>> {
        let key = key(seq)?;
        self.call(Op::Remove { seq: key }).await.map(drop)
    }

    async fn persist_seq_floor(&mut self, floor: u64) -> Result<(), StoreError<DiskStoreError>> {
        let floor = key(floor)?;
        self.call(Op::PersistFloor { floor }).await.map(drop)
    }
}

/// A `BatchBuf` that counts and drops: checks a record's items without keeping them.
struct Count<T>(u32, PhantomData<fn(T)>);

impl<T> BatchBuf<T> for Count<T> {
    fn spare(&self) -> usize {
        usize::MAX
    }
    fn push(&mut self, item: T) -> Result<(), T> {
        drop(item);
        self.0 += 1;
        Ok(())
    }
}

/// Checks a record fully (checksum and items), returning its seq and item count.
type Check = Arc<dyn Fn(&[u8]) -> Result<(u64, u32), Corrupt> + Send + Sync>;

type Job = (Op, oneshot::Sender<Result<Reply, Failure>>);

enum Op {
    Recover,
    Append { seq: i64, record: Vec<u8>, max_bytes: Option<u64> },
    ReadAfter { after: i64 },
    Remove { seq: i64 },
    Quarantine { seq: i64, problem: String },
    PersistFloor { floor: i64 },
    Close,
}

enum Reply {
    Done,
    Recovered(Scan),
    Record(Option<(i64, Vec<u8>)>),
}

struct Scan {
    recovered: Recovered,
    skipped: Vec<(u64, Problem)>,
}

enum Failure {
    Full,
    Error(DiskStoreError),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        if e.sqlite_error_code() == Some(ErrorCode::DiskFull) {
            Failure::Full
        } else {
            Failure::Error(DiskStoreError::Database(e.to_string()))
        }
    }
}

/// The database, on the store's thread.
struct Db {
    conn: Connection,
    /// Bytes of the records in `batches`.
    held_bytes: u64,
}

impl Db {
    fn open(path: &Path, tag: u32) -> Result<Self, DiskStoreError> {
        create_owner_only(path)?;
        let not_a_store = |e: &rusqlite::Error| DiskStoreError::NotAStore {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let sql = |e: rusqlite::Error| match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => not_a_store(&e),
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                DiskStoreError::InUse(path.to_path_buf())
            }
            _ => DiskStoreError::Database(e.to_string()),
        };
        // Read-write, never create: the file exists (created above with its mode), and SQLite
        // reads no URI or other surprise from the path.
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql)?;
        // A file held by another owner is refused after a short wait (rusqlite's default is 5 s),
        // long enough for a store just dropped without `close` to let go of it.
        conn.busy_timeout(std::time::Duration::from_millis(100)).map_err(sql)?;
        // Exclusive locking: one owner, and the WAL index lives in memory (no `-shm` file).
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE").map_err(sql)?;
        let app: i32 = conn.pragma_query_value(None, "application_id", |r| r.get(0)).map_err(sql)?;
        let version: i32 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(sql)?;
        let tables: i64 =
            conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0)).map_err(sql)?;
        let fresh = app == 0 && version == 0 && tables == 0;
        if !fresh && app != APPLICATION_ID {
            return Err(DiskStoreError::NotAStore {
                path: path.to_path_buf(),
                reason: format!("a SQLite database of another application (application id {app:#010x})"),
            });
        }
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)).map_err(sql)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(DiskStoreError::Database(format!("journal_mode WAL refused ({mode})")));
        }
        // FULL: the WAL is synced at every commit, so a commit is durable when it returns.
        conn.pragma_update(None, "synchronous", "FULL").map_err(sql)?;
        conn.pragma_update(None, "trusted_schema", "OFF").map_err(sql)?;
        conn.pragma_update(None, "cell_size_check", "ON").map_err(sql)?;
        let mut db = Self { conn, held_bytes: 0 };
        if fresh {
            let tx = db.conn.transaction_with_behavior(TransactionBehavior::Exclusive).map_err(sql)?;
            tx.execute_batch(SCHEMA).map_err(sql)?;
            tx.execute("INSERT INTO meta (key, value) VALUES ('item_tag', ?1), ('seq_floor', 0)", [tag])
                .map_err(sql)?;
            tx.pragma_update(None, "application_id", APPLICATION_ID).map_err(sql)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(sql)?;
            tx.commit().map_err(sql)?;
            return Ok(db);
        }
        // The structure of every page (not the records: their checksums are checked by
        // `recover`): a truncated or damaged file is refused here, with SQLite's finding.
        let check: String = db.conn.pragma_query_value(None, "quick_check", |r| r.get(0)).map_err(sql)?;
        if check != "ok" {
            return Err(DiskStoreError::NotAStore {
                path: path.to_path_buf(),
                reason: format!("damaged database: {check}"),
            });
        }
        if version != SCHEMA_VERSION {
            return Err(DiskStoreError::Version { found: version, expected: SCHEMA_VERSION });
        }
        let found: Option<i64> = db
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'item_tag'", [], |r| r.get(0))
            .optional()
            .map_err(sql)?;
        let found = found.and_then(|t| u32::try_from(t).ok()).ok_or_else(|| DiskStoreError::NotAStore {
            path: path.to_path_buf(),
            reason: "damaged batch store: its item type tag is missing".into(),
        })?;
        if found != tag {
            return Err(DiskStoreError::ItemType { expected: tag, found });
        }
        db.count_bytes().map_err(sql)?;
        Ok(db)
    }

    fn count_bytes(&mut self) -> rusqlite::Result<()> {
        let bytes: i64 =
            self.conn.query_row("SELECT coalesce(sum(length(record)), 0) FROM batches", [], |r| r.get(0))?;
        self.held_bytes = bytes.cast_unsigned();
        Ok(())
    }

    fn serve(mut self, jobs: &mpsc::Receiver<Job>, check: &Check) {
        while let Ok((op, reply)) = jobs.recv() {
            if matches!(op, Op::Close) {
                drop(self);
                let _ = reply.send(Ok(Reply::Done));
                return;
            }
            let result = self.run(op, check);
            let _ = reply.send(result);
        }
    }

    fn run(&mut self, op: Op, check: &Check) -> Result<Reply, Failure> {
        match op {
            Op::Recover => self.recover(check).map(Reply::Recovered),
            Op::Append { seq, record, max_bytes } => {
                let len = record.len() as u64;
                if max_bytes.is_some_and(|max| self.held_bytes.saturating_add(len) > max) {
                    return Err(Failure::Full);
                }
                self.conn
                    .prepare_cached("INSERT INTO batches (seq, record) VALUES (?1, ?2)")?
                    .execute(params![seq, record])?;
                self.held_bytes += len;
                Ok(Reply::Done)
            }
            Op::ReadAfter { after } => {
                let found = self
                    .conn
                    .prepare_cached("SELECT seq, record FROM batches WHERE seq > ?1 ORDER BY seq LIMIT 1")?
                    .query_row([after], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                Ok(Reply::Record(found))
            }
            Op::Remove { seq } => {
                // One transaction: the batch goes, and the floor stays above its seq.
                let tx = self.conn.transaction()?;
                let len: Option<i64> = tx
                    .prepare_cached("DELETE FROM batches WHERE seq = ?1 RETURNING length(record)")?
                    .query_row([seq], |r| r.get(0))
                    .optional()?;
                raise_floor(&tx, seq.saturating_add(1))?;
                tx.commit()?;
                self.held_bytes = self.held_bytes.saturating_sub(len.map_or(0, i64::cast_unsigned));
                Ok(Reply::Done)
            }
            Op::Quarantine { seq, problem } => {
                let tx = self.conn.transaction()?;
                quarantine(&tx, seq, &problem)?;
                tx.commit()?;
                self.count_bytes()?;
                Ok(Reply::Done)
            }
            Op::PersistFloor { floor } => {
                let tx = self.conn.transaction()?;
                raise_floor(&tx, floor)?;
                tx.commit()?;
                Ok(Reply::Done)
            }
            Op::Close => Ok(Reply::Done),
        }
    }

    fn recover(&mut self, check: &Check) -> Result<Scan, Failure> {
        let mut recovered = Recovered::default();
        let mut skipped = Vec::new();
        {
            let mut st = self.conn.prepare("SELECT seq, record FROM batches ORDER BY seq")?;
            let mut rows = st.query([])?;
            while let Some(row) = rows.next()? {
                let key: i64 = row.get(0)?;
                let seq = key.cast_unsigned();
                let bytes = row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
                match check(bytes) {
                    Ok((found, count)) if found == seq => {
                        recovered.batches += 1;
                        recovered.items += u64::from(count);
                    }
                    Ok((found, _)) => skipped.push((seq, Problem::SeqMismatch { found })),
                    Err(c) => skipped.push((seq, Problem::Corrupt(c))),
                }
            }
        }
        if !skipped.is_empty() {
            let tx = self.conn.transaction()?;
            for (seq, problem) in &skipped {
                quarantine(&tx, seq.cast_signed(), &problem.to_string())?;
            }
            tx.commit()?;
            self.count_bytes()?;
        }
        let floor: i64 =
            self.conn.query_row("SELECT value FROM meta WHERE key = 'seq_floor'", [], |r| r.get(0))?;
        let highest: Option<i64> = self.conn.query_row(
            "SELECT max(seq) FROM (SELECT max(seq) AS seq FROM batches UNION ALL SELECT max(seq) FROM quarantine)",
            [],
            |r| r.get(0),
        )?;
        let above = highest.map_or(0, |h| h.saturating_add(1));
        recovered.seq_floor = floor.max(above).max(0).cast_unsigned();
        Ok(Scan { recovered, skipped })
    }
}

fn raise_floor(tx: &rusqlite::Transaction<'_>, floor: i64) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE meta SET value = max(value, ?1) WHERE key = 'seq_floor'")?.execute([floor])?;
    Ok(())
}

fn quarantine(tx: &rusqlite::Transaction<'_>, seq: i64, problem: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO quarantine (seq, record, problem) SELECT seq, record, ?2 FROM batches WHERE seq = ?1",
    )?
    .execute(params![seq, problem])?;
    tx.prepare_cached("DELETE FROM batches WHERE seq = ?1")?.execute([seq])?;
    Ok(())
}

/// Creates the file readable and writable by its owner only, if it does not exist, and makes its
/// directory entry durable.
fn create_owner_only(path: &Path) -> Result<(), DiskStoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(file) => {
            file.sync_all()?;
            #[cfg(unix)]
            if let Some(dir) = path.parent() {
                let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if std::fs::metadata(path)?.is_file() {
                Ok(())
            } else {
                Err(DiskStoreError::NotAStore {
                    path: path.to_path_buf(),
                    reason: "not a regular file".into(),
                })
            }
        }
        Err(e) => Err(e.into()),
    }
}
