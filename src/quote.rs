//! User-supplied text quoted back in messages, shortened: a model reads every message,
//! and a 2 MB argument must not come back as a 2 MB answer.

/// How many characters of a user-supplied string a message quotes.
pub const QUOTE_CHARS: usize = 64;

/// `text` quoted as Rust (and JSON) would, cut to [`QUOTE_CHARS`] characters with an
/// ellipsis when longer.
pub fn quoted(text: &str) -> String {
    format!("{:?}", shorten(text, QUOTE_CHARS))
}

/// At most `max` characters of `text`, with an ellipsis when cut.
pub fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

/// `message` with every quoted run (`"…"`, with backslash escapes, or `` `…` ``) longer
/// than [`QUOTE_CHARS`] characters shortened: for messages this server does not write
/// itself, such as serde's, which quote the offending value whole.
pub fn shorten_quotes(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(4096));
    let mut rest = message;
    while let Some(open) = rest.find(['"', '`']) {
        let quote = rest.as_bytes()[open];
        out.push_str(&rest[..=open]);
        let inside = &rest[open + 1..];
        let Some(close) = closing(inside, quote) else {
            // Unterminated: the rest is the quote.
            out.push_str(&shorten(inside, QUOTE_CHARS));
            return out;
        };
        out.push_str(&shorten(&inside[..close], QUOTE_CHARS));
        out.push(char::from(quote));
        rest = &inside[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Where the quote `quote` that `text` is inside of closes (`"` honours backslash escapes).
fn closing(text: &str, quote: u8) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quote == b'"' => i += 2,
            b if b == quote => return Some(i),
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_quoted_whole() {
        assert_eq!(quoted("fix-login"), "\"fix-login\"");
        assert_eq!(quoted("a\"b"), "\"a\\\"b\"");
    }

    #[test]
    fn long_text_is_cut_with_an_ellipsis_on_a_character_boundary() {
        let long = "é".repeat(1000);
        let q = quoted(&long);
        assert_eq!(q.chars().count(), QUOTE_CHARS + 3);
        assert!(q.ends_with("…\""));
    }

    #[test]
    fn quotes_in_foreign_messages_are_shortened() {
        let long = "x".repeat(10_000);
        let message = format!(
            "failed to deserialize parameters: invalid type: string \"{long}\", expected a map; unknown field `{long}`"
        );
        let short = shorten_quotes(&message);
        assert!(short.len() < 300, "{short}");
        assert!(short.starts_with("failed to deserialize parameters: invalid type: string \"xxx"));
        assert!(short.contains("…\", expected a map; unknown field `xxx"));
        assert!(short.ends_with("…`"));
        // Escaped quotes do not end a quote; short quotes are left alone.
        let escaped = format!("value \"a\\\"{long}\" and \"ok\"");
        assert_eq!(
            shorten_quotes(&escaped),
            format!("value \"a\\\"{}…\" and \"ok\"", "x".repeat(QUOTE_CHARS - 3))
        );
        assert_eq!(shorten_quotes("no quotes"), "no quotes");
        assert_eq!(
            shorten_quotes(&format!("open \"{long}")).chars().count(),
            6 + 65
        );
    }
}
