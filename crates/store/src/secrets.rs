//! Secrets at rest: access-key secrets are sealed with ChaCha20-Poly1305 under a 32-byte key
//! kept in a file only root can read (`secrets.key` in the data directory, mode 0600).
//!
//! SigV4 verification needs each secret itself (it is an HMAC key), so secrets cannot be
//! stored as hashes; sealing them keeps a copied database, or a backup of it, from handing
//! them out. The key file is made on first use.

use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;

/// Seals and opens secrets.
pub struct SecretBox {
    cipher: ChaCha20Poly1305,
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("could not read or create the secrets key {path}")]
    KeyFile {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("the secrets key file {0} is not 32 bytes; it is damaged or not Ember's")]
    BadKey(String),
    #[error("a stored secret could not be opened: the secrets key does not match the store")]
    Open,
}

impl SecretBox {
    /// Loads the key at `path`, creating it (0600) if it does not exist.
    pub fn open(path: &Path) -> Result<SecretBox, SecretError> {
        let key_file = |source| SecretError::KeyFile {
            path: path.display().to_string(),
            source,
        };
        if !path.exists() {
            let mut key = [0u8; 32];
            rand::rng().fill_bytes(&mut key);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(key_file)?;
            io::Write::write_all(&mut file, &key).map_err(key_file)?;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(key_file)?;
        let key = std::fs::read(path).map_err(key_file)?;
        if key.len() != 32 {
            return Err(SecretError::BadKey(path.display().to_string()));
        }
        Ok(SecretBox {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
        })
    }

    /// (nonce, sealed secret).
    pub fn seal(&self, secret: &str) -> (Vec<u8>, Vec<u8>) {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), secret.as_bytes())
            .expect("sealing cannot fail");
        (nonce.to_vec(), sealed)
    }

    pub fn open_sealed(&self, nonce: &[u8], sealed: &[u8]) -> Result<String, SecretError> {
        if nonce.len() != 12 {
            return Err(SecretError::Open);
        }
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), sealed)
            .map_err(|_| SecretError::Open)?;
        String::from_utf8(plain).map_err(|_| SecretError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_is_not_stored_in_clear() {
        let dir = tempfile::tempdir().unwrap();
        let first = SecretBox::open(&dir.path().join("a.key")).unwrap();
        let (nonce, sealed) = first.seal("wJalrXUtnFEMI");
        assert!(!sealed.windows(5).any(|w| w == b"wJalr"));
        let again = SecretBox::open(&dir.path().join("a.key")).unwrap();
        assert_eq!(again.open_sealed(&nonce, &sealed).unwrap(), "wJalrXUtnFEMI");
        let other = SecretBox::open(&dir.path().join("b.key")).unwrap();
        assert!(other.open_sealed(&nonce, &sealed).is_err());
        let mode = std::fs::metadata(dir.path().join("a.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
}
