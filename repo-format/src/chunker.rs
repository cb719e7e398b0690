//! Chunk stage: content-defined chunking with FastCDC (2020), its gear table seeded from the
//! repository's secret so that chunk boundaries (and so chunk sizes) do not fingerprint
//! content for someone without the key.
//!
//! [`ChunkReader`] reads a stream in large buffers into one reusable window and hands out
//! chunks as slices of it; it never holds more than `max + read size` bytes of a file.

use std::borrow::Cow;
use std::io::{self, Read};

use fastcdc::v2020::{Normalization, cut_gear, get_gear_with_seed, select_masks};
use serde::{Deserialize, Serialize};

/// Chunk size parameters, stored in the repository config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// Smallest chunk, bytes.
    pub min: u32,
    /// Target average chunk, bytes.
    pub avg: u32,
    /// Largest chunk, bytes.
    pub max: u32,
    /// Secret gear-table seed (from the repository config).
    pub seed: u64,
}

/// Chunker parameters that the format refuses.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid chunker sizes min={min} avg={avg} max={max}: need even sizes with 64 <= min <= avg <= max <= 16 MiB, 256 <= avg <= 4 MiB, max >= 1 KiB"
)]
pub struct InvalidChunkerParams {
    min: u32,
    avg: u32,
    max: u32,
}

impl ChunkerParams {
    /// Checks the ranges FastCDC supports.
    pub fn validate(&self) -> Result<(), InvalidChunkerParams> {
        let (min, avg, max) = (self.min as usize, self.avg as usize, self.max as usize);
        use fastcdc::v2020::*;
        let ok = (MINIMUM_MIN..=MINIMUM_MAX).contains(&min)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&avg)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&max)
            && min <= avg
            && avg <= max
            && min % 2 == 0
            && avg % 2 == 0
            && max % 2 == 0;
        if ok {
            Ok(())
        } else {
            Err(InvalidChunkerParams {
                min: self.min,
                avg: self.avg,
                max: self.max,
            })
        }
    }
}

/// Finds cut points; cheap to clone (the seeded gear tables are shared per instance).
#[derive(Clone)]
pub struct Chunker {
    min: usize,
    avg: usize,
    max: usize,
    masks: (u64, u64),
    gear: Cow<'static, [u64]>,
    gear_ls: Cow<'static, [u64]>,
}

impl Chunker {
    /// A chunker for validated `params`.
    pub fn new(params: &ChunkerParams) -> Result<Chunker, InvalidChunkerParams> {
        params.validate()?;
        let (gear, gear_ls) = get_gear_with_seed(params.seed);
        Ok(Chunker {
            min: params.min as usize,
            avg: params.avg as usize,
            max: params.max as usize,
            masks: select_masks(params.avg as usize, Normalization::Level1),
            gear,
            gear_ls,
        })
    }

    /// Largest chunk this chunker produces.
    pub fn max_size(&self) -> usize {
        self.max
    }

    /// Length of the first chunk of `buf`; `buf` must hold `max` bytes unless it is the end
    /// of the stream.
    pub fn cut(&self, buf: &[u8]) -> usize {
        if buf.len() <= self.min {
            return buf.len();
        }
        let (ms, ml) = self.masks;
        let (_, n) = cut_gear(
            buf,
            self.min,
            self.avg,
            self.max,
            ms,
            ml,
            ms << 1,
            ml << 1,
            &self.gear,
            &self.gear_ls,
        );
        n
    }

    /// Splits an in-memory buffer into chunk lengths.
    pub fn chunk_lengths(&self, mut data: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let n = self.cut(&data[..data.len().min(self.max)]);
            out.push(n);
            data = &data[n..];
        }
        out
    }
}

/// A reusable chunking window: one per worker thread, reused for every file it reads, so that
/// chunking allocates nothing per file. [`ChunkReader::chunks`] streams one source through it.
pub struct ChunkReader {
    chunker: Chunker,
    window: Vec<u8>,
    read_size: usize,
}

/// The chunks of one source; see [`Chunks::next_chunk`].
pub struct Chunks<'a, R> {
    window: &'a mut [u8],
    chunker: &'a Chunker,
    source: R,
    read_size: usize,
    start: usize,
    end: usize,
    eof: bool,
    bytes_read: u64,
}

impl ChunkReader {
    /// A window for `chunker`, reading at least `read_size` bytes per `read` call when possible.
    pub fn new(chunker: Chunker, read_size: usize) -> Self {
        ChunkReader {
            chunker,
            window: Vec::new(),
            read_size: read_size.max(4096),
        }
    }

    /// Starts chunking `source`.
    pub fn chunks<R: Read>(&mut self, source: R) -> Chunks<'_, R> {
        let cap = self.chunker.max + self.read_size;
        if self.window.len() < cap {
            // Zeroed by the allocator: pages are touched only when data is read into them, so
            // a thread that only ever reads small files keeps a small window.
            self.window = vec![0; cap];
        }
        Chunks {
            window: &mut self.window,
            chunker: &self.chunker,
            source,
            read_size: self.read_size,
            start: 0,
            end: 0,
            eof: false,
            bytes_read: 0,
        }
    }
}

