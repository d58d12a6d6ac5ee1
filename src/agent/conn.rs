//! One client connection: peer check, handshake, bounded lines, idle timeout, requests,
//! and (after `watch`/`approvals`) a stream of events interleaved with replies. A request
//! that may wait (a `get` under `ask`) runs alongside the connection's other requests, so a
//! pending approval never blocks them; replies carry the request's id.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};

use super::approval::ConnId;
use super::dispatch::{dispatch, may_wait, Line};
use super::{Agent, Scope};
use crate::domain::{AuditOutcome, Op};
use crate::domain::{ErrorBody, ErrorCode, Peer};
use crate::protocol::{
    err_line, ok_line, Envelope, Event, EventLine, Request, Streaming, MAX_LINE, VERSION,
};

/// Requests one connection may have waiting at once; past this it is not read until one ends.
const MAX_IN_FLIGHT: usize = 16;

type Pending = Pin<Box<dyn Future<Output = Line> + Send>>;

fn error(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, message)
}

fn version_mismatch(version: u32) -> ErrorBody {
    error(
        ErrorCode::VersionMismatch,
        format!(
            "client speaks protocol {version}, this agent speaks {VERSION}; use matching keyferry versions (restart the agent after upgrading)"
        ),
    )
}

async fn send(out: &mut OwnedWriteHalf, mut line: Line) -> bool {
    line.push('\n');
    out.write_all(line.as_bytes()).await.is_ok()
}

/// Serves one connection until the client leaves, misbehaves, idles out, or shutdown: the
/// peer check, then the I/O loop (lines in, replies and events out, the idle clock), each
/// request handed to [`Session::step`].
pub async fn handle(
    agent: Arc<Agent>,
    stream: UnixStream,
    scope: Arc<Scope>,
    mut shutdown: broadcast::Receiver<()>,
) {
    let peer = match super::peer::of(&stream) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read peer credentials; closing");
            return;
        }
    };
    let (read, mut out) = stream.into_split();
    if peer.uid != agent.uid {
        return refuse_other_user(&agent, &peer, &mut out).await;
    }
    let mut session = Session {
        agent: &agent,
        scope: &scope,
        conn: agent.counters.next_connection(),
        peer,
        hello: false,
        events: None,
        watching: false,
        approving: false,
        approver_guard: None,
    };
    let mut lines = FramedRead::new(read, LinesCodec::new_with_max_length(MAX_LINE));
    // Bounded: a huge configured value must not overflow the deadline arithmetic.
    let idle = Duration::from_secs(agent.cfg.idle_timeout_secs.clamp(1, 7 * 86_400));
    // One timer per connection, pushed back after every request and reply.
    let deadline = tokio::time::sleep(idle);
    tokio::pin!(deadline);
    let mut pending: FuturesUnordered<Pending> = FuturesUnordered::new();
    loop {
        // Streaming connections are idle by design, and so is one waiting on an approver.
        let idle_counts = !(session.watching || session.approving) && pending.is_empty();
        let next_event = async {
            match session.events.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let line = tokio::select! {
            _ = shutdown.recv() => break,
            () = &mut deadline, if idle_counts => {
                let msg = format!("no request for {} s; closing", idle.as_secs());
                let _ = send(&mut out, err_line(None, &error(ErrorCode::IdleTimeout, msg)).into()).await;
                break;
            }
            Some(reply) = pending.next(), if !pending.is_empty() => {
                if !send(&mut out, reply).await {
                    break;
                }
                deadline.as_mut().reset(Instant::now() + idle);
                continue;
            }
            ev = next_event => {
                let event = match ev {
                    Ok(e) => e,
                    Err(broadcast::error::RecvError::Lagged(missed)) => Event::Lagged { missed },
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                let wanted = if matches!(event, Event::Approval { .. }) {
                    session.approving
                } else {
                    session.watching
                };
                if wanted {
                    let line = serde_json::to_string(&EventLine { event }).unwrap_or_default();
                    if !send(&mut out, line.into()).await {
                        break;
                    }
                }
                continue;
            }
            line = lines.next(), if pending.len() < MAX_IN_FLIGHT => line,
        };
        let line = match line {
            // The client finished sending: answer what it is still waiting for, then close
            // (a half-closed socket, as `socat` or `printf | nc -U` leave it, still reads).
            None => {
                drain(&mut out, &mut pending, &mut shutdown).await;
                break;
            }
            Some(Err(e)) => return refuse_line(&mut out, &e).await,
            Some(Ok(line)) => Line::new(line),
        };
        // Blank lines are not requests: they neither count nor keep the connection alive.
        if line.trim().is_empty() {
            continue;
        }
        deadline.as_mut().reset(Instant::now() + idle);
        let reply = match session.step(&line).await {
            Step::Reply(reply) => reply,
            Step::Later(waiting) => {
                pending.push(waiting);
                continue;
            }
        };
        drop(line);
        if !send(&mut out, reply).await {
            break;
        }
        // The idle clock starts after the reply.
        deadline.as_mut().reset(Instant::now() + idle);
    }
}

/// Another user's connection: audited (in the refused peers' file), answered once, closed.
async fn refuse_other_user(agent: &Agent, peer: &Peer, out: &mut OwnedWriteHalf) {
    agent.record(
        Op::Connect,
        None,
        AuditOutcome::Refused,
        Some(&ErrorCode::ForbiddenUser),
        peer,
    );
    tracing::warn!(%peer, "refused a connection from another user");
    let refusal = error(
        ErrorCode::ForbiddenUser,
        format!("this agent serves uid {} only", agent.uid),
    );
    let _ = send(out, err_line(None, &refusal).into()).await;
}

/// A line that could not be read ends the connection; one too long is told so first.
async fn refuse_line(out: &mut OwnedWriteHalf, e: &LinesCodecError) {
    if matches!(e, LinesCodecError::MaxLineLengthExceeded) {
        let msg = format!("request lines are limited to {MAX_LINE} bytes; closing");
        let _ = send(
            out,
            err_line(None, &error(ErrorCode::LineTooLong, msg)).into(),
        )
        .await;
    }
}

/// Sends the replies still owed after the client stopped sending, until they are all out
/// or shutdown.
async fn drain(
    out: &mut OwnedWriteHalf,
    pending: &mut FuturesUnordered<Pending>,
    shutdown: &mut broadcast::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = shutdown.recv() => return,
            reply = pending.next() => {
                let Some(reply) = reply else { return };
                if !send(out, reply).await {
                    return;
                }
            }
        }
    }
}

