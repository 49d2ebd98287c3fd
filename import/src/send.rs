//! Streaming a dose-record CSV file to `POST /v1/vaccinations`: a reader thread cuts the file into
//! chunks (each a CSV body with the file's header row, at most `chunk` rows and
//! [`MAX_CHUNK_BYTES`]), and up to `concurrency` chunks are in flight at once over keep-alive
//! HTTP/1.1 connections. A chunk answered `503` (or not answered: a refused connection, a reset,
//! a timeout, a gateway error) is sent again after a backoff (the `Retry-After` the server gave,
//! else exponential from 250 ms to 30 s): the server accepts an exact duplicate and stores it
//! once, so a retry of a chunk that was in fact stored is harmless. Any other answer that is not
//! `200` stops the import. Rejections come back as indexes within the chunk; they are mapped to
//! the row number in the file (data rows from 0, the header excluded, as the server counts) and
//! the line the row starts on.
//!
//! Memory: the reader holds one chunk being cut, the channel `concurrency` more, each in flight
//! one: `O(chunk * (2 + 2 * concurrency))` rows whatever the file's size.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::report::{Rejected, Report};

/// Most rows in one request (the server's limit).
pub const MAX_CHUNK_ROWS: usize = 100_000;
/// A chunk is cut before its body passes this size (the server takes at most 16 MiB).
pub const MAX_CHUNK_BYTES: usize = 12 << 20;
/// The columns the server requires in the header.
pub const REQUIRED_COLUMNS: [&str; 4] = ["person", "dose", "vaccine", "administered_at"];

/// How to import.
#[derive(Debug, Clone)]
pub struct Options {
    /// `http://host:port` (a path prefix is kept).
    pub url: String,
    pub token: Option<String>,
    /// Rows per request, 1..=100,000.
    pub chunk: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Attempts of one chunk before the import gives up.
    pub attempts: u32,
    /// Longest wait for one answer.
    pub timeout: Duration,
    /// Rejections listed in the report (the rest are counted).
    pub list_rejected: usize,
    /// Skip this many data rows first (to resume; row numbers stay those of the file).
    pub skip: u64,
    /// Draw a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            url: "http://127.0.0.1:8080".into(),
            token: None,
            chunk: 50_000,
            concurrency: 2,
            attempts: 8,
            timeout: Duration::from_secs(300),
            list_rejected: 20,
            skip: 0,
            progress: true,
        }
    }
}

/// Why an import stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {error}")]
    File { path: PathBuf, error: String },
    #[error("{0}")]
    Header(String),
    #[error("invalid --url {0:?}: expected http://HOST[:PORT][/PREFIX]")]
    Url(String),
    #[error("could not reach the server at {url}: {error}")]
    Unreachable { url: String, error: String },
    #[error("the server did not register the areas: HTTP {status}: {detail}")]
    Areas { status: u16, detail: String },
    #[error("the server refused rows {first}..={last}: HTTP {status}: {detail}")]
    Refused {
        first: u64,
        last: u64,
        status: u16,
        detail: String,
    },
}

/// An import that stopped, with what was acknowledged before it did.
#[derive(Debug)]
pub struct Failed {
    pub error: ImportError,
    pub report: Report,
}

/// One chunk: a CSV body and where its rows are in the file.
struct Chunk {
    body: Bytes,
    /// File row number of the chunk's first row.
    first_row: u64,
    /// The line each row starts on (1-based).
    lines: Vec<u64>,
    /// File offset just past the chunk.
    end_byte: u64,
}

