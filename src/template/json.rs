//! JSON edited in place: only the spans of replaced values change.

use super::{KeyPath, ParseFail, Redactor};

pub(super) fn process(text: &str, redactor: &mut Redactor) -> Result<String, ParseFail> {
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
        return Err(ParseFail {
            line: Some(e.line()),
            column: Some(e.column()),
        });
    }
    let mut scan = Scanner {
        text,
        pos: 0,
        edits: Vec::new(),
    };
    let mut path = KeyPath::default();
    scan.value(&mut path, redactor)?;
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for (start, end, new) in scan.edits {
        out.push_str(&text[copied..start]);
        out.push_str(&new);
        copied = end;
    }
    out.push_str(&text[copied..]);
    Ok(out)
}

/// Walks a document already validated by `serde_json` (which also bounds its depth).
struct Scanner<'a> {
    text: &'a str,
    pos: usize,
    /// Byte ranges to replace, in order, with the JSON literal that replaces them.
    edits: Vec<(usize, usize, String)>,
}

impl Scanner<'_> {
    fn fail(&self) -> ParseFail {
        ParseFail::at_offset(self.text, self.pos)
    }

    fn peek(&self) -> Result<u8, ParseFail> {
        self.text
            .as_bytes()
            .get(self.pos)
            .copied()
            .ok_or_else(|| self.fail())
    }

    fn skip_ws(&mut self) {
        while let Some(b) = self.text.as_bytes().get(self.pos) {
            if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                break;
            }
            self.pos += 1;
        }
    }

    fn expect(&mut self, b: u8) -> Result<(), ParseFail> {
        self.skip_ws();
        if self.peek()? != b {
            return Err(self.fail());
        }
        self.pos += 1;
        Ok(())
    }

    /// The span of a string literal starting at `pos`, quotes included, and its value.
    fn string(&mut self) -> Result<(usize, usize, String), ParseFail> {
        let start = self.pos;
        let bytes = self.text.as_bytes();
        self.pos += 1;
        loop {
            match bytes.get(self.pos) {
                Some(b'"') => break,
                Some(b'\\') => self.pos += 2,
                Some(_) => self.pos += 1,
                None => return Err(self.fail()),
            }
        }
        self.pos += 1;
        let literal = self.text.get(start..self.pos).ok_or_else(|| self.fail())?;
        let value = serde_json::from_str::<String>(literal).map_err(|_| self.fail())?;
        Ok((start, self.pos, value))
    }

    fn value(&mut self, path: &mut KeyPath, r: &mut Redactor) -> Result<(), ParseFail> {
        self.skip_ws();
        match self.peek()? {
            b'{' => {
                self.pos += 1;
                self.skip_ws();
                if self.peek()? == b'}' {
                    self.pos += 1;
                    return Ok(());
                }
                loop {
                    self.skip_ws();
                    let (_, _, key) = self.string()?;
                    self.expect(b':')?;
                    path.push_key(&key);
                    self.value(path, r)?;
                    path.pop();
                    self.skip_ws();
                    let b = self.peek()?;
                    self.pos += 1;
                    match b {
                        b',' => continue,
                        b'}' => return Ok(()),
                        _ => return Err(self.fail()),
                    }
                }
            }
            b'[' => {
                self.pos += 1;
                self.skip_ws();
                if self.peek()? == b']' {
                    self.pos += 1;
                    return Ok(());
                }
                let mut i = 0;
                loop {
                    path.push_index(i);
                    self.value(path, r)?;
                    path.pop();
                    i += 1;
                    self.skip_ws();
                    let b = self.peek()?;
                    self.pos += 1;
                    match b {
                        b',' => continue,
                        b']' => return Ok(()),
                        _ => return Err(self.fail()),
                    }
                }
            }
            b'"' => {
                let (start, end, value) = self.string()?;
                if let Some(new) = r.string(path, &value) {
                    self.edits.push((start, end, quote(&new)));
                }
                Ok(())
            }
            b't' | b'f' | b'n' => {
                while self
                    .text
                    .as_bytes()
                    .get(self.pos)
                    .is_some_and(u8::is_ascii_lowercase)
                {
                    self.pos += 1;
                }
                Ok(())
            }
            _ => {
                let start = self.pos;
                while self.text.as_bytes().get(self.pos).is_some_and(|b| {
                    b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E')
                }) {
                    self.pos += 1;
                }
                if start == self.pos {
                    return Err(self.fail());
                }
                if let Some(new) = r.number(path, &self.text[start..self.pos]) {
                    self.edits.push((start, self.pos, quote(&new)));
                }
                Ok(())
            }
        }
    }
}

fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}
