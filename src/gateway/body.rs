//! Bodies in flight, streamed frame by frame and never buffered: the request body with a
//! size cap, the answer with a meter, and an idle timeout between frames both ways.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::absorb;
use super::clock::Clock;
use super::h1::Lease;
use super::usage::{Meter, Usage};
use super::{GatewayContext, RequestRecord};
use crate::http::BoxError;

/// Why a body stopped.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("no data for {0:?}")]
    Idle(Duration),
}

/// Fires when no frame came for `period`. A frame only notes the time (cheap, per frame);
/// the timer is re-armed lazily when it fires early. One serves a request from the wait
/// for the answer head to the answer's end: each tokio timer registered costs ~2 µs.
pub struct IdleTimer {
    clock: Clock,
    period: Duration,
    last: Instant,
}

impl IdleTimer {
    /// On a clock of its own.
    #[must_use]
    pub fn new(period: Duration) -> Self {
        Self::on(Clock::default(), period)
    }

    /// On `clock`, shared with the deadlines before and after it on one connection.
    #[must_use]
    pub fn on(clock: Clock, period: Duration) -> Self {
        Self {
            clock,
            period,
            last: Instant::now(),
        }
    }

    /// Progress: the period starts again from now.
    pub fn reset(&mut self) {
        self.last = Instant::now();
    }

    #[must_use]
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Whether `period` has passed since the last progress; if not, `cx` is woken when it
    /// may have.
    pub fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.clock.poll_at(self.last + self.period, cx)
    }
}

/// The client's request body on its way upstream: at most `limit` bytes.
pub struct CappedBody<B> {
    inner: B,
    seen: u64,
    limit: u64,
    /// `None` where the task polling this body also waits for the answer under the
    /// request's own deadline (`h1`): that one then bounds a stalled body too.
    idle: Option<IdleTimer>,
}

impl<B> CappedBody<B> {
    pub fn new(inner: B, limit: u64, idle: Option<Duration>) -> Self {
        Self {
            inner,
            seen: 0,
            limit,
            idle: idle.map(IdleTimer::new),
        }
    }
}

