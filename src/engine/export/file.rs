//! The embedded local default: OTLP JSON lines, one ExportTraceServiceRequest per line
//! (the OpenTelemetry Collector file-exporter format).
//!
//! Any number of processes may write the same file (gunicorn workers, a pool's
//! children). Each batch is one line appended with one write while holding an exclusive
//! `flock` on the file, and under that lock the writer checks that the file it holds is
//! still the one at the path: another process may have rotated it. Rotation, done by
//! whichever writer finds the file past `max_bytes`, renames it aside under a unique
//! name (`traces.<UTC time>.<pid>.jsonl`), so no line is ever written into a file that
//! was renamed or deleted, and every line is in exactly one file. The oldest
//! renamed-aside files beyond `keep` are deleted, each one logged.

use super::otlp::{encode_request, resource_attrs};
use super::sink::{Delivered, ExportControl, ExportResult, Exporter};
use crate::engine::diag;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_sdk::trace::SpanData;
use opentelemetry_sdk::Resource;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct FileExporter {
    path: PathBuf,
    max_bytes: u64,
    keep: u64,
    file: Option<File>,
    resource: ResourceAttributesWithSchema,
    openinference: bool,
}

/// An exclusive lock on a file, released when dropped (every writer holds one while it
/// checks, rotates or appends).
struct Locked<'f>(&'f File);

impl<'f> Locked<'f> {
    /// Wait for the lock until `deadline`: a writer that holds it forever (a process
    /// stopped with SIGSTOP) fails our batch, counted, rather than hang the thread.
    fn take(f: &'f File, deadline: Instant) -> Result<Self, String> {
        #[cfg(unix)]
        {
            use std::os::unix::io::AsRawFd;
            let mut wait = Duration::from_micros(50);
            loop {
                // SAFETY: flock on a descriptor we own for the duration of the borrow.
                if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                    break;
                }
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EWOULDBLOCK | libc::EINTR) => {}
                    _ => return Err(format!("cannot lock the trace file: {e}")),
                }
                if Instant::now() + wait >= deadline {
                    return Err(
                        "the trace file stayed locked by another process until the export deadline"
                            .into(),
                    );
                }
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_millis(10));
            }
        }
        #[cfg(not(unix))]
        let _ = deadline;
        Ok(Locked(f))
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        #[cfg(unix)]
        {
            use std::os::unix::io::AsRawFd;
            // SAFETY: unlocks the descriptor locked in `take`, still open (borrowed).
            unsafe {
                libc::flock(self.0.as_raw_fd(), libc::LOCK_UN);
            }
        }
    }
}

/// Whether `f` is still the file at `path` (not renamed aside or deleted since we
/// opened it).
fn is_current(f: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (f.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (f, path);
        true
    }
}

/// `dir/traces.jsonl` → (`traces`, `.jsonl`): rotated files are `traces.<stamp>.jsonl`.
fn stem_and_ext(path: &Path) -> (String, String) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.rfind('.') {
        Some(i) if i > 0 => (name[..i].to_string(), name[i..].to_string()),
        _ => (name, String::new()),
    }
}

/// The renamed-aside files of the trace file at `path`, oldest first (their names sort
/// by time).
pub fn rotated_files(path: &Path) -> Vec<PathBuf> {
    let (stem, ext) = stem_and_ext(path);
    let dir = path.parent().unwrap_or(Path::new("."));
    let prefix = format!("{stem}.");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let n = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            n.len() > prefix.len() + ext.len()
                && n.starts_with(&prefix)
                && n.ends_with(&ext)
                && n[prefix.len()..n.len() - ext.len()]
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_digit())
        })
        .collect();
    found.sort();
    found
}

/// UTC `YYYYMMDDTHHMMSS.ffffffZ` for now: names that sort by time.
fn utc_stamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_micros()
    )
}

impl FileExporter {
    pub fn new(path: PathBuf, max_bytes: u64, keep: u64, resource: &Resource) -> Self {
        FileExporter {
            path,
            max_bytes,
            keep,
            file: None,
            resource: resource_attrs(resource),
            openinference: false,
        }
    }

    /// Write OpenInference's attributes too (`prepare`).
    #[must_use]
    pub fn with_openinference(mut self, on: bool) -> Self {
        self.openinference = on;
        self
    }

