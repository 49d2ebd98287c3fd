//! Shared, seeded and realistic dataset builders for the engine benchmarks.
//!
//! The model: `persons` people over `days` days ending at a fixed `now` ([`NOW`], driven through
//! [`engine::ManualClock`] so every run is reproducible). Venues fall in four categories by index
//! (`i % 10`: 0–3 home-ish residential buildings, 4–5 workplaces, 6–8 shops, 9 markets), each with
//! its own default stay, and popularity inside a category follows a Zipf–Mandelbrot law
//! `p(k) ∝ 1 / (k + q)^s` (`s = 1.0`; `q` flattens the extreme head so the top venue is a very busy
//! market rather than a tenth of the country). Every person has a home-ish venue, maybe a
//! workplace, three favourite shops and a favourite market, all drawn once by popularity. On an
//! active day a person runs a routine (morning market, work, shop, evening at the home-ish venue),
//! each visit an `"in"` scan and, unless the check-out was forgotten, an `"out"` after its dwell.
//!
//! Arrival order is realistic: most scans arrive within seconds, a few percent minutes to hours
//! late, some phones upload a day or two later, and about one percent are retried (exact
//! duplicates). [`ScanStream`] yields scans in arrival order without holding the whole data set,
//! so the memory benchmark can stream ten million scans.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::{
    Action, Config, Durability, Engine, ManualClock, ScanInput, ScanItem, TraceRequest, VenueSpec,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The fixed "now" of every benchmark (2027-01-15, unix seconds).
pub const NOW: i64 = 1_800_000_000;
pub const DAY: i64 = 86_400;
pub const HOUR: i64 = 3_600;
const MIN: i64 = 60;
const NONE: u32 = u32::MAX;

/// Venue categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Residential building, dormitory, community hall.
    Home,
    /// Office, factory, school.
    Work,
    /// Shop, café, pharmacy.
    Shop,
    /// Market, supermarket, mall.
    Market,
}

/// The category of venue number `i`.
pub fn category(i: u32) -> Category {
    match i % 10 {
        0..=3 => Category::Home,
        4 | 5 => Category::Work,
        6..=8 => Category::Shop,
        _ => Category::Market,
    }
}

/// Dataset parameters. [`Params::standard`] gives the benchmark defaults for a scan count.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Scan items to generate (duplicates included).
    pub scans: u64,
    pub persons: u32,
    pub venues: u32,
    /// Days of history, ending at `now`.
    pub days: u32,
    pub seed: u64,
    pub now: i64,
    /// Zipf exponent of venue popularity.
    pub zipf_s: f64,
    /// Zipf–Mandelbrot offset of venue popularity (0 = pure Zipf).
    pub zipf_q: f64,
    /// Share of scans arriving minutes to two hours late.
    pub late_frac: f64,
    /// Share of scans uploaded 2–48 hours late (offline phones).
    pub offline_frac: f64,
    /// Share of scans retried (sent twice).
    pub dup_frac: f64,
    /// Share of visits whose check-out is forgotten.
    pub forget_out: f64,
}

impl Params {
    /// The benchmark defaults for `scans` scans: 10 scans per person over 14 days and 100 scans per
    /// venue, so 10 M scans means 1 M persons and 100 k venues.
    pub fn standard(scans: u64) -> Params {
        Params {
            scans,
            persons: (scans / 10).max(1_000) as u32,
            venues: (scans / 100).max(100) as u32,
            days: 14,
            seed: 0x5EED_C0DE,
            now: NOW,
            zipf_s: 1.0,
            zipf_q: 20.0,
            late_frac: 0.03,
            offline_frac: 0.005,
            dup_frac: 0.01,
            forget_out: 0.3,
        }
    }

    /// The same data set with no late, offline or duplicate scans (arrival ≈ timestamp order).
    pub fn in_order(mut self) -> Params {
        self.late_frac = 0.0;
        self.offline_frac = 0.0;
        self.dup_frac = 0.0;
        self
    }

