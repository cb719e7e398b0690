//! Lock receipts: when an append client stores a lock, the server answers with a receipt, a
//! keyed BLAKE3 hash of the lock's storage name under the server's receipt key. Deleting
//! that lock later takes the receipt, so an append client removes its own locks and no one
//! else's. The server keeps no state: any replica with the same key, before or after a
//! restart, checks the receipt alike. The key comes from a file (a Kubernetes Secret).

use std::path::Path;

/// Why the receipt key cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum ReceiptKeyError {
    /// The file cannot be read.
    #[error("cannot read the receipt key file {path}: {error}")]
    Unreadable {
        /// The file.
        path: String,
        /// What the OS said.
        error: std::io::Error,
    },
    /// Too little secret in it.
    #[error(
        "the receipt key file {0} holds fewer than 32 bytes (make one with `head -c 32 /dev/urandom | base64`)"
    )]
    TooShort(String),
}

/// The key receipts are made with.
#[derive(Clone)]
pub struct ReceiptKey([u8; 32]);

impl ReceiptKey {
    /// The key derived from a file's contents (surrounding whitespace ignored).
    pub fn from_file(path: &Path) -> Result<ReceiptKey, ReceiptKeyError> {
        let bytes = std::fs::read(path).map_err(|error| ReceiptKeyError::Unreadable {
            path: path.display().to_string(),
            error,
        })?;
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < 32 {
            return Err(ReceiptKeyError::TooShort(path.display().to_string()));
        }
        Ok(ReceiptKey(blake3::derive_key(
            "cairn-server lock receipts v1",
            trimmed,
        )))
    }

    /// The receipt of the lock stored as `storage_name`.
    pub fn receipt(&self, storage_name: &str) -> String {
        blake3::keyed_hash(&self.0, storage_name.as_bytes())
            .to_hex()
            .to_string()
    }

    /// Whether `given` is the receipt of `storage_name` (compared in constant time).
    pub fn verify(&self, storage_name: &str, given: &str) -> bool {
        match blake3::Hash::from_hex(given.trim()) {
            // blake3::Hash's equality is constant-time.
            Ok(h) => h == blake3::keyed_hash(&self.0, storage_name.as_bytes()),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_bind_name_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k");
        std::fs::write(&f, "short").unwrap();
        assert!(ReceiptKey::from_file(&f).is_err());
        std::fs::write(&f, "0123456789abcdef0123456789abcdef\n").unwrap();
        let k = ReceiptKey::from_file(&f).unwrap();
        let r = k.receipt("locks/aa");
        assert!(k.verify("locks/aa", &r));
        assert!(!k.verify("locks/ab", &r));
        assert!(!k.verify("locks/aa", "zz"));
        std::fs::write(&f, "another key, long enough to be one!").unwrap();
        let other = ReceiptKey::from_file(&f).unwrap();
        assert!(!other.verify("locks/aa", &r));
    }
}
