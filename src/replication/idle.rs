//! How much of their time the worker threads sleep for want of work: the sender's cue to
//! trade CPU for replication lag.
//!
//! Gathering changes for `--repl-batch-us` saves a round of system calls and wake-ups on
//! both nodes per batch, which matters when the machine is busy (CPU per request at full
//! load); when the workers sleep for want of requests, those rounds cost nothing anyone
//! waits for, and gathering only delays what a reader on a peer sees.
//!
//! A worker's time is running, waiting for a CPU, or asleep. Only the last is spare: on a
//! loaded machine workers wait for a CPU a good part of the time (half of it at full load
//! on two cores shared with the clients), so the time a runtime spends parked, which counts
//! that wait too, would not tell. The kernel's per-thread scheduler statistics
//! (`/proc/thread-self/schedstat`: nanoseconds run and waited) do, read by the sender every
//! few milliseconds while it is busy, never on a client's path.
//!
//! There are never more workers than cores (see `crate::server::worker`): with more, a
//! saturated node's workers would sleep part of their time anyway (each waiting on its own
//! connections' clients while the others hold the cores) and look like time to spare.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The worker threads' scheduler statistics.
#[derive(Debug, Default)]
pub struct WorkerIdle {
    threads: Mutex<Vec<File>>,
}

impl WorkerIdle {
    /// Called on each worker thread as it starts. Without the statistics (a kernel built
    /// without them) nothing is measured, and links always gather for the whole batch.
    pub fn register_current(&self) {
        if let Ok(f) = File::open("/proc/thread-self/schedstat") {
            self.threads
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(f);
        }
    }

    /// Nanoseconds the workers ran or waited to run, all together, and how many workers
    /// there are.
    fn awake_ns(&self) -> Option<(u64, usize)> {
        let threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        if threads.is_empty() {
            return None;
        }
        let mut total = 0;
        let mut buf = [0u8; 96];
        for f in threads.iter() {
            let n = f.read_at(&mut buf, 0).ok()?;
            total += parse_schedstat(&buf[..n])?;
        }
        Some((total, threads.len()))
    }
}

/// Run plus wait nanoseconds from a schedstat line ("run wait timeslices").
fn parse_schedstat(line: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(line).ok()?;
    let mut fields = text.split_ascii_whitespace().map(|f| f.parse::<u64>().ok());
    Some(fields.next()?? + fields.next()??)
}

/// Share of the workers' time asleep from which it counts as spare: at half load the
/// workers sleep a sixth to two fifths of the time (over half-second spans on two cores
/// shared with the clients and a lag probe polling the peer), at full load a twentieth.
const SPARE: f64 = 0.15;

/// Share of sleep at or under which the workers count as saturated: at full load most
/// looks read under 0.05. Not zero, and the two overlap (full load reads up to 0.18 now
/// and then, half load down to 0.08): a running thread's statistics lag by up to a
/// scheduler tick, and other processes come and go. In between, the pause is in
/// proportion, so a moment's dip at half load costs a fraction of a batch, not all of it.
const SATURATED: f64 = 0.08;

/// A busy link's pause while the workers stay saturated: this many batch times. Each
/// batch costs both nodes a round of wake-ups and system calls, and at full load that CPU
/// is taken from clients: gathering 8 ms instead of 2 ms read the pair's CPU per client
/// operation at 0.97-0.98x memcached's instead of 0.99-1.01x (`bench/compare --only r
/// --runs 5`, three interleaved sets at `-t 2`).
const SATURATED_BATCHES: u32 = 4;

/// Looks in a row at or under [`SATURATED`] before the long pause: the workers must stay
/// saturated (the smoothed share reads 0.03-0.08 at full load), not dip there (at half
/// load it reads 0.16-0.46, 1st to 95th percentile, and a dip is a look or two).
const SATURATED_LOOKS: u32 = 5;

/// A busy link's pause while the workers have time to spare: this fraction of its batch
/// time (100 us by default: half-load lag p50 0.18 ms instead of 0.73).
const SHORT: u32 = 20;

