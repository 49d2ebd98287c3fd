//! The drivers against an in-process stand-in for checkin-server (a few lines of hyper that
//! follow the contract's wire format for /healthz, /v1/venues, /v1/scans, /v1/trace,
//! POST /v1/cases, and the health records' /v1/areas, /v1/vaccinations, /v1/persons/{id}/pass,
//! /v1/persons/{id}/certificate and /v1/verify). The real end-to-end run against checkin-server
//! lives in the workspace's `tests` crate.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use checkin_loadtest::gen::{now_unix, Params};
use checkin_loadtest::load::{
    run_ingest, run_trace, Common, DepthMode, IngestOptions, Persons, Source, TraceOptions, CUT_OFF,
};
use checkin_loadtest::net::Target;
use checkin_loadtest::records::{self, DoseFormat, ReadOptions, VaccinationOptions};
use checkin_loadtest::{run_ingest_with_cases, CaseOptions};

/// A case the mock stored.
#[derive(Debug, Clone, PartialEq)]
struct StoredCase {
    person: String,
    sampled_at: i64,
}

#[derive(Default)]
struct State {
    venues: Mutex<HashSet<String>>,
    scans: AtomicU64,
    requests: AtomicU64,
    ndjson_requests: AtomicU64,
    traces: AtomicU64,
    bad_auth: AtomicU64,
    /// Persons of every scan received.
    persons: Mutex<HashSet<String>>,
    /// Cases by id, the active case of each person, and POST /v1/cases requests per id.
    cases: Mutex<HashMap<String, StoredCase>>,
    active: Mutex<HashMap<String, String>>,
    case_posts: Mutex<HashMap<String, u64>>,
    /// Case requests answered 400 (sampled_at outside the retention window).
    bad_cases: AtomicU64,
    /// Areas registered; dose requests by content type; dose records accepted (person, dose).
    areas: AtomicU64,
    dose_csv_requests: AtomicU64,
    dose_ndjson_requests: AtomicU64,
    doses: Mutex<HashSet<(String, i64)>>,
    /// Pass, certificate (JSON / SVG) and verify requests.
    passes: AtomicU64,
    certificates: AtomicU64,
    svgs: AtomicU64,
    verifications: AtomicU64,
}

/// `POST /v1/vaccinations` as section 11 has it, for CSV (header first) and NDJSON bodies:
/// `invalid_dose` for a dose that is no integer in 1..=10, everything else accepted.
fn record_doses(state: &State, ct: &str, body: &[u8]) -> Response<Full<Bytes>> {
    let mut rows: Vec<(String, Value)> = Vec::new();
    if ct == "text/csv" {
        state.dose_csv_requests.fetch_add(1, Ordering::Relaxed);
        let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(body);
        let Ok(header) = rdr.headers().cloned() else {
            return reply(StatusCode::BAD_REQUEST, json!({}));
        };
        let (Some(p), Some(d)) = (
            header.iter().position(|h| h == "person"),
            header.iter().position(|h| h == "dose"),
        ) else {
            return reply(StatusCode::BAD_REQUEST, json!({"detail": "no header"}));
        };
        for r in rdr.records() {
            let Ok(r) = r else {
                return reply(StatusCode::BAD_REQUEST, json!({}));
            };
            let dose = r
                .get(d)
                .unwrap_or("")
                .trim()
                .parse::<i64>()
                .map_or(Value::Null, Value::from);
            rows.push((r.get(p).unwrap_or("").to_string(), dose));
        }
    } else if ct == "application/x-ndjson" {
        state.dose_ndjson_requests.fetch_add(1, Ordering::Relaxed);
        for line in String::from_utf8_lossy(body)
            .lines()
            .filter(|l| !l.trim().is_empty())
        {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                return reply(StatusCode::BAD_REQUEST, json!({}));
            };
            rows.push((
                v["person"].as_str().unwrap_or("").to_string(),
                v["dose"].clone(),
            ));
        }
    } else {
        return reply(StatusCode::UNSUPPORTED_MEDIA_TYPE, json!({}));
    }
    let mut doses = state.doses.lock().expect("lock");
    let mut accepted = 0u64;
    let mut rejected = Vec::new();
    for (i, (person, dose)) in rows.into_iter().enumerate() {
        match dose.as_i64().filter(|d| (1..=10).contains(d)) {
            Some(d) => {
                doses.insert((person, d));
                accepted += 1;
            }
            None => rejected.push(json!({"index": i, "reason": "invalid_dose"})),
        }
    }
    reply(
        StatusCode::OK,
        json!({"accepted": accepted, "rejected": rejected}),
    )
}

