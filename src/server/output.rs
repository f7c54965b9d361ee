//! A connection's pending output: copied bytes, with large values queued by reference.
//!
//! Replies are appended to one buffer as before (the struct derefs to it, so encoders keep
//! writing into a `Vec<u8>`), except that a large value (one with a segment of its own in
//! the store) is queued as a shared [`Bytes`] between two stretches of that buffer instead
//! of being copied. The socket gets the whole queue with one vectored write. So what a
//! connection holds beyond the store's own memory is its copied bytes, which retrieval keeps
//! near [`HIGH_WATER`] by yielding between keys (see [`Output::full`]), and a reference per
//! queued large value: a thousand stalled readers of one 1 MB value hold one megabyte, not
//! a thousand. Why only large values go by reference: copying a small value is cheaper than
//! counting references to it, and the copies are bounded by the cap anyway.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::ops::{Deref, DerefMut};

use bytes::{Buf, Bytes};

use super::buffers;
use crate::protocol::command::ReplyBuf;

/// Pending output (copied and shared) past which a connection writes before doing more:
/// between requests, and between the keys of one multiget.
pub const HIGH_WATER: usize = 256 * 1024;
/// Most slices one vectored write takes.
const MAX_IOV: usize = 64;
/// Replies pending that one pooled unit holds under `-o read_buf_mem_limit`, counted as
/// memcached counts its response objects (each key of a get, each other request: 13 of
/// about 1.2 KB fit the 16 KB bundle its workers take from the same pool as read buffers).
/// Counted so that the cap refuses where memcached's does, whatever the replies' bytes.
pub const RESPONSES_PER_UNIT: usize = 13;

/// A point in the output: copied bytes and shared values queued before it.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    copied: usize,
    shared: usize,
}

#[derive(Default)]
pub struct Output {
    buf: Vec<u8>,
    /// Shared values, each to go out after `buf[..at]`, in order.
    shared: VecDeque<(usize, Bytes)>,
    shared_len: usize,
    /// Bytes of `buf` already written.
    sent: usize,
    /// Bytes charged to the worker's pool for `buf` (see [`buffers`]).
    charged: usize,
    /// Under `-o read_buf_mem_limit`: the replies pending (see [`RESPONSES_PER_UNIT`]), and
    /// the units charged for them beyond the buffer's own.
    limited: bool,
    responses: usize,
    response_units: usize,
}

impl Deref for Output {
    type Target = Vec<u8>;

    #[inline]
    fn deref(&self) -> &Vec<u8> {
        &self.buf
    }
}

impl DerefMut for Output {
    #[inline]
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }
}

impl Output {
    /// An output that counts its replies against the worker's cap when there is one.
    pub fn new() -> Output {
        let mut out = Output::default();
        out.limited = buffers::limited();
        out
    }

    /// Counts the replies of a request that ran (`n` computes how many) while the worker's
    /// buffers are capped; false when the pool has no room left for them, as memcached runs
    /// out of response objects. Without a cap: true, at once.
    #[inline]
    pub fn respond(&mut self, n: impl FnOnce() -> usize) -> bool {
        if !self.limited {
            return true;
        }
        let want = self.responses + n();
        let units = want.saturating_sub(1) / RESPONSES_PER_UNIT;
        while self.response_units < units {
            if !buffers::grow_write(buffers::UNIT) {
                return false;
            }
            self.response_units += 1;
        }
        self.responses = want;
        true
    }

    /// A request counted by [`Output::respond`] did not run after all (it is incomplete).
    pub fn unrespond(&mut self, n: usize) {
        self.responses = self.responses.saturating_sub(n);
    }

    /// Once nothing is pending, the replies counted are done (noreply requests write
    /// nothing): their units go back.
    pub fn settle(&mut self) {
        if self.is_empty() {
            self.forget_responses();
        }
    }

    /// The pending replies are gone (written or dropped): their units go back.
    fn forget_responses(&mut self) {
        if self.response_units > 0 {
            buffers::shrink_write(self.response_units * buffers::UNIT, false);
        }
        self.responses = 0;
        self.response_units = 0;
    }

    /// Whether this connection's output counts against a cap (see [`Output::respond`]).
    pub fn limited(&self) -> bool {
        self.limited
    }

    /// Bytes not yet written, copied and shared.
    #[inline]
    pub fn pending(&self) -> usize {
        self.buf.len() - self.sent + self.shared_len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.pending() == 0
    }

    /// True once the connection should stop to check (see [`Output::must_flush`]): the
    /// output passed the cap or the buffer grew.
    #[inline]
    pub fn full(&self) -> bool {
        self.pending() >= HIGH_WATER || self.buf.capacity() > self.charged
    }

