//! The synthetic dataset: venues with Zipf-like popularity and per-venue default stays, and a
//! stream of scans made by persons with daily routines (work, shops, markets, restaurants,
//! clinics, sampling sites, stations), including the untidy parts of real traffic: forgotten
//! check-outs, re-scans, exact duplicates (client retries) and late uploads (scans emitted out of
//! timestamp order).
//!
//! Everything is a pure function of [`Params`] (the seed included), and the scan stream is
//! produced lazily: memory is `O(persons + venues + open visits)`, never `O(scans)`, so the same
//! code writes 1 million or 100 million scans.
//!
//! How the stream is made: outing start times are drawn as the sorted order statistics of a
//! non-homogeneous Poisson process over the window (hour-of-day and weekday profile, in local
//! time), generated one at a time without storing them. Each outing picks a free person, a kind
//! (by hour) and a venue (the person's workplace or a favourite, else a Zipf draw within the
//! kind), and a dwell time. Its `in` scan is emitted at once; its re-scan and `out` scans wait in
//! a heap until the emission clock reaches them. Every emitted scan may be duplicated (a retry a
//! few seconds later) or held back as a late upload (released minutes to hours later).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::rng::{mix, Rng};

/// Seconds in a day.
pub const DAY_S: i64 = 86_400;
const HOUR_S: i64 = 3_600;

/// Direction of a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Check-in (the contract's default).
    In,
    /// Check-out.
    Out,
}

impl Action {
    /// The contract's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::In => "in",
            Action::Out => "out",
        }
    }
}

/// One scan as the server receives it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Scan {
    pub person: String,
    pub venue: String,
    pub ts: i64,
    pub action: Action,
}

/// A scan with numeric ids (see [`Ids`] to format them); what [`Generator`] yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RawScan {
    pub ts: i64,
    pub person: u32,
    pub venue: u32,
    pub action: Action,
}

/// A venue as registered with `POST /v1/venues`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Venue {
    pub id: String,
    pub name: String,
    pub province: String,
    pub default_stay_s: u32,
}

/// Every knob of the generator. [`Params::default`] is sized for a 2-core machine.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Number of persons (`p000000` ...).
    pub persons: u32,
    /// Number of venues (`V-00000` ...).
    pub venues: u32,
    /// Exact number of scans the stream yields.
    pub scans: u64,
    /// Length of the window, in days, ending at `end_ts`.
    pub days: u32,
    /// End of the window (unix seconds); no scan is later than this.
    pub end_ts: i64,
    /// Seed of everything.
    pub seed: u64,
    /// Zipf exponent of venue popularity for errands (0 = uniform; 1 = classic Zipf).
    pub zipf: f64,
    /// Zipf exponent of workplace size (who works where); milder than errands so the largest
    /// employer holds about 1% of the workforce rather than a tenth of it.
    pub work_zipf: f64,
    /// Share of visits whose `out` scan is never made.
    pub forget_out: f64,
    /// Share of visits with an extra `in` scan at the same venue during the stay.
    pub rescan: f64,
    /// Share of scans sent twice (an exact duplicate a few seconds to two minutes later).
    pub duplicates: f64,
    /// Share of scans uploaded late (emitted after later scans).
    pub late: f64,
    /// Longest upload delay of a late scan, in seconds (delays are log-uniform from 60 s).
    pub late_max_s: i64,
    /// Share of persons with a workplace (office, factory or school).
    pub employed: f64,
    /// Offset of local time from UTC, in seconds (shapes the daily profile).
    pub utc_offset_s: i64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            persons: 100_000,
            venues: 10_000,
            scans: 1_000_000,
            days: 14,
            end_ts: now_unix(),
            seed: 42,
            zipf: 0.8,
            work_zipf: 0.5,
            forget_out: 0.25,
            rescan: 0.05,
            duplicates: 0.02,
            late: 0.05,
            late_max_s: 12 * HOUR_S,
            employed: 0.6,
            utc_offset_s: 7 * HOUR_S,
        }
    }
}

/// Current unix time in seconds.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A parameter that makes no sense.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError(pub String);

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid generator parameter: {}", self.0)
    }
}

impl std::error::Error for ParamError {}

impl Params {
    /// Checks ranges; every constructor of this module calls it.
    pub fn validate(&self) -> Result<(), ParamError> {
        let err = |m: &str| Err(ParamError(m.to_string()));
        if self.persons == 0 {
            return err("persons must be at least 1");
        }
        if self.venues == 0 {
            return err("venues must be at least 1");
        }
        if self.days == 0 || self.days > 3_650 {
            return err("days must be in 1..=3650");
        }
        for (name, p) in [
            ("forget-out", self.forget_out),
            ("rescan", self.rescan),
            ("duplicates", self.duplicates),
            ("late", self.late),
            ("employed", self.employed),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(ParamError(format!("{name} must be a share in 0..=1")));
            }
        }
        if !(0.0..=5.0).contains(&self.zipf) || !(0.0..=5.0).contains(&self.work_zipf) {
            return err("zipf exponents must be in 0..=5");
        }
        if !(60..=30 * DAY_S).contains(&self.late_max_s) {
            return err("late-max must be between 60 s and 30 days");
        }
        if self.utc_offset_s.abs() > 14 * HOUR_S {
            return err("utc offset must be within ±14 h");
        }
        if self.end_ts < i64::from(self.days) * DAY_S {
            return err("end-ts is too early");
        }
        Ok(())
    }

    /// First second of the window.
    pub fn start_ts(&self) -> i64 {
        self.end_ts - i64::from(self.days) * DAY_S
    }

    /// Expected number of scans one outing produces (before truncation).
    fn scans_per_outing(&self) -> f64 {
        (1.0 + (1.0 - self.forget_out) + self.rescan) * (1.0 + self.duplicates)
    }
}

