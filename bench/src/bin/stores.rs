//! Disk store candidates on the store's own workload, every commit durable (fsync): redb, SQLite
//! (rusqlite, bundled) in WAL mode and in rollback-journal mode, both with `synchronous=FULL`,
//! and fjall with `PersistMode::SyncAll` on every write batch.
//!
//! The workload is what `batch_tokio::DiskStore` does: one batch record (100 readings of 32
//! bytes, encoded with `batch_core::store::record::Codec`, about 2.5 KB) per transaction, keyed by
//! its seq; read the oldest; remove the oldest, one per transaction. Figures:
//!
//! - append: batches/s appending to an empty store;
//! - steady: cycles/s with a backlog of 100 batches, one cycle being append + read oldest +
//!   decode + remove oldest (two durable commits);
//! - recover: opening a store of 10,000 batches and checking every record (decode with the
//!   codec), after a clean close and after the writing process was killed with SIGKILL in the
//!   middle of appending (redb then repairs the file, SQLite rolls back its journal or replays
//!   its WAL, fjall replays its journal).
//!
//! Repetitions are interleaved: in the append and steady phases all candidates are open at once
//! and take turns every 10 operations (in an order that rotates), so a drift in the disk's
//! `fsync` latency hits all of them alike; the recovery phases run each candidate once per round,
//! in an order that rotates from round to round. The figures are medians with the range over
//! rounds.
//!
//! `cargo run --release -p batch-bench --features stores --bin stores -- [--rounds R] [--appends N]
//! [--cycles N] [--recover N] [--dir PATH]` (the directory must be on the disk to measure; the
//! default is the system temp directory). Results go to docs/bench/stores.md by hand.

#![allow(clippy::cast_precision_loss, reason = "counts and rates far below 2^52")]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use batch_core::store::StoredBatch;
use batch_core::store::record::Codec;
use serde::{Deserialize, Serialize};

/// One 32-byte reading, as a gateway would batch them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Reading {
    ts: u64,
    sensor: u32,
    value: f64,
    flags: [u8; 12],
}

const TAG: u32 = 0x5EAD_0001;
const ITEMS: usize = 100;
const BACKLOG: u64 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Redb,
    SqliteWal,
    SqliteRollback,
    Fjall,
    /// The store as built: `batch_tokio::DiskStore` (SQLite WAL, FULL) through its thread.
    DiskStore,
}

const KINDS: [Kind; 5] = [Kind::Redb, Kind::SqliteWal, Kind::SqliteRollback, Kind::Fjall, Kind::DiskStore];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Redb => "redb 2.6 (Durability::Immediate, 1PC+C)",
            Kind::SqliteWal => "SQLite WAL, synchronous=FULL",
            Kind::SqliteRollback => "SQLite rollback journal (DELETE), synchronous=FULL",
            Kind::Fjall => "fjall 2.11 (PersistMode::SyncAll)",
            Kind::DiskStore => "batch_tokio::DiskStore (the choice, as built: SQLite WAL, FULL, own thread)",
        }
    }
    fn short(self) -> &'static str {
        match self {
            Kind::Redb => "redb",
            Kind::SqliteWal => "sqlite-wal",
            Kind::SqliteRollback => "sqlite-rollback",
            Kind::Fjall => "fjall",
            Kind::DiskStore => "disk-store",
        }
    }
    fn from_short(s: &str) -> Option<Self> {
        KINDS.into_iter().find(|k| k.short() == s)
    }
}

/// The operations a disk store needs, each durable when it returns.
trait Db {
    fn append(&mut self, seq: u64, record: &[u8]);
    /// Appends many records in one durable transaction (to fill a store quickly).
    fn fill(&mut self, records: &mut dyn Iterator<Item = (u64, Vec<u8>)>);
    fn oldest(&mut self) -> Option<(u64, Vec<u8>)>;
    fn remove(&mut self, seq: u64);
    /// Visits every record in seq order.
    fn scan(&mut self, f: &mut dyn FnMut(u64, &[u8]));
    /// What a store does when it is opened after a restart: checks every record, returns how
    /// many are valid.
    fn recover(&mut self, codec: Codec) -> u64 {
        let mut items = Vec::with_capacity(ITEMS);
        let mut n = 0;
        let mut last = 0;
        self.scan(&mut |seq, bytes| {
            assert!(seq > last);
            last = seq;
            check(codec, seq, bytes, &mut items);
            n += 1;
        });
        n
    }
}

