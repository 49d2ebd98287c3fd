//! The audit log: an append-only, durable record of who looked up whom (`audit.log`).
//!
//! Every entry is made durable (group-committed fsync in `Fsync` mode) before the caller answers
//! the lookup it records. Entries are never purged by retention: they are the authority's record
//! of access to personal data.

use std::path::Path;

use rkyv::rancor;

use crate::error::{Error, Result};
use crate::journal::{self, Journal};
use crate::types::AuditEntry;

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
struct AuditRecord {
    ts: i64,
    who: String,
    action: String,
    subject: String,
}

/// The audit log of a data directory.
pub(crate) struct AuditLog {
    journal: Journal,
}

fn decode(payload: &[u8]) -> std::result::Result<AuditEntry, String> {
    let r = rkyv::from_bytes::<AuditRecord, rancor::Error>(payload)
        .map_err(|e| format!("audit frame does not validate: {e}"))?;
    Ok(AuditEntry {
        ts: r.ts,
        who: r.who,
        action: r.action,
        subject: r.subject,
    })
}

impl AuditLog {
    /// Opens `audit.log`, cutting off a torn tail. Returns the dropped bytes and reason, if any.
    pub(crate) fn open(dir: &Path, fsync: bool) -> Result<(AuditLog, Option<(u64, String)>)> {
        let (journal, content) = Journal::open(&dir.join("audit.log"), fsync)?;
        let (end, damage) = journal::read_frames(&content, |p| decode(p).map(|_| ()));
        let dropped = match damage {
            Some(reason) => {
                journal.truncate_to(end as u64)?;
                Some((content.len() as u64 - end as u64, reason))
            }
            None => {
                journal.resume_at(end as u64);
                None
            }
        };
        Ok((AuditLog { journal }, dropped))
    }

    /// Appends one entry durably.
    pub(crate) fn append(&self, entry: AuditEntry) -> Result<()> {
        let rec = AuditRecord {
            ts: entry.ts,
            who: entry.who,
            action: entry.action,
            subject: entry.subject,
        };
        let bytes = rkyv::to_bytes::<rancor::Error>(&rec).map_err(|e| Error::Io {
            context: "encoding an audit record".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let mut frame = Vec::with_capacity(bytes.len() + 32);
        journal::encode_frame(&bytes, &mut frame);
        self.journal.append(&frame)
    }

    /// Entries with `ts >= since`, oldest first (in append order).
    pub(crate) fn since(&self, since: i64) -> Result<Vec<AuditEntry>> {
        let content = self.journal.read_all()?;
        let mut out = Vec::new();
        journal::read_frames(&content, |p| {
            let e = decode(p)?;
            if e.ts >= since {
                out.push(e);
            }
            Ok(())
        });
        Ok(out)
    }
}
