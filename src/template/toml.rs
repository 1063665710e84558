//! TOML through `toml_edit`, which keeps comments, order and layout.

use toml_edit::{DocumentMut, Item, Table, Value};

use super::{KeyPath, ParseFail, Redactor};

pub(super) fn process(text: &str, redactor: &mut Redactor) -> Result<String, ParseFail> {
    let mut doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        e.span()
            .map(|s| ParseFail::at_offset(text, s.start))
            .unwrap_or_default()
    })?;
    let mut path = KeyPath::default();
    table(doc.as_table_mut(), &mut path, redactor);
    Ok(doc.to_string())
}

fn table(t: &mut Table, path: &mut KeyPath, r: &mut Redactor) {
    for (key, it) in t.iter_mut() {
        path.push_key(key.get());
        item(it, path, r);
        path.pop();
    }
}

fn item(it: &mut Item, path: &mut KeyPath, r: &mut Redactor) {
    match it {
        Item::None => {}
        Item::Value(v) => value(v, path, r),
        Item::Table(t) => table(t, path, r),
        Item::ArrayOfTables(a) => {
            for (i, t) in a.iter_mut().enumerate() {
                path.push_index(i);
                table(t, path, r);
                path.pop();
            }
        }
    }
}

fn value(v: &mut Value, path: &mut KeyPath, r: &mut Redactor) {
    let new = match v {
        Value::String(s) => r.string(path, s.value()),
        Value::Integer(i) => r.number(path, &i.value().to_string()),
        Value::Float(f) => r.number(path, &f.value().to_string()),
        Value::Boolean(_) | Value::Datetime(_) => None,
        Value::Array(a) => {
            for (i, v) in a.iter_mut().enumerate() {
                path.push_index(i);
                value(v, path, r);
                path.pop();
            }
            None
        }
        Value::InlineTable(t) => {
            for (key, v) in t.iter_mut() {
                path.push_key(key.get());
                value(v, path, r);
                path.pop();
            }
            None
        }
    };
    if let Some(new) = new {
        let decor = v.decor().clone();
        *v = Value::from(new);
        *v.decor_mut() = decor;
    }
}
