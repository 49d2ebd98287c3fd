//! The drivers against an in-process stand-in for checkin-server (a few lines of hyper that
//! follow the contract's wire format for /healthz, /v1/venues, /v1/scans and /v1/trace). The
//! real end-to-end run against checkin-server lives in the workspace's `tests` crate.

use std::collections::HashSet;
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

#[derive(Default)]
struct State {
    venues: Mutex<HashSet<String>>,
    scans: AtomicU64,
    requests: AtomicU64,
    ndjson_requests: AtomicU64,
    traces: AtomicU64,
    bad_auth: AtomicU64,
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
