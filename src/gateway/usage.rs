//! Token metering of answers passing through: a small line assembler reads an SSE stream
//! incrementally (so the stream itself is never held back) and hands the events that may
//! carry usage to the provider; a plain JSON answer is copied (bounded) and read whole.

use crate::provider::GatewayProvider;
pub use crate::provider::Usage;

/// SSE lines longer than this are not metering events (those are short); they are skipped
/// rather than assembled, so memory stays bounded whatever the stream holds.
const MAX_LINE: usize = 64 << 10;
/// A plain JSON answer is kept (as a copy, after it was passed on) up to this size.
const MAX_JSON: usize = 4 << 20;

/// Reads usage from bytes as they pass, in whatever chunks they come.
pub enum Meter {
    Sse {
        provider: &'static dyn GatewayProvider,
        line: Vec<u8>,
        skipping: bool,
        /// Whether the current event (its `event:` line) may carry usage.
        wanted: Option<bool>,
        usage: Usage,
    },
    Json {
        provider: &'static dyn GatewayProvider,
        copy: Vec<u8>,
        overflow: bool,
    },
    Off,
}

impl Meter {
    /// The meter for an answer of `provider`'s API with this `content-type`.
    #[must_use]
    pub fn for_content_type(
        provider: &'static dyn GatewayProvider,
        content_type: Option<&str>,
    ) -> Self {
        // Compared in place, case-insensitively: no lowercased copy per answer.
        let is = |prefix: &str| {
            content_type
                .and_then(|ct| ct.get(..prefix.len()))
                .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
        };
        if is("text/event-stream") {
            Self::Sse {
                provider,
                line: Vec::new(),
                skipping: false,
                wanted: None,
                usage: Usage::default(),
            }
        } else if is("application/json") {
            Self::Json {
                provider,
                copy: Vec::new(),
                overflow: false,
            }
        } else {
            Self::Off
        }
    }

    pub fn feed(&mut self, mut bytes: &[u8]) {
        match self {
            Self::Sse {
                provider,
                line,
                skipping,
                wanted,
                usage,
            } => {
                while let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
                    if !*skipping && line.len() + nl <= MAX_LINE {
                        line.extend_from_slice(&bytes[..nl]);
                        sse_line(*provider, line, wanted, usage);
                    }
                    line.clear();
                    *skipping = false;
                    bytes = &bytes[nl + 1..];
                }
                if !*skipping {
                    if line.len() + bytes.len() > MAX_LINE {
                        line.clear();
                        *skipping = true;
                    } else {
                        line.extend_from_slice(bytes);
                    }
                }
            }
            Self::Json { copy, overflow, .. } => {
                if copy.len() + bytes.len() > MAX_JSON {
                    *overflow = true;
                    copy.clear();
                } else if !*overflow {
                    copy.extend_from_slice(bytes);
                }
            }
            Self::Off => {}
        }
    }

    /// The usage seen so far (for a stream cut short, what had arrived).
    #[must_use]
    pub fn usage(&self) -> Usage {
        match self {
            Self::Sse { usage, .. } => *usage,
            Self::Json {
                provider,
                copy,
                overflow: false,
            } => provider.json_usage(copy).unwrap_or_default(),
            Self::Json { .. } | Self::Off => Usage::default(),
        }
    }
}

/// One complete line. The `event:` line names the event, so the (possibly long) data of
/// content deltas is never searched; a data line without an event name is searched.
fn sse_line(
    provider: &dyn GatewayProvider,
    line: &[u8],
    wanted: &mut Option<bool>,
    usage: &mut Usage,
) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        *wanted = None;
        return;
    }
    if let Some(name) = line.strip_prefix(b"event:") {
        let name = name.trim_ascii();
        *wanted = Some(provider.usage_events().iter().any(|e| e.as_bytes() == name));
        return;
    }
    let Some(data) = line.strip_prefix(b"data:") else {
        return;
    };
    let has = |needle: &[u8]| data.windows(needle.len()).any(|w| w == needle);
    let wanted =
        wanted.unwrap_or_else(|| provider.usage_events().iter().any(|e| has(e.as_bytes())));
    if wanted {
        provider.apply_usage_event(data, usage);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::anthropic::ANTHROPIC;

    fn meter(content_type: &str) -> Meter {
        Meter::for_content_type(&ANTHROPIC, Some(content_type))
    }

    const STREAM: &str = "event: message_start\r\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"content\":[],\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":7,\"cache_read_input_tokens\":300,\"output_tokens\":1}}}\r\n\r\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"message_delta lookalike\"}}\n\n\
event: message_delta\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":null},\"usage\":{\"output_tokens\":10}}\n\n\
event: message_delta\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":42}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

    const WANT: Usage = Usage {
        input_tokens: 25,
        output_tokens: 42,
        cache_creation_input_tokens: 7,
        cache_read_input_tokens: 300,
    };

    #[test]
    fn sse_fed_byte_by_byte_counts_start_and_last_delta() {
        let mut m = meter("text/event-stream; charset=utf-8");
        for b in STREAM.as_bytes() {
            m.feed(std::slice::from_ref(b));
        }
        assert_eq!(m.usage(), WANT);
        assert_eq!(WANT.total(), 374);
    }

    #[test]
    fn sse_in_every_split_of_two_chunks() {
        let bytes = STREAM.as_bytes();
        for cut in 0..=bytes.len() {
            let mut m = meter("text/event-stream");
            m.feed(&bytes[..cut]);
            m.feed(&bytes[cut..]);
            assert_eq!(m.usage(), WANT, "cut at {cut}");
        }
    }

    #[test]
    fn an_overlong_line_is_skipped_not_kept() {
        let mut m = meter("text/event-stream");
        m.feed(b"data: ");
        for _ in 0..100 {
            m.feed(&[b'x'; 4096]);
        }
        let Meter::Sse { line, .. } = &m else {
            panic!("sse meter")
        };
        assert!(line.len() <= MAX_LINE);
        m.feed(b"\n");
        m.feed(STREAM.as_bytes());
        assert_eq!(m.usage(), WANT);
    }

    #[test]
    fn json_answer_in_pieces() {
        let body = br#"{"id":"m","type":"message","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":3,"output_tokens":5,"cache_read_input_tokens":2}}"#;
        let mut m = meter("application/json");
        for chunk in body.chunks(7) {
            m.feed(chunk);
        }
        let want = Usage {
            input_tokens: 3,
            output_tokens: 5,
            cache_read_input_tokens: 2,
            ..Usage::default()
        };
        assert_eq!(m.usage(), want);
        let mut other = meter("text/plain");
        other.feed(body);
        assert_eq!(other.usage(), Usage::default());
    }

    #[test]
    fn data_only_streams_are_searched_and_event_names_are_trusted() {
        let data_only: String = STREAM
            .lines()
            .filter(|l| !l.starts_with("event:"))
            .map(|l| format!("{l}\n"))
            .collect();
        let mut m = meter("text/event-stream");
        m.feed(data_only.as_bytes());
        assert_eq!(m.usage(), WANT);
        // A usage-looking payload under another event's name is not counted.
        let mut m = meter("text/event-stream");
        m.feed(b"event: content_block_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":9}}\n\n");
        assert_eq!(m.usage(), Usage::default());
    }

    #[test]
    fn malformed_events_count_nothing() {
        let mut m = meter("text/event-stream");
        m.feed(b"data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":\"many\"}}}\n\n");
        m.feed(b"data: {\"type\":\"message_delta\"\n\n");
        assert_eq!(m.usage(), Usage::default());
    }
}
