//! The JSON body of a trace answer, written straight into a buffer.
//!
//! A trace answer can list thousands of contacts, and serializing it through serde was a
//! measurable share of a trace's cost. Ids here are person and venue ids, which the engine only
//! accepts from a JSON-safe alphabet, so they are copied between quotes as they are; any other
//! string still goes through serde_json's escaping. Numbers are written with `itoa`. Field names
//! and order are those of the contract (section 6, v2): `case`, `from`, `to`, `min_overlap_s`,
//! `min_stay_s`, `linger_s`, `visits`, `f1`, `f2`. Any route answering "in the shape of
//! `POST /v1/trace`'s answer" writes it with [`trace_body`].

use engine::TraceResult;

/// The trace answer as JSON bytes.
pub(crate) fn trace_body(r: &TraceResult) -> Vec<u8> {
    // Roughly: 80 bytes a contact, plus the visits.
    let mut out = Vec::with_capacity(256 + 80 * (r.f1.len() + r.f2.len() + r.visits.len()));
    out.extend_from_slice(b"{\"case\":");
    string(&mut out, &r.case);
    field_int(&mut out, b",\"from\":", r.from);
    field_int(&mut out, b",\"to\":", r.to);
    field_int(&mut out, b",\"min_overlap_s\":", r.min_overlap_s);
    field_int(&mut out, b",\"min_stay_s\":", r.min_stay_s);
    field_int(&mut out, b",\"linger_s\":", r.linger_s);
    out.extend_from_slice(b",\"visits\":");
    list(&mut out, &r.visits, |out, v| {
        out.extend_from_slice(b"{\"venue\":");
        string(out, &v.venue);
        field_int(out, b",\"start\":", v.start);
        field_int(out, b",\"end\":", v.end);
        out.push(b'}');
    });
    out.extend_from_slice(b",\"f1\":");
    list(&mut out, &r.f1, |out, c| {
        out.extend_from_slice(b"{\"person\":");
        string(out, &c.person);
        field_int(out, b",\"exposure_s\":", c.exposure_s);
        field_int(out, b",\"first_contact\":", c.first_contact);
        field_int(out, b",\"last_contact\":", c.last_contact);
        out.extend_from_slice(b",\"venues\":");
        list(out, &c.venues, |out, v| string(out, v));
        out.push(b'}');
    });
    out.extend_from_slice(b",\"f2\":");
    list(&mut out, &r.f2, |out, c| {
        out.extend_from_slice(b"{\"person\":");
        string(out, &c.person);
        out.extend_from_slice(b",\"via\":");
        string(out, &c.via);
        field_int(out, b",\"exposure_s\":", c.exposure_s);
        field_int(out, b",\"first_contact\":", c.first_contact);
        field_int(out, b",\"last_contact\":", c.last_contact);
        out.push(b'}');
    });
    out.push(b'}');
    out
}

/// A JSON array of `items`, each written by `item`.
fn list<T>(out: &mut Vec<u8>, items: &[T], item: impl Fn(&mut Vec<u8>, &T)) {
    out.push(b'[');
    for (i, x) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        item(out, x);
    }
    out.push(b']');
}

