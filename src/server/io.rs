//! Socket I/O with one system call per read and per write.
//!
//! tokio's streams keep a socket marked readable until a read fails with EAGAIN, so every
//! request would cost a wasted read call. Here a short read (fewer bytes than there was room
//! for) means the socket is drained, and the readiness is cleared at once; the next wait goes
//! straight to the event loop. tokio's readiness ticks make that safe: data that arrives
//! after the read sets readiness again and is not lost.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;

use tokio::io::unix::AsyncFd;

use super::buffers;
use super::output::{self, Output};

/// A non-blocking socket registered with the worker's event loop.
pub struct Socket<S: AsRawFd> {
    fd: AsyncFd<S>,
}

impl<S> Socket<S>
where
    S: AsRawFd,
    for<'a> &'a S: Read + Write,
{
    pub fn new(stream: S) -> io::Result<Socket<S>> {
        // SAFETY: the AsyncFd takes ownership of `stream`, so its descriptor stays open and
        // unchanged for the AsyncFd's whole life.
        let fd = unsafe { AsyncFd::register(stream) }.map_err(|e| e.into_parts().1)?;
        Ok(Socket { fd })
    }

    /// Waits until the socket has data, then reads what is available into `rbuf`, taking a
    /// buffer from the worker's pool only then (an idle connection holds none) and making
    /// room for at least `min` bytes. Ok(Ok(0)) is end of stream.
    pub async fn read_into(
        &self,
        rbuf: &mut ReadBuf,
        min: usize,
    ) -> io::Result<Result<usize, Oom>> {
        loop {
            let mut guard = self.fd.readable().await?;
            let spare = match rbuf.spare(min) {
                Ok(s) => s,
                Err(oom) => return Ok(Err(oom)),
            };
            match guard.try_io(|s| s.get_ref().read(spare)) {
                Ok(Ok(n)) => {
                    if n > 0 && n < spare.len() {
                        guard.clear_ready();
                    }
                    return Ok(Ok(n));
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Waits for data and drops it (a watcher's input is ignored); Ok(0) at end of stream.
    pub async fn discard(&self) -> io::Result<usize> {
        let mut sink = [0u8; 512];
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|s| s.get_ref().read(&mut sink)) {
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes all of `buf`, waiting for the peer to read when its window is full.
    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.write_some(|mut s| s.write(buf)).await?;
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Writes all of `out` (copied bytes and shared values, one vectored write each time
    /// the socket takes data), waiting for the peer to read when its window is full.
    pub async fn write_out(&self, out: &mut Output) -> io::Result<()> {
        while !out.is_empty() {
            let n = if out.has_shared() {
                self.write_some(|mut s| {
                    let (iov, n) = output::iov(out);
                    s.write_vectored(&iov[..n])
                })
                .await?
            } else {
                let head = out.head();
                self.write_some(|mut s| s.write(head)).await?
            };
            out.advance(n);
        }
        Ok(())
    }

    /// One successful write (at least a byte), waiting for room if there is none.
    async fn write_some(&self, mut w: impl FnMut(&S) -> io::Result<usize>) -> io::Result<usize> {
        loop {
            // Sockets are usually writable: try first, wait only if the kernel says so.
            match w(self.fd.get_ref()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut guard = self.fd.writable().await?;
                    match guard.try_io(|s| w(s.get_ref())) {
                        Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(Ok(n)) => return Ok(n),
                        Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                        Ok(Err(e)) => return Err(e),
                        Err(_would_block) => {}
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Why a read buffer could not be had under `-o read_buf_mem_limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oom {
    /// No buffer at all for a connection that holds none.
    Take,
    /// Not enough to grow the one it holds (a request larger than a buffer).
    Grow,
}

/// The read buffer: initialized bytes with a window `[start, end)` of unparsed input. The
/// memory comes from the worker's pool (see [`buffers`]) and goes back once no input waits.
#[derive(Default)]
pub struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes charged to the pool for `buf`.
    charged: usize,
}

impl ReadBuf {
    /// Unparsed bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Unparsed bytes, to rewrite in place.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Room to read into, at least `min` bytes: takes a buffer if none is held, compacts,
    /// then grows if needed.
    pub fn spare(&mut self, min: usize) -> Result<&mut [u8], Oom> {
        if self.buf.is_empty() {
            self.buf = buffers::take_read().ok_or(Oom::Take)?;
            self.charged = buffers::UNIT;
        }
        if self.buf.len() - self.end < min {
            self.compact();
            if self.buf.len() - self.end < min {
                let want = (self.end + min).max(self.buf.len() * 2);
                if !self.grow_to(want) {
                    return Err(Oom::Grow);
                }
            }
        }
        Ok(&mut self.buf[self.end..])
    }

    /// Sizes the buffer for a request of `whole` bytes at the front of the input, so a
    /// large value is read into a buffer of its own size, not one doubled past it. Left as
    /// it is if the pool's cap refuses: the next read reports that.
    pub fn expect(&mut self, whole: usize) {
        if self.buf.is_empty() || self.buf.len() - self.start >= whole {
            return;
        }
        self.compact();
        self.grow_to(whole);
    }

    /// Moves the unparsed input to the front of the buffer.
    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// Grows the buffer (whose input starts at 0) to at least `want` bytes, into the
    /// worker's spare grown buffer when it is big enough; false if the pool's cap refuses.
    fn grow_to(&mut self, want: usize) -> bool {
        if let Some(mut spare) = buffers::take_spare(want) {
            spare[..self.end].copy_from_slice(&self.buf[..self.end]);
            self.charged += spare.len();
            let old = std::mem::replace(&mut self.buf, spare);
            let n = old.len();
            self.charged -= n;
            buffers::give_read(old, n);
            return true;
        }
        if !buffers::grow(want - self.buf.len()) {
            return false;
        }
        self.charged += want - self.buf.len();
        // Fresh zeroed memory, made resident in one call: growing in place would zero
        // every new byte by hand, and the value's read then faulted each page in again.
        let mut grown = vec![0u8; want];
        grown[..self.end].copy_from_slice(&self.buf[..self.end]);
        crate::store::segment::populate(&mut grown[self.end..]);
        self.buf = grown;
        true
    }

    pub fn filled(&mut self, n: usize) {
        self.end += n;
    }

    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Gives the buffer back to the pool once no input waits in it.
    pub fn release(&mut self) {
        if self.is_empty() && !self.buf.is_empty() {
            buffers::give_read(std::mem::take(&mut self.buf), self.charged);
            self.charged = 0;
        }
    }
}

impl Drop for ReadBuf {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            buffers::give_read(std::mem::take(&mut self.buf), self.charged);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_buf_window() {
        let mut b = ReadBuf::default();
        b.spare(4).unwrap()[..4].copy_from_slice(b"abcd");
        b.filled(4);
        b.consume(2);
        assert_eq!(b.data(), b"cd");
        let cap = b.capacity();
        // Needs all but one byte: compacts to the front, then fits.
        let s = b.spare(cap - 2).unwrap();
        assert!(s.len() >= cap - 2);
        s[..2].copy_from_slice(b"ef");
        b.filled(2);
        assert_eq!(b.data(), b"cdef");
        b.spare(cap).unwrap();
        assert!(b.capacity() >= cap + 4);
        b.consume(4);
        assert!(b.is_empty());
        b.release();
        assert_eq!(b.capacity(), 0);
    }
}
