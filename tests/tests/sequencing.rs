//! Strict sequencing (the Batcher README): FIFO order, growing sequence numbers, one handler
//! call at a time by default (queued flushes run back to back), items arriving mid-flush go to
//! the next batch, and errors go to the error callback without halting later batches.
#![allow(missing_docs)]

use batch_tests::{Cause, Letters, Log, ms, settle};
use batch_tokio::handler::Batch;
use batch_tokio::{Batcher, Trigger};

#[tokio::test(start_paused = true)]
async fn sequence_numbers_start_at_zero_and_grow_by_one() {
    let log = Log::new();
    let b = Batcher::builder().capacity(64).max_batch(4).linger(ms(10)).spawn(log.handler()).unwrap();
    for i in 0..30 {
        b.add(i).await.unwrap();
        if i % 9 == 0 {
            tokio::time::sleep(ms(15)).await;
        }
    }
    b.flush().await;
    let seqs: Vec<_> = log.calls().iter().map(|c| c.seq).collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    assert_eq!(log.delivered(), (0..30).collect::<Vec<_>>(), "FIFO across batches");
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn handler_calls_never_overlap_with_the_default_max_in_flight() {
    let log = Log::new();
    let b = Batcher::builder()
        .capacity(16)
        .max_batch(2)
        .linger(ms(3))
        .spawn(
            log.handler()
                .latency_by(|batch: &Batch<u32>| ms(1 + batch.seq() % 5))
                .fail_when(|batch: &Batch<u32>| batch.seq() % 4 == 1 && batch.attempt() == 1),
        )
        .unwrap();
    let mut producers = Vec::new();
    for p in 0..3u32 {
        let b = b.clone();
        producers.push(tokio::spawn(async move {
            for n in 0..20 {
                b.add(p * 100 + n).await.unwrap();
                if n % 3 == p {
                    tokio::time::sleep(ms(2)).await;
                }
            }
        }));
    }
    for p in producers {
        p.await.unwrap();
    }
    b.flush().await;
    assert_eq!(log.max_running(), 1, "an in-handler counter saw two calls at once");
    let calls = log.calls();
    for w in calls.windows(2) {
        assert!(w[0].end.unwrap() <= w[1].start, "{:?} overlaps {:?}", w[0], w[1]);
    }
    assert_eq!(log.delivered().len(), 60);
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn batch_n_plus_one_starts_only_after_batch_n_is_final() {
    let log = Log::new();
    let letters = Letters::new();
    let b = Batcher::builder()
        .max_batch(1)
        .max_attempts(3)
        .on_error(letters.callback())
        .spawn(log.handler().fail_when(|batch: &Batch<u32>| batch.seq() == 0))
        .unwrap();
    b.add_many([0, 1]).await.unwrap();
    b.flush().await;
    let order: Vec<_> = log.calls().iter().map(|c| (c.seq, c.attempt)).collect();
    assert_eq!(order, [(0, 1), (0, 2), (0, 3), (1, 1)]);
    assert_eq!(letters.all()[0].at, ms(300));
    assert_eq!(log.attempts_of(1)[0].start, ms(300), "started when 0 was dead-lettered");
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn items_arriving_mid_flush_go_to_the_next_batch() {
    let log = Log::new();
    let b =
        Batcher::builder().max_batch(100).linger(ms(1_000)).spawn(log.handler().latency(ms(300))).unwrap();
    b.add_many(["sensor-1", "sensor-2"]).await.unwrap();
    let flush = {
        let b = b.clone();
        tokio::spawn(async move { b.flush().await })
    };
    tokio::time::sleep(ms(100)).await; // the first batch is with the handler
    b.add("sensor-3").await.unwrap();
    flush.await.unwrap();
    b.flush().await;
    assert_eq!(log.delivered_batches(), vec![vec!["sensor-1", "sensor-2"], vec!["sensor-3"]]);
    let calls = log.calls();
    assert_eq!(calls[1].start, ms(300), "queued behind the running batch");
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn errors_go_to_the_callback_and_later_batches_are_still_delivered() {
    let log = Log::new();
    let letters = Letters::new();
    let b = Batcher::builder()
        .max_batch(3)
        .max_attempts(1)
        .on_error(letters.callback())
        .spawn(log.handler().fail_when(|batch: &Batch<u32>| batch.seq() == 1))
        .unwrap();
    b.add_many(0..9).await.unwrap();
    b.flush().await;
    assert_eq!(log.delivered(), vec![0, 1, 2, 6, 7, 8]);
    let all = letters.all();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].items, vec![3, 4, 5]);
    assert!(matches!(&all[0].cause, Cause::Handler(msg) if msg.contains("batch 1")));
    b.add(9).await.unwrap();
    b.flush().await;
    assert_eq!(log.delivered().last(), Some(&9), "still running after the error");
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn queued_flushes_run_back_to_back_in_order() {
    let log = Log::new();
    let b =
        Batcher::builder().max_batch(100).linger(ms(60_000)).spawn(log.handler().latency(ms(50))).unwrap();
    let mut flushes = Vec::new();
    for i in 0..4 {
        b.add(i).await.unwrap();
        let f = b.clone();
        flushes.push(tokio::spawn(async move { f.flush().await }));
        settle().await;
    }
    for f in flushes {
        f.await.unwrap();
    }
    let calls = log.calls();
    // The first flush takes [0]; the rest queue behind it, and the next cut takes all that is
    // buffered by then.
    assert_eq!(log.delivered(), vec![0, 1, 2, 3]);
    assert_eq!(calls[0].items, vec![0]);
    for w in calls.windows(2) {
        assert_eq!(w[1].start, w[0].end.unwrap(), "back to back");
    }
    assert!(calls.iter().all(|c| c.trigger == Trigger::Manual));
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn interleaved_producers_keep_acceptance_order() {
    let log = Log::new();
    let b = Batcher::builder().capacity(32).max_batch(5).linger(ms(4)).spawn(log.handler()).unwrap();
    let mut tasks = Vec::new();
    for p in 0..4u32 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..25u32 {
                b.add((p, n)).await.unwrap();
                tokio::time::sleep(ms(u64::from(1 + (p + n) % 3))).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    b.flush().await;
    let delivered = log.delivered();
    assert_eq!(delivered.len(), 100);
    for p in 0..4 {
        let mine: Vec<_> = delivered.iter().filter(|(q, _)| *q == p).map(|(_, n)| *n).collect();
        assert_eq!(mine, (0..25).collect::<Vec<_>>());
    }
    b.shutdown().await;
}
