//! The export pipeline: a bounded queue filled on the caller's thread in O(1), drained
//! by one background thread per tracer that encodes and sends without the GIL.
//!
//! - Nothing blocks the caller: a full queue (in spans or in bytes, counting the batch
//!   being exported) drops the span and counts it.
//! - A batch is at most `batch_size` spans and `batch_bytes` bytes (a larger span goes
//!   alone): requests stay under collectors' size limits, and the request buffer small.
//! - `flush` and `shutdown` wait on a condition variable with a deadline; a hung
//!   collector cannot hold them longer.
//! - The thread is supervised: a panic anywhere in it is counted, logged, and the
//!   thread starts over with a fresh exporter; the batch in hand is counted as failed,
//!   and the spans taken with it go back to the front of the queue. After too many
//!   failures in a row it stops, says so, and counts what it drops.
//! - After `fork()` the child gets a fresh queue, exporter and thread (the parent's
//!   locks may have been held by a thread that does not exist in the child); the old
//!   state is leaked on purpose, as dropping it could wait on that dead thread.

use super::memory::MemoryStore;
use super::rest::{Job, RestClient};
use super::sink::{span_bytes, Delivered, ExportControl, Exporter, Stats};
use crate::engine::config::BatchConfig;
use crate::engine::diag::{self, COUNTERS};
use opentelemetry_sdk::trace::SpanData;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::PoisonError;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How the export thread makes its exporter (again, after a failure or a fork).
pub type ExporterFactory = Arc<dyn Fn() -> (Box<dyn Exporter>, Option<RestClient>) + Send + Sync>;

/// Failures in a row after which the export thread gives up (the fifth stops it).
const MAX_RESTARTS: u32 = 5;

/// How long past the shutdown deadline `wait_shutdown` waits for the export thread to
/// count what it held (its own work ends at the deadline; this covers letting go). An
/// HTTP timeout set to end at the deadline was measured firing 50 ms to over 100 ms
/// late; the wait ends as soon as the thread is done.
const SHUTDOWN_SETTLE: Duration = Duration::from_millis(500);

/// A queued span with its size (`span_bytes`), counted once when it is pushed, so
/// what is subtracted from `State::bytes` is exactly what was added.
type Queued = (SpanData, usize);

#[derive(Default)]
struct State {
    queue: VecDeque<Queued>,
    jobs: VecDeque<Job>,
    /// Bytes of spans queued or taken by the thread and not yet handled.
    bytes: usize,
    /// When the queue last went from empty to non-empty (for the schedule delay).
    oldest_at: Option<Instant>,
    pushed: u64,
    processed: u64,
    flush_target: u64,
    jobs_pushed: u64,
    jobs_done: u64,
    exporter_flushes_wanted: u64,
    exporter_flushes_done: u64,
    shutdown: bool,
    shutdown_deadline: Option<Instant>,
    exited: bool,
    /// When the exporter wants a turn to send what waits in its disk spool.
    spool_next: Option<Instant>,
}

pub struct Shared {
    /// Distinguishes this pipeline's rate-limited warnings from other tracers'.
    id: u64,
    state: Mutex<State>,
    wake: Condvar,
    done: Condvar,
    stats: Arc<Stats>,
    batch: BatchConfig,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait_done<'a>(
        &self,
        guard: MutexGuard<'a, State>,
        until: Instant,
    ) -> (MutexGuard<'a, State>, bool) {
        let now = Instant::now();
        if now >= until {
            return (guard, false);
        }
        match self.done.wait_timeout(guard, until - now) {
            Ok((g, _)) => (g, true),
            Err(p) => (p.into_inner().0, true),
        }
    }

    /// Mark `n` spans of `bytes` as handled, counted in `outcome`'s counters (exported,
    /// failed or dropped; a partial success splits a batch in two). The counters move
    /// under the lock with `processed`, so a reader of `Pipeline::consistent` never sees
    /// a span both queued and handled, or neither.
    fn handled(&self, outcome: Outcome<'_>, n: u64, bytes: usize) {
        let mut st = self.lock();
        for (counter, count) in outcome {
            Stats::add(counter, count);
        }
        st.processed += n;
        st.bytes = st.bytes.saturating_sub(bytes);
        drop(st);
        self.done.notify_all();
    }
}

