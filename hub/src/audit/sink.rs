//! The JSON-lines file sink of the audit trail (`--audit-log FILE`), for a SIEM to tail.
//!
//! One record per line. The file is opened for append and made owner-only (0600); it is
//! never truncated or rewritten (rotate it with a tool that renames it and then restart
//! the hub, or one that copies and truncates). Writes happen on a thread of their own so
//! a slow disk never blocks a gRPC call: the thread takes every record queued, writes
//! each line, then calls `fdatasync` once for all of them. A record therefore reaches the
//! disk within one write plus one sync of being recorded; a power cut can lose the
//! records still queued, never part of a line that was synced.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::mpsc;

use super::{AuditError, AuditRecord};

pub struct FileSink {
    tx: mpsc::Sender<String>,
}

impl FileSink {
    pub fn open(path: &Path) -> Result<FileSink, AuditError> {
        let err = |message: String| AuditError::Sink {
            path: path.display().to_string(),
            message,
        };
        flotilla_identity::files::private_file(path).map_err(|e| err(e.to_string()))?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| err(e.to_string()))?;
        let (tx, rx) = mpsc::channel::<String>();
        let shown = path.display().to_string();
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || write_loop(file, &rx, &shown))
            .map_err(|e| err(e.to_string()))?;
        Ok(FileSink { tx })
    }

    pub fn append(&self, rec: &AuditRecord) {
        // Our own plain record: serialising cannot fail.
        let line = serde_json::to_string(rec).unwrap_or_default() + "\n";
        if self.tx.send(line).is_err() {
            tracing::error!("the audit log writer has stopped; a record went only to the store");
        }
    }
}

fn write_loop(mut file: File, rx: &mpsc::Receiver<String>, path: &str) {
    while let Ok(first) = rx.recv() {
        let mut batch = first;
        while let Ok(more) = rx.try_recv() {
            batch.push_str(&more);
        }
        let written = file
            .write_all(batch.as_bytes())
            .and_then(|()| file.sync_data());
        if let Err(e) = written {
            tracing::error!(path, error = %e, "writing the audit log failed");
        }
    }
}
