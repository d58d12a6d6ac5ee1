//! One request through the gateway: route, check the placeholder and the grant's limits,
//! swap in the current token, forward, and stream the metered answer back.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use http::{header, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::{BodyError, CappedBody, Finish, IdleTimer, MeteredBody};
use super::clock::Clock;
use super::h1::{self, Failure, Lease};
use super::headers;
use super::refusals::{PeerAddr, Refusals, Refused};
use super::reply::{self, ErrorKind, Refusal};
use super::reserve::{self, Reservations};
use super::route::{is_preconnect, loggable_method, loggable_path};
use super::usage::{Meter, Usage};
use super::{Denial, GatewayContext, GrantView, Limits, RequestRecord};
use crate::http::{describe, OutBody, Upstream};
use crate::provider::{self, GatewayProvider, Lent};

/// State every request of one gateway shares.
pub struct Shared {
    pub ctx: Arc<dyn GatewayContext>,
    pub limits: Limits,
    inflight: Arc<Mutex<HashMap<String, u32>>>,
    reservations: Reservations,
    pub refusals: Refusals,
}

impl Shared {
    #[must_use]
    pub fn new(ctx: Arc<dyn GatewayContext>, limits: Limits) -> Self {
        Self {
            ctx,
            limits,
            inflight: Arc::default(),
            reservations: Reservations::default(),
            refusals: Refusals::default(),
        }
    }

    /// Hands the refusals counted so far to the context, one summary per peer.
    pub fn flush_refusals(&self) {
        let secs = self.limits.refusal_window.as_secs();
        for summary in self.refusals.drain(secs) {
            self.ctx.refused(summary);
        }
    }

    /// Takes one of the grant's in-flight slots, if it has a cap and a free slot.
    fn enter(&self, grant: &GrantView) -> Result<Option<Box<dyn Send>>, ()> {
        let Some(max) = grant.max_concurrent else {
            return Ok(None);
        };
        let mut map = self
            .inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(grant.name.clone()).or_insert(0);
        if *n >= max {
            return Err(());
        }
        *n += 1;
        Ok(Some(Box::new(Slot {
            map: Arc::clone(&self.inflight),
            name: grant.name.clone(),
        })))
    }
}

struct Slot {
    map: Arc<Mutex<HashMap<String, u32>>>,
    name: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.name) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.name);
            }
        }
    }
}

/// The service function for a request from `peer`: every outcome is an answer, never a
/// dropped connection.
///
/// # Errors
/// Never.
///
/// `clock`: the connection's timer, for an HTTP/1 connection (`clock`'s module comment).
pub async fn handle(
    shared: Arc<Shared>,
    peer: PeerAddr,
    clock: Option<Clock>,
    req: Request<Incoming>,
) -> Result<Response<OutBody>, Infallible> {
    // The answers before this one on its connection are recorded first (budgets exact).
    super::absorb::run_put_off();
    // The loggable method and path are made while upstream answers (`forward`), or for a
    // refusal; until then the request's own, shared rather than copied.
    let asked = Asked {
        method: req.method().clone(),
        uri: req.uri().clone(),
    };
    let mut record = RequestRecord {
        grant: None,
        method: String::new(),
        path: String::new(),
        status: 0,
        usage: Usage::default(),
        note: None,
        complete: false,
    };
    // Until a grant names its credential, refusals speak the default provider's language.
    let mut provider = provider::default_provider();
    match forward(&shared, req, clock, &mut record, &mut provider, &asked).await {
        Ok(resp) => Ok(resp),
        Err(refusal) => {
            asked.describe(&mut record);
            record.status = refusal.status.as_u16();
            record.note = Some(refusal.message.clone());
            record.complete = true;
            tracing::debug!(
                grant = record.grant.as_deref().unwrap_or("-"),
                path = %record.path,
                status = record.status,
                note = %refusal.message,
                "gateway refused"
            );
            if record.grant.is_some() {
                shared.ctx.record(record);
            } else {
                // Nothing proved: counted, and audited once per peer per window.
                shared.refusals.count(peer, Refused::Status(record.status));
            }
            Ok(refusal.response(provider))
        }
    }
}

/// What the client asked for, kept to describe the request in its record.
struct Asked {
    method: http::Method,
    uri: http::Uri,
}

impl Asked {
    /// Fills in the record's method and path (once).
    fn describe(&self, record: &mut RequestRecord) {
        if record.method.is_empty() {
            record.method = loggable_method(&self.method);
            record.path = loggable_path(self.uri.path());
        }
    }
}

