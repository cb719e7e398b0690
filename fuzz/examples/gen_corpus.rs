//! Makes the fuzz targets' seed corpus (`fuzz/corpus/<target>/`) from a real repository.
//!
//! It builds a small directory (text, random bytes, an empty file, a non-UTF-8 name, a symlink,
//! a subdirectory, an extended attribute and a FIFO where the file system allows), backs it up
//! twice into an in-memory repository through the engine (the second time with a file changed,
//! tags and labels), drops the first snapshot and runs a prune that is stopped, as if killed,
//! once its committed condemned lists are stored, so that it leaves condemned lists and its
//! lock behind. Then it opens every stored object and writes the plaintext that each decoder
//! reads as one seed file:
//!
//! | target        | seed                                                        |
//! |---------------|-------------------------------------------------------------|
//! | `key_file`    | key files as stored, and the master key JSON sealed in them |
//! | `config`      | the config payload                                          |
//! | `object`      | the framing (compression byte, length, zstd) of every object |
//! | `pack_header` | every pack's decrypted header                               |
//! | `index`       | index file payloads                                         |
//! | `tree`        | every tree blob                                             |
//! | `snapshot`    | snapshot payloads                                           |
//! | `condemned`   | condemned list payloads                                     |
//! | `lock`        | lock payloads                                               |
//!
//! Run from `fuzz/`: `cargo run --example gen_corpus` (it replaces the seeds it made before;
//! files not named `seed-*` are left alone).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use argon2::{Algorithm, Argon2, Params, Version};
use cairn_engine::backup::{self, BackupOptions, ParentChoice, Progress};
use cairn_engine::prune::{self, Checkpoint, PruneError, PruneOptions};
use cairn_fuzz::{KEY_AAD, PACK_HEADER_AAD, object_aad};
use cairn_repo_format::backend::FileKind;
use cairn_repo_format::blob::BlobType;
use cairn_repo_format::config::Config;
use cairn_repo_format::id::{Id, hex_decode};
use cairn_repo_format::key::{KdfParams, KeyFile};
use cairn_repo_format::lock::{Lock, LockKind};
use cairn_repo_format::object::ObjectKind;
use cairn_repo_format::pack::PackHeader;
use cairn_repo_format::{Backend, ObjectStoreBackend, Repository};

const PASSWORD: &[u8] = b"fuzz corpus";
const CHEAP: KdfParams = KdfParams {
    m_cost: 8,
    t_cost: 1,
    p_cost: 1,
};

