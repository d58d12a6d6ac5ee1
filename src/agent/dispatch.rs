//! One request after the handshake, turned into one typed reply line. Lines that carry a
//! token are zeroized once written.

use std::path::Path;
use std::sync::Arc;

use zeroize::Zeroizing;

use super::approval::ConnId;
use super::Agent;
use crate::domain::{AuditOutcome, Op};
use crate::domain::{ErrorBody, ErrorCode, Peer};
use crate::protocol::{
    err_line, ok_line, Cleared, Delivered, Forgotten, LockState, Request, Written,
};

/// A reply line; zeroized on drop because a `get` reply holds a token.
pub(super) type Line = Zeroizing<String>;

fn line<T: serde::Serialize>(id: Option<u64>, r: Result<T, ErrorBody>) -> Line {
    Zeroizing::new(match r {
        Ok(v) => ok_line(id, &v),
        Err(e) => err_line(id, &e),
    })
}

/// Whether answering `request` may wait (on an approver), so the connection must keep
/// reading other requests meanwhile.
pub(super) fn may_wait(request: &Request) -> bool {
    matches!(
        request,
        Request::Get { .. }
            | Request::Snapshot { .. }
            | Request::Grant { .. }
            | Request::Refresh { .. }
            | Request::Usage { .. }
            | Request::Status { usage: true, .. }
    )
}

/// The credential a request concerns, for the audit and the sandbox rule.
pub(super) fn subject(request: &Request) -> Option<&str> {
    match request {
        Request::Get { name }
        | Request::Store { name, .. }
        | Request::Clear { name }
        | Request::Snapshot { name, .. }
        | Request::Usage { name }
        | Request::Refresh { name, .. } => Some(name),
        Request::Grant { credential, .. } => Some(credential),
        _ => None,
    }
}

/// The refusal a sandboxed peer gets for `request`, if any. Only what neither hands out a
/// token nor changes the agent is open to every peer: the handshake, `status` (which
/// carries no secret), `watch` and the list of grants (hashes and counters only).
/// Everything else — `get` and so `export`, snapshots, store, clear, grants, settings,
/// approvals, lock — follows `sandboxed_peers` (refused by default).
pub(super) fn sandbox_refusal(agent: &Agent, request: &Request, peer: &Peer) -> Option<ErrorBody> {
    peer.sandbox?;
    if matches!(
        request,
        Request::Hello { .. } | Request::Status { .. } | Request::Watch {} | Request::Grants {}
    ) {
        return None;
    }
    agent.policy.check_sandbox(subject(request), peer).err()
}

/// Handles one request after the handshake; returns the reply line.
pub(super) async fn dispatch(
    agent: Arc<Agent>,
    request: Request,
    id: Option<u64>,
    peer: Peer,
    conn: ConnId,
) -> Line {
    match request {
        Request::Get { name } => line(id, agent.get(&name, &peer, Some(conn)).await),
        Request::Status { usage: false, .. } => line(id, Ok::<_, ErrorBody>(agent.status())),
        Request::Status {
            usage: true,
            usage_of,
        } => line(
            id,
            Ok::<_, ErrorBody>(
                agent
                    .status_with_usage(Some(&peer), usage_of.as_deref())
                    .await,
            ),
        ),
        Request::Store { name, token } => line(id, agent.store(&name, token.0, &peer).await),
        Request::Clear { name } => line(
            id,
            agent
                .clear(&name, &peer)
                .await
                .map(|cleared| Cleared { cleared }),
        ),
        Request::Lock { passphrase } => {
            agent.lock(passphrase.map(|p| p.0), &peer).await;
            line(id, Ok::<_, ErrorBody>(LockState { locked: true }))
        }
        Request::Unlock { passphrase } => line(
            id,
            agent
                .unlock(passphrase.map(|p| p.0), &peer)
                .await
                .map(|()| LockState { locked: false }),
        ),
        Request::Snapshot {
            name,
            path,
            include_refresh_token,
        } => line(
            id,
            agent
                .register_snapshot(
                    &name,
                    Path::new(&path),
                    include_refresh_token,
                    &peer,
                    Some(conn),
                )
                .await
                .map(|()| Written { written: path }),
        ),
        Request::Forget { path } => line(
            id,
            agent
                .forget_snapshot(Path::new(&path), &peer)
                .map(|forgotten| Forgotten { forgotten }),
        ),
        Request::Settings {
            notifications,
            notify_on_access,
            expiry_thresholds,
        } => {
            let current = agent.settings();
            let wanted = crate::domain::Settings {
                notifications: notifications.unwrap_or(current.notifications),
                notify_on_access: notify_on_access.unwrap_or(current.notify_on_access),
                expiry_thresholds: expiry_thresholds.unwrap_or(current.expiry_thresholds),
            };
            line(
                id,
                agent
                    .update_settings(&wanted, &peer)
                    .map(|()| agent.settings()),
            )
        }
        Request::Approve { request, decision } => {
            let delivered = agent.approve_from(request, decision, conn);
            let outcome = if delivered { "answered" } else { "expired" };
            agent.record(Op::Approve, None, AuditOutcome::done(outcome), None, &peer);
            let result = if delivered {
                Ok(Delivered { delivered })
            } else {
                Err(ErrorBody::new(
                    ErrorCode::NoSuchRequest,
                    format!("approval request {request} is unknown, already over, or your own"),
                ))
            };
            line(id, result)
        }
        Request::Grant {
            name,
            credential,
            ttl_secs,
            max_concurrent,
            daily_token_budget,
        } => {
            let spec = crate::gateway::NewGrant {
                name,
                credential,
                ttl: std::time::Duration::from_secs(ttl_secs),
                max_concurrent,
                daily_token_budget,
            };
            line(id, agent.grant(spec, &peer, Some(conn)).await)
        }
        Request::Grants {} => line(id, Ok::<_, ErrorBody>(agent.grants())),
        Request::Revoke { name } => line(
            id,
            agent
                .revoke_grant(&name, &peer)
                .map(|revoked| crate::protocol::Revoked { revoked }),
        ),
        Request::Usage { name } => line(id, agent.usage(&name, &peer).await),
        Request::Refresh { name, dry_run } => {
            line(id, agent.refresh_login(&name, dry_run, &peer).await)
        }
        // The connection loop answers these itself.
        Request::Hello { .. } | Request::Watch {} | Request::Approvals {} => {
            line(id, Ok::<_, ErrorBody>(agent.hello()))
        }
    }
}