/// What one request line comes to.
enum Step {
    /// Answer now.
    Reply(Line),
    /// A request that may wait (an approval): answered when it ends, alongside others.
    Later(Pending),
}

/// One connection's state between requests: who it is, whether it said hello, and what it
/// asked to stream.
struct Session<'a> {
    agent: &'a Arc<Agent>,
    scope: &'a Scope,
    peer: Peer,
    conn: ConnId,
    hello: bool,
    events: Option<broadcast::Receiver<Event>>,
    watching: bool,
    approving: bool,
    approver_guard: Option<super::approval::ApproverGuard<'a>>,
}

impl<'a> Session<'a> {
    /// One request line: parsed, checked (sandboxed peers, the handshake, the restricted
    /// scope) and answered, or handed back to run alongside the connection's others.
    async fn step(&mut self, line: &str) -> Step {
        let agent = self.agent;
        let Envelope { id, request } = match serde_json::from_str::<Envelope>(line) {
            Ok(e) => e,
            // Position only: the line may hold a token. The id, if readable, is echoed.
            Err(e) => {
                let id = serde_json::from_str::<IdOnly>(line).ok().and_then(|v| v.id);
                let msg = format!(
                    "not a valid request (line 1, column {}); see docs/protocol.md",
                    e.column()
                );
                return Step::Reply(err_line(id, &error(ErrorCode::BadRequest, msg)).into());
            }
        };
        if self.hello {
            if let Some(e) = super::dispatch::sandbox_refusal(agent, &request, &self.peer) {
                let (op, cred) = (request.op(), super::dispatch::subject(&request));
                tracing::warn!(peer = %self.peer, op = op.as_str(), "refused a sandboxed peer");
                agent.record(op, cred, AuditOutcome::Refused, Some(&e.code), &self.peer);
                return Step::Reply(err_line(id, &e).into());
            }
        }
        let peer = &self.peer;
        let reply: Line = match request {
            Request::Hello { version, .. } if version != VERSION => {
                err_line(id, &version_mismatch(version)).into()
            }
            Request::Hello { .. } => {
                self.hello = true;
                ok_line(id, &agent.hello()).into()
            }
            _ if !self.hello => err_line(
                id,
                &error(
                    ErrorCode::HandshakeRequired,
                    format!("send {{\"op\":\"hello\",\"version\":{VERSION}}} first"),
                ),
            )
            .into(),
            other if *self.scope != Scope::Full => {
                restricted(agent, self.scope, other, id, peer, self.conn).await
            }
            Request::Watch {} => {
                self.watching = true;
                self.events.get_or_insert_with(|| agent.subscribe());
                agent.record(Op::Watch, None, AuditOutcome::done("ok"), None, peer);
                ok_line(id, &Streaming::Watching).into()
            }
            Request::Approvals {} => match agent.may_approve(peer) {
                Ok(()) => {
                    self.approving = true;
                    self.events.get_or_insert_with(|| agent.subscribe());
                    self.approver_guard
                        .get_or_insert_with(|| agent.approvals.register());
                    agent.record(
                        Op::Approvals,
                        None,
                        AuditOutcome::done("registered"),
                        None,
                        peer,
                    );
                    ok_line(id, &Streaming::Approving).into()
                }
                Err(e) => {
                    agent.record(
                        Op::Approvals,
                        None,
                        AuditOutcome::Refused,
                        Some(&e.code),
                        peer,
                    );
                    err_line(id, &e).into()
                }
            },
            Request::Approve { .. } if self.approver_guard.is_none() => err_line(
                id,
                &error(
                    ErrorCode::NotAnApprover,
                    "send {\"op\":\"approvals\"} on this connection before answering requests",
                ),
            )
            .into(),
            other if may_wait(&other) => {
                return Step::Later(Box::pin(dispatch(
                    Arc::clone(agent),
                    other,
                    id,
                    peer.clone(),
                    self.conn,
                )));
            }
            other => dispatch(Arc::clone(agent), other, id, peer.clone(), self.conn).await,
        };
        Step::Reply(reply)
    }
}

