//! A one-slot hand-off from a side thread to a hot thread that never makes
//! the hot thread wait.
//!
//! Why not a channel: crossbeam's bounded (and unbounded) channels are fast
//! but not wait-free. A sender first claims a slot, then writes the message
//! and marks the slot written; a receiver that finds a slot claimed but not
//! yet written spins until it is (`Channel::start_recv`, `Backoff::spin`).
//! When the sender is a side thread at normal priority, preempted between
//! the two steps on a core it shares with Redis, a hot thread calling
//! `try_recv` spins for as long as the scheduler keeps the side thread off
//! its core: a rare stall of up to milliseconds on the hot path. (Hot →
//! side hand-offs are fine as channels: a hot thread runs at real-time
//! priority and is not preempted between the two steps by anything that
//! keeps it off for long, and a side thread that spins costs no decision.)
//!
//! A mailbox is one atomic pointer: [`Mailbox::put`] swaps a new box in and
//! [`Mailbox::take`] swaps it out — one `xchg` each, no claim-then-write
//! window for anyone to wait on, no allocation. A `full` flag lets an empty
//! mailbox be checked with a plain load, so a hot thread that looks every
//! event writes no shared cache line. What it holds is always the newest:
//! a second `put` before a `take` returns the first, to be dropped by the
//! side thread that put it.

use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_utils::atomic::AtomicCell;

/// One slot, newest wins; see the module docs.
pub struct Mailbox<T> {
    slot: AtomicCell<Option<Box<T>>>,
    full: AtomicBool,
}

impl<T> std::fmt::Debug for Mailbox<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The slot cannot be read without taking it.
        f.debug_struct("Mailbox")
            .field("full", &self.full.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<T> Default for Mailbox<T> {
    fn default() -> Self {
        Self {
            slot: AtomicCell::new(None),
            full: AtomicBool::new(false),
        }
    }
}

impl<T> Mailbox<T> {
    /// An empty mailbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// A mailbox holding `v`.
    pub fn with(v: Box<T>) -> Self {
        let m = Self::new();
        let _ = m.put(v);
        m
    }

    /// Puts `v` in; returns what was there and not yet taken (superseded:
    /// the caller drops it, off the hot thread).
    pub fn put(&self, v: Box<T>) -> Option<Box<T>> {
        let old = self.slot.swap(Some(v));
        // After the swap: a taker that sees `full` finds the box.
        self.full.store(true, Ordering::Release);
        old
    }

    /// Takes what is there, if anything. Never waits: a load when empty,
    /// two atomic writes when not.
    #[inline]
    pub fn take(&self) -> Option<Box<T>> {
        if !self.full.load(Ordering::Acquire) {
            return None;
        }
        // Cleared before the swap: a `put` racing with this take either
        // lands before the swap (and is taken now) or sets `full` again
        // after it (and is taken next time). `full` may stay set over an
        // empty slot; the next take then finds nothing, harmlessly.
        self.full.store(false, Ordering::Release);
        self.slot.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_slot_is_one_atomic_word() {
        // Otherwise AtomicCell falls back to a lock (a global seqlock whose
        // readers spin): the very wait this type exists to avoid.
        assert!(AtomicCell::<Option<Box<u64>>>::is_lock_free());
    }

    #[test]
    fn take_gives_what_was_put_once_and_the_newest_wins() {
        let m = Mailbox::new();
        assert_eq!(m.take(), None);
        assert_eq!(m.put(Box::new(1)), None);
        assert_eq!(
            m.put(Box::new(2)),
            Some(Box::new(1)),
            "superseded, returned to the putter"
        );
        assert_eq!(m.take(), Some(Box::new(2)));
        assert_eq!(m.take(), None);
        let m = Mailbox::with(Box::new(7));
        assert_eq!(m.take(), Some(Box::new(7)));
    }

    #[test]
    fn racing_puts_and_takes_lose_nothing_and_duplicate_nothing() {
        // Every value put is either taken or handed back by a later put,
        // exactly once, and the last one is taken in the end.
        const N: u64 = 100_000;
        let m = Arc::new(Mailbox::new());
        let putter = {
            let m = Arc::clone(&m);
            std::thread::spawn(move || {
                let mut back = Vec::new();
                for i in 0..N {
                    if let Some(old) = m.put(Box::new(i)) {
                        back.push(*old);
                    }
                }
                back
            })
        };
        let mut taken = Vec::new();
        while !putter.is_finished() {
            if let Some(v) = m.take() {
                taken.push(*v);
            }
        }
        let mut back = putter.join().expect("the putter thread panicked");
        if let Some(v) = m.take() {
            taken.push(*v);
        }
        assert_eq!(taken.last(), Some(&(N - 1)), "the newest is never lost");
        assert!(taken.windows(2).all(|w| w[0] < w[1]), "taken in order");
        back.append(&mut taken);
        back.sort_unstable();
        assert_eq!(back, (0..N).collect::<Vec<_>>());
    }
}
