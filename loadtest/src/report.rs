//! Measurements of a load run and the final report: per-worker [`Recorder`]s (an hdrhistogram
//! of latencies in microseconds plus counters of outcomes), merged at the end into a
//! [`Report`] that prints as a human table and serialises as JSON (`--json FILE`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency the histograms track (longer ones are clamped), in microseconds.
const MAX_LATENCY_US: u64 = 3_600_000_000;

pub(crate) fn new_histogram() -> Histogram<u64> {
    // 3 significant figures from 1 µs to one hour. The bounds are constants that hdrhistogram
    // accepts, so this cannot fail at run time.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant histogram bounds are valid")
}

/// What one worker saw. Merged into a [`Report`] at the end.
#[derive(Debug, Clone)]
pub struct Recorder {
    hist: Histogram<u64>,
    by_label: BTreeMap<String, Histogram<u64>>,
    pub requests: u64,
    pub requests_ok: u64,
    pub scans_sent: u64,
    pub scans_accepted: u64,
    pub scans_rejected: u64,
    pub status: BTreeMap<u16, u64>,
    pub transport: BTreeMap<String, u64>,
    pub reasons: BTreeMap<String, u64>,
    pub f1_total: u64,
    pub f2_total: u64,
    pub f1_max: u64,
    pub traces_ok: u64,
    /// Answers of the health-record reads by outcome (`green/vaccinated`, `issued`, `valid`,
    /// `invalid:bad_signature`, ...).
    pub outcomes: BTreeMap<String, u64>,
    /// Body bytes of the 2xx answers counted in `outcomes`.
    pub answer_bytes: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            hist: new_histogram(),
            by_label: BTreeMap::new(),
            requests: 0,
            requests_ok: 0,
            scans_sent: 0,
            scans_accepted: 0,
            scans_rejected: 0,
            status: BTreeMap::new(),
            transport: BTreeMap::new(),
            reasons: BTreeMap::new(),
            f1_total: 0,
            f2_total: 0,
            f1_max: 0,
            traces_ok: 0,
            outcomes: BTreeMap::new(),
            answer_bytes: 0,
        }
    }
}

/// A duration in whole microseconds, clamped into the histograms' range.
pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_LATENCY_US)
}

impl Recorder {
    /// Records one request's latency (also under `label`, e.g. `depth=2`, when given).
    pub fn latency(&mut self, d: Duration, label: Option<&str>) {
        let us = micros(d);
        self.hist.saturating_record(us);
        if let Some(l) = label {
            self.by_label
                .entry(l.to_string())
                .or_insert_with(new_histogram)
                .saturating_record(us);
        }
    }

    /// Adds another recorder's figures to this one.
    pub fn merge(&mut self, other: &Recorder) {
        // Both histograms share bounds, so `add` cannot fail; ignore the impossible error.
        let _ = self.hist.add(&other.hist);
        for (l, h) in &other.by_label {
            let _ = self
                .by_label
                .entry(l.clone())
                .or_insert_with(new_histogram)
                .add(h);
        }
        self.requests += other.requests;
        self.requests_ok += other.requests_ok;
        self.scans_sent += other.scans_sent;
        self.scans_accepted += other.scans_accepted;
        self.scans_rejected += other.scans_rejected;
        for (k, v) in &other.status {
            *self.status.entry(*k).or_default() += v;
        }
        for (k, v) in &other.transport {
            *self.transport.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.reasons {
            *self.reasons.entry(k.clone()).or_default() += v;
        }
        self.f1_total += other.f1_total;
        self.f2_total += other.f2_total;
        self.f1_max = self.f1_max.max(other.f1_max);
        self.traces_ok += other.traces_ok;
        for (k, v) in &other.outcomes {
            *self.outcomes.entry(k.clone()).or_default() += v;
        }
        self.answer_bytes += other.answer_bytes;
    }
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// Percentiles of a microsecond histogram.
    pub fn from_histogram(h: &Histogram<u64>) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Latency {
                count: 0,
                mean_ms: 0.0,
                p50_ms: 0.0,
                p90_ms: 0.0,
                p99_ms: 0.0,
                p999_ms: 0.0,
                max_ms: 0.0,
            };
        }
        Latency {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// Trace result sizes (trace runs only).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceSummary {
    pub traces_ok: u64,
    pub mean_f1: f64,
    pub mean_f2: f64,
    pub max_f1: u64,
}

/// Cases registered during an ingest run (`--cases-per-min`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaseSummary {
    /// Target cases per minute.
    pub per_min: f64,
    /// Case ids are `<id_prefix>-1`, `<id_prefix>-2`, ...
    pub id_prefix: String,
    /// Cases whose scheduled time fell within the ingestion (more than `attempted` when
    /// registrations, one at a time, took longer than the spacing).
    pub due: u64,
    /// Cases the run tried to register (one id each, retries included once).
    pub attempted: u64,
    /// Cases the server answered 2xx (201 created, or 200 for a retry it had stored).
    pub registered: u64,
    /// Of `registered`, those answered 200 (the id was stored already).
    pub replayed: u64,
    /// 409s because the person already had an active case (not errors).
    pub active_conflicts: u64,
    /// Cases that failed: other non-2xx answers, or no answer after the retries.
    pub errors: u64,
    /// `errors` by kind (`HTTP 403`, `timeout`, ...).
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Requests re-sent after a transport error.
    pub retries: u64,
    /// Latency of every `POST /v1/cases` that got an answer.
    pub latency: Latency,
}

