//! The repository config (`config`): format version, repository id, chunker parameters with
//! their secret seed, compression level and target pack size. Sealed with the master key,
//! written once by `init`, never changed.

use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerParams;
use crate::id::Id;

/// The format version this code writes. Readers accept every version up to this one.
pub const FORMAT_VERSION: u32 = 1;

/// Default chunk sizes (see docs/design.md, "Chunker parameters", for the measurement).
pub const DEFAULT_CHUNK_MIN: u32 = 128 * 1024;
/// Default average chunk size.
pub const DEFAULT_CHUNK_AVG: u32 = 512 * 1024;
/// Default largest chunk.
pub const DEFAULT_CHUNK_MAX: u32 = 4 * 1024 * 1024;
/// Default target pack size.
pub const DEFAULT_PACK_SIZE: u32 = 16 * 1024 * 1024;
/// Default zstd level.
pub const DEFAULT_COMPRESSION: i32 = 3;

/// The repository config.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Config {
    /// Format version.
    pub version: u32,
    /// Random repository id.
    pub id: Id,
    /// Chunker sizes and secret seed.
    pub chunker: ChunkerParams,
    /// zstd level for new blobs; 0 stores uncompressed.
    pub compression: i32,
    /// Target pack size in bytes.
    pub pack_size: u32,
}

/// Accepted pack sizes (a pack is built in memory, so the ceiling bounds a writer's memory).
pub const PACK_SIZE_RANGE: std::ops::RangeInclusive<u32> = (64 << 10)..=(512 << 20);

/// Accepted compression levels: 0 (off) and zstd's levels.
pub const COMPRESSION_RANGE: std::ops::RangeInclusive<i32> = 0..=22;

impl Config {
    /// Checks every field against the ranges the format accepts; a config outside them is
    /// refused when the repository is opened, naming the field.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=FORMAT_VERSION).contains(&self.version) {
            return Err(format!(
                "version {} is not one this cairn reads (1 to {FORMAT_VERSION})",
                self.version
            ));
        }
        self.chunker.validate().map_err(|e| e.to_string())?;
        if !PACK_SIZE_RANGE.contains(&self.pack_size) {
            return Err(format!(
                "pack_size {} is out of range ({} to {} bytes)",
                self.pack_size,
                PACK_SIZE_RANGE.start(),
                PACK_SIZE_RANGE.end()
            ));
        }
        if !COMPRESSION_RANGE.contains(&self.compression) {
            return Err(format!(
                "compression {} is out of range ({} to {})",
                self.compression,
                COMPRESSION_RANGE.start(),
                COMPRESSION_RANGE.end()
            ));
        }
        Ok(())
    }

    /// A config with fresh random id and seed and the given sizes.
    pub fn new(chunk: (u32, u32, u32), compression: i32, pack_size: u32) -> Config {
        Config {
            version: FORMAT_VERSION,
            id: Id(crate::crypto::random_array()),
            chunker: ChunkerParams {
                min: chunk.0,
                avg: chunk.1,
                max: chunk.2,
                seed: crate::crypto::random_u64(),
            },
            compression,
            pack_size,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::new(
            (DEFAULT_CHUNK_MIN, DEFAULT_CHUNK_AVG, DEFAULT_CHUNK_MAX),
            DEFAULT_COMPRESSION,
            DEFAULT_PACK_SIZE,
        )
    }
}
