//! Test support: the backend conformance suite: one set of checks that every [`Backend`] must
//! pass. Each backend's test module calls [`run_all`] on a fresh, empty store.
//!
//! Every object is named as a repository names it (the BLAKE3 of its bytes under its kind's
//! prefix; `config` by that name), so that the suite also runs through a repository server,
//! which refuses any other name.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::{Backend, BackendError, FileKind};
use crate::id::Id;

/// The name a repository gives `data` stored as an object of `kind`.
pub fn name_of(kind: FileKind, data: &[u8]) -> String {
    kind.path(&Id::of_stored(data))
}

/// Runs every check against an empty backend.
pub fn run_all(b: &dyn Backend) {
    put_get_head(b);
    create_only(b);
    ranges(b);
    listing(b);
    delete_and_missing(b);
    large_packs(b);
    spooled(b);
}

/// An object built in the backend's spool is stored create-only, as `put` stores it, can be
/// stored again from the same body (a retry, and again once deleted), and its spool leaves
/// nothing behind (the local backend's test looks for temporary files).
fn spooled(b: &dyn Backend) {
    use std::io::Write;
    let data: Vec<u8> = (0..1_000_003usize).map(|i| (i % 253) as u8).collect();
    let path = name_of(FileKind::Pack, &data);
    let mut spool = b.spool(data.len()).unwrap();
    for part in data.chunks(70_001) {
        spool.write_all(part).unwrap();
    }
    let body = spool.finish().unwrap();
    assert_eq!(body.len(), data.len() as u64);
    b.put_spooled(&path, &body).unwrap();
    assert!(
        b.get(&path, None).unwrap() == data,
        "spooled object read back"
    );
    let e = b.put_spooled(&path, &body).unwrap_err();
    assert!(matches!(e, BackendError::AlreadyExists { .. }), "{e}");
    b.delete(&path).unwrap();
    b.put_spooled(&path, &body).unwrap();
    assert_eq!(b.head(&path).unwrap(), Some(data.len() as u64));
    drop(body);
    // A spool dropped unfinished stores nothing.
    let mut abandoned = b.spool(10).unwrap();
    abandoned.write_all(b"half a pack").unwrap();
    drop(abandoned);
    b.delete(&path).unwrap();
}

/// A pack of 12 MiB and a byte: a backend set up for multipart uploads below that size sends
/// it in parts. A second upload of the same pack (a retry after a lost reply) is harmless.
fn large_packs(b: &dyn Backend) {
    let data: Bytes = (0..(12usize << 20) + 1).map(|i| (i % 251) as u8).collect();
    let path = name_of(FileKind::Pack, &data);
    b.put(&path, data.clone()).unwrap();
    assert_eq!(b.head(&path).unwrap(), Some(data.len() as u64));
    assert!(b.get(&path, None).unwrap() == data, "large pack read back");
    let r = (5u64 << 20) - 3..(5 << 20) + 3;
    assert_eq!(
        b.get(&path, Some(r.clone())).unwrap(),
        data.slice(r.start as usize..r.end as usize),
        "range across a part boundary"
    );
    match b.put(&path, data.clone()) {
        Ok(()) | Err(BackendError::AlreadyExists { .. }) => {}
        Err(e) => panic!("second upload of the same pack: {e}"),
    }
    assert!(b.get(&path, None).unwrap() == data);
    b.delete(&path).unwrap();
}

fn put_get_head(b: &dyn Backend) {
    let path = name_of(FileKind::Snapshot, b"hello");
    b.put(&path, Bytes::from_static(b"hello")).unwrap();
    assert_eq!(b.get(&path, None).unwrap(), Bytes::from_static(b"hello"));
    assert_eq!(b.head(&path).unwrap(), Some(5));
    assert_eq!(
        b.head(&name_of(FileKind::Snapshot, b"absent")).unwrap(),
        None
    );
    let empty = name_of(FileKind::Index, b"");
    b.put(&empty, Bytes::new()).unwrap();
    assert_eq!(b.get(&empty, None).unwrap().len(), 0);
    assert_eq!(b.head(&empty).unwrap(), Some(0));
}

fn create_only(b: &dyn Backend) {
    b.put("config", Bytes::from_static(b"one")).unwrap();
    let e = b.put("config", Bytes::from_static(b"two")).unwrap_err();
    assert!(matches!(e, BackendError::AlreadyExists { .. }), "{e}");
    assert_eq!(
        b.get("config", None).unwrap(),
        Bytes::from_static(b"one"),
        "never overwritten"
    );
    let key = name_of(FileKind::Key, b"{}");
    b.put(&key, Bytes::from_static(b"{}")).unwrap();
    let e = b.put(&key, Bytes::from_static(b"{}")).unwrap_err();
    assert!(matches!(e, BackendError::AlreadyExists { .. }), "{e}");
}

