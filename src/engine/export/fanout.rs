//! Several exporters (`exporter="otlp,console"`): the main one decides what a batch
//! counts as; the others get a copy first. They are local (a file, the console), so a
//! copy costs no network wait; a copy one of them could not take is counted in
//! `copies_failed`, and the main exporter's outcome is the batch's.

use crate::engine::export::sink::{ExportControl, ExportResult, Exporter, Stats};
use opentelemetry_sdk::trace::SpanData;

pub struct FanOut {
    main: Box<dyn Exporter>,
    others: Vec<Box<dyn Exporter>>,
}

impl FanOut {
    pub fn new(main: Box<dyn Exporter>, others: Vec<Box<dyn Exporter>>) -> Self {
        FanOut { main, others }
    }
}

impl Exporter for FanOut {
    fn export(&mut self, batch: Vec<SpanData>, ctl: &dyn ExportControl) -> ExportResult {
        for other in &mut self.others {
            if let Err(e) = other.export(batch.clone(), ctl) {
                let stats = ctl.stats();
                Stats::add(&stats.copies_failed, batch.len() as u64);
                stats.set_error(&e);
            }
        }
        self.main.export(batch, ctl)
    }

    fn flush(&mut self) {
        for other in &mut self.others {
            other.flush();
        }
        self.main.flush();
    }

    fn shutdown(&mut self) {
        for other in &mut self.others {
            other.shutdown();
        }
        self.main.shutdown();
    }

    fn spool(&mut self, batch: Vec<SpanData>, stats: &Stats) -> bool {
        self.main.spool(batch, stats)
    }

    fn drain_spool(&mut self, ctl: &dyn ExportControl) -> Option<std::time::Instant> {
        self.main.drain_spool(ctl)
    }
}
