//! Human log lines that cannot be forged: every field value is written with its control
//! characters escaped (`\n`, `\u{1b}`...), so a newline or terminal escape in something a client
//! sent (a reason, a note, a queue name in an error) stays inside its field. The JSON format
//! escapes by construction.

use std::fmt;

use tracing::field::Field;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::FormatFields;

/// `value` with control characters, line separators and bidirectional or invisible characters
/// escaped ([`smista_core::error::escape`]).
#[must_use]
pub fn escape(value: &str) -> String {
    smista_core::error::escape(value)
}

/// The field formatter of the human log format.
#[must_use]
pub fn escaped_fields() -> impl for<'w> FormatFields<'w> + Send + Sync + 'static {
    tracing_subscriber::fmt::format::debug_fn(|w: &mut Writer<'_>, field: &Field, value: &dyn fmt::Debug| {
        let v = escape(&format!("{value:?}"));
        if field.name() == "message" {
            write!(w, "{v}")
        } else {
            write!(w, "{}={v}", field.name())
        }
    })
    .delimited(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_break_a_line() {
        assert_eq!(escape("ok"), "ok");
        assert_eq!(escape("a\nINFO forged\u{1b}[2J"), "a\\nINFO forged\\u{1b}[2J");
        assert!(!escape("x\r\n\t\u{7}").chars().any(char::is_control));
    }
}