/// Formats numeric ids as contract-valid strings: `p000123`, `V-00042`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    person_width: usize,
    venue_width: usize,
}

fn digits(n: u32) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

impl Ids {
    /// Widths for the given population sizes (at least 6 digits for persons, 5 for venues).
    pub fn new(persons: u32, venues: u32) -> Self {
        Ids {
            person_width: digits(persons.saturating_sub(1)).max(6),
            venue_width: digits(venues.saturating_sub(1)).max(5),
        }
    }

    /// The id of person `i`.
    pub fn person(&self, i: u32) -> String {
        format!("p{:0w$}", i, w = self.person_width)
    }

    /// The id of venue `i`.
    pub fn venue(&self, i: u32) -> String {
        format!("V-{:0w$}", i, w = self.venue_width)
    }

    /// The scan with string ids.
    pub fn scan(&self, s: &RawScan) -> Scan {
        Scan {
            person: self.person(s.person),
            venue: self.venue(s.venue),
            ts: s.ts,
            action: s.action,
        }
    }

    /// Appends the scan as one JSON object (no newline). Ids need no escaping.
    pub fn write_json<W: Write>(&self, w: &mut W, s: &RawScan) -> io::Result<()> {
        write!(
            w,
            "{{\"person\":\"p{:0pw$}\",\"venue\":\"V-{:0vw$}\",\"ts\":{},\"action\":\"{}\"}}",
            s.person,
            s.venue,
            s.ts,
            s.action.as_str(),
            pw = self.person_width,
            vw = self.venue_width
        )
    }

    /// Appends the scan as one CSV record `person,venue,ts,action` (no newline).
    pub fn write_csv<W: Write>(&self, w: &mut W, s: &RawScan) -> io::Result<()> {
        write!(
            w,
            "p{:0pw$},V-{:0vw$},{},{}",
            s.person,
            s.venue,
            s.ts,
            s.action.as_str(),
            pw = self.person_width,
            vw = self.venue_width
        )
    }
}

/// Kinds of venue; each has a share of all venues, a default stay, a typical dwell and an
/// hour-of-day visiting profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Office,
    Factory,
    School,
    Shop,
    Market,
    Restaurant,
    Clinic,
    SamplingSite,
    Station,
}

const KINDS: [Kind; 9] = [
    Kind::Office,
    Kind::Factory,
    Kind::School,
    Kind::Shop,
    Kind::Market,
    Kind::Restaurant,
    Kind::Clinic,
    Kind::SamplingSite,
    Kind::Station,
];

/// Errand kinds, in the order of [`ERRAND_PROFILE`].
const ERRANDS: [Kind; 6] = [
    Kind::Shop,
    Kind::Market,
    Kind::Restaurant,
    Kind::Clinic,
    Kind::SamplingSite,
    Kind::Station,
];

/// Relative rate of starting a work shift, by local hour.
const WORK_PROFILE: [f64; 24] = [
    0.0, 0.0, 0.0, 0.0, 0.0, 0.6, 3.0, 6.0, 4.0, 1.2, 0.4, 0.2, 0.4, 0.8, 0.4, 0.2, 0.2, 0.2, 0.2,
    0.2, 0.2, 0.6, 0.2, 0.0,
];

/// Relative rate of errands of each kind (rows as [`ERRANDS`]), by local hour.
const ERRAND_PROFILE: [[f64; 24]; 6] = [
    // shop
    [
        0.02, 0.01, 0.0, 0.0, 0.0, 0.05, 0.2, 0.4, 0.6, 0.7, 0.8, 0.9, 0.8, 0.7, 0.7, 0.8, 0.9,
        1.2, 1.5, 1.5, 1.2, 0.8, 0.4, 0.1,
    ],
    // market
    [
        0.0, 0.0, 0.0, 0.03, 0.15, 0.5, 0.75, 0.65, 0.5, 0.35, 0.25, 0.15, 0.1, 0.1, 0.15, 0.25,
        0.4, 0.45, 0.3, 0.15, 0.05, 0.0, 0.0, 0.0,
    ],
    // restaurant
    [
        0.04, 0.02, 0.0, 0.0, 0.0, 0.15, 0.6, 0.8, 0.5, 0.25, 0.3, 1.0, 1.2, 0.5, 0.15, 0.15, 0.25,
        0.5, 1.0, 1.05, 0.7, 0.4, 0.25, 0.1,
    ],
    // clinic
    [
        0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.03, 0.12, 0.15, 0.15, 0.13, 0.1, 0.03, 0.06, 0.12, 0.12,
        0.1, 0.05, 0.02, 0.0, 0.0, 0.0, 0.0, 0.0,
    ],
    // sampling site
    [
        0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.02, 0.08, 0.1, 0.1, 0.09, 0.06, 0.02, 0.04, 0.08, 0.08,
        0.06, 0.03, 0.01, 0.0, 0.0, 0.0, 0.0, 0.0,
    ],
    // station
    [
        0.01, 0.0, 0.0, 0.0, 0.03, 0.12, 0.27, 0.3, 0.18, 0.12, 0.09, 0.09, 0.09, 0.09, 0.09, 0.12,
        0.21, 0.27, 0.21, 0.12, 0.09, 0.06, 0.03, 0.02,
    ],
];