    fn open(&mut self) -> Result<(), String> {
        if self.file.is_none() {
            // Traces hold prompts and outputs: a directory we create is the user's
            // alone (0700), and so is a file we create (0600). Existing ones keep their
            // modes: the user chose them.
            if let Some(dir) = self.path.parent() {
                let mut builder = std::fs::DirBuilder::new();
                builder.recursive(true);
                #[cfg(unix)]
                std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
                builder
                    .create(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            let mut options = OpenOptions::new();
            options.create(true).append(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let f = options
                .open(&self.path)
                .map_err(|e| format!("cannot open {}: {e}", self.path.display()))?;
            self.file = Some(f);
        }
        Ok(())
    }

    /// Rename the (locked, current) file aside; the next open starts a new one.
    fn rotate(&self) -> Result<(), String> {
        let (stem, ext) = stem_and_ext(&self.path);
        let aside = self.path.with_file_name(format!(
            "{stem}.{}.{}{ext}",
            utc_stamp(),
            std::process::id()
        ));
        std::fs::rename(&self.path, &aside)
            .map_err(|e| format!("cannot rotate {}: {e}", self.path.display()))
    }

    /// Delete the oldest renamed-aside files beyond `keep`.
    fn prune(&self) {
        let files = rotated_files(&self.path);
        let excess = files
            .len()
            .saturating_sub(usize::try_from(self.keep).unwrap_or(usize::MAX));
        for old in &files[..excess] {
            let size = std::fs::metadata(old).map_or(0, |m| m.len());
            if std::fs::remove_file(old).is_ok() {
                diag::log(
                    diag::WARNING,
                    &format!(
                        "deleted the oldest rotated trace file {} ({size} bytes): more than file_keep={} rotated files",
                        old.display(),
                        self.keep
                    ),
                );
            }
        }
    }

    /// Append `line` to the current file, rotating first if it is full.
    fn append(&mut self, line: &[u8], deadline: Instant) -> Result<(), String> {
        // Each turn either writes, or finds the file renamed aside (by us or another
        // process) and reopens: a few turns are enough unless the directory is being
        // rotated faster than we can open.
        for _ in 0..16 {
            self.open()?;
            let Some(f) = self.file.as_ref() else {
                continue;
            };
            let lock = Locked::take(f, deadline)?;
            if !is_current(f, &self.path) {
                drop(lock);
                self.file = None;
                continue;
            }
            let len = f.metadata().map_or(0, |m| m.len());
            if len > 0 && len >= self.max_bytes {
                let rotated = self.rotate();
                drop(lock);
                self.file = None;
                rotated?;
                self.prune();
                continue;
            }
            let mut w: &File = f;
            let written = w.write_all(line);
            drop(lock);
            if let Err(e) = written {
                self.file = None;
                return Err(format!("cannot write {}: {e}", self.path.display()));
            }
            return Ok(());
        }
        Err(format!(
            "cannot write {}: it keeps being renamed",
            self.path.display()
        ))
    }
}

impl Exporter for FileExporter {
    fn export(&mut self, batch: Vec<SpanData>, ctl: &dyn ExportControl) -> ExportResult {
        let req = encode_request(batch, &self.resource, self.openinference);
        let mut line = serde_json::to_vec(&req).map_err(|e| e.to_string())?;
        line.push(b'\n');
        self.append(&line, ctl.deadline())?;
        Ok(Delivered::All)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_sort_as_time() {
        let s = utc_stamp();
        assert_eq!(s.len(), "20261202T005012.123456Z".len(), "{s}");
        assert!(s.starts_with("20"), "{s}");
    }

    #[test]
    fn rotated_names() {
        let dir = std::env::temp_dir().join(format!("ht-rot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("traces.jsonl");
        for n in [
            "traces.jsonl",
            "traces.20261202T005012.000001Z.7.jsonl",
            "traces.20261201T005012.000001Z.7.jsonl",
            "traces.jsonl.1",
            "other.20261201T005012.000001Z.7.jsonl",
        ] {
            std::fs::write(dir.join(n), b"").unwrap();
        }
        let found: Vec<String> = rotated_files(&path)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            found,
            [
                "traces.20261201T005012.000001Z.7.jsonl",
                "traces.20261202T005012.000001Z.7.jsonl"
            ]
        );
    }
}
