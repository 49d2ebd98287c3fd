//! A seeded generator of realistic dose-record CSV files (and the area tree they name), for
//! testing imports at scale: a province's districts and communes with populations, persons
//! living in them, the 2021–2022 campaign's vaccines in plausible shares, schedules with the
//! vaccines' own intervals (and mRNA boosters), lots and free-text sites (Vietnamese, with the
//! commas and quotes that make CSV quoting matter), and a chosen fraction of bad rows of every
//! kind the server rejects, plus exact duplicates (a retried upload) that it accepts.
//!
//! Streaming: each person's doses are generated at once and pass through a shuffle window of
//! [`WINDOW`] rows (paper records are typed in out of order), so memory is `O(WINDOW)` whatever
//! the number of rows. The same seed and options give the same bytes.
//!
//! The generator knows what the server must answer for each row, and returns it in
//! [`Expected`], so a test can compare an import's report with it exactly.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;

/// Rows held back to be emitted in random order.
pub const WINDOW: usize = 4096;

/// The header the generator writes.
pub const HEADER: &str = "person,dose,vaccine,administered_at,lot,site,area";

/// A seeded SplitMix64 generator: reproducible on every platform and version.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `[lo, hi]`.
    pub fn between(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1).max(1) as u64) as i64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// An index drawn with the given weights.
    pub fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let mut x = self.below(total);
        for (i, &w) in weights.iter().enumerate() {
            if x < u64::from(w) {
                return i;
            }
            x -= u64::from(w);
        }
        weights.len().saturating_sub(1)
    }
}

/// Options of a generated file.
#[derive(Debug, Clone)]
pub struct Options {
    /// Data rows to write, exactly (bad rows and duplicates included).
    pub rows: u64,
    pub seed: u64,
    /// Fraction of rows that are bad (each of a random kind) or exact duplicates.
    pub bad: f64,
    /// The server's clock at import: rows dated after it + 300 s are `in_future` ones only.
    pub now: i64,
    /// Districts of the province (communes per district: 8–14).
    pub districts: u32,
    /// Index of the first person id (`p` + at least 6 digits).
    pub first_person: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            rows: 1_000_000,
            seed: 1,
            bad: 0.01,
            now: 1_800_000_000,
            districts: 11,
            first_person: 0,
        }
    }
}

/// What the server must answer for the generated rows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Expected {
    pub rows: u64,
    /// Distinct persons with an accepted dose (the summary's `dose1` after the import).
    pub persons: u64,
    pub accepted: u64,
    /// Rejected rows by reason code.
    pub rejected: BTreeMap<String, u64>,
    /// Exact duplicates among the accepted rows.
    pub duplicates: u64,
}

impl Expected {
    /// All rejected rows.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

/// An area of the generated tree, in the shape of `POST /v1/areas`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Area {
    pub id: String,
    pub name: String,
    pub population: u64,
    pub parent: Option<String>,
}

/// The province, its districts and their communes (parents first).
pub fn areas(seed: u64, districts: u32) -> Vec<Area> {
    let mut rng = Rng::new(seed ^ 0xA4EA);
    let mut out = vec![Area {
        id: "ST".into(),
        name: "Tỉnh Sóc Trăng".into(),
        population: 0,
        parent: None,
    }];
    let mut province = 0;
    for d in 1..=districts.max(1) {
        let did = format!("ST-{d:02}");
        let dname = DISTRICTS[(d as usize - 1) % DISTRICTS.len()];
        let dindex = out.len();
        out.push(Area {
            id: did.clone(),
            name: dname.to_string(),
            population: 0,
            parent: Some("ST".into()),
        });
        let mut district = 0;
        for c in 1..=rng.between(8, 14) {
            let population = rng.between(4_000, 18_000) as u64;
            district += population;
            let kind = if c % 4 == 0 { "Thị trấn" } else { "Xã" };
            out.push(Area {
                id: format!("{did}-{c:02}"),
                name: format!("{kind} {} {c}", short(dname)),
                population,
                parent: Some(did.clone()),
            });
        }
        out[dindex].population = district;
        province += district;
    }
    out[0].population = province;
    out
}