    /// Appends a value: by reference when the store handed one out, else copied.
    #[inline]
    pub fn value(&mut self, value: &[u8], shared: Option<Bytes>) {
        match shared {
            Some(b) if !b.is_empty() => {
                self.shared_len += b.len();
                self.shared.push_back((self.buf.len(), b));
            }
            _ => self.buf.extend_from_slice(value),
        }
    }

    /// Drops everything appended after the first `len` copied bytes (nothing of it written
    /// yet), with any value queued there.
    pub fn truncate_to(&mut self, len: usize) {
        while self.shared.back().is_some_and(|&(at, _)| at >= len) {
            if let Some((_, b)) = self.shared.pop_back() {
                self.shared_len -= b.len();
            }
        }
        self.buf.truncate(len.max(self.sent));
        if self.is_empty() {
            self.forget_responses();
        }
    }

    /// The unwritten output as slices for one vectored write; returns how many it filled.
    pub fn slices<'a>(&'a self, iov: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        let mut from = self.sent;
        for (at, b) in &self.shared {
            if n + 2 > iov.len() {
                return n;
            }
            if *at > from {
                iov[n] = IoSlice::new(&self.buf[from..*at]);
                n += 1;
            }
            iov[n] = IoSlice::new(b);
            n += 1;
            from = *at;
        }
        if from < self.buf.len() && n < iov.len() {
            iov[n] = IoSlice::new(&self.buf[from..]);
            n += 1;
        }
        n
    }

    /// The copied bytes ahead of the first shared value (all of them when none is queued).
    pub fn head(&self) -> &[u8] {
        let end = self.shared.front().map_or(self.buf.len(), |s| s.0);
        &self.buf[self.sent..end]
    }

    /// Where the output ends now, for [`Output::since`].
    pub fn mark(&self) -> Mark {
        Mark {
            copied: self.buf.len(),
            shared: self.shared.len(),
        }
    }

    /// Everything appended since `mark` (nothing written since), with the values queued
    /// there put back in place: for `-vv`, which reads a reply as it goes out.
    pub fn since(&self, mark: Mark) -> std::borrow::Cow<'_, [u8]> {
        let start = mark.copied.min(self.buf.len());
        let queued = self.shared.range(mark.shared.min(self.shared.len())..);
        if queued.len() == 0 {
            return self.buf[start..].into();
        }
        let mut all = Vec::with_capacity(self.buf.len() - start + self.shared_len);
        let mut from = start;
        for (at, b) in queued {
            all.extend_from_slice(&self.buf[from..*at]);
            all.extend_from_slice(b);
            from = *at;
        }
        all.extend_from_slice(&self.buf[from..]);
        all.into()
    }

    pub fn has_shared(&self) -> bool {
        !self.shared.is_empty()
    }

    /// Marks `n` bytes written; once all are, the buffer is emptied for reuse.
    pub fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let mark = self.shared.front().map_or(self.buf.len(), |s| s.0);
            let here = mark - self.sent;
            if n < here || self.shared.is_empty() {
                self.sent += n.min(here);
                break;
            }
            n -= here;
            self.sent = mark;
            if let Some((_, b)) = self.shared.front_mut() {
                let k = n.min(b.len());
                b.advance(k);
                self.shared_len -= k;
                n -= k;
                if b.is_empty() {
                    self.shared.pop_front();
                }
            }
        }
        // Values whose bytes all went out may still sit at the front when `n` ended on
        // their boundary.
        while self
            .shared
            .front()
            .is_some_and(|(at, b)| *at == self.sent && b.is_empty())
        {
            self.shared.pop_front();
        }
        if self.pending() == 0 {
            self.buf.clear();
            self.shared.clear();
            self.sent = 0;
            self.forget_responses();
        }
    }

    /// Takes a buffer from the worker's pool if none is held; false over the cap.
    pub fn ensure(&mut self) -> bool {
        if self.buf.capacity() == 0 {
            let Some(b) = buffers::take_write() else {
                return false;
            };
            self.buf = b;
            self.charged = buffers::UNIT;
        }
        true
    }

    /// Charges the buffer's growth since the last call; false over the cap (the bytes are
    /// there already: the caller writes them out before producing more).
    pub fn charge_growth(&mut self) -> bool {
        let cap = self.buf.capacity();
        if cap <= self.charged {
            return true;
        }
        if !buffers::grow_write(cap - self.charged) {
            return false;
        }
        self.charged = cap;
        true
    }

    /// True when the pending output must be written before more is produced: it passed the
    /// cap, or the buffer grew past what the pool would grant.
    pub fn must_flush(&mut self) -> bool {
        self.pending() >= HIGH_WATER || !self.charge_growth()
    }

    /// Once written out, a buffer that grew past what was charged for it goes back to that
    /// size, so the connection holds no more than the pool granted.
    pub fn drop_growth(&mut self) {
        if self.is_empty() && self.buf.capacity() > self.charged {
            self.buf = Vec::with_capacity(self.charged);
        }
    }

    /// Moves everything pending, copied and shared, into `dst` in order (UDP, which needs
    /// one contiguous message to split into datagrams).
    pub fn drain_into(&mut self, dst: &mut Vec<u8>) {
        loop {
            let n = {
                let (iov, n) = iov(self);
                for s in &iov[..n] {
                    dst.extend_from_slice(s);
                }
                iov[..n].iter().map(|s| s.len()).sum::<usize>()
            };
            if n == 0 {
                break;
            }
            self.advance(n);
        }
    }

    /// Gives the buffer back to the pool once nothing is pending.
    pub fn release(&mut self) {
        self.settle();
        if self.is_empty() && self.buf.capacity() != 0 {
            buffers::give_write(std::mem::take(&mut self.buf), self.charged);
            self.charged = 0;
        }
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if self.buf.capacity() != 0 {
            buffers::shrink_write(self.charged, true);
        }
        self.forget_responses();
    }
}