/// `GET /v1/persons/{id}/pass` and `/certificate`: even-numbered persons are vaccinated; a
/// certificate is `HC1:` + the person id (or an SVG with `?format=svg`).
fn person_read(state: &State, path: &str, query: &str) -> Response<Full<Bytes>> {
    let rest = path.trim_start_matches("/v1/persons/");
    let Some((person, what)) = rest.split_once('/') else {
        return reply(StatusCode::NOT_FOUND, json!({}));
    };
    match what {
        "pass" => {
            state.passes.fetch_add(1, Ordering::Relaxed);
            // ASCII digits have the parity of their value.
            let even = person.bytes().last().is_some_and(|b| b.is_multiple_of(2));
            let (color, basis) = if even {
                ("green", "vaccinated")
            } else {
                ("red", "no_record")
            };
            reply(
                StatusCode::OK,
                json!({"person": person, "color": color, "basis": basis, "as_of": now_unix()}),
            )
        }
        "certificate" if query == "format=svg" => {
            state.svgs.fetch_add(1, Ordering::Relaxed);
            let mut r = Response::new(Full::new(Bytes::from_static(
                b"<?xml version=\"1.0\"?><svg xmlns=\"http://www.w3.org/2000/svg\"/>",
            )));
            *r.status_mut() = StatusCode::OK;
            r
        }
        "certificate" => {
            state.certificates.fetch_add(1, Ordering::Relaxed);
            reply(
                StatusCode::OK,
                json!({"person": person, "hc1": format!("HC1:{person}"), "issued": 1, "expires": 2}),
            )
        }
        _ => reply(StatusCode::NOT_FOUND, json!({})),
    }
}

/// `POST /v1/cases` as section 10 has it: 201 new, 200 same id and fields, 409 same id with
/// other fields or a person with an active case, 400 outside the retention window. Ids whose
/// first request comes with a prefix `slow` are stored, then answered only after 3 s (a lost
/// answer: the client's retry must get 200).
async fn register_case(state: &State, body: &[u8]) -> Response<Full<Bytes>> {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return reply(StatusCode::BAD_REQUEST, json!({}));
    };
    let (Some(id), Some(person), Some(sampled_at)) = (
        v["id"].as_str(),
        v["person"].as_str(),
        v["sampled_at"].as_i64(),
    ) else {
        return reply(StatusCode::BAD_REQUEST, json!({}));
    };
    let posts = {
        let mut posts = state.case_posts.lock().expect("lock");
        let n = posts.entry(id.to_string()).or_default();
        *n += 1;
        *n
    };
    let now = now_unix();
    if sampled_at < now - 21 * 86_400 || sampled_at > now + 300 {
        state.bad_cases.fetch_add(1, Ordering::Relaxed);
        return reply(StatusCode::BAD_REQUEST, json!({"status": 400}));
    }
    let case = StoredCase {
        person: person.to_string(),
        sampled_at,
    };
    let created = {
        let mut cases = state.cases.lock().expect("lock");
        let mut active = state.active.lock().expect("lock");
        match cases.get(id) {
            Some(c) if *c == case => false,
            Some(_) => {
                return reply(
                    StatusCode::CONFLICT,
                    json!({"status": 409, "detail": format!("case {id} is already registered with other fields")}),
                )
            }
            None => {
                if let Some(other) = active.get(person) {
                    return reply(
                        StatusCode::CONFLICT,
                        json!({"status": 409, "detail": format!("person {person} already has an active case: {other}")}),
                    );
                }
                cases.insert(id.to_string(), case);
                active.insert(person.to_string(), id.to_string());
                true
            }
        }
    };
    if id.starts_with("slow") && posts == 1 {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    reply(
        status,
        json!({"id": id, "person": person, "sampled_at": sampled_at, "status": "active", "f1": 0, "f2": 0}),
    )
}

