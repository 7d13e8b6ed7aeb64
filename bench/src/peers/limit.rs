//! The physical limit: one thread, no synchronisation, filling a buffer and calling the handler
//! when it is full. No linger (nothing else runs, so no batch waits).

use std::sync::Arc;

use super::Shape;
use crate::probe::Probe;
use crate::workload::{Item, Tally};

/// Fills a `heapless::Vec<T, B>`, dispatching on the batch size as a const generic.
///
/// # Panics
///
/// For a batch size other than 16, 128 or 1024.
pub(super) fn heapless<T: Item>(shape: Shape, probe: &Arc<Probe>) -> Tally {
    match shape.batch {
        16 => fixed::<T, 16>(shape.n, probe),
        128 => fixed::<T, 128>(shape.n, probe),
        1024 => fixed::<T, 1024>(shape.n, probe),
        other => panic!("the heapless limit is built for batch sizes 16, 128 and 1024, not {other}"),
    }
}

fn fixed<T: Item, const B: usize>(n: u64, probe: &Arc<Probe>) -> Tally {
    let mut tally = Tally::new(Arc::clone(probe), n);
    let mut buf: heapless::Vec<T, B> = heapless::Vec::new();
    probe.start();
    for i in 0..n {
        if buf.push(probe.item(i)).is_err() {
            unreachable!("the buffer is emptied when full");
        }
        if buf.is_full() {
            tally.batch(&buf);
            buf.clear();
        }
    }
    tally.batch(&buf);
    tally
}

/// Fills a `Vec<T>` with room for one batch.
pub(super) fn vec<T: Item>(shape: Shape, probe: &Arc<Probe>) -> Tally {
    let mut tally = Tally::new(Arc::clone(probe), shape.n);
    let mut buf: Vec<T> = Vec::with_capacity(shape.batch);
    probe.start();
    for i in 0..shape.n {
        buf.push(probe.item(i));
        if buf.len() == shape.batch {
            tally.batch(&buf);
            buf.clear();
        }
    }
    tally.batch(&buf);
    tally
}
