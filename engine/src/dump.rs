//! `dump`: one file of a snapshot to a stream (`cairn dump latest /db.sql | psql`), or a
//! directory as a POSIX tar archive, blob by blob: nothing is held whole in memory.
//!
//! Tar entries are ustar headers, preceded by a PAX extended header when a name or link target
//! does not fit ustar's fields or a size exceeds its 8 GiB limit. Regular files, directories,
//! symlinks, devices and fifos are written; sockets are skipped. Member names are checked as
//! GNU tar checks them on extraction (see [`tar`]).

use std::io::{self, Write};

use cairn_repo_format::tree::{Node, NodeType};
use cairn_repo_format::{BlobType, Id, Indexed, RepoError, Repository};

use crate::Event;

/// Why a dump stopped.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// Reading the repository failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// Writing the output failed.
    #[error("writing the output: {0}")]
    Write(#[from] io::Error),
}

/// Writes the content of file `node` to `w`.
pub fn file(repo: &Repository<Indexed>, node: &Node, w: &mut dyn Write) -> Result<(), DumpError> {
    for id in node.content.iter().flatten() {
        w.write_all(&repo.load_blob(BlobType::Data, id)?)?;
    }
    Ok(())
}

/// What [`tar`] did with stored names that are not safe as member names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TarNames {
    /// Entries left out, with everything below them: a name that is empty, `.`, holds a `..`
    /// component or a NUL byte (each reported as [`Event::NameRefused`]).
    pub refused: u64,
    /// Entries written under a cleaned name: a leading `/` removed, empty and `.` components
    /// dropped (each reported as [`Event::NameCleaned`]).
    pub cleaned: u64,
}

/// How a stored name goes into a member name.
enum MemberName {
    /// As it is.
    Safe,
    /// Cleaned: the name's normal components, joined by `/`.
    Cleaned(String),
    /// Not at all.
    Refused,
}

/// Judges a stored name as GNU tar judges member names on extraction: a `..` component is
/// refused, a leading `/` (and empty or `.` components) removed. A NUL byte would cut the
/// name short in the header, and an empty name or `.` would name the directory itself: both
/// are refused too.
fn member_name(name: &[u8]) -> MemberName {
    if Node::name_is_safe(name) {
        return MemberName::Safe;
    }
    if name.contains(&0) {
        return MemberName::Refused;
    }
    let mut parts = Vec::new();
    for c in name.split(|&b| b == b'/') {
        match c {
            b".." => return MemberName::Refused,
            b"" | b"." => {}
            c => parts.push(String::from_utf8_lossy(c)),
        }
    }
    if parts.is_empty() {
        return MemberName::Refused;
    }
    MemberName::Cleaned(parts.join("/"))
}

/// Writes the tree `tree` as a tar archive whose names start with `prefix` (no leading `/`).
/// A stored name that is unsafe as a member name is refused (left out with everything below
/// it) or cleaned, as GNU tar treats member names on extraction; each is reported to
/// `report`, and counted in the return. The walk is iterative, one tree per level in memory.
pub fn tar(
    repo: &Repository<Indexed>,
    tree: &Id,
    prefix: &str,
    w: &mut dyn Write,
    report: &mut dyn FnMut(Event),
) -> Result<TarNames, DumpError> {
    let mut names = TarNames::default();
    let prefix = prefix.trim_start_matches('/');
    if prefix.split('/').any(|c| c == "..") {
        names.refused += 1;
        report(Event::NameRefused {
            path: prefix.into(),
            name: prefix.to_string(),
            tree: None,
        });
    } else {
        tar_dir(repo, tree, prefix, w, report, &mut names)?;
    }
    w.write_all(&[0u8; 1024])?;
    Ok(names)
}