fn reply(status: StatusCode, v: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req
        .headers()
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        != Some("Bearer s3cret")
    {
        state.bad_auth.fetch_add(1, Ordering::Relaxed);
        return reply(StatusCode::UNAUTHORIZED, json!({"status": 401}));
    }
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let ct = req
        .headers()
        .get("content-type")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(StatusCode::BAD_REQUEST, json!({})),
    };
    match path.as_str() {
        "/healthz" => reply(StatusCode::OK, json!({"status": "ok"})),
        "/v1/venues" => {
            let Ok(Value::Array(vs)) = serde_json::from_slice::<Value>(&body) else {
                return reply(StatusCode::BAD_REQUEST, json!({}));
            };
            let mut known = state.venues.lock().expect("lock");
            for v in &vs {
                if let Some(id) = v["id"].as_str() {
                    known.insert(id.to_string());
                }
            }
            reply(StatusCode::OK, json!({"registered": vs.len()}))
        }
        "/v1/scans" => {
            state.requests.fetch_add(1, Ordering::Relaxed);
            let text = String::from_utf8_lossy(&body);
            let objs: Vec<Value> = if ct == "application/x-ndjson" {
                state.ndjson_requests.fetch_add(1, Ordering::Relaxed);
                text.lines()
                    .filter(|l| !l.trim().is_empty())
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect()
            } else {
                match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Array(a)) => a,
                    Ok(v) => vec![v],
                    Err(_) => return reply(StatusCode::BAD_REQUEST, json!({})),
                }
            };
            let now = now_unix();
            {
                let mut persons = state.persons.lock().expect("lock");
                for o in &objs {
                    if let Some(p) = o["person"].as_str() {
                        persons.insert(p.to_string());
                    }
                }
            }
            let known = state.venues.lock().expect("lock");
            let mut accepted = 0u64;
            let mut rejected = Vec::new();
            for (i, o) in objs.iter().enumerate() {
                let ts = o["ts"].as_i64().unwrap_or(now);
                let reason = if !known.contains(o["venue"].as_str().unwrap_or("")) {
                    Some("unknown_venue")
                } else if ts < now - 21 * 86_400 {
                    Some("too_old")
                } else if ts > now + 300 {
                    Some("in_future")
                } else {
                    None
                };
                match reason {
                    Some(r) => rejected.push(json!({"index": i, "reason": r})),
                    None => accepted += 1,
                }
            }
            state.scans.fetch_add(accepted, Ordering::Relaxed);
            reply(
                StatusCode::OK,
                json!({"accepted": accepted, "rejected": rejected}),
            )
        }
        "/v1/trace" => {
            state.traces.fetch_add(1, Ordering::Relaxed);
            let Ok(v) = serde_json::from_slice::<Value>(&body) else {
                return reply(StatusCode::BAD_REQUEST, json!({}));
            };
            if v["person"] == "slow" {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            let depth = v["depth"].as_i64().unwrap_or(2);
            if !(1..=2).contains(&depth) || v["person"].as_str().is_none() {
                return reply(StatusCode::BAD_REQUEST, json!({}));
            }
            let f2 = if depth == 2 {
                json!([{"person": "x", "via": "y", "exposure_s": 1000, "first_contact": 1}])
            } else {
                json!([])
            };
            reply(
                StatusCode::OK,
                json!({"case": v["person"], "visits": [], "f1": [{"person": "y"}, {"person": "z"}], "f2": f2}),
            )
        }
        "/v1/cases" => register_case(&state, &body).await,
        "/v1/areas" => {
            let Ok(Value::Array(areas)) = serde_json::from_slice::<Value>(&body) else {
                return reply(StatusCode::BAD_REQUEST, json!({}));
            };
            state.areas.fetch_add(areas.len() as u64, Ordering::Relaxed);
            reply(StatusCode::OK, json!({"registered": areas.len()}))
        }
        "/v1/vaccinations" => record_doses(&state, &ct, &body),
        "/v1/verify" => {
            state.verifications.fetch_add(1, Ordering::Relaxed);
            let Ok(v) = serde_json::from_slice::<Value>(&body) else {
                return reply(StatusCode::BAD_REQUEST, json!({}));
            };
            match v["hc1"].as_str() {
                Some(h) if h.starts_with("HC1:p") => reply(
                    StatusCode::OK,
                    json!({"valid": true, "kid": "k", "issuer": "VN", "issued": 1, "expires": 2, "claims": {"pid": &h[4..]}}),
                ),
                Some(_) => reply(
                    StatusCode::OK,
                    json!({"valid": false, "reason": "bad_prefix"}),
                ),
                None => reply(StatusCode::BAD_REQUEST, json!({})),
            }
        }
        p if p.starts_with("/v1/persons/") => person_read(&state, p, &query),
        _ => reply(StatusCode::NOT_FOUND, json!({})),
    }
}

