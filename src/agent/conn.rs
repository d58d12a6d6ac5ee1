//! One client connection: peer check, handshake, bounded lines, idle timeout, requests,
//! and (after `watch`/`approvals`) a stream of events interleaved with replies.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::UnixStream;
use tokio::sync::broadcast;
use tokio_util::codec::{Framed, LinesCodec, LinesCodecError};

use super::Agent;
use crate::protocol::{Envelope, Event, EventLine, Peer, Reply, Request, MAX_LINE, VERSION};

type Lines = Framed<UnixStream, LinesCodec>;

async fn send(framed: &mut Lines, reply: &Reply) -> bool {
    let line = serde_json::to_string(reply).unwrap_or_default();
    framed.send(line).await.is_ok()
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
        let _ = send(
            &mut framed,
            &Reply::err(
                None,
                "forbidden_user",
                format!("this agent serves uid {} only", agent.uid),
            ),
        )
        .await;
        return;
    }
    let idle = Duration::from_secs(agent.cfg.idle_timeout_secs.max(1));
    let mut hello = false;
    let mut events: Option<broadcast::Receiver<Event>> = None;
    let (mut watching, mut approving) = (false, false);
    let mut approver_guard = None;
    loop {
        // Streaming connections are idle by design; only plain request connections time out.
        let streaming = watching || approving;
        let next_line = async {
            if streaming {
                Ok(framed.next().await)
            } else {
                tokio::time::timeout(idle, framed.next()).await
            }
        };
        let next_event = async {
            match events.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.recv() => break,
            ev = next_event => {
                let event = match ev {
                    Ok(e) => e,
                    Err(broadcast::error::RecvError::Lagged(missed)) => Event::Lagged { missed },
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                let wanted = match &event {
                    Event::Approval { .. } => approving,
                    _ => watching,
                };
                if wanted {
                    let line = serde_json::to_string(&EventLine { event }).unwrap_or_default();
                    if framed.send(line).await.is_err() {
                        break;
                    }
                }
            }
            line = next_line => {
                let line = match line {
                    Err(_) => {
                        let _ = send(&mut framed, &Reply::err(None, "idle_timeout",
                            format!("no request for {} s; closing", idle.as_secs()))).await;
                        break;
                    }
                    Ok(None) => break,
                    Ok(Some(Err(LinesCodecError::MaxLineLengthExceeded))) => {
                        let _ = send(&mut framed, &Reply::err(None, "line_too_long",
                            format!("request lines are limited to {MAX_LINE} bytes; closing"))).await;
                        break;
                    }
                    Ok(Some(Err(LinesCodecError::Io(_)))) => break,
                    Ok(Some(Ok(line))) => line,
                };
                if line.trim().is_empty() {
                    continue;
                }
                let env: Envelope = match serde_json::from_str(&line) {
                    Ok(e) => e,
                    Err(e) => {
                        // Position only: the line may hold a token.
                        let msg = format!("not a valid request (line 1, column {}); see docs/protocol.md", e.column());
                        if !send(&mut framed, &Reply::err(None, "bad_request", msg)).await {
                            break;
                        }
                        continue;
                    }
                };
                let id = env.id;
                if !hello {
                    let reply = match env.request {
                        Request::Hello { version, .. } if version == VERSION => {
                            hello = true;
                            Reply::ok(id, agent.hello())
                        }
                        Request::Hello { version, .. } => Reply::err(id, "version_mismatch", format!(
                            "client speaks protocol {version}, this agent speaks {VERSION}; use matching keyferry versions (restart the agent after upgrading)")),
                        _ => Reply::err(id, "handshake_required",
                            format!("send {{\"op\":\"hello\",\"version\":{VERSION}}} first")),
                    };
                    if !send(&mut framed, &reply).await {
                        break;
                    }
                    continue;
                }
                let reply = match env.request {
                    Request::Watch => {
                        watching = true;
                        events.get_or_insert_with(|| agent.subscribe());
                        agent.record("watch", None, "ok", None, &peer);
                        Reply::ok(id, "watching")
                    }
                    Request::Approvals => {
                        approving = true;
                        events.get_or_insert_with(|| agent.subscribe());
                        approver_guard.get_or_insert_with(|| agent.approvals.register());
                        Reply::ok(id, "approving")
                    }
                    other => dispatch(&agent, other, id, &peer).await,
                };
                if !send(&mut framed, &reply).await {
                    break;
                }
            }
        }
    }
    drop(approver_guard);
}

async fn dispatch(agent: &Arc<Agent>, request: Request, id: Option<u64>, peer: &Peer) -> Reply {
    let result = |r: Result<serde_json::Value, crate::error::ErrorBody>| match r {
        Ok(v) => Reply::ok(id, v),
        Err(e) => Reply::err(id, &e.code, e.message),
    };
    match request {
        Request::Hello { version, .. } if version == VERSION => Reply::ok(id, agent.hello()),
        Request::Hello { version, .. } => Reply::err(
            id,
            "version_mismatch",
            format!("client speaks protocol {version}, this agent speaks {VERSION}"),
        ),
        Request::Status => Reply::ok(id, agent.status()),
        Request::Get { name } => result(agent.get(&name, peer).await.map(|t| to_value(&t))),
        Request::Store { name, token } => result(
            agent
                .store(&name, token.0, peer)
                .await
                .map(|s| to_value(&s)),
        ),
        Request::Clear { name } => result(
            agent
                .clear(&name, peer)
                .await
                .map(|c| serde_json::json!({ "cleared": c })),
        ),
        Request::Lock { passphrase } => {
            agent.lock(passphrase.as_ref().map(|p| &p.0), peer);
            Reply::ok(id, serde_json::json!({ "locked": true }))
        }
        Request::Unlock { passphrase } => result(
            agent
                .unlock(passphrase.as_ref().map(|p| &p.0), peer)
                .map(|()| serde_json::json!({ "locked": false })),
        ),
        Request::Snapshot {
            name,
            path,
            include_refresh_token,
        } => result(
            agent
                .register_snapshot(
                    &name,
                    std::path::Path::new(&path),
                    include_refresh_token,
                    peer,
                )
                .map(|()| serde_json::json!({ "written": path })),
        ),
        Request::Forget { path } => result(
            agent
                .forget_snapshot(std::path::Path::new(&path), peer)
                .map(|f| serde_json::json!({ "forgotten": f })),
        ),
        Request::Approve { request, decision } => {
            let delivered = agent.approve(request, decision);
            agent.record(
                "approve",
                None,
                if delivered { "answered" } else { "expired" },
                None,
                peer,
            );
            if delivered {
                Reply::ok(id, serde_json::json!({ "delivered": true }))
            } else {
                Reply::err(
                    id,
                    "no_such_request",
                    format!("approval request {request} is unknown or already over"),
                )
            }
        }
        Request::Watch | Request::Approvals => {
            Reply::err(id, "internal", "handled by the connection")
        }
    }
}

fn to_value<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}
