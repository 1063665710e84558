//! YAML parsed and re-emitted through `yaml-rust2`: keys, order and values survive, comments
//! and anchors do not.

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::ScanError;

use super::{KeyPath, ParseFail, Redactor, Yaml, YamlEmitter, YamlLoader};

/// Deepest nesting rendered; deeper input is refused as unparseable.
const MAX_DEPTH: usize = 128;

/// The line where `text` nests deeper than `max` (sequences and mappings), if it does.
///
/// yaml-rust2's loader recurses once per level, so an untrusted `- - - - …` line would overflow
/// the stack; this event pass is iterative and runs first.
pub(crate) fn too_deep(text: &str, max: usize) -> Result<Option<usize>, ScanError> {
    let mut parser = Parser::new_from_str(text);
    let mut depth = 0usize;
    loop {
        match parser.next_token()? {
            (Event::StreamEnd, _) => return Ok(None),
            (Event::SequenceStart(..) | Event::MappingStart(..), mark) => {
                depth += 1;
                if depth > max {
                    return Ok(Some(mark.line()));
                }
            }
            (Event::SequenceEnd | Event::MappingEnd, _) => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
}

pub(super) fn process(text: &str, redactor: &mut Redactor) -> Result<String, ParseFail> {
    let fail = |e: ScanError| ParseFail {
        line: Some(e.marker().line()),
        column: Some(e.marker().col() + 1),
    };
    if let Some(line) = too_deep(text, MAX_DEPTH).map_err(fail)? {
        return Err(ParseFail::at_line(line));
    }
    let mut docs = YamlLoader::load_from_str(text).map_err(fail)?;
    let mut out = String::new();
    // Multi-document streams get the document number in their key paths.
    let multi = docs.len() > 1;
    for (i, doc) in docs.iter_mut().enumerate() {
        let mut path = KeyPath::default();
        if multi {
            path.push_index(i);
        }
        node(doc, &mut path, redactor);
        YamlEmitter::new(&mut out)
            .dump(doc)
            .map_err(|_| ParseFail::default())?;
        out.push('\n');
    }
    Ok(out)
}

fn key_name(k: &Yaml) -> String {
    match k {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        _ => "?".to_owned(),
    }
}

fn node(n: &mut Yaml, path: &mut KeyPath, r: &mut Redactor) {
    let new = match n {
        Yaml::String(s) => r.string(path, s),
        Yaml::Integer(i) => r.number(path, &i.to_string()),
        Yaml::Real(s) => r.number(path, s),
        Yaml::Hash(h) => {
            for (k, v) in h.iter_mut() {
                path.push_key(&key_name(k));
                node(v, path, r);
                path.pop();
            }
            None
        }
        Yaml::Array(a) => {
            for (i, v) in a.iter_mut().enumerate() {
                path.push_index(i);
                node(v, path, r);
                path.pop();
            }
            None
        }
        Yaml::Boolean(_) | Yaml::Alias(_) | Yaml::Null | Yaml::BadValue => None,
    };
    if let Some(new) = new {
        *n = Yaml::String(new);
    }
}
