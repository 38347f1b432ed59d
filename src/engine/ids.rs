//! Trace/span id generation and session UUIDs.
//!
//! The SDK's default generator keeps a thread-local RNG that a forked child inherits
//! byte for byte, so parent and child would mint the same ids. Ours is a thread-local
//! wyrand re-seeded from the OS whenever the process-wide fork epoch changes.

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::IdGenerator;
use std::cell::Cell;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

static FORK_EPOCH: AtomicU64 = AtomicU64::new(1);

thread_local! {
    // (state, epoch the state was seeded in); epoch 0 = never seeded.
    static RNG: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// Called in the child after `fork()`: every thread re-seeds before its next id.
pub fn bump_fork_epoch() {
    FORK_EPOCH.fetch_add(1, Ordering::Relaxed);
}

fn os_seed() -> u64 {
    let mut buf = [0u8; 8];
    if getrandom::fill(&mut buf).is_ok() {
        return u64::from_ne_bytes(buf);
    }
    // No OS randomness (should not happen on supported platforms): mix time, pid and
    // a stack address, which still differs between a parent and its child.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let local = 0u8;
    t ^ (u64::from(std::process::id()) << 32) ^ (&raw const local as u64)
}

#[inline]
pub fn next_u64() -> u64 {
    RNG.with(|cell| {
        let (mut state, seeded_epoch) = cell.get();
        let epoch = FORK_EPOCH.load(Ordering::Relaxed);
        if seeded_epoch != epoch {
            state = os_seed();
        }
        // wyrand (public domain, Wang Yi): one multiply per 64 bits, passes BigCrush.
        state = state.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(state).wrapping_mul(u128::from(state ^ 0xe703_7ed1_a0b4_28db));
        cell.set((state, epoch));
        ((t >> 64) as u64) ^ (t as u64)
    })
}

#[derive(Debug, Default, Clone, Copy)]
pub struct ForkSafeIdGenerator;

impl IdGenerator for ForkSafeIdGenerator {
    fn new_trace_id(&self) -> TraceId {
        loop {
            let hi = next_u64();
            let lo = next_u64();
            let id = (u128::from(hi) << 64) | u128::from(lo);
            if id != 0 {
                return TraceId::from(id);
            }
        }
    }

    fn new_span_id(&self) -> SpanId {
        loop {
            let id = next_u64();
            if id != 0 {
                return SpanId::from(id);
            }
        }
    }
}

/// A random (version 4) UUID in canonical lowercase form.
pub fn uuid4() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        b[..8].copy_from_slice(&next_u64().to_ne_bytes());
        b[8..].copy_from_slice(&next_u64().to_ne_bytes());
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex = |s: &[u8]| {
        s.iter()
            .fold(String::with_capacity(s.len() * 2), |mut out, x| {
                let _ = write!(out, "{x:02x}");
                out
            })
    };
    format!(
        "{}-{}-{}-{}-{}",
        hex(&b[0..4]),
        hex(&b[4..6]),
        hex(&b[6..8]),
        hex(&b[8..10]),
        hex(&b[10..16])
    )
}

/// True for a canonical 8-4-4-4-12 hex UUID (any case).
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 36 {
        return false;
    }
    b.iter().enumerate().all(|(i, c)| match i {
        8 | 13 | 18 | 23 => *c == b'-',
        _ => c.is_ascii_hexdigit(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid4_is_canonical_and_versioned() {
        let u = uuid4();
        assert!(is_uuid(&u), "{u}");
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(uuid4(), u);
    }

    #[test]
    fn is_uuid_rejects_malformed() {
        assert!(!is_uuid("not-a-uuid"));
        assert!(!is_uuid("123e4567e89b12d3a456426614174000"));
        assert!(is_uuid("123E4567-E89B-12D3-A456-426614174000"));
        assert!(!is_uuid("123e4567-e89b-12d3-a456-42661417400g"));
    }

    #[test]
    fn ids_are_nonzero_and_distinct() {
        let g = ForkSafeIdGenerator;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let s = g.new_span_id();
            assert_ne!(s, SpanId::INVALID);
            assert!(seen.insert(s));
        }
        assert_ne!(g.new_trace_id(), TraceId::INVALID);
    }

    #[test]
    fn epoch_bump_reseeds() {
        // After a bump the sequence must not continue from the inherited state.
        let a = next_u64();
        let _ = a;
        let before = RNG.with(std::cell::Cell::get);
        bump_fork_epoch();
        let _ = next_u64();
        let after = RNG.with(std::cell::Cell::get);
        assert_ne!(before.1, after.1);
    }
}
