//! Creating the small secret files the runtime makes on first start (the template key, the
//! local API keys), and replacing the small state files it keeps (the subject locks), so that a
//! crash or power loss at any moment leaves either no file (the old one) or the whole one: an
//! empty or missing key file would stop every later start, and a template key lost after
//! templates were written with it would make them unreadable.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Create `path` holding `text`, readable by its owner only (on Unix), atomically and durably:
/// written to a temporary file in the same directory and synced, linked into place (failing with
/// [`io::ErrorKind::AlreadyExists`] if `path` exists, never replacing it), then the directory
/// synced so the new entry survives a power loss.
pub fn create(path: &Path, text: &str) -> io::Result<()> {
    let (dir, temp) = temp_beside(path)?;
    let written = write_synced(&temp, text).and_then(|()| std::fs::hard_link(&temp, path));
    let removed = std::fs::remove_file(&temp);
    written?;
    removed?;
    sync_dir(&dir)
}

/// Replace `path` with `text`, readable by its owner only (on Unix), atomically and durably:
/// written to a temporary file in the same directory and synced, renamed over `path`, then the
/// directory synced. A crash at any moment leaves the old file or the new one, whole.
pub fn replace(path: &Path, text: &str) -> io::Result<()> {
    let (dir, temp) = temp_beside(path)?;
    let written = write_synced(&temp, text).and_then(|()| std::fs::rename(&temp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written?;
    sync_dir(&dir)
}

/// `path`'s directory, and the temporary file in it that [`create`] and [`replace`] write
/// `path`'s text to first: hidden, named after `path` and this process. A file a crash of the
/// same process id left there is stale and is removed first.
fn temp_beside(path: &Path) -> io::Result<(PathBuf, PathBuf)> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".tmp-{}", std::process::id()));
    let temp = dir.join(temp_name);
    match std::fs::remove_file(&temp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok((dir, temp)),
    }
}

/// `t` as the state files record times: milliseconds since the Unix epoch (0 before it).
pub(crate) fn epoch_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Create directory `path` (and missing parents) readable by its owner only (on Unix): the data
/// directory holds the templates, the template key and the API keys. An existing directory is
/// left as it is (a mounted volume's permissions are the platform's to set).
pub fn create_dir(path: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(path)
}

/// Make the file at `path` readable by its owner only (on Unix): created empty with mode 0600
/// when missing (for a database that initialises an empty file), narrowed to 0600 when it
/// grants anything to group or others.
pub fn restrict(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)?;
        let mode = file.metadata()?.permissions().mode();
        if mode & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(mode & 0o700))?;
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn write_synced(path: &Path, text: &str) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `path` holds `text`, owner-only, alone in its directory (no temporary file left).
    fn alone_owner_only(path: &Path, text: &str) {
        assert_eq!(std::fs::read_to_string(path).unwrap(), text);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [path.file_name().unwrap()], "no temporary file left");
    }

    #[test]
    fn creates_the_whole_file_owner_only_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("template.key");
        create(&path, "secret\n").unwrap();
        alone_owner_only(&path, "secret\n");
    }

    #[test]
    fn replaces_the_whole_file_owner_only_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lockouts.json");
        replace(&path, "first").unwrap();
        replace(&path, "second, longer").unwrap();
        alone_owner_only(&path, "second, longer");
        // A directory in the file's place: refused, and no temporary file left either.
        let taken = dir.path().join("taken");
        std::fs::create_dir(&taken).unwrap();
        assert!(replace(&taken, "x").is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[cfg(unix)]
    #[test]
    fn data_directory_and_database_file_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a/data");
        create_dir(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
        // A file made before (or by a looser umask) is narrowed, its content kept.
        let db = data.join("templates.redb");
        std::fs::write(&db, "pages").unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        restrict(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        assert_eq!(std::fs::read_to_string(&db).unwrap(), "pages");
        // A missing one is created empty and owner-only.
        let fresh = data.join("new.redb");
        restrict(&fresh).unwrap();
        assert_eq!(
            (mode(&fresh), std::fs::metadata(&fresh).unwrap().len()),
            (0o600, 0)
        );
        // An existing directory keeps the permissions it was given.
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o750)).unwrap();
        create_dir(&data).unwrap();
        assert_eq!(mode(&data), 0o750);
    }

    #[test]
    fn never_replaces_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api-keys");
        std::fs::write(&path, "first").unwrap();
        let e = create(&path, "second").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_stale_temporary_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("template.key");
        let stale = dir
            .path()
            .join(format!(".template.key.tmp-{}", std::process::id()));
        std::fs::write(&stale, "half").unwrap();
        create(&path, "whole").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "whole");
        assert!(!stale.exists());
    }
}
