//! `check`: verifies a repository without trusting it. The loop:
//!
//! ```text
//!  keys ─ locks ─ index files + condemned lists (each read alone; a bad one is reported, the rest go on)
//!    ─ packs: listed vs indexed (missing = error, unindexed = warning)
//!    ─ pack headers vs index (header-only ranged reads, N threads)
//!        └ with --read-data: the whole pack instead (subset: n/t or p%), name = hash of
//!          bytes, every blob decrypted, decompressed and re-hashed
//!    ─ snapshots: each loads; every tree and data blob they refer to is indexed
//! ```
//!
//! Every problem names the object (and the blob, path or snapshot involved). Nothing is
//! written.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use cairn_repo_format::blob::open_blob;
use cairn_repo_format::id::StoredHasher;
use cairn_repo_format::pack::PackEntry;
use cairn_repo_format::{Backend, BackendError};
use cairn_repo_format::{BlobType, FileKind, Id, Indexed, Opened, RepoError, Repository};
use crossbeam_channel::bounded;

use crate::Context;
use crate::events::{Event, Severity};
use crate::inventory;
use crate::reach::Reach;

/// Which packs `--read-data` downloads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Subset {
    /// Every pack.
    All,
    /// Bucket `n` of `of` (1-based): packs whose id falls in it. Running 1/5 … 5/5 on
    /// successive days covers the repository.
    Bucket {
        /// Which bucket.
        n: u32,
        /// How many buckets.
        of: u32,
    },
    /// A random fraction (0 < f ≤ 1).
    Fraction(f64),
}

/// A `--read-data-subset` value that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid subset {0:?}: use n/t (like 1/5, with 1 ≤ n ≤ t) or a percentage (like 10%)")]
pub struct SubsetError(String);

impl FromStr for Subset {
    type Err = SubsetError;
    fn from_str(s: &str) -> Result<Subset, SubsetError> {
        let bad = || SubsetError(s.to_string());
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(bad());
            }
            return Ok(Subset::Fraction(p / 100.0));
        }
        let (n, of) = s.split_once('/').ok_or_else(bad)?;
        let (n, of): (u32, u32) = (
            n.trim().parse().map_err(|_| bad())?,
            of.trim().parse().map_err(|_| bad())?,
        );
        if n == 0 || of == 0 || n > of {
            return Err(bad());
        }
        Ok(Subset::Bucket { n, of })
    }
}

impl Subset {
    fn includes(&self, pack: &Id) -> bool {
        match *self {
            Subset::All => true,
            Subset::Bucket { n, of } => {
                let v = u32::from_be_bytes([pack.0[0], pack.0[1], pack.0[2], pack.0[3]]);
                v % of == n - 1
            }
            Subset::Fraction(f) => {
                (cairn_repo_format::crypto::random_u64() as f64 / u64::MAX as f64) < f
            }
        }
    }
}

/// What to check.
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// Download and verify pack contents (all or a subset).
    pub read_data: Option<Subset>,
    /// Packs read at once (0: the backend's default, [`cairn_repo_format::Backend::parallelism`]).
    pub threads: usize,
}

/// Totals.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CheckSummary {
    /// Errors found.
    pub errors: u64,
    /// Warnings found.
    pub warnings: u64,
    /// Snapshots checked.
    pub snapshots: u64,
    /// Packs in `data/`.
    pub packs: u64,
    /// Packs downloaded whole and verified.
    pub packs_read: u64,
    /// Blobs decrypted and re-hashed.
    pub blobs_read: u64,
    /// Bytes downloaded for `--read-data`.
    pub bytes_read: u64,
}

/// Why `check` stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Storage could not be listed or reached at all.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// The host cancelled the check.
    #[error("check cancelled")]
    Cancelled,
}

/// Counts findings by severity and passes them on.
struct Reporter<'a> {
    summary: CheckSummary,
    cx: &'a Context,
}

impl Reporter<'_> {
    fn add(&mut self, e: Event) {
        match e.severity() {
            Severity::Error => self.summary.errors += 1,
            Severity::Warning => self.summary.warnings += 1,
            Severity::Info => {}
        }
        self.cx.emit(e);
    }
}

