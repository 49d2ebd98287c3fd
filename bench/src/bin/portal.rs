//! The portal's HTML answer time (`GET /`, contract section 13; budget 20 ms at 10 M scans and
//! 1,000 cases) over a big store, through the real HTTP server on loopback:
//!
//! `cargo run --release -p checkin-bench --bin portal -- --scans 10000000 --cases 1000`
//!
//! 1. **Build.** Generates the bench data set (`Params::standard(scans)`), ingests it into a
//!    fresh store under `--tmp` (the clock following the data, as a live server's), registers
//!    `--areas` communes under districts under one province, publishes a few notices, and
//!    registers `--cases` cases one at a time (seeded random persons with a visit inside their
//!    case window, `sampled_at` 6–30 h before the end of the data, each in a commune), then waits
//!    until the standing traces are current (`Health::settle`).
//! 2. **Two servers** over that store (`api::App` twice, one engine, one `Health`), on loopback:
//!    one with `portal_refresh` zero (every answer gathers and renders the portal in its
//!    language: the cost the cache saves), one with the default refresh (1 s, or 5 times the
//!    build time if longer).
//! 3. **Measurements**, each with `Accept-Encoding: gzip` (as browsers send) on one keep-alive
//!    connection per client, timing from the request's first byte written to the answer's last
//!    byte read:
//!    - *uncached*: `--uncached` sequential answers of the first server;
//!    - *cached, one client*: `--requests` sequential answers of the second;
//!    - *cached under load*: `--clients` clients for `--load-secs` seconds, half Vietnamese,
//!      half English, one in ten a `?q=` filter (50 different ones), every answer timed (the
//!      rebuilds run in the background meanwhile);
//!    - *after an idle spell*: `--idle-samples` answers each after `--idle-secs` without a
//!      request, longer than the build's freshness (the background rebuild of an idle portal,
//!      every `ServerOptions::portal_idle_rebuild`, is what keeps these from waiting for one).
//!
//! Prints the page's size (plain and gzipped) and exposure-site count, and for each
//! measurement the median, p90, p99, p99.9 and max.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::{Access, App, ServerOptions};
use checkin_bench::*;
use clap::Parser;
use engine::{Durability, Engine, ManualClock};
use hdrhistogram::Histogram;
use health::{AreaInput, Health, HealthConfig, NewCase, NoticeKind};

/// The portal's answer time over a big store.
#[derive(Parser, Debug, Clone)]
struct Args {
    /// Scans in the data set.
    #[arg(long, default_value_t = 10_000_000)]
    scans: u64,
    /// Cases to register.
    #[arg(long, default_value_t = 1_000)]
    cases: usize,
    /// Communes (areas of the lowest level), ten to a district, under one province.
    #[arg(long, default_value_t = 100)]
    areas: usize,
    /// Scans per ingestion batch.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Batches in flight during ingestion.
    #[arg(long, default_value_t = 4)]
    in_flight: usize,
    /// Sequential answers of the uncached server.
    #[arg(long, default_value_t = 30)]
    uncached: usize,
    /// Sequential answers of the cached server.
    #[arg(long, default_value_t = 5_000)]
    requests: usize,
    /// Concurrent clients of the load run.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Length of the load run, in seconds.
    #[arg(long, default_value_t = 20)]
    load_secs: u64,
    /// Answers after an idle spell.
    #[arg(long, default_value_t = 5)]
    idle_samples: usize,
    /// The idle spell before each of them, in seconds: longer than the build's freshness (the
    /// refresh or 5 times the build time).
    #[arg(long, default_value_t = 20)]
    idle_secs: u64,
    /// Where the temporary store goes.
    #[arg(long, default_value = "/tmp")]
    tmp: PathBuf,
    /// Seed of the case choices.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
        .unwrap_or_else(|_| unreachable!("valid histogram bounds"))
}

/// `p50 / p90 / p99 / p99.9 / max (n)` of a histogram of nanoseconds.
fn hsum(h: &Histogram<u64>) -> String {
    let q = |x: f64| fmt_d(Duration::from_nanos(h.value_at_quantile(x)));
    format!(
        "p50 {} p90 {} p99 {} p99.9 {} max {} (n {})",
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        fmt_d(Duration::from_nanos(h.max())),
        h.len()
    )
}

