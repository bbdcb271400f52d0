//! A file tree to pack into an initramfs (newc cpio), or to lay out in a host directory:
//! binaries come with the shared libraries `ldd` names, so they run without a distribution
//! around them. The VM tier's guest image and the nested test host are both built with it.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Cursor, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// Where an entry's bytes come from.
#[derive(Debug, Clone)]
enum Content {
    Dir,
    Bytes(Vec<u8>),
    /// A host file, read when the archive is written (large files are not held in memory).
    File(PathBuf),
    /// A symbolic link to this target.
    Symlink(String),
}

#[derive(Debug, Clone)]
struct Entry {
    mode: u32,
    content: Content,
}

/// Errors assembling an initramfs; each names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    /// A host file could not be read.
    #[error("reading {}: {}", .0.display(), .1)]
    Read(PathBuf, #[source] io::Error),
    /// `ldd` failed on a binary.
    #[error("ldd {}: {}", .0.display(), .1)]
    Ldd(PathBuf, String),
    /// Writing the archive or the tree failed.
    #[error("writing {}: {}", .0.display(), .1)]
    Write(PathBuf, #[source] io::Error),
    /// A file is too large for a newc archive (4 GiB).
    #[error("{} is larger than a cpio entry can hold", .0.display())]
    TooLarge(PathBuf),
}

/// Paths inside the archive are relative, without a leading `/`.
fn key(dest: &str) -> String {
    dest.trim_start_matches('/')
        .trim_end_matches('/')
        .to_string()
}

/// A set of files, directories and their modes, keyed by path inside the archive.
#[derive(Debug, Default, Clone)]
pub struct Initramfs {
    entries: BTreeMap<String, Entry>,
}

impl Initramfs {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `dest` and its missing parents as directories.
    pub fn dir(&mut self, dest: &str) -> &mut Self {
        let k = key(dest);
        let mut parent = String::new();
        for part in k.split('/').filter(|p| !p.is_empty()) {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            self.entries.entry(parent.clone()).or_insert(Entry {
                mode: 0o040755,
                content: Content::Dir,
            });
        }
        self
    }

    fn put(&mut self, dest: &str, mode: u32, content: Content) {
        let k = key(dest);
        if let Some((parent, _)) = k.rsplit_once('/') {
            self.dir(parent);
        }
        self.entries.insert(
            k,
            Entry {
                mode: 0o100000 | (mode & 0o7777),
                content,
            },
        );
    }

    /// Adds `bytes` as the file `dest`.
    pub fn bytes(&mut self, dest: &str, bytes: impl Into<Vec<u8>>, mode: u32) -> &mut Self {
        self.put(dest, mode, Content::Bytes(bytes.into()));
        self
    }

    /// Adds the host file `src` as `dest` (read at packing time).
    pub fn file(&mut self, dest: &str, src: &Path, mode: u32) -> &mut Self {
        self.put(dest, mode, Content::File(src.to_path_buf()));
        self
    }

    /// Adds a symbolic link `dest` pointing at `target`.
    pub fn symlink(&mut self, dest: &str, target: &str) -> &mut Self {
        let k = key(dest);
        if let Some((parent, _)) = k.rsplit_once('/') {
            self.dir(parent);
        }
        self.entries.insert(
            k,
            Entry {
                mode: 0o120777,
                content: Content::Symlink(target.to_string()),
            },
        );
        self
    }

    /// Adds the host directory tree `src` (directories, regular files with their modes,
    /// symbolic links) under `dest`. Other file types are refused by name.
    pub fn tree(&mut self, dest: &str, src: &Path) -> Result<&mut Self, InitramfsError> {
        use std::os::unix::fs::PermissionsExt;
        self.dir(dest);
        let rd = fs::read_dir(src).map_err(|e| InitramfsError::Read(src.to_path_buf(), e))?;
        for entry in rd {
            let entry = entry.map_err(|e| InitramfsError::Read(src.to_path_buf(), e))?;
            let path = entry.path();
            let meta =
                fs::symlink_metadata(&path).map_err(|e| InitramfsError::Read(path.clone(), e))?;
            let name = entry.file_name();
            let sub = format!("{}/{}", key(dest), name.to_string_lossy());
            let ft = meta.file_type();
            if ft.is_symlink() {
                let target =
                    fs::read_link(&path).map_err(|e| InitramfsError::Read(path.clone(), e))?;
                self.symlink(&sub, &target.to_string_lossy());
            } else if ft.is_dir() {
                self.tree(&sub, &path)?;
            } else if ft.is_file() {
                self.file(&sub, &path, meta.permissions().mode());
            } else {
                return Err(InitramfsError::Read(
                    path,
                    io::Error::new(
                        io::ErrorKind::Unsupported,
                        "not a file, directory or symlink",
                    ),
                ));
            }
        }
        Ok(self)
    }

    /// Adds the executable `src` as `dest` and every shared library `ldd` lists for it at
    /// the same absolute path (the loader included), so it runs inside the archive.
    pub fn binary(&mut self, dest: &str, src: &Path) -> Result<&mut Self, InitramfsError> {
        self.put(dest, 0o755, Content::File(src.to_path_buf()));
        for lib in shared_libraries(src)? {
            let real = fs::canonicalize(&lib).map_err(|e| InitramfsError::Read(lib.clone(), e))?;
            self.put(&lib.to_string_lossy(), 0o755, Content::File(real));
        }
        Ok(self)
    }

    /// Like [`Initramfs::binary`], but the copy of `src` has its debug info stripped
    /// (`objcopy --strip-debug` into `scratch`): a smaller archive boots faster in L1.
    /// Falls back to the unstripped file when objcopy is missing.
    pub fn binary_stripped(
        &mut self,
        dest: &str,
        src: &Path,
        scratch: &Path,
    ) -> Result<&mut Self, InitramfsError> {
        self.binary(dest, src)?;
        let name = src
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        let out = scratch.join(name).with_extension("stripped");
        let stripped = Command::new("objcopy")
            .arg("--strip-debug")
            .arg(src)
            .arg(&out)
            .status()
            .is_ok_and(|s| s.success());
        if stripped {
            self.put(dest, 0o755, Content::File(out));
        }
        Ok(self)
    }

    /// Whether `dest` is in the archive.
    pub fn contains(&self, dest: &str) -> bool {
        self.entries.contains_key(&key(dest))
    }

    fn read(content: &Content) -> Result<Vec<u8>, InitramfsError> {
        match content {
            Content::Dir => Ok(Vec::new()),
            Content::Bytes(b) => Ok(b.clone()),
            Content::File(p) => fs::read(p).map_err(|e| InitramfsError::Read(p.clone(), e)),
            Content::Symlink(t) => Ok(t.as_bytes().to_vec()),
        }
    }

    /// A hash of every path, mode and content: the cache key of the packed archive.
    pub fn content_hash(&self) -> Result<String, InitramfsError> {
        let mut h = Sha256::new();
        for (path, e) in &self.entries {
            let data = Self::read(&e.content)?;
            h.update(path.as_bytes());
            h.update([0]);
            h.update(e.mode.to_le_bytes());
            h.update((data.len() as u64).to_le_bytes());
            h.update(&data);
        }
        Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Writes the archive as a newc cpio archive (what the kernel unpacks as initramfs).
    pub fn write_cpio(&self, out: &Path) -> Result<(), InitramfsError> {
        let werr = |e| InitramfsError::Write(out.to_path_buf(), e);
        let file = fs::File::create(out).map_err(werr)?;
        let mut w = io::BufWriter::new(file);
        for (ino, (path, e)) in self.entries.iter().enumerate() {
            let data = Self::read(&e.content)?;
            let size =
                u32::try_from(data.len()).map_err(|_| InitramfsError::TooLarge(path.into()))?;
            let mut fw = cpio::NewcBuilder::new(path)
                .ino(ino as u32 + 1)
                .mode(e.mode)
                .nlink(if matches!(e.content, Content::Dir) {
                    2
                } else {
                    1
                })
                .write(&mut w, size);
            io::copy(&mut Cursor::new(data), &mut fw).map_err(werr)?;
            fw.finish().map_err(werr)?;
        }
        cpio::newc::trailer(&mut w).map_err(werr)?;
        w.flush().map_err(werr)
    }

    /// Lays the archive out under `root` (for running scenarios directly on a host).
    pub fn write_tree(&self, root: &Path) -> Result<(), InitramfsError> {
        use std::os::unix::fs::PermissionsExt;
        for (path, e) in &self.entries {
            let dest = root.join(path);
            let werr = |err| InitramfsError::Write(dest.clone(), err);
            match &e.content {
                Content::Dir => fs::create_dir_all(&dest).map_err(werr)?,
                Content::Symlink(target) => {
                    if let Some(p) = dest.parent() {
                        fs::create_dir_all(p).map_err(werr)?;
                    }
                    std::os::unix::fs::symlink(target, &dest).map_err(werr)?;
                }
                c => {
                    if let Some(p) = dest.parent() {
                        fs::create_dir_all(p).map_err(werr)?;
                    }
                    fs::write(&dest, Self::read(c)?).map_err(werr)?;
                    fs::set_permissions(&dest, fs::Permissions::from_mode(e.mode & 0o7777))
                        .map_err(werr)?;
                }
            }
        }
        Ok(())
    }
}

/// The shared libraries `ldd` lists for `bin` (none for a static binary).
pub fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>, InitramfsError> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .map_err(|e| InitramfsError::Ldd(bin.into(), e.to_string()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // "not a dynamic executable": nothing to add.
        return if text.contains("not a dynamic")
            || String::from_utf8_lossy(&out.stderr).contains("not a dynamic")
        {
            Ok(Vec::new())
        } else {
            Err(InitramfsError::Ldd(
                bin.into(),
                String::from_utf8_lossy(&out.stderr).into(),
            ))
        };
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        if line.contains("not found") {
            return Err(InitramfsError::Ldd(
                bin.into(),
                format!("missing library: {}", line.trim()),
            ));
        }
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        if let Some(p) = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(PathBuf::from)
        {
            libs.push(p);
        }
    }
    Ok(libs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_holds_parents_files_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Initramfs::new();
        p.bytes("/a/b/c.txt", "hello", 0o644).dir("empty");
        let out = dir.path().join("x.cpio");
        p.write_cpio(&out).unwrap();
        let data = fs::read(&out).unwrap();
        let mut names = Vec::new();
        let mut rest: &[u8] = &data;
        loop {
            let r = cpio::NewcReader::new(rest).unwrap();
            let name = r.entry().name().to_string();
            let mode = r.entry().mode();
            if r.entry().is_trailer() {
                break;
            }
            names.push((name, mode));
            let mut content = Vec::new();
            let mut r = r;
            io::Read::read_to_end(&mut r, &mut content).unwrap();
            if names.last().unwrap().0 == "a/b/c.txt" {
                assert_eq!(content, b"hello");
            }
            rest = r.finish().unwrap();
        }
        assert_eq!(
            names,
            vec![
                ("a".into(), 0o040755),
                ("a/b".into(), 0o040755),
                ("a/b/c.txt".into(), 0o100644),
                ("empty".into(), 0o040755)
            ]
        );
    }

    #[test]
    fn tree_keeps_symlinks_and_modes() {
        use std::os::unix::fs::PermissionsExt;
        let src = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("bin")).unwrap();
        fs::write(src.path().join("bin/busybox"), b"bb").unwrap();
        fs::set_permissions(
            src.path().join("bin/busybox"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("busybox", src.path().join("bin/sh")).unwrap();
        let mut p = Initramfs::new();
        p.tree("/rootfs", src.path()).unwrap();
        let out = tempfile::tempdir().unwrap();
        p.write_tree(out.path()).unwrap();
        let sh = out.path().join("rootfs/bin/sh");
        assert_eq!(fs::read_link(&sh).unwrap(), Path::new("busybox"));
        let mode = fs::metadata(out.path().join("rootfs/bin/busybox"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        let cpio = out.path().join("x.cpio");
        p.write_cpio(&cpio).unwrap();
        let data = fs::read(&cpio).unwrap();
        let mut rest: &[u8] = &data;
        let mut found = false;
        loop {
            let mut r = cpio::NewcReader::new(rest).unwrap();
            if r.entry().is_trailer() {
                break;
            }
            let (name, mode) = (r.entry().name().to_string(), r.entry().mode());
            let mut content = Vec::new();
            io::Read::read_to_end(&mut r, &mut content).unwrap();
            if name == "rootfs/bin/sh" {
                assert_eq!((mode, content.as_slice()), (0o120777, &b"busybox"[..]));
                found = true;
            }
            rest = r.finish().unwrap();
        }
        assert!(found);
    }

    #[test]
    fn hash_changes_with_content_and_mode() {
        let mut p = Initramfs::new();
        p.bytes("x", "1", 0o644);
        let h1 = p.content_hash().unwrap();
        p.bytes("x", "1", 0o755);
        let h2 = p.content_hash().unwrap();
        p.bytes("x", "2", 0o755);
        let h3 = p.content_hash().unwrap();
        assert_ne!(h1, h2);
        assert_ne!(h2, h3);
        assert_eq!(h3, p.clone().content_hash().unwrap());
    }

    #[test]
    fn binary_brings_its_libraries() {
        let mut p = Initramfs::new();
        p.binary("bin/ls", Path::new("/bin/ls")).unwrap();
        assert!(p.contains("bin/ls"));
        assert!(
            p.contains("lib64/ld-linux-x86-64.so.2"),
            "{:?}",
            p.entries.keys()
        );
        assert!(p.entries.keys().any(|k| k.ends_with("libc.so.6")));
        let err = Initramfs::new()
            .binary("x", Path::new("/nonexistent/bin"))
            .map(|_| ())
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/bin"), "{err}");
    }
}