async fn start_mock() -> (SocketAddr, Arc<State>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let state = Arc::new(State::default());
    let st = state.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                break;
            };
            let st = st.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let st = st.clone();
                    async move { Ok::<_, Infallible>(handle(st, req).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, state)
}

fn common(addr: SocketAddr) -> Common {
    let mut c = Common::new(Target::parse(&format!("http://{addr}")).expect("loopback"));
    c.token = Some("s3cret".into());
    c.connections = 3;
    c.duration = Some(Duration::from_secs(20));
    c
}

fn params() -> Params {
    Params {
        persons: 2_000,
        venues: 300,
        scans: 50_000,
        ..Params::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_generated_batches() {
    let (addr, state) = start_mock().await;
    let report = run_ingest(IngestOptions {
        common: common(addr),
        source: Source::Generate(params()),
        batch: 500,
        scans: Some(20_000),
        register_venues: true,
        venue_chunk: 128,
    })
    .await
    .expect("run");
    assert_eq!(report.venues_registered, Some(300));
    assert_eq!(report.scans_sent, 20_000);
    assert_eq!(report.scans_accepted, 20_000, "{report}");
    assert_eq!(report.requests, 40);
    assert_eq!(report.requests_ok, 40);
    assert_eq!(state.scans.load(Ordering::Relaxed), 20_000);
    assert_eq!(state.ndjson_requests.load(Ordering::Relaxed), 40);
    assert_eq!(state.bad_auth.load(Ordering::Relaxed), 0);
    assert_eq!(report.latency.count, 40);
    assert!(report.latency.p50_ms > 0.0 && report.latency.max_ms >= report.latency.p99_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_single_objects_and_rejections() {
    let (addr, state) = start_mock().await;
    // Venues not registered: everything is rejected as unknown_venue.
    let report = run_ingest(IngestOptions {
        common: common(addr),
        source: Source::Generate(params()),
        batch: 1,
        scans: Some(300),
        register_venues: false,
        venue_chunk: 1000,
    })
    .await
    .expect("run");
    assert_eq!(report.requests, 300);
    assert_eq!(state.ndjson_requests.load(Ordering::Relaxed), 0);
    assert_eq!(report.scans_accepted, 0);
    assert_eq!(report.rejected_by_reason.get("unknown_venue"), Some(&300));
    assert!(report.to_string().contains("unknown_venue"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_file_open_loop() {
    let (addr, state) = start_mock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let p = Params {
        scans: 2_000,
        ..params()
    };
    checkin_loadtest::dataset::write_dataset(
        &p,
        dir.path(),
        checkin_loadtest::dataset::Formats {
            ndjson: true,
            csv: false,
        },
        |_| {},
    )
    .expect("dataset");
    let mut c = common(addr);
    c.rate = Some(100.0);
    c.duration = Some(Duration::from_millis(500));
    let report = run_ingest(IngestOptions {
        common: c,
        source: Source::File {
            scans: dir.path().join("scans.ndjson"),
            venues: None,
        },
        batch: 10,
        scans: None,
        register_venues: true,
        venue_chunk: 1000,
    })
    .await
    .expect("run");
    // 100 req/s for 0.5 s: about 50 requests, bounded by the schedule, not the server's speed.
    assert!((40..=51).contains(&report.requests), "{report}");
    assert_eq!(report.scans_sent, report.requests * 10);
    assert_eq!(report.scans_accepted, report.scans_sent);
    assert_eq!(state.scans.load(Ordering::Relaxed), report.scans_sent);

    // Closed loop over the whole file: bounded by its end.
    let report = run_ingest(IngestOptions {
        common: common(addr),
        source: Source::File {
            scans: dir.path().join("scans.ndjson"),
            venues: None,
        },
        batch: 300,
        scans: None,
        register_venues: false,
        venue_chunk: 1000,
    })
    .await
    .expect("run");
    assert_eq!(report.scans_sent, 2_000);
    assert_eq!(report.requests, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_mixed_depths() {
    let (addr, state) = start_mock().await;
    let report = run_trace(TraceOptions {
        common: common(addr),
        persons: Persons::Generated {
            persons: 1000,
            venues: 100,
        },
        depth: DepthMode::Mixed,
        requests: Some(200),
        seed: 1,
        from: None,
        to: None,
        min_overlap_s: Some(600),
    })
    .await
    .expect("run");
    assert_eq!(report.requests, 200);
    assert_eq!(report.requests_ok, 200);
    assert_eq!(state.traces.load(Ordering::Relaxed), 200);
    let t = report.trace.clone().expect("trace summary");
    assert_eq!(t.mean_f1, 2.0);
    assert!(t.mean_f2 > 0.2 && t.mean_f2 < 0.8, "{t:?}");
    assert!(report.latency_by.contains_key("depth=1") && report.latency_by.contains_key("depth=2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_counted_not_fatal() {
    let (addr, _state) = start_mock().await;
    let mut c = common(addr);
    c.token = Some("wrong".into());
    // Health check passes (401 is an answer); every scan request is a 401.
    let report = run_ingest(IngestOptions {
        common: c,
        source: Source::Generate(params()),
        batch: 100,
        scans: Some(1_000),
        register_venues: false,
        venue_chunk: 1000,
    })
    .await
    .expect("run");
    assert_eq!(report.errors_by_status.get("401"), Some(&10));
    assert_eq!(report.failed_requests(), 10);

    // A server that never answers: the run still ends, soon after its duration.
    let mut c = common(addr);
    c.duration = Some(Duration::from_millis(300));
    c.grace = Duration::from_millis(200);
    let t0 = std::time::Instant::now();
    let report = run_trace(TraceOptions {
        common: c,
        persons: Persons::List(vec!["slow".into()]),
        depth: DepthMode::Two,
        requests: None,
        seed: 1,
        from: None,
        to: None,
        min_overlap_s: None,
    })
    .await
    .expect("run");
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert_eq!(report.transport_errors.get(CUT_OFF), Some(&3), "{report}");
    assert_eq!(report.requests_ok, 0);

    // Nothing listening: a clear error before any load.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = listener.local_addr().expect("addr");
    drop(listener);
    let err = run_trace(TraceOptions {
        common: common(dead),
        persons: Persons::List(vec!["p1".into()]),
        depth: DepthMode::One,
        requests: Some(1),
        seed: 1,
        from: None,
        to: None,
        min_overlap_s: None,
    })
    .await
    .expect_err("no server");
    assert!(err.to_string().contains("no checkin-server"), "{err}");
}

fn case_options(per_min: f64, prefix: &str) -> CaseOptions {
    CaseOptions {
        id_prefix: Some(prefix.into()),
        ..CaseOptions::new(per_min)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_registers_cases_for_sent_persons() {
    let (addr, state) = start_mock().await;
    let mut c = common(addr);
    // Open loop, so the run lasts its duration whatever the speed.
    c.rate = Some(40.0);
    c.duration = Some(Duration::from_millis(1500));
    let opts = IngestOptions {
        common: c,
        source: Source::Generate(Params {
            end_ts: now_unix(),
            ..params()
        }),
        batch: 20,
        scans: None,
        register_venues: true,
        venue_chunk: 1000,
    };
    let report = run_ingest_with_cases(opts, case_options(3_000.0, "t1"))
        .await
        .expect("run");
    assert_eq!(report.failed_requests(), 0, "{report}");
    assert_eq!(report.scans_accepted, report.scans_sent, "{report}");
    let cases = report.cases.clone().expect("cases summary");
    assert!(cases.attempted >= 1, "{report}");
    assert_eq!(cases.errors, 0, "{report}");
    assert_eq!(cases.retries, 0, "{report}");
    assert_eq!(
        cases.registered + cases.active_conflicts,
        cases.attempted,
        "{report}"
    );
    assert_eq!(
        cases.latency.count, cases.attempted,
        "every case got an answer"
    );
    assert!(cases.attempted <= cases.due + 1, "{report}");
    assert_eq!(cases.id_prefix, "t1");
    assert_eq!(state.bad_cases.load(Ordering::Relaxed), 0);

    // What the mock stored is what the report counts: ids t1-1.., each for a person the run had
    // sent scans for, sampled at a time inside the data's window.
    let stored = state.cases.lock().expect("lock").clone();
    assert_eq!(stored.len() as u64, cases.registered, "{report}");
    let sent = state.persons.lock().expect("lock").clone();
    let window = params().start_ts() - 86_400..=now_unix();
    for (id, case) in &stored {
        let n: u64 = id
            .strip_prefix("t1-")
            .and_then(|n| n.parse().ok())
            .expect("id t1-<n>");
        assert!((1..=cases.attempted).contains(&n), "{id}");
        assert!(
            sent.contains(&case.person),
            "{id}: {} sent no scan",
            case.person
        );
        assert!(window.contains(&case.sampled_at), "{id}: {case:?}");
    }
    // Distinct persons while the run had unregistered ones: no 409 from the run itself among
    // 2,000 persons unless the draws ran out.
    let persons: HashSet<&String> = stored.values().map(|c| &c.person).collect();
    assert_eq!(persons.len(), stored.len());
    let text = report.to_string();
    assert!(text.contains("registered"), "{text}");
    assert!(text.contains("  register   p50"), "{text}");
    let json = serde_json::to_value(&report).expect("json");
    assert_eq!(json["cases"]["registered"], cases.registered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cases_from_a_file_conflicts_clamping_and_errors() {
    let (addr, state) = start_mock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Three persons, data 30-44 days old: every scan is too_old for the mock, but sampled_at
    // is clamped into the retention window, so the cases are accepted.
    let p = Params {
        persons: 3,
        venues: 20,
        scans: 3_000,
        end_ts: now_unix() - 30 * 86_400,
        ..params()
    };
    checkin_loadtest::dataset::write_dataset(
        &p,
        dir.path(),
        checkin_loadtest::dataset::Formats {
            ndjson: true,
            csv: false,
        },
        |_| {},
    )
    .expect("dataset");
    let file = Source::File {
        scans: dir.path().join("scans.ndjson"),
        venues: None,
    };
    let mut c = common(addr);
    c.rate = Some(20.0);
    c.duration = Some(Duration::from_millis(800));
    let opts = IngestOptions {
        common: c,
        source: file,
        batch: 10,
        scans: None,
        register_venues: true,
        venue_chunk: 1000,
    };
    let report = run_ingest_with_cases(opts.clone(), case_options(6_000.0, "t2"))
        .await
        .expect("run");
    let cases = report.cases.clone().expect("cases summary");
    assert_eq!(report.scans_accepted, 0, "{report}");
    assert_eq!(state.bad_cases.load(Ordering::Relaxed), 0, "{report}");
    assert_eq!(cases.errors, 0, "{report}");
    assert!(cases.registered >= 1 && cases.registered <= 3, "{report}");
    // Once the three persons have a case, every further case is a 409, counted apart.
    assert_eq!(
        cases.active_conflicts,
        cases.attempted - cases.registered,
        "{report}"
    );
    let oldest = now_unix() - 21 * 86_400;
    for case in state.cases.lock().expect("lock").values() {
        assert!(case.sampled_at >= oldest, "{case:?}");
    }

    // A token the server refuses: every case is an error, the scans go on.
    let mut refused = case_options(6_000.0, "t3");
    refused.token = Some("wrong".into());
    let report = run_ingest_with_cases(opts, refused).await.expect("run");
    let cases = report.cases.clone().expect("cases summary");
    assert_eq!(report.failed_requests(), 0, "{report}");
    assert!(cases.attempted >= 1, "{report}");
    assert_eq!(cases.registered, 0, "{report}");
    assert_eq!(cases.errors, cases.attempted, "{report}");
    assert_eq!(
        cases.errors_by_kind.get("HTTP 401"),
        Some(&cases.attempted),
        "{report}"
    );
    assert!(report.to_string().contains("case error HTTP 401"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_whose_answer_is_lost_is_retried_with_its_id() {
    let (addr, state) = start_mock().await;
    let mut c = common(addr);
    c.rate = Some(20.0);
    c.duration = Some(Duration::from_millis(1500));
    // The mock answers each case's first request after 3 s: the client gives up at 1 s.
    c.timeout = Duration::from_secs(1);
    let opts = IngestOptions {
        common: c,
        source: Source::Generate(Params {
            end_ts: now_unix(),
            ..params()
        }),
        batch: 20,
        scans: None,
        register_venues: true,
        venue_chunk: 1000,
    };
    let report = run_ingest_with_cases(opts, case_options(80.0, "slow"))
        .await
        .expect("run");
    let cases = report.cases.clone().expect("cases summary");
    assert!(cases.attempted >= 1, "{report}");
    assert_eq!(cases.errors, 0, "{report}");
    assert_eq!(cases.registered, cases.attempted, "{report}");
    assert_eq!(
        cases.replayed, cases.attempted,
        "the retry got 200: {report}"
    );
    assert_eq!(cases.retries, cases.attempted, "{report}");
    let posts = state.case_posts.lock().expect("lock").clone();
    assert_eq!(posts.len() as u64, cases.attempted);
    assert!(posts.values().all(|n| *n == 2), "{posts:?}");
    assert_eq!(
        state.cases.lock().expect("lock").len() as u64,
        cases.attempted
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cases_unless_asked() {
    let (addr, state) = start_mock().await;
    let report = run_ingest(IngestOptions {
        common: common(addr),
        source: Source::Generate(params()),
        batch: 100,
        scans: Some(1_000),
        register_venues: true,
        venue_chunk: 1000,
    })
    .await
    .expect("run");
    assert!(report.cases.is_none());
    assert!(state.case_posts.lock().expect("lock").is_empty());
    let mut bad = CaseOptions::new(f64::NAN);
    bad.id_prefix = None;
    let err = run_ingest_with_cases(
        IngestOptions {
            common: common(addr),
            source: Source::Generate(params()),
            batch: 100,
            scans: Some(100),
            register_venues: false,
            venue_chunk: 1000,
        },
        bad,
    )
    .await
    .expect_err("NaN cases per minute");
    assert!(err.to_string().contains("cases per minute"), "{err}");
}

/// A dose-record file of `n` rows (the 7th has a dose that is no number) and an area tree.
fn dose_files(dir: &std::path::Path, n: usize) -> (std::path::PathBuf, std::path::PathBuf) {
    let mut csv = String::from("person,dose,vaccine,administered_at,lot,site,area\n");
    for i in 0..n {
        let dose = if i == 7 {
            "mũi 2".to_string()
        } else {
            (1 + i % 3).to_string()
        };
        csv.push_str(&format!(
            "p{:06},{dose},EU/1/20/1528,1622505600,FE{i},\"Trạm Y tế, xã {i}\",ST-01\n",
            i / 3
        ));
    }
    let doses = dir.join("doses.csv");
    std::fs::write(&doses, csv).expect("write");
    let areas = dir.join("areas.json");
    std::fs::write(
        &areas,
        r#"[{"id":"ST","name":"S","population":10},{"id":"ST-01","name":"D","population":5,"parent":"ST"}]"#,
    )
    .expect("write");
    (doses, areas)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vaccinations_import_as_csv_and_ndjson() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (doses, areas) = dose_files(dir.path(), 2_500);
    let data = records::read_dose_file(&doses).expect("read");
    for format in [DoseFormat::Csv, DoseFormat::Ndjson] {
        let (addr, state) = start_mock().await;
        let mut c = common(addr);
        c.connections = 2;
        c.duration = None;
        assert_eq!(records::register_areas(&c, &areas).await.expect("areas"), 2);
        let bodies = records::dose_bodies(&data, format, 1_000, None).expect("bodies");
        assert_eq!(bodies.len(), 3);
        let report = records::run_vaccinations(
            VaccinationOptions {
                common: c,
                format,
                batch: 1_000,
            },
            bodies,
        )
        .await
        .expect("run");
        assert_eq!(report.command, "vaccinations-import");
        assert_eq!(report.requests, 3, "{report}");
        assert_eq!(report.requests_ok, 3);
        assert_eq!(report.scans_sent, 2_500);
        assert_eq!(report.scans_accepted, 2_499, "{report}");
        assert_eq!(report.rejected_by_reason.get("invalid_dose"), Some(&1));
        assert_eq!(state.areas.load(Ordering::Relaxed), 2);
        assert_eq!(state.doses.lock().expect("lock").len(), 2_499);
        let (csv, ndjson) = (
            state.dose_csv_requests.load(Ordering::Relaxed),
            state.dose_ndjson_requests.load(Ordering::Relaxed),
        );
        match format {
            DoseFormat::Csv => assert_eq!((csv, ndjson), (3, 0)),
            DoseFormat::Ndjson => assert_eq!((csv, ndjson), (0, 3)),
        }
        let text = report.to_string();
        assert!(text.contains("records/s"), "{text}");
        assert!(text.contains("rejected records by reason"), "{text}");
    }
}

fn read_options(addr: SocketAddr, requests: u64) -> ReadOptions {
    ReadOptions {
        common: common(addr),
        persons: Persons::Generated {
            persons: 1_000,
            venues: 100,
        },
        requests: Some(requests),
        seed: 3,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_and_certificates() {
    let (addr, state) = start_mock().await;
    let report = records::run_pass(read_options(addr, 300))
        .await
        .expect("pass");
    assert_eq!(report.requests_ok, 300, "{report}");
    assert_eq!(state.passes.load(Ordering::Relaxed), 300);
    let green = report
        .outcomes
        .get("green/vaccinated")
        .copied()
        .unwrap_or(0);
    let red = report.outcomes.get("red/no_record").copied().unwrap_or(0);
    assert_eq!(green + red, 300, "{:?}", report.outcomes);
    assert!(green > 100 && red > 100, "{:?}", report.outcomes);
    assert!(report.mean_answer_bytes.is_some_and(|b| b > 40.0));
    assert!(report.to_string().contains("green/vaccinated"));

    let report = records::run_certificates(read_options(addr, 50), false)
        .await
        .expect("issue");
    assert_eq!(report.outcomes.get("issued"), Some(&50), "{report}");
    let report = records::run_certificates(read_options(addr, 20), true)
        .await
        .expect("svg");
    assert_eq!(report.outcomes.get("svg"), Some(&20), "{report}");
    assert_eq!(state.certificates.load(Ordering::Relaxed), 50);
    assert_eq!(state.svgs.load(Ordering::Relaxed), 20);

    let opts = read_options(addr, 200);
    let fetched = records::fetch_certificates(&opts.common, &opts.persons, 40, 1, 4)
        .await
        .expect("fetch");
    assert_eq!(fetched.hc1.len(), 40);
    assert!(fetched.hc1.iter().all(|h| h.starts_with("HC1:p")));
    let report = records::run_verify(opts, &fetched.hc1)
        .await
        .expect("verify");
    assert_eq!(report.command, "verify");
    assert_eq!(report.outcomes.get("valid"), Some(&200), "{report}");
    assert_eq!(state.verifications.load(Ordering::Relaxed), 200);
    // A certificate the server does not know is counted by its reason.
    let report = records::run_verify(read_options(addr, 5), &["HC1:x".to_string()])
        .await
        .expect("verify");
    assert_eq!(
        report.outcomes.get("invalid:bad_prefix"),
        Some(&5),
        "{report}"
    );
}
