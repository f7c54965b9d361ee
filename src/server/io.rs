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

    /// Reads whatever is available into `buf`, waiting if nothing is. Ok(0) is end of stream.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|s| s.get_ref().read(buf)) {
                Ok(Ok(n)) => {
                    if n > 0 && n < buf.len() {
                        guard.clear_ready();
                    }
                    return Ok(n);
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes all of `buf`, waiting for the peer to read when its window is full.
    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            // Sockets are usually writable: try first, wait only if the kernel says so.
            match self.fd.get_ref().write(buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut guard = self.fd.writable().await?;
                    match guard.try_io(|s| s.get_ref().write(buf)) {
                        Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(Ok(n)) => buf = &buf[n..],
                        Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                        Ok(Err(e)) => return Err(e),
                        Err(_would_block) => {}
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The read buffer: initialized bytes with a window `[start, end)` of unparsed input.
pub struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    pub fn with_capacity(n: usize) -> ReadBuf {
        ReadBuf {
            buf: vec![0; n],
            start: 0,
            end: 0,
        }
    }

    /// Unparsed bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
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

    /// Room to read into, at least `min` bytes: compacts, then grows if needed.
    pub fn spare(&mut self, min: usize) -> &mut [u8] {
        if self.buf.len() - self.end < min {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.buf.len() - self.end < min {
                let want = (self.end + min).max(self.buf.len() * 2);
                self.buf.resize(want, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    pub fn filled(&mut self, n: usize) {
        self.end += n;
    }

    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Gives back a large buffer once it is empty.
    pub fn shrink_to(&mut self, n: usize) {
        if self.is_empty() && self.buf.len() > n {
            self.buf = vec![0; n];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_buf_window() {
        let mut b = ReadBuf::with_capacity(8);
        b.spare(4)[..4].copy_from_slice(b"abcd");
        b.filled(4);
        b.consume(2);
        assert_eq!(b.data(), b"cd");
        // Needs 6: compacts to the front, then fits.
        let s = b.spare(6);
        assert!(s.len() >= 6);
        s[..2].copy_from_slice(b"ef");
        b.filled(2);
        assert_eq!(b.data(), b"cdef");
        b.spare(100);
        assert!(b.capacity() >= 104);
        b.consume(4);
        assert!(b.is_empty());
        b.shrink_to(8);
        assert_eq!(b.capacity(), 8);
    }
}
