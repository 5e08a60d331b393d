//! The log ring: a bounded, lock-free, multi-producer ring of whole lines
//! with one consumer at a time (the CPU that holds the drain token), like the
//! Linux printk buffer. Writers never wait: a line either gets its slots or is
//! counted as lost. Only atomics, no `unsafe`: a CPU that stops anywhere
//! (INIT, a parking NMI, an exception) leaves nothing locked that another CPU
//! waits on; the worst it leaves is one reserved, never-finished line, which the
//! consumer skips after a time and counts.
//!
//! A line takes one or more consecutive slots of [`SLOT_BYTES`] bytes: an
//! 8-byte header and [`SLOT_PAYLOAD`] bytes of text. Every header carries a
//! stamp, the slot's absolute index + 1, so a header left from an earlier lap
//! around the ring never passes for a new one. A writer reserves its slots
//! with one compare-exchange on `head`, writes the text and the continuation
//! headers, and publishes the line by storing its first header last (Release).
//! The consumer reads the line at `tail`, then frees its slots by advancing
//! `tail` (Release); writers check `tail` (Acquire) before reserving.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

pub const SLOT_BYTES: usize = 128;
const WORDS: usize = SLOT_BYTES / 8 - 1;
/// Text bytes per slot.
pub const SLOT_PAYLOAD: usize = WORDS * 8;
/// The longest line kept; longer ones are cut by the writer.
pub const MAX_LINE: usize = 1024;

/// Header: bits 11:0 line length (first slot), 14:12 level, 15 first slot of a
/// line, 63:16 stamp (absolute slot index + 1, 48 bits).
const LEN_MASK: u64 = 0xfff;
const LEVEL_SHIFT: u32 = 12;
const FIRST: u64 = 1 << 15;
const STAMP_SHIFT: u32 = 16;
const STAMP_MASK: u64 = (1 << 48) - 1;
/// `lost_at` holds `head + 1` of the first unreported loss; 0 (none) keeps
/// a new ring all zeros, so a `static` ring goes into .bss, not the image.
const NO_LOSS: u64 = 0;

struct Slot {
    header: AtomicU64,
    words: [AtomicU64; WORDS],
}

impl Slot {
    const fn new() -> Slot {
        Slot { header: AtomicU64::new(0), words: [const { AtomicU64::new(0) }; WORDS] }
    }
}

const fn stamp(index: u64) -> u64 {
    (index.wrapping_add(1) & STAMP_MASK) << STAMP_SHIFT
}

/// Slots a line of `len` bytes takes (an empty line takes one).
pub const fn slots_for(len: usize) -> u64 {
    if len == 0 {
        1
    } else {
        len.div_ceil(SLOT_PAYLOAD) as u64
    }
}

/// What the consumer finds at the tail.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Next {
    /// Nothing written.
    Empty,
    /// A writer reserved the next slot but has not published its line (yet).
    Pending,
    /// A complete line: its level byte, length and slot count.
    Line { level: u8, len: usize, slots: u64 },
}

/// Losses to report, with where in the stream they belong.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Losses {
    /// Lines dropped because the ring was full.
    pub full: u64,
    /// Slots skipped because their writer never finished its line.
    pub abandoned: u64,
}

pub struct LogRing<const N: usize> {
    /// Next slot to reserve (absolute index; the slot is `head % N`).
    head: AtomicU64,
    /// First slot the consumer has not freed.
    tail: AtomicU64,
    /// Lines lost to a full ring since the last report.
    lost: AtomicU64,
    /// `head + 1` when the first unreported loss happened (the report goes at `head`), or NO_LOSS.
    lost_at: AtomicU64,
    lost_total: AtomicU64,
    abandoned: AtomicU64,
    /// The drain token: 0 free, else the holder's id (CPU index + 1).
    owner: AtomicU32,
    slots: [Slot; N],
}

