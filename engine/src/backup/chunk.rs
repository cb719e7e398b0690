//! Chunk stage, run by each file worker: streams one open file through the worker's reusable
//! chunk window, hashes each chunk (keyed BLAKE3) into its blob id, and hands every chunk to
//! the seal stage, which stores it unless it is a duplicate.

use std::io::{self, Read};

use cairn_repo_format::Id;
use cairn_repo_format::chunker::ChunkReader;
use cairn_repo_format::crypto::MasterKey;

/// What chunking one file produced.
pub struct Chunked {
    /// Blob ids in file order.
    pub content: Vec<Id>,
    /// Bytes read.
    pub size: u64,
}

/// Chunks `file` (a file, or any stream such as stdin), calling `store(id, chunk)` for each chunk in order.
pub fn chunk_file(
    reader: &mut ChunkReader,
    key: &MasterKey,
    file: impl Read,
    mut store: impl FnMut(Id, &[u8]) -> io::Result<()>,
) -> io::Result<Chunked> {
    let mut chunks = reader.chunks(file);
    let mut content = Vec::new();
    while let Some(chunk) = chunks.next_chunk()? {
        let id = key.blob_id(chunk);
        store(id, chunk)?;
        content.push(id);
    }
    Ok(Chunked {
        content,
        size: chunks.bytes_read(),
    })
}
