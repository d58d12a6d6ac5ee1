//! One client connection: peer check, handshake, bounded lines, idle timeout, requests,
//! and (after `watch`/`approvals`) a stream of events interleaved with replies.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::UnixStream;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::codec::{Framed, LinesCodec, LinesCodecError};

use super::Agent;
use crate::error::ErrorBody;
use crate::protocol::{
    err_line, ok_line, Envelope, Event, EventLine, Peer, Request, MAX_LINE, VERSION,
};

fn error(code: &str, message: impl Into<String>) -> ErrorBody {
    ErrorBody {
        code: code.to_owned(),
        message: message.into(),
    }
}

fn version_mismatch(version: u32) -> ErrorBody {
    error(
        "version_mismatch",
        format!(
            "client speaks protocol {version}, this agent speaks {VERSION}; use matching keyferry versions (restart the agent after upgrading)"
        ),
    )
}

/// Serves one connection until the client leaves, misbehaves, idles out, or shutdown.
pub async fn handle(agent: Arc<Agent>, stream: UnixStream, mut shutdown: broadcast::Receiver<()>) {
    let peer = match super::peer::of(&stream) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read peer credentials; closing");
            return;
        }
    };
    let mut framed = Framed::new(stream, LinesCodec::new_with_max_length(MAX_LINE));
    if peer.uid != agent.uid {
        agent.record("connect", None, "refused", Some("forbidden_user"), &peer);
        tracing::warn!(%peer, "refused a connection from another user");
        let refusal = error(
            "forbidden_user",
            format!("this agent serves uid {} only", agent.uid),
        );
        let _ = framed.send(err_line(None, &refusal)).await;
        return;
    }
    let idle = Duration::from_secs(agent.cfg.idle_timeout_secs.max(1));
    // One timer per connection, pushed back after every request.
    let deadline = tokio::time::sleep(idle);
    tokio::pin!(deadline);
    let mut hello = false;
    let mut events: Option<broadcast::Receiver<Event>> = None;
    let (mut watching, mut approving) = (false, false);
    let mut approver_guard = None;
    loop {
        // Streaming connections are idle by design; only plain request connections time out.
        let streaming = watching || approving;
        let next_event = async {
            match events.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let line = tokio::select! {
            _ = shutdown.recv() => break,
            () = &mut deadline, if !streaming => {
                let msg = format!("no request for {} s; closing", idle.as_secs());
                let _ = framed.send(err_line(None, &error("idle_timeout", msg))).await;
                break;
            }
            ev = next_event => {
                let event = match ev {
                    Ok(e) => e,
                    Err(broadcast::error::RecvError::Lagged(missed)) => Event::Lagged { missed },
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                let wanted = if matches!(event, Event::Approval { .. }) { approving } else { watching };
                if wanted {
                    let line = serde_json::to_string(&EventLine { event }).unwrap_or_default();
                    if framed.send(line).await.is_err() {
                        break;
                    }
                }
                continue;
            }
            line = framed.next() => line,
        };
        let line = match line {
            None | Some(Err(LinesCodecError::Io(_))) => break,
            Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                let msg = format!("request lines are limited to {MAX_LINE} bytes; closing");
                let _ = framed
                    .send(err_line(None, &error("line_too_long", msg)))
                    .await;
                break;
            }
            Some(Ok(line)) => line,
        };
        // Blank lines are not requests: they neither count nor keep the connection alive.
        if line.trim().is_empty() {
            continue;
        }
        deadline.as_mut().reset(Instant::now() + idle);
        let reply = match serde_json::from_str::<Envelope>(&line) {
            // Position only: the line may hold a token. The id, if readable, is echoed.
            Err(e) => err_line(
                serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v.get("id")?.as_u64()),
                &error(
                    "bad_request",
                    format!(
                        "not a valid request (line 1, column {}); see docs/protocol.md",
                        e.column()
                    ),
                ),
            ),
            Ok(Envelope { id, request }) => match request {
                Request::Hello { version, .. } if version != VERSION => {
                    err_line(id, &version_mismatch(version))
                }
                Request::Hello { .. } => {
                    hello = true;
                    ok_line(id, &agent.hello())
                }
                _ if !hello => err_line(
                    id,
                    &error(
                        "handshake_required",
                        format!("send {{\"op\":\"hello\",\"version\":{VERSION}}} first"),
                    ),
                ),
                Request::Watch {} => {
                    watching = true;
                    events.get_or_insert_with(|| agent.subscribe());
                    agent.record("watch", None, "ok", None, &peer);
                    ok_line(id, &"watching")
                }
                Request::Approvals {} => {
                    approving = true;
                    events.get_or_insert_with(|| agent.subscribe());
                    approver_guard.get_or_insert_with(|| agent.approvals.register());
                    ok_line(id, &"approving")
                }
                Request::Approve { .. } if approver_guard.is_none() => err_line(
                    id,
                    &error(
                        "not_an_approver",
                        "send {\"op\":\"approvals\"} on this connection before answering requests",
                    ),
                ),
                other => dispatch(&agent, other, id, &peer).await,
            },
        };
        if framed.send(reply).await.is_err() {
            break;
        }
        // The idle clock starts after the reply: a `get` that waited on an approver must not
        // find its connection already timed out.
        deadline.as_mut().reset(Instant::now() + idle);
    }
    drop(approver_guard);
}