    /// A short, file-name-safe key naming these parameters (the store cache directory).
    pub fn key(&self) -> String {
        format!(
            "s{}-p{}-v{}-d{}-seed{:x}-now{}-z{}q{}-l{}o{}d{}f{}",
            self.scans,
            self.persons,
            self.venues,
            self.days,
            self.seed,
            self.now,
            self.zipf_s,
            self.zipf_q,
            self.late_frac,
            self.offline_frac,
            self.dup_frac,
            self.forget_out
        )
    }
}

/// The id of person number `i`: `vn` and ten hex digits of a bijective scramble of `i`.
pub fn person_id(i: u32) -> String {
    let x = (i as u64).wrapping_mul(0x5_DEEC_E66D) & ((1 << 40) - 1);
    format!("vn{x:010x}")
}

const PROVINCES: [&str; 8] = ["HN", "HCM", "DN", "HP", "CT", "ST", "BD", "KH"];

/// The id of venue number `i`, e.g. `VN-ST-000123`.
pub fn venue_id(i: u32) -> String {
    format!(
        "VN-{}-{i:06}",
        PROVINCES[(i as usize / 10) % PROVINCES.len()]
    )
}

/// The default stay of venue `i` (`None`: the server default, 7200 s).
pub fn venue_stay(i: u32) -> Option<u32> {
    match category(i) {
        Category::Home => Some(4 * 3_600),
        Category::Work => Some(9 * 3_600),
        Category::Shop if i.is_multiple_of(3) => None,
        Category::Shop => Some(if i.is_multiple_of(2) { 1_800 } else { 2_700 }),
        Category::Market => Some(3_600),
    }
}

/// The venue registrations of a data set.
pub fn venue_specs(p: &Params) -> Vec<VenueSpec> {
    (0..p.venues)
        .map(|i| VenueSpec {
            id: venue_id(i),
            name: format!("{:?} {i}", category(i)),
            province: Some(PROVINCES[(i as usize / 10) % PROVINCES.len()].to_string()),
            default_stay_s: venue_stay(i),
        })
        .collect()
}

/// One generated scan, compact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    pub person: u32,
    pub venue: u32,
    pub ts: i64,
    pub out: bool,
}

impl Scan {
    /// As an ingestion item.
    pub fn item(&self) -> ScanItem {
        Ok(ScanInput {
            person: person_id(self.person),
            venue: venue_id(self.venue),
            ts: Some(self.ts),
            action: if self.out { Action::Out } else { Action::In },
        })
    }
}

/// Popularity sampler over one category's venues.
struct Zipf {
    venues: Vec<u32>,
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(venues: Vec<u32>, s: f64, q: f64) -> Zipf {
        let mut acc = 0.0;
        let mut cdf = Vec::with_capacity(venues.len());
        for k in 0..venues.len() {
            acc += 1.0 / (k as f64 + 1.0 + q).powf(s);
            cdf.push(acc);
        }
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { venues, cdf }
    }

    fn sample(&self, rng: &mut StdRng) -> u32 {
        if self.venues.is_empty() {
            return NONE;
        }
        let u: f64 = rng.gen();
        let k = self
            .cdf
            .partition_point(|&c| c < u)
            .min(self.venues.len() - 1);
        self.venues[k]
    }
}

/// A person's habits.
#[derive(Clone, Copy)]
struct Profile {
    home: u32,
    work: u32,
    shops: [u32; 3],
    market: u32,
}

/// A scan with its arrival time at the server.
#[derive(Clone, Copy)]
struct Pending {
    arrival: i64,
    scan: Scan,
}

/// Counts of what a stream generated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    pub items: u64,
    pub ins: u64,
    pub outs: u64,
    pub duplicates: u64,
    pub late: u64,
    pub offline: u64,
    pub visits: u64,
    pub forgotten_outs: u64,
    pub active_person_days: u64,
}

