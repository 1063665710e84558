//! The `vault` binary: parse, run, map the outcome to an exit code.

use clap::Parser;

use atlasvault::cli::{self, exit, Cli};

/// At most this many malloc arenas per core (at least two in all). glibc gives each thread that
/// meets contention an arena of its own, up to eight per core, and memory freed in one arena
/// is kept for that arena: the pipeline's threads each held their own high-water mark. A first
/// snapshot of a million small files peaked at 100 MiB of RSS for 74 MiB of live heap, and at
/// 87 MiB with one arena per core; the benchmark's first snapshot and verify showed no cost in
/// time (fixing the mmap threshold instead saved as much memory but cost a second of system
/// time in page faults).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn cap_malloc_arenas() {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let arenas = libc::c_int::try_from(cores.max(2)).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only sets an allocator parameter; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
}

fn main() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    cap_malloc_arenas();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    let code = match cli::run(cli) {
        Ok(code) => code,
        Err(atlasvault::Error::Io { source, .. })
            if source.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            exit::OK
        }
        Err(e) => {
            let code = cli::exit_code(&e);
            eprintln!("vault: {:#}", anyhow::Error::new(e));
            code
        }
    };
    std::process::exit(code);
}