/// The control an exporter gets for one batch.
struct Ctl<'a> {
    shared: &'a Shared,
    deadline: Instant,
}

fn earliest(a: Instant, b: Option<Instant>) -> Instant {
    match b {
        Some(b) if b < a => b,
        _ => a,
    }
}

impl ExportControl for Ctl<'_> {
    fn deadline(&self) -> Instant {
        earliest(self.deadline, self.shared.lock().shutdown_deadline)
    }

    fn backoff(&self, wait: Duration) -> bool {
        // A wait too long to represent (a hostile `Retry-After`) passes any deadline.
        let Some(until) = Instant::now().checked_add(wait) else {
            return false;
        };
        let mut st = self.shared.lock();
        loop {
            if until >= earliest(self.deadline, st.shutdown_deadline) {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            st = match self.shared.wake.wait_timeout(st, until - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    fn attempt_timeout(&self) -> Duration {
        self.shared.batch.attempt_timeout
    }

    fn stats(&self) -> &Stats {
        &self.shared.stats
    }
}

/// The background part of a pipeline; replaced wholesale in a forked child.
struct WorkerSlot {
    current: AtomicPtr<Shared>,
}

impl WorkerSlot {
    fn get(&self) -> &'static Shared {
        // SAFETY: the pointer always comes from Box::leak in `spawn` and is never freed.
        unsafe { &*self.current.load(Ordering::Acquire) }
    }
}

fn spawn(factory: &ExporterFactory, batch: &BatchConfig, stats: &Arc<Stats>) -> &'static Shared {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let shared: &'static Shared = Box::leak(Box::new(Shared {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        // A new exporter looks at once for batches earlier processes spooled.
        state: Mutex::new(State {
            spool_next: Some(Instant::now()),
            ..State::default()
        }),
        wake: Condvar::new(),
        done: Condvar::new(),
        stats: stats.clone(),
        batch: batch.clone(),
    }));
    let factory = factory.clone();
    // The thread inherits the spawning thread's signal mask, so it never takes one.
    let started = with_async_signals_blocked(|| {
        std::thread::Builder::new()
            .name("honeytrace-export".into())
            .spawn(move || supervise(shared, &factory))
    });
    if let Err(e) = started {
        // Without a thread nothing can be exported: say so, and let pushes count drops.
        let mut st = shared.lock();
        st.exited = true;
        st.shutdown = true;
        drop(st);
        diag::log(
            diag::ERROR,
            &format!("could not start the export thread ({e}); spans will be counted as dropped"),
        );
    }
    shared
}

/// Run `f` (which starts a thread) with process-directed signals (SIGTERM, SIGINT,
/// SIGCHLD, ...) blocked, so the new thread, which inherits the mask, never takes one.
///
/// The kernel hands such a signal to any thread that does not block it. CPython runs
/// Python handlers on the main thread, and a main thread blocked in a system call (a
/// lock, a pipe read) is woken by the signal only when the signal lands on it: landing
/// on our thread, a SIGTERM handler would wait until the main thread wakes for another
/// reason (a multiprocessing worker waiting for a task never does), and Ctrl-C would
/// not interrupt a blocked main thread. Fault signals stay unblocked: they are raised
/// on the faulting thread. A signal arriving meanwhile stays pending, and is delivered
/// when the caller's mask is restored.
fn with_async_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    #[cfg(unix)]
    {
        // SAFETY: libc calls on sigset_t values we own, for the calling thread only.
        let old = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&raw mut set);
            for sig in [
                libc::SIGSEGV,
                libc::SIGBUS,
                libc::SIGFPE,
                libc::SIGILL,
                libc::SIGTRAP,
                libc::SIGABRT,
                libc::SIGSYS,
            ] {
                libc::sigdelset(&raw mut set, sig);
            }
            (libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, &raw mut old) == 0)
                .then_some(old)
        };
        let out = f();
        if let Some(old) = old {
            // SAFETY: restores the mask saved above, for the calling thread only.
            unsafe {
                libc::pthread_sigmask(libc::SIG_SETMASK, &raw const old, std::ptr::null_mut());
            }
        }
        out
    }
    #[cfg(not(unix))]
    f()
}

