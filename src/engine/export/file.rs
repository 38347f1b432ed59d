//! The embedded local default: OTLP JSON lines, one ExportTraceServiceRequest per line
//! (the OpenTelemetry Collector file-exporter format), appended with a single write so
//! several processes can share one file. Rotates once (`.1`) past a size limit.

use super::otlp::{encode_request, resource_attrs};
use super::sink::{Delivered, ExportControl, ExportResult, Exporter};
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_sdk::trace::SpanData;
use opentelemetry_sdk::Resource;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

pub struct FileExporter {
    path: PathBuf,
    max_bytes: u64,
    file: Option<File>,
    resource: ResourceAttributesWithSchema,
}

impl FileExporter {
    pub fn new(path: PathBuf, max_bytes: u64, resource: &Resource) -> Self {
        FileExporter {
            path,
            max_bytes,
            file: None,
            resource: resource_attrs(resource),
        }
    }

    fn open(&mut self) -> Result<&mut File, String> {
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
        self.file
            .as_mut()
            .ok_or_else(|| "trace file unavailable".to_string())
    }

    fn rotate_if_large(&mut self) {
        let Ok(meta) = std::fs::metadata(&self.path) else {
            return;
        };
        if meta.len() < self.max_bytes {
            return;
        }
        let mut rotated = self.path.clone().into_os_string();
        rotated.push(".1");
        // Another process may have rotated first; either way we reopen.
        let _ = std::fs::rename(&self.path, rotated);
        self.file = None;
    }
}

impl Exporter for FileExporter {
    fn export(&mut self, batch: Vec<SpanData>, _ctl: &dyn ExportControl) -> ExportResult {
        let req = encode_request(batch, &self.resource);
        let mut line = serde_json::to_vec(&req).map_err(|e| e.to_string())?;
        line.push(b'\n');
        self.rotate_if_large();
        let f = self.open()?;
        if let Err(e) = f.write_all(&line) {
            self.file = None;
            return Err(format!("cannot write {}: {e}", self.path.display()));
        }
        Ok(Delivered::All)
    }

    fn flush(&mut self) {
        if let Some(f) = self.file.as_mut() {
            let _ = f.flush();
        }
    }
}
