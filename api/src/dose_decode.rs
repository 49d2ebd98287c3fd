//! Request-body decoding of `POST /v1/vaccinations`: one dose object, a JSON array, NDJSON, or
//! CSV (RFC 4180, through the `csv` crate) into one [`DoseItem`] per record, in request order.
//!
//! As for scans, a field of the wrong type does not fail the request: it becomes that record's
//! rejection reason, so indexes line up with the request. The reasons of type errors, checked
//! in this order: `person` missing or not a string is `invalid_person`; `dose` missing or not an
//! integer (JSON: a fraction, a string, beyond i64; CSV: a cell that is not a base-10 integer)
//! is `invalid_dose`; `vaccine` missing or not a string is `unknown_vaccine`; `administered_at`
//! missing or not an integer is `invalid_ts`; `area` not a string is `unknown_area`; `lot` or
//! `site` not a string is `invalid_row`, as is a CSV row whose number of cells differs from the
//! header's. The values (id alphabets, ranges, codes, registered areas, conflicts) are checked
//! by the health domain.
//!
//! Whole-request failures (400, nothing stored): a body that is not JSON/NDJSON, an array element
//! or NDJSON line that is not an object, a CSV without a header naming `person`, `dose`,
//! `vaccine` and `administered_at`, or one naming a column twice. More than [`MAX_DOSES`]
//! records is 413.
//!
//! This module never touches the health domain: it turns bytes into [`DoseItem`]s.

use std::cell::Cell;
use std::fmt;

use health::{DoseInput, DoseItem, DoseReject};
use hyper::header::CONTENT_TYPE;
use hyper::HeaderMap;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::problem::ApiError;

/// Most dose records in one request (contract section 11).
pub const MAX_DOSES: usize = 100_000;

/// The columns of a dose record, in the order of the contract (and of the CSV the import tool
/// and the generator write).
pub const DOSE_COLUMNS: [&str; 7] = [
    "person",
    "dose",
    "vaccine",
    "administered_at",
    "lot",
    "site",
    "area",
];

/// The columns a CSV header must name.
pub const REQUIRED_COLUMNS: [&str; 4] = ["person", "dose", "vaccine", "administered_at"];

/// How a doses body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoseFormat {
    /// One dose object, or an array of them (`application/json`, also when no type is sent).
    Json,
    /// One dose object per line; blank lines are skipped (`application/x-ndjson`).
    Ndjson,
    /// A header row, then one record per row (`text/csv`).
    Csv,
}

/// Why a doses body could not be decoded at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DoseDecodeError {
    /// Not JSON/NDJSON/CSV of the expected shape (answered 400).
    #[error("{0}")]
    Malformed(String),
    /// More than [`MAX_DOSES`] records (answered 413).
    #[error("more than {MAX_DOSES} dose records in one request")]
    TooMany,
}

impl From<DoseDecodeError> for ApiError {
    fn from(e: DoseDecodeError) -> ApiError {
        match e {
            DoseDecodeError::TooMany => ApiError::TooLarge(e.to_string()),
            DoseDecodeError::Malformed(m) => ApiError::BadRequest(m),
        }
    }
}

/// The body format named by `Content-Type` (JSON when absent); any other type is 415.
pub fn dose_format(headers: &HeaderMap) -> Result<DoseFormat, ApiError> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Ok(DoseFormat::Json);
    };
    let value = value.to_str().unwrap_or("");
    let essence = value.split(';').next().unwrap_or("").trim();
    let is = |t: &str| essence.eq_ignore_ascii_case(t);
    if is("application/json") {
        Ok(DoseFormat::Json)
    } else if is("application/x-ndjson") || is("application/ndjson") {
        Ok(DoseFormat::Ndjson)
    } else if is("text/csv") {
        Ok(DoseFormat::Csv)
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type '{value}' is not accepted here; send application/json, \
             application/x-ndjson or text/csv"
        )))
    }
}