impl<const N: usize> Default for LogRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> LogRing<N> {
    pub const fn new() -> Self {
        LogRing {
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            lost_at: AtomicU64::new(NO_LOSS),
            lost_total: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
            owner: AtomicU32::new(0),
            slots: [const { Slot::new() }; N],
        }
    }

    pub const fn capacity(&self) -> usize {
        N
    }

    fn slot(&self, index: u64) -> &Slot {
        &self.slots[(index % N as u64) as usize]
    }

    /// The longest line this ring keeps whole.
    pub const fn max_line(&self) -> usize {
        if N * SLOT_PAYLOAD < MAX_LINE {
            N * SLOT_PAYLOAD
        } else {
            MAX_LINE
        }
    }

    /// Append one line (cut to `max_line()` bytes) with a level byte (0..=7).
    /// Never waits: false if the ring is full, and the loss is counted.
    pub fn push(&self, level: u8, line: &[u8]) -> bool {
        self.append(level, line, true)
    }

    /// As `push`, but a full ring is not counted as a loss: for a writer that
    /// will drain and try again.
    pub fn try_push(&self, level: u8, line: &[u8]) -> bool {
        self.append(level, line, false)
    }

    fn append(&self, level: u8, line: &[u8], count_loss: bool) -> bool {
        let len = line.len().min(self.max_line());
        let n = slots_for(len);
        let mut h = self.head.load(Ordering::Relaxed);
        loop {
            let t = self.tail.load(Ordering::Acquire);
            if h + n > t + N as u64 {
                // Full (or `h` is stale and the retry below refreshes it).
                let now = self.head.load(Ordering::Relaxed);
                if now != h {
                    h = now;
                    continue;
                }
                if !count_loss {
                    return false;
                }
                self.lost.fetch_add(1, Ordering::AcqRel);
                self.lost_total.fetch_add(1, Ordering::AcqRel);
                let _ = self.lost_at.compare_exchange(NO_LOSS, h + 1, Ordering::AcqRel, Ordering::Relaxed);
                return false;
            }
            match self.head.compare_exchange_weak(h, h + n, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => h = now,
            }
        }
        for (k, chunk) in line[..len].chunks(SLOT_PAYLOAD).enumerate() {
            let slot = self.slot(h + k as u64);
            for (w, bytes) in chunk.chunks(8).enumerate() {
                let mut word = [0u8; 8];
                word[..bytes.len()].copy_from_slice(bytes);
                slot.words[w].store(u64::from_le_bytes(word), Ordering::Relaxed);
            }
        }
        for k in 1..n {
            self.slot(h + k).header.store(stamp(h + k), Ordering::Release);
        }
        let first = stamp(h) | FIRST | ((level as u64 & 7) << LEVEL_SHIFT) | len as u64;
        self.slot(h).header.store(first, Ordering::Release);
        true
    }

    /// Lines lost to a full ring over the whole run.
    pub fn lost_total(&self) -> u64 {
        self.lost_total.load(Ordering::Acquire)
    }

    /// Take the drain token for `id` (non-zero). None if anyone holds it,
    /// this `id` included (a drain interrupted on this CPU is not re-entered).
    pub fn try_consume(&self, id: u32) -> Option<Consumer<'_, N>> {
        self.owner.compare_exchange(0, id, Ordering::Acquire, Ordering::Relaxed).ok().map(|_| Consumer {
            ring: self,
            id,
            release: true,
        })
    }

    /// Who holds the drain token (0: nobody).
    pub fn consumer_id(&self) -> u32 {
        self.owner.load(Ordering::Acquire)
    }

    /// Take the drain token for a final drain: from nobody, from this `id`
    /// itself (a drain this CPU was in when it failed; that drain never
    /// resumes, so the token stays held afterwards), or from `steal_from`, a
    /// holder the caller knows has stopped.
    pub fn consume_final(&self, id: u32, steal_from: Option<u32>) -> Option<Consumer<'_, N>> {
        match self.owner.compare_exchange(0, id, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => Some(Consumer { ring: self, id, release: true }),
            Err(holder) if holder == id => Some(Consumer { ring: self, id, release: false }),
            Err(holder) if Some(holder) == steal_from => self
                .owner
                .compare_exchange(holder, id, Ordering::Acquire, Ordering::Relaxed)
                .ok()
                .map(|_| Consumer { ring: self, id, release: true }),
            Err(_) => None,
        }
    }

    /// Give the token back if `id` holds it (a CPU about to stop for good).
    pub fn release_if_held(&self, id: u32) {
        let _ = self.owner.compare_exchange(id, 0, Ordering::Release, Ordering::Relaxed);
    }

    #[cfg(test)]
    fn reserve_without_publishing(&self, n: u64) {
        self.head.fetch_add(n, Ordering::AcqRel);
    }
}