impl Kind {
    fn share(self) -> f64 {
        match self {
            Kind::Office => 0.14,
            Kind::Factory => 0.06,
            Kind::School => 0.06,
            Kind::Shop => 0.30,
            Kind::Market => 0.08,
            Kind::Restaurant => 0.20,
            Kind::Clinic => 0.06,
            Kind::SamplingSite => 0.04,
            Kind::Station => 0.06,
        }
    }

    /// The kind's typical `default_stay_s` (each venue varies it).
    pub fn default_stay_s(self) -> u32 {
        match self {
            Kind::Office => 32_400,
            Kind::Factory => 36_000,
            Kind::School => 28_800,
            Kind::Shop => 3_600,
            Kind::Market => 5_400,
            Kind::Restaurant => 5_400,
            Kind::Clinic => 7_200,
            Kind::SamplingSite => 1_800,
            Kind::Station => 3_600,
        }
    }

    fn dwell_median_s(self) -> f64 {
        match self {
            Kind::Office => 30_600.0,
            Kind::Factory => 32_400.0,
            Kind::School => 25_200.0,
            Kind::Shop => 1_500.0,
            Kind::Market => 2_700.0,
            Kind::Restaurant => 3_000.0,
            Kind::Clinic => 4_200.0,
            Kind::SamplingSite => 900.0,
            Kind::Station => 1_200.0,
        }
    }

    /// Offices, factories and schools: where persons go for the day.
    pub fn is_workplace(self) -> bool {
        matches!(self, Kind::Office | Kind::Factory | Kind::School)
    }

    /// Human-readable label, used in venue names.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Office => "Office",
            Kind::Factory => "Factory",
            Kind::School => "School",
            Kind::Shop => "Shop",
            Kind::Market => "Market",
            Kind::Restaurant => "Restaurant",
            Kind::Clinic => "Clinic",
            Kind::SamplingSite => "Sampling site",
            Kind::Station => "Station",
        }
    }

    fn index(self) -> usize {
        KINDS.iter().position(|&k| k == self).unwrap_or(0)
    }
}

const PROVINCES: [(&str, f64); 16] = [
    ("Ho Chi Minh City", 9.4),
    ("Ha Noi", 8.4),
    ("Thanh Hoa", 3.7),
    ("Nghe An", 3.4),
    ("Dong Nai", 3.2),
    ("Binh Duong", 2.6),
    ("Hai Phong", 2.1),
    ("An Giang", 1.9),
    ("Dak Lak", 1.9),
    ("Quang Ninh", 1.4),
    ("Lam Dong", 1.3),
    ("Can Tho", 1.3),
    ("Thua Thien Hue", 1.2),
    ("Khanh Hoa", 1.2),
    ("Da Nang", 1.2),
    ("Soc Trang", 1.2),
];

/// Venues with cumulative Zipf weights per kind: `O(venues)` memory.
#[derive(Debug, Clone)]
struct VenueTable {
    kinds: Vec<Kind>,
    provinces: Vec<u8>,
    stays: Vec<u32>,
    /// Per kind (index as [`KINDS`]): venues by descending popularity and cumulative weights.
    by_kind: Vec<(Vec<u32>, Vec<f64>)>,
    /// Workplaces (offices, factories, schools) together.
    work: (Vec<u32>, Vec<f64>),
}