/// Imports `path`. On success the report covers every row; on failure, the chunks acknowledged
/// before it.
pub async fn import(path: &Path, options: &Options) -> Result<Report, Box<Failed>> {
    let started = Instant::now();
    let mut report = Report {
        file: path.display().to_string(),
        ..Report::default()
    };
    let fail = |error: ImportError, report: &Report| {
        Box::new(Failed {
            error,
            report: report.clone(),
        })
    };
    let base = base_uri(&options.url).map_err(|e| fail(e, &report))?;
    let file = File::open(path).map_err(|e| {
        fail(
            ImportError::File {
                path: path.to_path_buf(),
                error: e.to_string(),
            },
            &report,
        )
    })?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let raw = Arc::new(Mutex::new(Raw::default()));
    let mut rdr = csv_reader(Tap {
        inner: file,
        raw: raw.clone(),
    });
    let header = read_header(&mut rdr, path).map_err(|e| fail(e, &report))?;

    let http = Http::with_base(options, base);
    http.healthz().await.map_err(|e| fail(e, &report))?;

    let pb = progress_bar(options.progress, size);
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = mpsc::channel::<Result<Chunk, ImportError>>(options.concurrency.max(1));
    let reader = {
        let stop = stop.clone();
        let chunk = options.chunk.clamp(1, MAX_CHUNK_ROWS);
        let skip = options.skip;
        let path = path.to_path_buf();
        std::thread::spawn(move || {
            let cut = Cut {
                raw: &raw,
                chunk,
                skip,
                path: &path,
            };
            cut_chunks(rdr, header, cut, &tx, &stop)
        })
    };

    let mut in_flight = tokio::task::JoinSet::new();
    let mut first_rejected: Vec<Rejected> = Vec::new();
    let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
    let mut error: Option<ImportError> = None;
    let mut input_done = false;
    let mut acked_bytes = 0u64;
    loop {
        // Keep `concurrency` chunks in flight while there is input and no failure.
        while !input_done && error.is_none() && in_flight.len() < options.concurrency.max(1) {
            match rx.recv().await {
                None => input_done = true,
                Some(Err(e)) => error = Some(e),
                Some(Ok(chunk)) => {
                    let http = http.clone();
                    in_flight.spawn(async move {
                        let answer = http.post_chunk(&chunk).await;
                        (chunk, answer)
                    });
                }
            }
        }
        let Some(done) = in_flight.join_next().await else {
            break;
        };
        let (chunk, answer) = match done {
            Ok(x) => x,
            Err(e) => {
                error.get_or_insert(ImportError::Unreachable {
                    url: options.url.clone(),
                    error: format!("a sender task failed: {e}"),
                });
                continue;
            }
        };
        match answer {
            Err(e) => {
                error.get_or_insert(e);
            }
            Ok(answer) => {
                report.chunks += 1;
                report.rows += chunk.lines.len() as u64;
                report.accepted += answer.accepted;
                for r in answer.rejected {
                    let row = chunk.first_row + r.index;
                    let line = usize::try_from(r.index)
                        .ok()
                        .and_then(|i| chunk.lines.get(i))
                        .copied()
                        .unwrap_or(0);
                    *by_reason.entry(r.reason.clone()).or_default() += 1;
                    first_rejected.push(Rejected {
                        row,
                        line,
                        reason: r.reason,
                    });
                }
                // Keep only the first N by row (chunks may complete out of order).
                if first_rejected.len() > options.list_rejected * 2 + 1024 {
                    first_rejected.sort_by_key(|r| r.row);
                    first_rejected.truncate(options.list_rejected);
                }
                acked_bytes = acked_bytes.max(chunk.end_byte);
                pb.set_position(acked_bytes);
                let secs = started.elapsed().as_secs_f64().max(1e-3);
                pb.set_message(format!(
                    "{} rows, {:.0} rows/s, {} rejected",
                    report.rows,
                    report.rows as f64 / secs,
                    by_reason.values().sum::<u64>()
                ));
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    drop(rx);
    let read = reader.join();
    pb.finish_and_clear();
    first_rejected.sort_by_key(|r| r.row);
    first_rejected.truncate(options.list_rejected);
    report.rejected = by_reason.values().sum();
    report.by_reason = by_reason;
    report.first_rejected = first_rejected;
    report.skipped = match read {
        Ok(skipped) => skipped,
        Err(_) => {
            error.get_or_insert(ImportError::File {
                path: path.to_path_buf(),
                error: "the reader thread failed".into(),
            });
            0
        }
    };
    report.seconds = started.elapsed().as_secs_f64();
    match error {
        None => Ok(report),
        Some(error) => Err(Box::new(Failed { error, report })),
    }
}

/// Registers areas first (`POST /v1/areas` with `json`, an area object or array; admin token):
/// returns how many the server registered.
pub async fn register_areas(options: &Options, json: Bytes) -> Result<u64, ImportError> {
    let http = Http::new(options)?;
    http.healthz().await?;
    let (status, bytes) = http
        .send(Method::POST, "/v1/areas", Some((&json, "application/json")))
        .await?;
    let answer: Option<u64> = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v["registered"].as_u64());
    match (status, answer) {
        (StatusCode::OK, Some(n)) => Ok(n),
        _ => Err(ImportError::Areas {
            status: status.as_u16(),
            detail: String::from_utf8_lossy(&bytes).into_owned(),
        }),
    }
}

/// The CSV reader of the import: the server's dialect (RFC 4180, any line ends, BOM skipped,
/// rows of any length kept so the server can reject them as `invalid_row`).
fn csv_reader<R: std::io::Read>(input: R) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(1 << 20)
        .from_reader(input)
}

/// The raw bytes the CSV reader has read and no row has passed yet, to find the line a row
/// starts on (the reader's own positions count the blank lines and the line feed of a CRLF
/// before a row as part of it).
#[derive(Debug, Default)]
struct Raw {
    bytes: VecDeque<u8>,
    /// File offset of `bytes[0]`.
    base: u64,
    /// The line of `bytes[0]`, from 1 (0 until the first call).
    line: u64,
}

impl Raw {
    /// The line of the first byte at or after `from` that is not a line break: where the row
    /// whose record position is `from` starts. Offsets must not decrease between calls.
    fn start_line(&mut self, from: u64) -> u64 {
        self.line = self.line.max(1);
        while self.base < from {
            match self.bytes.pop_front() {
                Some(b'\n') => self.line += 1,
                Some(_) => {}
                None => break,
            }
            self.base += 1;
        }
        let mut line = self.line;
        for &b in &self.bytes {
            match b {
                b'\n' => line += 1,
                b'\r' => {}
                _ => break,
            }
        }
        line
    }
}

/// A reader that copies what it reads into a [`Raw`].
struct Tap<R> {
    inner: R,
    raw: Arc<Mutex<Raw>>,
}

impl<R: std::io::Read> std::io::Read for Tap<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(out)?;
        if let Ok(mut raw) = self.raw.lock() {
            raw.bytes.extend(&out[..n]);
        }
        Ok(n)
    }
}

