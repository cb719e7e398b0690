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

impl Config {
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
