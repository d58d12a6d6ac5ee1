//! Budget reservations: a request of a grant with a daily token budget reserves its
//! estimated cost at admission, and the reservation is given back only after the real
//! usage has been recorded (`RequestRecord` → `Grants::record`), so parallel requests see
//! each other's cost before any of them has ended.
//!
//! The estimate is the request's `max_tokens` (the most it can generate) plus its body
//! size / 4 for the input (about 4 bytes per token for English text and JSON; the input's
//! real count is only known once upstream answers). A request fits when the budget left
//! today, minus what requests in flight have reserved, covers its estimate — or when
//! nothing is in flight and any budget is left, so a lone request is admitted as before and
//! a small budget stays usable. Hence the rule: parallel requests are never admitted more
//! often than sequential ones, and the day's metered total stays within the budget plus
//! one request's overshoot (its real usage beyond what was left).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::provider::GatewayProvider;

/// The tokens reserved by the requests in flight, per grant.
#[derive(Default)]
pub struct Reservations {
    held: Arc<Mutex<HashMap<String, u64>>>,
}

impl Reservations {
    /// Reserves `estimate` for `grant` against `left` (the budget not yet spent today), or
    /// `None` when it does not fit.
    pub fn reserve(&self, grant: &str, left: u64, estimate: u64) -> Option<Reservation> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let in_flight = held.get(grant).copied().unwrap_or(0);
        let fits = if in_flight == 0 {
            left > 0
        } else {
            in_flight.saturating_add(estimate) <= left
        };
        if !fits {
            return None;
        }
        // Never 0: a lone request that estimates nothing still makes the next one wait.
        let amount = estimate.max(1);
        *held.entry(grant.to_owned()).or_insert(0) += amount;
        Some(Reservation {
            held: Arc::clone(&self.held),
            grant: grant.to_owned(),
            amount,
        })
    }
}

/// One request's reservation; given back when dropped (after its usage is recorded).
pub struct Reservation {
    held: Arc<Mutex<HashMap<String, u64>>>,
    grant: String,
    amount: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = held.get_mut(&self.grant) {
            *n = n.saturating_sub(self.amount);
            if *n == 0 {
                held.remove(&self.grant);
            }
        }
    }
}

/// The estimated cost of a request body: the most it may generate (the provider reads its
/// field: `max_tokens`, `max_output_tokens`, …) plus body bytes / 4.
#[must_use]
pub fn estimate(provider: &dyn GatewayProvider, body: &[u8]) -> u64 {
    let max = provider.max_output_tokens(body).unwrap_or(0);
    max.saturating_add(body.len() as u64 / 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_is_max_tokens_plus_a_quarter_of_the_body() {
        use crate::provider::{anthropic::ANTHROPIC, openai::OPENAI};
        let body = br#"{"model":"m","max_tokens":100,"messages":[]}"#;
        assert_eq!(estimate(&ANTHROPIC, body), 100 + body.len() as u64 / 4);
        assert_eq!(estimate(&ANTHROPIC, b"not json"), 2);
        let codex = br#"{"model":"m","max_output_tokens":50,"input":[]}"#;
        assert_eq!(estimate(&OPENAI, codex), 50 + codex.len() as u64 / 4);
    }

    #[test]
    fn in_flight_reservations_count_and_are_given_back() {
        let r = Reservations::default();
        let a = r.reserve("g", 100, 60).unwrap();
        assert!(r.reserve("g", 100, 60).is_none());
        let b = r.reserve("g", 100, 40).unwrap();
        assert!(r.reserve("other", 100, 60).is_some());
        drop((a, b));
        // A lone request is admitted while any budget is left.
        assert!(r.reserve("g", 10, 60).is_some());
        assert!(r.reserve("g", 0, 1).is_none());
    }
}
