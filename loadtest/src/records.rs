//! The health-record drivers (contract sections 11 and 12), on the same closed- and open-loop
//! workers as `ingest` and `trace` ([`crate::load`]):
//!
//! - [`run_vaccinations`]: a bulk import of dose records with `POST /v1/vaccinations`, as a
//!   national programme would send its files: the rows of one CSV file cut into requests of up
//!   to [`MAX_DOSES`] records, sent as CSV bodies (each with the file's header row, the rows'
//!   bytes unchanged) or as NDJSON bodies (each row as one JSON object). Every body is built by
//!   [`dose_bodies`] before the clock starts, so the client's own parsing is not timed.
//! - [`run_pass`]: `GET /v1/persons/{id}/pass` for random persons, counted by colour and basis.
//! - [`run_certificates`]: `GET /v1/persons/{id}/certificate` (JSON, or `?format=svg`) for random
//!   persons; [`run_verify`]: `POST /v1/verify` of certificates fetched before the clock starts.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use hyper::Method;
use serde::Deserialize;

use crate::http::Conn;
use crate::load::{
    check_reachable, drive, Bound, Common, Job, JobKind, JobSource, PersonPool, Persons, JSON,
    NDJSON,
};
use crate::report::{Report, RunInfo};
use crate::rng::Rng;

/// Records one `POST /v1/vaccinations` may carry (the contract's limit).
pub const MAX_DOSES: usize = 100_000;
/// The server's body limit (`api/src/decode.rs`, `MAX_BODY_BYTES`): 16 MiB.
pub const SERVER_MAX_BODY_BYTES: usize = 16 << 20;
/// A body is cut before it passes this, a margin under the server's limit.
pub const MAX_BODY_BYTES: usize = 15 << 20;
const CSV: &str = "text/csv";

/// How dose records are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoseFormat {
    /// `text/csv`: the file's header row, then the rows' bytes as they are in the file.
    Csv,
    /// `application/x-ndjson`: one JSON object per row.
    Ndjson,
}

impl DoseFormat {
    /// `csv` or `ndjson`.
    pub fn as_str(self) -> &'static str {
        match self {
            DoseFormat::Csv => "csv",
            DoseFormat::Ndjson => "ndjson",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            DoseFormat::Csv => CSV,
            DoseFormat::Ndjson => NDJSON,
        }
    }
}

/// One request's body and how many records it holds.
#[derive(Debug, Clone)]
pub struct DoseBody {
    pub body: Bytes,
    pub rows: u64,
}

/// The columns of a dose-record CSV (contract section 11), by position in its header.
#[derive(Debug, Clone, Copy, Default)]
struct Columns {
    person: usize,
    dose: usize,
    vaccine: usize,
    administered_at: usize,
    lot: Option<usize>,
    site: Option<usize>,
    area: Option<usize>,
}

impl Columns {
    /// Finds the columns by name (ASCII case and surrounding spaces ignored, as the server does).
    fn of(header: &csv::ByteRecord) -> Result<Columns> {
        let find = |name: &str| {
            header.iter().position(|h| {
                String::from_utf8_lossy(h)
                    .trim()
                    .trim_start_matches('\u{feff}')
                    .eq_ignore_ascii_case(name)
            })
        };
        let need = |name: &str| {
            find(name).ok_or_else(|| {
                anyhow!("the CSV header names no '{name}' column (person, dose, vaccine and administered_at are required)")
            })
        };
        Ok(Columns {
            person: need("person")?,
            dose: need("dose")?,
            vaccine: need("vaccine")?,
            administered_at: need("administered_at")?,
            lot: find("lot"),
            site: find("site"),
            area: find("area"),
        })
    }
}

/// Appends `"name":"value"` (JSON-escaped), after a comma unless it is the object's first field.
fn push_str_field(buf: &mut Vec<u8>, first: &mut bool, name: &str, value: &str) -> Result<()> {
    if !*first {
        buf.push(b',');
    }
    *first = false;
    buf.push(b'"');
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(b"\":");
    serde_json::to_writer(&mut *buf, value)?;
    Ok(())
}

