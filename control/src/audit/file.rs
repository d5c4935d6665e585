//! The audit log's file: append and fsync, rotation by size, reading
//! back newest first across the rotated files.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use super::{AuditQuery, AuditRecord};

/// The live file and its rotation.
pub(super) struct FileSink {
    pub(super) path: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: Option<File>,
    size: u64,
}

fn dir_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn ends_with_newline(path: &Path) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path)?;
    f.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    f.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

/// `audit.jsonl.N`.
fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl FileSink {
    pub(super) fn open(path: &Path, max_bytes: u64, keep: usize) -> std::io::Result<FileSink> {
        let mut sink = FileSink {
            path: path.to_path_buf(),
            max_bytes,
            keep,
            file: None,
            size: 0,
        };
        sink.reopen()?;
        Ok(sink)
    }

    fn reopen(&mut self) -> std::io::Result<()> {
        let existed = self.path.exists();
        let mut opts = OpenOptions::new();
        opts.create(true).append(true);
        // Names and addresses of callers: not for every local user.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o640);
        let mut f = opts.open(&self.path)?;
        self.size = f.metadata()?.len();
        if self.size > 0 && !ends_with_newline(&self.path)? {
            // A line torn by a crash mid-write: end it, so the next line
            // stands on its own (the torn one is skipped when read).
            f.write_all(b"\n")?;
            f.sync_data()?;
            self.size += 1;
        }
        if !existed {
            File::open(dir_of(&self.path))?.sync_all()?;
        }
        self.file = Some(f);
        Ok(())
    }

    /// Appends `line` (with its newline) and fsyncs; rotates first when
    /// the line would take the file over `max_bytes`.
    pub(super) fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        if self.file.is_none() {
            self.reopen()?;
        }
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("audit log not open"))?;
        let written = f.write_all(line).and_then(|_| f.sync_data());
        if written.is_err() {
            // Reopen next time: the size may be off after a partial write.
            self.file = None;
        }
        written?;
        self.size += line.len() as u64;
        Ok(())
    }

    /// `.N-1` -> `.N`, ..., live -> `.1`; the oldest beyond `keep` is
    /// replaced. Each rename is atomic; the directory is fsynced after.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        for n in (1..self.keep).rev() {
            match std::fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(&self.path, rotated(&self.path, 1))?;
        File::open(dir_of(&self.path))?.sync_all()?;
        self.reopen()
    }

    /// The live file, then `.1`, `.2`, ...: newest first.
    pub(super) fn files(&self) -> Vec<PathBuf> {
        std::iter::once(self.path.clone())
            .chain((1..=self.keep).map(|n| rotated(&self.path, n)))
            .collect()
    }
}

/// Reads `files` (newest first) for `q`: records newest first. A line that
/// does not parse (one torn by a crash mid-write) is skipped.
pub(super) fn read_files(files: &[PathBuf], q: &AuditQuery) -> std::io::Result<Vec<AuditRecord>> {
    let mut out = Vec::new();
    for path in files {
        let f = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let mut lines = Vec::new();
        for line in BufReader::new(f).lines() {
            lines.push(line?);
        }
        for line in lines.iter().rev() {
            let Ok(r) = serde_json::from_str::<AuditRecord>(line) else {
                continue;
            };
            if q.too_old(&r) {
                return Ok(out);
            }
            if q.wants(&r) {
                out.push(r);
                if out.len() >= q.limit {
                    return Ok(out);
                }
            }
        }
    }
    Ok(out)
}
