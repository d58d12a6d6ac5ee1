//! `.env` parse-and-rewrite: set one key, render. Invariants: no panic; every other line
//! is byte-identical (an append may only give the old last line its missing newline);
//! the rewritten line is one line; reading the key back gives exactly the value set.
#![no_main]

use keyferry::dotenv::Dotenv;
use keyferry::Secret;
use libfuzzer_sys::fuzz_target;

const KEY_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789";

fuzz_target!(|data: &[u8]| {
    // [key length][key bytes][value length][value bytes][document]
    let Some((&klen, rest)) = data.split_first() else {
        return;
    };
    let klen = usize::from(klen % 32) + 1;
    if rest.len() < klen {
        return;
    }
    let (kraw, rest) = rest.split_at(klen);
    let key: String = kraw
        .iter()
        .map(|b| {
            char::from(if KEY_CHARS.contains(b) {
                *b
            } else {
                KEY_CHARS[usize::from(*b) % KEY_CHARS.len()]
            })
        })
        .collect();
    let Some((&vlen, rest)) = rest.split_first() else {
        return;
    };
    let vlen = usize::from(vlen).min(rest.len());
    let (vraw, doc) = rest.split_at(vlen);
    let value = String::from_utf8_lossy(vraw).into_owned();
    let text = String::from_utf8_lossy(doc).into_owned();

    let mut d = Dotenv::parse(&text);
    // A duplicate key is refused before anything changes; nothing more to check.
    if d.set(&key, &Secret::new(value.clone()), "fuzz").is_err() {
        return;
    }
    let out = d.render().expose().to_owned();
    let before: Vec<&str> = text.split_inclusive('\n').collect();
    let after: Vec<&str> = out.split_inclusive('\n').collect();
    let changed: Vec<usize> = if after.len() == before.len() {
        (0..before.len())
            .filter(|i| before[*i] != after[*i])
            .collect()
    } else {
        assert_eq!(
            after.len(),
            before.len() + 1,
            "an append adds exactly one line\nin:  {text:?}\nout: {out:?}"
        );
        for (i, line) in before.iter().enumerate() {
            let kept = after[i] == *line
                || (i + 1 == before.len()
                    && !line.ends_with('\n')
                    && [format!("{line}\n"), format!("{line}\r\n")].contains(&after[i].to_owned()));
            assert!(kept, "line {} changed\nin:  {text:?}\nout: {out:?}", i + 1);
        }
        vec![before.len()]
    };
    assert!(
        changed.len() <= 1,
        "more than one line changed: {changed:?}\nin:  {text:?}\nout: {out:?}"
    );
    let reread = Dotenv::parse(&out)
        .get(&key, "fuzz")
        .unwrap_or_else(|e| panic!("re-reading failed: {e}\nin:  {text:?}\nout: {out:?}"));
    assert_eq!(
        reread.as_ref().map(Secret::expose),
        Some(value.as_str()),
        "the value does not read back\nin:  {text:?}\nout: {out:?}"
    );
});
