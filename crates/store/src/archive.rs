//! Unpacking function packages without trusting them.
//!
//! A package is refused, before anything is written where code is served from, when it
//! holds: a path that climbs out (`../`, absolute, drive-letter or backslash paths); a
//! symbolic link whose target is absolute or resolves outside the package; an entry below a
//! link or a file; the same path twice; an encrypted entry; more than
//! [`limits::ZIP_ENTRIES`] entries; an entry that inflates more than [`limits::ZIP_RATIO`]
//! times; or more than [`limits::UNZIPPED_BYTES`] in all. Sizes are counted as bytes are
//! written, not taken from the headers, so a lying header gains nothing.
//!
//! Unpacking happens in two passes: directories and regular files first (no link exists
//! yet, so no write can follow one), then the links, each checked lexically and then again
//! by resolving it on disk.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use ember_core::limits;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("the package is not a valid zip file: {0}")]
    NotAZip(String),
    #[error("zip files must be at most {max} bytes (got {got}); upload a smaller package", max = limits::ZIP_BYTES, got = .0)]
    ZipTooLarge(u64),
    #[error(
        "unzipped size must be at most {} bytes; the package unpacks to more",
        limits::UNZIPPED_BYTES
    )]
    UnzippedTooLarge,
    #[error("the package holds more than {} files", limits::ZIP_ENTRIES)]
    TooManyEntries,
    #[error(
        "the package entry {0:?} leaves the package directory; use relative paths without '..'"
    )]
    PathTraversal(String),
    #[error("the package entry {0:?} is a link pointing outside the package (to {1:?})")]
    LinkOutside(String, String),
    #[error("the package entry {0:?} lies below a link or a file of the same package")]
    BelowLink(String),
    #[error("the package holds {0:?} twice")]
    Duplicate(String),
    #[error("the package entry {0:?} is encrypted; upload an unencrypted zip")]
    Encrypted(String),
    #[error("the package entry {name:?} inflates more than {ratio} times; it looks like a zip bomb", name = .0, ratio = limits::ZIP_RATIO)]
    Bomb(String),
    #[error("could not unpack the package")]
    Io(#[from] io::Error),
}

impl From<zip::result::ZipError> for ArchiveError {
    fn from(e: zip::result::ZipError) -> Self {
        match e {
            zip::result::ZipError::Io(e) => ArchiveError::Io(e),
            other => ArchiveError::NotAZip(other.to_string()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File { executable: bool },
    Link,
}

struct Entry {
    index: usize,
    path: PathBuf,
    kind: Kind,
}

/// What was unpacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unpacked {
    pub entries: usize,
    pub bytes: u64,
}

/// Turns an entry name into a clean relative path, or refuses it.
fn clean_path(name: &str) -> Result<PathBuf, ArchiveError> {
    let refuse = || ArchiveError::PathTraversal(name.to_owned());
    if name.starts_with('/')
        || name.contains('\\')
        || name.contains('\0')
        || name.as_bytes().get(1) == Some(&b':')
    {
        return Err(refuse());
    }
    let mut clean = PathBuf::new();
    for part in Path::new(name).components() {
        match part {
            Component::Normal(p) => clean.push(p),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(refuse());
            }
        }
    }
    if clean.as_os_str().is_empty() {
        return Err(refuse());
    }
    Ok(clean)
}

/// Resolves `target` relative to the directory of `link` without touching the disk;
/// `None` if it climbs above the package root.
fn lexical_target(link: &Path, target: &str) -> Option<PathBuf> {
    if target.starts_with('/') || target.contains('\0') {
        return None;
    }
    let mut parts: Vec<&std::ffi::OsStr> = link.parent()?.iter().collect();
    for part in Path::new(target).components() {
        match part {
            Component::Normal(p) => parts.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.iter().collect())
}

/// Unpacks `zip` into `dest`, which must exist and be empty.
pub fn unpack(zip: &[u8], dest: &Path) -> Result<Unpacked, ArchiveError> {
    if zip.len() as u64 > limits::ZIP_BYTES {
        return Err(ArchiveError::ZipTooLarge(zip.len() as u64));
    }
    let mut archive = zip::ZipArchive::new(io::Cursor::new(zip))?;
    if archive.len() > limits::ZIP_ENTRIES {
        return Err(ArchiveError::TooManyEntries);
    }

    // Pass 0: inspect every entry's metadata.
    let mut entries = Vec::with_capacity(archive.len());
    let mut seen = HashSet::new();
    let mut declared: u64 = 0;
    for index in 0..archive.len() {
        let file = archive.by_index_raw(index)?;
        let name = file.name().to_owned();
        if file.encrypted() {
            return Err(ArchiveError::Encrypted(name));
        }
        let path = clean_path(&name)?;
        let kind = if file.is_dir() {
            Kind::Dir
        } else if file.is_symlink() {
            Kind::Link
        } else {
            Kind::File {
                executable: file.unix_mode().is_some_and(|m| m & 0o111 != 0),
            }
        };
        if !seen.insert(path.clone()) {
            // A directory listed twice is harmless; anything else is ambiguous.
            if kind == Kind::Dir {
                continue;
            }
            return Err(ArchiveError::Duplicate(name));
        }
        let size = file.size();
        if size > 1024 * 1024 && size / file.compressed_size().max(1) > limits::ZIP_RATIO {
            return Err(ArchiveError::Bomb(name));
        }
        declared = declared.saturating_add(size);
        if declared > limits::UNZIPPED_BYTES {
            return Err(ArchiveError::UnzippedTooLarge);
        }
        entries.push(Entry { index, path, kind });
    }
    // Nothing may live below a link or a file.
    let leaves: HashSet<&Path> = entries
        .iter()
        .filter(|e| e.kind != Kind::Dir)
        .map(|e| e.path.as_path())
        .collect();
    for entry in &entries {
        if entry.path.ancestors().skip(1).any(|a| leaves.contains(a)) {
            return Err(ArchiveError::BelowLink(entry.path.display().to_string()));
        }
    }

    // Pass 1: directories and files. No link exists yet, so nothing written can follow one.
    let mut written: u64 = 0;
    for entry in entries.iter().filter(|e| e.kind != Kind::Link) {
        let target = dest.join(&entry.path);
        match entry.kind {
            Kind::Dir => fs::create_dir_all(&target)?,
            Kind::File { executable } => {
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent)?;
                }
                let mode = if executable { 0o755 } else { 0o644 };
                let mut out = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&target)?;
                let file = archive.by_index(entry.index)?;
                let budget = limits::UNZIPPED_BYTES - written;
                let copied = io::copy(&mut file.take(budget + 1), &mut out)?;
                if copied > budget {
                    return Err(ArchiveError::UnzippedTooLarge);
                }
                written += copied;
                // The mode given at creation is filtered by the umask; set it exactly.
                out.set_permissions(fs::Permissions::from_mode(mode))?;
                out.flush()?;
            }
            Kind::Link => unreachable!("links are unpacked in pass 2"),
        }
    }

    // Pass 2: links, checked on paper first, then on disk once all exist.
    let mut links = Vec::new();
    for entry in entries.iter().filter(|e| e.kind == Kind::Link) {
        let mut target = String::new();
        archive
            .by_index(entry.index)?
            .take(4096)
            .read_to_string(&mut target)?;
        let name = entry.path.display().to_string();
        if lexical_target(&entry.path, &target).is_none() {
            return Err(ArchiveError::LinkOutside(name, target));
        }
        let at = dest.join(&entry.path);
        if let Some(parent) = at.parent() {
            fs::create_dir_all(parent)?;
        }
        std::os::unix::fs::symlink(&target, &at)?;
        links.push((name, target, at));
    }
    let root = dest.canonicalize()?;
    for (name, target, at) in links {
        // A link may chain through another; resolving on disk catches a chain that climbs out.
        if let Ok(real) = at.canonicalize()
            && !real.starts_with(&root)
        {
            return Err(ArchiveError::LinkOutside(name, target));
        }
    }
    Ok(Unpacked {
        entries: entries.len(),
        bytes: written,
    })
}