impl<R: Read> Chunks<'_, R> {
    /// Fills the window after the bytes not yet chunked (until it is full or the stream
    /// ends), moving those to the window's front first when less than a read's worth of room
    /// is left behind them. Filling it whole, however short the source's reads (a pipe gives
    /// 64 KiB at a time), keeps the cut search from starting over for every small read.
    fn read_more(&mut self) -> io::Result<()> {
        if self.window.len() - self.end < self.read_size {
            self.window.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while !self.eof && self.end < self.window.len() {
            let n = match self.source.read(&mut self.window[self.end..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => r?,
            };
            if n == 0 {
                self.eof = true;
            }
            self.end += n;
            self.bytes_read += n as u64;
        }
        Ok(())
    }

    /// The next chunk, borrowed from the window, or `None` at the end of the stream.
    ///
    /// A cut found before the end of the bytes at hand is final (FastCDC decides a boundary
    /// from the bytes before it), so more is read only when none is found there. The window
    /// therefore needs room for one largest chunk and one read, and what is moved to its
    /// front is only the start of one chunk.
    pub fn next_chunk(&mut self) -> io::Result<Option<&[u8]>> {
        loop {
            let avail = &self.window[self.start..self.end];
            let max = self.chunker.max;
            if !avail.is_empty() {
                let n = self.chunker.cut(&avail[..avail.len().min(max)]);
                if n < avail.len() || avail.len() >= max || self.eof {
                    self.start += n;
                    return Ok(Some(&self.window[self.start - n..self.start]));
                }
            } else if self.eof {
                return Ok(None);
            }
            self.read_more()?;
        }
    }

    /// Bytes read from the source so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(seed: u64) -> ChunkerParams {
        ChunkerParams {
            min: 2048,
            avg: 8192,
            max: 32768,
            seed,
        }
    }

    fn pseudo_random(n: usize, mut x: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn stream_matches_in_memory_and_reassembles() {
        let data = pseudo_random(500_000, 7);
        let c = Chunker::new(&params(42)).unwrap();
        let lens = c.chunk_lengths(&data);
        // a tiny read size forces many refills and window moves
        let mut reader = ChunkReader::new(c.clone(), 1000);
        let mut got = Vec::new();
        let mut joined = Vec::new();
        let mut r = reader.chunks(&data[..]);
        while let Some(ch) = r.next_chunk().unwrap() {
            assert!(ch.len() <= 32768);
            got.push(ch.len());
            joined.extend_from_slice(ch);
        }
        assert_eq!(r.bytes_read(), data.len() as u64);
        assert_eq!(got, lens);
        assert_eq!(joined, data);
        // the window is reused for the next source
        let mut r2 = reader.chunks(&b"tiny"[..]);
        assert_eq!(r2.next_chunk().unwrap(), Some(&b"tiny"[..]));
        assert_eq!(r2.next_chunk().unwrap(), None);
        assert!(lens.len() > 20);
    }

    /// A source that returns at most `step` bytes per read, as pipes and sockets do.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.step).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn short_reads_and_long_runs_cut_where_the_whole_buffer_does() {
        // Random stretches (cuts near the average) between zero runs (no cut: max-size chunks).
        let mut data = Vec::new();
        for i in 0..6 {
            data.extend(pseudo_random(60_000 + i * 7_001, i as u64 + 3));
            data.extend(std::iter::repeat_n(0u8, 40_000 + i * 9_999));
        }
        let c = Chunker::new(&params(5)).unwrap();
        let lens = c.chunk_lengths(&data);
        assert!(
            lens.iter().filter(|&&l| l == 32768).count() >= 4,
            "some chunks hit max"
        );
        for step in [1, 777, 4096, 100_000] {
            let mut reader = ChunkReader::new(c.clone(), 4096);
            let mut r = reader.chunks(Trickle { data: &data, step });
            let mut got = Vec::new();
            while let Some(ch) = r.next_chunk().unwrap() {
                got.push(ch.len());
            }
            assert_eq!(got, lens, "reads of {step} bytes");
            assert_eq!(r.bytes_read(), data.len() as u64);
        }
    }

    #[test]
    fn seed_changes_boundaries_and_edits_stay_local() {
        let data = pseudo_random(400_000, 9);
        let a = Chunker::new(&params(1)).unwrap().chunk_lengths(&data);
        let b = Chunker::new(&params(2)).unwrap().chunk_lengths(&data);
        assert_ne!(a, b, "boundaries depend on the secret seed");
        let mut edited = data.clone();
        edited.splice(200_000..200_000, b"inserted".iter().copied());
        let e = Chunker::new(&params(1)).unwrap().chunk_lengths(&edited);
        let common_tail = a
            .iter()
            .rev()
            .zip(e.iter().rev())
            .take_while(|(x, y)| x == y)
            .count();
        assert!(
            common_tail > a.len() / 4,
            "chunks after the edit are shared again"
        );
    }

    #[test]
    fn rejects_bad_params() {
        assert!(
            ChunkerParams {
                min: 3,
                avg: 8192,
                max: 32768,
                seed: 0
            }
            .validate()
            .is_err()
        );
        assert!(
            ChunkerParams {
                min: 4096,
                avg: 2048,
                max: 32768,
                seed: 0
            }
            .validate()
            .is_err()
        );
    }
}
