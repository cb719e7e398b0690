//! The tokens file: one `TOKEN ROLE [PREFIX]` a line, `#` starting a comment. Tokens are kept
//! only as their BLAKE3 hashes, looked up by hash and compared in constant time, and never
//! logged: logs and metrics name a token by its label, the first 8 hex digits of its hash.
//! The file is read again when it changes ([`crate::watch`]); a file that does not parse
//! leaves the previous tokens in force.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::names;
use crate::roles::Role;
use crate::watch::Stamp;

/// Tokens are at least this long.
pub const MIN_TOKEN: usize = 16;

/// Why a tokens file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// It cannot be read.
    #[error("cannot read the tokens file {path}: {error}")]
    Unreadable {
        /// The file.
        path: String,
        /// What the OS said.
        error: std::io::Error,
    },
    /// A line does not parse (the token itself is never quoted).
    #[error("tokens file {path}, line {line}: {problem}")]
    Line {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        problem: String,
    },
}

/// What a token grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Its role.
    pub role: Role,
    /// The repositories it reaches: this prefix and below (empty: the root repository only).
    pub prefix: Vec<String>,
    /// The first 8 hex digits of the token's hash, for logs.
    pub label: String,
}

/// One parsed tokens file.
#[derive(Debug, Default)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], (blake3::Hash, Grant)>,
}

fn hash(token: &str) -> blake3::Hash {
    blake3::derive_key("cairn-server tokens v1", token.as_bytes()).into()
}

impl Tokens {
    /// Parses a tokens file's text; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Tokens, TokensError> {
        let mut by_hash = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let err = |problem: &str| TokensError::Line {
                path: path.into(),
                line: i + 1,
                problem: problem.into(),
            };
            let fields: Vec<&str> = line.split_ascii_whitespace().collect();
            let (token, role, prefix) = match fields[..] {
                [t, r] => (t, r, ""),
                [t, r, p] => (t, r, p),
                _ => return Err(err("expected TOKEN ROLE [PREFIX]")),
            };
            if token.len() < MIN_TOKEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(err("a token is at least 16 printable ASCII characters"));
            }
            let role = Role::parse(role).ok_or_else(|| err("the role is read, append or admin"))?;
            let prefix = names::parse_prefix(prefix).map_err(|e| err(&e.to_string()))?;
            let h = hash(token);
            let label = h.to_hex()[..8].to_string();
            let grant = Grant {
                role,
                prefix,
                label,
            };
            if by_hash.insert(*h.as_bytes(), (h, grant)).is_some() {
                return Err(err("the same token is listed twice"));
            }
        }
        Ok(Tokens { by_hash })
    }

    /// Reads and parses a tokens file.
    pub fn load(path: &Path) -> Result<Tokens, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|error| TokensError::Unreadable {
            path: path.display().to_string(),
            error,
        })?;
        Tokens::parse(&text, &path.display().to_string())
    }

    /// What `token` grants, if it is listed.
    pub fn lookup(&self, token: &str) -> Option<&Grant> {
        let h = hash(token);
        let (stored, grant) = self.by_hash.get(h.as_bytes())?;
        // blake3::Hash compares in constant time.
        (*stored == h).then_some(grant)
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

/// The tokens in force, swapped when the file changes.
pub struct TokenStore {
    path: PathBuf,
    current: RwLock<(Arc<Tokens>, Option<Stamp>)>,
}

impl TokenStore {
    /// Loads the file (it must parse at start).
    pub fn open(path: &Path) -> Result<TokenStore, TokensError> {
        let stamp = Stamp::of(path);
        let tokens = Tokens::load(path)?;
        Ok(TokenStore {
            path: path.to_path_buf(),
            current: RwLock::new((Arc::new(tokens), stamp)),
        })
    }

    /// The tokens in force.
    pub fn get(&self) -> Arc<Tokens> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// Reads the file again if it changed; returns what happened, for the log.
    pub fn reload_if_changed(&self) -> Option<Result<usize, TokensError>> {
        let stamp = Stamp::of(&self.path);
        let old = self.current.read().unwrap_or_else(|p| p.into_inner()).1;
        if stamp.is_none() || stamp == old {
            return None;
        }
        Some(match Tokens::load(&self.path) {
            Ok(t) => {
                let n = t.len();
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = (Arc::new(t), stamp);
                Ok(n)
            }
            Err(e) => {
                // Not again until the file changes once more.
                self.current.write().unwrap_or_else(|p| p.into_inner()).1 = stamp;
                Err(e)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines_and_looks_up() {
        let t = Tokens::parse(
            "# comment\n\nreadreadreadread01 read\nappendappendappend02 append ns1 # trailing\nadminadminadminadmin admin /clusters/a/\n",
            "f",
        )
        .unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t.lookup("readreadreadread01").unwrap().role, Role::Read);
        let a = t.lookup("appendappendappend02").unwrap();
        assert_eq!(
            (a.role, a.prefix.clone()),
            (Role::Append, vec!["ns1".to_string()])
        );
        assert_eq!(t.lookup("adminadminadminadmin").unwrap().prefix.len(), 2);
        assert!(t.lookup("nope").is_none());
        assert!(t.lookup("readreadreadread0").is_none());
    }

    #[test]
    fn bad_lines_name_the_line_not_the_token() {
        for text in [
            "short admin",
            "longenoughtoken123 king",
            "longenoughtoken123 admin ../x",
            "longenoughtoken123 admin a b",
            "longenoughtoken123 read\nlongenoughtoken123 admin",
        ] {
            let e = Tokens::parse(text, "f").unwrap_err().to_string();
            assert!(e.contains("line"), "{e}");
            assert!(!e.contains("longenoughtoken123"), "{e}");
        }
    }
}
