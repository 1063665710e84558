//! Chunking statistics for tuning (issue 9): how a pair of files dedups under given FastCDC
//! parameters and gear seeds.
//!
//! `[CHUNK_ALG=lines-2026] cargo run --release --example chunkstat -- OLD NEW MIN AVG MAX [SEED...]`
//! prints, per seed: chunks of NEW, how many were cut at the maximum size, and the bytes of NEW
//! in chunks that OLD does not have (what a snapshot of NEW after OLD stores before compression).
use std::collections::HashSet;
use std::fs::File;

use atlasvault::chunk::Chunker;
use atlasvault::config::ChunkerParams;

fn chunks(path: &str, params: &ChunkerParams, seed: u64) -> Vec<(blake3::Hash, usize, usize)> {
    let mut out = Vec::new();
    let mut c = Chunker::new(params.clone(), seed);
    c.run::<_, std::io::Error>(File::open(path).expect("open"), |d| {
        let z = zstd::bulk::compress(d, 3).expect("zstd").len();
        out.push((blake3::hash(d), d.len(), z));
        Ok(())
    })
    .expect("chunk");
    out
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| a[i].parse::<u32>().expect("number");
    let params = ChunkerParams {
        algorithm: std::env::var("CHUNK_ALG").unwrap_or_else(|_| "fastcdc-2020".into()),
        min_size: num(2),
        avg_size: num(3),
        max_size: num(4),
        whole_max_size: 0,
    };
    let seeds: Vec<u64> = if a.len() > 5 {
        a[5..].iter().map(|s| s.parse().expect("seed")).collect()
    } else {
        vec![0, 1, 2, 3]
    };
    for seed in seeds {
        let old: HashSet<_> = chunks(&a[0], &params, seed)
            .into_iter()
            .map(|c| c.0)
            .collect();
        let new = chunks(&a[1], &params, seed);
        let at_max = new
            .iter()
            .filter(|c| c.1 == params.max_size as usize)
            .count();
        let fresh: usize = new
            .iter()
            .filter(|c| !old.contains(&c.0))
            .map(|c| c.1)
            .sum();
        let fresh_n = new.iter().filter(|c| !old.contains(&c.0)).count();
        let fresh_z: usize = new
            .iter()
            .filter(|c| !old.contains(&c.0))
            .map(|c| c.2)
            .sum();
        let all_z: usize = new.iter().map(|c| c.2).sum();
        println!(
            "seed {seed}: {} chunks ({:.3} MiB zstd-3), {at_max} at max, new {fresh_n} chunks {:.2} MiB raw, {:.3} MiB zstd-3, ids {:.3} MiB",
            new.len(),
            all_z as f64 / 1048576.0,
            fresh as f64 / 1048576.0,
            fresh_z as f64 / 1048576.0,
            (new.len() * 32) as f64 / 1048576.0,
        );
    }
}