/// Scans in arrival order, generated a day at a time.
pub struct ScanStream {
    p: Params,
    rng: StdRng,
    home: Zipf,
    shop: Zipf,
    market: Zipf,
    profiles: Vec<Profile>,
    /// Day (+1) on which each person last ran a routine.
    last_day: Vec<u32>,
    day: u32,
    generated: u64,
    ready: std::vec::IntoIter<Scan>,
    pending: Vec<Pending>,
    stats: StreamStats,
}

impl ScanStream {
    /// A stream of `p.scans` scans.
    pub fn new(p: &Params) -> ScanStream {
        let mut rng = StdRng::seed_from_u64(p.seed);
        let by_cat =
            |c: Category| -> Vec<u32> { (0..p.venues).filter(|&i| category(i) == c).collect() };
        let home = Zipf::new(by_cat(Category::Home), p.zipf_s, p.zipf_q);
        let work = Zipf::new(by_cat(Category::Work), p.zipf_s, p.zipf_q);
        let shop = Zipf::new(by_cat(Category::Shop), p.zipf_s, p.zipf_q);
        let market = Zipf::new(by_cat(Category::Market), p.zipf_s, p.zipf_q);
        let profiles = (0..p.persons)
            .map(|_| Profile {
                home: home.sample(&mut rng),
                work: if rng.gen_bool(0.7) {
                    work.sample(&mut rng)
                } else {
                    NONE
                },
                shops: [
                    shop.sample(&mut rng),
                    shop.sample(&mut rng),
                    shop.sample(&mut rng),
                ],
                market: market.sample(&mut rng),
            })
            .collect();
        ScanStream {
            p: p.clone(),
            rng,
            home,
            shop,
            market,
            profiles,
            last_day: vec![0; p.persons as usize],
            day: 0,
            generated: 0,
            ready: Vec::new().into_iter(),
            pending: Vec::new(),
            stats: StreamStats::default(),
        }
    }

    /// What was generated so far.
    pub fn stats(&self) -> StreamStats {
        self.stats
    }

    /// The rest of the stream as ingestion batches of `size` items.
    pub fn batches(self, size: usize) -> Batches {
        Batches { stream: self, size }
    }

    fn day_start(&self, day: u32) -> i64 {
        self.p.now - (self.p.days - day) as i64 * DAY
    }

    /// Generates day `day`'s scans and moves everything that arrives before its end to `ready`.
    fn generate_day(&mut self) {
        let day = self.day;
        self.day += 1;
        let days = self.p.days as u64;
        let quota_end = self.p.scans * (day as u64 + 1) / days;
        let start = self.day_start(day);
        let end = start + DAY;
        let mut fresh: Vec<Pending> = Vec::new();
        let mut misses = 0u32;
        while self.generated < quota_end && misses < 1_000 {
            let person = self.rng.gen_range(0..self.p.persons);
            if self.last_day[person as usize] == day + 1 {
                misses += 1;
                continue;
            }
            misses = 0;
            self.last_day[person as usize] = day + 1;
            self.stats.active_person_days += 1;
            let before = fresh.len();
            self.routine(person, start, &mut fresh);
            let made = (fresh.len() - before) as u64;
            let room = quota_end - self.generated;
            if made > room {
                fresh.truncate(before + room as usize);
            }
            self.generated += made.min(room);
        }
        let mut ready: Vec<Pending> = Vec::with_capacity(fresh.len());
        let last = self.day == self.p.days;
        for x in fresh.into_iter().chain(std::mem::take(&mut self.pending)) {
            if last || x.arrival < end {
                ready.push(x);
            } else {
                self.pending.push(x);
            }
        }
        ready.sort_by_key(|x| x.arrival);
        for x in &ready {
            self.stats.items += 1;
            if x.scan.out {
                self.stats.outs += 1;
            } else {
                self.stats.ins += 1;
            }
        }
        let scans: Vec<Scan> = ready.into_iter().map(|x| x.scan).collect();
        self.ready = scans.into_iter();
    }