fn open(kind: Kind, dir: &Path) -> Box<dyn Db> {
    match kind {
        Kind::Redb => Box::new(redb_db::Redb::open(&dir.join("store.redb"))),
        Kind::SqliteWal => Box::new(sqlite_db::Sqlite::open(&dir.join("store.sqlite"), "WAL")),
        Kind::SqliteRollback => Box::new(sqlite_db::Sqlite::open(&dir.join("store.sqlite"), "DELETE")),
        Kind::Fjall => Box::new(fjall_db::Fjall::open(&dir.join("store.fjall"))),
        Kind::DiskStore => Box::new(disk_store_db::Disk::open(&dir.join("store.db"))),
    }
}

mod redb_db {
    use std::path::Path;

    use redb::{Database, Durability, ReadableTable, TableDefinition};

    const BATCHES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("batches");

    pub(crate) struct Redb {
        db: Database,
    }

    impl Redb {
        pub(crate) fn open(path: &Path) -> Self {
            let db = Database::builder().create_with_file_format_v3(true).create(path).unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(BATCHES).unwrap();
            tx.commit().unwrap();
            Self { db }
        }
    }

    impl super::Db for Redb {
        fn append(&mut self, seq: u64, record: &[u8]) {
            let mut tx = self.db.begin_write().unwrap();
            tx.set_durability(Durability::Immediate);
            tx.open_table(BATCHES).unwrap().insert(seq, record).unwrap();
            tx.commit().unwrap();
        }
        fn fill(&mut self, records: &mut dyn Iterator<Item = (u64, Vec<u8>)>) {
            let tx = self.db.begin_write().unwrap();
            {
                let mut t = tx.open_table(BATCHES).unwrap();
                for (seq, rec) in records {
                    t.insert(seq, rec.as_slice()).unwrap();
                }
            }
            tx.commit().unwrap();
        }
        fn oldest(&mut self) -> Option<(u64, Vec<u8>)> {
            let tx = self.db.begin_read().unwrap();
            let t = tx.open_table(BATCHES).unwrap();
            let (k, v) = t.first().unwrap()?;
            Some((k.value(), v.value().to_vec()))
        }
        fn remove(&mut self, seq: u64) {
            let mut tx = self.db.begin_write().unwrap();
            tx.set_durability(Durability::Immediate);
            tx.open_table(BATCHES).unwrap().remove(seq).unwrap();
            tx.commit().unwrap();
        }
        fn scan(&mut self, f: &mut dyn FnMut(u64, &[u8])) {
            let tx = self.db.begin_read().unwrap();
            let t = tx.open_table(BATCHES).unwrap();
            for entry in t.iter().unwrap() {
                let (k, v) = entry.unwrap();
                f(k.value(), v.value());
            }
        }
    }
}

mod sqlite_db {
    use std::path::Path;

    use rusqlite::{Connection, OptionalExtension, params};

    pub(crate) struct Sqlite {
        conn: Connection,
    }