/// Appends `"name":n` when the cell is a base-10 integer (spaces around it allowed, as in the
/// server's CSV), else `"name":"cell"` (which the server rejects, as it rejects the CSV cell).
fn push_int_field(buf: &mut Vec<u8>, first: &mut bool, name: &str, cell: &str) -> Result<()> {
    match cell.trim().parse::<i64>() {
        Ok(n) => {
            if !*first {
                buf.push(b',');
            }
            *first = false;
            buf.push(b'"');
            buf.extend_from_slice(name.as_bytes());
            buf.extend_from_slice(b"\":");
            buf.extend_from_slice(n.to_string().as_bytes());
            Ok(())
        }
        Err(_) => push_str_field(buf, first, name, cell),
    }
}

/// One CSV row as the JSON object `{"person","dose","vaccine","administered_at","lot"?,"site"?,
/// "area"?}`: empty cells are left out (absent, as in the CSV), integers are numbers.
fn row_json(buf: &mut Vec<u8>, cols: &Columns, rec: &csv::ByteRecord) -> Result<()> {
    let cell = |i: usize| String::from_utf8_lossy(rec.get(i).unwrap_or_default()).into_owned();
    let mut first = true;
    buf.push(b'{');
    let person = cell(cols.person);
    if !person.is_empty() {
        push_str_field(buf, &mut first, "person", &person)?;
    }
    let dose = cell(cols.dose);
    if !dose.trim().is_empty() {
        push_int_field(buf, &mut first, "dose", &dose)?;
    }
    let vaccine = cell(cols.vaccine);
    if !vaccine.is_empty() {
        push_str_field(buf, &mut first, "vaccine", &vaccine)?;
    }
    let at = cell(cols.administered_at);
    if !at.trim().is_empty() {
        push_int_field(buf, &mut first, "administered_at", &at)?;
    }
    for (name, col) in [("lot", cols.lot), ("site", cols.site), ("area", cols.area)] {
        if let Some(i) = col {
            let v = cell(i);
            if !v.is_empty() {
                push_str_field(buf, &mut first, name, &v)?;
            }
        }
    }
    buf.extend_from_slice(b"}\n");
    Ok(())
}