/// What the export thread has taken from the queue and not yet handled. `supervise`
/// owns it, so after a panic it knows which batch was lost (only that one counts as
/// failed) and can put the spans taken with it back in the queue.
#[derive(Default)]
struct Hand {
    /// Spans taken from the queue and not yet in a batch, oldest first.
    taken: VecDeque<Queued>,
    /// When the oldest of them was queued.
    oldest: Option<Instant>,
    /// The batch being exported: spans and bytes.
    batch: (u64, usize),
}

impl Hand {
    /// The next batch from the front of `taken`: how many spans, their bytes, and
    /// whether it is full (`max_spans` spans, or `max_bytes` reached; a span larger
    /// than `max_bytes` makes a batch alone) rather than short of spans.
    fn next_batch(&self, max_spans: usize, max_bytes: usize) -> (usize, usize, bool) {
        let (mut n, mut bytes) = (0, 0usize);
        for &(_, size) in &self.taken {
            if n == max_spans || (n > 0 && bytes.saturating_add(size) > max_bytes) {
                return (n, bytes, true);
            }
            n += 1;
            bytes = bytes.saturating_add(size);
        }
        (n, bytes, n == max_spans || bytes >= max_bytes)
    }

    /// Put the spans not yet exported back at the front of the queue, ahead of newer
    /// ones. Their bytes never left `State::bytes`. (The queue may briefly hold more
    /// than `max_queue_size` spans; `max_queue_bytes` still bounds it.)
    fn put_back(&mut self, st: &mut State) {
        if self.taken.is_empty() {
            return;
        }
        while let Some(span) = self.taken.pop_back() {
            st.queue.push_front(span);
        }
        st.oldest_at = match (self.oldest.take(), st.oldest_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// Run the export loop; after a panic, count it, account for the batch in hand and
/// start over with a fresh exporter, until `MAX_RESTARTS` failures in a row.
fn supervise(shared: &'static Shared, factory: &ExporterFactory) {
    let mut failures = 0u32;
    let mut hand = Hand::default();
    loop {
        let outcome = diag::catch(|| {
            let (exporter, rest) = factory();
            run(shared, exporter, rest, &mut failures, &mut hand);
        });
        let Err(payload) = outcome else { return };
        diag::contained("the export thread", payload.as_ref());
        let mut st = shared.lock();
        if st.exited {
            // The pipeline had finished (the exporter's shutdown panicked): every span
            // is accounted for and there is nothing to restart.
            drop(st);
            shared.done.notify_all();
            return;
        }
        failures += 1;
        let (lost, lost_bytes) = std::mem::take(&mut hand.batch);
        st.processed += lost;
        st.bytes = st.bytes.saturating_sub(lost_bytes);
        Stats::add(&shared.stats.failed, lost);
        hand.put_back(&mut st);
        if failures >= MAX_RESTARTS {
            let left = st.queue.len() as u64;
            let left_jobs = st.jobs.len() as u64;
            st.queue.clear();
            st.processed += left;
            Stats::add(&shared.stats.dropped_after_shutdown, left);
            st.bytes = 0;
            st.jobs_done += left_jobs;
            st.jobs.clear();
            st.exited = true;
            st.shutdown = true;
            drop(st);
            Stats::add(&shared.stats.api_calls_failed, left_jobs);
            shared
                .stats
                .set_error("the export thread stopped after repeated failures");
            diag::log(
                diag::ERROR,
                &format!(
                    "the export thread failed {failures} times in a row and stopped; {lost} spans in hand counted as failed, {left} queued and every later span counted as dropped"
                ),
            );
            shared.done.notify_all();
            return;
        }
        drop(st);
        diag::count(&COUNTERS.thread_restarts);
        diag::log(
            diag::WARNING,
            &format!(
                "the export thread failed and was restarted; {lost} spans in hand counted as failed"
            ),
        );
        shared.done.notify_all();
    }
}

/// What one turn of the loop found to do.
struct Turn {
    jobs: Vec<Job>,
    /// Flush the exporter after this turn's batches (a flush or a shutdown asked).
    flush_exporter: bool,
    /// `exporter_flushes_wanted` when the queue was taken: the flushes this turn's
    /// exporter flush completes (everything pushed before them was taken with it).
    flushes_seen: u64,
    deadline: Instant,
    /// Partial batches go out too (a flush, a shutdown or the schedule delay).
    due: bool,
}

/// Wait until there is work, then take it: jobs, and the whole queue (swapped into
/// `hand.taken`, which is empty, in O(1), so pushing callers never wait on a copy).
fn next_turn(shared: &Shared, hand: &mut Hand) -> Turn {
    let batch_size = shared.batch.max_export_batch_size.max(1);
    let delay = shared.batch.schedule_delay;
    let mut st = shared.lock();
    let (flush_exporter, due) = loop {
        let now = Instant::now();
        if st.oldest_at.is_none() && !st.queue.is_empty() {
            st.oldest_at = Some(now);
        }
        // When the oldest queued span has waited the schedule delay (None: nothing queued).
        let ripe_at = st
            .oldest_at
            .filter(|_| !st.queue.is_empty())
            .map(|t| t.checked_add(delay).unwrap_or(t));
        let flush_exporter = st.exporter_flushes_wanted > st.exporter_flushes_done || st.shutdown;
        // Partial batches go out only when something asks for them: a flush, a
        // shutdown, or the schedule delay since the oldest span.
        let due =
            flush_exporter || st.flush_target > st.processed || ripe_at.is_some_and(|d| d <= now);
        let spool_at = st.spool_next.filter(|_| !st.shutdown);
        if flush_exporter
            || spool_at.is_some_and(|t| t <= now)
            || !st.jobs.is_empty()
            || st.queue.len() >= batch_size
            || st.bytes >= shared.batch.max_export_batch_bytes
            || (due && !st.queue.is_empty())
        {
            break (flush_exporter, due);
        }
        // Wake for the spool too, whichever comes first.
        let ripe_at = match (ripe_at, spool_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        st = match ripe_at {
            // Idle: poll at the schedule delay rather than have every push notify us
            // (a futex wake per span on the caller's thread). With a zero delay,
            // pushes notify and we sleep until then.
            None if delay.is_zero() => match shared.wake.wait(st) {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            },
            None => match shared.wake.wait_timeout(st, delay) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            },
            Some(ripe) => match shared.wake.wait_timeout(st, ripe - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            },
        };
    };
    let jobs: Vec<Job> = st.jobs.drain(..).collect();
    debug_assert!(hand.taken.is_empty());
    std::mem::swap(&mut st.queue, &mut hand.taken);
    hand.oldest = st.oldest_at.take();
    let deadline = earliest(
        diag::deadline_after(shared.batch.export_timeout),
        st.shutdown_deadline,
    );
    Turn {
        jobs,
        flush_exporter,
        flushes_seen: st.exporter_flushes_wanted,
        deadline,
        due,
    }
}

fn run_jobs(shared: &Shared, rest: &mut Option<RestClient>, jobs: Vec<Job>, deadline: Instant) {
    let n_jobs = jobs.len() as u64;
    let ctl = Ctl { shared, deadline };
    let failed = || Stats::add(&shared.stats.api_calls_failed, 1);
    for job in jobs {
        match rest.as_mut() {
            // A panic in one call fails that call; the job still counts as done, so
            // flushes waiting for it do not wait out their timeout.
            Some(client) if Instant::now() < deadline => {
                diag::shield("a HoneyHive API call", failed, || client.run(&job, &ctl));
            }
            _ => failed(),
        }
    }
    if n_jobs > 0 {
        shared.lock().jobs_done += n_jobs;
    }
}

/// The counters a handled batch's spans go to, with how many in each.
type Outcome<'s> = [(&'s AtomicU64, u64); 2];

/// Export one batch; returns where its spans count (`Shared::handled`).
fn export_batch<'s>(
    shared: &'s Shared,
    exporter: &mut Box<dyn Exporter>,
    batch: Vec<SpanData>,
) -> Outcome<'s> {
    let n = batch.len() as u64;
    let stats = &shared.stats;
    let all = |counter| [(counter, n), (&stats.exported, 0)];
    let deadline = earliest(
        diag::deadline_after(shared.batch.export_timeout),
        shared.lock().shutdown_deadline,
    );
    if Instant::now() >= deadline {
        // Past the shutdown deadline: to the disk spool if there is one.
        return if exporter.spool(batch, stats) {
            all(&stats.spooled)
        } else {
            all(&stats.dropped_at_shutdown)
        };
    }
    diag::injected_panic(diag::Fault::Export);
    let ctl = Ctl { shared, deadline };
    match exporter.export(batch, &ctl) {
        Ok(Delivered::All) => all(&stats.exported),
        Ok(Delivered::Partly { rejected, message }) => {
            // The collector took the others: only the rejected spans failed.
            let e = format!("collector rejected {rejected} of {n} spans: {message}");
            Stats::add(&stats.failed_exports, 1);
            stats.set_error(&e);
            diag::warn_limited_for("export-partial", shared.id, &e);
            [(&stats.exported, n - rejected), (&stats.failed, rejected)]
        }
        Ok(Delivered::Spooled { why }) => {
            stats.set_error(&why);
            diag::warn_limited_for(
                "export-spooled",
                shared.id,
                &format!("could not export {n} spans: {why}; kept in the disk spool, to be sent when the collector answers"),
            );
            all(&stats.spooled)
        }
        Err(e) => {
            Stats::add(&stats.failed_exports, 1);
            stats.set_error(&e);
            diag::warn_limited_for(
                "export-failed",
                shared.id,
                &format!("could not export {n} spans: {e}"),
            );
            all(&stats.failed)
        }
    }
}

