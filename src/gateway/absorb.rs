//! A connection's own wakes, absorbed. hyper hands data between the halves of a
//! connection (a request body to the upstream connection, the upstream's answer head and
//! body chunks back) through channels that wake the other side, and with the upstream
//! connection driven inside the client connection's task (`h1`) both sides are that one
//! task: it wakes itself while it runs. On tokio's multi-thread runtime that is a yield,
//! which also unparks the other worker to steal it (measured: ~1.3 context switches a
//! request, none of them needed). [`Absorb`] polls the connection under a waker of its own:
//! a wake raised on this thread during the poll only marks that the future must be polled
//! again, which it is, at once; any other wake (the socket, a timer, another task) wakes
//! the task as usual.
//!
//! It also runs what [`after_writes`] put off: the connection's poll writes and flushes
//! an answer before it returns, so work queued during it (metering a finished answer,
//! its record, the upstream connection back to its pool) runs once the client's bytes
//! are on their way, not before them.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// Polls again at most this often in one poll, then yields after all.
const MAX_AGAIN: usize = 8;

thread_local! {
    /// The [`Inline`] being polled on this thread (its address), if any.
    static POLLING: Cell<usize> = const { Cell::new(0) };
    /// What [`after_writes`] put off during that poll.
    static AFTER: RefCell<Vec<Job>> = const { RefCell::new(Vec::new()) };
}

type Job = Box<dyn FnOnce()>;

/// Runs `job` when the connection being polled on this thread returns from its poll (its
/// writes done), or now when no [`Absorb`] is being polled here (another task, a drop
/// outside any poll): never later than that poll, and never lost.
pub fn after_writes(job: impl FnOnce() + 'static) {
    if POLLING.with(Cell::get) == 0 {
        job();
    } else {
        AFTER.with(|a| a.borrow_mut().push(Box::new(job)));
    }
}

struct Inline {
    task: AtomicWaker,
    /// Woken by its own poll, on its own thread: poll again.
    again: AtomicBool,
}

impl Wake for Inline {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if POLLING.with(Cell::get) == Arc::as_ptr(self) as usize {
            self.again.store(true, Relaxed);
        } else {
            self.task.wake();
        }
    }
}

/// Marks an [`Inline`] as being polled on this thread until dropped (a panic included).
struct Polling(usize);

impl Polling {
    fn enter(inline: &Arc<Inline>) -> Self {
        Self(POLLING.with(|p| p.replace(Arc::as_ptr(inline) as usize)))
    }
}

/// Runs what [`after_writes`] put off on this thread so far. A request is admitted only
/// after the answers before it on its connection are recorded: hyper may read the next
/// request in the same poll that wrote the last answer.
///
/// A job that panics is logged and the others still run: each holds a record and a
/// budget reservation, and a panic escaping here while a poll unwinds would abort the
/// process (the agent, token broker included) rather than end one task.
pub fn run_put_off() {
    loop {
        let mut jobs = AFTER.with(|a| std::mem::take(&mut *a.borrow_mut()));
        if jobs.is_empty() {
            break;
        }
        for job in jobs.drain(..) {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                tracing::error!("gateway: work put off until after an answer's writes panicked");
            }
        }
        // The emptied vector back, so the next poll's jobs reuse its room.
        AFTER.with(|a| {
            let mut a = a.borrow_mut();
            if a.is_empty() {
                *a = jobs;
            }
        });
    }
}

impl Drop for Polling {
    fn drop(&mut self) {
        // This connection is no longer being polled before its put-off work runs: a wake
        // that work raises is then a real one (the task is polled again), and work it puts
        // off runs at once. Unwinding too.
        POLLING.with(|p| p.set(self.0));
        if self.0 == 0 {
            run_put_off();
        }
    }
}

/// `F`, its self-wakes answered by polling again (see the module's comment).
pub struct Absorb<F> {
    fut: Pin<Box<F>>,
    inline: Arc<Inline>,
    waker: Waker,
}

impl<F: Future> Absorb<F> {
    pub fn new(fut: F) -> Self {
        let inline = Arc::new(Inline {
            task: AtomicWaker::new(),
            again: AtomicBool::new(false),
        });
        Self {
            fut: Box::pin(fut),
            waker: Waker::from(Arc::clone(&inline)),
            inline,
        }
    }
}

impl<F: Future> Future for Absorb<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        this.inline.task.register(cx.waker());
        let _polling = Polling::enter(&this.inline);
        let mut own = Context::from_waker(&this.waker);
        for _ in 0..MAX_AGAIN {
            this.inline.again.store(false, Relaxed);
            if let Poll::Ready(out) = this.fut.as_mut().poll(&mut own) {
                return Poll::Ready(out);
            }
            if !this.inline.again.load(Relaxed) {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_self_wake_is_polled_again_and_others_wake_the_task() {
        let mut polls = 0;
        // Wakes itself twice, then waits for a wake from another task.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let fut = futures_util::future::poll_fn(move |cx| {
            polls += 1;
            if polls <= 2 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            rx.poll_recv(cx).map(|_| polls)
        });
        let task = tokio::spawn(Absorb::new(fut));
        tokio::task::yield_now().await;
        tx.send(()).await.unwrap();
        assert_eq!(task.await.unwrap(), 4);
    }

    #[test]
    fn put_off_work_runs_after_the_poll_in_order_and_at_once_outside_one() {
        use std::rc::Rc;
        let log = Rc::new(RefCell::new(Vec::new()));
        let l = Rc::clone(&log);
        after_writes(move || l.borrow_mut().push("outside"));
        assert_eq!(*log.borrow(), ["outside"]);

        let l = Rc::clone(&log);
        let fut = futures_util::future::poll_fn(move |_| {
            for name in ["first", "second"] {
                let l2 = Rc::clone(&l);
                after_writes(move || l2.borrow_mut().push(name));
            }
            // Not yet: the poll that queued them is still running.
            l.borrow_mut().push("poll");
            Poll::Ready(())
        });
        let mut fut = Absorb::new(fut);
        let waker = futures_util::task::noop_waker();
        let ready = Pin::new(&mut fut).poll(&mut Context::from_waker(&waker));
        assert!(ready.is_ready());
        assert_eq!(*log.borrow(), ["outside", "poll", "first", "second"]);
    }

    #[test]
    fn a_panicking_job_leaves_the_others_and_the_thread_as_they_were() {
        use std::rc::Rc;
        let log = Rc::new(RefCell::new(Vec::new()));
        let l = Rc::clone(&log);
        let fut = futures_util::future::poll_fn(move |_| {
            after_writes(|| panic!("a job's bug"));
            let l2 = Rc::clone(&l);
            after_writes(move || l2.borrow_mut().push("after the panic"));
            Poll::Ready(())
        });
        let mut fut = Absorb::new(fut);
        let waker = futures_util::task::noop_waker();
        assert!(Pin::new(&mut fut)
            .poll(&mut Context::from_waker(&waker))
            .is_ready());
        assert_eq!(*log.borrow(), ["after the panic"]);
        // No poll is marked as running any more: work put off now runs at once.
        assert_eq!(POLLING.with(Cell::get), 0);
        let l = Rc::clone(&log);
        after_writes(move || l.borrow_mut().push("at once"));
        assert_eq!(*log.borrow(), ["after the panic", "at once"]);
    }
}