/// Cuts the data rows of a dose-record CSV (`data`: the whole file, header first) into request
/// bodies of at most `batch` records and [`MAX_BODY_BYTES`] bytes, stopping after `max_rows`
/// records. CSV bodies repeat the file's header row and carry the rows' bytes unchanged (quoted
/// line breaks and all, so the server numbers them as it would number the whole file); NDJSON
/// bodies carry one JSON object per row (a row with fewer cells than the header is sent with
/// the cells it has).
pub fn dose_bodies(
    data: &[u8],
    format: DoseFormat,
    batch: usize,
    max_rows: Option<u64>,
) -> Result<Vec<DoseBody>> {
    if !(1..=MAX_DOSES).contains(&batch) {
        bail!("batch must be in 1..={MAX_DOSES} (the contract's limit per request)");
    }
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(data);
    let header = rdr
        .byte_headers()
        .context("reading the CSV header")?
        .clone();
    let cols = Columns::of(&header)?;
    let header_end = usize::try_from(rdr.position().byte())?;
    let mut head = data
        .get(..header_end)
        .ok_or_else(|| anyhow!("CSV header position out of range"))?
        .to_vec();
    if head.last() != Some(&b'\n') {
        head.push(b'\n');
    }
    let limit = max_rows.unwrap_or(u64::MAX);
    let mut bodies = Vec::new();
    let mut rec = csv::ByteRecord::new();
    let mut rows: u64 = 0;
    // CSV: the current body's first row starts here. NDJSON: the body being written.
    let mut start = header_end;
    let mut in_body: u64 = 0;
    let mut json: Vec<u8> = Vec::new();
    let mut row = Vec::with_capacity(256);
    loop {
        if rows >= limit {
            break;
        }
        let before = usize::try_from(rdr.position().byte())?;
        if !rdr
            .read_byte_record(&mut rec)
            .with_context(|| format!("reading CSV row {rows}"))?
        {
            break;
        }
        let after = usize::try_from(rdr.position().byte())?;
        match format {
            DoseFormat::Csv => {
                // Cut before this row if it would take the body past the byte limit.
                if in_body > 0 && head.len() + (after - start) + 1 > MAX_BODY_BYTES {
                    bodies.push(csv_body(&head, data, start, before, in_body)?);
                    start = before;
                    in_body = 0;
                }
                if head.len() + (after - start) + 1 > MAX_BODY_BYTES {
                    bail!("CSV row {rows} alone is over {MAX_BODY_BYTES} bytes");
                }
                in_body += 1;
                if in_body as usize == batch {
                    bodies.push(csv_body(&head, data, start, after, in_body)?);
                    start = after;
                    in_body = 0;
                }
            }
            DoseFormat::Ndjson => {
                row.clear();
                row_json(&mut row, &cols, &rec)?;
                if in_body > 0 && json.len() + row.len() > MAX_BODY_BYTES {
                    bodies.push(DoseBody {
                        body: Bytes::from(std::mem::take(&mut json)),
                        rows: in_body,
                    });
                    in_body = 0;
                }
                if row.len() > MAX_BODY_BYTES {
                    bail!("CSV row {rows} alone is over {MAX_BODY_BYTES} bytes as JSON");
                }
                json.extend_from_slice(&row);
                in_body += 1;
                if in_body as usize == batch {
                    bodies.push(DoseBody {
                        body: Bytes::from(std::mem::take(&mut json)),
                        rows: in_body,
                    });
                    in_body = 0;
                }
            }
        }
        rows += 1;
    }
    if in_body > 0 {
        match format {
            DoseFormat::Csv => {
                let end = usize::try_from(rdr.position().byte())?.min(data.len());
                bodies.push(csv_body(&head, data, start, end, in_body)?);
            }
            DoseFormat::Ndjson => bodies.push(DoseBody {
                body: Bytes::from(json),
                rows: in_body,
            }),
        }
    }
    Ok(bodies)
}

/// The header, then `data[start..end]`, ending in a line break.
fn csv_body(head: &[u8], data: &[u8], start: usize, end: usize, rows: u64) -> Result<DoseBody> {
    let part = data
        .get(start..end)
        .ok_or_else(|| anyhow!("CSV row positions out of range"))?;
    let mut body = Vec::with_capacity(head.len() + part.len() + 1);
    body.extend_from_slice(head);
    body.extend_from_slice(part);
    if body.last() != Some(&b'\n') {
        body.push(b'\n');
    }
    Ok(DoseBody {
        body: Bytes::from(body),
        rows,
    })
}

/// Options of [`run_vaccinations`].
#[derive(Debug, Clone)]
pub struct VaccinationOptions {
    pub common: Common,
    pub format: DoseFormat,
    /// Records per request (at most [`MAX_DOSES`]; bodies are also cut at [`MAX_BODY_BYTES`]).
    pub batch: usize,
}

struct DoseSource {
    bodies: std::vec::IntoIter<DoseBody>,
    content_type: &'static str,
}

impl JobSource for DoseSource {
    fn next_job(&mut self) -> Result<Option<Job>> {
        Ok(self.bodies.next().map(|b| Job {
            method: Method::POST,
            route: Cow::Borrowed("/v1/vaccinations"),
            body: b.body,
            content_type: Some(self.content_type),
            kind: JobKind::Doses,
            scans: b.rows,
            label: None,
        }))
    }
}

/// Registers the areas of a JSON array file (`POST /v1/areas`, one request: the server takes an
/// area tree all or nothing); returns how many it registered.
pub async fn register_areas(common: &Common, path: &Path) -> Result<u64> {
    #[derive(Deserialize)]
    struct Registered {
        registered: u64,
    }
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut conn = Conn::new(common.conn_settings());
    let a = conn
        .request(Method::POST, "/v1/areas", Some(JSON), Bytes::from(text))
        .await
        .map_err(|e| anyhow!("registering areas: {e}"))?;
    if !a.status.is_success() {
        let text = String::from_utf8_lossy(&a.body);
        let snippet: String = text.chars().take(300).collect();
        bail!("registering areas: HTTP {} {}", a.status, snippet);
    }
    let r: Registered = serde_json::from_slice(&a.body)
        .context("registering areas: unexpected answer (no \"registered\")")?;
    Ok(r.registered)
}

