//! "Did you mean …?": the closest known name to a mistyped one, by edit distance.

/// The known name closest to `typed`, when it is close enough to be a typo: at most 2 edits
/// and under half the typed name's length, 1 at least (so `x` suggests nothing, not `codex`).
#[must_use]
pub fn closest<'a>(typed: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = 2.min(typed.chars().count().saturating_sub(1) / 2).max(1);
    known
        .into_iter()
        .filter(|k| *k != typed)
        .map(|k| (distance(typed, k), k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// `; did you mean `NAME`?` for an error message, or nothing.
#[must_use]
pub fn did_you_mean<'a>(typed: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    closest(typed, known).map_or_else(String::new, |k| format!("; did you mean `{k}`?"))
}

/// Levenshtein distance over chars, case-insensitive (`Claude` is one keypress from `claude`
/// in a user's mind, not six).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().flat_map(char::to_lowercase).collect();
    let b: Vec<char> = b.chars().flat_map(char::to_lowercase).collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: [&str; 3] = ["claude", "codex", "gemini"];

    #[test]
    fn typos_find_the_name() {
        assert_eq!(closest("claud", KNOWN), Some("claude"));
        assert_eq!(closest("cluade", KNOWN), Some("claude"));
        assert_eq!(closest("Claude", KNOWN), Some("claude"));
        assert_eq!(closest("codx", KNOWN), Some("codex"));
        assert_eq!(closest("gemni", KNOWN), Some("gemini"));
    }

    #[test]
    fn unrelated_or_tiny_names_suggest_nothing() {
        assert_eq!(closest("openai", KNOWN), None);
        assert_eq!(closest("x", KNOWN), None);
        assert_eq!(closest("", KNOWN), None);
        assert_eq!(did_you_mean("openai", KNOWN), "");
    }

    #[test]
    fn the_distance_counts_edits() {
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("abc", "abc"), 0);
    }
}
