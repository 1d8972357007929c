//! SQL text built from the domain's enums: a status or reason enters SQL
//! text only through its `as_str()` (one source of truth), never typed in as
//! a literal. They go in as text, not bound parameters, so the partial
//! indexes whose predicates name them (in `migrations/`) still match.

/// `words` as a comma-separated list of SQL string literals, for `IN (...)`:
/// `'a', 'b'`. The words are the enums' `as_str()`, which hold
/// no quote.
pub(crate) fn quoted(words: &[&str]) -> String {
    let mut out = String::new();
    for (i, word) in words.iter().enumerate() {
        debug_assert!(!word.contains('\''));
        if i > 0 {
            out.push_str(", ");
        }
        out.push('\'');
        out.push_str(word);
        out.push('\'');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn quoted_lists() {
        assert_eq!(super::quoted(&["a"]), "'a'");
        assert_eq!(super::quoted(&["a", "b"]), "'a', 'b'");
    }
}