impl VenueTable {
    fn new(p: &Params) -> Self {
        let n = p.venues as usize;
        let mut rng = Rng::new(mix(p.seed, 0x5645_4E55_4553));
        let shares: Vec<f64> = KINDS.iter().map(|k| k.share()).collect();
        let pweights: Vec<f64> = PROVINCES.iter().map(|x| x.1).collect();
        let mut kinds = Vec::with_capacity(n);
        let mut provinces = Vec::with_capacity(n);
        let mut stays = Vec::with_capacity(n);
        for _ in 0..n {
            let k = KINDS[rng.weighted(&shares).unwrap_or(3)];
            kinds.push(k);
            provinces.push(rng.weighted(&pweights).unwrap_or(0) as u8);
            let factor = [0.5, 0.75, 1.0, 1.0, 1.0, 1.5][rng.below(6) as usize];
            let stay = (f64::from(k.default_stay_s()) * factor / 300.0).round() * 300.0;
            stays.push((stay as u32).clamp(300, 86_400));
        }
        // Popularity rank: a seeded permutation, so ids do not reveal popularity.
        let mut order: Vec<u32> = (0..p.venues).collect();
        for i in (1..n).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
        let mut by_kind: Vec<(Vec<u32>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); KINDS.len()];
        let mut work: (Vec<u32>, Vec<f64>) = (Vec::new(), Vec::new());
        for (rank, &v) in order.iter().enumerate() {
            let w = ((rank + 1) as f64).powf(-p.zipf);
            let k = kinds[v as usize];
            let list = &mut by_kind[k.index()];
            let acc = list.1.last().copied().unwrap_or(0.0) + w;
            list.0.push(v);
            list.1.push(acc);
            if k.is_workplace() {
                let w = ((rank + 1) as f64).powf(-p.work_zipf);
                let acc = work.1.last().copied().unwrap_or(0.0) + w;
                work.0.push(v);
                work.1.push(acc);
            }
        }
        VenueTable {
            kinds,
            provinces,
            stays,
            by_kind,
            work,
        }
    }

    fn draw(list: &(Vec<u32>, Vec<f64>), rng: &mut Rng) -> Option<u32> {
        let total = *list.1.last()?;
        let x = rng.f64() * total;
        let i = list.1.partition_point(|&c| c <= x).min(list.0.len() - 1);
        Some(list.0[i])
    }

    fn venues(&self, ids: &Ids) -> Vec<Venue> {
        (0..self.kinds.len())
            .map(|i| {
                let province = PROVINCES[self.provinces[i] as usize].0;
                Venue {
                    id: ids.venue(i as u32),
                    name: format!("{} {} #{}", self.kinds[i].label(), province, i),
                    province: province.to_string(),
                    default_stay_s: self.stays[i],
                }
            })
            .collect()
    }
}

/// The venue list for `params`.
pub fn venues(params: &Params) -> Result<Vec<Venue>, ParamError> {
    params.validate()?;
    let ids = Ids::new(params.persons, params.venues);
    Ok(VenueTable::new(params).venues(&ids))
}

/// The scan stream for `params` with string ids.
pub fn scans(params: &Params) -> Result<Scans, ParamError> {
    Ok(Scans {
        inner: Generator::new(params)?,
    })
}

/// Iterator of [`Scan`]s (string ids); wraps [`Generator`].
#[derive(Debug)]
pub struct Scans {
    inner: Generator,
}

impl Scans {
    /// The underlying generator (statistics, id formatter).
    pub fn generator(&self) -> &Generator {
        &self.inner
    }
}

impl Iterator for Scans {
    type Item = Scan;
    fn next(&mut self) -> Option<Scan> {
        let s = self.inner.next()?;
        Some(self.inner.ids.scan(&s))
    }
}

/// What the generator made so far (events generated, whether or not truncation emitted them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GenStats {
    /// Outings (visits) started.
    pub outings: u64,
    /// Of which to a workplace.
    pub work_outings: u64,
    /// Visits whose `out` scan was never made.
    pub forgotten_out: u64,
    /// Extra `in` scans during a stay.
    pub rescans: u64,
    /// Exact duplicates scheduled.
    pub duplicates: u64,
    /// Scans held back as late uploads.
    pub late: u64,
    /// Scans dropped because they fall after the window's end (persons still inside).
    pub after_end: u64,
    /// Outings picked a person who was busy after every retry (the visits overlap; the server
    /// closes the earlier one implicitly).
    pub overlapping: u64,
    /// Extra check-ins appended at the end when the Poisson count fell short.
    pub topups: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Pending {
    key: i64,
    seq: u64,
    scan: RawScan,
}

/// The lazy scan stream: an `Iterator<Item = RawScan>` yielding exactly `params.scans` scans.
#[derive(Debug)]
pub struct Generator {
    p: Params,
    ids: Ids,
    table: VenueTable,
    rng: Rng,
    start: i64,
    end: i64,
    /// Cumulative outing-rate weights of the window's hour slots (`len = slots + 1`).
    cum: Vec<f64>,
    slot: usize,
    outings_planned: u64,
    outings_done: u64,
    u: f64,
    /// Per person: end of the current visit, seconds after `start` (0 = free).
    busy: Vec<u32>,
    pending: BinaryHeap<Reverse<Pending>>,
    late: BinaryHeap<Reverse<Pending>>,
    ready: VecDeque<RawScan>,
    seq: u64,
    emitted: u64,
    drained: bool,
    stats: GenStats,
}

fn weekday(local_ts: i64) -> usize {
    // 1970-01-01 was a Thursday; 0 = Monday.
    (local_ts.div_euclid(DAY_S) + 3).rem_euclid(7) as usize
}

fn work_factor(wd: usize) -> f64 {
    match wd {
        5 => 0.4,
        6 => 0.1,
        _ => 1.0,
    }
}

