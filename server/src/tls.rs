//! TLS: the server's certificate and key, loaded into a rustls configuration on the
//! workspace's one crypto provider (aws-lc-rs), offering HTTP/2 and HTTP/1.1 by ALPN. The
//! files are polled ([`crate::watch`]); when either changes, a new configuration is built
//! and used for every connection accepted from then on. A pair that does not load (a
//! half-written update) leaves the previous one in force.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::watch::Stamp;

/// Why the certificate and key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("cannot read {path}: {error}")]
    Unreadable {
        /// The file.
        path: String,
        /// What the OS said.
        error: std::io::Error,
    },
    /// No PEM certificate or key in it.
    #[error("{path}: {problem}")]
    Pem {
        /// The file.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// rustls refused the pair.
    #[error("the certificate and key cannot be used together: {0}")]
    Rustls(#[from] rustls::Error),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Unreadable {
        path: path.display().to_string(),
        error,
    })
}

/// Builds a configuration from PEM files.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let pem_err = |path: &Path, problem: String| TlsError::Pem {
        path: path.display().to_string(),
        problem,
    };
    let cert_pem = read(cert)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_err(cert, "no PEM certificate".into()));
    }
    let key_pem = read(key)?;
    let key_der =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| pem_err(key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The configuration in force, swapped when the files change.
pub struct TlsStore {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<(Arc<ServerConfig>, Option<Vec<Stamp>>)>,
}

impl TlsStore {
    /// Loads the pair (it must load at start).
    pub fn open(cert: &Path, key: &Path) -> Result<TlsStore, TlsError> {
        let stamp = Stamp::of_all(&[cert, key]);
        let config = load(cert, key)?;
        Ok(TlsStore {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new((config, stamp)),
        })
    }

    /// The configuration for the next connection.
    pub fn get(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// Loads the pair again if either file changed; returns what happened, for the log.
    pub fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        let stamp = Stamp::of_all(&[&self.cert, &self.key]);
        let old = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone();
        if stamp.is_none() || stamp == old {
            return None;
        }
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        cur.1 = stamp;
        Some(load(&self.cert, &self.key).map(|c| cur.0 = c))
    }
}
