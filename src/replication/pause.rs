//! The sender's pause between looks at a busy feed, finer than the runtime's timers.
//!
//! Tokio's timers tick in milliseconds and round up, so a 1 ms sleep waits about 2 ms: a
//! change written just after a batch left would wait that long before the next (replication
//! lag). A Linux timerfd, awaited through the runtime's reactor, wakes within microseconds
//! of the asked time. Elsewhere, or if the timerfd cannot be made, the runtime's sleep.

use std::time::Duration;

#[cfg(target_os = "linux")]
mod imp {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::time::Duration;

    use tokio::io::unix::AsyncFd;

    pub struct Timer(AsyncFd<OwnedFd>);

    impl Timer {
        pub fn new() -> io::Result<Timer> {
            // SAFETY: plain system call; the descriptor returned is checked, then owned.
            let fd = unsafe {
                libc::timerfd_create(
                    libc::CLOCK_MONOTONIC,
                    libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
                )
            };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` is a new descriptor nothing else owns.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: the AsyncFd takes ownership of the descriptor, so it stays open and
            // unchanged for the AsyncFd's whole life.
            let fd =
                unsafe { AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE) }
                    .map_err(|e| e.into_parts().1)?;
            Ok(Timer(fd))
        }

        pub async fn sleep(&self, d: Duration) -> io::Result<()> {
            let spec = libc::itimerspec {
                it_interval: libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
                it_value: libc::timespec {
                    tv_sec: d.as_secs() as libc::time_t,
                    // A zero value would disarm the timer: at least a nanosecond.
                    tv_nsec: (d.subsec_nanos().max(1)) as libc::c_long,
                },
            };
            let fd = self.0.get_ref().as_raw_fd();
            // SAFETY: `fd` is this timer's open descriptor and `spec` a valid itimerspec.
            if unsafe { libc::timerfd_settime(fd, 0, &spec, std::ptr::null_mut()) } != 0 {
                return Err(io::Error::last_os_error());
            }
            loop {
                let mut ready = self.0.readable().await?;
                let mut expirations = [0u8; 8];
                // SAFETY: reads at most 8 bytes into a buffer of 8 from this timer's fd.
                let n = unsafe { libc::read(fd, expirations.as_mut_ptr().cast(), 8) };
                if n == 8 {
                    return Ok(());
                }
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::WouldBlock {
                    return Err(e);
                }
                ready.clear_ready();
            }
        }
    }
}

/// A reusable pause of microsecond precision.
pub struct Pause {
    #[cfg(target_os = "linux")]
    timer: Option<imp::Timer>,
}

impl Default for Pause {
    fn default() -> Pause {
        Pause {
            #[cfg(target_os = "linux")]
            timer: imp::Timer::new().ok(),
        }
    }
}

impl Pause {
    /// Waits about `d`.
    pub async fn sleep(&self, d: Duration) {
        #[cfg(target_os = "linux")]
        if let Some(t) = &self.timer {
            if t.sleep(d).await.is_ok() {
                return;
            }
        }
        tokio::time::sleep(d).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn a_pause_is_about_as_long_as_asked_and_can_be_repeated() {
        let p = Pause::default();
        for _ in 0..3 {
            let t = Instant::now();
            p.sleep(Duration::from_micros(300)).await;
            assert!(t.elapsed() >= Duration::from_micros(300));
        }
    }
}
