//! Failure collection for the store contract: violations per backend, and every secret
//! value used, so no error's text may contain one.

use keyferry::store::StoreError;
use keyferry::Secret;

/// Contract violations seen so far, and every secret value used (to prove no error leaks one).
#[derive(Default)]
pub(crate) struct Report {
    pub(crate) failures: Vec<String>,
    pub(crate) secrets: Vec<String>,
}

impl Report {
    pub(crate) fn fail(&mut self, scope: &str, msg: impl Into<String>) {
        let msg = format!("[{scope}] {}", msg.into());
        println!("FAIL {msg}");
        self.failures.push(msg);
    }

    pub(crate) fn check(&mut self, scope: &str, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            self.fail(scope, msg());
        }
    }

    pub(crate) fn secret(&mut self, value: &str) -> Secret {
        self.secrets.push(value.to_owned());
        Secret::new(value.to_owned())
    }

    /// Every error we see: its `Display` and `Debug` must not contain any secret used.
    pub(crate) fn saw_error(&mut self, scope: &str, e: &StoreError) {
        let shown = format!("{e} | {e:?}");
        println!("  [{scope}] error seen: {e}");
        let leaked: Vec<usize> = self
            .secrets
            .iter()
            .enumerate()
            .filter(|(_, s)| s.len() >= 4 && shown.contains(s.as_str()))
            .map(|(i, _)| i)
            .collect();
        if !leaked.is_empty() {
            self.fail(
                scope,
                format!(
                    "an error's Display/Debug contains secret value(s) #{leaked:?} (code {})",
                    e.code()
                ),
            );
        }
    }

    /// `Ok` value, or records the error as a failure.
    pub(crate) fn ok<T>(&mut self, scope: &str, what: &str, r: Result<T, StoreError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.saw_error(scope, &e);
                self.fail(
                    scope,
                    format!("{what}: unexpected error {} ({e})", e.code()),
                );
                None
            }
        }
    }

    pub(crate) fn finish(self, what: &str) {
        assert!(
            self.failures.is_empty(),
            "{what}: {} contract violation(s):\n  - {}",
            self.failures.len(),
            self.failures.join("\n  - ")
        );
    }
}

pub(crate) fn exposed(s: &Option<Secret>) -> Option<&str> {
    s.as_ref().map(Secret::expose)
}

/// Shows a value in failure messages without printing it: length and a short hash.
pub(crate) fn shape(s: Option<&str>) -> String {
    use std::hash::{Hash, Hasher};
    match s {
        None => "None".into(),
        Some(v) => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            v.hash(&mut h);
            format!(
                "Some({} bytes, hash {:08x})",
                v.len(),
                h.finish() & 0xffff_ffff
            )
        }
    }
}
