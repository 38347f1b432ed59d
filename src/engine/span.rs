//! A span while it is recorded, and the parameters it starts with.

use crate::engine::export::prepare::dedup;
use opentelemetry::trace::{Event, Link, SpanContext, SpanKind, Status};
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::{SpanData, SpanLimits};
use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Everything a span starts with, whoever starts it (the OpenTelemetry API, the
/// decorator, the middleware): one type, converted once at the boundary.
#[derive(Debug, Clone)]
pub struct SpanOptions {
    pub name: Cow<'static, str>,
    pub kind: SpanKind,
    pub attributes: Vec<KeyValue>,
    pub links: Vec<Link>,
    pub start_time: Option<SystemTime>,
    /// Record an escaping exception as an `exception` event (OpenTelemetry's flag).
    pub record_exception: bool,
    /// Set an ERROR status for an escaping exception (OpenTelemetry's flag).
    pub set_status_on_exception: bool,
}

impl SpanOptions {
    pub fn new(name: impl Into<Cow<'static, str>>, kind: SpanKind) -> Self {
        SpanOptions {
            name: name.into(),
            kind,
            attributes: Vec::new(),
            links: Vec::new(),
            start_time: None,
            record_exception: true,
            set_status_on_exception: true,
        }
    }
}

/// A timestamp in nanoseconds since the epoch, saturating instead of overflowing.
pub fn ns_to_time(ns: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_nanos(ns))
        .unwrap_or(UNIX_EPOCH)
}

/// A span being recorded: the SDK's `SpanData`, filled in place with the SDK's limit
/// rules, handed to the tracer's processor when it ends. (Building `SpanData` directly,
/// instead of through the SDK's Tracer/Span layer, was about a fifth of a decorated
/// call; see docs/internals.md.)
pub struct Recording {
    pub data: SpanData,
    limits: SpanLimits,
}

impl Recording {
    pub fn new(data: SpanData, limits: SpanLimits) -> Self {
        Recording { data, limits }
    }

    /// Appended (a key set again is resolved at export, last value wins: no scan on
    /// the hot path). At the limit, repeated keys are folded first, so the limit
    /// counts distinct keys and a key already there takes its new value, as in the SDK.
    pub fn set_attribute(&mut self, kv: KeyValue) {
        let max = self.limits.max_attributes_per_span as usize;
        let attrs = &mut self.data.attributes;
        if attrs.len() < max {
            attrs.push(kv);
            return;
        }
        dedup(attrs);
        if let Some(old) = attrs.iter_mut().find(|o| o.key == kv.key) {
            old.value = kv.value;
        } else if attrs.len() < max {
            attrs.push(kv);
        } else {
            self.data.dropped_attributes_count += 1;
        }
    }

    pub fn set_attributes(&mut self, kvs: impl IntoIterator<Item = KeyValue>) {
        for kv in kvs {
            self.set_attribute(kv);
        }
    }

    pub fn add_event_with_timestamp(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        timestamp: SystemTime,
        mut attrs: Vec<KeyValue>,
    ) {
        if self.data.events.len() < self.limits.max_events_per_span as usize {
            let max = self.limits.max_attributes_per_event as usize;
            let dropped = u32::try_from(attrs.len().saturating_sub(max)).unwrap_or(u32::MAX);
            attrs.truncate(max);
            self.data
                .events
                .events
                .push(Event::new(name, timestamp, attrs, dropped));
        } else {
            self.data.events.dropped_count += 1;
        }
    }

    pub fn add_link(&mut self, sc: SpanContext, mut attrs: Vec<KeyValue>) {
        if self.data.links.len() < self.limits.max_links_per_span as usize {
            let max = self.limits.max_attributes_per_link as usize;
            let dropped = u32::try_from(attrs.len().saturating_sub(max)).unwrap_or(u32::MAX);
            attrs.truncate(max);
            self.data.links.links.push(Link::new(sc, attrs, dropped));
        } else {
            self.data.links.dropped_count += 1;
        }
    }

    pub fn update_name(&mut self, name: impl Into<Cow<'static, str>>) {
        self.data.name = name.into();
    }

    /// OpenTelemetry's order: Ok > Error > Unset; a status never goes down.
    pub fn set_status(&mut self, status: Status) {
        if status > self.data.status {
            self.data.status = status;
        }
    }
}
