//! A file that changes while it is read is stored as read, flagged in the manifest, and read again
//! by the next snapshot; the snapshot itself still completes.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::common::*;

/// How often to race a writer against the snapshot before giving up on seeing the change.
const ATTEMPTS: usize = 5;
/// Cap on what the writer appends per attempt.
const APPEND_LIMIT: usize = 256 * MIB;

#[test]
fn file_growing_during_read_is_a_warning_and_is_read_again_next_time() {
    let f = Fixture::with_vault();
    let data = f.path("data");
    std::fs::create_dir_all(&data).unwrap();
    let log = data.join("growing.log");
    write_random_file(&log, 9, 48 * MIB);
    std::fs::write(data.join("steady.txt"), b"steady").unwrap();

    let mut flagged = None;
    for _ in 0..ATTEMPTS {
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (stop, log) = (stop.clone(), log.clone());
            std::thread::spawn(move || {
                let mut out = OpenOptions::new().append(true).open(&log).unwrap();
                let line = b"a log line that keeps coming while the snapshot reads the file\n";
                let mut written = 0;
                while !stop.load(Ordering::Relaxed) && written < APPEND_LIMIT {
                    out.write_all(line).unwrap();
                    written += line.len();
                }
            })
        };
        let s = f.snapshot(&data);
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        assert_eq!(
            s["partial"], false,
            "a changing file is not an unreadable one: {s:#}"
        );
        let warned = s["warnings"].as_array().unwrap().iter().any(|w| {
            w.as_str().unwrap().contains("growing.log") && w.as_str().unwrap().contains("changed")
        });
        if warned {
            flagged = Some(s);
            break;
        }
    }
    let flagged =
        flagged.expect("a file appended to during the whole snapshot was never flagged as changed");
    assert!(num(&flagged, "files") == 2);

    // Nothing touches the file now; the next snapshot must read it again rather than trust the
    // entry of a file that was caught changing.
    let next = f.snapshot(&data);
    assert!(
        num(&next, "bytes_read") >= 48 * MIB as u64,
        "the changed file was not read again: {next:#}"
    );
    assert!(next["warnings"].as_array().unwrap().is_empty(), "{next:#}");
    // And then it is stable: a third snapshot reads nothing.
    let third = f.snapshot(&data);
    assert_eq!(num(&third, "bytes_read"), 0, "{third:#}");
    f.restore("latest", &f.path("out"));
    assert_eq!(file_hash(&f.path("out/data/growing.log")), file_hash(&log));
}
