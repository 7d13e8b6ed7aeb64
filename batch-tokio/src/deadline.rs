//! Waiting with a deadline that holds wherever the caller awaits: on a tokio runtime with timers
//! (tokio's clock, so paused time works in tests), or anywhere else (`block_on` on a signal
//! thread, a runtime built without timers), on a plain thread that sleeps on the wall clock.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use parking_lot::Mutex;

/// Whether the current context has a tokio runtime with its time driver enabled. Creating a
/// `Sleep` without one panics inside tokio; the panic is caught here (tokio's own panic hook
/// message may still be printed once).
pub(crate) fn tokio_timers_available() -> bool {
    if tokio::runtime::Handle::try_current().is_err() {
        return false;
    }
    std::panic::catch_unwind(|| drop(tokio::time::sleep(Duration::ZERO))).is_ok()
}

/// Runs `fut` until it completes (`Some`) or `limit` has passed (`None`).
pub(crate) async fn within<F: Future>(limit: Duration, fut: F) -> Option<F::Output> {
    if tokio_timers_available() {
        return tokio::time::timeout(limit, fut).await.ok();
    }
    let alarm = WallAlarm::start(limit);
    let mut fut = pin!(fut);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if alarm.rang(cx.waker()) { Poll::Ready(None) } else { Poll::Pending }
    })
    .await
}

/// A wall-clock alarm on its own thread, for callers outside any tokio runtime.
struct WallAlarm {
    state: Arc<Mutex<(bool, Option<Waker>)>>,
}

impl WallAlarm {
    fn start(limit: Duration) -> Self {
        let state = Arc::new(Mutex::new((false, None::<Waker>)));
        let shared = Arc::clone(&state);
        let spawned = std::thread::Builder::new().name("batch-tokio-deadline".into()).spawn(move || {
            std::thread::sleep(limit);
            let waker = {
                let mut st = shared.lock();
                st.0 = true;
                st.1.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        });
        if spawned.is_err() {
            // No thread to keep time: the deadline has passed as far as we can tell.
            state.lock().0 = true;
        }
        Self { state }
    }

    /// Whether the alarm rang; if not, `waker` is woken when it does.
    fn rang(&self, waker: &Waker) -> bool {
        let mut st = self.state.lock();
        if st.0 {
            return true;
        }
        if !st.1.as_ref().is_some_and(|w| w.will_wake(waker)) {
            st.1 = Some(waker.clone());
        }
        false
    }
}