    /// One person's day: appends its scans (with arrival times, duplicates included) to `out`.
    fn routine(&mut self, person: u32, day_start: i64, out: &mut Vec<Pending>) {
        let prof = self.profiles[person as usize];
        let weekday = (day_start / DAY) % 7 < 5;
        let mut plan: Vec<(u32, i64, i64)> = Vec::with_capacity(4); // venue, earliest, dwell
        let r = &mut self.rng;
        if r.gen_bool(0.25) {
            let v = pick(r, prof.market, &self.market);
            plan.push((v, day_start + 6 * HOUR, r.gen_range(20 * MIN..60 * MIN)));
        }
        if prof.work != NONE && r.gen_bool(if weekday { 0.8 } else { 0.15 }) {
            let at = day_start + 7 * HOUR + 30 * MIN + r.gen_range(0..90 * MIN);
            plan.push((prof.work, at, r.gen_range(8 * HOUR..9 * HOUR + 30 * MIN)));
        }
        if r.gen_bool(0.5) || plan.is_empty() {
            let v = if r.gen_bool(0.8) {
                prof.shops[r.gen_range(0..3)]
            } else {
                self.shop.sample(r)
            };
            let at = day_start + 11 * HOUR + r.gen_range(0..8 * HOUR);
            plan.push((v, at, r.gen_range(10 * MIN..45 * MIN)));
        }
        if r.gen_bool(0.4) {
            let v = if r.gen_bool(0.7) {
                prof.home
            } else {
                self.home.sample(r)
            };
            let at = day_start + 18 * HOUR + r.gen_range(0..3 * HOUR);
            plan.push((v, at, r.gen_range(HOUR..3 * HOUR)));
        }
        let mut cursor = day_start + 5 * HOUR + r.gen_range(0..90 * MIN);
        for (venue, earliest, dwell) in plan {
            if venue == NONE {
                continue;
            }
            let t_in = earliest.max(cursor + r.gen_range(5 * MIN..45 * MIN));
            let t_out = t_in + dwell;
            cursor = t_out;
            self.stats.visits += 1;
            push_scan(
                &self.p,
                r,
                &mut self.stats,
                out,
                Scan {
                    person,
                    venue,
                    ts: t_in,
                    out: false,
                },
            );
            if r.gen_bool(self.p.forget_out) {
                self.stats.forgotten_outs += 1;
            } else {
                push_scan(
                    &self.p,
                    r,
                    &mut self.stats,
                    out,
                    Scan {
                        person,
                        venue,
                        ts: t_out,
                        out: true,
                    },
                );
            }
        }
    }
}

/// The favourite venue most of the time, a fresh popular one otherwise.
fn pick(r: &mut StdRng, favourite: u32, z: &Zipf) -> u32 {
    if r.gen_bool(0.8) {
        favourite
    } else {
        z.sample(r)
    }
}

/// Adds a scan with its arrival time (late, offline or prompt), and maybe a retry of it.
fn push_scan(p: &Params, r: &mut StdRng, st: &mut StreamStats, out: &mut Vec<Pending>, s: Scan) {
    if s.ts > p.now {
        return;
    }
    let u: f64 = r.gen();
    let arrival = if u < p.offline_frac {
        st.offline += 1;
        s.ts + r.gen_range(2 * HOUR..48 * HOUR)
    } else if u < p.offline_frac + p.late_frac {
        st.late += 1;
        s.ts + r.gen_range(MIN..2 * HOUR)
    } else {
        s.ts + r.gen_range(0..5)
    };
    out.push(Pending { arrival, scan: s });
    if p.dup_frac > 0.0 && r.gen_bool(p.dup_frac) {
        st.duplicates += 1;
        out.push(Pending {
            arrival: arrival + r.gen_range(1..120),
            scan: s,
        });
    }
}

impl Iterator for ScanStream {
    type Item = Scan;

    fn next(&mut self) -> Option<Scan> {
        loop {
            if let Some(s) = self.ready.next() {
                return Some(s);
            }
            if self.day >= self.p.days {
                return None;
            }
            self.generate_day();
        }
    }
}