impl ReplyBuf for Output {
    #[inline]
    fn bytes(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    #[inline]
    fn value(&mut self, value: &[u8], shared: Option<&Bytes>) {
        Output::value(self, value, shared.cloned());
    }
}

/// Slices for one vectored write of `out`.
pub fn iov(out: &Output) -> ([IoSlice<'_>; MAX_IOV], usize) {
    let mut iov = [IoSlice::new(&[]); MAX_IOV];
    let n = out.slices(&mut iov);
    (iov, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(out: &mut Output, step: usize) -> Vec<u8> {
        let mut got = Vec::new();
        while !out.is_empty() {
            let (iov, n) = iov(out);
            let mut all: Vec<u8> = Vec::new();
            for s in &iov[..n] {
                all.extend_from_slice(s);
            }
            let k = step.min(all.len());
            got.extend_from_slice(&all[..k]);
            out.advance(k);
        }
        got
    }

    #[test]
    fn copied_and_shared_parts_come_out_in_order() {
        for step in [1, 2, 3, 5, 7, 100] {
            let mut out = Output::default();
            out.extend_from_slice(b"VALUE a 0 5\r\n");
            out.value(b"hello", Some(Bytes::from_static(b"hello")));
            out.extend_from_slice(b"\r\n");
            out.value(b"xy", None);
            out.value(b"", Some(Bytes::from_static(b"12345")));
            out.value(b"", Some(Bytes::from_static(b"678")));
            out.extend_from_slice(b"END\r\n");
            assert_eq!(out.pending(), 13 + 5 + 2 + 2 + 5 + 3 + 5);
            let got = drain(&mut out, step);
            assert_eq!(got, b"VALUE a 0 5\r\nhello\r\nxy12345678END\r\n");
            assert!(out.is_empty() && out.head().is_empty());
        }
    }

    #[test]
    fn since_puts_queued_values_back_in_place() {
        let mut out = Output::default();
        out.extend_from_slice(b"ab");
        out.value(b"", Some(Bytes::from_static(b"XY")));
        // A value queued last sits where the next reply starts: it is still before the mark.
        let mark = out.mark();
        assert_eq!(&*out.since(mark), b"");
        out.extend_from_slice(b"cd");
        out.value(b"", Some(Bytes::from_static(b"12")));
        out.value(b"", Some(Bytes::from_static(b"3")));
        out.extend_from_slice(b"e");
        assert_eq!(&*out.since(mark), b"cd123e");
        let mut fresh = Output::default();
        let zero = fresh.mark();
        fresh.value(b"", Some(Bytes::from_static(b"Z")));
        fresh.extend_from_slice(b"z");
        assert_eq!(&*fresh.since(zero), b"Zz");
    }

    #[test]
    fn truncate_drops_values_queued_after_the_mark() {
        let mut out = Output::default();
        out.extend_from_slice(b"ab");
        let mark = out.len();
        out.extend_from_slice(b"cd");
        out.value(b"", Some(Bytes::from_static(b"zz")));
        out.truncate_to(mark);
        out.extend_from_slice(b"E");
        assert_eq!(drain(&mut out, 64), b"abE");
    }
}