/// Sends `bodies` (from [`dose_bodies`]) to `POST /v1/vaccinations` over the run's connections,
/// each request as soon as a connection is free (or at `--rate`), until all are answered.
pub async fn run_vaccinations(opts: VaccinationOptions, bodies: Vec<DoseBody>) -> Result<Report> {
    let c = &opts.common;
    check_reachable(c.conn_settings()).await?;
    let rows: u64 = bodies.iter().map(|b| b.rows).sum();
    let source = DoseSource {
        bodies: bodies.into_iter(),
        content_type: opts.format.content_type(),
    };
    let (rec, elapsed, _) = drive(c, Box::new(source), Bound::Scans(rows), None).await?;
    Ok(Report::new(
        RunInfo {
            command: "vaccinations-import".into(),
            url: c.target.to_string(),
            connections: c.connections,
            http2: c.http2,
            batch: Some(opts.batch),
            rate: c.rate,
        },
        &rec,
        elapsed,
    ))
}

/// What a person read asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    Pass,
    Certificate { svg: bool },
}

struct ReadSource {
    pool: PersonPool,
    rng: Rng,
    remaining: Option<u64>,
    read: Read,
}

impl JobSource for ReadSource {
    fn next_job(&mut self) -> Result<Option<Job>> {
        if let Some(r) = self.remaining.as_mut() {
            if *r == 0 {
                return Ok(None);
            }
            *r -= 1;
        }
        let Some(person) = self.pool.pick(&mut self.rng) else {
            return Ok(None);
        };
        let (route, kind) = match self.read {
            Read::Pass => (format!("/v1/persons/{person}/pass"), JobKind::Pass),
            Read::Certificate { svg: false } => (
                format!("/v1/persons/{person}/certificate"),
                JobKind::Certificate,
            ),
            Read::Certificate { svg: true } => (
                format!("/v1/persons/{person}/certificate?format=svg"),
                JobKind::Certificate,
            ),
        };
        Ok(Some(Job {
            method: Method::GET,
            route: Cow::Owned(route),
            body: Bytes::new(),
            content_type: None,
            kind,
            scans: 0,
            label: None,
        }))
    }
}

/// Options of [`run_pass`], [`run_certificates`] and [`run_verify`].
#[derive(Debug, Clone)]
pub struct ReadOptions {
    pub common: Common,
    /// Who is looked up (drawn uniformly, with `seed`).
    pub persons: Persons,
    /// Stop after this many requests.
    pub requests: Option<u64>,
    pub seed: u64,
}

fn bound_of(opts: &ReadOptions, what: &str) -> Result<Bound> {
    Ok(match (opts.requests, opts.common.duration) {
        (Some(n), _) => Bound::Requests(n),
        (None, Some(d)) => Bound::Time(d),
        (None, None) => bail!("a {what} run needs a bound: --duration and/or --requests"),
    })
}

fn read_report(
    command: &str,
    c: &Common,
    rec: &crate::report::Recorder,
    elapsed: Duration,
) -> Report {
    Report::new(
        RunInfo {
            command: command.into(),
            url: c.target.to_string(),
            connections: c.connections,
            http2: c.http2,
            batch: None,
            rate: c.rate,
        },
        rec,
        elapsed,
    )
}

async fn run_reads(opts: ReadOptions, read: Read, command: &str) -> Result<Report> {
    let bound = bound_of(&opts, command)?;
    let pool = PersonPool::of(&opts.persons)?;
    let c = &opts.common;
    check_reachable(c.conn_settings()).await?;
    let source = ReadSource {
        pool,
        rng: Rng::new(opts.seed),
        remaining: opts.requests,
        read,
    };
    let (rec, elapsed, _) = drive(c, Box::new(source), bound, None).await?;
    Ok(read_report(command, c, &rec, elapsed))
}