/// Ingestion batches over a [`ScanStream`].
pub struct Batches {
    stream: ScanStream,
    size: usize,
}

impl Batches {
    /// What was generated so far.
    pub fn stats(&self) -> StreamStats {
        self.stream.stats()
    }
}

impl Iterator for Batches {
    type Item = Vec<ScanItem>;

    fn next(&mut self) -> Option<Vec<ScanItem>> {
        let batch: Vec<ScanItem> = self
            .stream
            .by_ref()
            .take(self.size)
            .map(|s| s.item())
            .collect();
        (!batch.is_empty()).then_some(batch)
    }
}

/// A whole data set in memory: venue registrations and ingestion batches in arrival order.
pub struct Dataset {
    pub params: Params,
    pub venues: Vec<VenueSpec>,
    pub batches: Vec<Vec<ScanItem>>,
    pub stats: StreamStats,
}

impl Dataset {
    /// Builds the data set in batches of `batch_size`.
    pub fn build(p: &Params, batch_size: usize) -> Dataset {
        let mut batches = ScanStream::new(p).batches(batch_size);
        let all: Vec<Vec<ScanItem>> = batches.by_ref().collect();
        Dataset {
            params: p.clone(),
            venues: venue_specs(p),
            stats: batches.stats(),
            batches: all,
        }
    }

    /// Number of scan items.
    pub fn len(&self) -> usize {
        self.batches.iter().map(Vec::len).sum()
    }

    /// Whether there are no scans.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The same scans re-cut into batches of `size` (cloned).
    pub fn rebatch(&self, size: usize) -> Vec<Vec<ScanItem>> {
        let flat: Vec<ScanItem> = self.batches.iter().flatten().cloned().collect();
        flat.chunks(size).map(<[ScanItem]>::to_vec).collect()
    }
}

/// The benchmark binaries' result: any error, printed by `main`.
pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`), for the header of a run's output.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A duration as `12.3 µs`, `4.56 ms` or `7.890 s`.
pub fn fmt_d(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1_000.0 {
        format!("{us:.1} µs")
    } else if us < 1_000_000.0 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.3} s", us / 1e6)
    }
}

/// A chosen case: person, `sampled_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pick {
    pub person: String,
    pub sampled_at: i64,
}

/// `n` distinct seeded persons with a whole visit of at least 16 minutes inside their case window
/// (`sampled_at` 6–30 h before `now`, looking back `lookback_days` from it).
pub fn pick_cases(
    e: &Engine,
    p: &Params,
    now: i64,
    n: usize,
    lookback_days: u32,
    seed: u64,
) -> Vec<Pick> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(n);
    let mut tries = 0usize;
    while out.len() < n && tries < n * 1_000 {
        tries += 1;
        let i = rng.gen_range(0..p.persons);
        if !seen.insert(i) {
            continue;
        }
        let sampled_at = now - rng.gen_range(6 * HOUR..30 * HOUR);
        let from = sampled_at - i64::from(lookback_days) * DAY;
        let person = person_id(i);
        let Some(visits) = e.visits(&person, from, now) else {
            continue;
        };
        if visits
            .iter()
            .any(|v| v.start > from && v.end < now && v.end - v.start >= 960)
        {
            out.push(Pick { person, sampled_at });
        }
    }
    out
}

/// An engine configuration for benchmarks: the given durability and a manual clock.
pub fn bench_config(dir: &Path, durability: Durability, clock: Arc<ManualClock>) -> Config {
    let mut c = Config::new(dir);
    c.durability = durability;
    c.clock = clock;
    c
}

/// Opens an engine on `dir` and registers the data set's venues.
pub fn fresh_engine(
    dir: &Path,
    p: &Params,
    durability: Durability,
) -> engine::Result<(Engine, Arc<ManualClock>)> {
    let clock = Arc::new(ManualClock::new(p.now));
    let e = Engine::open(bench_config(dir, durability, clock.clone()))?;
    e.register_venues(venue_specs(p))?;
    Ok((e, clock))
}

