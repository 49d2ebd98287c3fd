//! Request-body decoding: scans (one object, a JSON array, or NDJSON), venues and trace requests.
//!
//! Scans are the hot path (about a million a second on two cores), so they are decoded with a
//! hand-written serde visitor over the borrowed input: field names are matched without
//! allocating, string values are borrowed where JSON escapes allow it, and the only allocations
//! per scan are the two id `String`s the engine keeps. A field of the wrong JSON type does not
//! fail the request: it becomes that scan's rejection reason (contract section 2), so indexes in
//! the answer line up with the request. Only a body that is not JSON/NDJSON at all, or an array
//! element that is not an object, fails the whole request (400, nothing stored).
//!
//! This module must never touch the engine: it turns bytes into [`ScanItem`]s and nothing more.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use engine::{Action, RejectReason, ScanInput, ScanItem, VenueSpec, MAX_STAY_S};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// Largest request body, in bytes (contract section 6).
pub const MAX_BODY_BYTES: usize = 16 << 20;
/// Most scans in one request (contract section 6).
pub const MAX_SCANS: usize = 100_000;

/// How a scans body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanFormat {
    /// One scan object, or an array of scan objects.
    Json,
    /// One scan object per line; blank lines are skipped.
    Ndjson,
}

/// Why a body could not be decoded at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON/NDJSON, or not of the expected shape (answered 400).
    #[error("{0}")]
    Malformed(String),
    /// More than [`MAX_SCANS`] scans (answered 413).
    #[error("more than {MAX_SCANS} scans in one request")]
    TooMany,
}

const TOO_MANY: &str = "too many scans";

/// Decodes a scans body into one [`ScanItem`] per scan, in request order.
pub fn decode_scans(body: &[u8], format: ScanFormat) -> Result<Vec<ScanItem>, DecodeError> {
    let mut out = Vec::with_capacity((body.len() / 64).clamp(1, MAX_SCANS));
    match format {
        ScanFormat::Json => {
            let too_many = Cell::new(false);
            let mut de = serde_json::Deserializer::from_slice(body);
            let res = TopSeed {
                out: &mut out,
                too_many: &too_many,
            }
            .deserialize(&mut de)
            .and_then(|()| de.end());
            if too_many.get() {
                return Err(DecodeError::TooMany);
            }
            res.map_err(|e| DecodeError::Malformed(format!("body is not valid scan JSON: {e}")))?;
        }
        ScanFormat::Ndjson => {
            for (lineno, line) in body.split(|&b| b == b'\n').enumerate() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                if out.len() == MAX_SCANS {
                    return Err(DecodeError::TooMany);
                }
                let item = serde_json::from_slice::<ScanElem>(line).map_err(|e| {
                    DecodeError::Malformed(format!(
                        "line {} is not a JSON scan object: {e}",
                        lineno + 1
                    ))
                })?;
                out.push(item.0);
            }
        }
    }
    Ok(out)
}

/// The top level of a JSON scans body: one object or an array of objects.
struct TopSeed<'a> {
    out: &'a mut Vec<ScanItem>,
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
        f.write_str("a scan object or an array of scan objects")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.out.push(ScanVisitor.visit_map(map)?);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(item) = seq.next_element::<ScanElem>()? {
            if self.out.len() == MAX_SCANS {
                self.too_many.set(true);
                return Err(de::Error::custom(TOO_MANY));
            }
            self.out.push(item.0);
        }
        Ok(())
    }
}

/// One scan object. Deserializing anything but an object is an error (the request fails).
struct ScanElem(ScanItem);