/// One keep-alive HTTP/1.1 connection that reads whole `Content-Length` answers.
struct Conn {
    addr: SocketAddr,
    s: TcpStream,
    buf: Vec<u8>,
}

/// One answer: status, whether gzipped, body length.
struct Answer {
    status: u16,
    gzip: bool,
    body: usize,
}

impl Conn {
    fn open(addr: SocketAddr) -> Res<Conn> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Conn {
            addr,
            s,
            buf: Vec::with_capacity(1 << 20),
        })
    }

    /// `GET path`, timed from the first byte written to the last byte read.
    fn get(&mut self, path: &str, gzip: bool) -> Res<(Duration, Answer)> {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\n{}\r\n",
            self.addr,
            if gzip {
                "Accept-Encoding: gzip, deflate, br\r\n"
            } else {
                ""
            }
        );
        let t = Instant::now();
        self.s.write_all(req.as_bytes())?;
        self.buf.clear();
        let mut chunk = [0u8; 64 << 10];
        let (head_end, len) = loop {
            let n = self.s.read(&mut chunk)?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end])?.to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .ok_or("an answer without content-length")?;
                break (end + 4, len);
            }
        };
        while self.buf.len() < head_end + len {
            let n = self.s.read(&mut chunk)?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        let elapsed = t.elapsed();
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_ascii_lowercase();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Ok((
            elapsed,
            Answer {
                status,
                gzip: head.contains("content-encoding: gzip"),
                body: len,
            },
        ))
    }
}

/// Serves `app` on a free loopback port in `rt`; the address.
fn serve(rt: &tokio::runtime::Runtime, app: App) -> Res<SocketAddr> {
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    rt.spawn(async move {
        if let Err(e) = api::serve(listener, app, std::future::pending::<()>()).await {
            eprintln!("serve ended: {e}");
        }
    });
    Ok(addr)
}