/// What a pipelined ingestion did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestTotals {
    pub items: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
}

/// Submits `batches` keeping at most `in_flight` of them unacknowledged (1 = `ingest` semantics),
/// and waits for all of them.
pub fn ingest_pipelined(
    e: &Engine,
    batches: impl IntoIterator<Item = Vec<ScanItem>>,
    in_flight: usize,
) -> engine::Result<IngestTotals> {
    let in_flight = in_flight.max(1);
    let (tx, rx) = mpsc::channel::<engine::Result<engine::IngestOutcome>>();
    let mut totals = IngestTotals::default();
    let mut waiting = 0usize;
    let mut first_err = None;
    let mut take = |res: engine::Result<engine::IngestOutcome>, totals: &mut IngestTotals| match res
    {
        Ok(o) => {
            totals.accepted += o.accepted() as u64;
            totals.duplicates += o.duplicates as u64;
            totals.rejected += o.rejected.len() as u64;
        }
        Err(e) => {
            first_err.get_or_insert(e);
        }
    };
    for b in batches {
        if waiting == in_flight {
            if let Ok(r) = rx.recv() {
                take(r, &mut totals);
            }
            waiting -= 1;
        }
        totals.items += b.len() as u64;
        let tx = tx.clone();
        e.submit(
            b,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        waiting += 1;
    }
    for _ in 0..waiting {
        if let Ok(r) = rx.recv() {
            take(r, &mut totals);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(totals),
    }
}

/// Where cached benchmark stores live: `$BENCH_STORE_DIR`, or `target/bench-stores`.
pub fn store_root() -> PathBuf {
    std::env::var_os("BENCH_STORE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_target().join("bench-stores"))
}

/// Scratch directories for fresh stores (on the same disk as the target dir, never tmpfs).
pub fn scratch_root() -> PathBuf {
    let p = workspace_target().join("bench-tmp");
    let _ = fs::create_dir_all(&p);
    p
}

fn workspace_target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
        })
}

/// The cache directory of a data set's store.
pub fn store_dir(p: &Params) -> PathBuf {
    store_root().join(p.key())
}

const MARKER: &str = "BENCH_COMPLETE";

/// Marks `dir` as a complete store of `p` (so [`load_store`] reuses it).
pub fn mark_complete(dir: &Path, p: &Params) -> io::Result<()> {
    fs::write(dir.join(MARKER), p.key())
}

/// How [`load_store`] got its engine.
#[derive(Debug, Clone, Default)]
pub struct LoadInfo {
    /// True if the store was built now; false if a cached one was reopened.
    pub built: bool,
    /// Wall time of `Engine::open`.
    pub open_wall: Duration,
    /// Wall time of generating and ingesting (when built).
    pub build_wall: Duration,
    pub totals: IngestTotals,
}

/// A store of data set `p` in `dir` (Durability::Os): reopened if `dir` holds a complete one
/// (that reopen is itself a recovery measurement), otherwise rebuilt from scratch.
pub fn load_store(dir: &Path, p: &Params) -> engine::Result<(Engine, Arc<ManualClock>, LoadInfo)> {
    let complete = fs::read_to_string(dir.join(MARKER)).is_ok_and(|k| k == p.key());
    let clock = Arc::new(ManualClock::new(p.now));
    let mut info = LoadInfo::default();
    if complete {
        let t = Instant::now();
        let e = Engine::open(bench_config(dir, Durability::Os, clock.clone()))?;
        info.open_wall = t.elapsed();
        return Ok((e, clock, info));
    }
    let _ = fs::remove_dir_all(dir);
    let t = Instant::now();
    let (e, clock) = fresh_engine(dir, p, Durability::Os)?;
    info.open_wall = t.elapsed();
    let t = Instant::now();
    info.totals = ingest_pipelined(&e, ScanStream::new(p).batches(1_000), 4)?;
    e.flush()?;
    info.build_wall = t.elapsed();
    info.built = true;
    mark_complete(dir, p).map_err(|err| engine::Error::Io {
        context: format!("writing {}", dir.join(MARKER).display()),
        source: err,
    })?;
    Ok((e, clock, info))
}

