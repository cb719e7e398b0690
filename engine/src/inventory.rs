//! Inventory: reading what a repository holds file by file, for the commands that must know
//! which file says what (`check` reports each damaged index file and goes on; `prune` deletes
//! exactly the index files it read and no others).

use std::collections::{HashMap, HashSet};

use cairn_repo_format::condemned::Stamp;
use cairn_repo_format::index::{Index, IndexBuilder};
use cairn_repo_format::pack::PackEntry;
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
    /// Second locations of blobs that index files name more than once (readers use the
    /// first; `check` verifies these against their packs).
    pub duplicates: Vec<(Id, PackEntry)>,
}

/// Reads every index file and condemned list; a file that cannot be read goes to `bad` (and is
/// left out) instead of stopping the load.
pub fn load(
    repo: Repository<Opened>,
    bad: &mut dyn FnMut(RepoError),
) -> Result<(Repository<Indexed>, Inventory), RepoError> {
    let mut read = read_all(&repo, false, bad)?;
    let duplicates = &mut read.inventory.duplicates;
    let main = read.main.finish_with(|pack, e| duplicates.push((pack, e)));
    let repo = repo.with_index(main, read.pending.finish());
    Ok((repo, read.inventory))
}

/// [`load`] for prune, which must never delete a pack because a file that may name it could
/// not be read. When an index file or condemned list was left out, every listed pack that no
/// file read names has its header read and joins the main index (so prune keeps what it
/// holds and indexes it anew); a pack whose header cannot be read either goes to `bad` and
/// into the returned set, which prune leaves alone.
pub fn load_rescuing(
    repo: Repository<Opened>,
    listed: &HashMap<Id, u64>,
    bad: &mut dyn FnMut(RepoError),
) -> Result<(Repository<Indexed>, Inventory, HashSet<Id>), RepoError> {
    let mut read = read_all(&repo, true, bad)?;
    let mut untouchable = HashSet::new();
    if read.any_bad {
        let mut unnamed: Vec<(&Id, &u64)> = listed
            .iter()
            .filter(|(p, _)| !read.packs.contains(*p))
            .collect();
        unnamed.sort();
        for (pack, size) in unnamed {
            match repo.read_pack_header_of(pack, *size) {
                Ok(entries) => read.main.add_pack(*pack, &entries),
                Err(e @ RepoError::Corrupt { .. }) => {
                    bad(e);
                    untouchable.insert(*pack);
                }
                Err(e) => return Err(e),
            }
        }
    }
    let duplicates = &mut read.inventory.duplicates;
    let main = read.main.finish_with(|pack, e| duplicates.push((pack, e)));
    let repo = repo.with_index(main, read.pending.finish());
    Ok((repo, read.inventory, untouchable))
}

/// What [`read_all`] read.
struct Read {
    main: IndexBuilder,
    pending: IndexBuilder,
    inventory: Inventory,
    /// Every pack some file read names.
    packs: HashSet<Id>,
    /// Whether some file was left out.
    any_bad: bool,
}

/// Reads every index file and condemned list. A damaged one goes to `bad`; so does one that
/// storage failed to deliver, unless `strict` (then that stops the load).
fn read_all(
    repo: &Repository<Opened>,
    strict: bool,
    bad: &mut dyn FnMut(RepoError),
) -> Result<Read, RepoError> {
    let mut read = Read {
        main: IndexBuilder::default(),
        pending: IndexBuilder::default(),
        inventory: Inventory {
            index_files: Vec::new(),
            condemned: Vec::new(),
            duplicates: Vec::new(),
        },
        packs: HashSet::new(),
        any_bad: false,
    };
    let mut left_out = |e: RepoError, any_bad: &mut bool| match e {
        e @ RepoError::Corrupt { .. } => {
            *any_bad = true;
            bad(e);
            Ok(())
        }
        e if strict => Err(e),
        e => {
            *any_bad = true;
            bad(e);
            Ok(())
        }
    };
    for id in repo.ids(FileKind::Index)? {
        // A file's entries join the index only once the whole file has been read and found good.
        let mut packs = Vec::new();
        match repo.read_index_file(&FileKind::Index.path(&id), |p, e| packs.push((p, e))) {
            Ok(()) => {
                for (p, e) in packs {
                    read.packs.insert(p);
                    read.main.add_pack(p, &e);
                }
                read.inventory.index_files.push(id);
            }
            Err(e) => left_out(e, &mut read.any_bad)?,
        }
    }
    for id in repo.ids(FileKind::Condemned)? {
        let mut packs = Vec::new();
        match repo.read_condemned(&id, |p, e| packs.push((p, e))) {
            Ok(stamp) => {
                for (p, e) in &packs {
                    read.packs.insert(*p);
                    read.pending.add_pack(*p, e);
                }
                let packs = packs.into_iter().map(|(p, _)| p).collect();
                read.inventory
                    .condemned
                    .push(CondemnedList { id, stamp, packs });
            }
            Err(e) => left_out(e, &mut read.any_bad)?,
        }
    }
    Ok(read)
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