impl<'de> Deserialize<'de> for ScanElem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ScanElem, D::Error> {
        deserializer.deserialize_map(ScanVisitor).map(ScanElem)
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Key {
    Person,
    Venue,
    Ts,
    Action,
    #[serde(other)]
    Other,
}

struct ScanVisitor;

impl<'de> Visitor<'de> for ScanVisitor {
    type Value = ScanItem;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a scan object {\"person\",\"venue\",\"ts\"?,\"action\"?}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ScanItem, A::Error> {
        let mut person = Str::Absent;
        let mut venue = Str::Absent;
        let mut action = Str::Absent;
        let mut ts = Ts::Absent;
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Person => person = map.next_value()?,
                Key::Venue => venue = map.next_value()?,
                Key::Action => action = map.next_value()?,
                Key::Ts => ts = map.next_value()?,
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(build_scan(person, venue, action, ts))
    }
}

/// Checks the fields in the documented order of reasons (docs/decisions.md): first a field of
/// the wrong JSON type (or a missing id), then the id alphabets, then the action's value. The
/// engine checks the rest (unknown venue, retention, clock skew).
fn build_scan(person: Str<'_>, venue: Str<'_>, action: Str<'_>, ts: Ts) -> ScanItem {
    let Str::Value(person) = person else {
        return Err(RejectReason::InvalidPerson);
    };
    let Str::Value(venue) = venue else {
        return Err(RejectReason::InvalidVenue);
    };
    let action = match action {
        Str::Absent => None,
        Str::Value(s) => Some(s),
        Str::Wrong => return Err(RejectReason::InvalidAction),
    };
    let ts = match ts {
        Ts::Absent => None,
        Ts::Value(t) => Some(t),
        Ts::Wrong => return Err(RejectReason::InvalidTs),
    };
    if !engine::is_valid_person_id(&person) {
        return Err(RejectReason::InvalidPerson);
    }
    if !engine::is_valid_venue_id(&venue) {
        return Err(RejectReason::InvalidVenue);
    }
    let action = match action {
        None => Action::In,
        Some(s) => Action::parse(&s).ok_or(RejectReason::InvalidAction)?,
    };
    Ok(ScanInput {
        person: person.into_owned(),
        venue: venue.into_owned(),
        ts,
        action,
    })
}

/// A field that should be a string: absent or `null`, a string, or a value of another type.
enum Str<'de> {
    Absent,
    Value(Cow<'de, str>),
    Wrong,
}

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Str<'de>, D::Error> {
        deserializer.deserialize_any(StrVisitor)
    }
}

struct StrVisitor;

impl<'de> Visitor<'de> for StrVisitor {
    type Value = Str<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Str<'de>, E> {
        Ok(Str::Value(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Str<'de>, E> {
        Ok(Str::Value(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Str<'de>, E> {
        Ok(Str::Value(Cow::Owned(v)))
    }
    fn visit_unit<E>(self) -> Result<Str<'de>, E> {
        Ok(Str::Absent)
    }
    fn visit_none<E>(self) -> Result<Str<'de>, E> {
        Ok(Str::Absent)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Str<'de>, E> {
        Ok(Str::Wrong)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Str<'de>, E> {
        Ok(Str::Wrong)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Str<'de>, E> {
        Ok(Str::Wrong)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Str<'de>, E> {
        Ok(Str::Wrong)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Str<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Str::Wrong)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Str<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Str::Wrong)
    }
}

/// The `ts` field: absent or `null`, an integer that fits i64, or anything else (a fraction, an
/// exponent, a string, an integer beyond i64).
enum Ts {
    Absent,
    Value(i64),
    Wrong,
}

impl<'de> Deserialize<'de> for Ts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Ts, D::Error> {
        deserializer.deserialize_any(TsVisitor)
    }
}

struct TsVisitor;