/// Decodes a doses body into one [`DoseItem`] per record, in request order.
pub fn decode_doses(body: &[u8], format: DoseFormat) -> Result<Vec<DoseItem>, DoseDecodeError> {
    match format {
        DoseFormat::Json => decode_json(body),
        DoseFormat::Ndjson => decode_ndjson(body),
        DoseFormat::Csv => decode_csv(body),
    }
}

const TOO_MANY: &str = "too many dose records";

fn decode_json(body: &[u8]) -> Result<Vec<DoseItem>, DoseDecodeError> {
    let mut out = Vec::with_capacity((body.len() / 96).clamp(1, MAX_DOSES));
    let too_many = Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(body);
    let res = TopSeed {
        out: &mut out,
        too_many: &too_many,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    if too_many.get() {
        return Err(DoseDecodeError::TooMany);
    }
    res.map_err(|e| {
        DoseDecodeError::Malformed(format!(
            "body is not a dose object or an array of dose objects: {e}"
        ))
    })?;
    Ok(out)
}

fn decode_ndjson(body: &[u8]) -> Result<Vec<DoseItem>, DoseDecodeError> {
    let mut out = Vec::new();
    for (lineno, line) in body.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if out.len() == MAX_DOSES {
            return Err(DoseDecodeError::TooMany);
        }
        let item = serde_json::from_slice::<DoseElem>(line).map_err(|e| {
            DoseDecodeError::Malformed(format!(
                "line {} is not a JSON dose object: {e}",
                lineno + 1
            ))
        })?;
        out.push(item.0);
    }
    Ok(out)
}

/// Where each known column is in a CSV header.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CsvColumns {
    pub person: usize,
    pub dose: usize,
    pub vaccine: usize,
    pub administered_at: usize,
    pub lot: Option<usize>,
    pub site: Option<usize>,
    pub area: Option<usize>,
    /// Cells a data row must have.
    pub width: usize,
}

/// Reads a CSV header row: column names are matched ASCII case-insensitively after trimming
/// spaces (and a UTF-8 byte order mark before the first); unknown columns are ignored.
pub fn csv_columns<'a>(header: impl IntoIterator<Item = &'a [u8]>) -> Result<CsvColumns, String> {
    let mut found: [Option<usize>; 7] = [None; 7];
    let mut width = 0;
    for (i, cell) in header.into_iter().enumerate() {
        width += 1;
        let cell = cell.strip_prefix(b"\xef\xbb\xbf").unwrap_or(cell);
        let name = String::from_utf8_lossy(cell);
        let name = name.trim();
        let Some(k) = DOSE_COLUMNS
            .iter()
            .position(|c| c.eq_ignore_ascii_case(name))
        else {
            continue;
        };
        if found[k].is_some() {
            return Err(format!(
                "the CSV header names column '{}' twice",
                DOSE_COLUMNS[k]
            ));
        }
        found[k] = Some(i);
    }
    let missing: Vec<&str> = REQUIRED_COLUMNS
        .iter()
        .zip(found)
        .filter(|(_, f)| f.is_none())
        .map(|(c, _)| *c)
        .collect();
    match (found[0], found[1], found[2], found[3]) {
        (Some(person), Some(dose), Some(vaccine), Some(administered_at)) => Ok(CsvColumns {
            person,
            dose,
            vaccine,
            administered_at,
            lot: found[4],
            site: found[5],
            area: found[6],
            width,
        }),
        _ => Err(format!(
            "the CSV header row must name the columns person, dose, vaccine and \
             administered_at (in any order; lot, site and area are optional); missing: {}",
            missing.join(", ")
        )),
    }
}

