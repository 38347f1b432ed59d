//! The disk spool: request bodies an OTLP collector could not take in time are kept on
//! disk, and sent when it answers again, by this process or the next one with the same
//! destination.
//!
//! - One directory per destination (`<spool_dir>/<hash of endpoint, protocol,
//!   compression and headers, hashed>`), created 0700; a batch is one file, created 0600,
//!   written under a temporary name and renamed into place, so a reader never sees half
//!   of one. Its name says when it was spooled, by which process, and how many spans it
//!   holds: `<unix nanos>-<pid>-<seq>-<spans>.<pb|json>[.gz]`.
//! - Bounded: past `max_bytes` or `max_files` the oldest batches are deleted, and a
//!   batch older than `max_age` is deleted instead of sent. Their spans are counted in
//!   `spool_dropped`, by the process that deleted them.
//! - Several processes may share a directory: a sender claims a batch by renaming it to
//!   `<name>.claim-<pid>` (only one rename succeeds), and gives it back by renaming it
//!   again. A claim whose process no longer exists is given back by the next scan.
//! - The body is the request as it was sent (compressed or not); the headers are the
//!   current configuration's, which hashes to the same directory.

use super::sink::Stats;
use crate::engine::config::SpoolConfig;
use crate::engine::diag;
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// Batches sent from the spool in one turn of the export thread at most, so live spans
/// wait for at most that many requests.
const PER_TURN: usize = 16;
/// How often a process looks for batches other processes spooled, while it exports.
const RESCAN: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A stable name for a destination across processes and builds. The destination
/// includes header values (an API key): SHA-256, so the name reveals nothing of them.
fn destination_name(destination: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, destination.as_bytes());
    digest.as_ref()[..8]
        .iter()
        .fold(String::new(), |mut name, b| {
            let _ = write!(name, "{b:02x}");
            name
        })
}

/// One spooled batch, as its file name describes it.
#[derive(Debug, Clone)]
struct Entry {
    path: PathBuf,
    nanos: u128,
    spans: u64,
    bytes: u64,
    /// The process that claimed it for sending, if one has.
    claimed_by: Option<u32>,
}