fn field_int(out: &mut Vec<u8>, name: &[u8], value: i64) {
    out.extend_from_slice(name);
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// A JSON string: ids as they are, anything else escaped by serde_json.
fn string(out: &mut Vec<u8>, s: &str) {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._:+-".contains(&b))
    {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing a &str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::{F1Contact, F2Contact, Visit};
    use serde_json::{json, Value};
    use std::sync::Arc;

    fn ids(v: &[&str]) -> Vec<Arc<str>> {
        v.iter().map(|s| Arc::from(*s)).collect()
    }

    #[test]
    fn matches_the_contract_shape_and_escapes_what_needs_it() {
        let r = TraceResult {
            case: Arc::from("p+84:90"),
            from: -5,
            to: 1_800_000_000,
            min_overlap_s: 0,
            min_stay_s: 600,
            linger_s: 7200,
            visits: vec![Visit {
                venue: Arc::from("ST-MARKET-3"),
                start: 1_799_990_000,
                end: 1_800_000_000,
            }],
            f1: vec![
                F1Contact {
                    person: Arc::from("q.1"),
                    exposure_s: 3600,
                    first_contact: 1_799_990_000,
                    last_contact: 1_800_007_200,
                    venues: ids(&["A", "ST-MARKET-3"]),
                },
                F1Contact {
                    // Not an id the engine would store: escaped all the same.
                    person: Arc::from("quote\"back\\slash\u{1}é"),
                    exposure_s: i64::MIN,
                    first_contact: i64::MAX,
                    last_contact: i64::MIN,
                    venues: vec![],
                },
            ],
            f2: vec![F2Contact {
                person: Arc::from("r_2"),
                via: Arc::from("q.1"),
                exposure_s: 900,
                first_contact: 1_799_995_000,
                last_contact: 1_799_999_999,
            }],
        };
        let body = trace_body(&r);
        let parsed: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            parsed,
            json!({
                "case": "p+84:90", "from": -5, "to": 1_800_000_000i64, "min_overlap_s": 0,
                "min_stay_s": 600, "linger_s": 7200,
                "visits": [{"venue": "ST-MARKET-3", "start": 1_799_990_000i64, "end": 1_800_000_000i64}],
                "f1": [
                    {"person": "q.1", "exposure_s": 3600, "first_contact": 1_799_990_000i64,
                     "last_contact": 1_800_007_200i64, "venues": ["A", "ST-MARKET-3"]},
                    {"person": "quote\"back\\slash\u{1}é", "exposure_s": i64::MIN,
                     "first_contact": i64::MAX, "last_contact": i64::MIN, "venues": []}
                ],
                "f2": [{"person": "r_2", "via": "q.1", "exposure_s": 900,
                        "first_contact": 1_799_995_000i64, "last_contact": 1_799_999_999i64}]
            })
        );
        // Field order as the contract lists it, at every level.
        let text = String::from_utf8(body).unwrap();
        assert_in_order(
            &text,
            &[
                "case",
                "from",
                "to",
                "min_overlap_s",
                "min_stay_s",
                "linger_s",
                "visits",
                "f1",
                "f2",
            ],
        );
        let visits = &text[text.find("\"visits\":").unwrap()..text.find("\"f1\":").unwrap()];
        assert_in_order(visits, &["venue", "start", "end"]);
        let f1 = &text[text.find("\"f1\":").unwrap()..text.find("\"f2\":").unwrap()];
        assert_in_order(
            f1,
            &[
                "person",
                "exposure_s",
                "first_contact",
                "last_contact",
                "venues",
            ],
        );
        let f2 = &text[text.find("\"f2\":").unwrap()..];
        assert_in_order(
            f2,
            &[
                "person",
                "via",
                "exposure_s",
                "first_contact",
                "last_contact",
            ],
        );
    }

    /// The first occurrence of each `"key":` in `text` comes in the order of `keys`.
    fn assert_in_order(text: &str, keys: &[&str]) {
        let at: Vec<usize> = keys
            .iter()
            .map(|k| {
                text.find(&format!("\"{k}\":"))
                    .unwrap_or_else(|| panic!("no {k} in {text}"))
            })
            .collect();
        assert!(
            at.windows(2).all(|w| w[0] < w[1]),
            "keys {keys:?} out of order in {text}"
        );
    }

    #[test]
    fn empty_lists() {
        let r = TraceResult {
            case: Arc::from("p"),
            from: 0,
            to: 1,
            min_overlap_s: 900,
            min_stay_s: 0,
            linger_s: 0,
            visits: vec![],
            f1: vec![],
            f2: vec![],
        };
        assert_eq!(
            String::from_utf8(trace_body(&r)).unwrap(),
            r#"{"case":"p","from":0,"to":1,"min_overlap_s":900,"min_stay_s":0,"linger_s":0,"visits":[],"f1":[],"f2":[]}"#
        );
    }
}