fn errand_factor(wd: usize) -> f64 {
    if wd >= 5 {
        1.2
    } else {
        1.0
    }
}

impl Generator {
    /// A generator for `params` (validated).
    pub fn new(params: &Params) -> Result<Self, ParamError> {
        params.validate()?;
        let p = params.clone();
        let table = VenueTable::new(&p);
        let start = p.start_ts();
        let end = p.end_ts;
        let slots = p.days as usize * 24;
        let mut cum = Vec::with_capacity(slots + 1);
        cum.push(0.0);
        let mut acc = 0.0;
        for i in 0..slots {
            let mid = start + i as i64 * HOUR_S + HOUR_S / 2 + p.utc_offset_s;
            let (work, errands) = Self::rates_at(&table, &p, mid);
            acc += work + errands.iter().sum::<f64>();
            cum.push(acc);
        }
        let planned = p.scans as f64 / p.scans_per_outing();
        // A small margin (a few standard deviations) so that the stream reaches `scans` before
        // the outings run out; the surplus at the very end is simply not emitted.
        let outings_planned = (planned + 4.0 * planned.sqrt() + 8.0).ceil() as u64;
        Ok(Generator {
            ids: Ids::new(p.persons, p.venues),
            rng: Rng::new(mix(p.seed, 0x0053_4341_4E53)),
            busy: vec![0; p.persons as usize],
            table,
            start,
            end,
            cum,
            slot: 0,
            outings_planned,
            outings_done: 0,
            u: 0.0,
            pending: BinaryHeap::new(),
            late: BinaryHeap::new(),
            ready: VecDeque::new(),
            seq: 0,
            emitted: 0,
            drained: false,
            stats: GenStats::default(),
            p,
        })
    }

    /// Relative outing rates (work, errands by [`ERRANDS`]) at local time `local`; kinds with
    /// no venue get zero.
    fn rates_at(table: &VenueTable, p: &Params, local: i64) -> (f64, [f64; 6]) {
        let hour = (local.rem_euclid(DAY_S) / HOUR_S) as usize;
        let wd = weekday(local);
        let work = if table.work.0.is_empty() {
            0.0
        } else {
            WORK_PROFILE[hour] * work_factor(wd) * p.employed
        };
        let mut errands = [0.0; 6];
        for (i, k) in ERRANDS.iter().enumerate() {
            if !table.by_kind[k.index()].0.is_empty() {
                errands[i] = ERRAND_PROFILE[i][hour] * errand_factor(wd);
            }
        }
        if work == 0.0 && errands.iter().all(|&e| e == 0.0) {
            // Only kinds without a profile at this hour exist: keep a trickle so every slot is
            // reachable and the stream never stalls.
            errands = [0.01; 6];
            for (i, k) in ERRANDS.iter().enumerate() {
                if table.by_kind[k.index()].0.is_empty() {
                    errands[i] = 0.0;
                }
            }
        }
        (work, errands)
    }

    /// The id formatter of this dataset.
    pub fn ids(&self) -> Ids {
        self.ids
    }

    /// The parameters.
    pub fn params(&self) -> &Params {
        &self.p
    }

    /// Counters of what was generated so far.
    pub fn stats(&self) -> &GenStats {
        &self.stats
    }