fn main() {
    let out = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    let src = tempfile::tempdir().expect("temp dir");
    make_tree(src.path());

    let backend: Arc<dyn Backend> = Arc::new(ObjectStoreBackend::memory());
    // Small chunks and packs, so that one file spans several blobs and packs.
    let config = Config::new((64 * 1024, 128 * 1024, 256 * 1024), 3, 256 * 1024);
    let repo = Repository::init(backend.clone(), PASSWORD, config, CHEAP).expect("init");
    repo.add_key(
        b"second",
        KdfParams {
            m_cost: 64,
            t_cost: 2,
            p_cost: 2,
        },
    )
    .expect("second key");

    let cx = cairn_engine::Context::default();
    let mut opts = BackupOptions {
        paths: vec![src.path().to_path_buf()],
        hostname: "fuzz-host".into(),
        workers: 1,
        connections: 1,
        ..Default::default()
    };
    let first = backup::run(&repo, &opts, &Progress::default(), &cx).expect("first backup");
    std::fs::write(src.path().join("big.bin"), random_bytes(9, 400_000)).expect("change");
    opts.tags = vec!["nightly".into(), "ünïcode tag".into()];
    opts.labels = [("namespace", "prod"), ("pvc", "data-0")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    opts.parent = ParentChoice::Latest;
    backup::run(&repo, &opts, &Progress::default(), &cx).expect("second backup");

    // Forget the first snapshot, then a prune killed after it stored its condemned lists
    // leaves those lists and its lock behind; a backup lock is written beside it.
    backend
        .delete(&FileKind::Snapshot.path(&first.id))
        .expect("forget");
    let pruned = prune::run(
        repo.clone(),
        &PruneOptions {
            max_unused: 0.0,
            kill_at: Some(Checkpoint::CondemnedCommitted),
            ..Default::default()
        },
        &cx,
    );
    assert!(matches!(pruned, Err(PruneError::Killed(_))), "{pruned:?}");
    repo.write_lock(&Lock::new(LockKind::Backup)).expect("lock");

    let mut seeds = Seeds::new(&out);
    let key = repo.key().clone();
    let objects = [
        (FileKind::Config, ObjectKind::Config, "config"),
        (FileKind::Snapshot, ObjectKind::Snapshot, "snapshot"),
        (FileKind::Index, ObjectKind::Index, "index"),
        (FileKind::Lock, ObjectKind::Lock, "lock"),
        (FileKind::Condemned, ObjectKind::Condemned, "condemned"),
    ];
    for (fkind, okind, target) in objects {
        let paths = match fkind {
            FileKind::Config => vec!["config".to_string()],
            _ => list(&*backend, fkind.prefix()),
        };
        for path in paths {
            let sealed = backend.get(&path, None).expect("get");
            let framed = key.open(object_aad(okind), &sealed).expect("object opens");
            seeds.add("object", &framed);
            let payload =
                cairn_repo_format::object::open_object(&key, okind, &sealed).expect("object opens");
            seeds.add(target, &payload);
        }
    }
    for path in list(&*backend, FileKind::Key.prefix()) {
        let bytes = backend.get(&path, None).expect("get");
        seeds.add("key_file", &bytes);
        let kf: KeyFile = serde_json::from_slice(&bytes).expect("key file");
        seeds.add("key_file", &sealed_master_key(&kf));
    }
    let indexed = repo.clone().load_index().expect("index");
    for path in list(&*backend, FileKind::Pack.prefix()) {
        let pack = backend.get(&path, None).expect("get");
        let r = PackHeader::header_range(pack.len() as u64, &pack[pack.len() - 4..])
            .expect("header range");
        let header = key
            .open(PACK_HEADER_AAD, &pack[r.start as usize..r.end as usize])
            .expect("header opens");
        seeds.add("pack_header", &header);
        for e in PackHeader::parse_whole(&key, &pack).expect("header parses") {
            if e.ty == BlobType::Tree {
                let tree = indexed.load_blob(BlobType::Tree, &e.id).expect("tree blob");
                seeds.add("tree", &tree);
            }
        }
    }
    seeds.finish();
}

/// Writes the directory that gets backed up.
fn make_tree(dir: &Path) {
    let w = |name: &str, data: &[u8]| std::fs::write(dir.join(name), data).expect("write");
    w(
        "notes.txt",
        "Cairn seed corpus: some compressible text.\n"
            .repeat(200)
            .as_bytes(),
    );
    w("big.bin", &random_bytes(1, 400_000));
    w("empty", b"");
    w("tab\tand newline\n", b"odd name");
    std::fs::create_dir(dir.join("sub")).expect("mkdir");
    std::fs::write(dir.join("sub/inner.json"), br#"{"k": [1, 2, 3]}"#).expect("write");
    std::os::unix::fs::symlink("../notes.txt", dir.join("sub/link")).expect("symlink");
    {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(b"latin1-\xe9t\xe9");
        std::fs::write(dir.join(name), b"not utf-8 name").expect("write");
    }
    // Best effort: the file system may refuse user xattrs, and mkfifo may be missing.
    let _ = xattr::set(dir.join("notes.txt"), "user.comment", b"seed \xff");
    let _ = std::process::Command::new("mkfifo")
        .arg(dir.join("sub/pipe"))
        .status();
}

/// Deterministic incompressible bytes (xorshift).
fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn list(backend: &dyn Backend, prefix: &str) -> Vec<String> {
    let mut paths = Vec::new();
    backend
        .list(prefix, &mut |o| paths.push(o.path))
        .expect("list");
    paths.sort();
    paths
}

/// The master key JSON a key file seals: the password's argon2id derivation opens it.
fn sealed_master_key(kf: &KeyFile) -> Vec<u8> {
    let password: &[u8] = if kf.params == CHEAP {
        PASSWORD
    } else {
        b"second"
    };
    let p = &kf.params;
    let params = Params::new(p.m_cost, p.t_cost, p.p_cost, Some(32)).expect("params");
    let salt = hex_decode(&kf.salt).expect("salt hex");
    let mut derived = [0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(password, &salt, &mut derived)
        .expect("argon2");
    let sealed = hex_decode(&kf.data).expect("data hex");
    let (nonce, rest) = sealed.split_at(12);
    let (ct, tag) = rest.split_at(rest.len() - 16);
    let mut plain = ct.to_vec();
    Aes256Gcm::new(&Key::<Aes256Gcm>::from(derived))
        .decrypt_inout_detached(
            &Nonce::from(<[u8; 12]>::try_from(nonce).expect("nonce")),
            KEY_AAD,
            plain.as_mut_slice().into(),
            &<[u8; 16]>::try_from(tag).expect("tag").into(),
        )
        .expect("the password opens its key file");
    plain
}

/// Seed files, one directory per target, named by the hash of their content.
struct Seeds {
    root: PathBuf,
    counts: std::collections::BTreeMap<&'static str, (usize, usize)>,
}

impl Seeds {
    fn new(root: &Path) -> Seeds {
        Seeds {
            root: root.to_path_buf(),
            counts: Default::default(),
        }
    }

    fn add(&mut self, target: &'static str, bytes: &[u8]) {
        let dir = self.root.join(target);
        if !self.counts.contains_key(target) {
            std::fs::create_dir_all(&dir).expect("corpus dir");
            for old in std::fs::read_dir(&dir).expect("read corpus dir").flatten() {
                if old.file_name().to_string_lossy().starts_with("seed-") {
                    std::fs::remove_file(old.path()).expect("remove old seed");
                }
            }
        }
        let name = format!("seed-{}", &Id::of_stored(bytes).to_hex()[..16]);
        std::fs::write(dir.join(name), bytes).expect("write seed");
        let c = self.counts.entry(target).or_default();
        c.0 += 1;
        c.1 += bytes.len();
    }

    fn finish(self) {
        for (target, (n, bytes)) in &self.counts {
            println!("{target:12} {n:3} seeds {bytes:7} bytes");
        }
    }
}