/// The result of a run; `Display` is the human report, `Serialize` the `--json` one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// `ingest`, `trace`, `vaccinations-import`, `pass`, `certificates` or `verify`.
    pub command: String,
    pub url: String,
    /// Connections; with `http2`, concurrent streams on one HTTP/2 connection.
    pub connections: usize,
    /// Everything went over one cleartext HTTP/2 connection.
    pub http2: bool,
    /// Scans per request (ingest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
    /// Target request rate (open loop), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    pub elapsed_s: f64,
    pub requests: u64,
    /// Requests answered 2xx.
    pub requests_ok: u64,
    pub requests_per_s: f64,
    /// Records sent: scans (`ingest`) or dose records (`vaccinations-import`); likewise
    /// `scans_accepted`, `scans_rejected`, `scans_per_s` and `rejected_by_reason`.
    pub scans_sent: u64,
    pub scans_accepted: u64,
    pub scans_rejected: u64,
    /// Accepted scans per second.
    pub scans_per_s: f64,
    /// Latency of every request that got an answer (open loop: from its scheduled start).
    pub latency: Latency,
    /// Latency by label (trace: `depth=1`, `depth=2`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub latency_by: BTreeMap<String, Latency>,
    /// Non-2xx answers by HTTP status.
    pub errors_by_status: BTreeMap<String, u64>,
    /// Requests without an answer (connect refused, reset, timeout) by kind.
    pub transport_errors: BTreeMap<String, u64>,
    /// Rejected scans by the server's reason code.
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// Venues registered before the run (ingest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub venues_registered: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceSummary>,
    /// Cases registered while ingesting (ingest with `--cases-per-min`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cases: Option<CaseSummary>,
    /// Health-record reads (`pass`, `certificates`, `verify`): 2xx answers by outcome.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub outcomes: BTreeMap<String, u64>,
    /// Mean body size of those answers, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_answer_bytes: Option<f64>,
}

/// Run settings the report repeats.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub command: String,
    pub url: String,
    pub connections: usize,
    pub http2: bool,
    pub batch: Option<usize>,
    pub rate: Option<f64>,
}

impl Report {
    /// Builds the report from the merged recorder of a run that lasted `elapsed`.
    pub fn new(info: RunInfo, rec: &Recorder, elapsed: Duration) -> Report {
        let secs = elapsed.as_secs_f64();
        let per_s = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let trace = (info.command == "trace").then(|| {
            let n = rec.traces_ok.max(1) as f64;
            TraceSummary {
                traces_ok: rec.traces_ok,
                mean_f1: rec.f1_total as f64 / n,
                mean_f2: rec.f2_total as f64 / n,
                max_f1: rec.f1_max,
            }
        });
        Report {
            command: info.command,
            url: info.url,
            connections: info.connections,
            http2: info.http2,
            batch: info.batch,
            rate: info.rate,
            elapsed_s: secs,
            requests: rec.requests,
            requests_ok: rec.requests_ok,
            requests_per_s: per_s(rec.requests),
            scans_sent: rec.scans_sent,
            scans_accepted: rec.scans_accepted,
            scans_rejected: rec.scans_rejected,
            scans_per_s: per_s(rec.scans_accepted),
            latency: Latency::from_histogram(&rec.hist),
            latency_by: rec
                .by_label
                .iter()
                .map(|(k, h)| (k.clone(), Latency::from_histogram(h)))
                .collect(),
            errors_by_status: rec
                .status
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            transport_errors: rec.transport.clone(),
            rejected_by_reason: rec.reasons.clone(),
            venues_registered: None,
            trace,
            cases: None,
            mean_answer_bytes: (!rec.outcomes.is_empty()).then(|| {
                rec.answer_bytes as f64 / rec.outcomes.values().sum::<u64>().max(1) as f64
            }),
            outcomes: rec.outcomes.clone(),
        }
    }