/// Reads and checks the header row (the server would refuse every chunk without it).
fn read_header<R: std::io::Read>(
    rdr: &mut csv::Reader<R>,
    path: &Path,
) -> Result<csv::ByteRecord, ImportError> {
    let mut header = csv::ByteRecord::new();
    let found = rdr
        .read_byte_record(&mut header)
        .map_err(|e| ImportError::File {
            path: path.to_path_buf(),
            error: e.to_string(),
        })?;
    if !found {
        return Err(ImportError::Header(format!(
            "{} is empty: it needs a header row naming {}",
            path.display(),
            REQUIRED_COLUMNS.join(", ")
        )));
    }
    let names: Vec<String> = header
        .iter()
        .map(|c| {
            let c = c.strip_prefix(b"\xef\xbb\xbf").unwrap_or(c);
            String::from_utf8_lossy(c).trim().to_ascii_lowercase()
        })
        .collect();
    let missing: Vec<&str> = REQUIRED_COLUMNS
        .iter()
        .filter(|c| !names.iter().any(|n| n == *c))
        .copied()
        .collect();
    if !missing.is_empty() {
        return Err(ImportError::Header(format!(
            "the header row of {} lacks the column(s) {} (it must name {}, in any order)",
            path.display(),
            missing.join(", "),
            REQUIRED_COLUMNS.join(", ")
        )));
    }
    Ok(header)
}

/// How [`cut_chunks`] cuts: the [`Raw`] under its reader, rows per chunk, rows to skip, the
/// file (for errors).
struct Cut<'a> {
    raw: &'a Mutex<Raw>,
    chunk: usize,
    skip: u64,
    path: &'a Path,
}