/// Whether `dir` holds an executable `bootstrap` (a file, or a link to one inside `dir`).
pub fn has_executable_bootstrap(dir: &Path) -> bool {
    let path = dir.join("bootstrap");
    let (Ok(real), Ok(root)) = (path.canonicalize(), dir.canonicalize()) else {
        return false;
    };
    real.starts_with(root)
        && fs::metadata(&real).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn zip_with(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default();
        for (name, link) in entries {
            match link {
                Some(target) => zip.add_symlink(*name, *target, opts).unwrap(),
                None => {
                    zip.start_file(*name, opts).unwrap();
                    zip.write_all(b"data").unwrap();
                }
            }
        }
        zip.finish().unwrap().into_inner()
    }

    fn unpack_into(zip: &[u8]) -> (tempfile::TempDir, Result<Unpacked, ArchiveError>) {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("pkg");
        fs::create_dir(&dest).unwrap();
        let result = unpack(zip, &dest);
        (dir, result)
    }

    #[test]
    fn links_inside_the_package_are_kept() {
        let zip = zip_with(&[
            ("lib/real.so.1", None),
            ("lib/real.so", Some("real.so.1")),
            ("bin/tool", Some("../lib/real.so")),
        ]);
        let (dir, result) = unpack_into(&zip);
        assert_eq!(result.unwrap().entries, 3);
        assert_eq!(fs::read(dir.path().join("pkg/bin/tool")).unwrap(), b"data");
    }

    #[test]
    fn a_chain_of_links_that_climbs_out_is_refused() {
        // Each link stays inside on paper; together `t` resolves above the package.
        let zip = zip_with(&[("s/d", Some("..")), ("t", Some("s/d/../.."))]);
        let (_dir, result) = unpack_into(&zip);
        assert!(
            matches!(result, Err(ArchiveError::LinkOutside(..))),
            "{result:?}"
        );
    }

    #[test]
    fn entries_below_a_link_are_refused_before_anything_follows_it() {
        let zip = zip_with(&[("up", Some(".")), ("up/file", None)]);
        let (dir, result) = unpack_into(&zip);
        assert!(
            matches!(result, Err(ArchiveError::BelowLink(_))),
            "{result:?}"
        );
        assert!(!dir.path().join("file").exists());
    }

    #[test]
    fn clean_paths_refuse_every_way_out() {
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "C:/x",
            "a\\..\\x",
            "./",
            "",
        ] {
            assert!(clean_path(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(clean_path("./a/./b").unwrap(), PathBuf::from("a/b"));
    }

    #[test]
    fn bootstrap_must_be_an_executable_file_inside_the_package() {
        let dir = tempfile::tempdir().unwrap();
        let boot = dir.path().join("bootstrap");
        fs::write(&boot, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&boot, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(!has_executable_bootstrap(dir.path()));
        fs::set_permissions(&boot, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(has_executable_bootstrap(dir.path()));
        fs::remove_file(&boot).unwrap();
        std::os::unix::fs::symlink("/bin/sh", &boot).unwrap();
        assert!(
            !has_executable_bootstrap(dir.path()),
            "a link to the host's /bin/sh counted"
        );
    }
}