/// The cached store of `p` under [`store_root`].
pub fn cached_store(p: &Params) -> engine::Result<(Engine, Arc<ManualClock>, LoadInfo)> {
    load_store(&store_dir(p), p)
}

/// `n` random persons (seeded) that have stored scans.
pub fn pick_persons(e: &Engine, p: &Params, n: usize, seed: u64) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n);
    let mut tries = 0;
    while out.len() < n && tries < n * 100 {
        tries += 1;
        let id = person_id(rng.gen_range(0..p.persons));
        if e.visits(&id, i64::MIN, i64::MAX).is_some() {
            out.push(id);
        }
    }
    out
}

/// The benchmark trace request: the default 14-day window ending at `now`.
pub fn trace_request(person: &str, now: i64, depth: u8) -> TraceRequest {
    TraceRequest::new(
        person.to_string(),
        None,
        None,
        None,
        Some(depth),
        None,
        None,
        now,
    )
    .unwrap_or_else(|_| unreachable!("the default window with depth 1 or 2 is valid"))
}

/// Memory figures of this process from `/proc/self/status`, in kB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcStatus {
    pub vm_rss_kb: u64,
    pub rss_anon_kb: u64,
    pub rss_file_kb: u64,
}

/// Reads `/proc/self/status` (zeros where unavailable).
pub fn proc_status() -> ProcStatus {
    let text = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    ProcStatus {
        vm_rss_kb: field("VmRSS:"),
        rss_anon_kb: field("RssAnon:"),
        rss_file_kb: field("RssFile:"),
    }
}

/// Median, 90th and 99th percentile and maximum of some durations.
pub fn percentiles(mut xs: Vec<Duration>) -> [Duration; 4] {
    if xs.is_empty() {
        return [Duration::ZERO; 4];
    }
    xs.sort_unstable();
    let at = |q: f64| xs[((xs.len() - 1) as f64 * q).round() as usize];
    [at(0.5), at(0.9), at(0.99), xs[xs.len() - 1]]
}

/// Scan counts from environment variable `var` (comma separated, `_` allowed), else `default`.
pub fn env_sizes(var: &str, default: &[u64]) -> Vec<u64> {
    std::env::var(var)
        .ok()
        .map(|v| {
            v.split(',')
                .filter_map(|s| s.trim().replace('_', "").parse().ok())
                .collect::<Vec<u64>>()
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_vec())
}

/// A short label for a scan count: `1M`, `10M`, `250k`.
pub fn size_label(n: u64) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1_000 && n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn streams_are_reproducible_and_sized() {
        let p = Params::standard(20_000);
        let a: Vec<Scan> = ScanStream::new(&p).collect();
        let b: Vec<Scan> = ScanStream::new(&p).collect();
        assert_eq!(a.len(), 20_000);
        assert_eq!(a, b);
        assert!(a.iter().all(|s| s.ts <= p.now && s.ts >= p.now - 14 * DAY));
    }

    #[test]
    fn person_ids_are_distinct_and_valid() {
        let mut ids: Vec<String> = (0..100_000).map(person_id).collect();
        assert!(ids.iter().all(|i| engine::is_valid_person_id(i)));
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 100_000);
        assert!(engine::is_valid_venue_id(&venue_id(99_999)));
    }

    #[test]
    fn a_small_store_accepts_everything() {
        let p = Params::standard(5_000);
        let dir = tempfile::tempdir().unwrap();
        let (e, _, info) = load_store(dir.path(), &p).unwrap();
        assert!(info.built);
        assert_eq!(info.totals.items, 5_000);
        assert_eq!(info.totals.rejected, 0);
        assert!(info.totals.duplicates > 0);
        let persons = pick_persons(&e, &p, 10, 1);
        assert_eq!(persons.len(), 10);
        assert!(e.trace(&trace_request(&persons[0], p.now, 2)).is_some());
    }
}