    impl Sqlite {
        pub(crate) fn open(path: &Path, journal: &str) -> Self {
            let conn = Connection::open(path).unwrap();
            let mode: String =
                conn.pragma_update_and_check(None, "journal_mode", journal, |r| r.get(0)).unwrap();
            assert!(mode.eq_ignore_ascii_case(journal), "journal_mode {mode}");
            conn.pragma_update(None, "synchronous", "FULL").unwrap();
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS batches (seq INTEGER PRIMARY KEY, record BLOB NOT NULL)",
            )
            .unwrap();
            Self { conn }
        }
    }

    impl super::Db for Sqlite {
        fn append(&mut self, seq: u64, record: &[u8]) {
            let seq = i64::try_from(seq).unwrap();
            self.conn
                .prepare_cached("INSERT INTO batches (seq, record) VALUES (?1, ?2)")
                .unwrap()
                .execute(params![seq, record])
                .unwrap();
        }
        fn fill(&mut self, records: &mut dyn Iterator<Item = (u64, Vec<u8>)>) {
            let tx = self.conn.transaction().unwrap();
            {
                let mut st = tx.prepare_cached("INSERT INTO batches (seq, record) VALUES (?1, ?2)").unwrap();
                for (seq, rec) in records {
                    st.execute(params![i64::try_from(seq).unwrap(), rec]).unwrap();
                }
            }
            tx.commit().unwrap();
        }
        fn oldest(&mut self) -> Option<(u64, Vec<u8>)> {
            self.conn
                .prepare_cached("SELECT seq, record FROM batches ORDER BY seq LIMIT 1")
                .unwrap()
                .query_row([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
                .optional()
                .unwrap()
                .map(|(s, r)| (u64::try_from(s).unwrap(), r))
        }
        fn remove(&mut self, seq: u64) {
            self.conn
                .prepare_cached("DELETE FROM batches WHERE seq = ?1")
                .unwrap()
                .execute([i64::try_from(seq).unwrap()])
                .unwrap();
        }
        fn scan(&mut self, f: &mut dyn FnMut(u64, &[u8])) {
            let mut st = self.conn.prepare_cached("SELECT seq, record FROM batches ORDER BY seq").unwrap();
            let mut rows = st.query([]).unwrap();
            while let Some(row) = rows.next().unwrap() {
                let seq: i64 = row.get(0).unwrap();
                let rec = row.get_ref(1).unwrap().as_blob().unwrap();
                f(u64::try_from(seq).unwrap(), rec);
            }
        }
    }
}

mod fjall_db {
    use std::path::Path;

    use fjall::{Config, Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};

    pub(crate) struct Fjall {
        keyspace: Keyspace,
        batches: PartitionHandle,
    }

    impl Fjall {
        pub(crate) fn open(path: &Path) -> Self {
            let keyspace = Config::new(path).open().unwrap();
            let batches = keyspace.open_partition("batches", PartitionCreateOptions::default()).unwrap();
            Self { keyspace, batches }
        }
    }

    impl super::Db for Fjall {
        fn append(&mut self, seq: u64, record: &[u8]) {
            let mut b = self.keyspace.batch().durability(Some(PersistMode::SyncAll));
            b.insert(&self.batches, seq.to_be_bytes(), record);
            b.commit().unwrap();
        }
        fn fill(&mut self, records: &mut dyn Iterator<Item = (u64, Vec<u8>)>) {
            let mut b = self.keyspace.batch().durability(Some(PersistMode::SyncAll));
            for (seq, rec) in records {
                b.insert(&self.batches, seq.to_be_bytes(), rec);
            }
            b.commit().unwrap();
        }
        fn oldest(&mut self) -> Option<(u64, Vec<u8>)> {
            let (k, v) = self.batches.first_key_value().unwrap()?;
            Some((u64::from_be_bytes(k[..].try_into().unwrap()), v.to_vec()))
        }
        fn remove(&mut self, seq: u64) {
            let mut b = self.keyspace.batch().durability(Some(PersistMode::SyncAll));
            b.remove(&self.batches, seq.to_be_bytes());
            b.commit().unwrap();
        }
        fn scan(&mut self, f: &mut dyn FnMut(u64, &[u8])) {
            for kv in self.batches.iter() {
                let (k, v) = kv.unwrap();
                f(u64::from_be_bytes(k[..].try_into().unwrap()), &v);
            }
        }
    }
}

mod disk_store_db {
    use std::path::{Path, PathBuf};

    use batch_core::store::Store;
    use batch_core::store::record::Codec;
    use batch_tokio::DiskStore;
    use rusqlite::{Connection, params};

    use super::{ITEMS, Reading, TAG};

    pub(crate) struct Disk {
        rt: tokio::runtime::Runtime,
        store: Option<DiskStore<Reading>>,
        path: PathBuf,
        codec: Codec,
        buf: Vec<u8>,
    }

    impl Disk {
        pub(crate) fn open(path: &Path) -> Self {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let store = Some(rt.block_on(DiskStore::open(path, TAG)).unwrap());
            Self { rt, store, path: path.to_path_buf(), codec: Codec::new(TAG), buf: vec![0; 8192] }
        }
        fn store(&mut self) -> &mut DiskStore<Reading> {
            self.store.as_mut().unwrap()
        }
    }

    impl super::Db for Disk {
        fn append(&mut self, seq: u64, record: &[u8]) {
            let mut items = Vec::with_capacity(ITEMS);
            let batch = self.codec.decode(record, &mut items).unwrap();
            assert_eq!(batch.seq, seq);
            let store = self.store.as_mut().unwrap();
            self.rt.block_on(store.append(batch, &items)).unwrap();
        }
        /// Fills the file through SQLite directly (the store's `batches` table), as fast as the
        /// other candidates' fills: appending 10,000 batches one durable commit at a time would
        /// take a minute.
        fn fill(&mut self, records: &mut dyn Iterator<Item = (u64, Vec<u8>)>) {
            let store = self.store.take().unwrap();
            self.rt.block_on(store.close());
            let mut conn = Connection::open(&self.path).unwrap();
            let tx = conn.transaction().unwrap();
            for (seq, rec) in records {
                tx.execute(
                    "INSERT INTO batches (seq, record) VALUES (?1, ?2)",
                    params![i64::try_from(seq).unwrap(), rec],
                )
                .unwrap();
            }
            tx.commit().unwrap();
            drop(conn);
            self.store = Some(self.rt.block_on(DiskStore::open(&self.path, TAG)).unwrap());
        }
        fn oldest(&mut self) -> Option<(u64, Vec<u8>)> {
            let mut items: Vec<Reading> = Vec::with_capacity(ITEMS);
            let store = self.store.as_mut().unwrap();
            let batch = self.rt.block_on(store.read_after(None, &mut items)).unwrap()?;
            Some((batch.seq, self.codec.encode(batch, &items, &mut self.buf).unwrap().to_vec()))
        }
        fn remove(&mut self, seq: u64) {
            let store = self.store.as_mut().unwrap();
            self.rt.block_on(store.remove(seq)).unwrap();
        }
        fn scan(&mut self, _: &mut dyn FnMut(u64, &[u8])) {
            unreachable!("DiskStore recovers with recover()")
        }
        fn recover(&mut self, _: Codec) -> u64 {
            let store = self.store.as_mut().unwrap();
            let r = self.rt.block_on(store.recover()).unwrap();
            assert_eq!(self.store().corrupt().count, 0);
            r.batches
        }
    }
}

fn record(codec: Codec, seq: u64, buf: &mut [u8]) -> Vec<u8> {
    let items: Vec<Reading> = (0..ITEMS as u64)
        .map(|i| Reading {
            ts: 1_760_000_000_000 + seq * 1000 + i,
            sensor: (i % 16) as u32,
            value: (seq * 31 + i) as f64 * 0.125,
            flags: [(seq % 251) as u8; 12],
        })
        .collect();
    codec.encode(header(seq), &items, buf).unwrap().to_vec()
}

/// Batch `seq`'s header in these records (a birth derived from the seq).
fn header(seq: u64) -> StoredBatch {
    StoredBatch { seq, born_ms: 1_760_000_000_000 + seq * 1000 }
}

fn check(codec: Codec, seq: u64, bytes: &[u8], out: &mut Vec<Reading>) {
    out.clear();
    assert_eq!(codec.decode(bytes, out), Ok(header(seq)));
    assert_eq!(out.len(), ITEMS);
}

struct Opts {
    rounds: usize,
    appends: u64,
    cycles: u64,
    recover: u64,
    dir: PathBuf,
}

fn fresh(dir: &Path, kind: Kind, what: &str) -> PathBuf {
    let d = dir.join(format!("{}-{what}", kind.short()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Operations per candidate before the next candidate's turn: the disk's `fsync` latency drifts
/// (a shared virtual disk), so the candidates take turns in short chunks and see the same drift.
const CHUNK: u64 = 10;

/// Appends `o.appends` batches to an empty store of every candidate, one durable transaction
/// each, the candidates taking turns every `CHUNK` appends: batches/s per candidate.
fn phase_append(o: &Opts, codec: Codec, round: usize) -> Vec<f64> {
    let mut buf = vec![0u8; 8192];
    let recs: Vec<Vec<u8>> = (1..=o.appends).map(|s| record(codec, s, &mut buf)).collect();
    let dirs: Vec<PathBuf> = KINDS.iter().map(|k| fresh(&o.dir, *k, "append")).collect();
    let mut dbs: Vec<Box<dyn Db>> = KINDS.iter().zip(&dirs).map(|(k, d)| open(*k, d)).collect();
    let mut spent = vec![Duration::ZERO; KINDS.len()];
    for (c, first) in (1..=o.appends).step_by(CHUNK as usize).enumerate() {
        let last = (first + CHUNK - 1).min(o.appends);
        for i in (0..KINDS.len()).map(|i| (i + c + round) % KINDS.len()) {
            let t = Instant::now();
            for seq in first..=last {
                dbs[i].append(seq, &recs[seq as usize - 1]);
            }
            spent[i] += t.elapsed();
        }
    }
    drop(dbs);
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
    spent.iter().map(|t| o.appends as f64 / t.as_secs_f64()).collect()
}

/// A backlog of 100 batches; each cycle appends one, reads and decodes the oldest and removes it
/// (two durable transactions). Candidates take turns every `CHUNK` cycles: cycles/s per candidate.
fn phase_steady(o: &Opts, codec: Codec, round: usize) -> Vec<f64> {
    let mut buf = vec![0u8; 8192];
    let total = BACKLOG + o.cycles;
    let recs: Vec<Vec<u8>> = (1..=total).map(|s| record(codec, s, &mut buf)).collect();
    let dirs: Vec<PathBuf> = KINDS.iter().map(|k| fresh(&o.dir, *k, "steady")).collect();
    let mut dbs: Vec<Box<dyn Db>> = KINDS.iter().zip(&dirs).map(|(k, d)| open(*k, d)).collect();
    for db in &mut dbs {
        db.fill(&mut (1..=BACKLOG).map(|s| (s, recs[s as usize - 1].clone())));
    }
    let mut items = Vec::with_capacity(ITEMS);
    let mut spent = vec![Duration::ZERO; KINDS.len()];
    for (c, first) in (BACKLOG + 1..=total).step_by(CHUNK as usize).enumerate() {
        let last = (first + CHUNK - 1).min(total);
        for i in (0..KINDS.len()).map(|i| (i + c + round) % KINDS.len()) {
            let t = Instant::now();
            for seq in first..=last {
                dbs[i].append(seq, &recs[seq as usize - 1]);
                let (oldest, bytes) = dbs[i].oldest().unwrap();
                assert_eq!(oldest, seq - BACKLOG);
                check(codec, oldest, &bytes, &mut items);
                dbs[i].remove(oldest);
            }
            spent[i] += t.elapsed();
        }
    }
    drop(dbs);
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
    spent.iter().map(|t| o.cycles as f64 / t.as_secs_f64()).collect()
}

/// Fills a store with `n` batches in transactions of 1,000.
fn fill(kind: Kind, dir: &Path, n: u64, codec: Codec) -> Box<dyn Db> {
    let mut buf = vec![0u8; 8192];
    let mut db = open(kind, dir);
    let mut next = 1;
    while next <= n {
        let end = (next + 1000).min(n + 1);
        db.fill(&mut (next..end).map(|s| (s, record(codec, s, &mut buf))));
        next = end;
    }
    db
}

/// Opens a store and checks every record: (time, batches found).
fn recover(kind: Kind, dir: &Path, codec: Codec) -> (Duration, u64) {
    let t = Instant::now();
    let mut db = open(kind, dir);
    let n = db.recover(codec);
    (t.elapsed(), n)
}

fn phase_recover_clean(kind: Kind, o: &Opts, codec: Codec) -> Duration {
    let d = fresh(&o.dir, kind, "recover");
    drop(fill(kind, &d, o.recover, codec));
    let (t, n) = recover(kind, &d, codec);
    assert_eq!(n, o.recover);
    let _ = std::fs::remove_dir_all(&d);
    t
}

/// A child process fills the store, then appends one durable batch after another until it is
/// killed with SIGKILL; the parent then times the reopen and check.
fn phase_recover_killed(kind: Kind, o: &Opts, codec: Codec) -> Duration {
    let d = fresh(&o.dir, kind, "killed");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--child", kind.short(), d.to_str().unwrap(), &o.recover.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "filled");
    std::thread::sleep(Duration::from_millis(50));
    child.kill().unwrap();
    child.wait().unwrap();
    let (t, n) = recover(kind, &d, codec);
    assert!(n >= o.recover, "{} lost batches: {n} < {}", kind.short(), o.recover);
    let _ = std::fs::remove_dir_all(&d);
    t
}

fn child(kind: &str, dir: &str, n: &str) {
    let codec = Codec::new(TAG);
    let kind = Kind::from_short(kind).unwrap();
    let n: u64 = n.parse().unwrap();
    let mut db = fill(kind, Path::new(dir), n, codec);
    println!("filled");
    std::io::stdout().flush().unwrap();
    let mut buf = vec![0u8; 8192];
    for seq in n + 1.. {
        db.append(seq, &record(codec, seq, &mut buf));
    }
}

/// Raw 4 KiB `write` + `fdatasync`, appending to a file (its size changes at every sync) or in
/// place in a preallocated file: the disk's ceiling for durable commits.
fn fsync_ceiling(dir: &Path, n: u32, in_place: bool) -> f64 {
    use std::io::{Seek, SeekFrom};
    let p = dir.join("fsync-probe");
    let mut f =
        std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&p).unwrap();
    let block = [0x5au8; 4096];
    if in_place {
        f.set_len(u64::from(n) * 4096).unwrap();
        f.sync_all().unwrap();
    }
    let t = Instant::now();
    for i in 0..n {
        if in_place {
            f.seek(SeekFrom::Start(u64::from(i) * 4096)).unwrap();
        }
        f.write_all(&block).unwrap();
        f.sync_data().unwrap();
    }
    let rate = f64::from(n) / t.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(p);
    rate
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 { v[m] } else { f64::midpoint(v[m - 1], v[m]) }
}

fn summary(v: &[f64], unit: &str) -> String {
    let mut s = v.to_vec();
    let med = median(&mut s);
    let digits = usize::from(med < 100.0);
    let sep = if unit.is_empty() { "" } else { " " };
    format!("{med:.digits$}{sep}{unit} ({:.digits$}–{:.digits$})", s[0], s[s.len() - 1])
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        child(&args[1], &args[2], &args[3]);
        return;
    }
    let mut o = Opts { rounds: 3, appends: 300, cycles: 200, recover: 10_000, dir: std::env::temp_dir() };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{a} needs a value")).clone();
        match a.as_str() {
            "--rounds" => o.rounds = val().parse().unwrap(),
            "--appends" => o.appends = val().parse().unwrap(),
            "--cycles" => o.cycles = val().parse().unwrap(),
            "--recover" => o.recover = val().parse().unwrap(),
            "--dir" => o.dir = PathBuf::from(val()),
            other => panic!("unknown argument {other}"),
        }
    }
    o.dir = o.dir.join(format!("batch-stores-{}", std::process::id()));
    std::fs::create_dir_all(&o.dir).unwrap();
    let codec = Codec::new(TAG);
    let mut buf = vec![0u8; 8192];
    let sample = record(codec, 1, &mut buf);
    println!(
        "record: {ITEMS} readings of 32 bytes, {} bytes encoded; rounds {}, appends {}, cycles {}, recover {}; dir {}",
        sample.len(),
        o.rounds,
        o.appends,
        o.cycles,
        o.recover,
        o.dir.display()
    );

    let n = KINDS.len();
    let mut append = vec![Vec::new(); n];
    let mut steady = vec![Vec::new(); n];
    let mut clean = vec![Vec::new(); n];
    let mut killed = vec![Vec::new(); n];
    let mut ceiling = Vec::new();
    let mut ceiling_in_place = Vec::new();
    for round in 0..o.rounds {
        ceiling.push(fsync_ceiling(&o.dir, 200, false));
        ceiling_in_place.push(fsync_ceiling(&o.dir, 200, true));
        for (i, rate) in phase_append(&o, codec, round).into_iter().enumerate() {
            append[i].push(rate);
        }
        for (i, rate) in phase_steady(&o, codec, round).into_iter().enumerate() {
            steady[i].push(rate);
        }
        for i in (0..n).map(|i| (i + round) % n) {
            clean[i].push(phase_recover_clean(KINDS[i], &o, codec).as_secs_f64() * 1e3);
        }
        for i in (0..n).map(|i| (i + round) % n) {
            killed[i].push(phase_recover_killed(KINDS[i], &o, codec).as_secs_f64() * 1e3);
        }
        eprintln!("round {} of {} done", round + 1, o.rounds);
    }
    let _ = std::fs::remove_dir_all(&o.dir);

    println!("\nraw 4 KiB write + fdatasync, appending to a file: {}", summary(&ceiling, "/s"));
    println!(
        "raw 4 KiB write + fdatasync, in place (preallocated file): {}",
        summary(&ceiling_in_place, "/s")
    );
    println!(
        "\n| candidate | append, batches/s | steady (append + read + remove), cycles/s | recover {} (clean), ms | recover {} (after SIGKILL), ms |",
        o.recover, o.recover
    );
    println!("|---|---|---|---|---|");
    for i in 0..n {
        println!(
            "| {} | {} | {} | {} | {} |",
            KINDS[i].name(),
            summary(&append[i], ""),
            summary(&steady[i], ""),
            summary(&clean[i], ""),
            summary(&killed[i], "")
        );
    }
}
