//! Config templates: `template::render` and `template::find_secrets` on arbitrary bytes must not
//! panic, and whatever `render` produces must be clean (no secret-looking value left) and a fixed
//! point (rendering a template again changes nothing).
//!
//! The first byte picks the file name, and with it the format.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

use atlasvault::template::{find_secrets, render};

const NAMES: &[&str] = &[".env", "openclaw.json", "app.toml", "compose.yaml", "settings"];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, content)) = data.split_first() else {
        return;
    };
    let name = Path::new(NAMES[pick as usize % NAMES.len()]);
    let _ = find_secrets(name, content);
    if let Ok(t) = render(name, content) {
        let left = find_secrets(name, &t.bytes);
        assert!(left.is_empty(), "a rendered template still holds {left:?}");
        let again = render(name, &t.bytes).expect("a template renders");
        assert_eq!(again.bytes, t.bytes, "rendering a template changed it");
        assert_eq!(again.redacted, 0);
    }
});
