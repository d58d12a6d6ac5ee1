//! One request through the gateway: route, check the placeholder and the grant's limits,
//! swap in the current token, forward, and stream the metered answer back.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http::{header, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::{BodyError, CappedBody, Finish, MeteredBody};
use super::headers::{self, Scheme};
use super::reply::{self, ErrorType, Refusal};
use super::route::{loggable_method, loggable_path, route, Route};
use super::usage::{Meter, Usage};
use super::{Denial, GatewayContext, GrantView, Limits, RequestRecord};
use crate::http::{describe, OutBody};

/// State every request of one gateway shares.
pub struct Shared {
    pub ctx: Arc<dyn GatewayContext>,
    pub limits: Limits,
    inflight: Arc<Mutex<HashMap<String, u32>>>,
}

impl Shared {
    #[must_use]
    pub fn new(ctx: Arc<dyn GatewayContext>, limits: Limits) -> Self {
        Self {
            ctx,
            limits,
            inflight: Arc::default(),
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

/// The service function: every outcome is an answer, never a dropped connection.
///
/// # Errors
/// Never.
pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<OutBody>, Infallible> {
    let mut record = RequestRecord {
        grant: None,
        method: loggable_method(req.method()),
        path: loggable_path(req.uri().path()),
        status: 0,
        usage: Usage::default(),
        note: None,
        complete: false,
    };
    match forward(&shared, req, &mut record).await {
        Ok(resp) => Ok(resp),
        Err(refusal) => {
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
            shared.ctx.record(record);
            Ok(refusal.response())
        }
    }
}

fn denial(d: &Denial) -> Refusal {
    match d {
        Denial::OverBudget {
            retry_after_secs, ..
        } => Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorType::RateLimit,
            format!("keyferry gateway: {d}"),
        )
        .retry_after(*retry_after_secs),
        _ => Refusal::new(
            StatusCode::UNAUTHORIZED,
            ErrorType::Authentication,
            format!("keyferry gateway: {d}"),
        ),
    }
}

async fn forward(
    shared: &Shared,
    req: Request<Incoming>,
    record: &mut RequestRecord,
) -> Result<Response<OutBody>, Refusal> {
    let ctx = &shared.ctx;
    let limits = shared.limits;
    match route(req.method(), req.uri().path()) {
        Route::Api => {}
        // Bun's connection warm-up (no credential): answered here, never forwarded.
        Route::Preconnect => return Ok(Response::new(reply::empty())),
        Route::Refused => {
            return Err(Refusal::new(
                StatusCode::NOT_FOUND,
                ErrorType::NotFound,
                format!(
                    "keyferry gateway: {} {} is not forwarded (only POST /v1/messages, POST \
                     /v1/messages/count_tokens, GET /v1/models)",
                    record.method, record.path
                ),
            ))
        }
    }
    let grant = match headers::placeholder(req.headers()) {
        Some(p) => ctx.verify(p),
        None => Err(Denial::Missing),
    }
    .map_err(|d| denial(&d))?;
    record.grant = Some(grant.name.clone());
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
            ErrorType::RateLimit,
            format!(
                "keyferry gateway: grant {:?} already has its maximum of requests in flight",
                grant.name
            ),
        )
        .retry_after(1)
    })?;
    let bad_gateway = |m: String| {
        Refusal::new(
            StatusCode::BAD_GATEWAY,
            ErrorType::Api,
            format!("keyferry gateway: {m}"),
        )
    };
    let (kind, token) = ctx
        .token(&grant.credential)
        .map_err(|e| bad_gateway(e.to_string()))?;
    let scheme = Scheme::for_kind(kind).ok_or_else(|| {
        bad_gateway(format!(
            "credential {:?} is a {} credential, not an Anthropic one",
            grant.credential,
            kind.as_str()
        ))
    })?;
    if scheme.is_subscription() && !headers::is_claude_code(req.headers()) {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            ErrorType::Permission,
            format!(
                "keyferry gateway: grant {:?} draws on a Claude subscription credential, which is meant \
                 for Claude Code only; this request does not identify as Claude Code \
                 (user-agent claude-cli/… or x-app: cli)",
                grant.name
            ),
        ));
    }
    let (parts, body) = req.into_parts();
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let upstream = ctx.upstream();
    let uri = upstream
        .join(path_and_query)
        .map_err(|e| bad_gateway(format!("upstream URI: {e}")))?;
    let out_headers = headers::outbound(parts.headers, scheme, &token).map_err(|_| {
        bad_gateway(format!(
            "the token of credential {:?} cannot go in a header",
            grant.credential
        ))
    })?;
    drop(token);
    let mut out = Request::new(
        CappedBody::new(body, limits.max_body_bytes, limits.idle_timeout).boxed_unsync(),
    );
    *out.method_mut() = parts.method;
    *out.uri_mut() = uri;
    *out.headers_mut() = out_headers;

    let answer = tokio::time::timeout(limits.idle_timeout, upstream.client.request(out)).await;
    let resp = match answer {
        Err(_) => {
            return Err(Refusal::new(
                StatusCode::GATEWAY_TIMEOUT,
                ErrorType::Api,
                format!(
                    "keyferry gateway: upstream sent no answer within {:?}",
                    limits.idle_timeout
                ),
            ))
        }
        Ok(Err(e)) if is_too_large(&e) => return Err(too_large(limits.max_body_bytes)),
        Ok(Err(e)) => return Err(bad_gateway(format!("upstream failed: {}", describe(&e)))),
        Ok(Ok(resp)) => resp,
    };
    let (mut parts, body) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    record.status = parts.status.as_u16();
    let meter = Meter::for_content_type(
        parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    let finish = Finish {
        ctx: Arc::clone(ctx),
        record: record.clone(),
        guard: slot,
    };
    let body = MeteredBody::new(body, meter, limits.idle_timeout, finish).boxed_unsync();
    Ok(Response::from_parts(parts, body))
}

fn too_large(limit: u64) -> Refusal {
    Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorType::RequestTooLarge,
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
