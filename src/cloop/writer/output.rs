//! Output files: buffered writes that know their offset, temporary names
//! renamed into place only on success, and same-file checks.
//!
//! A regular output file is created as `.NAME.tmp.PID` in the directory of
//! NAME (the same filesystem, so the final `rename` is atomic) and renamed
//! over NAME at the very end. On any error the temporary file is removed
//! ([`Staged`]'s `Drop`), so NAME is either its old self or a complete
//! image, never a truncated one. A symlink as NAME is followed, so the image
//! replaces the file it points to, as writing through it would. Block
//! devices are written in place; pipes, character devices and stdout are
//! streams that cannot seek.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::Error;

/// Writes are collected up to this size: blocks can be as small as 512 bytes.
const BUFFER: usize = 1 << 20;

/// A file identity: device and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    /// The file a path names, following symlinks; `None` if it does not exist.
    pub fn of_path(path: &Path) -> Option<FileId> {
        fs::metadata(path).ok().map(|m| FileId { dev: m.dev(), ino: m.ino() })
    }

    pub fn of_fd(fd: impl AsFd) -> Option<FileId> {
        let st = rustix::fs::fstat(fd).ok()?;
        Some(FileId { dev: st.st_dev, ino: st.st_ino })
    }
}

/// A file written through a buffer, tracking the offset for messages.
pub struct OutFile {
    file: File,
    name: String,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    flushed: u64,
}

impl OutFile {
    pub fn new(file: File, name: String) -> Self {
        Self { file, name, buf: Vec::new(), flushed: 0 }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        if self.buf.len() + data.len() > BUFFER {
            self.flush()?;
        }
        if data.len() >= BUFFER {
            self.write_through(data)
        } else {
            if self.buf.capacity() == 0 {
                self.buf.reserve_exact(BUFFER);
            }
            self.buf.extend_from_slice(data);
            Ok(())
        }
    }

    pub fn flush(&mut self) -> Result<(), Error> {
        let buf = std::mem::take(&mut self.buf);
        let result = self.write_through(&buf);
        self.buf = buf;
        self.buf.clear();
        result
    }

    fn write_through(&mut self, data: &[u8]) -> Result<(), Error> {
        use std::io::Write;
        let mut done = 0;
        while done < data.len() {
            match self.file.write(&data[done..]) {
                Ok(0) => return Err(self.write_error(done, ErrorKind::WriteZero.into())),
                Ok(n) => done += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(self.write_error(done, e)),
            }
        }
        self.flushed += data.len() as u64;
        Ok(())
    }

    fn write_error(&self, done: usize, source: std::io::Error) -> Error {
        Error::Write { path: self.name.clone(), offset: self.flushed + done as u64, source }
    }

    /// Writes at an absolute offset of a seekable file (after a flush).
    pub fn write_at(&mut self, data: &[u8], offset: u64) -> Result<(), Error> {
        self.flush()?;
        self.file.write_all_at(data, offset).map_err(|source| Error::Write {
            path: self.name.clone(),
            offset,
            source,
        })
    }

    /// A `Write` that stores at increasing offsets from `offset` (after a
    /// flush), for serializing the index into its reserved place.
    pub fn writer_at(&mut self, offset: u64) -> Result<AtWriter<'_>, Error> {
        self.flush()?;
        Ok(AtWriter { out: self, offset })
    }

    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), Error> {
        self.file.read_exact_at(buf, offset).map_err(|source| Error::Read {
            path: self.name.clone(),
            offset,
            source,
        })
    }

    /// Appends `len` bytes of `src` from its start.
    pub fn copy_from(&mut self, src: &OutFile, len: u64) -> Result<(), Error> {
        self.flush()?;
        let mut chunk = vec![0u8; BUFFER];
        let mut offset = 0u64;
        while offset < len {
            let n = (len - offset).min(BUFFER as u64) as usize;
            src.read_at(&mut chunk[..n], offset)?;
            self.write_through(&chunk[..n])?;
            offset += n as u64;
        }
        Ok(())
    }
}

/// See [`OutFile::writer_at`]; [`AtWriter::offset`] tells where a failed
/// write was going.
pub struct AtWriter<'a> {
    out: &'a OutFile,
    offset: u64,
}

impl AtWriter<'_> {
    pub fn error(&self, source: std::io::Error) -> Error {
        Error::Write { path: self.out.name.clone(), offset: self.offset, source }
    }
}

impl std::io::Write for AtWriter<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.out.file.write_all_at(data, self.offset)?;
        self.offset += data.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A file created under a temporary name and renamed over its target on
/// [`commit`](Self::commit); removed if dropped before that.
pub struct Staged {
    temp: PathBuf,
    /// `None` for a scratch file, which is never kept.
    target: Option<PathBuf>,
    /// Whether `temp` still exists and is ours to remove.
    armed: bool,
}

