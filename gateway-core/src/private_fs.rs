//! Owner-only files and folders: the data dir holds chat history, journals and the admin
//! token, so it is `0700` and its files `0600` whatever the umask says.

use std::io;
use std::path::Path;

/// Creates `dir` (and its parents) and makes `dir` itself owner-only (`0700`), also when it
/// already existed with wider permissions.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
        if mode != 0o700 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    Ok(())
}

/// Creates `file` empty with mode `0600` when it does not exist, else narrows it to `0600`.
/// Call before a library (SQLite) creates the file with the umask's mode: SQLite gives its
/// `-wal` and `-shm` files the mode of the database file.
pub fn ensure_private_file(file: &Path) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(false).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    drop(options.open(file)?);
    restrict_file(file)
}

/// Narrows an existing file to `0600` (no-op where there are no Unix permissions).
pub fn restrict_file(file: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(file)?.permissions().mode() & 0o777;
        if mode != 0o600 {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    #[cfg(not(unix))]
    let _ = file;
    Ok(())
}
