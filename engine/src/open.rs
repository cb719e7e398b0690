//! One way to open a repository, for every face. A host turns its flags, environment or
//! manifest into one validated [`RepoSettings`] (where the repository is, how to talk to it,
//! where the password comes from), and [`RepoSettings::open`] does the rest: the backend with
//! its retry and rate-limit layers, the existence check, the password, the keys and config.
//! Connection defaults live in the backends (one per CPU for a local directory, 8 for object
//! stores), so a library caller gets exactly what `cairn` gets.

use std::path::PathBuf;
use std::sync::Arc;

use cairn_repo_format::{BackendError, Indexed, Opened, RepoError, Repository};

use crate::location::{Location, LocationError, Transfer};

/// Where the password comes from.
#[derive(Clone)]
pub enum PasswordSource {
    /// The first line of a file (a mounted Secret, `--password-file`).
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// The bytes themselves.
    Bytes(Vec<u8>),
    /// Asked for by the host (a terminal prompt); the argument is the question.
    Prompt(Prompt),
}

/// A host's way to ask for the password: the question in, the answer or why not out.
pub type Prompt = Arc<dyn Fn(&str) -> Result<String, String> + Send + Sync>;

impl std::fmt::Debug for PasswordSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PasswordSource::File(p) => write!(f, "File({})", p.display()),
            PasswordSource::Env(v) => write!(f, "Env({v})"),
            PasswordSource::Bytes(_) => f.write_str("Bytes(..)"),
            PasswordSource::Prompt(_) => f.write_str("Prompt"),
        }
    }
}

/// Why a password could not be had.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The password file cannot be read.
    #[error("cannot read password file {path}: {error}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        error: std::io::Error,
    },
    /// The file's first line, the variable or the answer is empty.
    #[error("the password from {0} is empty")]
    Empty(String),
    /// The variable is not set.
    #[error("{0} is not set")]
    Unset(String),
    /// The host's prompt failed.
    #[error("no password: {0}")]
    Prompt(String),
}

impl PasswordSource {
    /// Reads the password.
    pub fn read(&self) -> Result<Vec<u8>, PasswordError> {
        let pw = match self {
            PasswordSource::File(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|error| PasswordError::Unreadable {
                        path: path.clone(),
                        error,
                    })?;
                let first = text.lines().next().unwrap_or("").as_bytes().to_vec();
                if first.is_empty() {
                    return Err(PasswordError::Empty(format!("file {}", path.display())));
                }
                first
            }
            PasswordSource::Env(var) => match std::env::var_os(var) {
                None => return Err(PasswordError::Unset(var.clone())),
                Some(v) if v.is_empty() => return Err(PasswordError::Empty(var.clone())),
                Some(v) => std::os::unix::ffi::OsStringExt::into_vec(v),
            },
            PasswordSource::Bytes(b) => b.clone(),
            PasswordSource::Prompt(ask) => {
                let pw = ask("enter password for repository: ").map_err(PasswordError::Prompt)?;
                pw.into_bytes()
            }
        };
        if pw.is_empty() {
            return Err(PasswordError::Empty(format!("{self:?}")));
        }
        Ok(pw)
    }
}

/// A transfer setting that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// Zero connections would never send a request.
    #[error("connections: 0 would never send a request (at least 1)")]
    NoConnections,
    /// A zero rate would stop every transfer.
    #[error("{0} rate limit of 0 KiB/s would stop every transfer")]
    ZeroRate(&'static str),
}

/// Why a repository could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The location cannot be used (unknown scheme, missing container).
    #[error(transparent)]
    Location(#[from] LocationError),
    /// The password could not be had.
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// No repository there, a wrong password, or storage failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// Everything needed to open a repository, validated.
#[derive(Clone, Debug)]
pub struct RepoSettings {
    /// Where it is.
    pub location: Location,
    /// Connections and rate limits.
    pub transfer: Transfer,
    /// Where the password comes from.
    pub password: PasswordSource,
    /// For a repository server (`rest:`): the token and the CA to trust. By default the
    /// token comes from `CAIRN_SERVER_TOKEN`.
    pub server: cairn_repo_format::backend::RestAuth,
}

impl RepoSettings {
    /// Parses `location` and checks the transfer settings.
    pub fn new(
        location: &str,
        transfer: Transfer,
        password: PasswordSource,
    ) -> Result<RepoSettings, OpenError> {
        if transfer.connections == Some(0) {
            return Err(LocationError::from(SettingsError::NoConnections).into());
        }
        if transfer.limit_upload_kib == Some(0) {
            return Err(LocationError::from(SettingsError::ZeroRate("upload")).into());
        }
        if transfer.limit_download_kib == Some(0) {
            return Err(LocationError::from(SettingsError::ZeroRate("download")).into());
        }
        Ok(RepoSettings {
            location: Location::parse(location)?,
            transfer,
            password,
            server: Default::default(),
        })
    }

    /// Opens the repository: backend, keys and config.
    pub fn open(&self) -> Result<Repository<Opened>, OpenError> {
        let backend = match self.location.open_with(&self.transfer, &self.server) {
            Ok(b) => b,
            Err(LocationError::Backend(BackendError::NotFound { path })) => {
                return Err(RepoError::NotFound { location: path }.into());
            }
            Err(e) => return Err(e.into()),
        };
        let pw = self.password.read()?;
        Ok(Repository::open(backend, &pw)?)
    }

    /// Opens the repository and loads its index (for reading: restore, ls, dump). A backup
    /// loads its index itself, under its lock. Index files and condemned lists that cannot be
    /// read are left out and reported to `cx` ([`report_skipped`]).
    pub fn open_indexed(&self, cx: &crate::Context) -> Result<Repository<Indexed>, OpenError> {
        let repo = self.open()?.load_index()?;
        report_skipped(&repo, cx);
        Ok(repo)
    }

    /// Storage requests in flight for this repository's reads (restore, check): the setting,
    /// or 0 for the backend's own default.
    pub fn connections(&self) -> usize {
        self.transfer.connections.unwrap_or(0)
    }
}

/// Reports each index file or condemned list the index load left out because it cannot be
/// read: the command goes on with the rest, and `check` reports the same object as damaged.
pub fn report_skipped(repo: &Repository<Indexed>, cx: &crate::Context) {
    for e in repo.skipped() {
        let crate::Event::ObjectDamaged { object, problem } = crate::Event::from_repo_error(e)
        else {
            continue;
        };
        cx.emit(crate::Event::ObjectDamaged {
            object,
            problem: format!("{problem}; left out"),
        });
    }
}