    /// Total requests that failed (non-2xx or no answer).
    pub fn failed_requests(&self) -> u64 {
        self.errors_by_status.values().sum::<u64>() + self.transport_errors.values().sum::<u64>()
    }
}

/// A latency in milliseconds, with a unit that keeps 3-4 significant digits:
/// `0.412 ms`, `12.3 ms`, `1.20 s`.
pub fn fmt_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.3} ms")
    }
}

/// A count with thousands separators: `1,234,567`.
pub fn fmt_count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    let mut until_comma = s.len() % 3;
    for c in s.chars() {
        if until_comma == 0 && !out.is_empty() {
            out.push(',');
        }
        if until_comma == 0 {
            until_comma = 3;
        }
        out.push(c);
        until_comma -= 1;
    }
    out
}

/// A rate with one decimal and thousands separators: `12,345.6`.
pub fn fmt_rate(r: f64) -> String {
    if !r.is_finite() || r < 0.0 {
        return "-".to_string();
    }
    let whole = r.trunc() as u64;
    let tenth = ((r - r.trunc()) * 10.0).round() as u64;
    if tenth >= 10 {
        format!("{}.0", fmt_count(whole + 1))
    } else {
        format!("{}.{}", fmt_count(whole), tenth)
    }
}

fn fmt_latency_line(f: &mut fmt::Formatter<'_>, name: &str, l: &Latency) -> fmt::Result {
    writeln!(
        f,
        "  {name:<10} p50 {:>10}  p90 {:>10}  p99 {:>10}  p99.9 {:>10}  max {:>10}  (n={})",
        fmt_ms(l.p50_ms),
        fmt_ms(l.p90_ms),
        fmt_ms(l.p99_ms),
        fmt_ms(l.p999_ms),
        fmt_ms(l.max_ms),
        fmt_count(l.count)
    )
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.http2 {
            write!(
                f,
                "{} against {} — one HTTP/2 connection, {} concurrent stream(s)",
                self.command, self.url, self.connections
            )?;
        } else {
            write!(
                f,
                "{} against {} — {} connection(s)",
                self.command, self.url, self.connections
            )?;
        }
        if let Some(b) = self.batch {
            write!(f, ", batch {b}")?;
        }
        match self.rate {
            Some(r) => writeln!(f, ", open loop at {} req/s", fmt_rate(r))?,
            None => writeln!(f, ", closed loop")?,
        }
        if let Some(v) = self.venues_registered {
            writeln!(f, "  venues registered: {}", fmt_count(v))?;
        }
        writeln!(
            f,
            "  elapsed    {:.2} s, {} requests ({} ok, {} failed)",
            self.elapsed_s,
            fmt_count(self.requests),
            fmt_count(self.requests_ok),
            fmt_count(self.failed_requests())
        )?;
        writeln!(f, "  requests/s {}", fmt_rate(self.requests_per_s))?;
        if self.command == "ingest" {
            writeln!(
                f,
                "  scans/s    {} accepted  ({} sent, {} accepted, {} rejected)",
                fmt_rate(self.scans_per_s),
                fmt_count(self.scans_sent),
                fmt_count(self.scans_accepted),
                fmt_count(self.scans_rejected)
            )?;
        }
        if self.command == "vaccinations-import" {
            writeln!(
                f,
                "  records/s  {} accepted  ({} sent, {} accepted, {} rejected)",
                fmt_rate(self.scans_per_s),
                fmt_count(self.scans_sent),
                fmt_count(self.scans_accepted),
                fmt_count(self.scans_rejected)
            )?;
        }
        writeln!(f, "latency")?;
        fmt_latency_line(f, "all", &self.latency)?;
        for (k, l) in &self.latency_by {
            fmt_latency_line(f, k, l)?;
        }
        if let Some(c) = &self.cases {
            writeln!(
                f,
                "cases      {} registered ({} replayed), {} already active (409), {} errors; \
                 {} attempted of {} due at {}/min, ids {}-N",
                fmt_count(c.registered),
                fmt_count(c.replayed),
                fmt_count(c.active_conflicts),
                fmt_count(c.errors),
                fmt_count(c.attempted),
                fmt_count(c.due),
                fmt_rate(c.per_min),
                c.id_prefix
            )?;
            fmt_latency_line(f, "register", &c.latency)?;
            for (k, v) in &c.errors_by_kind {
                writeln!(f, "  case error {k:<16} {}", fmt_count(*v))?;
            }
        }
        if let Some(t) = &self.trace {
            writeln!(
                f,
                "traces     {} answered, mean F1 {:.1}, mean F2 {:.1}, max F1 {}",
                fmt_count(t.traces_ok),
                t.mean_f1,
                t.mean_f2,
                fmt_count(t.max_f1)
            )?;
        }
        if !self.errors_by_status.is_empty() || !self.transport_errors.is_empty() {
            writeln!(f, "errors")?;
            for (k, v) in &self.errors_by_status {
                writeln!(f, "  HTTP {k:<16} {}", fmt_count(*v))?;
            }
            for (k, v) in &self.transport_errors {
                writeln!(f, "  {k:<21} {}", fmt_count(*v))?;
            }
        }
        if !self.outcomes.is_empty() {
            write!(f, "answers")?;
            if let Some(b) = self.mean_answer_bytes {
                write!(f, "    mean {b:.0} bytes")?;
            }
            writeln!(f)?;
            for (k, v) in &self.outcomes {
                writeln!(f, "  {k:<32} {}", fmt_count(*v))?;
            }
        }
        if !self.rejected_by_reason.is_empty() {
            let what = if self.command == "vaccinations-import" {
                "records"
            } else {
                "scans"
            };
            writeln!(f, "rejected {what} by reason")?;
            for (k, v) in &self.rejected_by_reason {
                writeln!(f, "  {k:<21} {}", fmt_count(*v))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_from_known_distribution() {
        let mut r = Recorder::default();
        // 1..=1000 ms, one each.
        for ms in 1..=1000u64 {
            r.latency(Duration::from_millis(ms), Some("depth=1"));
        }
        let l = Latency::from_histogram(&r.hist);
        assert_eq!(l.count, 1000);
        let close = |a: f64, b: f64| (a - b).abs() <= b * 0.002 + 0.001;
        assert!(close(l.p50_ms, 500.0), "{l:?}");
        assert!(close(l.p90_ms, 900.0), "{l:?}");
        assert!(close(l.p99_ms, 990.0), "{l:?}");
        assert!(close(l.p999_ms, 999.0), "{l:?}");
        assert!(close(l.max_ms, 1000.0), "{l:?}");
        assert!(close(l.mean_ms, 500.5), "{l:?}");
        assert_eq!(r.by_label.len(), 1);
    }

    #[test]
    fn merge_adds_everything() {
        let mut a = Recorder::default();
        let mut b = Recorder::default();
        a.latency(Duration::from_micros(100), None);
        b.latency(Duration::from_micros(300), Some("x"));
        a.requests = 1;
        b.requests = 2;
        *a.status.entry(503).or_default() += 1;
        *b.status.entry(503).or_default() += 2;
        *b.reasons.entry("too_old".into()).or_default() += 5;
        b.f1_max = 9;
        a.merge(&b);
        assert_eq!(a.requests, 3);
        assert_eq!(a.status.get(&503), Some(&3));
        assert_eq!(a.reasons.get("too_old"), Some(&5));
        assert_eq!(a.hist.len(), 2);
        assert_eq!(a.f1_max, 9);
        assert!(a.by_label.contains_key("x"));
    }

    #[test]
    fn formatting() {
        assert_eq!(fmt_ms(0.4123), "0.412 ms");
        assert_eq!(fmt_ms(12.34), "12.3 ms");
        assert_eq!(fmt_ms(123.4), "123 ms");
        assert_eq!(fmt_ms(1204.0), "1.20 s");
        assert_eq!(fmt_count(0), "0");
        assert_eq!(fmt_count(999), "999");
        assert_eq!(fmt_count(1000), "1,000");
        assert_eq!(fmt_count(1_234_567), "1,234,567");
        assert_eq!(fmt_rate(12_345.67), "12,345.7");
        assert_eq!(fmt_rate(9.96), "10.0");
        assert_eq!(fmt_rate(f64::NAN), "-");
    }

    #[test]
    fn report_text_and_json() {
        let mut r = Recorder::default();
        for us in [500u64, 800, 1200, 5000] {
            r.latency(Duration::from_micros(us), None);
        }
        r.requests = 5;
        r.requests_ok = 4;
        r.scans_sent = 4000;
        r.scans_accepted = 3990;
        r.scans_rejected = 10;
        r.status.insert(413, 1);
        r.transport.insert("connect".into(), 2);
        r.reasons.insert("unknown_venue".into(), 10);
        let info = RunInfo {
            command: "ingest".into(),
            url: "http://127.0.0.1:8080".into(),
            connections: 4,
            http2: false,
            batch: Some(1000),
            rate: None,
        };
        let rep = Report::new(info, &r, Duration::from_secs(2));
        assert_eq!(rep.requests_per_s, 2.5);
        assert_eq!(rep.scans_per_s, 1995.0);
        assert_eq!(rep.failed_requests(), 3);
        let text = rep.to_string();
        for needle in [
            "closed loop",
            "requests/s 2.5",
            "1,995.0 accepted",
            "HTTP 413",
            "unknown_venue",
            "p99.9",
            "connect",
        ] {
            assert!(text.contains(needle), "{needle:?} missing in\n{text}");
        }
        let json = serde_json::to_value(&rep).expect("json");
        assert_eq!(json["scans_accepted"], 3990);
        assert_eq!(json["errors_by_status"]["413"], 1);
        assert_eq!(json["rejected_by_reason"]["unknown_venue"], 10);
        assert!(json["latency"]["p999_ms"].as_f64().is_some());
        assert!(json.get("trace").is_none());
        assert!(
            json.get("cases").is_none(),
            "no cases block unless cases ran"
        );
        assert!(!text.contains("cases "), "{text}");
    }

    #[test]
    fn report_with_cases_keeps_the_ingest_lines() {
        let mut r = Recorder::default();
        r.latency(Duration::from_micros(900), None);
        r.requests = 1;
        r.requests_ok = 1;
        r.scans_sent = 100;
        r.scans_accepted = 100;
        let info = RunInfo {
            command: "ingest".into(),
            url: "http://127.0.0.1:8080".into(),
            connections: 2,
            http2: false,
            batch: Some(100),
            rate: None,
        };
        let plain = Report::new(info.clone(), &r, Duration::from_secs(1));
        let mut hist = new_histogram();
        for us in [2_000u64, 3_000, 40_000] {
            hist.saturating_record(us);
        }
        let mut with = plain.clone();
        with.cases = Some(CaseSummary {
            per_min: 60.0,
            id_prefix: "lt-42-1700000000".into(),
            due: 6,
            attempted: 5,
            registered: 3,
            replayed: 1,
            active_conflicts: 1,
            errors: 1,
            errors_by_kind: [("HTTP 503".to_string(), 1)].into_iter().collect(),
            retries: 0,
            latency: Latency::from_histogram(&hist),
        });
        let (a, b) = (plain.to_string(), with.to_string());
        for line in a.lines() {
            assert!(b.lines().any(|l| l == line), "{line:?} changed in\n{b}");
        }
        for needle in [
            "cases      3 registered (1 replayed), 1 already active (409), 1 errors; 5 attempted \
             of 6 due at 60.0/min, ids lt-42-1700000000-N",
            "  register   p50",
            "case error HTTP 503",
        ] {
            assert!(b.contains(needle), "{needle:?} missing in\n{b}");
        }
        let json = serde_json::to_value(&with).expect("json");
        assert_eq!(json["cases"]["registered"], 3);
        assert_eq!(json["cases"]["active_conflicts"], 1);
        assert_eq!(json["cases"]["errors"], 1);
        assert_eq!(json["cases"]["errors_by_kind"]["HTTP 503"], 1);
        assert_eq!(json["cases"]["latency"]["count"], 3);
        assert!(json["cases"]["latency"]["p99_ms"].as_f64().is_some());
        assert_eq!(json["scans_accepted"], 100, "ingest figures unchanged");
    }
}
