//! Roles and what each may do: the role table of `docs/design.md` §16 as one function.
//! Every operation the table does not list is refused. Two rules need more than the table:
//! an append client deletes a lock only with that lock's receipt ([`crate::receipt`]), and no
//! one deletes the last key (both are applied in [`crate::http`]).

use cairn_repo_format::FileKind;

/// A token's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// List and read.
    Read,
    /// Read, store new snapshots, index files, packs and locks, and delete its own locks.
    Append,
    /// Everything (prune, forget, keys, init).
    Admin,
}

impl Role {
    /// Parses `read`, `append` or `admin`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "read" => Some(Role::Read),
            "append" => Some(Role::Append),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// The role's name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Append => "append",
            Role::Admin => "admin",
        }
    }
}

/// An operation on a kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// `GET /PREFIX/KIND/`.
    List,
    /// `GET` or `HEAD` of an object.
    Get,
    /// `POST`: a create-only upload.
    Create,
    /// `DELETE`.
    Delete,
}

impl Op {
    /// The operation's name, for metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Op::List => "list",
            Op::Get => "get",
            Op::Create => "create",
            Op::Delete => "delete",
        }
    }
}

/// Whether `role` may do `op` on objects of `kind`. `(Append, Lock, Delete)` is allowed here
/// and further limited to the client's own locks by their receipts.
pub fn allowed(role: Role, kind: FileKind, op: Op) -> bool {
    use FileKind as K;
    use Op::*;
    match (role, op) {
        // Reading: everything but listing `config`, which is no directory.
        (_, List) => kind != K::Config,
        (_, Get) => true,
        (Role::Read, _) => false,
        (Role::Admin, _) => true,
        (Role::Append, Create) => matches!(kind, K::Snapshot | K::Index | K::Pack | K::Lock),
        (Role::Append, Delete) => kind == K::Lock,
    }
}

/// The name of a kind, for metrics and logs.
pub fn kind_name(kind: FileKind) -> &'static str {
    match kind {
        FileKind::Config => "config",
        FileKind::Key => "keys",
        FileKind::Snapshot => "snapshots",
        FileKind::Index => "index",
        FileKind::Pack => "data",
        FileKind::Lock => "locks",
        FileKind::ExclusiveLock => "exclusive-locks",
        FileKind::Condemned => "condemned",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FileKind as K;

    #[test]
    fn the_table() {
        for k in FileKind::ALL {
            assert!(allowed(Role::Read, k, Op::Get));
            assert!(!allowed(Role::Read, k, Op::Create));
            assert!(!allowed(Role::Read, k, Op::Delete));
            assert!(allowed(Role::Admin, k, Op::Create));
            assert!(allowed(Role::Admin, k, Op::Delete));
        }
        for k in [K::Snapshot, K::Index, K::Pack, K::Lock] {
            assert!(allowed(Role::Append, k, Op::Create), "{k:?}");
        }
        for k in [K::Config, K::Key, K::Condemned, K::ExclusiveLock] {
            assert!(!allowed(Role::Append, k, Op::Create), "{k:?}");
        }
        for k in FileKind::ALL {
            assert_eq!(allowed(Role::Append, k, Op::Delete), k == K::Lock, "{k:?}");
        }
        assert!(!allowed(Role::Admin, K::Config, Op::List));
    }
}