/// A request on the restricted socket: `status` and `get` of the allowed credentials,
/// nothing else; every answer audited as remote.
async fn restricted(
    agent: &Arc<Agent>,
    scope: &Scope,
    request: Request,
    id: Option<u64>,
    peer: &crate::domain::Peer,
    conn: ConnId,
) -> Line {
    let Scope::Restricted { allowed } = scope else {
        unreachable!("only called for the restricted socket")
    };
    let op = request.op().remote();
    match request {
        Request::Status { .. } => {
            let mut st = agent.status();
            st.credentials.retain(|c| allowed.contains(&c.name));
            st.sinks.clear();
            st.last_access = None;
            agent.record(op, None, AuditOutcome::done("served"), None, peer);
            ok_line(id, &st).into()
        }
        Request::Get { name } if allowed.contains(&name) => {
            let reply = dispatch(
                Arc::clone(agent),
                Request::Get { name: name.clone() },
                id,
                peer.clone(),
                conn,
            )
            .await;
            agent.record(op, Some(&name), AuditOutcome::done("answered"), None, peer);
            reply
        }
        other => {
            let what = match &other {
                Request::Get { name } => {
                    format!("{name:?} is not listed in [agent] restricted_credentials")
                }
                _ => format!(
                    "`{}` is not served on the restricted socket (only hello, status and get)",
                    other.op()
                ),
            };
            let e = error(ErrorCode::ForbiddenOp, what);
            agent.record(op, None, AuditOutcome::Refused, Some(&e.code), peer);
            err_line(id, &e).into()
        }
    }
}

/// Just the id of a line that is not a valid request, to echo it.
#[derive(serde::Deserialize)]
struct IdOnly {
    id: Option<u64>,
}