/// Checks the repository; each finding goes out as an event as it is found (errors make the
/// check fail, warnings do not). Only failure to list or reach the storage at all, or a
/// cancel, is an `Err`.
pub fn run(
    repo: Repository<Opened>,
    opts: &CheckOptions,
    cx: &Context,
) -> Result<CheckSummary, CheckError> {
    let mut r = Reporter {
        summary: CheckSummary::default(),
        cx,
    };
    for (id, k) in repo.keys()? {
        if let Err(e) = k {
            r.add(Event::ObjectDamaged {
                object: FileKind::Key.path(&id),
                problem: e.to_string(),
            });
        }
    }
    for listed in repo.locks()? {
        if let Err(e) = listed.lock {
            r.add(Event::from_repo_error(&e));
        }
    }
    let (repo, inventory) = inventory::load(repo, &mut |e| r.add(Event::from_repo_error(&e)))?;
    let mut seconds: HashMap<Id, Vec<PackEntry>> = HashMap::new();
    for (pack, e) in inventory.duplicates {
        seconds.entry(pack).or_default().push(e);
    }
    let listed = inventory::list_packs(&repo)?;
    r.summary.packs = listed.len() as u64;

    // How many entries each pack has in the index (main or condemned: a condemned pack that
    // a running backup indexed again is in both, with the same entries).
    let mut expected: HashMap<Id, u32> = HashMap::new();
    for index in [repo.index(), repo.pending()] {
        for (n, (count, _)) in inventory::pack_usage(index).into_iter().enumerate() {
            let e = expected.entry(index.packs()[n]).or_default();
            *e = (*e).max(count);
        }
    }
    // Packs that only second locations name are checked too (a missing one is reported).
    let mut only_seconds: Vec<&Id> = seconds
        .keys()
        .filter(|p| !expected.contains_key(*p))
        .collect();
    only_seconds.sort();
    for pack in only_seconds {
        if listed.contains_key(pack) {
            expected.insert(*pack, 0);
        } else {
            r.add(Event::ObjectDamaged {
                object: FileKind::Pack.path(pack),
                problem: format!(
                    "index files locate {} blob copies here, but the pack does not exist",
                    seconds[pack].len()
                ),
            });
        }
    }
    // A pack missing from `data/` is lost data when an index file names it. A pack that only
    // condemned lists name was deleted by a sweep that did not get to delete its list (a
    // killed prune): that is lost data only if a snapshot needs it, which the snapshot walk
    // below tells.
    let main: HashSet<&Id> = repo.index().packs().iter().collect();
    let mut missing: Vec<(&Id, &u32)> = expected
        .iter()
        .filter(|(p, _)| !listed.contains_key(*p) && main.contains(p))
        .collect();
    missing.sort();
    for (pack, n) in missing {
        r.add(Event::PackMissing {
            pack: *pack,
            blobs: *n,
        });
    }
    let swept: HashSet<Id> = expected
        .keys()
        .filter(|p| !listed.contains_key(*p) && !main.contains(p))
        .copied()
        .collect();
    let mut unindexed: Vec<&Id> = listed
        .keys()
        .filter(|p| !expected.contains_key(*p))
        .collect();
    unindexed.sort();
    for pack in unindexed {
        r.add(Event::PackUnindexed { pack: *pack });
    }

    let short = check_packs(&repo, opts, &expected, &seconds, &listed, &mut r);
    name_entries_not_in_headers(&repo, short, &mut r);
    cx.cancel.check().map_err(|_| CheckError::Cancelled)?;
    check_snapshots(&repo, &swept, &mut r)?;
    cx.cancel.check().map_err(|_| CheckError::Cancelled)?;
    Ok(r.summary)
}

/// What a pack worker found.
struct PackResult {
    findings: Vec<Event>,
    read: Option<(u64, u64)>,
    /// When the index locates more blobs in this pack than its header holds: what the header
    /// holds, so that a pass over the index can name the others.
    short: Option<(Id, HashSet<(BlobType, Id)>)>,
}