fn tar_dir(
    repo: &Repository<Indexed>,
    root: &Id,
    prefix: &str,
    w: &mut dyn Write,
    report: &mut dyn FnMut(Event),
    names: &mut TarNames,
) -> Result<(), DumpError> {
    // One path buffer; per open directory its remaining entries, its tree's id and the
    // length of its path in the buffer.
    let mut path = prefix.to_string();
    let mut stack = vec![(repo.load_tree(root)?.nodes.into_iter(), *root, path.len())];
    while let Some((nodes, tree_id, dir_len)) = stack.last_mut() {
        let Some(node) = nodes.next() else {
            stack.pop();
            continue;
        };
        let tree_id = *tree_id;
        path.truncate(*dir_len);
        if !path.is_empty() {
            path.push('/');
        }
        match member_name(&node.name.0) {
            MemberName::Safe => path.push_str(&node.name.display()),
            MemberName::Cleaned(clean) => {
                path.push_str(&clean);
                names.cleaned += 1;
                report(Event::NameCleaned {
                    path: path.clone().into(),
                    name: node.name.display().into_owned(),
                    tree: Some(tree_id),
                });
            }
            MemberName::Refused => {
                path.push_str(&node.name.display());
                names.refused += 1;
                report(Event::NameRefused {
                    path: path.clone().into(),
                    name: node.name.display().into_owned(),
                    tree: Some(tree_id),
                });
                continue;
            }
        }
        let kind = match node.kind {
            NodeType::File => b'0',
            NodeType::Dir => b'5',
            NodeType::Symlink => b'2',
            NodeType::Chardev => b'3',
            NodeType::Blockdev => b'4',
            NodeType::Fifo => b'6',
            NodeType::Socket => continue,
        };
        let size = if kind == b'0' { node.size } else { 0 };
        if kind == b'5' {
            path.push('/');
            header(w, &path, &node, kind, size)?;
            path.pop();
        } else {
            header(w, &path, &node, kind, size)?;
        }
        match node.kind {
            NodeType::File => {
                let mut counting = Counting { w: &mut *w, n: 0 };
                file(repo, &node, &mut counting)?;
                let written = counting.n;
                if written != size {
                    return Err(RepoError::Corrupt {
                        object: format!("file {path}"),
                        reason: format!("content is {written} bytes, the tree says {size}"),
                    }
                    .into());
                }
                let pad = (512 - (size % 512) as usize) % 512;
                w.write_all(&vec![0u8; pad])?;
            }
            NodeType::Dir => {
                if let Some(sub) = node.subtree {
                    let nodes = repo.load_tree(&sub)?.nodes.into_iter();
                    stack.push((nodes, sub, path.len()));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

struct Counting<'a> {
    w: &'a mut dyn Write,
    n: u64,
}

impl Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.w.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

fn octal(field: &mut [u8], v: u64) {
    let digits = field.len() - 1;
    let s = format!("{v:0digits$o}");
    let b = s.as_bytes();
    field[..digits].copy_from_slice(&b[b.len() - digits..]);
    field[digits] = 0;
}

fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let body = key.len() + value.len() + 3;
    let mut len = body + body.to_string().len();
    if len.to_string().len() != body.to_string().len() {
        len += 1;
    }
    out.extend_from_slice(format!("{len} {key}=").as_bytes());
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn block(name: &[u8], mode: u32, uid: u32, gid: u32, size: u64, mtime: i64, kind: u8) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    octal(&mut h[100..108], mode as u64);
    octal(&mut h[108..116], uid as u64);
    octal(&mut h[116..124], gid as u64);
    octal(&mut h[124..136], size.min(0o77777777777));
    octal(&mut h[136..148], mtime.max(0) as u64);
    h[156] = kind;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h
}

fn finish(mut h: [u8; 512], w: &mut dyn Write) -> io::Result<()> {
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    w.write_all(&h)
}

fn header(w: &mut dyn Write, path: &str, node: &Node, kind: u8, size: u64) -> io::Result<()> {
    let link = node
        .linktarget
        .as_ref()
        .map(|l| l.0.as_slice())
        .unwrap_or(b"");
    let mut pax = Vec::new();
    if path.len() > 100 || !path.is_ascii() {
        pax_record(&mut pax, "path", path.as_bytes());
    }
    if link.len() > 100 || !link.is_ascii() {
        pax_record(&mut pax, "linkpath", link);
    }
    if size > 0o77777777777 {
        pax_record(&mut pax, "size", size.to_string().as_bytes());
    }
    let mtime = node.mtime.timestamp();
    if !pax.is_empty() {
        let h = block(
            b"././@PaxHeader",
            0o644,
            0,
            0,
            pax.len() as u64,
            mtime,
            b'x',
        );
        finish(h, w)?;
        w.write_all(&pax)?;
        w.write_all(&vec![0u8; (512 - pax.len() % 512) % 512])?;
    }
    let mut h = block(
        path.as_bytes(),
        node.mode,
        node.uid,
        node.gid,
        size,
        mtime,
        kind,
    );
    let l = link.len().min(100);
    h[157..157 + l].copy_from_slice(&link[..l]);
    let u = node.user.len().min(31);
    h[265..265 + u].copy_from_slice(&node.user.as_bytes()[..u]);
    let g = node.group.len().min(31);
    h[297..297 + g].copy_from_slice(&node.group.as_bytes()[..g]);
    if matches!(kind, b'3' | b'4') {
        let (major, minor) = (
            libc::major(node.rdev as libc::dev_t),
            libc::minor(node.rdev as libc::dev_t),
        );
        octal(&mut h[329..337], major as u64);
        octal(&mut h[337..345], minor as u64);
    }
    finish(h, w)
}
