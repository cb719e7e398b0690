//! Request paths: every path is parsed into a repository prefix, a known kind and a 64-hex
//! id, and the storage name is rebuilt from those, never taken from the raw text. Anything
//! else (an escape, a dot segment, upper-case hex, a pack under the wrong `data/xx/`, an extra
//! segment) is refused before the backend sees it.

use cairn_repo_format::{FileKind, Id};

/// What a request path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `GET /PREFIX/`: the client's role.
    Role,
    /// `GET /PREFIX/KIND/`: a listing.
    List(FileKind),
    /// `/PREFIX/config` or `/PREFIX/KIND/ID` (`/PREFIX/data/XX/ID`).
    Object(FileKind, Option<Id>),
}

/// A parsed request path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// The repository's prefix segments (none for the root repository).
    pub prefix: Vec<String>,
    /// What it names in that repository.
    pub target: Target,
}

/// Why a path names nothing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    /// Not a path this server serves.
    #[error("not a repository path: {0}")]
    Bad(&'static str),
}

/// Repository prefixes are at most this many segments deep.
pub const MAX_DEPTH: usize = 8;
/// A prefix segment is at most this long.
pub const MAX_SEGMENT: usize = 64;

/// Segment names that a prefix may not use: the kinds' directories and the server's own
/// routes.
const RESERVED: &[&str] = &[
    "config",
    "keys",
    "snapshots",
    "index",
    "data",
    "locks",
    "exclusive-locks",
    "condemned",
    "healthz",
    "readyz",
    "metrics",
];

/// The kind whose directory is `dir` (`keys`, `data`, …).
fn kind_of_dir(dir: &str) -> Option<FileKind> {
    FileKind::ALL
        .into_iter()
        .filter(|k| *k != FileKind::Config)
        .find(|k| k.prefix().trim_end_matches('/') == dir)
}

/// Whether `s` is one prefix segment: 1 to 64 of `A-Z a-z 0-9 _ - .`, not starting with a
/// dot, not a reserved name.
pub fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SEGMENT
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && !RESERVED.contains(&s)
}

/// Parses a prefix written as `a/b` (slashes around it are ignored; empty is the root).
pub fn parse_prefix(text: &str) -> Result<Vec<String>, NameError> {
    let t = text.trim_matches('/');
    if t.is_empty() {
        return Ok(Vec::new());
    }
    let segs: Vec<String> = t.split('/').map(str::to_string).collect();
    if segs.len() > MAX_DEPTH {
        return Err(NameError::Bad("prefix too deep"));
    }
    if !segs.iter().all(|s| valid_segment(s)) {
        return Err(NameError::Bad("bad prefix segment"));
    }
    Ok(segs)
}

/// Whether `s` is an id as the layout writes it: 64 lower-case hex digits.
fn parse_id(s: &str) -> Option<Id> {
    if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    Id::from_hex(s).ok()
}

/// Parses a request path (without the query).
pub fn parse(path: &str) -> Result<Parsed, NameError> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(NameError::Bad("no leading slash"));
    };
    if rest
        .bytes()
        .any(|b| b == b'%' || b == b'\\' || !b.is_ascii_graphic())
    {
        return Err(NameError::Bad(
            "escapes and special characters are not used in names",
        ));
    }
    let mut segs: Vec<&str> = rest.split('/').collect();
    let trailing = segs.last() == Some(&"");
    if trailing {
        segs.pop();
    }
    if segs.iter().any(|s| s.is_empty()) {
        return Err(NameError::Bad("empty segment"));
    }
    let (prefix, target) = if trailing {
        match segs.last().and_then(|d| kind_of_dir(d)) {
            Some(kind) => (&segs[..segs.len() - 1], Target::List(kind)),
            None => (&segs[..], Target::Role),
        }
    } else {
        let n = segs.len();
        let last = segs[n - 1];
        if last == "config" {
            (&segs[..n - 1], Target::Object(FileKind::Config, None))
        } else {
            let id = parse_id(last).ok_or(NameError::Bad("not a 64-hex id"))?;
            let dir = if n >= 2 { segs[n - 2] } else { "" };
            if n >= 3 && segs[n - 3] == "data" && dir.len() == 2 {
                if dir != &last[..2] {
                    return Err(NameError::Bad("data/XX/ is not the id's first two digits"));
                }
                (&segs[..n - 3], Target::Object(FileKind::Pack, Some(id)))
            } else {
                match kind_of_dir(dir) {
                    Some(FileKind::Pack) => return Err(NameError::Bad("packs are data/XX/ID")),
                    Some(kind) => (&segs[..n - 2], Target::Object(kind, Some(id))),
                    None => return Err(NameError::Bad("unknown kind")),
                }
            }
        }
    };
    if prefix.len() > MAX_DEPTH {
        return Err(NameError::Bad("prefix too deep"));
    }
    if !prefix.iter().all(|s| valid_segment(s)) {
        return Err(NameError::Bad("bad prefix segment"));
    }
    Ok(Parsed {
        prefix: prefix.iter().map(|s| s.to_string()).collect(),
        target,
    })
}

