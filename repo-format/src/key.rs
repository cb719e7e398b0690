//! Key files (`keys/<id>`): one per password. Plaintext JSON with the argon2id parameters and
//! salt, and the master key sealed under the key derived from the password. Opening a
//! repository tries each key file until one opens.

use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};

use crate::crypto::{MasterKey, MasterKeyJson, random_array};
use crate::id::{hex_decode, hex_encode};

const KEY_AAD: &[u8] = b"cairn/key";

/// Argon2id cost parameters.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

/// The most memory a key file may ask argon2id for, in KiB (256 MiB: 8 times the default,
/// well below what would OOM-kill a pod or a small node). See `docs/design.md` §7.
pub const KDF_MAX_MEMORY_KIB: u32 = 256 * 1024;
/// The most passes a key file may ask for (default 3).
pub const KDF_MAX_PASSES: u32 = 16;
/// The most lanes a key file may ask for (default 1).
pub const KDF_MAX_LANES: u32 = 8;

impl KdfParams {
    /// Whether these parameters are within the bounds every reader enforces: a key file
    /// outside them is skipped unopened, so that nobody who can write to `keys/` can make
    /// every command spin or run out of memory.
    pub fn check(&self) -> Result<(), String> {
        if self.p_cost == 0 || self.p_cost > KDF_MAX_LANES {
            return Err(format!(
                "argon2 lanes {} outside 1..={KDF_MAX_LANES}",
                self.p_cost
            ));
        }
        if self.t_cost == 0 || self.t_cost > KDF_MAX_PASSES {
            return Err(format!(
                "argon2 passes {} outside 1..={KDF_MAX_PASSES}",
                self.t_cost
            ));
        }
        let min = 8 * self.p_cost;
        if self.m_cost < min || self.m_cost > KDF_MAX_MEMORY_KIB {
            return Err(format!(
                "argon2 memory {} KiB outside {min}..={KDF_MAX_MEMORY_KIB} KiB",
                self.m_cost
            ));
        }
        Ok(())
    }

    /// The work of one derivation, to try cheap key files first.
    pub fn cost(&self) -> u64 {
        self.m_cost as u64 * self.t_cost as u64
    }
}

impl Default for KdfParams {
    fn default() -> Self {
        // 32 MiB, 3 passes: as much memory per guess as restic's scrypt key files (N = 2^15,
        // r = 8), above OWASP's argon2id floor (19 MiB, 2 passes); about 0.1 s here. Every
        // command pays it once, at its peak memory: 64 MiB was half of a backup's peak RSS.
        KdfParams {
            m_cost: 32 * 1024,
            t_cost: 3,
            p_cost: 1,
        }
    }
}

/// A key file as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyFile {
    /// When the key was added (RFC 3339).
    pub created: chrono::DateTime<chrono::Utc>,
    /// Host that added it.
    pub host: String,
    /// User that added it.
    pub username: String,
    /// Always `argon2id`.
    pub kdf: String,
    /// Cost parameters.
    #[serde(flatten)]
    pub params: KdfParams,
    /// Hex salt.
    pub salt: String,
    /// Hex of the sealed master key.
    pub data: String,
}

/// Why a key file did not open.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The password does not open this key.
    #[error("wrong password")]
    WrongPassword,
    /// The file is not a key file this version understands.
    #[error("malformed key file: {0}")]
    Malformed(String),
}

fn derive(password: &[u8], salt: &[u8], p: &KdfParams) -> Result<MasterKeyBytes, KeyError> {
    let params = Params::new(p.m_cost, p.t_cost, p.p_cost, Some(32))
        .map_err(|e| KeyError::Malformed(format!("argon2 parameters: {e}")))?;
    let mut out = [0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(password, salt, &mut out)
        .map_err(|e| KeyError::Malformed(format!("argon2: {e}")))?;
    Ok(out)
}

type MasterKeyBytes = [u8; 32];

/// The key that seals a master key inside a key file: a `MasterKey` whose encryption half is
/// derived from the password.
fn wrapping_key(derived: MasterKeyBytes) -> MasterKey {
    let j = MasterKeyJson::from_raw(&derived, &[0u8; 32]);
    MasterKey::from_json(&j).expect("valid lengths")
}

impl KeyFile {
    /// Seals `master` under `password`.
    pub fn create(
        master: &MasterKey,
        password: &[u8],
        params: KdfParams,
    ) -> Result<KeyFile, KeyError> {
        let salt: [u8; 32] = random_array();
        let wrap = wrapping_key(derive(password, &salt, &params)?);
        let json = serde_json::to_vec(&master.to_json()).expect("serializable");
        Ok(KeyFile {
            created: chrono::Utc::now(),
            host: hostname(),
            username: username(),
            kdf: "argon2id".into(),
            params,
            salt: hex_encode(&salt),
            data: hex_encode(&wrap.seal(KEY_AAD, &json)),
        })
    }

    /// Opens the master key with `password`.
    pub fn open(&self, password: &[u8]) -> Result<MasterKey, KeyError> {
        if self.kdf != "argon2id" {
            return Err(KeyError::Malformed(format!("unknown kdf {:?}", self.kdf)));
        }
        self.params.check().map_err(KeyError::Malformed)?;
        let salt =
            hex_decode(&self.salt).ok_or_else(|| KeyError::Malformed("salt is not hex".into()))?;
        let sealed =
            hex_decode(&self.data).ok_or_else(|| KeyError::Malformed("data is not hex".into()))?;
        let wrap = wrapping_key(derive(password, &salt, &self.params)?);
        let json = wrap
            .open(KEY_AAD, &sealed)
            .map_err(|_| KeyError::WrongPassword)?;
        let j: MasterKeyJson =
            serde_json::from_slice(&json).map_err(|e| KeyError::Malformed(e.to_string()))?;
        MasterKey::from_json(&j).ok_or_else(|| KeyError::Malformed("master key lengths".into()))
    }
}

/// This machine's host name, or empty.
pub fn hostname() -> String {
    std::env::var("CAIRN_HOST")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The current user's name from the environment, or empty.
pub fn username() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_with_right_password_only() {
        let m = MasterKey::generate();
        let cheap = KdfParams {
            m_cost: 64,
            t_cost: 1,
            p_cost: 1,
        };
        let k = KeyFile::create(&m, b"secret", cheap).unwrap();
        let json = serde_json::to_string(&k).unwrap();
        let k: KeyFile = serde_json::from_str(&json).unwrap();
        let opened = k.open(b"secret").unwrap();
        assert_eq!(opened.blob_id(b"x"), m.blob_id(b"x"));
        assert!(matches!(k.open(b"wrong"), Err(KeyError::WrongPassword)));
    }
}
