//! The one write path into a repository: dedup → pack → upload. Backup, `copy` and prune's
//! repack all store blobs through it, so the write order that keeps a repository valid lives
//! in one place:
//!
//! ```text
//!  Dedup::claim        one caller per blob not in the index stores it
//!  Packer              sealed blobs → packs of the configured size (data and trees apart),
//!                      each written into a backend spool and named by its hash on the way
//!  Uploader::upload    pack stored create-only, then its entries queued for an index file
//!  Uploader::flush     index file for the packs stored since the last one
//! ```
//!
//! A pack is stored before any index file names it, and every index file a snapshot needs is
//! stored before the snapshot, so a run stopped anywhere leaves packs that are either indexed
//! (and reused by the next run) or in no index (and condemned by the next prune).

pub mod dedup;
pub mod pack;
pub mod upload;

pub use dedup::Dedup;
pub use pack::{Packer, run};
pub use upload::{SpooledPack, Uploader};