/// `a/b/` for a prefix, empty for the root.
pub fn prefix_dir(prefix: &[String]) -> String {
    prefix.iter().map(|s| format!("{s}/")).collect()
}

/// The storage name of an object, rebuilt from its parts.
pub fn storage_name(prefix: &[String], kind: FileKind, id: Option<&Id>) -> String {
    let rel = match (kind, id) {
        (FileKind::Config, _) | (_, None) => "config".to_string(),
        (k, Some(id)) => k.path(id),
    };
    format!("{}{rel}", prefix_dir(prefix))
}

/// Whether a token's `allowed` prefix reaches repository `prefix`: equal, or below it at a
/// segment boundary. A token without a prefix reaches only the root repository.
pub fn within(allowed: &[String], prefix: &[String]) -> bool {
    if allowed.is_empty() {
        return prefix.is_empty();
    }
    prefix.len() >= allowed.len() && prefix[..allowed.len()] == *allowed
}

/// Splits a storage name found by listing the storage into its repository prefix and
/// object; `None` for names that are no repository object.
pub fn split_storage(path: &str) -> Option<(Vec<String>, FileKind, Option<Id>)> {
    let p = parse(&format!("/{path}")).ok()?;
    match p.target {
        Target::Object(kind, id) => Some((p.prefix, kind, id)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "ab00000000000000000000000000000000000000000000000000000000000001";

    fn obj(path: &str) -> Result<(Vec<String>, FileKind), NameError> {
        let p = parse(path)?;
        match p.target {
            Target::Object(k, _) => Ok((p.prefix, k)),
            t => panic!("{t:?}"),
        }
    }

    #[test]
    fn good_paths_parse_and_rebuild() {
        assert_eq!(obj("/config").unwrap(), (vec![], FileKind::Config));
        assert_eq!(
            obj(&format!("/ns1/snapshots/{H}")).unwrap(),
            (vec!["ns1".into()], FileKind::Snapshot)
        );
        let (prefix, kind) = obj(&format!("/a/b/data/ab/{H}")).unwrap();
        assert_eq!(kind, FileKind::Pack);
        let id = Id::from_hex(H).unwrap();
        assert_eq!(
            storage_name(&prefix, kind, Some(&id)),
            format!("a/b/data/ab/{H}")
        );
        assert_eq!(
            parse("/ns1/locks/").unwrap().target,
            Target::List(FileKind::Lock)
        );
        assert_eq!(parse("/ns1/").unwrap().target, Target::Role);
        assert_eq!(parse("/").unwrap().target, Target::Role);
        assert_eq!(
            parse(&format!("/exclusive-locks/{H}")).unwrap().target,
            Target::Object(FileKind::ExclusiveLock, Some(id))
        );
    }

    #[test]
    fn bad_paths_are_refused() {
        let upper = H.to_uppercase();
        for p in [
            "/../config".to_string(),
            "/%2e%2e/config".into(),
            "/a//config".into(),
            format!("/snapshots/{upper}"),
            format!("/data/cd/{H}"),
            format!("/data/{H}"),
            format!("/snapshots/{H}/x"),
            format!("/snapshots/{}", &H[..63]),
            format!("/other/{H}"),
            "/ns1/config/".into(),
            "/.hidden/config".into(),
            "/ns 1/config".into(),
            "config".into(),
            "/data/config".into(),
        ] {
            assert!(
                !matches!(
                    parse(&p),
                    Ok(Parsed {
                        target: Target::Object(..),
                        ..
                    })
                ),
                "{p}"
            );
        }
        assert!(parse("/../").is_err());
        assert!(parse("/a/b/c/d/e/f/g/h/i/config").is_err());
    }

    #[test]
    fn prefixes_stop_at_segment_boundaries() {
        let ns1 = parse_prefix("ns1").unwrap();
        assert!(within(&ns1, &parse_prefix("ns1").unwrap()));
        assert!(within(&ns1, &parse_prefix("ns1/x").unwrap()));
        assert!(!within(&ns1, &parse_prefix("ns10").unwrap()));
        assert!(!within(&ns1, &[]));
        assert!(within(&[], &[]));
        assert!(!within(&[], &ns1), "no prefix: the root repository only");
        assert!(parse_prefix("data").is_err());
        assert!(parse_prefix("/a/b/").is_ok());
    }

    #[test]
    fn storage_names_split_back() {
        let (p, k, _) = split_storage(&format!("x/locks/{H}")).unwrap();
        assert_eq!((p, k), (vec!["x".to_string()], FileKind::Lock));
        assert!(split_storage(".tmp-x").is_none());
        assert!(split_storage("x/locks/").is_none());
    }
}
