//! The export pipeline: a bounded queue filled on the caller's thread in O(1), drained
//! by one background thread per tracer that encodes and sends without the GIL.
//!
//! - Nothing blocks the caller: a full queue drops the span and counts it.
//! - `flush(timeout)` and `shutdown(timeout)` wait on a condition variable with a
//!   deadline (GIL released by the caller); a hung collector cannot hold them longer.
//! - After `fork()` the child gets a fresh queue, exporter and thread (the parent's
//!   locks may have been held by a thread that does not exist in the child); the old
//!   state is leaked on purpose, as dropping it could wait on that dead thread.

pub mod console;
pub mod encode;
pub mod file;
pub mod memory;
pub mod otlp;

use crate::config::BatchConfig;
use crate::diag;
use crate::session::{Job, RestClient};
use opentelemetry_sdk::trace::SpanData;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Counters a user can read with `tracer.stats()`.
#[derive(Default, Debug)]
pub struct Stats {
    pub started: AtomicU64,
    pub ended: AtomicU64,
    pub exported: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub dropped_after_shutdown: AtomicU64,
    pub dropped_at_shutdown: AtomicU64,
    pub failed: AtomicU64,
    pub failed_exports: AtomicU64,
    pub retries: AtomicU64,
    pub filtered: AtomicU64,
    pub api_calls: AtomicU64,
    pub api_calls_failed: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn set_error(&self, e: &str) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn reset(&self) {
        for c in [
            &self.started,
            &self.ended,
            &self.exported,
            &self.dropped_queue_full,
            &self.dropped_after_shutdown,
            &self.dropped_at_shutdown,
            &self.failed,
            &self.failed_exports,
            &self.retries,
            &self.filtered,
            &self.api_calls,
            &self.api_calls_failed,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// Services an exporter may use while it works.
pub struct ExportCtl<'a> {
    shared: &'a Shared,
    deadline: Instant,
}

impl ExportCtl<'_> {
    /// The export deadline, brought forward by a shutdown deadline if one is running.
    pub fn deadline(&self) -> Instant {
        let st = self.shared.lock();
        match st.shutdown_deadline {
            Some(d) if d < self.deadline => d,
            _ => self.deadline,
        }
    }

    /// Sleep for a retry backoff; wakes early (returning false) when the deadline,
    /// possibly shortened by a shutdown, would pass first.
    pub fn backoff(&self, wait: Duration) -> bool {
        let until = Instant::now() + wait;
        let mut st = self.shared.lock();
        loop {
            let deadline = match st.shutdown_deadline {
                Some(d) if d < self.deadline => d,
                _ => self.deadline,
            };
            if until >= deadline {
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

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }
}

pub type ExportResult = Result<(), String>;

/// A destination for batches of finished spans. Runs on the pipeline's thread only.
pub trait Exporter: Send {
    fn export(&mut self, batch: Vec<SpanData>, ctl: &ExportCtl<'_>) -> ExportResult;
    /// Emit anything held back (the console exporter buffers unfinished trees).
    fn flush(&mut self) {}
    fn shutdown(&mut self) {}
}

pub type ExporterFactory = Arc<dyn Fn() -> (Box<dyn Exporter>, Option<RestClient>) + Send + Sync>;

#[derive(Default)]
struct State {
    queue: VecDeque<SpanData>,
    jobs: VecDeque<Job>,
    /// When the queue last went from empty to non-empty (for the schedule delay).
    oldest_at: Option<Instant>,
    pushed: u64,
    processed: u64,
    flush_target: u64,
    jobs_pushed: u64,
    jobs_done: u64,
    jobs_target: u64,
    exporter_flushes_wanted: u64,
    exporter_flushes_done: u64,
    shutdown: bool,
    shutdown_deadline: Option<Instant>,
    exited: bool,
}

pub struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    done: Condvar,
    stats: Arc<Stats>,
    batch: BatchConfig,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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
    let shared: &'static Shared = Box::leak(Box::new(Shared {
        state: Mutex::new(State::default()),
        wake: Condvar::new(),
        done: Condvar::new(),
        stats: stats.clone(),
        batch: batch.clone(),
    }));
    let factory = factory.clone();
    let started = std::thread::Builder::new()
        .name("honeytrace-export".into())
        .spawn(move || {
            let (exporter, rest) = factory();
            run(shared, exporter, rest);
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

fn run(shared: &'static Shared, mut exporter: Box<dyn Exporter>, mut rest: Option<RestClient>) {
    let batch_size = shared.batch.max_export_batch_size.max(1);
    let delay = shared.batch.schedule_delay;
    // Double buffering: under the lock the queue is swapped for this (empty) one in
    // O(1), so callers pushing spans never wait while a batch is copied out.
    let mut taken: VecDeque<SpanData> = VecDeque::with_capacity(batch_size);
    loop {
        let (jobs, flush_exporter, deadline, due, oldest) = {
            let mut st = shared.lock();
            loop {
                let flushing = st.flush_target > st.processed || st.jobs_target > st.jobs_done;
                let exporter_flush = st.exporter_flushes_wanted > st.exporter_flushes_done;
                if !st.jobs.is_empty()
                    || st.queue.len() >= batch_size
                    || (flushing && !st.queue.is_empty())
                    || exporter_flush
                    || st.shutdown
                {
                    break;
                }
                if st.queue.is_empty() {
                    // Idle: poll at the schedule delay rather than have every push
                    // notify us (a futex wake per span on the caller's thread). With
                    // a zero delay, pushes notify and we sleep until then.
                    st = if delay.is_zero() {
                        match shared.wake.wait(st) {
                            Ok(g) => g,
                            Err(p) => p.into_inner(),
                        }
                    } else {
                        match shared.wake.wait_timeout(st, delay) {
                            Ok((g, _)) => g,
                            Err(p) => p.into_inner().0,
                        }
                    };
                } else {
                    let due = st.oldest_at.unwrap_or_else(Instant::now) + delay;
                    let now = Instant::now();
                    if now >= due {
                        break;
                    }
                    st = match shared.wake.wait_timeout(st, due - now) {
                        Ok((g, _)) => g,
                        Err(p) => p.into_inner().0,
                    };
                }
            }
            let jobs: Vec<Job> = st.jobs.drain(..).collect();
            // Partial batches go out only when something asks for them: a flush, a
            // shutdown, or the schedule delay since the oldest span.
            let oldest = st.oldest_at;
            let due = st.flush_target > st.processed
                || st.exporter_flushes_wanted > st.exporter_flushes_done
                || st.shutdown
                || oldest.is_some_and(|t| t + delay <= Instant::now());
            std::mem::swap(&mut st.queue, &mut taken);
            st.oldest_at = None;
            let flush_exporter =
                st.exporter_flushes_wanted > st.exporter_flushes_done || st.shutdown;
            let mut deadline = Instant::now() + shared.batch.export_timeout;
            if let Some(d) = st.shutdown_deadline {
                deadline = deadline.min(d);
            }
            (jobs, flush_exporter, deadline, due, oldest)
        };

        let ctl = ExportCtl { shared, deadline };
        let n_jobs = jobs.len() as u64;
        for job in jobs {
            match rest.as_mut() {
                Some(client) if Instant::now() < deadline => client.run(&job, &ctl),
                _ => Stats::add(&shared.stats.api_calls_failed, 1),
            }
        }
        if n_jobs > 0 {
            shared.lock().jobs_done += n_jobs;
        }

        while !taken.is_empty() {
            if !due && taken.len() < batch_size {
                // Not due yet: the remainder goes back ahead of newer spans.
                let mut st = shared.lock();
                while let Some(span) = taken.pop_back() {
                    st.queue.push_front(span);
                }
                st.oldest_at = oldest.or(st.oldest_at);
                break;
            }
            let batch: Vec<SpanData> = taken.drain(..taken.len().min(batch_size)).collect();
            let n = batch.len() as u64;
            let deadline = match shared.lock().shutdown_deadline {
                Some(d) => d.min(Instant::now() + shared.batch.export_timeout),
                None => Instant::now() + shared.batch.export_timeout,
            };
            if Instant::now() >= deadline {
                Stats::add(&shared.stats.dropped_at_shutdown, n);
            } else {
                let ctl = ExportCtl { shared, deadline };
                let result = diag::shield(
                    "span export",
                    || Err("exporter panicked".to_string()),
                    || exporter.export(batch, &ctl),
                );
                match result {
                    Ok(()) => Stats::add(&shared.stats.exported, n),
                    Err(e) => {
                        Stats::add(&shared.stats.failed, n);
                        Stats::add(&shared.stats.failed_exports, 1);
                        shared.stats.set_error(&e);
                        diag::warn_limited(
                            "export-failed",
                            &format!("could not export {n} spans: {e}"),
                        );
                    }
                }
            }
            shared.lock().processed += n;
            shared.done.notify_all();
        }

        if flush_exporter {
            diag::shield("exporter flush", || (), || exporter.flush());
        }

        let mut st = shared.lock();
        // A flush is complete only once the exporter flushed after the queue emptied.
        if flush_exporter && st.queue.is_empty() {
            st.exporter_flushes_done = st.exporter_flushes_wanted;
        }
        let finished = st.shutdown && st.queue.is_empty() && st.jobs.is_empty();
        let abandon = st.shutdown && st.shutdown_deadline.is_some_and(|d| Instant::now() >= d);
        if finished || abandon {
            let left = st.queue.len() as u64;
            let left_jobs = st.jobs.len() as u64;
            st.queue.clear();
            st.queue.shrink_to_fit();
            st.jobs.clear();
            st.processed += left;
            st.jobs_done += left_jobs;
            st.exited = true;
            drop(st);
            if left > 0 {
                Stats::add(&shared.stats.dropped_at_shutdown, left);
            }
            if left_jobs > 0 {
                Stats::add(&shared.stats.api_calls_failed, left_jobs);
            }
            diag::shield("exporter shutdown", || (), || exporter.shutdown());
            shared.done.notify_all();
            return;
        }
        drop(st);
        shared.done.notify_all();
    }
}

/// Where a pipeline sends spans.
enum Sink {
    Memory(memory::MemoryStore),
    Discard,
    Worker {
        slot: WorkerSlot,
        factory: ExporterFactory,
    },
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
            sink: Sink::Memory(memory::MemoryStore::new(cap)),
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
                    current: AtomicPtr::new(shared as *const Shared as *mut Shared),
                },
                factory,
            },
            stats,
            batch,
            shut_down: AtomicBool::new(false),
        }
    }

    pub fn memory_store(&self) -> Option<&memory::MemoryStore> {
        match &self.sink {
            Sink::Memory(m) => Some(m),
            _ => None,
        }
    }

    pub fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::Relaxed)
    }

    /// Called from `on_end` on the caller's thread: O(1), never blocks on I/O.
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
            Sink::Worker { slot, .. } => {
                let shared = slot.get();
                let mut st = shared.lock();
                if st.exited {
                    drop(st);
                    Stats::add(&self.stats.dropped_after_shutdown, 1);
                    return;
                }
                if st.queue.len() >= shared.batch.max_queue_size {
                    drop(st);
                    let dropped = self
                        .stats
                        .dropped_queue_full
                        .fetch_add(1, Ordering::Relaxed);
                    // The drop path stays cheap under overload: only every 1024th drop
                    // reaches the (time-rate-limited) logger.
                    if dropped % 1024 != 0 {
                        return;
                    }
                    diag::warn_limited(
                        "queue-full",
                        &format!(
                            "export queue full ({} spans): dropping spans; the collector is slow or down (see tracer.stats())",
                            shared.batch.max_queue_size
                        ),
                    );
                    return;
                }
                if st.queue.is_empty() {
                    st.oldest_at = Some(Instant::now());
                }
                st.queue.push_back(span);
                st.pushed += 1;
                let wake = st.queue.len() == shared.batch.max_export_batch_size
                    || shared.batch.schedule_delay.is_zero();
                drop(st);
                if wake {
                    shared.wake.notify_one();
                }
            }
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

    pub fn queue_depth(&self) -> usize {
        match &self.sink {
            Sink::Worker { slot, .. } => slot.get().lock().queue.len(),
            _ => 0,
        }
    }

    /// Wait until everything ended before this call has been handled. Blocking: the
    /// caller releases the GIL around it.
    pub fn flush(&self, timeout: Duration) -> bool {
        let Sink::Worker { slot, .. } = &self.sink else {
            return true;
        };
        let shared = slot.get();
        let until = Instant::now() + timeout;
        let mut st = shared.lock();
        if st.exited {
            return st.queue.is_empty();
        }
        let target = st.pushed;
        let jobs_target = st.jobs_pushed;
        st.flush_target = st.flush_target.max(target);
        st.jobs_target = st.jobs_target.max(jobs_target);
        st.exporter_flushes_wanted += 1;
        let flush_id = st.exporter_flushes_wanted;
        shared.wake.notify_one();
        loop {
            if (st.processed >= target
                && st.jobs_done >= jobs_target
                && st.exporter_flushes_done >= flush_id)
                || st.exited
            {
                return st.processed >= target;
            }
            let (g, more) = shared.wait_done(st, until);
            st = g;
            if !more {
                return st.processed >= target && st.jobs_done >= jobs_target;
            }
        }
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

    /// Wait for a shutdown begun with `begin_shutdown`. True when everything was handled.
    pub fn wait_shutdown(&self, deadline: Instant) -> bool {
        let Sink::Worker { slot, .. } = &self.sink else {
            return true;
        };
        let shared = slot.get();
        let mut st = shared.lock();
        loop {
            if st.exited {
                return true;
            }
            let (g, more) = shared.wait_done(st, deadline);
            st = g;
            if !more {
                // Queued plus in flight: everything not yet handled.
                let left = st.pushed.saturating_sub(st.processed);
                drop(st);
                if left > 0 {
                    diag::log(
                        diag::WARNING,
                        &format!(
                            "shutdown deadline reached with {left} spans not yet delivered (collector slow or down)"
                        ),
                    );
                }
                return false;
            }
        }
    }

    pub fn shutdown(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
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
                .store(fresh as *const Shared as *mut Shared, Ordering::Release);
        }
        if let Sink::Memory(m) = &self.sink {
            m.clear();
        }
    }
}