impl CsvColumns {
    /// One data row as a record (`cells` in the row's order).
    pub fn record(&self, cells: &csv::ByteRecord) -> DoseItem {
        if cells.len() != self.width {
            return Err(DoseReject::InvalidRow);
        }
        // An empty cell is an absent value; a cell that is not UTF-8 cannot be a value at all.
        let text = |i: usize| -> Result<Option<String>, ()> {
            let raw = cells.get(i).unwrap_or_default();
            if raw.is_empty() {
                return Ok(None);
            }
            std::str::from_utf8(raw)
                .map(|s| Some(s.to_owned()))
                .map_err(|_| ())
        };
        let opt = |i: Option<usize>, wrong: DoseReject| match i {
            None => Ok(None),
            Some(i) => text(i).map_err(|()| wrong),
        };
        let int = |i: usize| -> Option<i64> {
            let raw = std::str::from_utf8(cells.get(i)?).ok()?;
            raw.trim().parse::<i64>().ok()
        };
        let person = text(self.person)
            .ok()
            .flatten()
            .ok_or(DoseReject::InvalidPerson)?;
        let dose = int(self.dose).ok_or(DoseReject::InvalidDose)?;
        let vaccine = text(self.vaccine)
            .ok()
            .flatten()
            .ok_or(DoseReject::UnknownVaccine)?;
        let administered_at = int(self.administered_at).ok_or(DoseReject::InvalidTs)?;
        let area = opt(self.area, DoseReject::UnknownArea)?;
        let lot = opt(self.lot, DoseReject::InvalidRow)?;
        let site = opt(self.site, DoseReject::InvalidRow)?;
        Ok(DoseInput {
            person,
            dose,
            vaccine,
            administered_at,
            lot,
            site,
            area,
        })
    }
}

/// A CSV reader configured as the server reads doses: RFC 4180 quoting (doubled quotes inside
/// quoted cells, which may hold commas and line breaks), CRLF or LF line ends, a leading UTF-8
/// BOM skipped, blank lines skipped, rows of any length (a row of the wrong length is that row's
/// `invalid_row`, not a failed request).
pub fn csv_reader<R: std::io::Read>(input: R) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(input)
}

fn decode_csv(body: &[u8]) -> Result<Vec<DoseItem>, DoseDecodeError> {
    let mut rdr = csv_reader(body);
    let mut row = csv::ByteRecord::new();
    let malformed = |e: csv::Error| DoseDecodeError::Malformed(format!("body is not CSV: {e}"));
    if !rdr.read_byte_record(&mut row).map_err(malformed)? {
        return Err(DoseDecodeError::Malformed(
            "the CSV body is empty: it needs a header row naming person, dose, vaccine and \
             administered_at"
                .into(),
        ));
    }
    let columns = csv_columns(row.iter()).map_err(DoseDecodeError::Malformed)?;
    let mut out = Vec::with_capacity((body.len() / 64).clamp(1, MAX_DOSES));
    while rdr.read_byte_record(&mut row).map_err(malformed)? {
        if out.len() == MAX_DOSES {
            return Err(DoseDecodeError::TooMany);
        }
        out.push(columns.record(&row));
    }
    Ok(out)
}

/// The top level of a JSON doses body: one object or an array of objects.
struct TopSeed<'a> {
    out: &'a mut Vec<DoseItem>,
    too_many: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for TopSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a dose object or an array of dose objects")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.out.push(DoseVisitor.visit_map(map)?);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(item) = seq.next_element::<DoseElem>()? {
            if self.out.len() == MAX_DOSES {
                self.too_many.set(true);
                return Err(de::Error::custom(TOO_MANY));
            }
            self.out.push(item.0);
        }
        Ok(())
    }
}

/// One dose object. Deserializing anything but an object is an error (the request fails).
struct DoseElem(DoseItem);