impl Staged {
    /// Creates `.NAME.tmp.PID` next to `target` (after following symlinks).
    pub fn create(target: &Path, what: &'static str) -> Result<(Staged, File), Error> {
        let target = resolve_symlink(target);
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let temp = target.with_file_name(format!(".{name}.tmp.{}", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|source| Error::Open { what, path: temp.display().to_string(), source })?;
        Ok((Staged { temp, target: Some(target), armed: true }, file))
    }

    /// A spool file that is removed at the end whatever happens.
    pub fn scratch(path: &Path, what: &'static str) -> Result<(Staged, File), Error> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|source| Error::Open { what, path: path.display().to_string(), source })?;
        Ok((Staged { temp: path.to_path_buf(), target: None, armed: true }, file))
    }

    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    pub fn commit(mut self) -> Result<(), Error> {
        let Some(target) = self.target.take() else { return Ok(()) };
        match fs::rename(&self.temp, &target) {
            Ok(()) => {
                self.armed = false;
                Ok(())
            }
            Err(source) => Err(Error::Rename {
                from: self.temp.display().to_string(),
                to: target.display().to_string(),
                source,
            }),
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

fn resolve_symlink(path: &Path) -> PathBuf {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    }
}

/// Where an output goes once opened.
pub enum Opened {
    /// A regular file under a temporary name.
    Staged(Staged, OutFile),
    /// An existing block device, written in place from offset 0.
    Device(OutFile),
    /// Not seekable: stdout, a pipe, a character device.
    Stream(OutFile),
}

impl Opened {
    /// Opens the output `path`, or stdout for `None`.
    pub fn open(path: Option<&Path>, what: &'static str) -> Result<Opened, Error> {
        let Some(path) = path else {
            let fd = rustix::io::dup(rustix::stdio::stdout()).map_err(|e| Error::Open {
                what,
                path: "standard output".into(),
                source: e.into(),
            })?;
            return Ok(Opened::Stream(OutFile::new(File::from(fd), "standard output".into())));
        };
        let name = path.display().to_string();
        let kind = fs::metadata(path).ok().map(|m| m.file_type());
        match kind {
            Some(t) if t.is_dir() => {
                Err(Error::Open { what, path: name, source: ErrorKind::IsADirectory.into() })
            }
            Some(t) if t.is_block_device() || t.is_char_device() || t.is_fifo() || t.is_socket() => {
                let file = OpenOptions::new()
                    .read(t.is_block_device())
                    .write(true)
                    .open(path)
                    .map_err(|source| Error::Open { what, path: name.clone(), source })?;
                let out = OutFile::new(file, name);
                Ok(if t.is_block_device() { Opened::Device(out) } else { Opened::Stream(out) })
            }
            _ => {
                let (staged, file) = Staged::create(path, what)?;
                // Errors name the file the user asked for and the one written.
                let name = format!("{name} (temporary file {})", staged.temp_path().display());
                Ok(Opened::Staged(staged, OutFile::new(file, name)))
            }
        }
    }

    pub fn seekable(&self) -> bool {
        !matches!(self, Opened::Stream(_))
    }

    pub fn out(&mut self) -> &mut OutFile {
        match self {
            Opened::Staged(_, out) | Opened::Device(out) | Opened::Stream(out) => out,
        }
    }

    /// Flushes and, for a staged file, renames it into place.
    pub fn finish(mut self) -> Result<(), Error> {
        self.out().flush()?;
        match self {
            Opened::Staged(staged, _) => staged.commit(),
            Opened::Device(_) | Opened::Stream(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_file_appears_only_on_commit_and_vanishes_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("img");
        let (staged, mut file) = Staged::create(&target, "output").unwrap();
        std::io::Write::write_all(&mut file, b"abc").unwrap();
        assert!(!target.exists());
        let temp = staged.temp_path().to_path_buf();
        assert!(temp.file_name().unwrap().to_string_lossy().starts_with(".img.tmp."));
        staged.commit().unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"abc");
        assert!(!temp.exists());

        let (staged, _file) = Staged::create(&target, "output").unwrap();
        let temp = staged.temp_path().to_path_buf();
        drop(staged);
        assert!(!temp.exists());
        assert_eq!(fs::read(&target).unwrap(), b"abc");
    }

    #[test]
    fn symlinked_output_replaces_the_file_it_points_to() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs::write(&real, b"old").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let (staged, mut file) = Staged::create(&link, "output").unwrap();
        std::io::Write::write_all(&mut file, b"new").unwrap();
        staged.commit().unwrap();
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(fs::read(&real).unwrap(), b"new");
    }

    #[test]
    fn write_errors_name_the_file_and_offset() {
        let file = OpenOptions::new().write(true).open("/dev/full").unwrap();
        let mut out = OutFile::new(file, "/dev/full".into());
        out.write(&[1u8; 100]).unwrap();
        let err = out.flush().unwrap_err().to_string();
        assert!(err.contains("/dev/full") && err.contains("offset 0"), "{err}");
    }
}