/// Write what `hand` took to the disk spool, a batch at a time (the shutdown deadline
/// has passed); what the spool does not take counts as dropped at shutdown.
fn spool_taken(
    shared: &Shared,
    exporter: &mut Box<dyn Exporter>,
    hand: &mut Hand,
    batch_size: usize,
) {
    let stats = &shared.stats;
    while !hand.taken.is_empty() {
        let n = batch_size.min(hand.taken.len());
        let mut bytes = 0usize;
        let batch: Vec<SpanData> = hand
            .taken
            .drain(..n)
            .map(|(span, size)| {
                bytes += size;
                span
            })
            .collect();
        hand.batch = (n as u64, bytes);
        let counter = if exporter.spool(batch, stats) {
            &stats.spooled
        } else {
            &stats.dropped_at_shutdown
        };
        let (n, bytes) = std::mem::take(&mut hand.batch);
        shared.handled([(counter, n), (&stats.exported, 0)], n, bytes);
    }
    hand.oldest = None;
}

/// The export loop; returns when the pipeline has shut down.
fn run(
    shared: &'static Shared,
    mut exporter: Box<dyn Exporter>,
    mut rest: Option<RestClient>,
    failures: &mut u32,
    hand: &mut Hand,
) {
    let batch_size = shared.batch.max_export_batch_size.max(1);
    let batch_bytes = shared.batch.max_export_batch_bytes;
    loop {
        let turn = next_turn(shared, hand);
        run_jobs(shared, &mut rest, turn.jobs, turn.deadline);
        let mut exported_a_batch = false;
        while !hand.taken.is_empty() {
            let (n, bytes, full) = hand.next_batch(batch_size, batch_bytes);
            if !turn.due && !full {
                // Not due yet: the remainder goes back ahead of newer spans.
                hand.put_back(&mut shared.lock());
                break;
            }
            let batch: Vec<SpanData> = hand.taken.drain(..n).map(|(span, _)| span).collect();
            hand.batch = (n as u64, bytes);
            let outcome = export_batch(shared, &mut exporter, batch);
            let (n, bytes) = std::mem::take(&mut hand.batch);
            shared.handled(outcome, n, bytes);
            exported_a_batch = true;
        }
        if turn.flush_exporter {
            exporter.flush();
        }
        // A batch handled without a panic ends a run of failures (a turn with nothing
        // to export, such as a flush, proves nothing).
        if exported_a_batch {
            *failures = 0;
        }
        // What waits in the disk spool goes out between live batches, a few at a time.
        let spool_next = if shared.lock().shutdown {
            None
        } else {
            let ctl = Ctl {
                shared,
                deadline: diag::deadline_after(shared.batch.export_timeout),
            };
            exporter.drain_spool(&ctl)
        };

        let mut st = shared.lock();
        st.spool_next = spool_next;
        // The exporter flushed after every span pushed before these flushes asked.
        if turn.flush_exporter {
            st.exporter_flushes_done = st.exporter_flushes_done.max(turn.flushes_seen);
        }
        let finished = st.shutdown && st.queue.is_empty() && st.jobs.is_empty();
        let abandon = st.shutdown && st.shutdown_deadline.is_some_and(|d| Instant::now() >= d);
        if abandon && !st.queue.is_empty() {
            // Past the deadline with spans still queued: to the disk spool if there is
            // one (counted as each batch is written), the rest dropped below.
            std::mem::swap(&mut st.queue, &mut hand.taken);
            hand.oldest = st.oldest_at.take();
            drop(st);
            spool_taken(shared, &mut exporter, hand, batch_size);
            st = shared.lock();
        }
        if finished || abandon {
            let left = st.queue.len() as u64;
            let left_jobs = st.jobs.len() as u64;
            st.queue.clear();
            st.queue.shrink_to_fit();
            st.jobs.clear();
            st.processed += left;
            Stats::add(&shared.stats.dropped_at_shutdown, left);
            st.bytes = 0;
            st.jobs_done += left_jobs;
            st.exited = true;
            drop(st);
            if left_jobs > 0 {
                Stats::add(&shared.stats.api_calls_failed, left_jobs);
            }
            diag::injected_panic(diag::Fault::ExporterShutdown);
            exporter.shutdown();
            shared.done.notify_all();
            return;
        }
        drop(st);
        shared.done.notify_all();
    }
}