/// The one consumer: holds the drain token while alive.
pub struct Consumer<'a, const N: usize> {
    ring: &'a LogRing<N>,
    id: u32,
    release: bool,
}

impl<const N: usize> Drop for Consumer<'_, N> {
    fn drop(&mut self) {
        if self.release {
            self.ring.release_if_held(self.id);
        }
    }
}

impl<const N: usize> Consumer<'_, N> {
    fn tail(&self) -> u64 {
        self.ring.tail.load(Ordering::Acquire)
    }

    /// What waits at the tail.
    pub fn next(&self) -> Next {
        let t = self.tail();
        if t == self.ring.head.load(Ordering::Acquire) {
            return Next::Empty;
        }
        let header = self.ring.slot(t).header.load(Ordering::Acquire);
        if header & !(FIRST | (7 << LEVEL_SHIFT) | LEN_MASK) != stamp(t) || header & FIRST == 0 {
            return Next::Pending;
        }
        let len = (header & LEN_MASK) as usize;
        let slots = slots_for(len);
        // The first header is stored last, so the others are in place; a
        // mismatch means a writer that stalled a whole lap wrote over them.
        if (1..slots).any(|k| self.ring.slot(t + k).header.load(Ordering::Acquire) != stamp(t + k)) {
            return Next::Pending;
        }
        Next::Line { level: ((header >> LEVEL_SHIFT) & 7) as u8, len, slots }
    }

    /// Copy the line at the tail (as `next` described it) into `out`; returns its length.
    pub fn read(&self, len: usize, out: &mut [u8]) -> usize {
        let t = self.tail();
        let len = len.min(out.len());
        for (k, chunk) in out[..len].chunks_mut(SLOT_PAYLOAD).enumerate() {
            let slot = self.ring.slot(t + k as u64);
            for (w, bytes) in chunk.chunks_mut(8).enumerate() {
                let word = slot.words[w].load(Ordering::Relaxed).to_le_bytes();
                bytes.copy_from_slice(&word[..bytes.len()]);
            }
        }
        len
    }

    /// Free the `slots` slots of the line just read.
    pub fn release(&self, slots: u64) {
        self.ring.tail.store(self.tail() + slots, Ordering::Release);
    }

    /// Skip one slot whose writer never published (the caller waited long
    /// enough to be sure); counted and reported as abandoned.
    pub fn skip_pending(&self) {
        self.ring.abandoned.fetch_add(1, Ordering::AcqRel);
        self.release(1);
    }

    /// Losses to report now: abandoned slots at once, full-ring losses once
    /// the tail reaches the place they happened (at the latest when the ring
    /// is empty: a loss happens at or before `head`).
    pub fn take_losses(&self) -> Losses {
        let abandoned = self.ring.abandoned.swap(0, Ordering::AcqRel);
        let at = self.ring.lost_at.load(Ordering::Acquire);
        let mut full = 0;
        if at != NO_LOSS && self.tail() >= at - 1 {
            // Clear the position first: a loss counted after the swap sets it again.
            self.ring.lost_at.store(NO_LOSS, Ordering::Release);
            full = self.ring.lost.swap(0, Ordering::AcqRel);
        }
        Losses { full, abandoned }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::String;
    use std::sync::Arc;
    use std::vec::Vec;

    fn drain<const N: usize>(ring: &LogRing<N>) -> Vec<(u8, String)> {
        let c = ring.try_consume(1).expect("token");
        let mut out = Vec::new();
        let mut buf = [0u8; MAX_LINE];
        while let Next::Line { level, len, slots } = c.next() {
            let n = c.read(len, &mut buf);
            out.push((level, String::from_utf8(buf[..n].to_vec()).unwrap()));
            c.release(slots);
        }
        out
    }

    #[test]
    fn lines_come_out_whole_and_in_order() {
        let ring = LogRing::<16>::new();
        let long: String = (0..300).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        assert!(ring.push(3, b"first"));
        assert!(ring.push(1, long.as_bytes()));
        assert!(ring.push(5, b""));
        let got = drain(&ring);
        assert_eq!(got, [(3, "first".into()), (1, long), (5, String::new())]);
        let c = ring.try_consume(1).unwrap();
        assert_eq!(c.next(), Next::Empty);
    }

    #[test]
    fn long_lines_are_cut_and_wrap_around_the_end() {
        let ring = LogRing::<12>::new();
        for _ in 0..3 {
            // 9 + 9 slots do not fit in 12 together: drain between them.
            let line = [b'x'; 2000];
            assert!(ring.push(2, &line));
            let got = drain(&ring);
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].1.len(), MAX_LINE);
        }
    }

    #[test]
    fn a_full_ring_counts_its_losses_and_reports_them_where_they_happened() {
        let ring = LogRing::<4>::new();
        assert!(ring.push(3, b"kept 1"));
        for i in 0..3 {
            assert!(ring.push(3, std::format!("kept {}", i + 2).as_bytes()));
        }
        assert!(!ring.try_push(3, b"not counted"));
        assert_eq!(ring.lost_total(), 0);
        assert!(!ring.push(3, b"lost 1"));
        assert!(!ring.push(3, b"lost 2"));
        assert_eq!(ring.lost_total(), 2);
        let c = ring.try_consume(1).unwrap();
        // Not yet: the losses come after the four kept lines.
        assert_eq!(c.take_losses(), Losses::default());
        let mut buf = [0u8; 64];
        for _ in 0..4 {
            let Next::Line { len, slots, .. } = c.next() else { panic!() };
            c.read(len, &mut buf);
            c.release(slots);
        }
        assert_eq!(c.take_losses(), Losses { full: 2, abandoned: 0 });
        assert_eq!(c.take_losses(), Losses::default(), "reported once");
        drop(c);
        assert!(ring.push(3, b"after"));
        assert_eq!(drain(&ring), [(3, "after".into())]);
    }

    #[test]
    fn a_loss_is_reported_once_the_lines_before_it_are_out() {
        let ring = LogRing::<1>::new();
        assert!(ring.push(1, b"a"));
        assert!(!ring.push(1, b"b"));
        let c = ring.try_consume(7).unwrap();
        assert_eq!(c.take_losses().full, 0);
        let Next::Line { slots, .. } = c.next() else { panic!() };
        c.release(slots);
        assert_eq!(c.next(), Next::Empty);
        assert_eq!(c.take_losses().full, 1);
    }

    #[test]
    fn a_writer_that_stopped_mid_line_is_skipped_and_counted() {
        let ring = LogRing::<16>::new();
        assert!(ring.push(3, b"before"));
        ring.reserve_without_publishing(2); // reserved two slots, then INIT
        assert!(ring.push(3, b"after"));
        let c = ring.try_consume(1).unwrap();
        let mut buf = [0u8; 64];
        let Next::Line { len, slots, .. } = c.next() else { panic!() };
        let n = c.read(len, &mut buf);
        assert_eq!(&buf[..n], b"before");
        c.release(slots);
        assert_eq!(c.next(), Next::Pending);
        c.skip_pending();
        assert_eq!(c.next(), Next::Pending);
        c.skip_pending();
        let Next::Line { len, .. } = c.next() else { panic!() };
        let n = c.read(len, &mut buf);
        assert_eq!(&buf[..n], b"after");
        assert_eq!(c.take_losses(), Losses { full: 0, abandoned: 2 });
    }

    #[test]
    fn stale_headers_from_an_earlier_lap_are_not_lines() {
        let ring = LogRing::<10>::new();
        for i in 0..25 {
            assert!(ring.push(3, std::format!("line {i}").as_bytes()));
            assert_eq!(drain(&ring).len(), 1);
        }
        // Reserve the next slot without publishing: its header is 10 laps old.
        ring.reserve_without_publishing(1);
        assert_eq!(ring.try_consume(1).unwrap().next(), Next::Pending);
    }

    #[test]
    fn one_consumer_at_a_time() {
        let ring = LogRing::<16>::new();
        let c = ring.try_consume(1).unwrap();
        assert!(ring.try_consume(2).is_none());
        assert!(ring.try_consume(1).is_none(), "not re-entered on the same CPU");
        assert!(ring.consume_final(2, None).is_none());
        let nested = ring.consume_final(1, None).expect("the holder's own final drain");
        drop(nested);
        assert_eq!(ring.consumer_id(), 1, "a nested final drain leaves the token held");
        assert!(ring.consume_final(3, Some(1)).is_some(), "taken from a stopped holder");
        drop(c);
        assert_eq!(ring.consumer_id(), 0);
        ring.release_if_held(5);
        assert!(ring.try_consume(5).is_some());
    }

    /// Eight writers and one reader at once: every line arrives whole, each
    /// writer's lines in its order, and sent = received + lost.
    #[test]
    fn concurrent_writers_and_a_reader() {
        const WRITERS: usize = 8;
        const LINES: usize = 3000;
        let ring = Arc::new(LogRing::<64>::new());
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (ring, done) = (ring.clone(), done.clone());
                std::thread::spawn(move || {
                    let mut sent = 0;
                    for i in 0..LINES {
                        let pad = "=".repeat((i * 37 + w * 11) % 400);
                        let line = std::format!("w{w} {i} {pad} end{i}");
                        sent += ring.push(w as u8 % 8, line.as_bytes()) as usize;
                    }
                    done.fetch_add(1, Ordering::AcqRel);
                    sent
                })
            })
            .collect();
        let mut last = [None::<usize>; WRITERS];
        let mut received = 0;
        let mut buf = [0u8; MAX_LINE];
        let mut lost = 0;
        loop {
            let finished = done.load(Ordering::Acquire) == WRITERS;
            let Some(c) = ring.try_consume(1) else { continue };
            let mut got_any = false;
            while let Next::Line { level, len, slots } = c.next() {
                let n = c.read(len, &mut buf);
                let line = String::from(std::str::from_utf8(&buf[..n]).unwrap());
                c.release(slots);
                got_any = true;
                let mut words = line.split(' ');
                let w: usize = words.next().unwrap()[1..].parse().unwrap();
                let i: usize = words.next().unwrap().parse().unwrap();
                assert_eq!(level as usize, w % 8);
                assert!(line.ends_with(&std::format!(" end{i}")), "torn line: {line}");
                assert_eq!(line.len(), std::format!("w{w} {i}  end{i}").len() + (i * 37 + w * 11) % 400);
                assert!(last[w].is_none_or(|p| p < i), "out of order for writer {w}");
                last[w] = Some(i);
                received += 1;
            }
            lost += c.take_losses().full;
            if finished && !got_any && c.next() == Next::Empty {
                break;
            }
        }
        let sent: usize = writers.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(sent, received);
        assert_eq!(sent as u64 + lost, (WRITERS * LINES) as u64);
        assert_eq!(ring.lost_total(), lost);
    }
}