    /// Scans yielded so far.
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Start time of the next outing (sorted order statistics drawn one at a time).
    fn next_outing_time(&mut self) -> i64 {
        let remaining = (self.outings_planned - self.outings_done) as f64;
        self.outings_done += 1;
        let v = 1.0 - self.rng.f64(); // (0, 1]
        self.u += (1.0 - self.u) * (1.0 - v.powf(1.0 / remaining));
        let total = self.cum.last().copied().unwrap_or(0.0);
        let x = self.u.min(1.0) * total;
        let last = self.cum.len() - 2;
        while self.slot < last && self.cum[self.slot + 1] <= x {
            self.slot += 1;
        }
        let w = self.cum[self.slot + 1] - self.cum[self.slot];
        let frac = if w > 0.0 {
            ((x - self.cum[self.slot]) / w).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let t = self.start + self.slot as i64 * HOUR_S + (frac * HOUR_S as f64) as i64;
        t.min(self.end)
    }

    /// Moves every scheduled scan due at or before `t` towards the output.
    fn release_until(&mut self, t: i64) {
        loop {
            let a = self.pending.peek().map(|r| r.0.key);
            let b = self.late.peek().map(|r| r.0.key);
            let take_pending = match (a, b) {
                (Some(a), Some(b)) => a <= b,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => return,
            };
            if take_pending {
                match self.pending.peek() {
                    Some(r) if r.0.key <= t => {}
                    _ => return,
                }
                if let Some(Reverse(x)) = self.pending.pop() {
                    self.emit(x.scan, x.key);
                }
            } else {
                match self.late.peek() {
                    Some(r) if r.0.key <= t => {}
                    _ => return,
                }
                if let Some(Reverse(x)) = self.late.pop() {
                    self.ready.push_back(x.scan);
                }
            }
        }
    }

    /// A scan made at `now` leaves the phone: maybe duplicated, maybe uploaded late.
    fn emit(&mut self, scan: RawScan, now: i64) {
        if self.rng.chance(self.p.duplicates) {
            self.stats.duplicates += 1;
            let key = now + 1 + self.rng.below(120) as i64;
            let seq = self.next_seq();
            self.late.push(Reverse(Pending { key, seq, scan }));
        }
        if self.rng.chance(self.p.late) {
            self.stats.late += 1;
            let lo = 60f64.ln();
            let hi = (self.p.late_max_s as f64).ln();
            let delay = self.rng.range_f64(lo, hi).exp() as i64;
            let seq = self.next_seq();
            self.late.push(Reverse(Pending {
                key: now + delay,
                seq,
                scan,
            }));
        } else {
            self.ready.push_back(scan);
        }
    }

    fn schedule(&mut self, scan: RawScan) {
        if scan.ts > self.end {
            self.stats.after_end += 1;
            return;
        }
        let seq = self.next_seq();
        self.pending.push(Reverse(Pending {
            key: scan.ts,
            seq,
            scan,
        }));
    }

    /// Picks a person free at `t` (and employed, for a work shift): a few tries, then accepts
    /// an overlap. `None` only when a worker was needed and none was drawn.
    fn pick_person(&mut self, t: i64, worker: bool) -> Option<u32> {
        let rel = (t - self.start).clamp(0, i64::from(u32::MAX)) as u32;
        let mut fallback = None;
        for _ in 0..12 {
            let person = self.rng.below(u64::from(self.p.persons)) as u32;
            if worker && !self.employed(person) {
                continue;
            }
            if self.busy[person as usize] <= rel {
                return Some(person);
            }
            fallback = Some(person);
        }
        if fallback.is_some() {
            self.stats.overlapping += 1;
        }
        fallback
    }

    fn employed(&self, person: u32) -> bool {
        let h = mix(self.p.seed ^ 0x454D_504C, u64::from(person));
        (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64) < self.p.employed
    }

    fn workplace(&self, person: u32) -> Option<u32> {
        let mut r = Rng::new(mix(self.p.seed ^ 0x574F_524B, u64::from(person)));
        VenueTable::draw(&self.table.work, &mut r)
    }

    fn favourite(&self, person: u32, kind: Kind) -> Option<u32> {
        let mut r = Rng::new(mix(
            self.p.seed ^ 0x4641_5600 ^ kind.index() as u64,
            u64::from(person),
        ));
        VenueTable::draw(&self.table.by_kind[kind.index()], &mut r)
    }

    /// One visit starting at `t`.
    fn outing(&mut self, t: i64) {
        self.stats.outings += 1;
        let (work_rate, errand_rates) =
            Self::rates_at(&self.table, &self.p, t + self.p.utc_offset_s);
        let mut weights = [0.0; 7];
        weights[0] = work_rate;
        weights[1..].copy_from_slice(&errand_rates);
        let choice = self.rng.weighted(&weights).unwrap_or(1);
        let mut venue_kind = None;
        let mut worker = None;
        if choice == 0 {
            worker = self.pick_person(t, true);
            if let Some(v) = worker.and_then(|p| self.workplace(p)) {
                venue_kind = Some((v, self.table.kinds[v as usize]));
                self.stats.work_outings += 1;
            }
        }
        let person = match worker {
            Some(p) => p,
            None => self.pick_person(t, false).unwrap_or(0),
        };
        let (venue, kind) = match venue_kind {
            Some(x) => x,
            None => {
                // An errand.
                let idx = self
                    .rng
                    .weighted(&errand_rates)
                    .or_else(|| self.rng.weighted(&[1.0; 6]))
                    .unwrap_or(0);
                let kind = ERRANDS[idx];
                let fav = if matches!(kind, Kind::Shop | Kind::Market | Kind::Restaurant)
                    && self.rng.chance(0.5)
                {
                    self.favourite(person, kind)
                } else {
                    None
                };
                let v = match fav {
                    Some(v) => Some(v),
                    None => VenueTable::draw(&self.table.by_kind[kind.index()], &mut self.rng),
                };
                match v {
                    Some(v) => (v, kind),
                    // No venue of that kind at all: any venue (tiny datasets only).
                    None => {
                        let v = self.rng.below(u64::from(self.p.venues)) as u32;
                        (v, self.table.kinds[v as usize])
                    }
                }
            }
        };
        let dwell = if kind.is_workplace() {
            (kind.dwell_median_s() + 2_700.0 * self.rng.normal()).clamp(3_600.0, 43_200.0)
        } else {
            (kind.dwell_median_s() * (0.5 * self.rng.normal()).exp()).clamp(120.0, 21_600.0)
        } as i64;
        let leave = t + dwell;
        let rel = (leave - self.start).clamp(0, i64::from(u32::MAX)) as u32;
        let slot = &mut self.busy[person as usize];
        *slot = (*slot).max(rel);

        let scan_in = RawScan {
            ts: t,
            person,
            venue,
            action: Action::In,
        };
        self.emit(scan_in, t);
        if self.rng.chance(self.p.rescan) {
            self.stats.rescans += 1;
            let at = t + (dwell as f64 * self.rng.range_f64(0.1, 0.9)) as i64;
            self.schedule(RawScan {
                ts: at.max(t + 1),
                action: Action::In,
                ..scan_in
            });
        }
        if self.rng.chance(self.p.forget_out) {
            self.stats.forgotten_out += 1;
        } else {
            self.schedule(RawScan {
                ts: leave,
                action: Action::Out,
                ..scan_in
            });
        }
    }

    /// Advances the simulation; `false` once nothing more can be produced.
    fn step(&mut self) -> bool {
        if self.outings_done < self.outings_planned {
            let t = self.next_outing_time();
            self.release_until(t);
            self.outing(t);
            return true;
        }
        if !self.drained {
            self.drained = true;
            self.release_until(self.end);
            self.pending.clear();
            self.release_until(i64::MAX);
            return true;
        }
        // The Poisson count fell short of `scans` (rare): plain check-ins at the very end.
        self.stats.topups += 1;
        let t = self.end - self.rng.below(600) as i64;
        let person = self.rng.below(u64::from(self.p.persons)) as u32;
        let venue = VenueTable::draw(&self.table.by_kind[Kind::Shop.index()], &mut self.rng)
            .unwrap_or_else(|| self.rng.below(u64::from(self.p.venues)) as u32);
        self.ready.push_back(RawScan {
            ts: t,
            person,
            venue,
            action: Action::In,
        });
        true
    }
}

impl Iterator for Generator {
    type Item = RawScan;