const DISTRICTS: [&str; 11] = [
    "Thành phố Sóc Trăng",
    "Huyện Châu Thành",
    "Huyện Kế Sách",
    "Huyện Mỹ Tú",
    "Huyện Cù Lao Dung",
    "Huyện Long Phú",
    "Huyện Mỹ Xuyên",
    "Thị xã Ngã Năm",
    "Huyện Thạnh Trị",
    "Thị xã Vĩnh Châu",
    "Huyện Trần Đề",
];

fn short(district: &str) -> &str {
    district
        .strip_prefix("Thành phố ")
        .or_else(|| district.strip_prefix("Huyện "))
        .or_else(|| district.strip_prefix("Thị xã "))
        .unwrap_or(district)
}

/// A vaccine of the campaign: code, share of first doses (per mille), days to dose 2 (min,
/// max), single-dose, lot prefix.
struct Product {
    code: &'static str,
    share: u32,
    interval: (i64, i64),
    single: bool,
    lot: &'static str,
}

const PRODUCTS: [Product; 10] = [
    Product {
        code: "EU/1/21/1529",
        share: 350,
        interval: (56, 84),
        single: false,
        lot: "ABV",
    },
    Product {
        code: "BBIBP-CorV",
        share: 250,
        interval: (21, 28),
        single: false,
        lot: "2021",
    },
    Product {
        code: "EU/1/20/1528",
        share: 200,
        interval: (21, 42),
        single: false,
        lot: "FE",
    },
    Product {
        code: "EU/1/20/1507",
        share: 100,
        interval: (28, 35),
        single: false,
        lot: "30",
    },
    Product {
        code: "Sputnik-V",
        share: 30,
        interval: (21, 28),
        single: false,
        lot: "I-",
    },
    Product {
        code: "Abdala",
        share: 30,
        interval: (14, 21),
        single: false,
        lot: "AB",
    },
    Product {
        code: "Hayat-Vax",
        share: 10,
        interval: (21, 28),
        single: false,
        lot: "HV",
    },
    Product {
        code: "EU/1/20/1525",
        share: 10,
        interval: (0, 0),
        single: true,
        lot: "XD",
    },
    Product {
        code: "CoronaVac",
        share: 10,
        interval: (14, 28),
        single: false,
        lot: "J2021",
    },
    Product {
        code: "Covaxin",
        share: 10,
        interval: (28, 42),
        single: false,
        lot: "BB",
    },
];

/// 2021-03-08, the first dose given in Vietnam.
const CAMPAIGN_START: i64 = 1_615_161_600;
const DAY: i64 = 86_400;
/// Local time is UTC+7.
const LOCAL: i64 = 7 * 3600;

/// A data row, as cells.
#[derive(Debug, Clone)]
struct Row {
    person: String,
    dose: String,
    vaccine: String,
    at: String,
    lot: String,
    site: String,
    area: String,
    /// Drop the last cells (a row of the wrong length).
    short: bool,
}

/// Writes `options.rows` data rows (after the header) to `out`; returns what the server must
/// answer. `out` should be buffered.
pub fn generate(options: &Options, out: &mut impl Write) -> std::io::Result<Expected> {
    let mut rng = Rng::new(options.seed);
    let areas = areas(options.seed, options.districts);
    let communes: Vec<&Area> = areas.iter().filter(|a| a.id.len() == 8).collect();
    let weights: Vec<u32> = communes.iter().map(|a| a.population as u32).collect();
    let shares: Vec<u32> = PRODUCTS.iter().map(|p| p.share).collect();
    let mut wtr = csv::WriterBuilder::new()
        .flexible(true)
        .has_headers(false)
        .from_writer(out);
    wtr.write_record(HEADER.split(','))?;
    let mut expected = Expected {
        rows: options.rows,
        ..Expected::default()
    };
    let mut window: Vec<Row> = Vec::with_capacity(WINDOW + 8);
    let mut emitted: u64 = 0;
    let mut person = options.first_person;
    // A recent good row, to copy for duplicates and conflicts.
    let mut recent: Option<Row> = None;
    'outer: while emitted + (window.len() as u64) < options.rows {
        let id = format!("p{person:06}");
        person += 1;
        let home = communes[rng.weighted(&weights)];
        let mut counted = false;
        for mut row in person_doses(&mut rng, &id, home, &shares, options.now) {
            if emitted + (window.len() as u64) >= options.rows {
                break 'outer;
            }
            if rng.chance(options.bad) {
                let reason = spoil(&mut rng, &mut row, recent.as_ref(), options.now);
                match reason {
                    None => {
                        expected.accepted += 1;
                        expected.duplicates += 1;
                    }
                    Some(r) => *expected.rejected.entry(r.to_string()).or_default() += 1,
                }
            } else {
                expected.accepted += 1;
                if !counted {
                    expected.persons += 1;
                    counted = true;
                }
                recent = Some(row.clone());
            }
            window.push(row);
            if window.len() > WINDOW {
                let i = rng.below(window.len() as u64) as usize;
                let row = window.swap_remove(i);
                emit(row, &mut wtr)?;
                emitted += 1;
            }
        }
    }
    while !window.is_empty() {
        let i = rng.below(window.len() as u64) as usize;
        let row = window.swap_remove(i);
        emit(row, &mut wtr)?;
    }
    wtr.flush()?;
    Ok(expected)
}

