//! One tokio timer per HTTP/1 client connection, shared by every deadline its requests
//! have in turn (the request head's, then the request's idle deadline), instead of a timer
//! registered and dropped for each. Registering a tokio timer earlier than the one the
//! runtime's driver sleeps on wakes the driver (an eventfd write, a parked worker woken:
//! measured ~2 µs and one context switch each). Here the timer is re-armed only when it
//! fires, at most once per deadline period (seconds to minutes), and a deadline that fires
//! early simply re-arms it for the deadline now due.
//!
//! An HTTP/1 connection's requests run one after another, all polled by the connection's
//! task, so one waker suffices. HTTP/2 streams run at once: those get a clock each.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

/// The shared timer. Cheap to clone (one `Arc`).
#[derive(Clone, Default)]
pub struct Clock(Arc<Mutex<Option<Pin<Box<Sleep>>>>>);

impl Clock {
    /// Whether `at` has come; if not, `cx` is woken by then (or earlier: the caller asks
    /// again).
    pub fn poll_at(&self, at: Instant, cx: &mut Context<'_>) -> bool {
        if Instant::now() >= at {
            return true;
        }
        let mut armed = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let sleep = armed.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if sleep.deadline() > at {
            sleep.as_mut().reset(at);
        }
        while sleep.as_mut().poll(cx).is_ready() {
            // It fired for an earlier deadline (or for this one, just now).
            if Instant::now() >= at {
                return true;
            }
            sleep.as_mut().reset(at);
        }
        false
    }
}

/// hyper's timer for one HTTP/1 connection (its request-head deadline) on [`Clock`].
#[derive(Clone, Default)]
pub struct ConnTimer(pub Clock);

struct ConnSleep {
    clock: Clock,
    at: Instant,
}

impl Future for ConnSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.clock.poll_at(self.at, cx) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl hyper::rt::Sleep for ConnSleep {}

impl hyper::rt::Timer for ConnTimer {
    fn sleep(&self, duration: std::time::Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(std::time::Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(ConnSleep {
            clock: self.0.clone(),
            at: deadline.into(),
        })
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: std::time::Instant) {
        match sleep.as_mut().downcast_mut_pin::<ConnSleep>() {
            Some(mut s) => s.at = new_deadline.into(),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_timer_serves_later_and_earlier_deadlines() {
        let clock = Clock::default();
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let poll = |t| {
            let clock = &clock;
            futures_util::future::poll_fn(move |cx| Poll::Ready(clock.poll_at(t, cx)))
        };
        let fired = |t| {
            let clock = &clock;
            futures_util::future::poll_fn(move |cx| {
                if clock.poll_at(t, cx) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
        };
        assert!(!poll(at(400)).await);
        // A later deadline leaves the timer where it is; an earlier one moves it.
        assert!(!poll(at(4000)).await);
        assert!(!poll(at(100)).await);
        tokio::time::timeout(Duration::from_secs(2), fired(at(100)))
            .await
            .expect("the earlier deadline fired");
        // Fired early for the later deadline: re-armed, not expired.
        assert!(!poll(at(400)).await);
        tokio::time::timeout(Duration::from_secs(2), fired(at(400)))
            .await
            .expect("re-armed for the later deadline");
    }
}
