//! Large payloads on a page: a step's input and output, an event's data and
//! a step's logs are shown up to a bound, with what was left out said and a
//! link to the whole JSON from the API, so one huge output cannot make the
//! page heavy.

use serde::Serialize;

/// Most bytes of one input, output or error shown on a page.
pub(crate) const MAX_SHOWN_BYTES: usize = 4 * 1024;

/// Most bytes of one history event's data shown in the history table.
pub(crate) const MAX_EVENT_BYTES: usize = 512;

/// Most log lines of one step shown on the run page (the last ones).
pub(crate) const MAX_LOG_LINES: usize = 200;

/// Most bytes of one log line shown on the run page (a longer one is cut,
/// the whole in the step's logs JSON): a worker may send lines of 64 KB.
pub(crate) const MAX_LOG_LINE_BYTES: usize = 1024;

/// Most bytes of one step's log lines shown on the run page, so that many
/// long lines cannot make the page heavy whatever their count.
pub(crate) const MAX_STEP_LOG_BYTES: usize = 16 * 1024;

/// How many of the last lines of a step, whose shown sizes in bytes are
/// `sizes` (oldest first), the run page shows: at most [`MAX_LOG_LINES`]
/// and [`MAX_STEP_LOG_BYTES`], and the last line whatever its size.
pub(crate) fn log_tail(sizes: &[usize]) -> usize {
    let mut bytes = 0;
    let mut shown = 0;
    for size in sizes.iter().rev().take(MAX_LOG_LINES) {
        bytes += size;
        if shown > 0 && bytes > MAX_STEP_LOG_BYTES {
            break;
        }
        shown += 1;
    }
    shown
}

/// A text as shown: its start, and when clipped, how big the whole is.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Shown {
    /// At most the bound's bytes, cut at a character boundary.
    pub(crate) text: String,
    /// The whole text's size (`12.3 KB`) when `text` is only its start.
    pub(crate) clipped: Option<String>,
}

/// `text` up to `max` bytes.
pub(crate) fn clip(text: String, max: usize) -> Shown {
    if text.len() <= max {
        return Shown {
            text,
            clipped: None,
        };
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Shown {
        clipped: Some(size(text.len())),
        text: format!("{}…", &text[..end]),
    }
}

/// A size in bytes for people: `900 B`, `12.3 KB`, `4.1 MB`.
pub(crate) fn size(bytes: usize) -> String {
    let b = bytes as f64;
    if bytes < 1024 {
        format!("{bytes} B")
    } else if bytes < 1024 * 1024 {
        format!("{:.1} KB", b / 1024.0)
    } else {
        format!("{:.1} MB", b / (1024.0 * 1024.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_clipped_at_a_character_boundary() {
        let short = clip("abc".to_owned(), 8);
        assert_eq!((short.text.as_str(), short.clipped), ("abc", None));
        let long = clip("é".repeat(2000), 5);
        assert_eq!(long.text, "éé…");
        assert_eq!(long.clipped.as_deref(), Some("3.9 KB"));
        assert_eq!(size(900), "900 B");
        assert_eq!(size(5 * 1024 * 1024), "5.0 MB");
    }

    #[test]
    fn a_steps_log_tail_is_bounded_by_lines_and_bytes() {
        assert_eq!(log_tail(&[]), 0);
        assert_eq!(log_tail(&[10; 250]), MAX_LOG_LINES);
        assert_eq!(log_tail(&[1024; 100]), MAX_STEP_LOG_BYTES / 1024);
        assert_eq!(log_tail(&[10, 10, MAX_STEP_LOG_BYTES * 2]), 1);
    }
}
