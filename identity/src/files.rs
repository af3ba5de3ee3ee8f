//! Secret files: written atomically with mode 0600, and refused when group- or
//! world-readable, because a key readable by others is already a leaked key.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::Error;

fn file_err(path: &Path, message: impl Into<String>) -> Error {
    Error::File {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Writes `contents` to `path` with mode 0600, through a temp file and a rename so a
/// crash never leaves a half-written key.
pub fn write_secret(path: &Path, contents: &[u8]) -> Result<(), Error> {
    write_with_mode(path, contents, 0o600)
}

/// Writes a non-secret file (certificates, configs) atomically with mode 0644.
pub fn write_public(path: &Path, contents: &[u8]) -> Result<(), Error> {
    write_with_mode(path, contents, 0o644)
}

fn write_with_mode(path: &Path, contents: &[u8], mode: u32) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| file_err(dir, e.to_string()))?;
    let file_name = path
        .file_name()
        .ok_or_else(|| file_err(path, "not a file path"))?
        .to_string_lossy();
    let tmp = dir.join(format!(".{file_name}.tmp"));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| file_err(&tmp, e.to_string()))?;
    // The mode given to open() is filtered by the umask; set it explicitly.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| file_err(&tmp, e.to_string()))?;
    f.write_all(contents)
        .and_then(|_| f.sync_all())
        .map_err(|e| file_err(&tmp, e.to_string()))?;
    fs::rename(&tmp, path).map_err(|e| file_err(path, e.to_string()))
}

/// Reads a key file, refusing one that group or others can read.
pub fn read_secret(path: &Path) -> Result<String, Error> {
    let meta = fs::metadata(path).map_err(|e| file_err(path, e.to_string()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(file_err(
            path,
            format!(
                "key file is readable by group or others (mode {mode:o}); run: chmod 600 {}",
                path.display()
            ),
        ));
    }
    fs::read_to_string(path).map_err(|e| file_err(path, e.to_string()))
}

/// Creates `path` (and its parents) and makes it owner-only (0700), also when it
/// existed with a looser mode: what lives in it (keys, cached manifests with Secrets)
/// is for this process's user alone.
pub fn private_dir(path: &Path) -> Result<(), Error> {
    fs::create_dir_all(path).map_err(|e| file_err(path, e.to_string()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
        .map_err(|e| file_err(path, e.to_string()))
}

/// Makes an existing or new file owner-only (0600) without touching its contents.
pub fn private_file(path: &Path) -> Result<(), Error> {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .and_then(|f| f.set_permissions(fs::Permissions::from_mode(0o600)))
        .map_err(|e| file_err(path, e.to_string()))
}

pub fn read_public(path: &Path) -> Result<String, Error> {
    fs::read_to_string(path).map_err(|e| file_err(path, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_written_0600_and_loose_ones_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("k.pem");
        write_secret(&p, b"secret").expect("write");
        let mode = fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_secret(&p).expect("read"), "secret");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = read_secret(&p).expect_err("refused");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn private_dirs_and_files_are_owner_only_even_when_they_existed_looser() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().join("state");
        fs::create_dir(&d).expect("mkdir");
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).expect("chmod");
        private_dir(&d).expect("private dir");
        let mode = |p: &Path| fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&d), 0o700);
        let f = d.join("state.redb");
        fs::write(&f, b"data").expect("write");
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).expect("chmod");
        private_file(&f).expect("private file");
        assert_eq!(mode(&f), 0o600);
        assert_eq!(fs::read(&f).expect("read"), b"data", "contents untouched");
    }
}