fn emit<W: Write>(row: Row, wtr: &mut csv::Writer<W>) -> std::io::Result<()> {
    if row.short {
        wtr.write_record([&row.person, &row.dose, &row.vaccine, &row.at, &row.lot])?;
    } else {
        wtr.write_record([
            &row.person,
            &row.dose,
            &row.vaccine,
            &row.at,
            &row.lot,
            &row.site,
            &row.area,
        ])?;
    }
    Ok(())
}

/// One person's doses, in dose order, none after `now - 1 day`.
fn person_doses(rng: &mut Rng, person: &str, home: &Area, shares: &[u32], now: i64) -> Vec<Row> {
    let first = &PRODUCTS[rng.weighted(shares)];
    // Dose 1: a ramp over 2021 peaking from August to November, a tail into 2022.
    let day = match rng.below(100) {
        0..=9 => rng.between(0, 120),
        10..=84 => rng.between(145, 270),
        _ => rng.between(270, 380),
    };
    let mut at = CAMPAIGN_START + day * DAY;
    let count = if first.single {
        1 + u32::from(rng.chance(0.4))
    } else {
        match rng.below(100) {
            0..=9 => 1,
            10..=64 => 2,
            65..=94 => 3,
            _ => 4,
        }
    };
    let site = site(rng, home);
    let mut out = Vec::new();
    for n in 1..=count {
        let product = if n == 1 || (n == 2 && !first.single) {
            first
        } else {
            // Boosters: mostly mRNA.
            &PRODUCTS[if rng.chance(0.6) { 2 } else { 3 }]
        };
        if n > 1 {
            at += if n == 2 && !first.single {
                rng.between(first.interval.0, first.interval.1) * DAY
            } else {
                rng.between(120, 200) * DAY
            };
        }
        // Daytime local, on the hour's quarter.
        let t = (at - at % DAY - LOCAL + rng.between(30, 66) * 900).min(now - DAY);
        let area = match rng.below(100) {
            0..=84 => home.id.clone(),
            85..=91 => home.parent.clone().unwrap_or_default(),
            _ => String::new(),
        };
        out.push(Row {
            person: person.to_string(),
            dose: n.to_string(),
            vaccine: product.code.to_string(),
            at: t.to_string(),
            lot: if rng.chance(0.03) {
                String::new()
            } else {
                format!("{}{:04}", product.lot, rng.below(10_000))
            },
            site: if rng.chance(0.2) {
                self::site(rng, home)
            } else {
                site.clone()
            },
            area,
            short: false,
        });
    }
    out
}

fn site(rng: &mut Rng, home: &Area) -> String {
    match rng.below(10) {
        0..=5 => format!("Trạm Y tế {}", home.name),
        6 | 7 => format!(
            "Điểm tiêm lưu động số {}, {}",
            rng.between(1, 12),
            home.name
        ),
        8 => "Bệnh viện Đa khoa tỉnh Sóc Trăng, khu \"A\"".to_string(),
        _ => format!("Trường THCS {} (điểm tiêm tập trung)", home.name),
    }
}