fn ranges(b: &dyn Backend) {
    let data: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let path = name_of(FileKind::Pack, &data);
    b.put(&path, Bytes::from(data.clone())).unwrap();
    assert_eq!(b.get(&path, Some(10..20)).unwrap(), &data[10..20]);
    assert_eq!(
        b.get(&path, Some(99_990..100_000)).unwrap(),
        &data[99_990..]
    );
    assert_eq!(b.get(&path, None).unwrap(), data);
}

fn listing(b: &dyn Backend) {
    let before = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let mut names = BTreeMap::new();
    for i in 1..=30usize {
        let data = vec![i as u8; i];
        let path = name_of(FileKind::Index, &data);
        b.put(&path, Bytes::from(data)).unwrap();
        names.insert(path, i as u64);
    }
    let mut seen = BTreeMap::new();
    b.list("index/", &mut |o| {
        let mtime = o.mtime.expect("listings carry the storage's mtime");
        assert!(mtime > before, "{:?}", o.mtime);
        seen.insert(o.path, o.size);
    })
    .unwrap();
    assert_eq!(seen.len(), 31, "30 and the empty one of put_get_head");
    for (path, size) in &names {
        assert_eq!(seen.get(path), Some(size), "{path}");
    }
    let mut packs = Vec::new();
    b.list("data/", &mut |o| packs.push(o.path)).unwrap();
    let data: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    assert_eq!(
        packs,
        vec![name_of(FileKind::Pack, &data)],
        "nested names are listed"
    );
    let mut none = 0;
    b.list("condemned/", &mut |_| none += 1).unwrap();
    assert_eq!(none, 0);
}

fn delete_and_missing(b: &dyn Backend) {
    let path = name_of(FileKind::Lock, b"x");
    b.put(&path, Bytes::from_static(b"x")).unwrap();
    b.delete(&path).unwrap();
    assert_eq!(b.head(&path).unwrap(), None);
    let e = b.get(&path, None).unwrap_err();
    assert!(matches!(e, BackendError::NotFound { .. }), "{e}");
    assert!(e.to_string().contains(&path), "errors name the object: {e}");
}

#[cfg(test)]
mod tests {
    use super::super::{Backend, ObjectStoreBackend};

    #[test]
    fn memory_backend_conforms() {
        super::run_all(&ObjectStoreBackend::memory());
    }

    #[test]
    fn object_store_local_backend_conforms() {
        let dir = tempfile::tempdir().unwrap();
        super::run_all(&ObjectStoreBackend::local(dir.path(), false).unwrap());
    }

    #[test]
    fn local_backend_conforms_and_leaves_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let b = super::super::LocalBackend::new(dir.path(), false).unwrap();
        super::run_all(&b);
        let leftovers: Vec<_> = walkdir::WalkDir::new(dir.path())
            .into_iter()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
            .map(|e| e.path().display().to_string())
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        // Large reads go through reused buffers: each read still returns exactly its bytes,
        // whatever a longer or shorter read left in the buffer, and a slice outlives the
        // next reads.
        let a: Vec<u8> = (0..3_000_000usize).map(|i| (i % 241) as u8).collect();
        let z = vec![0u8; 2_000_000];
        b.put("data/01/a", bytes::Bytes::from(a.clone())).unwrap();
        b.put("data/01/z", bytes::Bytes::from(z.clone())).unwrap();
        let first = b
            .get("data/01/a", Some(0..3_000_000))
            .unwrap()
            .slice(10..20);
        for _ in 0..3 {
            assert!(b.get("data/01/z", Some(100..1_500_100)).unwrap() == z[100..1_500_100]);
            assert!(b.get("data/01/a", Some(7..2_900_007)).unwrap() == a[7..2_900_007]);
            assert!(b.get("data/01/z", None).unwrap() == z);
        }
        assert_eq!(first, a[10..20]);
        let e = b.get("data/01/z", Some(1_000_000..2_500_000)).unwrap_err();
        assert!(e.to_string().contains("data/01/z"), "{e}");
        assert!(
            b.get("data/01/a", None).unwrap() == a,
            "after a failed read"
        );
        // A range past the end is an error naming the object, not short data.
        b.put("data/00/x", bytes::Bytes::from_static(b"0123"))
            .unwrap();
        let e = b.get("data/00/x", Some(2..9)).unwrap_err();
        assert!(e.to_string().contains("data/00/x"), "{e}");
    }
}
