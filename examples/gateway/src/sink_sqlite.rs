//! The default sink: one SQLite transaction per batch, through a prepared (cached) insert.
//!
//! rusqlite is blocking, so each attempt runs on tokio's blocking pool (`spawn_blocking`) with
//! the connection behind a `Mutex`. The batcher runs one batch at a time here
//! (`max_in_flight(1)`): SQLite has a single writer anyway, and it keeps rows in arrival order,
//! which the self-check verifies.
//!
//! With `--store`, the database is kept across runs ([`open_kept`]) and each row records the
//! sequence number of the batch that delivered it: a batch redelivered after a crash (at least
//! once) appears twice with the same content, and a reader deduplicates by `(sensor, seq)`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use batch_tokio::handler::{Batch, BoxError, Handler};
use rusqlite::{CachedStatement, Connection, params};

use crate::check::SinkContents;
use crate::report::Baseline;
use crate::rng::Faults;
use crate::sensors::Reading;
use crate::stats::DeliveryStats;

/// The table. `id` is the rowid, so it records insertion order; `batch` is the delivering
/// batch's sequence number (NULL in the unbatched baseline).
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS readings (
    id           INTEGER PRIMARY KEY,
    sensor       INTEGER NOT NULL,
    seq          INTEGER NOT NULL,
    temperature  REAL    NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    batch        INTEGER
)";

/// The insert every batch (and the baseline) runs, prepared once per connection.
const INSERT: &str =
    "INSERT INTO readings (sensor, seq, temperature, timestamp_ms, batch) VALUES (?1, ?2, ?3, ?4, ?5)";

/// Deletes `path` and its journal files, then creates a fresh database with the schema.
///
/// WAL with `synchronous = FULL`: every commit is durable (fsync of the WAL), which is what a
/// gateway that acknowledges readings wants, and what makes one transaction per row costly.
pub(crate) fn create(path: &Path) -> rusqlite::Result<Connection> {
    remove(path);
    open_kept(path).map(|(conn, _)| conn)
}

/// Opens the database at `path`, creating it if missing and keeping what it holds (`--store`);
/// also returns the last row id already there (0 when new): this run's rows come after it.
pub(crate) fn open_kept(path: &Path) -> rusqlite::Result<(Connection, i64)> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute(SCHEMA, [])?;
    let last: i64 = conn.query_row("SELECT COALESCE(MAX(id), 0) FROM readings", [], |r| r.get(0))?;
    Ok((conn, last))
}

/// Removes a database file and its `-wal`, `-shm` and `-journal` companions, if present.
pub(crate) fn remove(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(name));
    }
}

/// Writes each batch in one transaction.
#[derive(Debug)]
pub(crate) struct SqliteSink {
    conn: Arc<Mutex<Connection>>,
    stats: Arc<DeliveryStats>,
    faults: Arc<Faults>,
}

impl SqliteSink {
    /// A sink over an open connection; `faults` decides which attempts fail half-way.
    pub(crate) fn new(conn: Connection, stats: Arc<DeliveryStats>, faults: Arc<Faults>) -> Self {
        Self { conn: Arc::new(Mutex::new(conn)), stats, faults }
    }
}

impl Handler<Reading> for SqliteSink {
    type Error = BoxError;

    async fn handle(&self, batch: &mut Batch<Reading>) -> Result<(), BoxError> {
        let conn = Arc::clone(&self.conn);
        // A cheap handle on the same items (no copy); the blocking task drops it when done.
        let items = batch.share();
        let seq = i64::try_from(batch.seq()).unwrap_or(i64::MAX);
        let fail = self.faults.should_fail();
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || insert_batch(&conn, &items, seq, fail)).await;
        self.stats.attempt(started.elapsed());
        result??;
        self.stats.delivered(batch, Instant::now());
        Ok(())
    }
}

/// An attempt failed on purpose (`--fail-rate`).
#[derive(Debug)]
struct InjectedFault {
    written: usize,
    len: usize,
}

impl std::fmt::Display for InjectedFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "injected failure after {} of {} rows (transaction rolled back)", self.written, self.len)
    }
}

impl std::error::Error for InjectedFault {}

/// Inserts `readings` in one transaction. With `fail`, stops half-way and returns an error:
/// dropping the uncommitted transaction rolls it back, so a retry cannot duplicate rows.
fn insert_batch(
    conn: &Mutex<Connection>,
    readings: &[Reading],
    batch: i64,
    fail: bool,
) -> Result<(), BoxError> {
    let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare_cached(INSERT)?;
        let written = if fail { readings.len() / 2 } else { readings.len() };
        for r in &readings[..written] {
            insert_one(&mut insert, r, Some(batch))?;
        }
        if fail {
            return Err(InjectedFault { written, len: readings.len() }.into());
        }
    }
    tx.commit()?;
    Ok(())
}

