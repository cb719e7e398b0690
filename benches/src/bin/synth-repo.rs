//! Builds a synthetic repository of N small data blobs, for measuring `prune` and `check` at
//! scale without backing up terabytes. It writes through the repository-format library exactly
//! what a backup would: packs, index files (after every 8 packs, 50 000 blobs or 60 s, as
//! `engine/src/backup/upload.rs` does), tree blobs and two snapshots.
//!
//! Usage: `synth-repo DIR N` (password: `$CAIRN_PASSWORD`, else `synth`). Prints the ids of
//! snapshots A and B.
//!
//! Layout:
//! - data blob `i` is 24 bytes: `i` (u64 LE) and a fixed pattern, stored uncompressed;
//!   10 000 blobs per pack;
//! - file `f` holds blobs `10f .. 10f + 10`; directory `d` holds files `1000d .. 1000d + 1000`
//!   (so one directory is one data pack), each directory one tree blob;
//! - snapshot A: every directory, every file (all N data blobs);
//! - snapshot B: all directories but the last 2 % (at least one), and in those every file but
//!   those with `f % 25 < 2` (8 %): about 90 % of the data blobs. After `cairn forget A` the
//!   directories B leaves out are whole unused packs (condemned) and every other data pack is
//!   8 % unused (repack candidates); A's trees share tree packs with B's.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_repo_format::blob::{BlobType, seal_blob};
use cairn_repo_format::config::Config;
use cairn_repo_format::key::KdfParams;
use cairn_repo_format::pack::{PackBuilder, PackEntry};
use cairn_repo_format::snapshot::{Snapshot, Summary};
use cairn_repo_format::tree::{Node, NodeType, RawBytes, Tree};
use cairn_repo_format::{Id, ObjectStoreBackend, Repository};
use chrono::{DateTime, TimeZone, Utc};

/// Data blobs per pack.
const PACK_BLOBS: usize = 10_000;
/// Data blobs per file.
const FILE_BLOBS: u64 = 10;
/// Files per directory.
const DIR_FILES: u64 = 1_000;
/// Index file after this many packs, blobs or seconds (as a backup does).
const FLUSH_PACKS: usize = 8;
const FLUSH_BLOBS: usize = 50_000;
const FLUSH_AFTER: Duration = Duration::from_secs(60);
/// Data blob payload after the blob number.
const PATTERN: &[u8; 16] = b"cairn-synthetic.";

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Stores packs and writes index files the way the backup's uploader does.
struct Writer {
    repo: Repository,
    level: i32,
    data: PackBuilder,
    trees: PackBuilder,
    tree_target: usize,
    pending: Vec<(Id, Vec<PackEntry>)>,
    pending_blobs: usize,
    last_flush: Instant,
    packs: u64,
    index_files: u64,
}

impl Writer {
    fn add(&mut self, ty: BlobType, plain: &[u8]) -> Result<Id> {
        let key = self.repo.key();
        let id = key.blob_id(plain);
        let level = if ty == BlobType::Data { 0 } else { self.level };
        let sealed = seal_blob(key, ty, id, plain, level);
        let b = match ty {
            BlobType::Data => &mut self.data,
            BlobType::Tree => &mut self.trees,
        };
        b.add(&sealed);
        let full = match ty {
            BlobType::Data => b.blob_count() >= PACK_BLOBS,
            BlobType::Tree => b.len() >= self.tree_target,
        };
        if full {
            let b = std::mem::take(b);
            self.store(b)?;
        }
        Ok(id)
    }