/// Drives `GET /v1/persons/{id}/pass` for random persons until a bound is hit; the report
/// counts the answers by `color/basis`.
pub async fn run_pass(opts: ReadOptions) -> Result<Report> {
    run_reads(opts, Read::Pass, "pass").await
}

/// Drives `GET /v1/persons/{id}/certificate` (with `?format=svg` when `svg`) for random persons
/// until a bound is hit: every answer is a certificate signed for that request.
pub async fn run_certificates(opts: ReadOptions, svg: bool) -> Result<Report> {
    run_reads(opts, Read::Certificate { svg }, "certificates").await
}

struct VerifySource {
    bodies: Vec<Bytes>,
    rng: Rng,
    remaining: Option<u64>,
}

impl JobSource for VerifySource {
    fn next_job(&mut self) -> Result<Option<Job>> {
        if let Some(r) = self.remaining.as_mut() {
            if *r == 0 {
                return Ok(None);
            }
            *r -= 1;
        }
        let Some(body) = self
            .bodies
            .get(self.rng.below(self.bodies.len() as u64) as usize)
        else {
            return Ok(None);
        };
        Ok(Some(Job {
            method: Method::POST,
            route: Cow::Borrowed("/v1/verify"),
            body: body.clone(),
            content_type: Some(JSON),
            kind: JobKind::Verify,
            scans: 0,
            label: None,
        }))
    }
}

/// What [`fetch_certificates`] got.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The `hc1` texts.
    pub hc1: Vec<String>,
    pub elapsed: Duration,
}

/// Issues `n` certificates of random persons (`GET /v1/persons/{id}/certificate`), `concurrency`
/// at a time, and returns their `hc1` texts; any failed request fails the whole fetch.
pub async fn fetch_certificates(
    common: &Common,
    persons: &Persons,
    n: usize,
    seed: u64,
    concurrency: usize,
) -> Result<Fetched> {
    #[derive(Deserialize)]
    struct Cert {
        hc1: String,
    }
    if n == 0 {
        bail!("the certificate pool must hold at least one certificate");
    }
    let pool = PersonPool::of(persons)?;
    let mut rng = Rng::new(seed ^ 0xCE27);
    let mut who = Vec::with_capacity(n);
    for _ in 0..n {
        who.push(
            pool.pick(&mut rng)
                .ok_or_else(|| anyhow!("no person to pick"))?,
        );
    }
    let settings = common.conn_settings();
    let t0 = Instant::now();
    let who = Arc::new(who);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.clamp(1, 64) {
        let (who, next, settings) = (who.clone(), next.clone(), settings.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(settings);
            let mut got = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(person) = who.get(i) else { break };
                let route = format!("/v1/persons/{person}/certificate");
                let a = conn
                    .request(Method::GET, &route, None, Bytes::new())
                    .await
                    .map_err(|e| anyhow!("GET {route}: {e}"))?;
                if !a.status.is_success() {
                    let text = String::from_utf8_lossy(&a.body);
                    let snippet: String = text.chars().take(300).collect();
                    bail!("GET {route}: HTTP {} {}", a.status, snippet);
                }
                let c: Cert = serde_json::from_slice(&a.body)
                    .with_context(|| format!("GET {route}: no hc1 in the answer"))?;
                got.push(c.hc1);
            }
            Ok::<_, anyhow::Error>(got)
        }));
    }
    let mut hc1 = Vec::with_capacity(n);
    for t in tasks {
        hc1.extend(t.await.context("certificate fetch task failed")??);
    }
    Ok(Fetched {
        hc1,
        elapsed: t0.elapsed(),
    })
}

/// Drives `POST /v1/verify` with `hc1` texts (drawn uniformly from `pool`, e.g. from
/// [`fetch_certificates`]) until a bound is hit; the report counts `valid` and
/// `invalid:<reason>` verdicts.
pub async fn run_verify(opts: ReadOptions, pool: &[String]) -> Result<Report> {
    let bound = bound_of(&opts, "verify")?;
    if pool.is_empty() {
        bail!("no certificate to verify");
    }
    let bodies = pool
        .iter()
        .map(|h| serde_json::to_vec(&serde_json::json!({ "hc1": h })).map(Bytes::from))
        .collect::<Result<Vec<_>, _>>()?;
    let c = &opts.common;
    check_reachable(c.conn_settings()).await?;
    let source = VerifySource {
        bodies,
        rng: Rng::new(opts.seed),
        remaining: opts.requests,
    };
    let (rec, elapsed, _) = drive(c, Box::new(source), bound, None).await?;
    Ok(read_report("verify", c, &rec, elapsed))
}