/// Runs the prepared insert for one reading. SQLite integers are `i64`; sequence numbers and
/// millisecond timestamps stay far below `i64::MAX`.
fn insert_one(insert: &mut CachedStatement<'_>, r: &Reading, batch: Option<i64>) -> rusqlite::Result<usize> {
    let seq = i64::try_from(r.seq).unwrap_or(i64::MAX);
    let ts = i64::try_from(r.timestamp_ms).unwrap_or(i64::MAX);
    insert.execute(params![r.sensor, seq, r.temperature, ts, batch])
}

/// The comparison: inserts up to `max_rows` readings into a fresh database at `path`, one row
/// per transaction, stopping early after `budget`. The file is removed afterwards.
pub(crate) fn baseline(
    path: &Path,
    max_rows: u64,
    sensors: u32,
    budget: Duration,
) -> rusqlite::Result<Baseline> {
    let mut conn = create(path)?;
    let start = Instant::now();
    let mut rows = 0;
    while rows < max_rows && start.elapsed() < budget {
        let r = Reading::synthetic(rows, sensors);
        let tx = conn.transaction()?;
        insert_one(&mut tx.prepare_cached(INSERT)?, &r, None)?;
        tx.commit()?;
        rows += 1;
    }
    let took = start.elapsed();
    drop(conn);
    remove(path);
    Ok(Baseline { label: "one row per transaction", unit: "row", rows, took })
}

/// Reads back the rows this run wrote (those after row `after`; 0: all), for the self-check.
pub(crate) fn inspect(path: &Path, after: i64) -> rusqlite::Result<SinkContents> {
    let conn = Connection::open(path)?;
    let count: i64 = conn.query_row("SELECT COUNT(*) FROM readings WHERE id > ?1", [after], |r| r.get(0))?;
    let duplicates: i64 = conn.query_row(
        "SELECT COUNT(*) FROM (SELECT 1 FROM readings WHERE id > ?1 GROUP BY sensor, seq HAVING COUNT(*) > 1)",
        [after],
        |r| r.get(0),
    )?;
    // Insertion order (rowid) must keep each sensor's sequence numbers increasing.
    let mut last_seq: std::collections::HashMap<u32, u64> = std::collections::HashMap::new();
    let mut order_violations = 0;
    let count = u64::try_from(count).unwrap_or(0);
    let duplicates = u64::try_from(duplicates).unwrap_or(u64::MAX);
    let mut keys = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    let mut rows = conn.prepare("SELECT sensor, seq FROM readings WHERE id > ?1 ORDER BY id")?;
    let mut rows = rows.query([after])?;
    while let Some(row) = rows.next()? {
        let (sensor, seq): (u32, i64) = (row.get(0)?, row.get(1)?);
        let seq = u64::try_from(seq).unwrap_or(u64::MAX);
        if let Some(prev) = last_seq.insert(sensor, seq)
            && seq <= prev
        {
            order_violations += 1;
        }
        keys.push((sensor, seq));
    }
    Ok(SinkContents {
        what: "rows in the database (SELECT COUNT(*))",
        count,
        duplicates,
        order_violations: Some(order_violations),
        keys,
    })
}

/// `--dump-db`: writes every row as `row ID SENSOR SEQ TEMPERATURE TIMESTAMP_MS BATCH` (BATCH
/// `-` when NULL), in insertion order, for `cargo xtask crash`.
pub(crate) fn dump(path: &Path, out: &mut impl std::io::Write) -> Result<u64, BoxError> {
    if !path.is_file() {
        return Err(format!("{} does not exist", path.display()).into());
    }
    // Read-write, so that SQLite can replay a WAL left by a killed writer.
    let conn = Connection::open(path)?;
    let mut rows =
        conn.prepare("SELECT id, sensor, seq, temperature, timestamp_ms, batch FROM readings ORDER BY id")?;
    let mut rows = rows.query([])?;
    let mut n = 0;
    while let Some(row) = rows.next()? {
        let (id, sensor, seq, temperature, ts, batch): (i64, i64, i64, f64, i64, Option<i64>) =
            (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?);
        let batch = batch.map_or_else(|| "-".to_owned(), |b| b.to_string());
        writeln!(out, "row {id} {sensor} {seq} {temperature} {ts} {batch}")?;
        n += 1;
    }
    Ok(n)
}