/// Where a pipeline sends spans.
enum Sink {
    Memory(MemoryStore),
    Discard,
    Worker {
        slot: WorkerSlot,
        factory: ExporterFactory,
    },
}

/// A flush in progress (`Pipeline::flush_begin`): what it waits for.
#[derive(Clone, Copy, Debug)]
pub struct FlushTicket {
    spans: u64,
    jobs: u64,
    exporter_flush: u64,
}

pub struct Pipeline {
    sink: Sink,
    stats: Arc<Stats>,
    batch: BatchConfig,
    shut_down: AtomicBool,
}

impl Pipeline {
    pub fn memory(stats: Arc<Stats>, batch: BatchConfig, cap: usize) -> Self {
        Pipeline {
            sink: Sink::Memory(MemoryStore::new(cap)),
            stats,
            batch,
            shut_down: AtomicBool::new(false),
        }
    }

    pub fn discard(stats: Arc<Stats>, batch: BatchConfig) -> Self {
        Pipeline {
            sink: Sink::Discard,
            stats,
            batch,
            shut_down: AtomicBool::new(false),
        }
    }

    pub fn worker(stats: Arc<Stats>, batch: BatchConfig, factory: ExporterFactory) -> Self {
        let shared = spawn(&factory, &batch, &stats);
        Pipeline {
            sink: Sink::Worker {
                slot: WorkerSlot {
                    current: AtomicPtr::new(std::ptr::from_ref(shared).cast_mut()),
                },
                factory,
            },
            stats,
            batch,
            shut_down: AtomicBool::new(false),
        }
    }

