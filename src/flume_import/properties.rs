//! A reader of Java `.properties` files that keeps the line of every entry.
//!
//! The syntax is that of `java.util.Properties.load(Reader)`, which Flume's configuration provider
//! uses: a line whose first non-blank character is `#` or `!` is a comment; a key ends at the first
//! unescaped `=`, `:` or white space, and the separator is white space around at most one `=` or
//! `:`; a line ending in an odd number of backslashes continues on the next one (whose leading white
//! space is dropped); `\t`, `\n`, `\r`, `\f` and `\uXXXX` are escapes, and a backslash before any
//! other character stands for that character. Lines end at LF, CR or CRLF.

/// One `key = value` entry: its key and value with escapes resolved, and the 1-based line on which
/// it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key, unescaped.
    pub key: String,
    /// The value, unescaped; leading white space removed, trailing kept (as Java does).
    pub value: String,
    /// The line (1-based) the entry starts on.
    pub line: usize,
}

/// A syntax error: the line and what is wrong (only a malformed `\uXXXX` escape is one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct SyntaxError {
    /// The line (1-based) of the entry holding the bad escape.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\x0c')
}

/// The physical lines of `text`, split at LF, CR or CRLF (without their ends).
fn physical_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                lines.push(&text[start..i]);
                start = i + 1;
            }
            b'\r' => {
                lines.push(&text[start..i]);
                if bytes.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if start < bytes.len() {
        lines.push(&text[start..]);
    }
    lines
}

/// Whether `s` ends in an odd number of backslashes (the line continues).
fn continues(s: &str) -> bool {
    s.chars().rev().take_while(|&c| c == '\\').count() % 2 == 1
}

/// Parses `text`: the entries in file order (a key given twice appears twice), or the first
/// malformed `\uXXXX` escape.
pub fn parse(text: &str) -> Result<Vec<Entry>, SyntaxError> {
    let lines = physical_lines(text);
    let mut entries = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let first = i;
        let trimmed = lines[i].trim_start_matches(is_blank);
        i += 1;
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('!') {
            continue;
        }
        // Join continuation lines: drop the final backslash, then the next line's leading blanks.
        let mut logical = String::from(trimmed);
        while continues(&logical) && i <= lines.len() {
            logical.pop();
            if i == lines.len() {
                break;
            }
            logical.push_str(lines[i].trim_start_matches(is_blank));
            i += 1;
        }
        let line = first + 1;
        let (raw_key, raw_value) = split_key(&logical);
        let key = unescape(raw_key).map_err(|message| SyntaxError { line, message })?;
        let value = unescape(raw_value).map_err(|message| SyntaxError { line, message })?;
        entries.push(Entry { key, value, line });
    }
    Ok(entries)
}

/// Splits a logical line into its raw (still escaped) key and value.
fn split_key(logical: &str) -> (&str, &str) {
    let mut escaped = false;
    let mut key_end = logical.len();
    for (at, c) in logical.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '=' || c == ':' || is_blank(c) {
            key_end = at;
            break;
        }
    }
    let key = &logical[..key_end];
    let mut rest = logical[key_end..].trim_start_matches(is_blank);
    if let Some(r) = rest.strip_prefix('=').or_else(|| rest.strip_prefix(':')) {
        rest = r.trim_start_matches(is_blank);
    }
    (key, rest)
}

/// Resolves the escapes of a raw key or value.
fn unescape(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            None => {}
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\x0c'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let code = (hex.len() == 4)
                    .then(|| u32::from_str_radix(&hex, 16).ok())
                    .flatten()
                    .ok_or_else(|| format!("malformed \\uXXXX escape: \\u{hex}"))?;
                // A surrogate pair is two escapes; a lone surrogate becomes U+FFFD.
                if (0xD800..0xDC00).contains(&code) {
                    let rest = chars.as_str();
                    if let Some(low) = rest
                        .strip_prefix("\\u")
                        .and_then(|r| r.get(..4))
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                        .filter(|l| (0xDC00..0xE000).contains(l))
                    {
                        let joined = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                        out.push(char::from_u32(joined).unwrap_or('\u{FFFD}'));
                        chars = rest[6..].chars();
                        continue;
                    }
                }
                out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
            }
            Some(other) => out.push(other),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(text: &str) -> Vec<(String, String, usize)> {
        parse(text).expect("parses").into_iter().map(|e| (e.key, e.value, e.line)).collect()
    }

    fn e(k: &str, v: &str, l: usize) -> (String, String, usize) {
        (k.to_string(), v.to_string(), l)
    }

    #[test]
    fn separators_comments_and_blanks() {
        let text = "# comment\n! also\n\n  a.b = 1\nc:2\nd 3\ne\t=\t 4 \nf\ng=\n";
        assert_eq!(
            kv(text),
            vec![e("a.b", "1", 4), e("c", "2", 5), e("d", "3", 6), e("e", "4 ", 7), e("f", "", 8), e("g", "", 9)]
        );
    }

    #[test]
    fn continuations_keep_the_first_line() {
        let text = "a = one \\\n    two\\\n\tthree\nb = x\\\\\nc = y\n";
        assert_eq!(kv(text), vec![e("a", "one twothree", 1), e("b", "x\\", 4), e("c", "y", 5)]);
    }

    #[test]
    fn a_comment_line_does_not_continue() {
        assert_eq!(kv("# a \\\nb = 1\n"), vec![e("b", "1", 2)]);
    }

    #[test]
    fn escapes() {
        let text = "k\\ ey\\=x = a\\tb\\nc\\u00e9\\q\\\\ \\uD83D\\uDE00\n";
        assert_eq!(kv(text), vec![e("k ey=x", "a\tb\nc\u{e9}q\\ \u{1F600}", 1)]);
    }

    #[test]
    fn crlf_and_cr_end_lines() {
        assert_eq!(kv("a=1\r\nb=2\rc=3"), vec![e("a", "1", 1), e("b", "2", 2), e("c", "3", 3)]);
    }

    #[test]
    fn malformed_unicode_escape_is_an_error_with_its_line() {
        let err = parse("a = 1\nb = \\u12x4\n").expect_err("bad escape");
        assert_eq!(err.line, 2);
        assert!(err.message.contains("\\u12x4"), "{err}");
    }

    #[test]
    fn final_backslash_at_end_of_file_is_dropped() {
        assert_eq!(kv("a = b\\"), vec![e("a", "b", 1)]);
    }
}