fn main() -> Res<()> {
    let a = Args::parse();
    let p = Params::standard(a.scans);
    let root = tempfile::Builder::new()
        .prefix("checkin-portal-")
        .tempdir_in(&a.tmp)?;
    let dir = root.path().join("store");
    println!(
        "# cargo run --release -p checkin-bench --bin portal -- {}",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    println!("# {a:?}");
    println!(
        "# data: Params::standard({}): {} persons, {} venues, {} days ending at {}; store in {}",
        p.scans,
        p.persons,
        p.venues,
        p.days,
        p.now,
        dir.display()
    );

    // 1. Build.
    let clock = Arc::new(ManualClock::new(p.now - i64::from(p.days) * DAY));
    let engine = Engine::open(bench_config(&dir, Durability::Os, clock.clone()))?;
    engine.register_venues(venue_specs(&p))?;
    let t = Instant::now();
    let newest = AtomicI64::new(i64::MIN);
    let totals = ingest_pipelined(
        &engine,
        ScanStream::new(&p).batches(a.batch).inspect(|b| {
            use engine::Clock;
            let t = b
                .iter()
                .flatten()
                .filter_map(|s| s.ts)
                .max()
                .unwrap_or(i64::MIN);
            newest.fetch_max(t, Ordering::Relaxed);
            if t > clock.now() {
                clock.set(t);
            }
        }),
        a.in_flight,
    )?;
    engine.flush()?;
    let now = newest.load(Ordering::Relaxed).max(p.now - DAY);
    clock.set(now);
    println!(
        "build: {} scans ({} stored, {} duplicates) generated and ingested in {}; clock at {now}",
        totals.items,
        totals.accepted,
        totals.duplicates,
        fmt_d(t.elapsed())
    );

    let health = Health::open(engine.clone(), HealthConfig::new(&dir))?;
    let districts = a.areas.div_ceil(10).max(1);
    let mut areas = vec![AreaInput {
        id: "BP".into(),
        name: "Tỉnh Bench".into(),
        population: 10_000 * a.areas.max(1) as i64,
        parent: None,
    }];
    for d in 0..districts {
        areas.push(AreaInput {
            id: format!("BP-{d:02}"),
            name: format!("Huyện {d}"),
            population: 100_000,
            parent: Some("BP".into()),
        });
    }
    for c in 0..a.areas {
        areas.push(AreaInput {
            id: format!("BP-{:02}-{c:03}", c / 10),
            name: format!("Xã {c}"),
            population: 10_000,
            parent: Some(format!("BP-{:02}", c / 10)),
        });
    }
    let communes: Vec<String> = areas
        .iter()
        .filter(|x| x.id.len() > 5)
        .map(|x| x.id.clone())
        .collect();
    health.register_areas(areas)?;
    for i in 0..5 {
        health.publish_notice(
            if i % 2 == 0 {
                NoticeKind::Directive
            } else {
                NoticeKind::News
            },
            format!("Thông báo số {i}"),
            "Người dân thực hiện 5K: khẩu trang, khử khuẩn, khoảng cách, không tụ tập, khai báo y tế."
                .into(),
            Some(now - i64::from(i) * HOUR),
        )?;
    }
    let policy = *health.policy();
    let picks = pick_cases(&engine, &p, now, a.cases, policy.lookback_days, a.seed);
    let t = Instant::now();
    for (i, pick) in picks.iter().enumerate() {
        health.register_case(NewCase {
            id: Some(format!("bench-{i:05}")),
            person: pick.person.clone(),
            sampled_at: pick.sampled_at,
            area: communes.get(i % communes.len().max(1)).cloned(),
            ..NewCase::default()
        })?;
    }
    health.settle()?;
    let sites = health.exposure_sites(now - 14 * DAY).len();
    let s = health.summary();
    println!(
        "cases: {} registered and settled in {}; summary: {} active, F1 {}, F2 {}, present {}, scans_24h {}; {} areas; {} exposure sites (14 days)",
        picks.len(),
        fmt_d(t.elapsed()),
        s.cases_active,
        s.f1,
        s.f2,
        s.present,
        s.scans_24h,
        health.area_views().len(),
        sites
    );

    // What one gathering costs, call by call (the portal's reads, as `web::portal` makes them).
    let mut parts: Vec<(&str, Vec<Duration>)> = Vec::new();
    for _ in 0..5 {
        let mut timed = |name: &'static str, f: &mut dyn FnMut()| {
            let t = Instant::now();
            f();
            let d = t.elapsed();
            match parts.iter_mut().find(|(n, _)| *n == name) {
                Some((_, v)) => v.push(d),
                None => parts.push((name, vec![d])),
            }
        };
        timed("Health::summary", &mut || {
            std::hint::black_box(health.summary());
        });
        timed("Health::area_views", &mut || {
            std::hint::black_box(health.area_views());
        });
        timed("Health::exposure_sites", &mut || {
            std::hint::black_box(health.exposure_sites(now - 14 * DAY));
        });
        timed("Health::notices", &mut || {
            std::hint::black_box(health.notices());
        });
        timed("Health::cases", &mut || {
            std::hint::black_box(health.cases(None, None));
        });
        timed("Engine::checkins_per_hour", &mut || {
            std::hint::black_box(engine.checkins_per_hour(23));
        });
    }
    let line: Vec<String> = parts
        .into_iter()
        .map(|(n, v)| format!("{n} {}", fmt_d(percentiles(v)[0])))
        .collect();
    println!("gathering, median of 5 calls each: {}", line.join(", "));

    // 2. Two servers.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let uncached = App::new(
        engine.clone(),
        health.clone(),
        Access::Open,
        ServerOptions {
            portal_refresh: Duration::ZERO,
            ..ServerOptions::default()
        },
    )?;
    let cached = App::new(
        engine.clone(),
        health.clone(),
        Access::Open,
        ServerOptions::default(),
    )?;
    let refresh = cached.options().portal_refresh;
    let uncached = serve(&rt, uncached)?;
    let cached = serve(&rt, cached)?;

    // Sizes.
    let mut c = Conn::open(cached)?;
    let (_, plain) = c.get("/", false)?;
    let (_, gz) = c.get("/", true)?;
    let (_, en) = c.get("/?lang=en", true)?;
    if plain.status != 200 || gz.status != 200 || !gz.gzip || en.status != 200 {
        return Err("the portal did not answer 200 (gzip)".into());
    }
    println!(
        "page: {} bytes of HTML, {} gzipped ({} in English, gzipped)",
        plain.body, gz.body, en.body
    );

    // 3a. Uncached.
    let mut h = histogram();
    let mut u = Conn::open(uncached)?;
    for _ in 0..a.uncached {
        let (d, ans) = u.get("/", true)?;
        if ans.status != 200 {
            return Err(format!("uncached answer {}", ans.status).into());
        }
        h.saturating_record(d.as_nanos() as u64);
    }
    println!("uncached (portal_refresh 0), one client: {}", hsum(&h));

    // 3b. Cached, one client (a fresh connection: the last one may have idled past the
    // server's keep-alive deadline).
    let mut c = Conn::open(cached)?;
    let mut h = histogram();
    for _ in 0..a.requests {
        let (d, ans) = c.get("/", true)?;
        if ans.status != 200 {
            return Err(format!("cached answer {}", ans.status).into());
        }
        h.saturating_record(d.as_nanos() as u64);
    }
    println!(
        "cached (portal_refresh {refresh:?}), one client, {} answers: {}",
        a.requests,
        hsum(&h)
    );

    // 3c. Cached under load.
    type Worker = Result<(Histogram<u64>, Histogram<u64>, u64), String>;
    let stop = Instant::now() + Duration::from_secs(a.load_secs);
    let workers: Vec<_> = (0..a.clients)
        .map(|k| {
            std::thread::spawn(move || -> Worker {
                let mut conn = Conn::open(cached).map_err(|e| e.to_string())?;
                let (mut plain, mut filtered) = (histogram(), histogram());
                let mut i = 0u64;
                while Instant::now() < stop {
                    let path = match (i % 10, (i + k as u64) % 2) {
                        (9, _) => format!("/?q=shop+{}", (i / 10 + k as u64 * 7) % 50),
                        (_, 0) => "/".to_owned(),
                        _ => "/?lang=en".to_owned(),
                    };
                    let (d, ans) = conn.get(&path, true).map_err(|e| e.to_string())?;
                    if ans.status != 200 || !ans.gzip {
                        return Err(format!("{path}: {}", ans.status));
                    }
                    let h = if i % 10 == 9 {
                        &mut filtered
                    } else {
                        &mut plain
                    };
                    h.saturating_record(d.as_nanos() as u64);
                    i += 1;
                }
                Ok((plain, filtered, i))
            })
        })
        .collect();
    let (mut all, mut plain, mut filtered) = (histogram(), histogram(), histogram());
    let mut n = 0u64;
    for w in workers {
        let (p, f, i) = w.join().map_err(|_| "a client panicked")??;
        all.add(&p)?;
        all.add(&f)?;
        plain.add(&p)?;
        filtered.add(&f)?;
        n += i;
    }
    println!(
        "cached under load: {} clients for {} s, {} answers ({:.0}/s): all {}",
        a.clients,
        a.load_secs,
        n,
        n as f64 / a.load_secs as f64,
        hsum(&all)
    );
    println!("  `/` and `/?lang=en` (9 in 10): {}", hsum(&plain));
    println!(
        "  `/?q=shop+N` (1 in 10, 50 filters, each rendered once per build): {}",
        hsum(&filtered)
    );

    // 3d. After an idle spell.
    let mut h = histogram();
    for _ in 0..a.idle_samples {
        std::thread::sleep(Duration::from_secs(a.idle_secs));
        let mut c = Conn::open(cached)?;
        let (d, ans) = c.get("/", true)?;
        if ans.status != 200 {
            return Err(format!("idle answer {}", ans.status).into());
        }
        h.saturating_record(d.as_nanos() as u64);
    }
    println!(
        "cached, first answer after {} s idle: {}",
        a.idle_secs,
        hsum(&h)
    );

    health.shutdown();
    drop(rt);
    Ok(())
}
