//! Compression stage: zstd, kept only when it shrinks the data. Each thread keeps one zstd
//! compression context and one decompression context and reuses them: creating a context per
//! blob cost about 6% of a backup's CPU and 9% of a restore's (tables allocated and cleared
//! every time).
//!
//! Blocks are capped one byte below zstd's 128 KiB block size. zstd 1.5.7 tries to split every
//! full 128 KiB block at a better place first ("pre-splitting"), and it skips that for a
//! smaller cap. Without it, level 3 compresses the standard dataset's first 400 MB in 1 MiB
//! pieces 8% faster (697 against 645 MB/s, medians of 9 interleaved runs) into 0.13% more
//! bytes; `docs/benchmarks.md` has the measurement. Frames stay ordinary zstd frames.

use std::cell::RefCell;

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// How a blob or object payload is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Compression {
    /// Stored as is.
    None = 0,
    /// zstd frame.
    Zstd = 1,
}

impl Compression {
    /// Parses the byte stored in pack headers and index files.
    pub fn from_byte(b: u8) -> Option<Compression> {
        match b {
            0 => Some(Compression::None),
            1 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// The block cap that turns zstd's block pre-splitting off (see the module comment).
const MAX_BLOCK: u32 = (128 << 10) - 1;

fn compressor(level: i32) -> Option<zstd::bulk::Compressor<'static>> {
    let mut c = zstd::bulk::Compressor::new(level).ok()?;
    c.set_parameter(zstd::zstd_safe::CParameter::MaxBlockSize(MAX_BLOCK))
        .ok()?;
    Some(c)
}

/// Compresses `data` at `level` (0 disables compression). Returns `None` when compression is
/// off or the result would not be smaller, so the caller stores the original bytes.
pub fn compress(data: &[u8], level: i32) -> Option<Vec<u8>> {
    if level == 0 || data.len() < 64 {
        return None;
    }
    let out = COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(l, _)| *l != level) {
            *c = Some((level, compressor(level)?));
        }
        c.as_mut()?.1.compress(data).ok()
    })?;
    (out.len() < data.len()).then_some(out)
}

/// Decompresses a zstd frame whose plaintext is exactly `raw_len` bytes. For blobs, whose
/// `raw_len` the caller has already held to a blob cap ([`crate::blob::raw_cap`]): the output
/// is allocated once, at its final size, which the restore hot path relies on.
pub fn decompress(data: &[u8], raw_len: usize) -> Result<Vec<u8>, DecompressError> {
    let out = DECOMPRESSOR
        .with(|d| {
            let mut d = d.borrow_mut();
            if d.is_none() {
                *d = Some(zstd::bulk::Decompressor::new().ok()?);
            }
            d.as_mut()?.decompress(data, raw_len).ok()
        })
        .ok_or(DecompressError)?;
    if out.len() != raw_len {
        return Err(DecompressError);
    }
    Ok(out)
}

/// Decompresses a zstd frame as a stream, for objects whose claimed length nothing else
/// bounds: memory grows only as real output arrives (never to what a header claims), and
/// decoding stops as soon as the output would pass `raw_len`. The plaintext must be exactly
/// `raw_len` bytes.
pub fn decompress_streaming(data: &[u8], raw_len: usize) -> Result<Vec<u8>, DecompressError> {
    use std::io::Read;
    let decoder = zstd::stream::read::Decoder::with_buffer(data).map_err(|_| DecompressError)?;
    // Start small; a frame that really holds `raw_len` bytes grows the buffer by doubling.
    let mut out = Vec::with_capacity(raw_len.min(1 << 20));
    decoder
        .take(raw_len as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| DecompressError)?;
    if out.len() != raw_len {
        return Err(DecompressError);
    }
    Ok(out)
}

/// A compressed payload did not decompress to its recorded length.
#[derive(Debug, thiserror::Error)]
#[error("decompression failed")]
pub struct DecompressError;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrinks_text_skips_random() {
        let text = b"the quick brown fox ".repeat(100);
        let c = compress(&text, 3).expect("text shrinks");
        assert_eq!(decompress(&c, text.len()).unwrap(), text);
        let random: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let _ = compress(&random, 3); // may or may not shrink; must not panic
        assert!(compress(&text, 0).is_none(), "level 0 disables");
        assert!(decompress(&c, text.len() + 1).is_err());
        assert_eq!(decompress_streaming(&c, text.len()).unwrap(), text);
        assert!(decompress_streaming(&c, text.len() + 1).is_err());
        assert!(decompress_streaming(&c, text.len() - 1).is_err());
    }

    #[test]
    fn a_frame_that_inflates_past_its_claim_stops_at_the_claim() {
        // 64 MiB of zeros compress to a few KiB: a "bomb" claiming 1 KiB must not be inflated.
        let zeros = vec![0u8; 64 << 20];
        let bomb = zstd::bulk::compress(&zeros, 3).unwrap();
        assert!(bomb.len() < 64 << 10);
        assert!(decompress_streaming(&bomb, 1024).is_err());
        assert!(decompress(&bomb, 1024).is_err());
    }

    #[test]
    fn capped_blocks_still_make_ordinary_frames() {
        // Several full blocks, text and noise mixed, as a large chunk is.
        let mut data = Vec::new();
        let mut x = 1u32;
        while data.len() < 1 << 20 {
            data.extend_from_slice(b"fn main() { println!(\"hello\"); }\n");
            for _ in 0..200 {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                data.push((x >> 16) as u8);
            }
        }
        let c = compress(&data, 3).expect("shrinks");
        assert_eq!(decompress(&c, data.len()).unwrap(), data);
        // Any zstd decoder reads it, not only the thread-local one.
        assert_eq!(zstd::bulk::decompress(&c, data.len()).unwrap(), data);
    }
}
