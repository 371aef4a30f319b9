//! The driver's one timer: it fires at the machine's deadline and at no other time.
//!
//! A tokio `Sleep` more than 64 ms away sits in a coarse level of tokio's timer wheel, and
//! the runtime wakes once at that level's slot boundary (up to 64 ms early) to move it to a
//! finer level, then again at the deadline: two wake-ups per heartbeat round where one is
//! needed, and on a host running hundreds of idle nodes wake-ups are the cost. A Linux
//! `timerfd` is a kernel timer the runtime's epoll watches like a socket, so it wakes the
//! process exactly once, at the deadline. Where a timerfd cannot be made, a tokio `Sleep`
//! does the job.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::pin::Pin;
use std::time::{Duration, Instant};

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::time::Sleep;

/// A timerfd as a raw fd for [`AsyncFd`].
struct Fd(TimerFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

enum Inner {
    Kernel(AsyncFd<Fd>),
    Tokio(Pin<Box<Sleep>>),
}

/// A one-shot timer re-armed at each new deadline. Create it inside the tokio runtime.
pub struct DeadlineTimer {
    inner: Inner,
    armed: Option<Instant>,
}

impl DeadlineTimer {
    pub fn new() -> Self {
        let kernel = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .map_err(std::io::Error::from)
        .and_then(|fd| {
            // SAFETY: `Fd` owns the timerfd (an `OwnedFd` inside `TimerFd`): the raw fd is
            // valid, open and the same for as long as the `AsyncFd` holds it.
            unsafe { AsyncFd::register_with_interest(Fd(fd), Interest::READABLE) }
                .map_err(|e| e.into_parts().1)
        });
        let inner = match kernel {
            Ok(fd) => Inner::Kernel(fd),
            Err(e) => {
                tracing::debug!(error = %e, "no timerfd; using a tokio timer");
                Inner::Tokio(Box::pin(tokio::time::sleep(Duration::from_secs(3600))))
            }
        };
        DeadlineTimer { inner, armed: None }
    }

    /// The deadline it is armed for.
    pub fn armed(&self) -> Option<Instant> {
        self.armed
    }

    /// Arms it for `at`, or disarms it with `None`. Costs a system call only when the
    /// deadline changes.
    pub fn set(&mut self, at: Option<Instant>) {
        if at == self.armed {
            return;
        }
        self.armed = at;
        match (&mut self.inner, at) {
            (Inner::Kernel(fd), Some(at)) => {
                // Relative to now: std's Instant does not expose its clock reading. Zero
                // would disarm a timerfd, so a deadline already passed is 1 ns away.
                let wait = at
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_nanos(1));
                let expiration = Expiration::OneShot(TimeSpec::from_duration(wait));
                if let Err(e) = fd.get_ref().0.set(expiration, TimerSetTimeFlags::empty()) {
                    tracing::warn!(error = %e, "cannot arm the timerfd; using a tokio timer");
                    let mut sleep = Box::pin(tokio::time::sleep_until(at.into()));
                    sleep.as_mut().reset(at.into());
                    self.inner = Inner::Tokio(sleep);
                }
            }
            (Inner::Kernel(fd), None) => {
                let _ = fd.get_ref().0.unset();
            }
            (Inner::Tokio(sleep), Some(at)) => sleep.as_mut().reset(at.into()),
            (Inner::Tokio(_), None) => {}
        }
    }

    /// Resolves when the armed deadline passes (never while disarmed), and disarms it.
    pub async fn fired(&mut self) {
        if self.armed.is_none() {
            std::future::pending::<()>().await;
        }
        match &mut self.inner {
            Inner::Kernel(fd) => loop {
                let Ok(mut ready) = fd.readable().await else {
                    // The reactor is gone (shutting down): never fire.
                    std::future::pending::<()>().await;
                    return;
                };
                let read = ready.try_io(|fd| {
                    fd.get_ref()
                        .0
                        .wait()
                        .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
                });
                match read {
                    Ok(_) => {
                        // A one-shot timerfd is not readable again before it is re-armed
                        // and expires: forget the readiness now, or the next wait starts
                        // with a read that can only fail (one system call per wake-up).
                        ready.clear_ready();
                        break;
                    }
                    Err(_would_block) => continue,
                }
            },
            Inner::Tokio(sleep) => sleep.as_mut().await,
        }
        self.armed = None;
    }
}

impl Default for DeadlineTimer {
    fn default() -> Self {
        DeadlineTimer::new()
    }
}