/// The outcome a 2xx answer counts as (`None`: not the expected shape).
pub(crate) fn outcome(kind: JobKind, body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct PassAnswer<'a> {
        #[serde(borrow)]
        color: Cow<'a, str>,
        #[serde(borrow)]
        basis: Cow<'a, str>,
    }
    #[derive(Deserialize)]
    struct CertAnswer<'a> {
        #[serde(borrow)]
        hc1: Cow<'a, str>,
    }
    #[derive(Deserialize)]
    struct VerifyAnswer<'a> {
        valid: bool,
        #[serde(borrow, default)]
        reason: Option<Cow<'a, str>>,
    }
    match kind {
        JobKind::Pass => {
            let p: PassAnswer = serde_json::from_slice(body).ok()?;
            Some(format!("{}/{}", p.color, p.basis))
        }
        JobKind::Certificate => {
            if body.starts_with(b"<") {
                return body
                    .windows(4)
                    .any(|w| w == b"<svg")
                    .then(|| "svg".to_string());
            }
            let c: CertAnswer = serde_json::from_slice(body).ok()?;
            c.hc1.starts_with("HC1:").then(|| "issued".to_string())
        }
        JobKind::Verify => {
            let v: VerifyAnswer = serde_json::from_slice(body).ok()?;
            Some(if v.valid {
                "valid".to_string()
            } else {
                format!("invalid:{}", v.reason.as_deref().unwrap_or("?"))
            })
        }
        JobKind::Scans | JobKind::Trace | JobKind::Doses => None,
    }
}