/// The reader thread: cuts the file into chunks and sends them; returns how many rows it
/// skipped.
fn cut_chunks<R: std::io::Read>(
    mut rdr: csv::Reader<R>,
    header: csv::ByteRecord,
    cut: Cut<'_>,
    tx: &mpsc::Sender<Result<Chunk, ImportError>>,
    stop: &AtomicBool,
) -> u64 {
    let Cut {
        raw,
        chunk,
        skip,
        path,
    } = cut;
    let mut row = csv::ByteRecord::new();
    let mut next_row: u64 = 0;
    let mut skipped = 0;
    let new_writer = || {
        let mut w = csv::WriterBuilder::new()
            .flexible(true)
            .has_headers(false)
            .from_writer(Vec::with_capacity(1 << 20));
        let _ = w.write_byte_record(&header);
        w
    };
    let mut wtr = new_writer();
    let mut lines: Vec<u64> = Vec::new();
    let mut first_row = 0;
    let mut end_byte = 0;
    let finish = |wtr: csv::Writer<Vec<u8>>,
                  lines: Vec<u64>,
                  first_row: u64,
                  end_byte: u64|
     -> Option<Chunk> {
        let body = wtr.into_inner().ok()?;
        Some(Chunk {
            body: Bytes::from(body),
            first_row,
            lines,
            end_byte,
        })
    };
    loop {
        if stop.load(Ordering::Relaxed) {
            return skipped;
        }
        match rdr.read_byte_record(&mut row) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let _ = tx.blocking_send(Err(ImportError::File {
                    path: path.to_path_buf(),
                    error: format!("row {next_row}: {e}"),
                }));
                return skipped;
            }
        }
        let this_row = next_row;
        next_row += 1;
        if this_row < skip {
            skipped += 1;
            continue;
        }
        if lines.is_empty() {
            first_row = this_row;
        }
        let start_line = row
            .position()
            .map_or(0, |p| raw.lock().map_or(0, |mut r| r.start_line(p.byte())));
        if wtr.write_byte_record(&row).is_err() {
            return skipped;
        }
        lines.push(start_line);
        end_byte = rdr.position().byte();
        let full = lines.len() >= chunk || wtr.get_ref().len() >= MAX_CHUNK_BYTES;
        if full {
            let done = std::mem::replace(&mut wtr, new_writer());
            let Some(c) = finish(done, std::mem::take(&mut lines), first_row, end_byte) else {
                return skipped;
            };
            if tx.blocking_send(Ok(c)).is_err() {
                return skipped;
            }
        }
    }
    if !lines.is_empty() {
        // At the end of the file: past any final line break.
        let end_byte = end_byte.max(rdr.position().byte());
        if let Some(c) = finish(wtr, lines, first_row, end_byte) {
            let _ = tx.blocking_send(Ok(c));
        }
    }
    skipped
}

fn base_uri(url: &str) -> Result<(String, String), ImportError> {
    let bad = || ImportError::Url(url.to_string());
    let uri: Uri = url.parse().map_err(|_| bad())?;
    if uri.scheme_str() != Some("http") {
        return Err(bad());
    }
    let authority = uri.authority().ok_or_else(bad)?.to_string();
    let prefix = uri.path().trim_end_matches('/').to_string();
    Ok((authority, prefix))
}

#[derive(Deserialize)]
struct Answer {
    accepted: u64,
    rejected: Vec<AnswerRejected>,
}

#[derive(Deserialize)]
struct AnswerRejected {
    index: u64,
    reason: String,
}

#[derive(Clone)]
struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    /// `(authority, path prefix)`.
    base: (String, String),
    token: Option<String>,
    timeout: Duration,
    attempts: u32,
}

/// One attempt's result.
enum Attempt {
    Done(StatusCode, Bytes),
    /// Try again after this long (a 503's `Retry-After`, else the backoff).
    Again(Option<Duration>, String),
}

impl Http {
    fn new(options: &Options) -> Result<Http, ImportError> {
        Ok(Http::with_base(options, base_uri(&options.url)?))
    }

    fn with_base(options: &Options, base: (String, String)) -> Http {
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        Http {
            client,
            base,
            token: options.token.clone(),
            timeout: options.timeout,
            attempts: options.attempts.max(1),
        }
    }