/// Handles one request after the handshake; returns the reply line.
async fn dispatch(agent: &Arc<Agent>, request: Request, id: Option<u64>, peer: &Peer) -> String {
    let line = |r: Result<serde_json::Value, ErrorBody>| match r {
        Ok(v) => ok_line(id, &v),
        Err(e) => err_line(id, &e),
    };
    match request {
        Request::Get { name } => match agent.get(&name, peer).await {
            Ok(t) => ok_line(id, &t),
            Err(e) => err_line(id, &e),
        },
        Request::Status {} => ok_line(id, &agent.status()),
        Request::Store { name, token } => match agent.store(&name, token.0, peer).await {
            Ok(s) => ok_line(id, &s),
            Err(e) => err_line(id, &e),
        },
        Request::Clear { name } => line(
            agent
                .clear(&name, peer)
                .await
                .map(|c| json!({ "cleared": c })),
        ),
        Request::Lock { passphrase } => {
            agent.lock(passphrase.as_ref().map(|p| &p.0), peer);
            ok_line(id, &json!({ "locked": true }))
        }
        Request::Unlock { passphrase } => line(
            agent
                .unlock(passphrase.as_ref().map(|p| &p.0), peer)
                .map(|()| json!({ "locked": false })),
        ),
        Request::Snapshot {
            name,
            path,
            include_refresh_token,
        } => line(
            agent
                .register_snapshot(
                    &name,
                    std::path::Path::new(&path),
                    include_refresh_token,
                    peer,
                )
                .await
                .map(|()| json!({ "written": path })),
        ),
        Request::Forget { path } => line(
            agent
                .forget_snapshot(std::path::Path::new(&path), peer)
                .map(|f| json!({ "forgotten": f })),
        ),
        Request::Settings {
            notifications,
            notify_on_access,
            expiry_thresholds,
        } => {
            let current = agent.settings();
            let wanted = crate::protocol::Settings {
                notifications: notifications.unwrap_or(current.notifications),
                notify_on_access: notify_on_access.unwrap_or(current.notify_on_access),
                expiry_thresholds: expiry_thresholds.unwrap_or(current.expiry_thresholds),
            };
            match agent.update_settings(&wanted, peer) {
                Ok(()) => ok_line(id, &agent.settings()),
                Err(e) => err_line(id, &e),
            }
        }
        Request::Approve { request, decision } => {
            let delivered = agent.approve_from(request, decision, peer);
            agent.record(
                "approve",
                None,
                if delivered { "answered" } else { "expired" },
                None,
                peer,
            );
            if delivered {
                ok_line(id, &json!({ "delivered": true }))
            } else {
                err_line(
                    id,
                    &error(
                        "no_such_request",
                        format!("approval request {request} is unknown, already over, or your own"),
                    ),
                )
            }
        }
        // Handled by the connection loop above.
        Request::Hello { .. } | Request::Watch {} | Request::Approvals {} => {
            ok_line(id, &agent.hello())
        }
    }
}