impl<'de> Visitor<'de> for TsVisitor {
    type Value = Ts;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_i64<E>(self, v: i64) -> Result<Ts, E> {
        Ok(Ts::Value(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Ts, E> {
        Ok(i64::try_from(v).map_or(Ts::Wrong, Ts::Value))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Ts, E> {
        Ok(Ts::Wrong)
    }
    fn visit_unit<E>(self) -> Result<Ts, E> {
        Ok(Ts::Absent)
    }
    fn visit_none<E>(self) -> Result<Ts, E> {
        Ok(Ts::Absent)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Ts, E> {
        Ok(Ts::Wrong)
    }
    fn visit_str<E>(self, _: &str) -> Result<Ts, E> {
        Ok(Ts::Wrong)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Ts, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Ts::Wrong)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ts, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Ts::Wrong)
    }
}

/// Decodes a body holding one `T` object or an array of them.
fn one_or_many<T: for<'de> Deserialize<'de>>(body: &[u8], what: &str) -> Result<Vec<T>, String> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => serde_json::from_slice::<Vec<T>>(body),
        Some(b'{') => serde_json::from_slice::<T>(body).map(|one| vec![one]),
        _ => return Err(format!("body must be a {what} object or an array of them")),
    }
    .map_err(|e| format!("body is not a valid {what} object or array: {e}"))
}

#[derive(Deserialize)]
struct VenueBody {
    id: String,
    name: String,
    #[serde(default)]
    province: Option<String>,
    #[serde(default)]
    default_stay_s: Option<i64>,
}

/// Decodes `POST /v1/venues`: one venue object or an array. Field types and the stay range are
/// checked here (400 for the whole request); id, name and province rules are the engine's.
pub fn decode_venues(body: &[u8]) -> Result<Vec<VenueSpec>, String> {
    let venues = one_or_many::<VenueBody>(body, "venue")?;
    venues
        .into_iter()
        .enumerate()
        .map(|(index, v)| {
            let default_stay_s = match v.default_stay_s {
                None => None,
                Some(s) => match u32::try_from(s) {
                    Ok(s) if (1..=MAX_STAY_S).contains(&s) => Some(s),
                    _ => {
                        return Err(format!(
                            "venue {index}: default_stay_s must be an integer in 1..={MAX_STAY_S}"
                        ))
                    }
                },
            };
            Ok(VenueSpec {
                id: v.id,
                name: v.name,
                province: v.province,
                default_stay_s,
            })
        })
        .collect()
}

/// The body of `POST /v1/trace`, before defaults.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct TraceBody {
    pub person: String,
    #[serde(default)]
    pub from: Option<i64>,
    #[serde(default)]
    pub to: Option<i64>,
    #[serde(default)]
    pub min_overlap_s: Option<i64>,
    #[serde(default)]
    pub depth: Option<i64>,
    /// v2. Its range (`0..=86400`) is checked by `TraceRequest::new`.
    #[serde(default)]
    pub min_stay_s: Option<i64>,
    /// v2. Its range (`0..=7200`) is checked by `TraceRequest::new`.
    #[serde(default)]
    pub linger_s: Option<i64>,
}

