//! Content-addressed function code.
//!
//! A package is stored once per SHA-256: the zip as uploaded at `zips/<sha>.zip` (what
//! GetFunction hands back) and unpacked at `code/<sha>/` (what environments mount at
//! `/var/task`). Unpacking goes to a private temporary directory first and is renamed into
//! place, so a half-unpacked or refused package is never visible, and two uploads of the
//! same package race harmlessly.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::archive::{self, ArchiveError};

/// One stored package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// Hex SHA-256 of the zip.
    pub sha256: String,
    /// Size of the zip, in bytes.
    pub size: u64,
}

/// Bytes of regular files below `dir` (links not followed): a package's unpacked size.
pub fn unpacked_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).into_iter().flatten().flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(entry.path()),
                Ok(t) if t.is_file() => total += entry.metadata().map_or(0, |m| m.len()),
                _ => {}
            }
        }
    }
    total
}

/// The artifact directory.
#[derive(Debug, Clone)]
pub struct Artifacts {
    root: PathBuf,
}

impl Artifacts {
    pub fn open(root: &Path) -> io::Result<Artifacts> {
        for sub in ["zips", "code", "tmp"] {
            fs::create_dir_all(root.join(sub))?;
        }
        // Leftovers of an unpack interrupted by a crash.
        if let Ok(entries) = fs::read_dir(root.join("tmp")) {
            for entry in entries.flatten() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        Ok(Artifacts {
            root: root.to_owned(),
        })
    }

    /// Where the package with this hash is unpacked.
    pub fn code_dir(&self, sha256: &str) -> PathBuf {
        self.root.join("code").join(sha256)
    }

    /// Where the zip with this hash is kept.
    pub fn zip_path(&self, sha256: &str) -> PathBuf {
        self.root.join("zips").join(format!("{sha256}.zip"))
    }

    /// Checks, unpacks and stores a package; a package already stored is not unpacked again.
    pub fn put(&self, zip: &[u8]) -> Result<Artifact, ArchiveError> {
        let sha256 = hex::encode(Sha256::digest(zip));
        let artifact = Artifact {
            sha256: sha256.clone(),
            size: zip.len() as u64,
        };
        let code = self.code_dir(&sha256);
        if code.is_dir() && self.zip_path(&sha256).is_file() {
            return Ok(artifact);
        }
        let tmp = self
            .root
            .join("tmp")
            .join(uuid::Uuid::new_v4().simple().to_string());
        fs::create_dir(&tmp)?;
        let result = archive::unpack(zip, &tmp).and_then(|_| {
            // Directories must be traversable by the unprivileged user functions run as.
            fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
            let zip_tmp = tmp.with_extension("zip");
            fs::write(&zip_tmp, zip)?;
            fs::rename(&zip_tmp, self.zip_path(&sha256))?;
            match fs::rename(&tmp, &code) {
                // Another upload of the same package won the race: theirs is identical.
                Err(_) if code.is_dir() => Ok(()),
                other => other.map_err(ArchiveError::from),
            }
        });
        let _ = fs::remove_dir_all(&tmp);
        result.map(|()| artifact)
    }

    /// Deletes a package's files.
    pub fn remove(&self, sha256: &str) {
        let _ = fs::remove_dir_all(self.code_dir(sha256));
        let _ = fs::remove_file(self.zip_path(sha256));
    }
}
