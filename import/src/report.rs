//! The import's report: rows, chunks, accepted and rejected rows (by reason, and the first N
//! rejected rows with their row and line numbers in the file), time and rate, as text for a
//! person or JSON for a script.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

/// A rejected row of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    /// Data row number, from 0 (the header excluded), as the server counts a whole file.
    pub row: u64,
    /// The line of the file the row starts on, from 1.
    pub line: u64,
    pub reason: String,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    pub file: String,
    /// Data rows sent and answered (skipped ones excluded).
    pub rows: u64,
    /// Rows skipped with `--skip`.
    pub skipped: u64,
    /// Requests answered.
    pub chunks: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub by_reason: BTreeMap<String, u64>,
    /// The first rejected rows, by row number.
    pub first_rejected: Vec<Rejected>,
    pub seconds: f64,
}

impl Report {
    pub fn rows_per_s(&self) -> f64 {
        self.rows as f64 / self.seconds.max(1e-9)
    }

    /// The report for a person.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "file      {}", self.file);
        let _ = writeln!(
            out,
            "rows      {} in {} request(s), {:.1} s ({:.0} rows/s){}",
            self.rows,
            self.chunks,
            self.seconds,
            self.rows_per_s(),
            if self.skipped > 0 {
                format!("; {} skipped", self.skipped)
            } else {
                String::new()
            }
        );
        let _ = writeln!(out, "accepted  {}", self.accepted);
        let _ = writeln!(out, "rejected  {}", self.rejected);
        let width = self.by_reason.keys().map(String::len).max().unwrap_or(0);
        for (reason, n) in &self.by_reason {
            let _ = writeln!(out, "  {reason:<width$}  {n}");
        }
        if !self.first_rejected.is_empty() {
            let more = self
                .rejected
                .saturating_sub(self.first_rejected.len() as u64);
            let _ = writeln!(
                out,
                "first rejected rows (row: data rows from 0; line: in the file){}:",
                if more > 0 {
                    format!(", {more} more not listed")
                } else {
                    String::new()
                }
            );
            for r in &self.first_rejected {
                let _ = writeln!(out, "  row {} (line {}): {}", r.row, r.line, r.reason);
            }
        }
        out
    }

    /// The report as one JSON object.
    pub fn json(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        v["rows_per_s"] = serde_json::json!(self.rows_per_s().round());
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lists_reasons_and_rows() {
        let r = Report {
            file: "doses.csv".into(),
            rows: 10,
            chunks: 2,
            accepted: 8,
            rejected: 3,
            by_reason: [
                ("conflict".to_string(), 1),
                ("unknown_vaccine".to_string(), 2),
            ]
            .into(),
            first_rejected: vec![Rejected {
                row: 4,
                line: 6,
                reason: "unknown_vaccine".into(),
            }],
            seconds: 2.0,
            ..Report::default()
        };
        let t = r.text();
        assert!(
            t.contains("rows      10 in 2 request(s), 2.0 s (5 rows/s)"),
            "{t}"
        );
        assert!(t.contains("  unknown_vaccine  2"), "{t}");
        assert!(t.contains("  conflict         1"), "{t}");
        assert!(t.contains(", 2 more not listed:"), "{t}");
        assert!(t.contains("  row 4 (line 6): unknown_vaccine"), "{t}");
        let j: serde_json::Value = serde_json::from_str(&r.json()).unwrap_or_default();
        assert_eq!(j["by_reason"]["unknown_vaccine"], 2);
        assert_eq!(j["rows_per_s"], 5.0);
        assert_eq!(j["first_rejected"][0]["line"], 6);
    }
}
