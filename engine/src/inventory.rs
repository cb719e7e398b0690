//! Inventory: reading what a repository holds file by file, for the commands that must know
//! which file says what (`check` reports each damaged index file and goes on; `prune` deletes
//! exactly the index files it read and no others).

use std::collections::HashMap;

use cairn_repo_format::condemned::Stamp;
use cairn_repo_format::index::{Index, IndexBuilder};
use cairn_repo_format::{FileKind, Id, Indexed, Opened, RepoError, Repository};

/// A condemned list as read.
#[derive(Clone, Debug)]
pub struct CondemnedList {
    /// Its object id.
    pub id: Id,
    /// When it was written, and whether its prune finished rewriting the index.
    pub stamp: Stamp,
    /// The packs it names.
    pub packs: Vec<Id>,
}

/// The index files and condemned lists that were read.
pub struct Inventory {
    /// Index files read into the main index.
    pub index_files: Vec<Id>,
    /// Condemned lists read into the pending index.
    pub condemned: Vec<CondemnedList>,
}

/// Reads every index file and condemned list; a file that cannot be read goes to `bad` (and is
/// left out) instead of stopping the load.
pub fn load(
    repo: Repository<Opened>,
    bad: &mut dyn FnMut(RepoError),
) -> Result<(Repository<Indexed>, Inventory), RepoError> {
    let mut main = IndexBuilder::default();
    let mut index_files = Vec::new();
    for id in repo.ids(FileKind::Index)? {
        match repo.read_index_file(&FileKind::Index.path(&id), |p, e| main.add_pack(p, &e)) {
            Ok(()) => index_files.push(id),
            Err(e) => bad(e),
        }
    }
    let mut pending = IndexBuilder::default();
    let mut condemned = Vec::new();
    for id in repo.ids(FileKind::Condemned)? {
        let mut packs = Vec::new();
        match repo.read_condemned(&id, |p, e| {
            packs.push(p);
            pending.add_pack(p, &e)
        }) {
            Ok(stamp) => condemned.push(CondemnedList { id, stamp, packs }),
            Err(e) => bad(e),
        }
    }
    let repo = repo.with_index(main.finish(), pending.finish());
    Ok((
        repo,
        Inventory {
            index_files,
            condemned,
        },
    ))
}

/// Every pack in `data/` with its size.
pub fn list_packs<S>(repo: &Repository<S>) -> Result<HashMap<Id, u64>, RepoError> {
    let mut packs = HashMap::new();
    repo.backend().list(FileKind::Pack.prefix(), &mut |o| {
        if let Some(id) = FileKind::Pack.id_of(&o.path) {
            packs.insert(id, o.size);
        }
    })?;
    Ok(packs)
}

/// Per pack number of `index`: how many entries it has and their sealed bytes.
pub fn pack_usage(index: &Index) -> Vec<(u32, u64)> {
    let mut usage = vec![(0u32, 0u64); index.packs().len()];
    for pos in 0..index.len() {
        let (pack, e) = index.entry_at(pos);
        let u = &mut usage[pack as usize];
        u.0 += 1;
        u.1 += e.length as u64;
    }
    usage
}
