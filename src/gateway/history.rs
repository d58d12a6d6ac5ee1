//! A grant's use per hour over the last 7 days: requests and tokens in, out and cached, one
//! bucket per UTC hour that saw a request. Bounded (at most 168 buckets, older ones
//! dropped as new ones come), kept in the grants file (0600, in the state folder) so it
//! survives restarts, and never holding anything but counts.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::usage::Usage;

/// Hours kept: 7 days.
pub const HOURS: i64 = 7 * 24;

/// One hour's use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hour {
    /// Hours since the Unix epoch (UTC): the bucket's start is `hour * 3600`.
    pub hour: i64,
    pub requests: u64,
    #[serde(default)]
    pub tokens: Usage,
}

impl Hour {
    /// When the bucket starts.
    #[must_use]
    pub fn start(&self) -> Option<OffsetDateTime> {
        OffsetDateTime::from_unix_timestamp(self.hour.saturating_mul(3600)).ok()
    }
}

/// The buckets, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct History(Vec<Hour>);

fn hour_of(at: OffsetDateTime) -> i64 {
    at.unix_timestamp().div_euclid(3600)
}

impl History {
    /// Counts one request's `usage` at `now`, and drops what is older than [`HOURS`].
    pub fn record(&mut self, usage: &Usage, now: OffsetDateTime) {
        let hour = hour_of(now);
        match self.0.last_mut() {
            Some(last) if last.hour == hour => {
                last.requests = last.requests.saturating_add(1);
                last.tokens.add(usage);
            }
            // A clock set back: counted in the latest bucket rather than out of order.
            Some(last) if last.hour > hour => {
                last.requests = last.requests.saturating_add(1);
                last.tokens.add(usage);
            }
            _ => self.0.push(Hour {
                hour,
                requests: 1,
                tokens: *usage,
            }),
        }
        self.prune(now);
    }

    /// Drops buckets older than [`HOURS`] before `now` (and any beyond the bound, from a
    /// file edited by hand).
    pub fn prune(&mut self, now: OffsetDateTime) {
        let oldest = hour_of(now) - HOURS + 1;
        self.0.retain(|h| h.hour >= oldest);
        let extra = self
            .0
            .len()
            .saturating_sub(usize::try_from(HOURS).unwrap_or(168));
        self.0.drain(..extra);
    }

    #[must_use]
    pub fn hours(&self) -> &[Hour] {
        &self.0
    }

    /// Tokens per hour for the `n` hours up to `now`'s, oldest first (0 where none).
    #[must_use]
    pub fn last_hours(&self, n: usize, now: OffsetDateTime) -> Vec<u64> {
        let end = hour_of(now);
        let n_i = i64::try_from(n).unwrap_or(HOURS);
        (0..n_i)
            .map(|i| {
                let h = end - n_i + 1 + i;
                self.0
                    .iter()
                    .find(|b| b.hour == h)
                    .map_or(0, |b| b.tokens.total())
            })
            .collect()
    }
}

/// One bar of a listed grant's use: `width` seconds from `start` (unix seconds, UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bucket {
    pub start: i64,
    pub requests: u64,
    pub tokens: u64,
}

/// A listed grant's use (`GrantInfo::history`) in the `n` buckets of `width` seconds that
/// end with the one holding `now`, oldest first. Buckets align to the epoch, so a day's
/// (86 400 s) is a UTC day.
#[must_use]
pub fn buckets(
    history: &[crate::domain::HourUse],
    width: i64,
    n: usize,
    now: OffsetDateTime,
) -> Vec<Bucket> {
    let end = now.unix_timestamp().div_euclid(width);
    let mut out: Vec<Bucket> = (0..n)
        .map(|i| Bucket {
            start: (end - (n - 1 - i) as i64) * width,
            ..Bucket::default()
        })
        .collect();
    for h in history {
        let Ok(at) = OffsetDateTime::parse(&h.hour, &time::format_description::well_known::Rfc3339)
        else {
            continue;
        };
        let back = end - at.unix_timestamp().div_euclid(width);
        if let Some(b) = usize::try_from(back).ok().filter(|b| *b < n) {
            let bucket = &mut out[n - 1 - b];
            bucket.requests = bucket.requests.saturating_add(h.requests);
            bucket.tokens = bucket
                .tokens
                .saturating_add(h.input_tokens)
                .saturating_add(h.output_tokens)
                .saturating_add(h.cache_creation_input_tokens)
                .saturating_add(h.cache_read_input_tokens);
        }
    }
    out
}

/// The last `n` hours of a listed grant's use (`GrantInfo::history`) as a sparkline of
/// tokens per hour, the newest hour last.
#[must_use]
pub fn sparkline_of(history: &[crate::domain::HourUse], n: usize, now: OffsetDateTime) -> String {
    let per_hour: Vec<u64> = buckets(history, 3600, n, now)
        .iter()
        .map(|b| b.tokens)
        .collect();
    sparkline(&per_hour)
}

/// `values` as a bar per value, `▁` to `█` scaled to the largest (a space for 0).
#[must_use]
pub fn sparkline(values: &[u64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().copied().max().unwrap_or(0);
    values
        .iter()
        .map(|&v| {
            if v == 0 || max == 0 {
                ' '
            } else {
                // 1..=max onto 0..=7, a non-zero value never drawn as nothing.
                let i = (u128::from(v) * 7 / u128::from(max)) as usize;
                BARS[i.min(7)]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(hours: i64, mins: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 / 3600 * 3600 + hours * 3600 + mins * 60)
            .unwrap()
    }

    fn used(n: u64) -> Usage {
        Usage {
            input_tokens: n,
            output_tokens: n,
            ..Usage::default()
        }
    }

    #[test]
    fn one_bucket_per_hour_seven_days_kept() {
        let mut h = History::default();
        h.record(&used(1), at(0, 1));
        h.record(&used(2), at(0, 59));
        h.record(&used(5), at(1, 0));
        assert_eq!(h.hours().len(), 2);
        assert_eq!((h.hours()[0].requests, h.hours()[0].tokens.total()), (2, 6));
        assert_eq!(h.last_hours(3, at(1, 30)), vec![0, 6, 10]);
        // A week and an hour later the first buckets are gone, the bound holds.
        for i in 0..200 {
            h.record(&used(1), at(2 + i, 0));
        }
        assert_eq!(h.hours().len(), 168);
        assert!(h
            .hours()
            .iter()
            .all(|b| b.hour > at(1, 0).unix_timestamp() / 3600));
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<History>(&json).unwrap(), h);
    }

    #[test]
    fn a_clock_set_back_counts_in_the_latest_bucket() {
        let mut h = History::default();
        h.record(&used(1), at(5, 0));
        h.record(&used(1), at(3, 0));
        assert_eq!(h.hours().len(), 1);
        assert_eq!(h.hours()[0].requests, 2);
    }

    #[test]
    fn a_listed_history_draws_its_last_hours() {
        let use_at = |h: i64, t: u64| crate::domain::HourUse {
            hour: crate::domain::rfc3339(at(h, 0)).unwrap(),
            requests: 1,
            input_tokens: t,
            output_tokens: 0,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 0,
        };
        let listed = [use_at(-30, 9), use_at(-2, 2), use_at(0, 8)];
        assert_eq!(sparkline_of(&listed, 4, at(0, 10)), " ▂ █");
    }

    #[test]
    fn sparkline_scales_to_the_largest() {
        assert_eq!(sparkline(&[0, 1, 4, 8]), " ▁▄█");
        assert_eq!(sparkline(&[0, 0]), "  ");
        assert_eq!(sparkline(&[u64::MAX, 1]), "█▁");
    }
}
