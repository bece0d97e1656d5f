//! Zips a function directory the way Lambda expects: paths relative to the directory,
//! executable bits and symbolic links kept.

use std::io::{Cursor, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;
use zip::write::SimpleFileOptions;

/// Zips `(name, contents, executable)` entries.
pub fn zip_files(files: &[(&str, &[u8], bool)]) -> anyhow::Result<Vec<u8>> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, contents, executable) in files {
        let mode = if *executable { 0o755 } else { 0o644 };
        zip.start_file(*name, SimpleFileOptions::default().unix_permissions(mode))?;
        zip.write_all(contents)?;
    }
    Ok(zip.finish()?.into_inner())
}

/// Zips everything below `dir`.
pub fn zip_dir(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&current)
            .with_context(|| format!("could not read {}", current.display()))?
            .collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let name = path.strip_prefix(dir)?.to_string_lossy().into_owned();
            let meta = std::fs::symlink_metadata(&path)?;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path)?;
                zip.add_symlink(name, target.to_string_lossy(), SimpleFileOptions::default())?;
            } else if meta.is_dir() {
                zip.add_directory(
                    format!("{name}/"),
                    SimpleFileOptions::default().unix_permissions(0o755),
                )?;
                stack.push(path);
            } else {
                let mode = meta.permissions().mode() & 0o777;
                zip.start_file(name, SimpleFileOptions::default().unix_permissions(mode))?;
                zip.write_all(&std::fs::read(&path)?)?;
            }
        }
    }
    Ok(zip.finish()?.into_inner())
}
