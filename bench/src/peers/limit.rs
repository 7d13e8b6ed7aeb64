//! The physical limit: one thread, no synchronisation, filling a buffer and calling the handler
//! when it is full. No linger (nothing else runs, so no batch waits).

use crate::workload::{Item, Tally};

/// Fills a `heapless::Vec<T, B>`, dispatching on the batch size as a const generic.
///
/// # Panics
///
/// For a batch size other than 16, 128 or 1024.
pub(super) fn heapless<T: Item>(batch: usize, n: u64) -> Tally {
    match batch {
        16 => fixed::<T, 16>(n),
        128 => fixed::<T, 128>(n),
        1024 => fixed::<T, 1024>(n),
        other => panic!("the heapless limit is built for batch sizes 16, 128 and 1024, not {other}"),
    }
}

fn fixed<T: Item, const B: usize>(n: u64) -> Tally {
    let mut tally = Tally::default();
    let mut buf: heapless::Vec<T, B> = heapless::Vec::new();
    for i in 0..n {
        if buf.push(T::make(i)).is_err() {
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
pub(super) fn vec<T: Item>(batch: usize, n: u64) -> Tally {
    let mut tally = Tally::default();
    let mut buf: Vec<T> = Vec::with_capacity(batch);
    for i in 0..n {
        buf.push(T::make(i));
        if buf.len() == batch {
            tally.batch(&buf);
            buf.clear();
        }
    }
    tally.batch(&buf);
    tally
}
