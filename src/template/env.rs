//! `.env` files edited line by line: comments, blank lines and `export` survive verbatim.

use super::{placeholder, KeyPath, ParseFail, Redactor};

pub(super) fn process(text: &str, redactor: &mut Redactor) -> Result<String, ParseFail> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < lines.len() {
        let line_no = i + 1;
        let line = lines[i];
        let body = line.trim_end_matches(['\n', '\r']);
        let trimmed = body.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            out.push_str(line);
            i += 1;
            continue;
        }
        let entry = parse_entry(&lines, i).ok_or(ParseFail::at_line(line_no))?;
        let mut path = KeyPath::default();
        path.push_key(entry.key);
        match redactor.string(&path, &entry.value) {
            Some(new) => {
                // Single quotes are literal in dotenv and in a shell that sources the file.
                let new = if new.contains('\'') {
                    placeholder(&entry.value)
                } else {
                    new
                };
                out.push_str(&body[..entry.value_start]);
                out.push('\'');
                out.push_str(&new);
                out.push('\'');
                out.push_str(entry.suffix);
                out.push_str(entry.ending);
            }
            None => {
                for l in &lines[i..entry.next_line] {
                    out.push_str(l);
                }
            }
        }
        i = entry.next_line;
    }
    Ok(out)
}

struct Entry<'a> {
    key: &'a str,
    /// The value, quotes removed and `\n` escapes of double quotes decoded.
    value: String,
    /// Byte offset of the value (its opening quote) in the first line.
    value_start: usize,
    /// What follows the value on its last line: spaces and a `#` comment.
    suffix: &'a str,
    /// The line ending of the last line.
    ending: &'a str,
    /// Index of the first line after the entry.
    next_line: usize,
}

fn parse_entry<'a>(lines: &[&'a str], first: usize) -> Option<Entry<'a>> {
    let body = lines[first].trim_end_matches(['\n', '\r']);
    let rest = body.trim_start();
    let rest = rest
        .strip_prefix("export")
        .filter(|r| r.starts_with([' ', '\t']))
        .map_or(rest, str::trim_start);
    let key_len = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        .unwrap_or(rest.len());
    let key = &rest[..key_len];
    if key.is_empty() || key.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let after_key = rest[key_len..].trim_start_matches([' ', '\t']);
    let after_eq = after_key.strip_prefix('=')?;
    let value_part = after_eq.trim_start_matches([' ', '\t']);
    let value_start = body.len() - value_part.len();

    let Some(quote) = value_part
        .chars()
        .next()
        .filter(|c| matches!(c, '"' | '\''))
    else {
        // Unquoted: the value runs to a ` #` comment or the end of the line.
        let end = value_part
            .char_indices()
            .find(|&(i, c)| c == '#' && value_part[..i].ends_with([' ', '\t']))
            .map_or(value_part.len(), |(i, _)| i);
        // Only spaces and tabs end a value: they are all a quoted value may be followed by, so
        // the rendered `'<placeholder>'` plus this suffix parses again.
        let value = value_part[..end].trim_end_matches([' ', '\t']);
        return Some(Entry {
            key,
            value: value.to_owned(),
            value_start,
            suffix: &value_part[value.len()..],
            ending: &lines[first][body.len()..],
            next_line: first + 1,
        });
    };

    // Quoted, possibly over several lines.
    let mut raw = String::new();
    let mut segment = &value_part[1..];
    let mut line = first;
    loop {
        if let Some(close) = find_close(segment, quote) {
            raw.push_str(&segment[..close]);
            let tail = &segment[close + 1..];
            let suffix_ok = {
                let t = tail.trim_start_matches([' ', '\t']);
                t.is_empty() || t.starts_with('#')
            };
            if !suffix_ok {
                return None;
            }
            let last = lines[line];
            let last_body = last.trim_end_matches(['\n', '\r']);
            let value = if quote == '"' {
                unescape_double(&raw)
            } else {
                raw
            };
            return Some(Entry {
                key,
                value,
                value_start,
                suffix: tail,
                ending: &last[last_body.len()..],
                next_line: line + 1,
            });
        }
        // No closing quote on this line: the value goes on, line break included.
        raw.push_str(segment);
        raw.push_str(&lines[line][lines[line].trim_end_matches(['\n', '\r']).len()..]);
        line += 1;
        segment = lines.get(line)?.trim_end_matches(['\n', '\r']);
    }
}

fn find_close(s: &str, quote: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if quote == '"' && escaped {
            escaped = false;
            continue;
        }
        if quote == '"' && c == '\\' {
            escaped = true;
            continue;
        }
        if c == quote {
            return Some(i);
        }
    }
    None
}

fn unescape_double(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}