    fn next(&mut self) -> Option<RawScan> {
        if self.emitted >= self.p.scans {
            return None;
        }
        loop {
            if let Some(s) = self.ready.pop_front() {
                self.emitted += 1;
                return Some(s);
            }
            if !self.step() {
                return None;
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::try_from(self.p.scans - self.emitted).unwrap_or(usize::MAX);
        (n, Some(n))
    }
}

/// Is `s` a valid person id per the contract (1-64 bytes of `[A-Za-z0-9._:+-]`)?
pub fn valid_person_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:+-".contains(&b))
}

/// Is `s` a valid venue id per the contract (1-64 bytes of `[A-Za-z0-9._:-]`)?
pub fn valid_venue_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    const END: i64 = 1_750_000_000;

    fn small(seed: u64) -> Params {
        Params {
            persons: 5_000,
            venues: 1_000,
            scans: 100_000,
            end_ts: END,
            seed,
            ..Params::default()
        }
    }

    #[test]
    fn exact_count_and_reproducible() {
        let p = small(7);
        let a: Vec<RawScan> = Generator::new(&p).expect("params").collect();
        let b: Vec<RawScan> = Generator::new(&p).expect("params").collect();
        assert_eq!(a.len(), 100_000);
        assert_eq!(a, b);
        let c: Vec<RawScan> = Generator::new(&small(8)).expect("params").collect();
        assert_ne!(a, c);
        assert_eq!(
            venues(&p).expect("params"),
            venues(&p).expect("params"),
            "venues reproducible"
        );
    }

    #[test]
    fn ids_valid_and_in_range() {
        let p = small(1);
        let vs = venues(&p).expect("params");
        assert_eq!(vs.len(), 1_000);
        let known: HashSet<&str> = vs.iter().map(|v| v.id.as_str()).collect();
        assert_eq!(known.len(), vs.len(), "venue ids unique");
        for v in &vs {
            assert!(valid_venue_id(&v.id), "{}", v.id);
            assert!((1..=86_400).contains(&v.default_stay_s));
            assert!(!v.name.is_empty() && !v.province.is_empty());
        }
        for s in scans(&p).expect("params").take(20_000) {
            assert!(valid_person_id(&s.person), "{}", s.person);
            assert!(valid_venue_id(&s.venue), "{}", s.venue);
            assert!(known.contains(s.venue.as_str()), "{} registered", s.venue);
            assert!(s.ts >= p.start_ts() && s.ts <= p.end_ts, "ts {}", s.ts);
        }
        assert_eq!(Ids::new(100_000, 10_000).person(123), "p000123");
        assert_eq!(Ids::new(100_000, 10_000).venue(42), "V-00042");
        assert_eq!(Ids::new(10_000_001, 10).person(5), "p00000005");
        assert!(!valid_person_id("") && !valid_person_id("a b"));
        assert!(valid_person_id("a+b") && !valid_venue_id("a+b"));
    }

    #[test]
    fn timestamps_span_the_window() {
        let p = small(3);
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        for s in Generator::new(&p).expect("params") {
            lo = lo.min(s.ts);
            hi = hi.max(s.ts);
        }
        assert!(
            lo >= p.start_ts() && lo < p.start_ts() + DAY_S,
            "first {lo}"
        );
        assert!(hi <= END && hi > END - DAY_S, "last {hi}");
    }