    fn store(&mut self, b: PackBuilder) -> Result<()> {
        if b.is_empty() {
            return Ok(());
        }
        let pack = b.finish(self.repo.key());
        self.repo.save_pack(&pack.id, pack.bytes)?;
        self.packs += 1;
        self.pending_blobs += pack.entries.len();
        self.pending.push((pack.id, pack.entries));
        if self.pending.len() >= FLUSH_PACKS
            || self.pending_blobs >= FLUSH_BLOBS
            || self.last_flush.elapsed() >= FLUSH_AFTER
        {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if !self.pending.is_empty() {
            self.repo
                .save_index(self.pending.iter().map(|(p, e)| (p, e.as_slice())))?;
            self.index_files += 1;
            self.pending.clear();
            self.pending_blobs = 0;
        }
        self.last_flush = Instant::now();
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        let data = std::mem::take(&mut self.data);
        self.store(data)?;
        let trees = std::mem::take(&mut self.trees);
        self.store(trees)?;
        self.flush()
    }
}

fn node(name: String, kind: NodeType, t: DateTime<Utc>) -> Node {
    Node {
        name: RawBytes(name.into_bytes()),
        kind,
        mode: if kind == NodeType::Dir { 0o755 } else { 0o644 },
        uid: 1000,
        gid: 1000,
        user: String::new(),
        group: String::new(),
        mtime: t,
        atime: t,
        ctime: t,
        size: 0,
        inode: 0,
        device: 0,
        links: 0,
        rdev: 0,
        linktarget: None,
        xattrs: Vec::new(),
        content: None,
        subtree: None,
    }
}

fn file_node(f: u64, content: &[Id], t: DateTime<Utc>) -> Node {
    let mut n = node(format!("f{f:09}"), NodeType::File, t);
    n.size = 24 * content.len() as u64;
    n.inode = f + 1;
    n.links = 1;
    n.content = Some(content.to_vec());
    n
}

/// Whether snapshot B keeps file `f` (of a directory it keeps).
fn b_keeps_file(f: u64) -> bool {
    f % 25 >= 2
}

fn run(dir: &Path, n: u64, password: &str) -> Result<()> {
    let start = Instant::now();
    let backend = Arc::new(ObjectStoreBackend::local(dir, true)?);
    let cheap = KdfParams {
        m_cost: 64,
        t_cost: 1,
        p_cost: 1,
    };
    let repo = Repository::init(backend, password.as_bytes(), Config::default(), cheap)?;
    let mut w = Writer {
        level: repo.config().compression,
        tree_target: repo.config().pack_size as usize,
        repo,
        data: PackBuilder::default(),
        trees: PackBuilder::default(),
        pending: Vec::new(),
        pending_blobs: 0,
        last_flush: Instant::now(),
        packs: 0,
        index_files: 0,
    };
    let t = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("valid");
    let dir_blobs = FILE_BLOBS * DIR_FILES;
    let dirs = n.div_ceil(dir_blobs);
    // B leaves out the last 2 % of the directories (at least one when there are two).
    let b_dirs = if dirs >= 2 {
        dirs - (dirs / 50).max(1)
    } else {
        dirs
    };
    let (mut root_a, mut root_b) = (Vec::new(), Vec::new());
    let (mut b_blobs, mut tree_blobs) = (0u64, 0u64);
    let mut plain = [0u8; 24];
    plain[8..].copy_from_slice(PATTERN);
    for d in 0..dirs {
        let first = d * dir_blobs;
        let last = (first + dir_blobs).min(n);
        let mut ids = Vec::with_capacity((last - first) as usize);
        for i in first..last {
            plain[..8].copy_from_slice(&i.to_le_bytes());
            ids.push(w.add(BlobType::Data, &plain)?);
        }
        let (mut tree_a, mut tree_b) = (Tree::default(), Tree::default());
        for (k, content) in ids.chunks(FILE_BLOBS as usize).enumerate() {
            let f = d * DIR_FILES + k as u64;
            let node = file_node(f, content, t);
            if d < b_dirs && b_keeps_file(f) {
                b_blobs += content.len() as u64;
                tree_b.nodes.push(node.clone());
            }
            tree_a.nodes.push(node);
        }
        let name = format!("d{d:07}");
        let mut dir_node = node(name, NodeType::Dir, t);
        dir_node.subtree = Some(w.add(BlobType::Tree, &tree_a.to_bytes())?);
        root_a.push(dir_node.clone());
        tree_blobs += 1;
        if d < b_dirs {
            dir_node.subtree = Some(w.add(BlobType::Tree, &tree_b.to_bytes())?);
            root_b.push(dir_node);
            tree_blobs += 1;
        }
        if (d + 1) % 100 == 0 {
            eprintln!(
                "{} / {n} blobs, {:.0} s",
                last,
                start.elapsed().as_secs_f64()
            );
        }
    }
    let root_a = w.add(BlobType::Tree, &Tree { nodes: root_a }.to_bytes())?;
    let root_b = w.add(BlobType::Tree, &Tree { nodes: root_b }.to_bytes())?;
    tree_blobs += 2;
    w.finish()?;
    let snap = |tree: Id, tag: &str, time: DateTime<Utc>, blobs: u64| Snapshot {
        time,
        hostname: "synth".into(),
        username: "synth".into(),
        paths: vec!["/synth".into()],
        tags: vec![tag.into()],
        labels: Default::default(),
        tree,
        root: None,
        original: None,
        parent: None,
        program_version: "synth-repo".into(),
        summary: Summary {
            data_blobs: blobs,
            ..Default::default()
        },
    };
    let a = w.repo.save_snapshot(&snap(root_a, "A", t, n))?;
    let b = w
        .repo
        .save_snapshot(&snap(root_b, "B", t + chrono::Duration::hours(1), b_blobs))?;
    eprintln!(
        "{n} data blobs ({b_blobs} in B, {:.1} %), {tree_blobs} tree blobs, {} packs, {} index files, {:.1} s",
        100.0 * b_blobs as f64 / n.max(1) as f64,
        w.packs,
        w.index_files,
        start.elapsed().as_secs_f64()
    );
    println!("A {a}");
    println!("B {b}");
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(Ok(n))) = (args.get(1), args.get(2).map(|s| s.parse::<u64>())) else {
        eprintln!("usage: synth-repo DIR N   (password: $CAIRN_PASSWORD, else \"synth\")");
        std::process::exit(2);
    };
    let password = std::env::var("CAIRN_PASSWORD").unwrap_or_else(|_| "synth".into());
    if let Err(e) = run(Path::new(dir), n, &password) {
        eprintln!("synth-repo: {e}");
        std::process::exit(1);
    }
}
