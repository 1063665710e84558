//! The commented example `vault config example` prints.
//!
//! The text lives in `example.toml` beside this file so it reads (and highlights) as TOML. Tests
//! hold it to three promises: it parses, every key of every table appears in it live (not only in
//! a comment), and where a key has a default the example shows that default.

/// The commented example config, covering every option.
pub fn example() -> &'static str {
    include_str!("example.toml")
}
