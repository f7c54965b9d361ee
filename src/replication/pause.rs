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

        /// Arms the timer to fire every `period` from now on (a zero period disarms it).
        pub fn arm(&self, period: Duration) -> io::Result<()> {
            let ts = libc::timespec {
                tv_sec: period.as_secs() as libc::time_t,
                tv_nsec: period.subsec_nanos() as libc::c_long,
            };
            let spec = libc::itimerspec {
                it_interval: ts,
                it_value: ts,
            };
            let fd = self.0.get_ref().as_raw_fd();
            // SAFETY: `fd` is this timer's open descriptor and `spec` a valid itimerspec.
            if unsafe { libc::timerfd_settime(fd, 0, &spec, std::ptr::null_mut()) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        }

        /// Waits for the next expiration (at once if one passed since the last wait).
        pub async fn tick(&self) -> io::Result<()> {
            let fd = self.0.get_ref().as_raw_fd();
            loop {
                let mut ready = self.0.readable().await?;
                let mut expirations = [0u8; 8];
                // SAFETY: reads at most 8 bytes into a buffer of 8 from this timer's fd.
                let n = unsafe { libc::read(fd, expirations.as_mut_ptr().cast(), 8) };
                // Read or not, the timer is not readable until it fires again: forgetting
                // the readiness now saves the next wait a read that would only block.
                ready.clear_ready();
                if n == 8 {
                    return Ok(());
                }
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::WouldBlock {
                    return Err(e);
                }
            }
        }
    }
}

/// A reusable pause of microsecond precision: while a link is busy its sender waits for
/// the ticks of one periodic timer, armed once, rather than setting a timer per pause (a
/// system call saved per batch); [`Pause::stop`] disarms it when the link goes idle.
pub struct Pause {
    #[cfg(target_os = "linux")]
    timer: Option<imp::Timer>,
    /// The period the timer is armed with; None while disarmed.
    armed: Option<Duration>,
}

impl Default for Pause {
    fn default() -> Pause {
        Pause {
            #[cfg(target_os = "linux")]
            timer: imp::Timer::new().ok(),
            armed: None,
        }
    }
}

impl Pause {
    /// Waits until the next tick of a timer of period `d`: at most `d`, less if the caller
    /// spent part of the period since the last tick, no wait if it spent all of it.
    pub async fn sleep(&mut self, d: Duration) {
        #[cfg(target_os = "linux")]
        if let Some(t) = &self.timer {
            let armed = self.armed == Some(d) || t.arm(d).is_ok();
            if armed {
                self.armed = Some(d);
                if t.tick().await.is_ok() {
                    return;
                }
            }
            self.armed = None;
        }
        tokio::time::sleep(d).await;
    }

    /// Disarms the timer: the link has nothing to send, so no tick should wake it.
    pub fn stop(&mut self) {
        #[cfg(target_os = "linux")]
        if let (Some(t), Some(_)) = (&self.timer, self.armed) {
            // A failure leaves the timer ticking; the next arm resets it either way.
            let _ = t.arm(Duration::ZERO);
        }
        self.armed = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn a_pause_waits_for_the_next_tick_of_one_period() {
        let period = Duration::from_millis(10);
        let mut p = Pause::default();
        // Just armed: a whole period.
        let t = Instant::now();
        p.sleep(period).await;
        assert!(t.elapsed() >= period, "{:?}", t.elapsed());
        // Work longer than the period between two pauses: the next one does not wait.
        std::thread::sleep(3 * period);
        let t = Instant::now();
        p.sleep(period).await;
        assert!(t.elapsed() < period, "{:?}", t.elapsed());
        // Repeated, each waits at most about a period.
        for _ in 0..3 {
            let t = Instant::now();
            p.sleep(period).await;
            assert!(t.elapsed() < 20 * period, "{:?}", t.elapsed());
        }
        // Stopped, then started again: a whole period from the restart.
        p.stop();
        std::thread::sleep(3 * period);
        let t = Instant::now();
        p.sleep(period).await;
        assert!(t.elapsed() >= period, "{:?}", t.elapsed());
    }
}