fn check_packs(
    repo: &Repository<Indexed>,
    opts: &CheckOptions,
    expected: &HashMap<Id, u32>,
    seconds: &HashMap<Id, Vec<PackEntry>>,
    listed: &HashMap<Id, u64>,
    r: &mut Reporter<'_>,
) -> HashMap<Id, HashSet<(BlobType, Id)>> {
    let mut short = HashMap::new();
    let mut packs: Vec<Id> = expected
        .keys()
        .filter(|p| listed.contains_key(*p))
        .copied()
        .collect();
    packs.sort();
    let threads = match opts.threads {
        0 => repo.backend().parallelism().reads.max(1),
        n => n,
    };
    let (job_tx, job_rx) = bounded::<(Id, bool)>(threads * 2);
    let (res_tx, res_rx) = bounded::<PackResult>(threads * 2);
    let r_cancel = &r.cx.cancel;
    std::thread::scope(|s| {
        for _ in 0..threads {
            let (jobs, results) = (job_rx.clone(), res_tx.clone());
            s.spawn(move || {
                for (pack, whole) in jobs {
                    if r_cancel.is_cancelled() {
                        return;
                    }
                    let n = expected.get(&pack).copied().unwrap_or(0);
                    let size = listed.get(&pack).copied().unwrap_or(0);
                    let second = seconds.get(&pack).map_or(&[][..], Vec::as_slice);
                    if results
                        .send(check_pack(repo, &pack, size, n, second, whole))
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
        drop((job_rx, res_tx));
        let feeder = s.spawn(move || {
            for p in packs {
                if r_cancel.is_cancelled() {
                    return;
                }
                let whole = opts.read_data.is_some_and(|sub| sub.includes(&p));
                if job_tx.send((p, whole)).is_err() {
                    return;
                }
            }
        });
        for res in res_rx {
            for e in res.findings {
                r.add(e);
            }
            if let Some((bytes, blobs)) = res.read {
                r.summary.packs_read += 1;
                r.summary.bytes_read += bytes;
                r.summary.blobs_read += blobs;
            }
            if let Some((pack, held)) = res.short {
                short.insert(pack, held);
            }
        }
        let _ = feeder.join();
    });
    short
}

/// Names each index entry that locates a blob in a pack whose header does not hold it (one
/// pass over the index, only when some pack came up short).
fn name_entries_not_in_headers(
    repo: &Repository<Indexed>,
    short: HashMap<Id, HashSet<(BlobType, Id)>>,
    r: &mut Reporter<'_>,
) {
    if short.is_empty() {
        return;
    }
    for index in [repo.index(), repo.pending()] {
        for pos in 0..index.len() {
            let (n, e) = index.entry_at(pos);
            let pack = index.packs()[n as usize];
            if let Some(held) = short.get(&pack)
                && !held.contains(&(e.ty, e.id))
            {
                r.add(Event::ObjectDamaged {
                    object: FileKind::Pack.path(&pack),
                    problem: format!(
                        "{} blob {}: the index locates it in this pack, whose header does not hold it",
                        e.ty.name(),
                        e.id
                    ),
                });
            }
        }
    }
}

/// Checks one pack of `size` bytes: its header against the index, and with `whole` every
/// byte of it against its name and every blob in it.
fn check_pack(
    repo: &Repository<Indexed>,
    pack: &Id,
    size: u64,
    expected: u32,
    second: &[PackEntry],
    whole: bool,
) -> PackResult {
    let path = FileKind::Pack.path(pack);
    let mut out = PackResult {
        findings: Vec::new(),
        read: None,
        short: None,
    };
    let mut error = |m: String| {
        out.findings.push(Event::ObjectDamaged {
            object: path.clone(),
            problem: m,
        })
    };
    let header = match repo.read_pack_header_of(pack, size) {
        Ok(h) => h,
        Err(e) => {
            error(match e {
                RepoError::Corrupt { reason, .. } => reason,
                e => e.to_string(),
            });
            Vec::new()
        }
    };
    let mut matched = 0u32;
    for e in &header {
        let loc = repo
            .index()
            .lookup(e.ty, &e.id)
            .filter(|l| l.pack == *pack)
            .or_else(|| {
                repo.pending()
                    .lookup(e.ty, &e.id)
                    .filter(|l| l.pack == *pack)
            });
        if let Some(loc) = loc {
            if loc.entry != *e {
                error(format!(
                    "{} blob {}: the index says {:?}, the pack header says {:?}",
                    e.ty.name(),
                    e.id,
                    loc.entry,
                    e
                ));
            }
            matched += 1;
        }
    }
    // Second locations that index files give for blobs located elsewhere must be real too: a
    // forged one would send a reader to the wrong bytes once the first is gone.
    for d in second {
        if !header.is_empty() && !header.contains(d) {
            error(format!(
                "{} blob {}: an index file locates a copy here ({:?}) that the pack header does not hold",
                d.ty.name(),
                d.id,
                d
            ));
        }
    }
    if !header.is_empty() && matched < expected {
        out.short = Some((*pack, header.iter().map(|e| (e.ty, e.id)).collect()));
    }
    if whole {
        let mut blobs = 0;
        let mut damaged = Vec::new();
        let read = read_in_pieces(
            repo.backend().as_ref(),
            &path,
            size,
            &header,
            |e, sealed| {
                blobs += 1;
                let opened =
                    open_blob(repo.key(), e.ty, &e.id, e.compression, e.raw_length, sealed);
                if let Err(err) = opened {
                    damaged.push(Event::BlobDamaged {
                        pack: *pack,
                        blob_type: e.ty.name(),
                        blob: e.id,
                        problem: err.to_string(),
                    });
                }
            },
        );
        match read {
            Ok(id) if id == *pack => out.read = Some((size, blobs)),
            Ok(_) => {
                error("content does not match its name (corrupt, truncated or tampered)".into());
                out.read = Some((size, blobs));
            }
            Err(e) => error(format!("cannot read: {e}")),
        }
        out.findings.extend(damaged);
    }
    out
}

/// Longest read of a pack's bytes during `check --read-data`: a check holds one piece per
/// thread (plus a blob larger than this, whole), whatever the pack size.
const PIECE: u64 = 4 << 20;

/// Reads the object at `path` (`size` bytes) front to back in pieces of at most [`PIECE`]
/// bytes that end where a blob of `entries` ends (a larger blob is a piece of its own), hands
/// each blob's bytes to `blob`, and returns the BLAKE3 hash of all the bytes (the name a pack
/// must have). A blob that overlaps one before it (a damaged header) is read on its own.
fn read_in_pieces(
    backend: &dyn Backend,
    path: &str,
    size: u64,
    entries: &[PackEntry],
    mut blob: impl FnMut(&PackEntry, &[u8]),
) -> Result<Id, BackendError> {
    let mut sorted: Vec<&PackEntry> = entries.iter().collect();
    sorted.sort_by_key(|e| e.offset);
    let end_of = |e: &PackEntry| e.offset as u64 + e.length as u64;
    let mut hasher = StoredHasher::default();
    let (mut pos, mut i) = (0u64, 0usize);
    while pos < size || i < sorted.len() {
        if let Some(&e) = sorted.get(i)
            && (e.offset as u64) < pos
        {
            let sealed = backend.get(path, Some(e.offset as u64..end_of(e)))?;
            blob(e, &sealed);
            i += 1;
            continue;
        }
        // This piece: whole blobs from here while they fit, or plain bytes up to the tail.
        let mut end = (pos + PIECE).min(size);
        let mut j = i;
        if let Some(&first) = sorted.get(i) {
            end = end_of(first).max(pos + 1).min(size);
            j = i + 1;
            while let Some(&e) = sorted.get(j)
                && e.offset as u64 >= end
                && end_of(e) - pos <= PIECE
            {
                end = end_of(e);
                j += 1;
            }
        }
        let bytes = backend.get(path, Some(pos..end))?;
        hasher.update(&bytes);
        for &e in &sorted[i..j] {
            let at = (e.offset as u64 - pos) as usize;
            blob(e, &bytes[at..at + e.length as usize]);
        }
        (pos, i) = (end, j);
    }
    Ok(hasher.finish())
}

/// Walks every snapshot; reports what they refer to that is damaged or missing, including
/// blobs in `swept` packs (named only by condemned lists, and gone).
fn check_snapshots(
    repo: &Repository<Indexed>,
    swept: &HashSet<Id>,
    r: &mut Reporter<'_>,
) -> Result<(), RepoError> {
    let mut ids = repo.snapshot_ids()?;
    ids.sort();
    let mut reach = Reach::new(repo);
    reach.check_trees = true;
    r.summary.snapshots = reach.walk_snapshots(&ids, &mut Default::default(), &mut |e| r.add(e));
    if swept.is_empty() {
        return Ok(());
    }
    let pending = repo.pending();
    let mut needed: HashMap<Id, u32> = HashMap::new();
    for pos in (0..pending.len()).filter(|&pos| reach.pending.contains(pos)) {
        let pack = pending.packs()[pending.entry_at(pos).0 as usize];
        if swept.contains(&pack) {
            *needed.entry(pack).or_default() += 1;
        }
    }
    let mut needed: Vec<_> = needed.into_iter().collect();
    needed.sort();
    for (pack, blobs) in needed {
        r.add(Event::PackMissing { pack, blobs });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A memory store that records the length of every ranged read.
    struct Reads {
        inner: cairn_repo_format::ObjectStoreBackend,
        lens: std::sync::Mutex<Vec<u64>>,
    }

    impl Backend for Reads {
        fn location(&self) -> String {
            self.inner.location()
        }
        fn list(
            &self,
            prefix: &str,
            f: &mut dyn FnMut(cairn_repo_format::backend::ObjectInfo),
        ) -> Result<(), BackendError> {
            self.inner.list(prefix, f)
        }
        fn head(&self, path: &str) -> Result<Option<u64>, BackendError> {
            self.inner.head(path)
        }
        fn get(
            &self,
            path: &str,
            range: Option<std::ops::Range<u64>>,
        ) -> Result<bytes::Bytes, BackendError> {
            let b = self.inner.get(path, range)?;
            self.lens.lock().unwrap().push(b.len() as u64);
            Ok(b)
        }
        fn put(&self, path: &str, data: bytes::Bytes) -> Result<(), BackendError> {
            self.inner.put(path, data)
        }
        fn delete(&self, path: &str) -> Result<(), BackendError> {
            self.inner.delete(path)
        }
    }

    #[test]
    fn packs_are_read_in_bounded_pieces_that_keep_blobs_whole() {
        use cairn_repo_format::BlobType;
        use cairn_repo_format::compress::Compression;
        use cairn_repo_format::crypto::MasterKey;
        use cairn_repo_format::pack::{PackBuilder, PackHeader};
        let key = MasterKey::generate();
        let sizes = [1 << 20, 3 << 20, (4 << 20) + 100, 700_000]
            .into_iter()
            .chain(std::iter::repeat_n(10_000, 50))
            .chain([2 << 20, 2 << 20, 1]);
        let mut pack = PackBuilder::default();
        let mut blobs = Vec::new();
        for (i, n) in sizes.enumerate() {
            let sealed: Vec<u8> = (0..n).map(|j| (i * 7 + j % 13) as u8).collect();
            let id = Id([i as u8; 32]);
            pack.add_stored(BlobType::Data, id, Compression::None, n as u32, &sealed);
            blobs.push(sealed);
        }
        let pack = pack.finish(&key);
        let entries = PackHeader::parse_whole(&key, &pack.bytes).unwrap();
        let b = Reads {
            inner: cairn_repo_format::ObjectStoreBackend::memory(),
            lens: Default::default(),
        };
        b.put("data/p", bytes::Bytes::from(pack.bytes.clone()))
            .unwrap();
        let mut seen = Vec::new();
        let id = read_in_pieces(&b, "data/p", pack.bytes.len() as u64, &entries, |e, s| {
            assert_eq!(s.len(), e.length as usize);
            seen.push(s.to_vec());
        })
        .unwrap();
        assert_eq!(id, pack.id, "the name is checked over every byte");
        assert!(seen == blobs, "every blob whole, in order");
        let lens = b.lens.lock().unwrap().clone();
        assert_eq!(
            lens.iter().sum::<u64>(),
            pack.bytes.len() as u64,
            "read once"
        );
        assert!(lens.iter().all(|&n| n <= (4 << 20) + 100), "{lens:?}");
        assert!(lens.len() >= 4, "{lens:?}");
        // Without a header (a damaged one) the bytes are still all hashed, in pieces.
        b.lens.lock().unwrap().clear();
        let id = read_in_pieces(&b, "data/p", pack.bytes.len() as u64, &[], |_, _| {
            panic!("no blobs without a header")
        })
        .unwrap();
        assert_eq!(id, pack.id);
        assert!(b.lens.lock().unwrap().iter().all(|&n| n <= PIECE));
    }

    #[test]
    fn subsets_parse_and_buckets_cover_every_pack_once() {
        assert_eq!(
            "2/5".parse::<Subset>().unwrap(),
            Subset::Bucket { n: 2, of: 5 }
        );
        assert_eq!("10%".parse::<Subset>().unwrap(), Subset::Fraction(0.1));
        for bad in ["0/5", "6/5", "1/0", "x/5", "0%", "101%", "", "5"] {
            let err = bad.parse::<Subset>().unwrap_err().to_string();
            assert!(err.contains("1/5"), "{bad:?}: {err}");
        }
        let packs: Vec<Id> = (0..1000u32)
            .map(|i| Id::of_stored(&i.to_le_bytes()))
            .collect();
        let mut seen = vec![0; packs.len()];
        for n in 1..=5 {
            for (i, p) in packs.iter().enumerate() {
                if (Subset::Bucket { n, of: 5 }).includes(p) {
                    seen[i] += 1;
                }
            }
        }
        assert!(
            seen.iter().all(|&c| c == 1),
            "1/5 … 5/5 read each pack exactly once"
        );
        let some = packs
            .iter()
            .filter(|p| Subset::Fraction(0.5).includes(p))
            .count();
        assert!((300..700).contains(&some), "{some} of 1000 at 50%");
    }
}