fn denial(d: &Denial) -> Refusal {
    match d {
        Denial::OverBudget {
            retry_after_secs, ..
        } => Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::RateLimit,
            format!("keyferry gateway: {d}"),
        )
        .retry_after(*retry_after_secs),
        _ => Refusal::new(
            StatusCode::UNAUTHORIZED,
            ErrorKind::Authentication,
            format!("keyferry gateway: {d}"),
        ),
    }
}

fn bad_gateway(m: String) -> Refusal {
    Refusal::new(
        StatusCode::BAD_GATEWAY,
        ErrorKind::Api,
        format!("keyferry gateway: {m}"),
    )
}

/// What a verified request draws on.
struct Opened {
    grant: GrantView,
    lent: Lent,
    provider: &'static dyn GatewayProvider,
}

/// Verifies the placeholder, then lets the provider of the grant's credential route and
/// admit the request: routing waits for the grant, so each provider has its own routes.
fn open(
    ctx: &dyn GatewayContext,
    req: &Request<Incoming>,
    record: &mut RequestRecord,
    asked: &Asked,
) -> Result<Opened, Refusal> {
    let grant = match headers::placeholder(req.headers()) {
        Some(p) => ctx.verify(p),
        None => Err(Denial::Missing),
    }
    .map_err(|d| {
        // A spent budget is the grant's own refusal: audited with it, not as junk.
        if let Denial::OverBudget { name, .. } = &d {
            record.grant = Some(name.clone());
        }
        denial(&d)
    })?;
    record.grant = Some(grant.name.clone());
    let lent = ctx
        .token(&grant.credential)
        .map_err(|e| bad_gateway(e.to_string()))?;
    let kind = lent.kind;
    let provider = provider::for_kind(kind).ok_or_else(|| {
        bad_gateway(format!(
            "credential {:?} is a {} credential, which no gateway provider serves yet",
            grant.credential,
            kind.as_str()
        ))
    })?;
    if let Err(forwarded) = provider.route(req.method(), req.uri().path()) {
        asked.describe(record);
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            ErrorKind::NotFound,
            format!(
                "keyferry gateway: {} {} is not forwarded ({forwarded})",
                record.method, record.path
            ),
        ));
    }
    provider
        .admit(kind, req.headers(), &grant.name)
        .map_err(|n| {
            Refusal::new(
                StatusCode::FORBIDDEN,
                ErrorKind::Permission,
                format!("keyferry gateway: {}", n.0),
            )
        })?;
    Ok(Opened {
        grant,
        lent,
        provider,
    })
}

async fn forward(
    shared: &Shared,
    req: Request<Incoming>,
    clock: Option<Clock>,
    record: &mut RequestRecord,
    provider: &mut &'static dyn GatewayProvider,
    asked: &Asked,
) -> Result<Response<OutBody>, Refusal> {
    let ctx = &shared.ctx;
    let limits = &shared.limits;
    if is_preconnect(req.method(), req.uri().path()) {
        return Ok(Response::new(reply::empty()));
    }
    let Opened {
        grant,
        lent,
        provider: p,
    } = open(ctx.as_ref(), &req, record, asked)?;
    *provider = p;
    let upstream = ctx.upstream(p).ok_or_else(|| {
        bad_gateway(format!(
            "no upstream for {} (set [providers.{}] upstream)",
            p.name(),
            p.id()
        ))
    })?;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes) {
        return Err(too_large(limits.max_body_bytes));
    }
    let slot = shared.enter(&grant).map_err(|()| {
        Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::RateLimit,
            format!(
                "keyferry gateway: grant {:?} already has its maximum of requests in flight",
                grant.name
            ),
        )
        .retry_after(1)
    })?;
    let (parts, body) = req.into_parts();
    let (body, reservation) = admit(shared, p, &grant, body, upstream.h1.is_none()).await?;
    let uri = match &upstream.h1 {
        Some(_) => h1::origin_form(&upstream.base, parts.uri.path_and_query()),
        None => upstream.join(parts.uri.path_and_query().map_or("/", |p| p.as_str())),
    }
    .map_err(|e| bad_gateway(format!("upstream URI: {e}")))?;
    let out_headers = headers::outbound(parts.headers, p, &lent).map_err(|_| {
        bad_gateway(format!(
            "the token of credential {:?} cannot go in a header",
            grant.credential
        ))
    })?;
    drop(lent);
    let mut out = Request::new(body);
    *out.method_mut() = parts.method;
    *out.uri_mut() = uri;
    *out.headers_mut() = out_headers;
    // The request's one deadline: the answer head, then each frame of the answer.
    let mut idle = IdleTimer::on(clock.unwrap_or_default(), limits.idle_timeout);
    let (answer, lease) = {
        let mut sending = pin!(send(limits, upstream, out, &mut idle));
        // The first poll sends the request; the record is described while upstream answers.
        let first = poll_fn(|cx| Poll::Ready(sending.as_mut().poll(cx))).await;
        asked.describe(record);
        match first {
            Poll::Ready(answer) => answer,
            Poll::Pending => sending.await,
        }
    }?;
    idle.reset();
    record.status = answer.status().as_u16();
    let finish = Finish {
        ctx: Arc::clone(ctx),
        // Moved, not copied: `handle` reads the record only when there is no answer.
        record: std::mem::take(record),
        slot,
        reservation: reservation.map(|r| Box::new(r) as Box<dyn Send>),
    };
    Ok(metered(p, answer, idle, finish, lease))
}