/// Decodes `POST /v1/trace`: field types only; ranges are `TraceRequest::new`'s.
pub fn decode_trace(body: &[u8]) -> Result<TraceBody, String> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => serde_json::from_slice::<TraceBody>(body)
            .map_err(|e| format!("body is not a valid trace request: {e}")),
        _ => Err("body must be a JSON object {\"person\",\"from\"?,\"to\"?,\"min_overlap_s\"?,\"depth\"?,\"min_stay_s\"?,\"linger_s\"?}".into()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn scan(person: &str, venue: &str, ts: Option<i64>, action: Action) -> ScanItem {
        Ok(ScanInput {
            person: person.into(),
            venue: venue.into(),
            ts,
            action,
        })
    }

    #[test]
    fn one_object_array_and_ndjson_decode_alike() {
        let one = decode_scans(br#"{"person":"p1","venue":"V1","ts":5}"#, ScanFormat::Json);
        assert_eq!(one, Ok(vec![scan("p1", "V1", Some(5), Action::In)]));
        let arr = decode_scans(
            br#" [{"person":"p1","venue":"V1","ts":5},{"person":"p2","venue":"V2","action":"out"}] "#,
            ScanFormat::Json,
        );
        let want = vec![
            scan("p1", "V1", Some(5), Action::In),
            scan("p2", "V2", None, Action::Out),
        ];
        assert_eq!(arr, Ok(want.clone()));
        let nd = decode_scans(
            b"{\"person\":\"p1\",\"venue\":\"V1\",\"ts\":5}\r\n\n  \n{\"person\":\"p2\",\"venue\":\"V2\",\"action\":\"out\"}",
            ScanFormat::Ndjson,
        );
        assert_eq!(nd, Ok(want));
        assert_eq!(decode_scans(b"", ScanFormat::Ndjson), Ok(vec![]));
        assert_eq!(decode_scans(b"[]", ScanFormat::Json), Ok(vec![]));
    }

    #[test]
    fn wrong_field_types_become_per_item_reasons() {
        let body = br#"[
            {"person":12,"venue":"V"},
            {"venue":"V"},
            {"person":"p","venue":["V"]},
            {"person":"p","venue":"V","action":"sideways"},
            {"person":"p","venue":"V","action":1},
            {"person":"p","venue":"V","ts":1.5},
            {"person":"p","venue":"V","ts":"12"},
            {"person":"p","venue":"V","ts":99999999999999999999},
            {"person":"p","venue":"V","ts":1e9},
            {"person":"p","venue":"V","ts":{"a":[1,2]}},
            {"person":"has space","venue":"V"},
            {"person":"p","venue":"a+b"},
            {"person":"p","venue":"V","ts":null,"action":null,"extra":{"x":[1]}},
            {"person":"p\u002b1","venue":"V","ts":-3},
            {"person":"bad person","venue":"V","ts":"x"},
            {"person":"bad person","venue":"bad/venue","action":"x"}
        ]"#;
        let got = decode_scans(body, ScanFormat::Json).unwrap();
        use RejectReason::*;
        let reasons: Vec<_> = got.iter().map(|r| r.as_ref().err().copied()).collect();
        assert_eq!(
            reasons,
            vec![
                Some(InvalidPerson),
                Some(InvalidPerson),
                Some(InvalidVenue),
                Some(InvalidAction),
                Some(InvalidAction),
                Some(InvalidTs),
                Some(InvalidTs),
                Some(InvalidTs),
                Some(InvalidTs),
                Some(InvalidTs),
                Some(InvalidPerson),
                Some(InvalidVenue),
                None,
                None,
                Some(InvalidTs),
                Some(InvalidPerson),
            ]
        );
        assert_eq!(got[12], scan("p", "V", None, Action::In));
        assert_eq!(got[13], scan("p+1", "V", Some(-3), Action::In));
    }

    #[test]
    fn malformed_bodies_fail_whole() {
        for body in [
            &b"nope"[..],
            b"",
            b"42",
            b"\"x\"",
            b"[{\"person\":\"p\",\"venue\":\"V\"}, 3]",
            b"[{\"person\":\"p\",\"venue\":\"V\"}",
            b"{\"person\":\"p\",\"venue\":\"V\"} {\"person\":\"p\",\"venue\":\"V\"}",
            b"[[]]",
        ] {
            assert!(
                matches!(
                    decode_scans(body, ScanFormat::Json),
                    Err(DecodeError::Malformed(_))
                ),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let nd = decode_scans(
            b"{\"person\":\"p\",\"venue\":\"V\"}\n[1]\n",
            ScanFormat::Ndjson,
        );
        assert!(matches!(nd, Err(DecodeError::Malformed(m)) if m.starts_with("line 2")));
        let nd = decode_scans(b"{\"person\":\"p\"\n", ScanFormat::Ndjson);
        assert!(matches!(nd, Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn more_than_the_limit_is_too_many() {
        let line = "{\"person\":\"p\",\"venue\":\"V\"}";
        let arr = format!("[{}]", vec![line; MAX_SCANS + 1].join(","));
        assert_eq!(
            decode_scans(arr.as_bytes(), ScanFormat::Json),
            Err(DecodeError::TooMany)
        );
        let nd = vec![line; MAX_SCANS + 1].join("\n");
        assert_eq!(
            decode_scans(nd.as_bytes(), ScanFormat::Ndjson),
            Err(DecodeError::TooMany)
        );
        let ok = vec![line; MAX_SCANS].join("\n");
        assert_eq!(
            decode_scans(ok.as_bytes(), ScanFormat::Ndjson).map(|v| v.len()),
            Ok(MAX_SCANS)
        );
    }

    #[test]
    fn venues_decode_one_or_many() {
        let one = decode_venues(br#"{"id":"V1","name":"Market","unknown":1}"#).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].default_stay_s, None);
        let many = decode_venues(
            br#"[{"id":"V1","name":"A","province":"X","default_stay_s":60},{"id":"V2","name":"B","province":null}]"#,
        )
        .unwrap();
        assert_eq!(many[0].default_stay_s, Some(60));
        assert_eq!(many[0].province.as_deref(), Some("X"));
        assert_eq!(many[1].province, None);
        for bad in [
            &br#"{"id":"V1"}"#[..],
            br#"{"id":1,"name":"A"}"#,
            br#"{"id":"V1","name":"A","default_stay_s":0}"#,
            br#"{"id":"V1","name":"A","default_stay_s":86401}"#,
            br#"{"id":"V1","name":"A","default_stay_s":1.5}"#,
            br#"{"id":"V1","name":"A","default_stay_s":"60"}"#,
            br#"[{"id":"V1","name":"A"}, 1]"#,
            b"3",
        ] {
            assert!(
                decode_venues(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// Decoder throughput on NDJSON batches of 1,000 (run with
    /// `cargo test --release -p checkin-api decode_throughput -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn decode_throughput() {
        let batch: String = (0..1000)
            .map(|i| {
                format!(
                    "{{\"person\":\"p{:06}\",\"venue\":\"V-{:05}\",\"ts\":{},\"action\":\"{}\"}}\n",
                    i * 7919 % 100_000,
                    i * 31 % 10_000,
                    1_800_000_000 + i,
                    if i % 2 == 0 { "in" } else { "out" }
                )
            })
            .collect();
        let rounds = 2000;
        let started = std::time::Instant::now();
        let mut n = 0;
        for _ in 0..rounds {
            n += decode_scans(batch.as_bytes(), ScanFormat::Ndjson)
                .unwrap()
                .len();
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "decoded {n} scans in {secs:.3} s: {:.0} scans/s on one core ({:.0} MB/s)",
            n as f64 / secs,
            (batch.len() * rounds) as f64 / secs / 1e6
        );
    }

    #[test]
    fn trace_bodies() {
        let t = decode_trace(br#"{"person":"p","depth":1,"x":null}"#).unwrap();
        assert_eq!(t.depth, Some(1));
        assert_eq!(t.from, None);
        assert!(decode_trace(br#"{"person":"p","depth":"1"}"#).is_err());
        assert!(decode_trace(br#"{"depth":1}"#).is_err());
        assert!(decode_trace(br#"[{"person":"p"}]"#).is_err());
        assert!(decode_trace(br#"{"person":"p","from":1.5}"#).is_err());
        assert_eq!((t.min_stay_s, t.linger_s), (None, None));
        let t = decode_trace(br#"{"person":"p","min_stay_s":600,"linger_s":0}"#).unwrap();
        assert_eq!((t.min_stay_s, t.linger_s), (Some(600), Some(0)));
        // Out-of-range values decode (TraceRequest::new refuses them); wrong types do not.
        let t = decode_trace(br#"{"person":"p","min_stay_s":-1,"linger_s":99999}"#).unwrap();
        assert_eq!((t.min_stay_s, t.linger_s), (Some(-1), Some(99_999)));
        for bad in [
            br#"{"person":"p","min_stay_s":"600"}"#.as_slice(),
            br#"{"person":"p","min_stay_s":1.5}"#,
            br#"{"person":"p","min_stay_s":true}"#,
            br#"{"person":"p","linger_s":"60"}"#,
            br#"{"person":"p","linger_s":[60]}"#,
            br#"{"person":"p","linger_s":1e3}"#,
            br#"{"person":"p","linger_s":18446744073709551616}"#,
        ] {
            let e = decode_trace(bad).unwrap_err();
            assert!(e.starts_with("body is not a valid trace request"), "{e}");
        }
    }
}