fn parse_name(name: &str) -> Option<(u128, u64, Option<u32>)> {
    let (base, claimed_by) = match name.split_once(".claim-") {
        Some((b, pid)) => (b, Some(pid.parse().ok()?)),
        None => (name, None),
    };
    let stem = base.split('.').next()?;
    let mut parts = stem.split('-');
    let nanos = parts.next()?.parse().ok()?;
    let _pid: u32 = parts.next()?.parse().ok()?;
    let _seq: u64 = parts.next()?.parse().ok()?;
    let spans = parts.next()?.parse().ok()?;
    Some((nanos, spans, claimed_by))
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

fn alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: signal 0 only checks that the process exists.
        let r = unsafe { libc::kill(pid, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

/// What became of a batch the spool tried to send.
pub enum Sent {
    /// Delivered; `rejected` of its spans refused by the collector (partial success).
    Delivered { rejected: u64 },
    /// Not now (the collector is still unreachable): kept for later.
    Later,
    /// Refused for good (a 4xx, a TLS failure): deleted and counted.
    Refused(String),
}

pub struct Spool {
    dir: PathBuf,
    cfg: SpoolConfig,
    ext: &'static str,
    pid: u32,
    /// When to look at the directory next; None: nothing known to be waiting.
    next_try: Option<Instant>,
    last_scan: Instant,
    backoff: Duration,
}

impl Spool {
    /// `destination` is everything requests depend on (endpoint, protocol,
    /// compression, headers); `ext` names the body's encoding.
    pub fn new(cfg: &SpoolConfig, destination: &str, ext: &'static str) -> Self {
        let dir = cfg.dir.join(destination_name(destination));
        let now = Instant::now();
        Spool {
            dir,
            cfg: cfg.clone(),
            ext,
            pid: std::process::id(),
            // A new process looks at once for what earlier ones left.
            next_try: Some(now),
            last_scan: now,
            backoff: FIRST_BACKOFF,
        }
    }

    fn create_dir(&self) -> Result<(), String> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(&self.dir)
            .map_err(|e| format!("cannot create the spool {}: {e}", self.dir.display()))
    }

    /// Keep `body` (a request of `spans` spans) for later. Counted in `spooled` by the
    /// caller when this returns Ok.
    pub fn put(&mut self, body: &[u8], spans: u64, stats: &Stats) -> Result<(), String> {
        // Process-wide: two tracers with one destination share the directory.
        static SEQ: AtomicU64 = AtomicU64::new(0);
        self.create_dir()?;
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-{}-{seq}-{spans}.{}", now_nanos(), self.pid, self.ext);
        let tmp = self.dir.join(format!(".tmp-{}-{seq}", self.pid));
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let written = options.open(&tmp).and_then(|mut f| f.write_all(body));
        let placed = written.and_then(|()| std::fs::rename(&tmp, self.dir.join(&name)));
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!(
                "cannot write to the spool {}: {e}",
                self.dir.display()
            ));
        }
        if self.next_try.is_none() {
            self.next_try = Some(Instant::now() + self.backoff);
        }
        self.enforce(stats);
        Ok(())
    }

    fn entries(&self) -> Vec<Entry> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<Entry> = rd
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(rest) = name.strip_prefix(".tmp-") {
                    // Half-written by a process that died while writing: not a batch.
                    let pid = rest.split('-').next().and_then(|p| p.parse().ok());
                    if pid.is_some_and(|p| p != self.pid && !alive(p)) {
                        let _ = std::fs::remove_file(e.path());
                    }
                    return None;
                }
                let (nanos, spans, claimed_by) = parse_name(&name)?;
                let bytes = e.metadata().map_or(0, |m| m.len());
                Some(Entry {
                    path: e.path(),
                    nanos,
                    spans,
                    bytes,
                    claimed_by,
                })
            })
            .collect();
        out.sort_by_key(|e| e.nanos);
        out
    }

    /// Delete a batch, counting its spans as dropped from the spool.
    fn discard(entry: &Entry, stats: &Stats, why: &str) {
        if std::fs::remove_file(&entry.path).is_ok() {
            Stats::add(&stats.spool_dropped, entry.spans);
            diag::warn_limited(
                "spool-dropped",
                &format!(
                    "deleted a spooled batch of {} spans ({why}); counted in spool_dropped",
                    entry.spans
                ),
            );
        }
    }

    /// Give back claims of processes that no longer exist, delete batches past
    /// `max_age`, then the oldest beyond `max_files` or `max_bytes`. Returns the batches
    /// left, oldest first.
    fn enforce(&self, stats: &Stats) -> Vec<Entry> {
        let max_age = self.cfg.max_age.as_nanos();
        let now = now_nanos();
        let mut kept = Vec::new();
        for mut e in self.entries() {
            if let Some(pid) = e.claimed_by {
                if pid == self.pid || alive(pid) {
                    kept.push(e);
                    continue;
                }
                let name = e.path.file_name().unwrap_or_default().to_string_lossy();
                let back = e
                    .path
                    .with_file_name(name.split_once(".claim-").map_or(name.as_ref(), |(b, _)| b));
                if std::fs::rename(&e.path, &back).is_err() {
                    continue;
                }
                e.path = back;
                e.claimed_by = None;
            }
            if now.saturating_sub(e.nanos) > max_age {
                Self::discard(&e, stats, "older than spool_max_age");
            } else {
                kept.push(e);
            }
        }
        let mut files = kept.len() as u64;
        let mut bytes: u64 = kept.iter().map(|e| e.bytes).sum();
        let mut left = Vec::with_capacity(kept.len());
        for e in kept {
            let over = files > self.cfg.max_files || bytes > self.cfg.max_bytes;
            if over && e.claimed_by.is_none() {
                files -= 1;
                bytes = bytes.saturating_sub(e.bytes);
                Self::discard(
                    &e,
                    stats,
                    "the spool is full: spool_max_bytes or spool_max_files",
                );
            } else {
                left.push(e);
            }
        }
        left
    }

    /// A live export was delivered: the collector answers, so send what waits soon
    /// (and look for batches other processes left, now and then).
    pub fn collector_answered(&mut self) {
        let now = Instant::now();
        self.backoff = FIRST_BACKOFF;
        if self.next_try.is_some() || now.duration_since(self.last_scan) >= RESCAN {
            self.next_try = Some(now);
        }
    }

    /// When the export thread should call `drain` next (None: nothing waits).
    pub fn next_try(&self) -> Option<Instant> {
        self.next_try
    }

    /// Send up to `PER_TURN` spooled batches, oldest first, with `send`, until
    /// `deadline`. Stops at the first batch that must wait (kept, retried after a
    /// growing backoff).
    pub fn drain(&mut self, stats: &Stats, deadline: Instant, mut send: impl FnMut(&[u8]) -> Sent) {
        let now = Instant::now();
        if self.next_try.is_none_or(|t| t > now) {
            return;
        }
        self.last_scan = now;
        let waiting: Vec<Entry> = self
            .enforce(stats)
            .into_iter()
            .filter(|e| e.claimed_by.is_none())
            .collect();
        let mut attempts = 0;
        for e in &waiting {
            if attempts == PER_TURN || Instant::now() >= deadline {
                self.next_try = Some(Instant::now());
                return;
            }
            let mut claimed = e.path.clone().into_os_string();
            claimed.push(format!(".claim-{}", self.pid));
            let claimed = PathBuf::from(claimed);
            if std::fs::rename(&e.path, &claimed).is_err() {
                continue; // another process took it
            }
            let body = match std::fs::read(&claimed) {
                Ok(b) => b,
                Err(err) => {
                    let lost = Entry {
                        path: claimed,
                        ..e.clone()
                    };
                    Self::discard(&lost, stats, &format!("unreadable: {err}"));
                    continue;
                }
            };
            attempts += 1;
            match send(&body) {
                Sent::Delivered { rejected } => {
                    let _ = std::fs::remove_file(&claimed);
                    let rejected = rejected.min(e.spans);
                    Stats::add(&stats.spool_exported, e.spans - rejected);
                    Stats::add(&stats.spool_dropped, rejected);
                }
                Sent::Refused(why) => {
                    let refused = Entry {
                        path: claimed,
                        ..e.clone()
                    };
                    Self::discard(&refused, stats, &format!("the collector refused it: {why}"));
                }
                Sent::Later => {
                    let _ = std::fs::rename(&claimed, &e.path);
                    self.next_try = Some(Instant::now() + self.backoff);
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    return;
                }
            }
        }
        self.next_try = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg(dir: &Path) -> SpoolConfig {
        SpoolConfig {
            dir: dir.to_path_buf(),
            max_bytes: 1 << 20,
            max_files: 3,
            max_age: Duration::from_secs(3600),
        }
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_name("17-42-3-100.pb.gz"), Some((17, 100, None)));
        assert_eq!(
            parse_name("17-42-3-100.json.claim-9"),
            Some((17, 100, Some(9)))
        );
        assert_eq!(parse_name(".tmp-42-3"), None);
        assert_eq!(parse_name("junk"), None);
    }

    #[test]
    fn bounded_and_drained_in_order() {
        let root = std::env::temp_dir().join(format!("ht-spool-{}", std::process::id()));
        let stats = Stats::default();
        let mut spool = Spool::new(&cfg(&root), "http://x/v1/traces", "pb");
        for i in 0..5u8 {
            spool.put(&[i; 10], 2, &stats).unwrap();
        }
        // Five batches, three kept: the two oldest deleted and counted.
        assert_eq!(Stats::get(&stats.spool_dropped), 4);
        let mut seen = Vec::new();
        spool.drain(&stats, Instant::now() + Duration::from_secs(5), |b| {
            seen.push(b[0]);
            Sent::Delivered { rejected: 0 }
        });
        assert_eq!(seen, [2, 3, 4]);
        assert_eq!(Stats::get(&stats.spool_exported), 6);
        assert!(spool.next_try().is_none());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn kept_when_the_collector_is_still_down() {
        let root = std::env::temp_dir().join(format!("ht-spool-later-{}", std::process::id()));
        let stats = Stats::default();
        let mut spool = Spool::new(&cfg(&root), "http://y/v1/traces", "pb");
        spool.put(b"a", 1, &stats).unwrap();
        spool.put(b"b", 1, &stats).unwrap();
        let mut calls = 0;
        spool.next_try = Some(Instant::now());
        spool.drain(&stats, Instant::now() + Duration::from_secs(5), |_| {
            calls += 1;
            Sent::Later
        });
        assert_eq!(calls, 1);
        assert_eq!(spool.entries().len(), 2);
        assert!(spool.next_try().is_some_and(|t| t > Instant::now()));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