/// A look counts for one part in this of the share, the looks before it for the rest (a
/// memory of about a tenth of a second). One look spans 10 ms, in which a half-loaded
/// node's workers may sleep anywhere from a twentieth to half of the time: with a memory of
/// four looks (as before), such dips made the pause a whole batch now and then, and half
/// load's lag p99 1.7-1.9 ms in about half the runs of `bench/compare --only l`.
const SMOOTHING: f64 = 8.0;

/// How often a busy link reads the statistics.
const LOOK_EVERY: Duration = Duration::from_millis(10);

/// The pause for a share of sleep: from `batch` (saturated) down to a twentieth of it
/// (time to spare), by the square of how busy the workers are between the two, so that a
/// dip in their sleep at half load costs little while a saturated node gathers long
/// batches (each batch costs both nodes a round of wake-ups, the bulk of replication's CPU).
fn pause_for(share: f64, batch: Duration) -> Duration {
    let busy = ((SPARE - share) / (SPARE - SATURATED)).clamp(0.0, 1.0);
    let short = batch / SHORT;
    short + (batch - short).mul_f64(busy * busy)
}

/// One link's view of the workers' sleep, smoothed over a few looks.
pub struct IdleShare {
    last: Option<(Instant, u64)>,
    share: f64,
    /// Looks in a row at or under [`SATURATED`].
    low: u32,
}

/// A new link starts as if the workers had time to spare: short pauses, until the looks
/// say otherwise (the long pause after some ten looks when they are saturated).
impl Default for IdleShare {
    fn default() -> Self {
        IdleShare {
            last: None,
            share: SPARE,
            low: 0,
        }
    }
}

impl IdleShare {
    /// The pause before the next look at a busy feed: four times `batch` while the
    /// workers stay saturated, a twentieth of it while they sleep 15 % of their time or
    /// more, and up to `batch` in between by the square of how busy they are (so a
    /// moment's dip in their sleep at half load does not stretch the lag to a whole
    /// batch). Without statistics, always `batch`.
    pub fn pause(&mut self, idle: &WorkerIdle, batch: Duration) -> Duration {
        let now = Instant::now();
        if self
            .last
            .is_none_or(|(then, _)| now.duration_since(then) >= LOOK_EVERY)
        {
            self.look(idle, now);
        }
        // No look has read statistics (see [`WorkerIdle::register_current`]).
        if self.last.is_none() {
            batch
        } else if self.low >= SATURATED_LOOKS {
            batch * SATURATED_BATCHES
        } else {
            pause_for(self.share, batch)
        }
    }

    fn look(&mut self, idle: &WorkerIdle, now: Instant) {
        let Some((awake, workers)) = idle.awake_ns() else {
            return;
        };
        if let Some((then, before)) = self.last {
            let span = now.duration_since(then).as_nanos() as f64 * workers as f64;
            self.record(1.0 - awake.saturating_sub(before) as f64 / span);
        }
        self.last = Some((now, awake));
    }

