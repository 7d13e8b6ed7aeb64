//! The runner: embassy-net's `Runner::run` shape over the sans-IO core.

use core::future::{Future, poll_fn};
use core::pin::Pin;
use core::task::{Context, Poll};

use batch_core::{Completion, Flush, Outcome};
use embassy_futures::select::select;
use embassy_sync::blocking_mutex::raw::RawMutex;
use embassy_time::Timer;

use crate::batcher::Batcher;
use crate::handler::{BatchInfo, Handler};

/// Delivers a [`Batcher`]'s batches: waits on `Timer::at(deadline)` and on new items, runs the
/// handler with retries per the core's schedule, and hands dead letters to
/// [`Handler::dead_letter`]. It holds one batch buffer (`N` items).
///
/// ```
/// use batch_embassy::{Batcher, BatchInfo, Config};
/// use embassy_sync::blocking_mutex::raw::NoopRawMutex;
///
/// async fn uplink(batcher: &Batcher<NoopRawMutex, u32, 32>) {
///     let mut runner = batcher.runner(async |batch: &[u32], _: BatchInfo| {
///         let _ = batch; // transmit
///         Ok::<(), ()>(())
///     });
///     runner.run().await; // returns after `close`, once drained
/// }
/// ```
pub struct Runner<'a, M: RawMutex, T, const N: usize, const F: usize, H> {
    batcher: &'a Batcher<M, T, N, F>,
    handler: H,
    batch: heapless::Vec<T, N>,
}

impl<M: RawMutex, T, const N: usize, const F: usize, H> core::fmt::Debug for Runner<'_, M, T, N, F, H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Runner").field("holding", &self.batch.len()).finish_non_exhaustive()
    }
}

/// What the runner does next.
enum Step<R> {
    Go(R),
    Wait(Option<embassy_time::Instant>),
    Stop,
}

impl<'a, M: RawMutex, T, const N: usize, const F: usize, H: Handler<T>> Runner<'a, M, T, N, F, H> {
    pub(crate) fn new(batcher: &'a Batcher<M, T, N, F>, handler: H) -> Self {
        Self { batcher, handler, batch: heapless::Vec::new() }
    }

    /// The handler (for reading a stateful uplink's counters after [`run`](Self::run)).
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// Runs until the batcher is closed and drained (forever if it is never closed).
    pub async fn run(&mut self) {
        while let Some(flush) = self.next_batch().await {
            self.deliver(flush).await;
        }
    }

    async fn next_batch(&mut self) -> Option<Flush> {
        loop {
            let batch = &mut self.batch;
            let step = poll_fn(|cx| {
                Poll::Ready(self.batcher.with(|st| {
                    if let Some(flush) = st.core.poll_flush(crate::now(), batch) {
                        st.producers.wake();
                        return Step::Go(flush);
                    }
                    if st.core.is_finished() {
                        st.runners.wake();
                        st.settled.wake();
                        return Step::Stop;
                    }
                    st.runners.register(cx.waker());
                    Step::Wait(st.core.next_cut().map(crate::to_embassy))
                }))
            })
            .await;
            match step {
                Step::Go(flush) => return Some(flush),
                Step::Stop => return None,
                Step::Wait(at) => wait(at).await,
            }
        }
    }

    async fn deliver(&mut self, flush: Flush) {
        let mut info = BatchInfo { seq: flush.seq, attempt: 1, trigger: flush.trigger };
        loop {
            let result = self.handler.handle(&self.batch, info).await;
            let outcome = if result.is_ok() { Outcome::Delivered } else { Outcome::Failed };
            let completion = self.batcher.with(|st| {
                let c = st.core.handle_completion(crate::now(), flush.seq, outcome);
                st.settled.wake();
                st.wake_runners();
                c
            });
            match (completion, result) {
                (Some(Completion::Retry { attempt, .. }), Err(_)) => {
                    #[cfg(feature = "defmt")]
                    defmt::warn!(
                        "batch {} attempt {} failed; retry {} scheduled",
                        flush.seq,
                        info.attempt,
                        attempt
                    );
                    let _ = attempt;
                    info.attempt = self.wait_retry(flush.seq).await;
                }
                (Some(Completion::DeadLettered { .. }), Err(error)) => {
                    self.handler.dead_letter(self.batch.as_mut_view(), info, error);
                    break;
                }
                _ => break,
            }
        }
        self.batch.clear();
        self.batcher.with(|st| st.settled.wake());
    }

    async fn wait_retry(&mut self, seq: u64) -> u32 {
        loop {
            let step = poll_fn(|cx| {
                Poll::Ready(self.batcher.with(|st| {
                    if let Some(attempt) = st.core.poll_retry(crate::now(), seq) {
                        return Step::Go(attempt);
                    }
                    st.runners.register(cx.waker());
                    let at = if st.core.is_paused() { None } else { st.core.retry_at(seq) };
                    Step::Wait(at.map(crate::to_embassy))
                }))
            })
            .await;
            match step {
                Step::Go(attempt) => return attempt,
                Step::Wait(at) => wait(at).await,
                Step::Stop => {}
            }
        }
    }
}

/// Sleeps until `at` (or forever) or until the task is woken through a registered waker.
async fn wait(at: Option<embassy_time::Instant>) {
    match at {
        Some(at) => {
            select(Woken(false), Timer::at(at)).await;
        }
        None => Woken(false).await,
    }
}

/// Pending on its first poll, ready on the next: completes when the task is woken after the
/// waker was registered (in the same critical section as the state check, so no wake is lost).
struct Woken(bool);

impl Future for Woken {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            Poll::Pending
        }
    }
}