/// Turns `row` into a bad row of a random kind, or into an exact duplicate of `recent` (the
/// server accepts it); returns the reason the server must give (`None`: accepted).
fn spoil(rng: &mut Rng, row: &mut Row, recent: Option<&Row>, now: i64) -> Option<&'static str> {
    let kind = rng.below(11);
    match (kind, recent) {
        (0, Some(r)) => {
            *row = r.clone();
            None
        }
        (1, Some(r)) => {
            *row = r.clone();
            row.lot = format!("{}-X", row.lot);
            Some("conflict")
        }
        (0..=2, _) => {
            row.person = format!("p {}", row.person.trim_start_matches('p'));
            Some("invalid_person")
        }
        (3, _) => {
            row.dose = if rng.chance(0.5) { "0" } else { "11" }.into();
            Some("invalid_dose")
        }
        (4, _) => {
            row.vaccine = ["Pfizer", "AstraZeneca", "Vero Cell", "eu/1/20/1528"]
                [rng.below(4) as usize]
                .into();
            Some("unknown_vaccine")
        }
        (5, _) => {
            // A date typed as a date, not unix seconds.
            row.at = format!("{:02}/{:02}/2021", rng.between(1, 28), rng.between(1, 12));
            Some("invalid_ts")
        }
        (6, _) => {
            // A year typed wrong: 2012 instead of 2021.
            row.at = (1_340_000_000 + rng.between(0, 10_000_000)).to_string();
            Some("invalid_ts")
        }
        (7, _) => {
            row.at = (now + rng.between(1, 30) * DAY).to_string();
            Some("in_future")
        }
        (8, _) => {
            row.area = "ST-99-99".into();
            Some("unknown_area")
        }
        (9, _) => {
            row.short = true;
            Some("invalid_row")
        }
        _ => {
            row.dose = "mũi 2".into();
            Some("invalid_dose")
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn run(options: &Options) -> (Vec<u8>, Expected) {
        let mut out = Vec::new();
        let e = generate(options, &mut out).unwrap();
        (out, e)
    }

    #[test]
    fn exact_row_count_reproducible_and_expected_adds_up() {
        let options = Options {
            rows: 5_000,
            seed: 7,
            bad: 0.05,
            ..Options::default()
        };
        let (a, e) = run(&options);
        let (b, _) = run(&options);
        assert_eq!(a, b, "same seed, same bytes");
        let (c, _) = run(&Options {
            seed: 8,
            ..options.clone()
        });
        assert_ne!(a, c);
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_reader(a.as_slice());
        assert_eq!(
            rdr.headers().unwrap().iter().collect::<Vec<_>>().join(","),
            HEADER
        );
        let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
        assert_eq!(rows.len(), 5_000);
        assert_eq!(e.rows, 5_000);
        assert_eq!(e.accepted + e.rejected_total(), 5_000);
        // About 5 % bad or duplicated, every reason present.
        let spoiled = e.rejected_total() + e.duplicates;
        assert!((150..=350).contains(&spoiled), "{e:?}");
        for reason in [
            "invalid_person",
            "invalid_dose",
            "unknown_vaccine",
            "invalid_ts",
            "in_future",
            "unknown_area",
            "conflict",
            "invalid_row",
        ] {
            assert!(e.rejected.get(reason).copied().unwrap_or(0) > 0, "{reason}");
        }
        let short = rows.iter().filter(|r| r.len() != 7).count() as u64;
        assert_eq!(short, e.rejected["invalid_row"]);
        // Some sites need quoting.
        assert!(String::from_utf8(a).unwrap().contains("\"Bệnh viện"));
    }

    #[test]
    fn the_area_tree_has_three_levels_and_sums_populations() {
        let areas = areas(3, 11);
        assert_eq!(areas[0].id, "ST");
        let districts: Vec<&Area> = areas
            .iter()
            .filter(|a| a.parent.as_deref() == Some("ST"))
            .collect();
        assert_eq!(districts.len(), 11);
        for d in districts {
            let sum: u64 = areas
                .iter()
                .filter(|a| a.parent.as_deref() == Some(d.id.as_str()))
                .map(|a| a.population)
                .sum();
            assert_eq!(sum, d.population, "{}", d.id);
        }
    }
}