impl<'de> Deserialize<'de> for DoseElem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<DoseElem, D::Error> {
        deserializer.deserialize_map(DoseVisitor).map(DoseElem)
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Key {
    Person,
    Dose,
    Vaccine,
    AdministeredAt,
    Lot,
    Site,
    Area,
    #[serde(other)]
    Other,
}

struct DoseVisitor;

impl<'de> Visitor<'de> for DoseVisitor {
    type Value = DoseItem;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            "a dose object {\"person\",\"dose\",\"vaccine\",\"administered_at\",\"lot\"?,\"site\"?,\"area\"?}",
        )
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DoseItem, A::Error> {
        let mut f: [Val; 7] = Default::default();
        while let Some(key) = map.next_key::<Key>()? {
            let slot = match key {
                Key::Person => 0,
                Key::Dose => 1,
                Key::Vaccine => 2,
                Key::AdministeredAt => 3,
                Key::Lot => 4,
                Key::Site => 5,
                Key::Area => 6,
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            f[slot] = map.next_value()?;
        }
        let [person, dose, vaccine, administered_at, lot, site, area] = f;
        Ok(build(
            person,
            dose,
            vaccine,
            administered_at,
            lot,
            site,
            area,
        ))
    }
}

fn build(
    person: Val,
    dose: Val,
    vaccine: Val,
    administered_at: Val,
    lot: Val,
    site: Val,
    area: Val,
) -> DoseItem {
    let Val::Str(person) = person else {
        return Err(DoseReject::InvalidPerson);
    };
    let Val::Int(dose) = dose else {
        return Err(DoseReject::InvalidDose);
    };
    let Val::Str(vaccine) = vaccine else {
        return Err(DoseReject::UnknownVaccine);
    };
    let Val::Int(administered_at) = administered_at else {
        return Err(DoseReject::InvalidTs);
    };
    let area = area.optional_str().ok_or(DoseReject::UnknownArea)?;
    let lot = lot.optional_str().ok_or(DoseReject::InvalidRow)?;
    let site = site.optional_str().ok_or(DoseReject::InvalidRow)?;
    Ok(DoseInput {
        person,
        dose,
        vaccine,
        administered_at,
        lot,
        site,
        area,
    })
}

/// A JSON field value, classified: absent or `null`, a string, an integer that fits i64, or
/// anything else (a fraction, an exponent, a boolean, an array, an object, a huge integer).
#[derive(Default)]
enum Val {
    #[default]
    Absent,
    Str(String),
    Int(i64),
    Wrong,
}

impl Val {
    /// `Some(None)` when absent, `Some(Some(s))` for a string, `None` for another type.
    fn optional_str(self) -> Option<Option<String>> {
        match self {
            Val::Absent => Some(None),
            Val::Str(s) => Some(Some(s)),
            Val::Int(_) | Val::Wrong => None,
        }
    }
}

impl<'de> Deserialize<'de> for Val {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Val, D::Error> {
        deserializer.deserialize_any(ValVisitor)
    }
}

struct ValVisitor;

impl<'de> Visitor<'de> for ValVisitor {
    type Value = Val;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E>(self, v: &str) -> Result<Val, E> {
        Ok(Val::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Val, E> {
        Ok(Val::Str(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Val, E> {
        Ok(Val::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Val, E> {
        Ok(i64::try_from(v).map_or(Val::Wrong, Val::Int))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Val, E> {
        Ok(Val::Wrong)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Val, E> {
        Ok(Val::Wrong)
    }
    fn visit_unit<E>(self) -> Result<Val, E> {
        Ok(Val::Absent)
    }
    fn visit_none<E>(self) -> Result<Val, E> {
        Ok(Val::Absent)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Val, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Val::Wrong)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Val, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Val::Wrong)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use DoseReject::*;

    const PFIZER: &str = "EU/1/20/1528";

    fn d(person: &str, dose: i64, vaccine: &str, at: i64) -> DoseInput {
        DoseInput {
            person: person.into(),
            dose,
            vaccine: vaccine.into(),
            administered_at: at,
            lot: None,
            site: None,
            area: None,
        }
    }

    fn with(
        mut x: DoseInput,
        lot: Option<&str>,
        site: Option<&str>,
        area: Option<&str>,
    ) -> DoseInput {
        x.lot = lot.map(Into::into);
        x.site = site.map(Into::into);
        x.area = area.map(Into::into);
        x
    }

    fn csv(body: &str) -> Result<Vec<DoseItem>, DoseDecodeError> {
        decode_doses(body.as_bytes(), DoseFormat::Csv)
    }

    fn reasons(items: &[DoseItem]) -> Vec<Option<DoseReject>> {
        items.iter().map(|r| r.as_ref().err().copied()).collect()
    }

    #[test]
    fn media_types() {
        use hyper::header::HeaderValue;
        let mut h = HeaderMap::new();
        assert_eq!(dose_format(&h), Ok(DoseFormat::Json));
        for (t, f) in [
            ("application/json; charset=utf-8", DoseFormat::Json),
            ("application/x-ndjson", DoseFormat::Ndjson),
            ("Text/CSV; charset=utf-8; header=present", DoseFormat::Csv),
        ] {
            h.insert(CONTENT_TYPE, HeaderValue::from_static(t));
            assert_eq!(dose_format(&h), Ok(f), "{t}");
        }
        for t in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "text/tab-separated-values",
        ] {
            h.insert(CONTENT_TYPE, HeaderValue::from_static(t));
            assert!(
                matches!(dose_format(&h), Err(ApiError::UnsupportedMediaType(_))),
                "{t}"
            );
        }
    }

    #[test]
    fn one_object_array_and_ndjson_decode_alike() {
        let one = decode_doses(
            br#"{"person":"p1","dose":1,"vaccine":"EU/1/20/1528","administered_at":1700000000,"lot":"FE1","site":"Clinic 3","area":"ST-1","x":[1]}"#,
            DoseFormat::Json,
        )
        .unwrap();
        let want = with(
            d("p1", 1, PFIZER, 1_700_000_000),
            Some("FE1"),
            Some("Clinic 3"),
            Some("ST-1"),
        );
        assert_eq!(one, vec![Ok(want.clone())]);
        let arr = decode_doses(
            br#" [{"person":"p1","dose":1,"vaccine":"EU/1/20/1528","administered_at":1700000000,"lot":"FE1","site":"Clinic 3","area":"ST-1"},
                  {"person":"p2","dose":2,"vaccine":"Abdala","administered_at":1700000001,"lot":null}] "#,
            DoseFormat::Json,
        )
        .unwrap();
        let second = d("p2", 2, "Abdala", 1_700_000_001);
        assert_eq!(arr, vec![Ok(want.clone()), Ok(second.clone())]);
        let nd = decode_doses(
            b"{\"person\":\"p1\",\"dose\":1,\"vaccine\":\"EU/1/20/1528\",\"administered_at\":1700000000,\"lot\":\"FE1\",\"site\":\"Clinic 3\",\"area\":\"ST-1\"}\r\n\n \n{\"person\":\"p2\",\"dose\":2,\"vaccine\":\"Abdala\",\"administered_at\":1700000001}",
            DoseFormat::Ndjson,
        )
        .unwrap();
        assert_eq!(nd, vec![Ok(want), Ok(second)]);
        assert_eq!(decode_doses(b"[]", DoseFormat::Json), Ok(vec![]));
        assert_eq!(decode_doses(b"", DoseFormat::Ndjson), Ok(vec![]));
    }

    #[test]
    fn wrong_json_types_become_per_record_reasons() {
        let body = br#"[
            {"person":12,"dose":1,"vaccine":"V","administered_at":1},
            {"dose":1,"vaccine":"V","administered_at":1},
            {"person":"p","dose":1.5,"vaccine":"V","administered_at":1},
            {"person":"p","dose":"1","vaccine":"V","administered_at":1},
            {"person":"p","vaccine":"V","administered_at":1},
            {"person":"p","dose":1e0,"vaccine":"V","administered_at":1},
            {"person":"p","dose":1,"vaccine":7,"administered_at":1},
            {"person":"p","dose":1,"administered_at":1},
            {"person":"p","dose":1,"vaccine":"V","administered_at":1.5},
            {"person":"p","dose":1,"vaccine":"V","administered_at":"1700000000"},
            {"person":"p","dose":1,"vaccine":"V","administered_at":99999999999999999999},
            {"person":"p","dose":1,"vaccine":"V"},
            {"person":"p","dose":1,"vaccine":"V","administered_at":1,"area":5},
            {"person":"p","dose":1,"vaccine":"V","administered_at":1,"lot":42},
            {"person":"p","dose":1,"vaccine":"V","administered_at":1,"site":{"a":1}},
            {"person":"p","dose":1,"vaccine":"V","administered_at":1,"lot":true},
            {"person":"p","dose":1,"vaccine":"V","administered_at":1,"lot":["x"]},
            {"person":5,"dose":1,"vaccine":"V","administered_at":1,"lot":42},
            {"person":"p","dose":1,"vaccine":"V","administered_at":1,"lot":null,"site":null,"area":null,"extra":[{}]},
            {"person":"bad id","dose":99,"vaccine":"nope","administered_at":-5}
        ]"#;
        let got = decode_doses(body, DoseFormat::Json).unwrap();
        assert_eq!(
            reasons(&got),
            vec![
                Some(InvalidPerson),
                Some(InvalidPerson),
                Some(InvalidDose),
                Some(InvalidDose),
                Some(InvalidDose),
                Some(InvalidDose),
                Some(UnknownVaccine),
                Some(UnknownVaccine),
                Some(InvalidTs),
                Some(InvalidTs),
                Some(InvalidTs),
                Some(InvalidTs),
                Some(UnknownArea),
                Some(InvalidRow),
                Some(InvalidRow),
                Some(InvalidRow),
                Some(InvalidRow),
                Some(InvalidPerson),
                None,
                None,
            ]
        );
        assert_eq!(got[18], Ok(d("p", 1, "V", 1)));
        // Values are the health domain's to check.
        assert_eq!(got[19], Ok(d("bad id", 99, "nope", -5)));
    }

    #[test]
    fn malformed_json_fails_whole() {
        for body in [
            &b"nope"[..],
            b"",
            b"42",
            b"\"x\"",
            b"[{\"person\":\"p\"}, 3]",
            b"[{\"person\":\"p\"}",
            b"{} {}",
            b"[[]]",
        ] {
            assert!(
                matches!(
                    decode_doses(body, DoseFormat::Json),
                    Err(DoseDecodeError::Malformed(_))
                ),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let nd = decode_doses(b"{\"person\":\"p\"}\n[1]\n", DoseFormat::Ndjson);
        assert!(matches!(nd, Err(DoseDecodeError::Malformed(m)) if m.starts_with("line 2")));
    }

    #[test]
    fn csv_quoting_follows_rfc_4180() {
        // Quoted cells with commas, doubled quotes and a line break; CRLF line ends.
        let body = "person,dose,vaccine,administered_at,lot,site,area\r\n\
                    p1,1,EU/1/20/1528,1700000000,\"FE,12\",\"Clinic \"\"Hope\"\", ward 2\",ST-1\r\n\
                    p2,2,Abdala,1700000001,L9,\"Line one\r\nline two\",\r\n\
                    \"p3\",\"3\",\"CoronaVac\",\"1700000002\",\"\",\"\",\"\"\r\n";
        let got = csv(body).unwrap();
        assert_eq!(
            got,
            vec![
                Ok(with(
                    d("p1", 1, PFIZER, 1_700_000_000),
                    Some("FE,12"),
                    Some("Clinic \"Hope\", ward 2"),
                    Some("ST-1")
                )),
                Ok(with(
                    d("p2", 2, "Abdala", 1_700_000_001),
                    Some("L9"),
                    Some("Line one\r\nline two"),
                    None
                )),
                // Quoted empty cells are absent too.
                Ok(d("p3", 3, "CoronaVac", 1_700_000_002)),
            ]
        );
    }

    #[test]
    fn csv_bom_lf_blank_lines_and_a_header_in_another_order() {
        let body = "\u{feff}Area, Vaccine ,administered_at,extra,PERSON,dose\n\
                    ST-1,Covaxin,1700000000,ignored,p1,2\n\
                    \n\
                    ,Covaxin,1700000001,,p2,1";
        let got = csv(body).unwrap();
        assert_eq!(
            got,
            vec![
                Ok(with(
                    d("p1", 2, "Covaxin", 1_700_000_000),
                    None,
                    None,
                    Some("ST-1")
                )),
                Ok(d("p2", 1, "Covaxin", 1_700_000_001)),
            ]
        );
        // Only a header: nothing to store, not an error.
        assert_eq!(csv("person,dose,vaccine,administered_at\r\n"), Ok(vec![]));
    }

    #[test]
    fn csv_cells_become_per_row_reasons() {
        let body = "person,dose,vaccine,administered_at,lot\n\
                    p1,1,Covaxin,1700000000\n\
                    p1,1,Covaxin,1700000000,L1,extra\n\
                    ,1,Covaxin,1700000000,L1\n\
                    p1,,Covaxin,1700000000,L1\n\
                    p1,1.5,Covaxin,1700000000,L1\n\
                    p1,one,Covaxin,1700000000,L1\n\
                    p1,1,,1700000000,L1\n\
                    p1,1,Covaxin,,L1\n\
                    p1,1,Covaxin,2023-11-14,L1\n\
                    p1,1,Covaxin,1.7e9,L1\n\
                    p1, 2 ,Covaxin, 1700000000 ,\n\
                    ,,,,\n";
        let got = csv(body).unwrap();
        assert_eq!(
            reasons(&got),
            vec![
                Some(InvalidRow),
                Some(InvalidRow),
                Some(InvalidPerson),
                Some(InvalidDose),
                Some(InvalidDose),
                Some(InvalidDose),
                Some(UnknownVaccine),
                Some(InvalidTs),
                Some(InvalidTs),
                Some(InvalidTs),
                None,
                Some(InvalidPerson),
            ]
        );
        // Integers may carry spaces; text is kept as sent.
        assert_eq!(got[10], Ok(d("p1", 2, "Covaxin", 1_700_000_000)));
        // A cell that is not UTF-8.
        let mut bytes = b"person,dose,vaccine,administered_at,lot\np1,1,Covaxin,1,".to_vec();
        bytes.extend_from_slice(b"\xff\xfe\n");
        let got = decode_doses(&bytes, DoseFormat::Csv).unwrap();
        assert_eq!(reasons(&got), vec![Some(InvalidRow)]);
    }

    #[test]
    fn a_csv_header_without_the_required_columns_fails_whole() {
        for body in [
            "",
            "\n\n",
            "person,dose,vaccine\np1,1,Covaxin\n",
            "p1,1,Covaxin,1700000000\n",
            "person,dose,vaccine,administered,lot\n",
            "person,dose,vaccine,administered_at,person\n",
        ] {
            assert!(
                matches!(csv(body), Err(DoseDecodeError::Malformed(_))),
                "{body:?}"
            );
        }
        let Err(DoseDecodeError::Malformed(m)) = csv("lot,dose,vaccine\n") else {
            panic!("not refused");
        };
        assert!(m.ends_with("missing: person, administered_at"), "{m}");
    }

    #[test]
    fn more_than_the_limit_is_too_many() {
        let obj = r#"{"person":"p","dose":1,"vaccine":"V","administered_at":1}"#;
        let arr = format!("[{}]", vec![obj; MAX_DOSES + 1].join(","));
        assert_eq!(
            decode_doses(arr.as_bytes(), DoseFormat::Json),
            Err(DoseDecodeError::TooMany)
        );
        let nd = vec![obj; MAX_DOSES + 1].join("\n");
        assert_eq!(
            decode_doses(nd.as_bytes(), DoseFormat::Ndjson),
            Err(DoseDecodeError::TooMany)
        );
        let row = "p,1,V,1\n";
        let mut body = String::from("person,dose,vaccine,administered_at\n");
        body.push_str(&row.repeat(MAX_DOSES));
        assert_eq!(csv(&body).map(|v| v.len()), Ok(MAX_DOSES));
        body.push_str(row);
        assert_eq!(csv(&body), Err(DoseDecodeError::TooMany));
    }
}
