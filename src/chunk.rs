//! Content-defined chunking of a byte stream with FastCDC (2020).
//!
//! [`Chunker`] reads through a reusable buffer and hands out each chunk as a slice of it, so
//! chunking allocates nothing per chunk and memory stays at one buffer per worker whatever the
//! file size. A chunk that touches the end of the buffer before the end of the stream is carried
//! over and cut again with more data, so the cut points are exactly those of FastCDC over the
//! whole stream.

use std::io::{self, Read};

use fastcdc::v2020::{FastCDC, Normalization};

use crate::config::ChunkerParams;

/// Read buffer per chunker; at least twice the maximum chunk so a carried chunk always fits.
const READ_BUFFER_BYTES: usize = 8 * 1024 * 1024;

/// A FastCDC chunker with its own read buffer.
pub struct Chunker {
    params: ChunkerParams,
    /// Gear-table seed (0: FastCDC's published table); keyed in an encrypted vault so that chunk
    /// boundaries do not reveal content.
    seed: u64,
    buf: Vec<u8>,
}

impl Chunker {
    /// A chunker for `params`, which must have passed [`ChunkerParams::validate`].
    pub fn new(params: ChunkerParams, seed: u64) -> Self {
        let size = READ_BUFFER_BYTES.max(2 * params.max_size as usize);
        Chunker {
            params,
            seed,
            buf: vec![0u8; size],
        }
    }

    /// The parameters this chunker cuts with.
    pub fn params(&self) -> &ChunkerParams {
        &self.params
    }

    /// Cuts `reader` into chunks and calls `on_chunk` with each, in order. Returns the byte count.
    ///
    /// `on_chunk` errors stop the run and are returned as they are.
    pub fn run<R: Read, E: From<io::Error>>(
        &mut self,
        mut reader: R,
        mut on_chunk: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<u64, E> {
        let (min, avg, max) = (
            self.params.min_size,
            self.params.avg_size,
            self.params.max_size,
        );
        let mut filled = 0usize;
        let mut total = 0u64;
        let mut eof = false;
        loop {
            while !eof && filled < self.buf.len() {
                match reader.read(&mut self.buf[filled..]) {
                    Ok(0) => eof = true,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if filled == 0 {
                return Ok(total);
            }
            let data = &self.buf[..filled];
            let mut consumed = 0usize;
            let cuts =
                FastCDC::with_level_and_seed(data, min, avg, max, Normalization::Level1, self.seed);
            for c in cuts {
                let end = c.offset + c.length;
                if end == filled && !eof {
                    break; // cut only because the buffer ended: carry it over
                }
                on_chunk(&data[c.offset..end])?;
                consumed = end;
            }
            total += consumed as u64;
            if eof && consumed == filled {
                return Ok(total);
            }
            self.buf.copy_within(consumed..filled, 0);
            filled -= consumed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn small() -> ChunkerParams {
        ChunkerParams {
            algorithm: "fastcdc-2020".into(),
            min_size: 64,
            avg_size: 256,
            max_size: 1024,
        }
    }

    /// A reader that returns at most `step` bytes per call, to exercise buffer carry-over.
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(self.1).min(out.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_keyed_gear_table_moves_the_cut_points() {
        let mut x = 12345u64;
        let data: Vec<u8> = (0..200_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let cuts = |seed: u64| {
            let mut c = Chunker::new(small(), seed);
            let mut lens = Vec::new();
            c.run::<_, io::Error>(data.as_slice(), |ch| {
                lens.push(ch.len());
                Ok(())
            })
            .unwrap();
            lens
        };
        assert_eq!(cuts(0), cuts(0));
        assert_ne!(cuts(0), cuts(0x1234_5678_9abc_def0));
        assert_ne!(cuts(7), cuts(8));
    }

    proptest! {
        #[test]
        fn streaming_cuts_equal_whole_buffer_cuts(seed in any::<u64>(), gear in prop_oneof![Just(0u64), any::<u64>()], len in 0usize..40_000, step in 1usize..5000) {
            let mut x = seed | 1;
            let data: Vec<u8> = (0..len).map(|_| { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x as u8 }).collect();
            let p = small();
            let expected: Vec<usize> = FastCDC::with_level_and_seed(&data, p.min_size, p.avg_size, p.max_size, Normalization::Level1, gear).map(|c| c.length).collect();
            let mut c = Chunker { params: p.clone(), seed: gear, buf: vec![0; 2048] };
            let mut got = Vec::new();
            let mut joined = Vec::new();
            let n = c.run::<_, io::Error>(Trickle(&data, step), |ch| { got.push(ch.len()); joined.extend_from_slice(ch); Ok(()) }).unwrap();
            prop_assert_eq!(n as usize, data.len());
            prop_assert_eq!(joined, data);
            prop_assert_eq!(got, expected);
        }
    }
}
