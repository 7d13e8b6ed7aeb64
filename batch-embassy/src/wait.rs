//! The waiter chain: any number of waiting futures behind one waker slot, no allocator, no
//! `unsafe`, and no polls while nothing changes.
//!
//! Each waiting future keeps, by value, the waker of the waiter that registered before it: the
//! batcher holds only the newest waker (`head`). A state change wakes `head`; every waiter, when
//! polled after a change, first wakes the waker it keeps, so the wake passes down the whole chain
//! and each waiter is polled once per change. A waiter that still cannot go on registers again
//! as the new `head`. A generation counter tells a waiter whether anything changed since it
//! registered: a poll for another reason (a `select` or `join` sibling, a timer) finds the same
//! generation and costs nothing more. A waiter that is dropped, or completes, while it keeps a
//! waker passes it on (and counts as a change, so nobody below it stays unreachable).
//!
//! Invariant: every registered waiter is reachable from `head` through kept wakers, or has been
//! woken since the generation it registered at changed.

use core::task::Waker;

/// The batcher's end of the chain.
pub(crate) struct Chain {
    head: Option<Waker>,
    generation: u32,
}

impl Chain {
    pub(crate) const fn new() -> Self {
        Self { head: None, generation: 0 }
    }

    /// A state change: every waiter will be polled once more. (Out of line: see
    /// `State::settle`.)
    #[inline(never)]
    pub(crate) fn notify(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        if let Some(head) = self.head.take() {
            head.wake();
        }
    }
}

/// A waiting future's place in the chain.
#[derive(Default)]
pub(crate) struct Link {
    /// The waker of the waiter registered just before this one.
    next: Option<Waker>,
    /// The generation this waiter registered at (`None`: not registered).
    seen: Option<u32>,
    /// The waker it registered (a future polled from another task registers again).
    own: Option<Waker>,
}

impl Link {
    /// Call first in every poll: after a change, passes the wake on and forgets the registration.
    pub(crate) fn poll_changed(&mut self, chain: &Chain) {
        if self.seen != Some(chain.generation) {
            self.seen = None;
            if let Some(next) = self.next.take() {
                next.wake();
            }
        }
    }

    /// Waits for the next change (after [`poll_changed`](Self::poll_changed) found the state
    /// not ready).
    pub(crate) fn register(&mut self, chain: &mut Chain, waker: &Waker) {
        if self.seen.is_some() && self.own.as_ref().is_some_and(|own| own.will_wake(waker)) {
            return; // still in the chain, with this waker
        }
        if self.seen.is_some() {
            self.leave(chain); // moved to another task: the old place is of no use
        }
        self.next = chain.head.replace(waker.clone());
        self.seen = Some(chain.generation);
        if !self.own.as_ref().is_some_and(|own| own.will_wake(waker)) {
            self.own = Some(waker.clone());
        }
    }

    /// Leaves the chain (the future completed or is dropped). (Out of line: see
    /// `State::settle`.)
    #[inline(never)]
    pub(crate) fn leave(&mut self, chain: &mut Chain) {
        if let Some(next) = self.next.take() {
            // Whoever keeps this waiter's waker may wake it without a new generation: make
            // one, so the waiters below pass the wake on.
            if self.seen == Some(chain.generation) {
                chain.generation = chain.generation.wrapping_add(1);
            }
            next.wake();
        }
        self.seen = None;
    }

    /// Whether dropping it must take the lock (to pass a kept waker on).
    pub(crate) fn keeps_waker(&self) -> bool {
        self.next.is_some()
    }
}