    #[test]
    fn zipf_skew_visible() {
        let p = small(5);
        let mut per_venue: HashMap<u32, u64> = HashMap::new();
        for s in Generator::new(&p).expect("params") {
            *per_venue.entry(s.venue).or_default() += 1;
        }
        let mut counts: Vec<u64> = (0..p.venues)
            .map(|v| per_venue.get(&v).copied().unwrap_or(0))
            .collect();
        counts.sort_unstable();
        let max = counts[counts.len() - 1];
        let median = counts[counts.len() / 2].max(1);
        assert!(max >= 20 * median, "max {max} median {median}");

        // Uniform popularity flattens it.
        let flat = Params { zipf: 0.0, ..p };
        let mut per_venue: HashMap<u32, u64> = HashMap::new();
        for s in Generator::new(&flat).expect("params") {
            *per_venue.entry(s.venue).or_default() += 1;
        }
        let max_flat = per_venue.values().copied().max().unwrap_or(0);
        assert!(max_flat < max / 2, "flat max {max_flat} vs zipf max {max}");
    }

    #[test]
    fn duplicates_and_out_of_order_at_requested_rates() {
        let p = Params {
            duplicates: 0.03,
            late: 0.08,
            ..small(11)
        };
        let all: Vec<RawScan> = Generator::new(&p).expect("params").collect();
        let n = all.len() as f64;
        let mut seen = HashSet::new();
        let mut dups = 0u64;
        let mut out_of_order = 0u64;
        let mut max_ts = i64::MIN;
        for s in &all {
            if !seen.insert(*s) {
                dups += 1;
            }
            if s.ts < max_ts {
                out_of_order += 1;
            }
            max_ts = max_ts.max(s.ts);
        }
        let dup_rate = dups as f64 / n;
        assert!((0.02..0.045).contains(&dup_rate), "dup rate {dup_rate}");
        let ooo = out_of_order as f64 / n;
        assert!((0.05..0.16).contains(&ooo), "out-of-order rate {ooo}");

        let none = Params {
            duplicates: 0.0,
            late: 0.0,
            ..p
        };
        let mut prev = i64::MIN;
        for s in Generator::new(&none).expect("params") {
            assert!(s.ts >= prev, "sorted without late uploads");
            prev = s.ts;
        }
    }

    #[test]
    fn forgotten_checkouts_and_rescans_present() {
        let p = small(13);
        let mut gen = Generator::new(&p).expect("params");
        let (mut ins, mut outs) = (0u64, 0u64);
        for s in gen.by_ref() {
            match s.action {
                Action::In => ins += 1,
                Action::Out => outs += 1,
            }
        }
        let st = gen.stats().clone();
        let forgot = st.forgotten_out as f64 / st.outings as f64;
        assert!((0.2..0.3).contains(&forgot), "forgotten {forgot}");
        let rescans = st.rescans as f64 / st.outings as f64;
        assert!((0.03..0.07).contains(&rescans), "rescans {rescans}");
        assert!(
            outs < ins && outs as f64 > 0.6 * ins as f64,
            "ins {ins} outs {outs}"
        );
        assert!(st.work_outings > st.outings / 6, "{st:?}");
    }

    #[test]
    fn visits_rarely_overlap_per_person() {
        let p = Params {
            duplicates: 0.0,
            late: 0.0,
            rescan: 0.0,
            forget_out: 0.0,
            ..small(17)
        };
        let mut gen = Generator::new(&p).expect("params");
        let n = gen.by_ref().count();
        let st = gen.stats();
        assert_eq!(n, 100_000);
        assert!(st.overlapping * 100 < st.outings, "{st:?}");
    }

    #[test]
    fn tiny_and_invalid_params() {
        let tiny = Params {
            persons: 1,
            venues: 1,
            scans: 50,
            days: 1,
            end_ts: END,
            ..Params::default()
        };
        let v: Vec<Scan> = scans(&tiny).expect("params").collect();
        assert_eq!(v.len(), 50);
        assert!(v
            .iter()
            .all(|s| s.person == "p000000" && s.venue == "V-00000"));
        for bad in [
            Params {
                persons: 0,
                ..tiny.clone()
            },
            Params {
                late: 1.5,
                ..tiny.clone()
            },
            Params {
                days: 0,
                ..tiny.clone()
            },
        ] {
            assert!(Generator::new(&bad).is_err());
        }
        let zero = Params { scans: 0, ..tiny };
        assert_eq!(Generator::new(&zero).expect("params").count(), 0);
    }

    #[test]
    fn serialisations_match_serde() {
        let p = small(2);
        let gen = Generator::new(&p).expect("params");
        let ids = gen.ids();
        for raw in gen.take(100) {
            let mut line = Vec::new();
            ids.write_json(&mut line, &raw).expect("write");
            let parsed: Scan = serde_json::from_slice(&line).expect("valid json");
            assert_eq!(parsed, ids.scan(&raw));
            let mut csv = Vec::new();
            ids.write_csv(&mut csv, &raw).expect("write");
            let text = String::from_utf8(csv).expect("utf8");
            let fields: Vec<&str> = text.split(',').collect();
            assert_eq!(fields.len(), 4);
            assert_eq!(fields[0], parsed.person);
            assert_eq!(fields[2], parsed.ts.to_string());
        }
    }
}
