//! Writing a small file so that a crash leaves either the old file or the whole new
//! one: a temporary file beside it, fsynced, renamed over it, and the directory
//! fsynced so that the rename itself is durable. Used for `MANIFEST` and `permit.key`.

use std::{fs::File, io::Write, path::Path};

/// Replaces `path` with `bytes`. `mode` (Unix permissions) applies to the new file,
/// e.g. `0o600` for a secret; `None`: the process's default.
pub fn write(path: &Path, bytes: &[u8], mode: Option<u32>) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!("{name}.tmp"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if let Some(mode) = mode {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_the_file_whole_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        super::write(&path, b"one", None).expect("write");
        super::write(&path, b"two", Some(0o600)).expect("replace");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        assert!(!dir.path().join("f.tmp").exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