    pub fn memory_store(&self) -> Option<&MemoryStore> {
        match &self.sink {
            Sink::Memory(m) => Some(m),
            _ => None,
        }
    }

    pub fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::Relaxed)
    }

    /// Called when a span ends, on the caller's thread: O(1), never blocks on I/O.
    pub fn push(&self, span: SpanData) {
        if self.is_shut_down() {
            Stats::add(&self.stats.dropped_after_shutdown, 1);
            return;
        }
        match &self.sink {
            Sink::Memory(m) => {
                if m.push(span) {
                    Stats::add(&self.stats.exported, 1);
                } else {
                    Stats::add(&self.stats.dropped_queue_full, 1);
                }
            }
            Sink::Discard => {}
            Sink::Worker { slot, .. } => self.push_to(slot.get(), span),
        }
    }

    fn push_to(&self, shared: &Shared, span: SpanData) {
        // Sized before taking the lock, which every caller's thread contends for.
        let size = span_bytes(&span, shared.batch.openinference);
        let mut st = shared.lock();
        if st.exited {
            drop(st);
            Stats::add(&self.stats.dropped_after_shutdown, 1);
            return;
        }
        let full_count = st.queue.len() >= shared.batch.max_queue_size;
        if full_count || st.bytes.saturating_add(size) > shared.batch.max_queue_bytes {
            drop(st);
            drop(span);
            let (counter, what) = if full_count {
                (&self.stats.dropped_queue_full, "spans")
            } else {
                (&self.stats.dropped_queue_bytes, "bytes")
            };
            let dropped = counter.fetch_add(1, Ordering::Relaxed);
            // The drop path stays cheap under overload: only every 1024th drop
            // reaches the (time-rate-limited) logger.
            if dropped % 1024 == 0 {
                let limit = if full_count {
                    shared.batch.max_queue_size
                } else {
                    shared.batch.max_queue_bytes
                };
                diag::warn_limited_for(
                    "queue-full",
                    shared.id,
                    &format!(
                        "export queue full ({limit} {what}): dropping spans; the collector is slow or down (see tracer.stats())"
                    ),
                );
            }
            return;
        }
        if st.queue.is_empty() {
            st.oldest_at = Some(Instant::now());
        }
        st.queue.push_back((span, size));
        st.bytes += size;
        st.pushed += 1;
        // A full batch wakes the thread: `batch_size` spans, or `batch_bytes` crossed
        // by this span (the bytes include a batch in flight, after which the thread
        // looks at the queue again anyway).
        let batch_bytes = shared.batch.max_export_batch_bytes;
        let wake = st.queue.len() == shared.batch.max_export_batch_size
            || (st.bytes >= batch_bytes && st.bytes - size < batch_bytes)
            || shared.batch.schedule_delay.is_zero();
        drop(st);
        if wake {
            shared.wake.notify_one();
        }
    }

    /// Queue a HoneyHive REST call for the background thread.
    pub fn push_job(&self, job: Job) -> bool {
        if self.is_shut_down() {
            return false;
        }
        if let Sink::Worker { slot, .. } = &self.sink {
            let shared = slot.get();
            let mut st = shared.lock();
            if st.exited || st.jobs.len() >= 10_000 {
                return false;
            }
            st.jobs.push_back(job);
            st.jobs_pushed += 1;
            drop(st);
            shared.wake.notify_one();
            return true;
        }
        false
    }

    /// Spans not yet handled (queued, taken by the export thread, or in flight) and
    /// the bytes they hold, with whatever `read` reads of the counters, taken at one
    /// moment: the export thread moves a span from "not yet handled" to its outcome
    /// counter under the same lock (`Shared::handled`). So while no span is ending,
    /// `ended == exported + failed + dropped + filtered + queued` holds exactly, even
    /// with an export in flight or a shutdown past its deadline. `read` must not call
    /// into Python (a span ending there would wait for this lock).
    pub fn consistent<R>(&self, read: impl FnOnce() -> R) -> (u64, usize, R) {
        match &self.sink {
            Sink::Worker { slot, .. } => {
                let st = slot.get().lock();
                let r = read();
                (st.pushed.saturating_sub(st.processed), st.bytes, r)
            }
            _ => (0, 0, read()),
        }
    }

    /// Ask for everything ended so far to be exported; `flush_wait` waits for it. None
    /// when there is nothing to wait for (no export thread, or it has exited).
    pub fn flush_begin(&self) -> Option<FlushTicket> {
        let Sink::Worker { slot, .. } = &self.sink else {
            return None;
        };
        let shared = slot.get();
        let mut st = shared.lock();
        if st.exited {
            return None;
        }
        st.flush_target = st.flush_target.max(st.pushed);
        st.exporter_flushes_wanted += 1;
        let ticket = FlushTicket {
            spans: st.pushed,
            jobs: st.jobs_pushed,
            exporter_flush: st.exporter_flushes_wanted,
        };
        drop(st);
        shared.wake.notify_one();
        Some(ticket)
    }

    /// Wait for a flush begun with `flush_begin` until `until`: true once everything
    /// ended before it was handled and the exporter flushed, or at the deadline when
    /// the spans were handled. Blocking: a Python caller releases the GIL.
    pub fn flush_wait(&self, ticket: Option<FlushTicket>, until: Instant) -> bool {
        let (Some(t), Sink::Worker { slot, .. }) = (ticket, &self.sink) else {
            return true;
        };
        let shared = slot.get();
        let mut st = shared.lock();
        loop {
            let spans = st.processed >= t.spans;
            if st.exited {
                return spans;
            }
            if spans && st.jobs_done >= t.jobs && st.exporter_flushes_done >= t.exporter_flush {
                return true;
            }
            let (g, more) = shared.wait_done(st, until);
            st = g;
            if !more {
                return st.processed >= t.spans && st.jobs_done >= t.jobs;
            }
        }
    }

    /// Wait until everything ended before this call has been handled.
    pub fn flush(&self, timeout: Duration) -> bool {
        let until = diag::deadline_after(timeout);
        self.flush_wait(self.flush_begin(), until)
    }

    /// Start shutting down (for shutting many pipelines down in parallel).
    pub fn begin_shutdown(&self, deadline: Instant) {
        if self.shut_down.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Sink::Worker { slot, .. } = &self.sink {
            let shared = slot.get();
            let mut st = shared.lock();
            st.shutdown = true;
            st.shutdown_deadline = Some(deadline);
            drop(st);
            shared.wake.notify_all();
        }
    }

    /// Wait for a shutdown begun with `begin_shutdown`. True on a clean stop: the export
    /// thread finished and no span was dropped at the deadline.
    ///
    /// The thread's exports are bounded by the same deadline, so at the deadline it is
    /// about to let go of what it holds (the batch in flight, the spans taken with it);
    /// waiting up to `SHUTDOWN_SETTLE` more lets it count their outcome, so `stats()`
    /// after a shutdown past its deadline says what became of every span.
    pub fn wait_shutdown(&self, deadline: Instant) -> bool {
        let Sink::Worker { slot, .. } = &self.sink else {
            return true;
        };
        let shared = slot.get();
        let settled_by = deadline.checked_add(SHUTDOWN_SETTLE).unwrap_or(deadline);
        let mut st = shared.lock();
        loop {
            if st.exited {
                drop(st);
                let dropped = Stats::get(&self.stats.dropped_at_shutdown);
                if dropped > 0 {
                    diag::log(
                        diag::WARNING,
                        &format!(
                            "shutdown deadline reached: {dropped} spans not delivered were dropped (collector slow or down; see tracer.stats())"
                        ),
                    );
                }
                return dropped == 0;
            }
            let (g, more) = shared.wait_done(st, settled_by);
            st = g;
            if !more {
                // Queued, taken or in flight: stats() counts them as `queued`.
                let left = st.pushed.saturating_sub(st.processed);
                drop(st);
                diag::log(
                    diag::WARNING,
                    &format!(
                        "shutdown deadline reached with the export thread still busy and {left} spans not yet handled (collector slow or down; see tracer.stats())"
                    ),
                );
                return false;
            }
        }
    }

    pub fn shutdown(&self, timeout: Duration) -> bool {
        let deadline = diag::deadline_after(timeout);
        self.begin_shutdown(deadline);
        self.wait_shutdown(deadline)
    }

    /// In a forked child: a new queue, exporter and thread; stats start from zero.
    pub fn after_fork_child(&self) {
        self.stats.reset();
        if let Sink::Worker { slot, factory } = &self.sink {
            if self.is_shut_down() {
                return;
            }
            let fresh = spawn(factory, &self.batch, &self.stats);
            // The old state is deliberately leaked (see module docs).
            slot.current
                .store(std::ptr::from_ref(fresh).cast_mut(), Ordering::Release);
        }
        if let Sink::Memory(m) = &self.sink {
            m.clear();
        }
    }
}