/// Upstream's answer as the client gets it: hop-by-hop headers gone, the body metered
/// and still under the request's idle deadline.
fn metered(
    p: &'static dyn GatewayProvider,
    answer: Response<Incoming>,
    idle: IdleTimer,
    finish: Finish,
    lease: Option<Lease>,
) -> Response<OutBody> {
    let (mut parts, body) = answer.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let meter = Meter::for_content_type(p, content_type);
    let body = MeteredBody::new(body, meter, idle, finish, lease).boxed_unsync();
    Response::from_parts(parts, body)
}

/// Upstream's answer head within `idle`, on the gateway's own connection for a plain-http
/// upstream (with the [`Lease`] the body then drives), else through hyper-util's client.
async fn send(
    limits: &Limits,
    upstream: &Upstream,
    out: Request<ReqBody>,
    idle: &mut IdleTimer,
) -> Result<(Response<Incoming>, Option<Lease>), Refusal> {
    let answer = match &upstream.h1 {
        Some(pool) => h1::send(pool, out, idle).await.map(|(r, l)| (r, Some(l))),
        None => match h1::within(idle, upstream.client.request(out)).await {
            Ok(Ok(resp)) => Ok((resp, None)),
            Ok(Err(e)) => Err(Failure::Failed(e.into())),
            Err(timeout) => Err(timeout),
        },
    };
    match answer {
        Err(Failure::Timeout) => Err(Refusal::new(
            StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Api,
            format!(
                "keyferry gateway: upstream sent no answer within {:?}",
                limits.idle_timeout
            ),
        )),
        Err(Failure::Failed(e)) if is_too_large(&*e) => Err(too_large(limits.max_body_bytes)),
        Err(Failure::Failed(e)) => Err(bad_gateway(format!("upstream failed: {}", describe(&*e)))),
        Ok(answer) => Ok(answer),
    }
}

type ReqBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, crate::http::BoxError>;

/// The body to forward, and the budget reservation when the grant has a daily budget:
/// then the body is read whole first (within the size cap) to estimate the cost from its
/// `max_tokens`; otherwise it streams through untouched.
///
/// A streamed body gets an idle timer of its own only when `own_timer` (hyper-util's client
/// polls it in another task); on the gateway's own connections the request's deadline
/// covers it.
async fn admit(
    shared: &Shared,
    provider: &dyn GatewayProvider,
    grant: &GrantView,
    body: Incoming,
    own_timer: bool,
) -> Result<(ReqBody, Option<reserve::Reservation>), Refusal> {
    let limits = &shared.limits;
    let max = limits.max_body_bytes;
    let Some(left) = grant.budget_left else {
        let idle = own_timer.then_some(limits.idle_timeout);
        return Ok((CappedBody::new(body, max, idle).boxed_unsync(), None));
    };
    // Read whole here, before anything is sent: under its own idle timer.
    let capped = CappedBody::new(body, max, Some(limits.idle_timeout));
    let bytes = match capped.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if is_too_large(&*e) => return Err(too_large(limits.max_body_bytes)),
        Err(e) => {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::InvalidRequest,
                format!("keyferry gateway: the request body could not be read: {e}"),
            ))
        }
    };
    let estimate = reserve::estimate(provider, &bytes);
    let Some(r) = shared.reservations.reserve(&grant.name, left, estimate) else {
        return Err(denial(&Denial::OverBudget {
            name: grant.name.clone(),
            retry_after_secs: super::grants::secs_to_utc_midnight(time::OffsetDateTime::now_utc()),
        }));
    };
    let full = http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync();
    Ok((full, Some(r)))
}

fn too_large(limit: u64) -> Refusal {
    Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::RequestTooLarge,
        format!("keyferry gateway: request body larger than {limit} bytes"),
    )
}

fn is_too_large(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if matches!(
            e.downcast_ref::<BodyError>(),
            Some(BodyError::TooLarge { .. })
        ) {
            return true;
        }
        cur = e.source();
    }
    false
}
