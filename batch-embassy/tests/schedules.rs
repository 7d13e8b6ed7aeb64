//! The wake/lock protocol under randomized schedules (`shuttle`): producers on a full buffer,
//! `flush` callers, two runners, pause/resume and shutdown, interleaved at every `.await` in
//! thousands of seeded orders (on one core, an embassy executor switches tasks only at `.await`:
//! these are exactly the interleavings a firmware meets). A lost wake-up leaves a task waiting
//! with nothing left to wake it: shuttle reports that as a deadlock and the test fails. Every
//! run also checks the contract: every item accepted reaches a final outcome exactly once, in
//! order per producer, a `flush` resolves only once what it covers is final, and the counters
//! add up.
#![allow(missing_docs, clippy::cast_possible_truncation)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use batch_embassy::{BatchInfo, Batcher, Config, Handler, millis};
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_time::{Duration, MockDriver};
use heapless::VecView;

/// Small enough that producers meet a full buffer, two flight slots so two runners race.
type B = Batcher<CriticalSectionRawMutex, u32, 4, 2>;

const CONFIG: Config = Config::new()
    .max_batch(3)
    .linger(millis(10))
    .max_in_flight(2)
    .max_attempts(2)
    .retry_delays(millis(5), millis(5));

const PRODUCERS: u32 = 2;
const ITEMS: u32 = 6;

#[derive(Default)]
struct Record {
    /// `(seq, items)` per delivered batch.
    delivered: Vec<(u64, Vec<u32>)>,
    /// `(seq, items)` per dead-lettered batch.
    dead: Vec<(u64, Vec<u32>)>,
}

struct Sink(Arc<Mutex<Record>>);

impl Handler<u32> for Sink {
    type Error = ();
    async fn handle(&mut self, batch: &[u32], info: BatchInfo) -> Result<(), ()> {
        // Fails some first attempts (a deterministic rule: the schedule is what varies).
        let fail = info.attempt == 1 && (info.seq + u64::from(batch[0])).is_multiple_of(3);
        shuttle::future::yield_now().await;
        if fail {
            return Err(());
        }
        self.0.lock().unwrap().delivered.push((info.seq, batch.to_vec()));
        Ok(())
    }
    fn dead_letter(&mut self, items: &mut VecView<u32>, info: BatchInfo, (): ()) {
        self.0.lock().unwrap().dead.push((info.seq, items.to_vec()));
    }
}

fn scenario() {
    MockDriver::get().reset();
    let batcher: &'static B = Box::leak(Box::new(Batcher::new(CONFIG)));
    let record = Arc::new(Mutex::new(Record::default()));
    let done = Arc::new(AtomicBool::new(false));

    // Virtual time moves in small steps at random points between the other tasks' steps. It
    // stops after a bound: if work is still waiting then, nothing can wake it (a lost wake-up),
    // and shuttle reports the deadlock.
    let clock = {
        let done = Arc::clone(&done);
        shuttle::future::spawn(async move {
            for _ in 0..5_000 {
                if done.load(Ordering::SeqCst) {
                    return;
                }
                MockDriver::get().advance(Duration::from_millis(1));
                shuttle::future::yield_now().await;
            }
        })
    };
    let runners: Vec<_> = (0..2)
        .map(|_| {
            let record = Arc::clone(&record);
            shuttle::future::spawn(async move {
                let mut runner = batcher.runner(Sink(record));
                runner.run().await;
            })
        })
        .collect();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            shuttle::future::spawn(async move {
                for i in 0..ITEMS {
                    let item = p * 100 + i;
                    if i % 2 == 0 {
                        assert_eq!(batcher.add(item).await, Ok(None));
                    } else {
                        // try_add, yielding while full: the item comes back each time.
                        let mut item = item;
                        loop {
                            match batcher.try_add(item) {
                                Ok(None) => break,
                                Err(batch_embassy::PushError::Full(back)) => item = back,
                                other => panic!("unexpected {other:?}"),
                            }
                            shuttle::future::yield_now().await;
                        }
                    }
                }
            })
        })
        .collect();
    let flusher = shuttle::future::spawn(async move {
        shuttle::future::yield_now().await;
        let before = batcher.metrics().accepted;
        batcher.flush().await;
        let m = batcher.metrics();
        assert!(
            m.settled() >= before,
            "flush resolved with {} settled of {before} accepted before it",
            m.settled()
        );
    });
    let pauser = shuttle::future::spawn(async move {
        batcher.pause();
        for _ in 0..3 {
            shuttle::future::yield_now().await;
        }
        batcher.resume();
    });

    shuttle::future::block_on(async move {
        for p in producers {
            p.await.unwrap();
        }
        pauser.await.unwrap();
        flusher.await.unwrap();
        batcher.shutdown().await;
        for r in runners {
            r.await.unwrap();
        }
        done.store(true, Ordering::SeqCst);
        clock.await.unwrap();
    });

    // Every item exactly once, in order per producer (batches in seq order), counters add up.
    let rec = record.lock().unwrap();
    let mut batches: Vec<&(u64, Vec<u32>)> = rec.delivered.iter().chain(&rec.dead).collect();
    batches.sort_by_key(|(seq, _)| *seq);
    let items: Vec<u32> = batches.iter().flat_map(|(_, items)| items.iter().copied()).collect();
    for p in 0..PRODUCERS {
        let mine: Vec<u32> = items.iter().copied().filter(|i| i / 100 == p).collect();
        let expected: Vec<u32> = (0..ITEMS).map(|i| p * 100 + i).collect();
        assert_eq!(mine, expected, "producer {p}: every item once, in order");
    }
    let m = batcher.metrics();
    assert!(m.is_consistent(), "{m:?}");
    let delivered: usize = rec.delivered.iter().map(|(_, i)| i.len()).sum();
    let dead: usize = rec.dead.iter().map(|(_, i)| i.len()).sum();
    assert_eq!((m.accepted, m.delivered, m.dead_lettered), (12, delivered as u64, dead as u64), "{m:?}");
    assert!(batcher.is_finished());
}

/// 2,000 random schedules, then 1,000 PCT schedules (probabilistic concurrency testing, biased
/// towards the orderings that expose bugs of small depth), per CI run; shuttle prints a failing
/// schedule for replay. One test: the mock clock is global, so the two must not run at once.
#[test]
fn random_schedules_lose_no_wake_up_and_no_item() {
    shuttle::check_random(scenario, 2_000);
    shuttle::check_pct(scenario, 1_000, 3);
}