/// Reads a whole dose-record file (bodies are cut from it in memory).
pub fn read_dose_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const FILE: &str = "person,dose,vaccine,administered_at,lot,site,area\n\
        p1,1,EU/1/20/1528,1622505600,FE1,\"Ward 3, room \"\"B\"\"\",ST-1\n\
        p2,2,CoronaVac,1624924800,,,\n\
        p3,1,EU/1/20/1528,1624924800,,\"two\nlines\",\n\
        p4,x,EU/1/20/1528,12/08/2021,,,\n\
        p5,1,Abdala,1624924800,L5,S5,ST-2\n";

    fn text(b: &DoseBody) -> String {
        String::from_utf8(b.body.to_vec()).unwrap()
    }

    #[test]
    fn csv_bodies_repeat_the_header_and_keep_the_rows_bytes() {
        let bodies = dose_bodies(FILE.as_bytes(), DoseFormat::Csv, 2, None).unwrap();
        assert_eq!(bodies.iter().map(|b| b.rows).collect::<Vec<_>>(), [2, 2, 1]);
        let header = "person,dose,vaccine,administered_at,lot,site,area\n";
        for b in &bodies {
            assert!(text(b).starts_with(header), "{}", text(b));
            assert!(text(b).ends_with('\n'));
        }
        // The rows, concatenated, are the file's data rows byte for byte.
        let rows: String = bodies
            .iter()
            .map(|b| text(b)[header.len()..].to_string())
            .collect();
        assert_eq!(rows, FILE[header.len()..]);
        assert!(text(&bodies[1]).contains("\"two\nlines\""));
        // A file without a final line break still gives whole bodies.
        let cut = FILE.trim_end();
        let bodies = dose_bodies(cut.as_bytes(), DoseFormat::Csv, 100, None).unwrap();
        assert_eq!(bodies.len(), 1);
        assert_eq!(bodies[0].rows, 5);
        assert!(text(&bodies[0]).ends_with("ST-2\n"));
        // --rows stops early.
        let bodies = dose_bodies(FILE.as_bytes(), DoseFormat::Csv, 100, Some(3)).unwrap();
        assert_eq!(bodies[0].rows, 3);
        assert!(text(&bodies[0]).ends_with("lines\",\n"));
    }

    #[test]
    fn ndjson_bodies_are_one_object_per_row() {
        let bodies = dose_bodies(FILE.as_bytes(), DoseFormat::Ndjson, 3, None).unwrap();
        assert_eq!(bodies.iter().map(|b| b.rows).collect::<Vec<_>>(), [3, 2]);
        let lines: Vec<serde_json::Value> = bodies
            .iter()
            .flat_map(|b| text(b).lines().map(String::from).collect::<Vec<_>>())
            .map(|l| serde_json::from_str(&l).unwrap())
            .collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(
            lines[0],
            serde_json::json!({"person":"p1","dose":1,"vaccine":"EU/1/20/1528",
                "administered_at":1622505600,"lot":"FE1","site":"Ward 3, room \"B\"","area":"ST-1"})
        );
        // Empty cells are absent.
        assert_eq!(
            lines[1],
            serde_json::json!({"person":"p2","dose":2,"vaccine":"CoronaVac","administered_at":1624924800})
        );
        assert_eq!(lines[2]["site"], "two\nlines");
        // Cells that are no integer stay strings, for the server to reject.
        assert_eq!(lines[3]["dose"], "x");
        assert_eq!(lines[3]["administered_at"], "12/08/2021");
    }

    #[test]
    fn bodies_stay_under_the_servers_limit() {
        let mut file = String::from("person,dose,vaccine,administered_at,site\n");
        let site = "s".repeat(200);
        for i in 0..100_000 {
            file.push_str(&format!("p{i:06},1,CoronaVac,1624924800,{site}\n"));
        }
        for format in [DoseFormat::Csv, DoseFormat::Ndjson] {
            let bodies = dose_bodies(file.as_bytes(), format, MAX_DOSES, None).unwrap();
            assert!(
                bodies.len() >= 2,
                "{format:?}: one body would be over 16 MiB"
            );
            assert_eq!(bodies.iter().map(|b| b.rows).sum::<u64>(), 100_000);
            assert!(bodies.iter().all(|b| b.body.len() <= MAX_BODY_BYTES));
        }
    }

    #[test]
    fn a_header_without_the_required_columns_is_refused() {
        let err = dose_bodies(
            b"person,dose,vaccine\np1,1,CoronaVac\n",
            DoseFormat::Csv,
            10,
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("administered_at"), "{err}");
        assert!(dose_bodies(FILE.as_bytes(), DoseFormat::Csv, 0, None).is_err());
        assert!(dose_bodies(FILE.as_bytes(), DoseFormat::Csv, MAX_DOSES + 1, None).is_err());
    }

    #[test]
    fn outcomes_of_the_answers() {
        let pass = br#"{"person":"p1","color":"green","basis":"vaccinated","as_of":1}"#;
        assert_eq!(
            outcome(JobKind::Pass, pass).as_deref(),
            Some("green/vaccinated")
        );
        let cert = br#"{"person":"p1","hc1":"HC1:NCF","issued":1,"expires":2}"#;
        assert_eq!(
            outcome(JobKind::Certificate, cert).as_deref(),
            Some("issued")
        );
        let svg = b"<?xml version=\"1.0\"?><svg xmlns=\"http://www.w3.org/2000/svg\"></svg>";
        assert_eq!(outcome(JobKind::Certificate, svg).as_deref(), Some("svg"));
        assert_eq!(outcome(JobKind::Certificate, br#"{"hc1":"x"}"#), None);
        let ok = br#"{"valid":true,"kid":"k","issuer":"VN","issued":1,"expires":2,"claims":{}}"#;
        assert_eq!(outcome(JobKind::Verify, ok).as_deref(), Some("valid"));
        let bad = br#"{"valid":false,"reason":"bad_signature"}"#;
        assert_eq!(
            outcome(JobKind::Verify, bad).as_deref(),
            Some("invalid:bad_signature")
        );
        assert_eq!(outcome(JobKind::Pass, b"nope"), None);
    }
}