impl<B> Body for CappedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(idle) = &mut this.idle {
                    idle.reset();
                }
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if this.seen > this.limit {
                        return Poll::Ready(Some(Err(
                            BodyError::TooLarge { limit: this.limit }.into()
                        )));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match &mut this.idle {
                Some(idle) => {
                    if idle.expired(cx) {
                        Poll::Ready(Some(Err(BodyError::Idle(idle.period).into())))
                    } else {
                        Poll::Pending
                    }
                }
                None => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Called once when an answer ends, however it ends; holds whatever must live as long as
/// the answer does.
pub struct Finish {
    pub ctx: Arc<dyn GatewayContext>,
    pub record: RequestRecord,
    /// The grant's in-flight slot: free again the moment the answer ends, so a client's
    /// next request is never refused for this one.
    pub slot: Option<Box<dyn Send>>,
    /// The grant's budget reservation: held until the usage is recorded, so a budget is
    /// never overspent (a request in between sees the estimate, never less).
    pub reservation: Option<Box<dyn Send>>,
}

/// An answer's meter, fed after the connection's writes ([`absorb::after_writes`]) so
/// reading usage never holds back the frame it reads (the first SSE event, a JSON answer's
/// end). At most one frame waits: the next one feeds it first, so memory stays one frame
/// whatever the stream, and order is kept.
struct Metering {
    meter: Meter,
    pending: Option<Bytes>,
    /// A job to feed `pending` is queued.
    queued: bool,
}

impl Metering {
    fn frame(shared: &Arc<Mutex<Self>>, data: &Bytes) {
        let mut m = lock(shared);
        if let Some(earlier) = m.pending.replace(data.clone()) {
            m.meter.feed(&earlier);
        }
        if !m.queued {
            m.queued = true;
            // Unlocked first: with no connection being polled the job runs right here.
            drop(m);
            let shared = Arc::clone(shared);
            absorb::after_writes(move || {
                let mut m = lock(&shared);
                m.queued = false;
                m.flush();
            });
        }
    }

    fn flush(&mut self) {
        if let Some(p) = self.pending.take() {
            self.meter.feed(&p);
        }
    }

    /// Everything fed, the usage read.
    fn usage(&mut self) -> Usage {
        self.flush();
        self.meter.usage()
    }
}

fn lock(m: &Mutex<Metering>) -> std::sync::MutexGuard<'_, Metering> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// No frame within the idle period.
struct Stalled;

/// The upstream answer on its way to the client, metered as it passes.
pub struct MeteredBody {
    inner: hyper::body::Incoming,
    /// Shared with the job that feeds it after the connection's writes.
    meter: Option<Arc<Mutex<Metering>>>,
    idle: IdleTimer,
    finish: Option<Finish>,
    /// The upstream connection this body is read from, driven here (`h1`); `None` when
    /// hyper-util's client drives it in a task of its own.
    lease: Option<Lease>,
}

impl MeteredBody {
    /// `idle` is the request's deadline, already running since the request went out.
    pub fn new(
        inner: hyper::body::Incoming,
        meter: Meter,
        idle: IdleTimer,
        finish: Finish,
        lease: Option<Lease>,
    ) -> Self {
        Self {
            inner,
            meter: (!matches!(meter, Meter::Off)).then(|| {
                Arc::new(Mutex::new(Metering {
                    meter,
                    pending: None,
                    queued: false,
                }))
            }),
            idle,
            finish: Some(finish),
            lease,
        }
    }

    /// The answer has ended (`complete`: all of it went through): its usage is read and
    /// recorded, and the upstream connection goes back to its pool when `release`, once
    /// the connection's writes are done ([`absorb::after_writes`]).
    fn done(&mut self, complete: bool, note: Option<String>, release: bool) {
        let lease = if release { self.lease.take() } else { None };
        self.lease = None;
        let Some(mut f) = self.finish.take() else {
            return;
        };
        drop(f.slot.take());
        let meter = self.meter.take();
        absorb::after_writes(move || {
            if let Some(mut lease) = lease {
                lease.release_now();
            }
            f.record.usage = meter.map(|m| lock(&m).usage()).unwrap_or_default();
            f.record.complete = complete;
            if f.record.note.is_none() {
                f.record.note = note;
            }
            tracing::debug!(
                grant = f.record.grant.as_deref().unwrap_or("-"),
                path = %f.record.path,
                status = f.record.status,
                complete,
                input = f.record.usage.input_tokens,
                output = f.record.usage.output_tokens,
                "gateway request done"
            );
            f.ctx.record(f.record);
            drop(f.reservation);
        });
    }
}

impl Body for MeteredBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = match &mut this.lease {
            // The connection is driven first, so what upstream sent is in `inner` when it
            // is asked; the idle check is inside, under the same waker.
            Some(lease) => {
                lease.poll_with(cx, |icx| match Pin::new(&mut this.inner).poll_frame(icx) {
                    Poll::Pending if this.idle.expired(icx) => Poll::Ready(Err(Stalled)),
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(r) => Poll::Ready(Ok(r)),
                })
            }
            None => match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending if this.idle.expired(cx) => Poll::Ready(Err(Stalled)),
                Poll::Pending => Poll::Pending,
                Poll::Ready(r) => Poll::Ready(Ok(r)),
            },
        };
        match polled {
            Poll::Ready(Ok(Some(Ok(frame)))) => {
                this.idle.reset();
                if let (Some(data), Some(meter)) = (frame.data_ref(), &this.meter) {
                    Metering::frame(meter, data);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Ok(Some(Err(e)))) => {
                let e: BoxError = e.into();
                this.done(
                    false,
                    Some(format!("upstream body: {}", crate::http::describe(&*e))),
                    false,
                );
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Ok(None)) => {
                this.done(true, None, true);
                Poll::Ready(None)
            }
            Poll::Ready(Err(Stalled)) => {
                let period = this.idle.period;
                this.done(false, Some(format!("upstream idle for {period:?}")), false);
                Poll::Ready(Some(Err(BodyError::Idle(period).into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        // Dropped before its end: the client went away; dropping `inner` closes upstream.
        // (An empty answer may be dropped unpolled: that one is complete.)
        let complete = self.inner.is_end_stream();
        let note = (!complete).then(|| "client disconnected".to_owned());
        self.done(complete, note, complete);
    }
}
