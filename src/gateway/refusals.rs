//! Refusals of clients that proved nothing — a request whose placeholder opens no grant, a
//! connection silent past the first-byte deadline — counted per peer and audited as one
//! summary per peer per window (a minute by default). Anyone who can reach a listener (a
//! container on the bridge, a user of a `keyferry ssh` remote) can send such junk as fast as
//! the network allows; one audit line each would cost the agent a write per packet and bury
//! the user's own entries. A request that opened a grant is always audited on its own.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Mutex;

/// Where a gateway connection came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeerAddr {
    /// A TCP client's address (its port is not kept: one peer per host).
    Ip(IpAddr),
    /// A client of the gateway's Unix socket, by uid.
    Unix { uid: u32 },
    /// Every peer past [`MAX_PEERS`] in one window, counted together.
    Others,
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(ip) => write!(f, "{ip}"),
            Self::Unix { uid } => write!(f, "the Unix socket (uid {uid})"),
            Self::Others => write!(f, "more peers than one window keeps apart ({MAX_PEERS})"),
        }
    }
}

/// What one peer's connections were refused for, over one window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RefusedCounts {
    /// Connections closed for sending nothing within the first-byte deadline.
    pub silent: u64,
    /// Requests refused before any grant was opened, by HTTP status.
    pub by_status: BTreeMap<u16, u64>,
}

impl RefusedCounts {
    #[must_use]
    pub fn total(&self) -> u64 {
        self.silent + self.by_status.values().sum::<u64>()
    }
}

impl fmt::Display for RefusedCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for (status, n) in &self.by_status {
            parts.push(format!("{n} × {status}"));
        }
        if self.silent > 0 {
            parts.push(format!(
                "{} silent past the first-byte deadline",
                self.silent
            ));
        }
        f.write_str(&parts.join(", "))
    }
}

/// One peer's refusals over one window: what the audit gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusedSummary {
    pub peer: PeerAddr,
    pub counts: RefusedCounts,
    /// The window's length in seconds.
    pub window_secs: u64,
}

impl fmt::Display for RefusedSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refused {} from {} in {} s: {}",
            self.counts.total(),
            self.peer,
            self.window_secs,
            self.counts
        )
    }
}

/// What one refusal was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    Silent,
    Status(u16),
}

/// Refusals counted since the last drain. Bounded: past [`MAX_PEERS`] distinct peers in one
/// window, the rest are counted together as [`PeerAddr::Others`], so a flood from many
/// addresses cannot grow it.
#[derive(Default)]
pub struct Refusals {
    window: Mutex<BTreeMap<PeerAddr, RefusedCounts>>,
}

/// Distinct peers kept per window.
pub const MAX_PEERS: usize = 1024;

impl Refusals {
    pub fn count(&self, peer: PeerAddr, what: Refused) {
        let mut w = self
            .window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = if w.len() >= MAX_PEERS && !w.contains_key(&peer) {
            PeerAddr::Others
        } else {
            peer
        };
        let c = w.entry(key).or_default();
        match what {
            Refused::Silent => c.silent += 1,
            Refused::Status(s) => *c.by_status.entry(s).or_insert(0) += 1,
        }
    }

    /// The window's summaries (one per peer), and a new empty window.
    pub fn drain(&self, window_secs: u64) -> Vec<RefusedSummary> {
        let w = std::mem::take(
            &mut *self
                .window
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        w.into_iter()
            .map(|(peer, counts)| RefusedSummary {
                peer,
                counts,
                window_secs,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> PeerAddr {
        PeerAddr::Ip(s.parse().unwrap())
    }

    #[test]
    fn one_summary_per_peer_and_the_window_starts_over() {
        let r = Refusals::default();
        for _ in 0..500 {
            r.count(ip("10.0.0.2"), Refused::Status(401));
        }
        r.count(ip("10.0.0.2"), Refused::Silent);
        r.count(PeerAddr::Unix { uid: 1000 }, Refused::Status(404));
        let s = r.drain(60);
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[0].to_string(),
            "refused 501 from 10.0.0.2 in 60 s: 500 × 401, 1 silent past the first-byte deadline"
        );
        assert_eq!(
            s[1].to_string(),
            "refused 1 from the Unix socket (uid 1000) in 60 s: 1 × 404"
        );
        assert!(r.drain(60).is_empty());
    }

    #[test]
    fn a_flood_of_distinct_peers_stays_bounded_and_every_refusal_is_counted() {
        let r = Refusals::default();
        for i in 0..(MAX_PEERS as u32 + 500) {
            r.count(PeerAddr::Ip(IpAddr::from(i.to_be_bytes())), Refused::Silent);
        }
        let s = r.drain(60);
        assert_eq!(s.len(), MAX_PEERS + 1);
        let others = s.iter().find(|x| x.peer == PeerAddr::Others).unwrap();
        assert_eq!(others.counts.silent, 500);
        let total: u64 = s.iter().map(|x| x.counts.total()).sum();
        assert_eq!(total, MAX_PEERS as u64 + 500);
    }
}