    /// Takes one look's share of sleep into the smoothed share and the run of saturated
    /// looks.
    fn record(&mut self, asleep: f64) {
        // Clamped after smoothing, not per look: a running thread's statistics lag by up to
        // a tick, so a look that reads below zero makes up for one that read high.
        self.share = (((SMOOTHING - 1.0) * self.share + asleep) / SMOOTHING).clamp(0.0, 1.0);
        self.low = if self.share <= SATURATED {
            self.low.saturating_add(1)
        } else {
            0
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_scale_between_saturated_and_spare() {
        let batch = Duration::from_millis(1);
        assert_eq!(pause_for(0.0, batch), batch);
        assert_eq!(pause_for(SATURATED, batch), batch);
        assert_eq!(pause_for(SPARE, batch), batch / SHORT);
        assert_eq!(pause_for(0.9, batch), batch / SHORT);
        // Half way between, a little over a quarter of the batch.
        let mid = pause_for((SATURATED + SPARE) / 2.0, batch);
        assert!(mid > batch / 4 && mid < batch * 3 / 10, "{mid:?}");
    }

    /// The long pause needs the workers saturated look after look; one look above the
    /// threshold ends it, and a share that dips there from half load does not reach it.
    #[test]
    fn the_long_pause_waits_for_a_run_of_saturated_looks() {
        let batch = Duration::from_millis(2);
        let idle = WorkerIdle::default();
        let mut s = IdleShare {
            last: Some((Instant::now(), 0)),
            ..IdleShare::default()
        };
        let pause = |s: &mut IdleShare| {
            // A fresh look is not due: the pause comes from what was recorded.
            s.last = Some((Instant::now(), 0));
            s.pause(&idle, batch)
        };
        // Half load's shares, then a dip deeper than any measured there: twelve looks
        // reading no sleep at all bring the share under the threshold for the last three.
        for _ in 0..20 {
            s.record(0.3);
        }
        for _ in 0..12 {
            s.record(0.0);
            assert!(pause(&mut s) <= batch, "a dip from half load");
        }
        assert!(s.share <= SATURATED && s.low > 0);
        s.record(0.3);
        assert!(pause(&mut s) < batch, "back above the threshold");
        // Saturated look after look: one batch time, then four.
        let mut pauses = Vec::new();
        for _ in 0..30 {
            s.record(0.03);
            pauses.push(pause(&mut s));
        }
        assert_eq!(pauses.last(), Some(&(batch * SATURATED_BATCHES)));
        let first_long = pauses.iter().position(|&p| p > batch).unwrap();
        assert!(pauses[..first_long].iter().all(|&p| p <= batch));
        // Workers that go idle lift the share over the threshold within a look: back to at
        // most one batch time.
        s.record(0.9);
        assert!(pause(&mut s) <= batch);
    }

    /// Without scheduler statistics a busy link gathers for the whole batch.
    #[test]
    fn without_statistics_the_pause_is_the_batch() {
        let batch = Duration::from_millis(2);
        let mut s = IdleShare::default();
        assert_eq!(s.pause(&WorkerIdle::default(), batch), batch);
    }

    #[test]
    fn schedstat_lines_parse_to_run_plus_wait() {
        assert_eq!(parse_schedstat(b"1200 34 5\n"), Some(1234));
        assert_eq!(parse_schedstat(b"12"), None);
        assert_eq!(parse_schedstat(b"x y z"), None);
    }

    /// A worker thread asleep most of the time shortens the pause; busy, it does not.
    #[test]
    fn pauses_shorten_while_the_workers_sleep_and_not_while_they_run() {
        let batch = Duration::from_millis(1);
        let run = |work: bool| {
            let idle = std::sync::Arc::new(WorkerIdle::default());
            let (i, stop) = (
                idle.clone(),
                std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
            );
            let s = stop.clone();
            let worker = std::thread::spawn(move || {
                i.register_current();
                while !s.load(std::sync::atomic::Ordering::Relaxed) {
                    if work {
                        std::hint::spin_loop();
                    } else {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            });
            let mut share = IdleShare::default();
            let mut pauses = Vec::new();
            for _ in 0..30 {
                std::thread::sleep(LOOK_EVERY);
                pauses.push(share.pause(&idle, batch));
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            worker.join().unwrap();
            // The median of the last looks: on a machine busy with other tests, one look
            // can be far off (time a thread ran or waited since the last tick is not counted
            // yet).
            let mut last = pauses.split_off(20);
            last.sort();
            last[last.len() / 2]
        };
        if !std::path::Path::new("/proc/thread-self/schedstat").exists() {
            // Nothing to measure: always the whole batch.
            assert_eq!(run(false), batch);
            return;
        }
        assert_eq!(run(false), batch / SHORT, "a sleeping worker");
        // A spinning thread reads as asleep up to a tenth of the time (see SATURATED).
        let running = run(true);
        assert!(running > batch / 3, "a running worker: {running:?}");
    }
}