    fn uri(&self, path: &str) -> Result<Uri, ImportError> {
        let s = format!("http://{}{}{}", self.base.0, self.base.1, path);
        s.parse().map_err(|_| ImportError::Url(s))
    }

    fn url(&self) -> String {
        format!("http://{}{}", self.base.0, self.base.1)
    }

    async fn once(&self, method: Method, path: &str, body: Option<(&Bytes, &str)>) -> Attempt {
        let uri = match self.uri(path) {
            Ok(u) => u,
            Err(e) => return Attempt::Again(None, e.to_string()),
        };
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = &self.token {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some((_, content_type)) = body {
            req = req.header(CONTENT_TYPE, content_type);
        }
        let bytes = body.map(|(b, _)| b.clone()).unwrap_or_default();
        let req = match req.body(Full::new(bytes)) {
            Ok(r) => r,
            Err(e) => return Attempt::Again(None, e.to_string()),
        };
        let sent = tokio::time::timeout(self.timeout, async {
            let resp = self.client.request(req).await.map_err(|e| {
                let mut msg = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    msg.push_str(&format!(": {s}"));
                    src = s.source();
                }
                msg
            })?;
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|s| Duration::from_secs(s.min(60)));
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, retry_after, bytes))
        })
        .await;
        match sent {
            Err(_) => Attempt::Again(None, format!("no answer in {:?}", self.timeout)),
            Ok(Err(e)) => Attempt::Again(None, e),
            Ok(Ok((status, retry_after, bytes))) => match status.as_u16() {
                503 => Attempt::Again(
                    retry_after,
                    format!("503: {}", String::from_utf8_lossy(&bytes)),
                ),
                408 | 500 | 502 | 504 => Attempt::Again(
                    None,
                    format!("{status}: {}", String::from_utf8_lossy(&bytes)),
                ),
                _ => Attempt::Done(status, bytes),
            },
        }
    }

    /// Sends until an answer other than "try again", or `attempts` tries.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(&Bytes, &str)>,
    ) -> Result<(StatusCode, Bytes), ImportError> {
        let mut backoff = Duration::from_millis(250);
        let mut last = String::new();
        for attempt in 1..=self.attempts {
            match self.once(method.clone(), path, body).await {
                Attempt::Done(status, bytes) => return Ok((status, bytes)),
                Attempt::Again(after, why) => {
                    last = why;
                    if attempt < self.attempts {
                        tokio::time::sleep(after.unwrap_or(backoff)).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
        }
        Err(ImportError::Unreachable {
            url: self.url(),
            error: format!("{} attempts, the last: {last}", self.attempts),
        })
    }

    /// `GET /healthz` first: a clear error if nothing answers, before a row is sent.
    async fn healthz(&self) -> Result<(), ImportError> {
        let (status, bytes) = self.send(Method::GET, "/healthz", None).await?;
        if status != StatusCode::OK {
            return Err(ImportError::Unreachable {
                url: self.url(),
                error: format!(
                    "GET /healthz answered {status}: {}",
                    String::from_utf8_lossy(&bytes)
                ),
            });
        }
        Ok(())
    }

    async fn post_chunk(&self, chunk: &Chunk) -> Result<Answer, ImportError> {
        let (status, bytes) = self
            .send(
                Method::POST,
                "/v1/vaccinations",
                Some((&chunk.body, "text/csv; charset=utf-8")),
            )
            .await?;
        let first = chunk.first_row;
        let last = first + (chunk.lines.len() as u64).saturating_sub(1);
        if status != StatusCode::OK {
            let detail = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["detail"].as_str().map(String::from))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(ImportError::Refused {
                first,
                last,
                status: status.as_u16(),
                detail,
            });
        }
        serde_json::from_slice::<Answer>(&bytes).map_err(|e| ImportError::Refused {
            first,
            last,
            status: status.as_u16(),
            detail: format!("an answer that is not {{\"accepted\",\"rejected\"}}: {e}"),
        })
    }
}

fn progress_bar(enabled: bool, bytes: u64) -> ProgressBar {
    let target = if enabled {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let pb = ProgressBar::with_draw_target(Some(bytes), target);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner:.green} {elapsed_precise} [{bar:30.cyan/blue}] {percent:>3}% of {total_bytes}  {msg}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    if enabled {
        pb.enable_steady_tick(Duration::from_millis(120));
    }
    pb
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            base_uri("http://127.0.0.1:8080").unwrap(),
            ("127.0.0.1:8080".into(), String::new())
        );
        assert_eq!(
            base_uri("http://localhost:9/api/").unwrap(),
            ("localhost:9".into(), "/api".into())
        );
        for bad in ["https://x:1", "127.0.0.1:8080", "ftp://x", "nope", ""] {
            assert!(base_uri(bad).is_err(), "{bad}");
        }
    }

    fn tapped(csv: &str) -> (csv::Reader<Tap<&[u8]>>, Arc<Mutex<Raw>>) {
        let raw = Arc::new(Mutex::new(Raw::default()));
        let rdr = csv_reader(Tap {
            inner: csv.as_bytes(),
            raw: raw.clone(),
        });
        (rdr, raw)
    }

    #[test]
    fn chunks_keep_rows_lines_and_the_header() {
        let csv = "\u{feff}person,dose,vaccine,administered_at\r\n\
                   p1,1,Abdala,1700000000\r\n\
                   \r\n\
                   \"p2\",1,Abdala,\"17000\r\n00001\"\r\n\
                   p3,1,Abdala\r\n\
                   p4,1,Abdala,1700000003\r\n\
                   p5,1,Abdala,1700000004\r\n";
        let (rdr, raw) = tapped(csv);
        let mut rdr = rdr;
        let header = read_header(&mut rdr, Path::new("x.csv")).unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let stop = AtomicBool::new(false);
        let cut = Cut {
            raw: &raw,
            chunk: 2,
            skip: 1,
            path: Path::new("x.csv"),
        };
        let skipped = cut_chunks(rdr, header, cut, &tx, &stop);
        drop(tx);
        assert_eq!(skipped, 1);
        let mut chunks = Vec::new();
        while let Ok(Ok(c)) = rx.try_recv() {
            chunks.push(c);
        }
        let firsts: Vec<u64> = chunks.iter().map(|c| c.first_row).collect();
        assert_eq!(firsts, [1, 3]);
        assert_eq!(chunks[0].lines, [4, 6]);
        assert_eq!(chunks[1].lines, [7, 8]);
        // Each body has the header; quoted cells stay quoted; short rows stay short.
        let body = String::from_utf8(chunks[0].body.to_vec()).unwrap();
        assert_eq!(
            body,
            "person,dose,vaccine,administered_at\np2,1,Abdala,\"17000\r\n00001\"\np3,1,Abdala\n"
        );
        // (The reader stops a CRLF row after its CR.)
        assert!(csv.len() as u64 - chunks[1].end_byte <= 1);
        // Without a line feed at the end, the last row's line is still right.
        let csv = "person,dose,vaccine,administered_at\np1,1,Abdala,1\n\n\np2,1,Abdala,2";
        let (mut rdr, raw) = tapped(csv);
        let header = read_header(&mut rdr, Path::new("x.csv")).unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let cut = Cut {
            raw: &raw,
            chunk: 10,
            skip: 0,
            path: Path::new("x.csv"),
        };
        cut_chunks(rdr, header, cut, &tx, &stop);
        let Ok(Ok(c)) = rx.try_recv() else {
            panic!("no chunk");
        };
        assert_eq!(c.lines, [2, 5]);
    }

    #[test]
    fn headers_must_name_the_required_columns() {
        for (csv, ok) in [
            ("person,dose,vaccine,administered_at\n", true),
            (" Person ,DOSE,vaccine,administered_at,extra\n", true),
            ("person,dose,vaccine\n", false),
            ("", false),
        ] {
            let mut rdr = csv_reader(csv.as_bytes());
            assert_eq!(read_header(&mut rdr, Path::new("x")).is_ok(), ok, "{csv:?}");
        }
    }
}
