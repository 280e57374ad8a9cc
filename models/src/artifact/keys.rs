//! ed25519 key files and signing.
//!
//! Secret key file (mode 0600): `{"key_id", "algorithm": "ed25519", "secret_key": hex}`.
//! Public key file: `{"key_id", "algorithm": "ed25519", "public_key": hex}`;
//! the public key goes into `trust.yaml`.

use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Filesystem error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a key file of ours.
    #[error("{path}: not an ed25519 key file: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The OS gave no randomness.
    #[error("no randomness for key generation: {0}")]
    Random(String),
}

/// A signing key with its id.
#[derive(Serialize, Deserialize)]
pub struct SecretKeyFile {
    /// Key id.
    pub key_id: String,
    /// Always `ed25519`.
    pub algorithm: String,
    /// 32-byte seed, hex.
    pub secret_key: String,
}

impl std::fmt::Debug for SecretKeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKeyFile({}, <redacted>)", self.key_id)
    }
}

/// A public key with its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKeyFile {
    /// Key id.
    pub key_id: String,
    /// Always `ed25519`.
    pub algorithm: String,
    /// 32 bytes, hex.
    pub public_key: String,
}

impl SecretKeyFile {
    /// A fresh key from the OS's randomness.
    pub fn generate(key_id: &str) -> Result<Self, KeyFileError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyFileError::Random(e.to_string()))?;
        Ok(Self {
            key_id: key_id.to_owned(),
            algorithm: "ed25519".into(),
            secret_key: hex::encode(seed),
        })
    }

    /// Reads a secret key file.
    pub fn read(path: &Path) -> Result<Self, KeyFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Io {
            path: path.to_owned(),
            source,
        })?;
        let k: Self = serde_json::from_str(&text).map_err(|e| KeyFileError::Format {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        k.signing_key().map_err(|reason| KeyFileError::Format {
            path: path.to_owned(),
            reason,
        })?;
        Ok(k)
    }

    /// Writes the key with mode 0600 (never overwrites).
    pub fn write(&self, path: &Path) -> Result<(), KeyFileError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let io = |source| KeyFileError::Io {
            path: path.to_owned(),
            source,
        };
        let text = serde_json::to_string_pretty(self).map_err(|e| KeyFileError::Format {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.write_all(b"\n").map_err(io)
    }

    fn signing_key(&self) -> Result<SigningKey, String> {
        if self.algorithm != "ed25519" {
            return Err(format!("algorithm `{}` is not ed25519", self.algorithm));
        }
        let bytes: [u8; 32] = hex::decode(&self.secret_key)
            .map_err(|e| e.to_string())?
            .try_into()
            .map_err(|_| "secret_key must be 32 bytes".to_owned())?;
        Ok(SigningKey::from_bytes(&bytes))
    }

    /// Signs `message`; the signature as hex.
    pub fn sign_hex(&self, message: &[u8]) -> Result<String, String> {
        Ok(hex::encode(self.signing_key()?.sign(message).to_bytes()))
    }

    /// The matching public key file.
    pub fn public(&self) -> Result<PublicKeyFile, String> {
        let vk: VerifyingKey = self.signing_key()?.verifying_key();
        Ok(PublicKeyFile {
            key_id: self.key_id.clone(),
            algorithm: "ed25519".into(),
            public_key: hex::encode(vk.to_bytes()),
        })
    }
}

impl PublicKeyFile {
    /// Writes the public key file.
    pub fn write(&self, path: &Path) -> Result<(), KeyFileError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| KeyFileError::Format {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        std::fs::write(path, text + "\n").map_err(|source| KeyFileError::Io {
            path: path.to_owned(),
            source,
        })
    }
}
