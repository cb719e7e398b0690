//! Include/exclude patterns, as restic users write them: a pattern without `/` matches a name
//! anywhere (`*.log`, `node_modules`); one with `/` matches the whole path (`/var/cache/**`,
//! `/data/tmp`); `**` spans directories. Matching a directory matches everything below it.

use std::path::Path;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

/// A set of patterns.
#[derive(Clone, Default)]
pub struct Patterns {
    names: Option<GlobSet>,
    paths: Option<GlobSet>,
    count: usize,
}

/// A pattern that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid pattern {pattern:?}: {reason}")]
pub struct PatternError {
    /// The pattern.
    pub pattern: String,
    /// Why.
    pub reason: String,
}

fn glob(p: &str) -> Result<Glob, PatternError> {
    GlobBuilder::new(p)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| PatternError {
            pattern: p.to_string(),
            reason: e.kind().to_string(),
        })
}

impl Patterns {
    /// Compiles patterns (blank lines and `#` comments are skipped).
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Patterns, PatternError> {
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        let (mut n, mut p) = (0, 0);
        for pat in patterns {
            let pat = pat.as_ref().trim_end_matches(['\r', '\n']);
            if pat.trim().is_empty() || pat.starts_with('#') {
                continue;
            }
            let trimmed = pat.trim_end_matches('/');
            if trimmed.contains('/') {
                paths.add(glob(trimmed)?);
                p += 1;
            } else {
                names.add(glob(trimmed)?);
                n += 1;
            }
        }
        let build = |b: GlobSetBuilder, count| -> Result<Option<GlobSet>, PatternError> {
            if count == 0 {
                return Ok(None);
            }
            b.build().map(Some).map_err(|e| PatternError {
                pattern: String::new(),
                reason: e.to_string(),
            })
        };
        Ok(Patterns {
            names: build(names, n)?,
            paths: build(paths, p)?,
            count: n + p,
        })
    }

    /// Reads patterns from a file, one per line.
    pub fn from_file(path: &Path) -> Result<Vec<String>, std::io::Error> {
        Ok(std::fs::read_to_string(path)?
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// True when there are no patterns.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether `path` (absolute, or snapshot-relative starting with `/`) matches.
    pub fn matches(&self, path: &Path) -> bool {
        if let (Some(names), Some(name)) = (&self.names, path.file_name())
            && names.is_match(Path::new(name))
        {
            return true;
        }
        if let Some(paths) = &self.paths {
            return paths.is_match(path);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        let p = Patterns::new(&["*.log", "/data/cache", "/srv/**/tmp", "# comment", ""]).unwrap();
        assert!(p.matches(Path::new("/a/b/x.log")));
        assert!(!p.matches(Path::new("/a/b/x.log.gz")));
        assert!(p.matches(Path::new("/data/cache")));
        assert!(!p.matches(Path::new("/other/data/cache")));
        assert!(p.matches(Path::new("/srv/a/b/tmp")));
        assert!(!p.matches(Path::new("/srv/a/b/tmpx")));
        assert!(Patterns::new(&["a[b"]).is_err());
        assert!(Patterns::new::<&str>(&[]).unwrap().is_empty());
    }
}
