//! `audit.log`: `audit::parse` on arbitrary bytes must not panic, must account for every
//! non-empty line (parsed or counted bad), and records written back as lines must parse again.

#![no_main]

use libfuzzer_sys::fuzz_target;

use atlasvault::audit::{self, AuditRecord};

fuzz_target!(|data: &[u8]| {
    let (records, bad) = audit::parse(data);
    let lines = data.split(|b| *b == b'\n').filter(|l| !l.is_empty());
    assert_eq!(records.len() + bad, lines.count(), "a line was lost");

    let mut log = Vec::new();
    for r in &records {
        serde_json::to_writer(&mut log, r).expect("an audit record serializes");
        log.push(b'\n');
    }
    let (again, bad_again) = audit::parse(&log);
    assert_eq!(bad_again, 0, "a record written back does not parse");
    assert_eq!(again.len(), records.len());
    for (a, r) in again.iter().zip(&records) {
        assert_eq!(fixed_fields(a), fixed_fields(r));
        assert_eq!(a.detail.is_some(), r.detail.is_some());
    }
});

/// Every field but `detail`, which is free-form JSON whose floats serde_json does not promise to
/// round-trip bit for bit.
fn fixed_fields(r: &AuditRecord) -> [Option<&str>; 6] {
    [
        Some(&r.time),
        Some(&r.host),
        Some(&r.user),
        Some(&r.action),
        r.snapshot.as_deref(),
        Some(&r.outcome),
    ]
}
