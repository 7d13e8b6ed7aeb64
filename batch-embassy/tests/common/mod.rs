//! A tiny multi-task executor on embassy-time's mock clock, for tests that count polls per task
//! or need tasks that are woken separately (one waker per task, as on an embassy executor).
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

use embassy_time::{Duration, Instant, MockDriver};

/// The mock clock is global: tests take turns.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

struct Task<'a> {
    fut: Option<Pin<Box<dyn Future<Output = ()> + 'a>>>,
    flag: Arc<Flag>,
    waker: Waker,
    polls: u64,
}

/// Tasks polled only when their own waker fired; virtual time advances by 1 ms whenever no task
/// is woken.
#[derive(Default)]
pub struct Exec<'a> {
    tasks: Vec<Task<'a>>,
    /// Polls of all tasks so far (a busy loop shows up here, not as a hang).
    pub total_polls: u64,
}

impl<'a> Exec<'a> {
    pub fn new() -> Self {
        Self { tasks: Vec::new(), total_polls: 0 }
    }

    /// Adds a task; returns its id.
    pub fn spawn(&mut self, fut: impl Future<Output = ()> + 'a) -> usize {
        let flag = Arc::new(Flag(AtomicBool::new(true)));
        let waker = Waker::from(Arc::clone(&flag));
        self.tasks.push(Task { fut: Some(Box::pin(fut)), flag, waker, polls: 0 });
        self.tasks.len() - 1
    }

    /// How often task `id` was polled.
    pub fn polls(&self, id: usize) -> u64 {
        self.tasks[id].polls
    }

    /// Whether task `id` completed.
    pub fn is_done(&self, id: usize) -> bool {
        self.tasks[id].fut.is_none()
    }

    /// Drops task `id` (cancels it) if it is still running.
    pub fn cancel(&mut self, id: usize) {
        self.tasks[id].fut = None;
    }

    /// Runs until `done()` or for `span` of virtual time, whichever comes first; panics after
    /// `max_polls` polls in total (a busy loop). Returns whether `done()` became true.
    pub fn run_until(&mut self, span: Duration, max_polls: u64, mut done: impl FnMut(&Self) -> bool) -> bool {
        let end = Instant::now() + span;
        loop {
            if done(self) {
                return true;
            }
            let mut any = false;
            for i in 0..self.tasks.len() {
                let task = &mut self.tasks[i];
                if task.fut.is_none() || !task.flag.0.swap(false, Ordering::SeqCst) {
                    continue;
                }
                any = true;
                task.polls += 1;
                self.total_polls += 1;
                assert!(self.total_polls <= max_polls, "busy loop: {} polls", self.total_polls);
                let mut cx = Context::from_waker(&task.waker);
                if let Some(fut) = task.fut.as_mut()
                    && let Poll::Ready(()) = fut.as_mut().poll(&mut cx)
                {
                    task.fut = None;
                }
                if done(self) {
                    return true;
                }
            }
            if !any {
                if Instant::now() >= end {
                    return false;
                }
                MockDriver::get().advance(Duration::from_millis(1));
            }
        }
    }

    /// Runs until every task completed; panics if that takes longer than `span` of virtual time.
    pub fn run_all(&mut self, span: Duration, max_polls: u64) {
        let finished = self.run_until(span, max_polls, |e| e.tasks.iter().all(|t| t.fut.is_none()));
        let pending: Vec<usize> = (0..self.tasks.len()).filter(|&i| !self.is_done(i)).collect();
        assert!(finished, "tasks {pending:?} still pending after {span:?} of virtual time");
    }

    /// Runs for `span` of virtual time (tasks may stay pending).
    pub fn run_for(&mut self, span: Duration, max_polls: u64) {
        let _ = self.run_until(span, max_polls, |_| false);
    }
}
