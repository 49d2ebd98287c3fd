//! Hostile input against the real `checkin-server` with a `--tokens` file: a table of malformed
//! requests on every route (broken JSON, invalid UTF-8, wrong types, out-of-range numbers, huge
//! and deeply nested bodies, oversized ids, unknown fields, path tricks, wrong content types,
//! missing, unknown and wrong-role tokens). Each row must get its status with an
//! `application/problem+json` body (or, for per-scan problems, a 200 that rejects the scan with
//! the contract's reason); nothing a row should not store is stored (`/v1/stats` is compared
//! with the table's own count after every row), and `/healthz` stays 200 throughout.
//!
//! Requests the HTTP layer itself cannot parse (garbage request lines, oversized heads) have no
//! route and are answered by hyper: for those only "a 4xx or a closed connection, and the
//! server still healthy" is required.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use checkin_tests::*;

const ADMIN: &str = "adm-7f3c";
const SCANNER: &str = "scn-19ab";
const EPI: &str = "epi-55d0";
const METRICS: &str = "met-0c2e";
const OWNER: &str = "own-v1-88";

fn tokens_toml() -> String {
    let entry = |name: &str, role: &str, token: &str, extra: &str| {
        format!(
            "[[tokens]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{}\"\n{extra}\n",
            api::token_digest_hex(token)
        )
    };
    [
        entry("root", "admin", ADMIN, ""),
        entry("gw", "scanner", SCANNER, ""),
        entry("cdc", "epidemiologist", EPI, ""),
        entry("prom", "metrics", METRICS, ""),
        entry("v1-owner", "venue", OWNER, "venues = [\"V1\"]"),
    ]
    .concat()
}

/// What a row expects.
#[derive(Debug, Clone)]
enum Want {
    /// This status with a problem+json body.
    Problem(u16),
    /// 200 from `POST /v1/scans` rejecting every scan with these reasons, in order.
    Rejected(Vec<&'static str>),
    /// This status, any body (well-formed requests that must still be answered sanely).
    Status(u16),
}

struct Row {
    name: String,
    method: &'static str,
    path: String,
    token: Option<&'static str>,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    want: Want,
    /// Scans this row legitimately stores.
    stores: u64,
}

fn row(name: &str, method: &'static str, path: &str, body: impl Into<Vec<u8>>, want: Want) -> Row {
    Row {
        name: name.to_string(),
        method,
        path: path.to_string(),
        token: Some(ADMIN),
        content_type: Some("application/json"),
        body: body.into(),
        want,
        stores: 0,
    }
}

fn scans(name: &str, body: impl Into<Vec<u8>>, want: Want) -> Row {
    row(name, "POST", "/v1/scans", body, want)
}

fn nested(depth: usize) -> String {
    "[".repeat(depth) + &"]".repeat(depth)
}

fn table() -> Vec<Row> {
    use Want::*;
    let t = now() - 60;
    let ok = |p: &str| format!(r#"{{"person":"{p}","venue":"V0","ts":{t}}}"#);
    let long = "x".repeat(65);
    let mut rows = vec![
        // --- POST /v1/scans: bodies that are not scan JSON at all (400, nothing stored)
        scans("empty body", "", Problem(400)),
        scans("broken JSON", r#"{"person":"a","venue":"V0""#, Problem(400)),
        scans(
            "trailing garbage",
            format!("{} xyz", ok("tg")),
            Problem(400),
        ),
        scans(
            "two objects",
            format!("{}{}", ok("two1"), ok("two2")),
            Problem(400),
        ),
        scans(
            "invalid UTF-8 in a string",
            [&b"{\"person\":\"\xff\xfe\",\"venue\":\"V0\"}"[..]].concat(),
            Problem(400),
        ),
        scans(
            "lone surrogate escape",
            r#"{"person":"\ud800","venue":"V0"}"#,
            Problem(400),
        ),
        scans("NUL bytes", vec![0u8; 64], Problem(400)),
        scans("top-level string", r#""scan""#, Problem(400)),
        scans("top-level number", "42", Problem(400)),
        scans("top-level null", "null", Problem(400)),
        scans("array of numbers", "[1,2,3]", Problem(400)),
        scans(
            "array with a non-object after a valid scan",
            format!("[{},7]", ok("mixed1")),
            Problem(400),
        ),
        scans("deeply nested arrays", nested(100_000), Problem(400)),
        Row {
            stores: 1,
            ..scans(
                "deeply nested unknown field is ignored",
                format!(
                    r#"{{"person":"deep1","venue":"V0","x":{}}}"#,
                    nested(50_000)
                ),
                Status(200),
            )
        },
        scans(
            "deeply nested objects",
            r#"{"a":"#.repeat(50_000) + &"}".repeat(50_000),
            Problem(400),
        ),
        // --- per-scan problems: 200, every scan rejected with its reason
        scans(
            "numeric person",
            r#"{"person":123,"venue":"V0"}"#,
            Rejected(vec!["invalid_person"]),
        ),
        scans(
            "null person",
            r#"{"person":null,"venue":"V0"}"#,
            Rejected(vec!["invalid_person"]),
        ),
        scans(
            "missing person",
            r#"{"venue":"V0"}"#,
            Rejected(vec!["invalid_person"]),
        ),
        scans(
            "array venue",
            r#"{"person":"p","venue":["V0"]}"#,
            Rejected(vec!["invalid_venue"]),
        ),
        scans(
            "missing venue",
            r#"{"person":"p"}"#,
            Rejected(vec!["invalid_venue"]),
        ),
        scans(
            "oversized person id",
            format!(r#"{{"person":"{long}","venue":"V0"}}"#),
            Rejected(vec!["invalid_person"]),
        ),
        scans(
            "oversized venue id",
            format!(r#"{{"person":"p","venue":"{long}"}}"#),
            Rejected(vec!["invalid_venue"]),
        ),
        scans(
            "person with a slash",
            r#"{"person":"../etc/passwd","venue":"V0"}"#,
            Rejected(vec!["invalid_person"]),
        ),
        scans(
            "unknown venue",
            r#"{"person":"p","venue":"NOPE"}"#,
            Rejected(vec!["unknown_venue"]),
        ),
        scans(
            "bad action",
            r#"{"person":"p","venue":"V0","action":"sideways"}"#,
            Rejected(vec!["invalid_action"]),
        ),
        scans(
            "numeric action",
            r#"{"person":"p","venue":"V0","action":1}"#,
            Rejected(vec!["invalid_action"]),
        ),
        scans(
            "fractional ts",
            r#"{"person":"p","venue":"V0","ts":1.5}"#,
            Rejected(vec!["invalid_ts"]),
        ),
        scans(
            "string ts",
            format!(r#"{{"person":"p","venue":"V0","ts":"{t}"}}"#),
            Rejected(vec!["invalid_ts"]),
        ),
        scans(
            "huge ts",
            r#"{"person":"p","venue":"V0","ts":1e300}"#,
            Rejected(vec!["invalid_ts"]),
        ),
        scans(
            "ts beyond i64",
            r#"{"person":"p","venue":"V0","ts":99999999999999999999999}"#,
            Rejected(vec!["invalid_ts"]),
        ),
        scans(
            "ts i64::MIN",
            r#"{"person":"p","venue":"V0","ts":-9223372036854775808}"#,
            Rejected(vec!["too_old"]),
        ),
        scans(
            "ts zero",
            r#"{"person":"p","venue":"V0","ts":0}"#,
            Rejected(vec!["too_old"]),
        ),
        scans(
            "ts an hour ahead",
            format!(r#"{{"person":"p","venue":"V0","ts":{}}}"#, t + 3_660),
            Rejected(vec!["in_future"]),
        ),
        scans(
            "batch of bad scans",
            r#"[{"person":1,"venue":"V0"},{"person":"p","venue":"V0","ts":true},{"person":"p","venue":2}]"#,
            Rejected(vec!["invalid_person", "invalid_ts", "invalid_venue"]),
        ),
        scans("empty array", "[]", Status(200)),
        // --- content types
        Row {
            content_type: Some("text/plain"),
            ..scans("text/plain", ok("ct1"), Problem(415))
        },
        Row {
            content_type: Some("application/x-www-form-urlencoded"),
            ..scans("form content type", "person=p&venue=V0", Problem(415))
        },
        Row {
            content_type: Some("application/xml"),
            ..scans("xml", "<scan/>", Problem(415))
        },
        Row {
            content_type: Some("application/x-ndjson"),
            ..scans(
                "NDJSON with one broken line stores nothing",
                format!("{}\n{{oops\n{}\n", ok("nd1"), ok("nd2")),
                Problem(400),
            )
        },
        Row {
            content_type: Some("application/x-ndjson"),
            ..scans(
                "NDJSON line that is an array",
                format!("{}\n[1]\n", ok("nd3")),
                Problem(400),
            )
        },
        scans(
            "NDJSON body sent as application/json",
            format!("{}\n{}\n", ok("nd4"), ok("nd5")),
            Problem(400),
        ),
        // --- sizes
        Row {
            content_type: Some("application/x-ndjson"),
            ..scans(
                "100,001 scans",
                format!("{}\n", r#"{"person":"p","venue":"V0"}"#).repeat(100_001),
                Problem(413),
            )
        },
        scans(
            "17 MiB body",
            format!("[{}]", " ".repeat(17 << 20)),
            Problem(413),
        ),
        // --- unknown fields are ignored (forward compatibility): stored
        Row {
            stores: 1,
            ..scans(
                "unknown fields",
                format!(
                    r#"{{"person":"uf1","venue":"V0","ts":{t},"gps":{{"lat":1.5}},"tags":[1,"x",null]}}"#
                ),
                Status(200),
            )
        },
        // --- POST /v1/venues
        row(
            "venue: broken JSON",
            "POST",
            "/v1/venues",
            r#"{"id":"X""#,
            Problem(400),
        ),
        row(
            "venue: path id",
            "POST",
            "/v1/venues",
            r#"{"id":"../x","name":"n"}"#,
            Problem(400),
        ),
        row(
            "venue: oversized id",
            "POST",
            "/v1/venues",
            format!(r#"{{"id":"{long}","name":"n"}}"#),
            Problem(400),
        ),
        row(
            "venue: missing name",
            "POST",
            "/v1/venues",
            r#"{"id":"VX"}"#,
            Problem(400),
        ),
        row(
            "venue: numeric name",
            "POST",
            "/v1/venues",
            r#"{"id":"VX","name":5}"#,
            Problem(400),
        ),
        row(
            "venue: stay 0",
            "POST",
            "/v1/venues",
            r#"{"id":"VX","name":"n","default_stay_s":0}"#,
            Problem(400),
        ),
        row(
            "venue: stay 86401",
            "POST",
            "/v1/venues",
            r#"{"id":"VX","name":"n","default_stay_s":86401}"#,
            Problem(400),
        ),
        row(
            "venue: string stay",
            "POST",
            "/v1/venues",
            r#"{"id":"VX","name":"n","default_stay_s":"60"}"#,
            Problem(400),
        ),
        row(
            "venue: fractional stay",
            "POST",
            "/v1/venues",
            r#"{"id":"VX","name":"n","default_stay_s":60.5}"#,
            Problem(400),
        ),
        row(
            "venue: one bad venue rejects all",
            "POST",
            "/v1/venues",
            r#"[{"id":"VY","name":"ok"},{"id":"bad id","name":"n"}]"#,
            Problem(400),
        ),
        row(
            "venue: huge name",
            "POST",
            "/v1/venues",
            format!(r#"{{"id":"VX","name":"{}"}}"#, "n".repeat(100_000)),
            Problem(400),
        ),
        row(
            "venue: nested",
            "POST",
            "/v1/venues",
            nested(100_000),
            Problem(400),
        ),
        Row {
            content_type: Some("application/x-ndjson"),
            ..row(
                "venue: NDJSON",
                "POST",
                "/v1/venues",
                r#"{"id":"VX","name":"n"}"#,
                Problem(415),
            )
        },
        // --- POST /v1/trace
        row("trace: broken JSON", "POST", "/v1/trace", "{", Problem(400)),
        row(
            "trace: array",
            "POST",
            "/v1/trace",
            r#"[{"person":"p"}]"#,
            Problem(400),
        ),
        row(
            "trace: missing person",
            "POST",
            "/v1/trace",
            "{}",
            Problem(400),
        ),
        row(
            "trace: numeric person",
            "POST",
            "/v1/trace",
            r#"{"person":5}"#,
            Problem(400),
        ),
        row(
            "trace: bad person id",
            "POST",
            "/v1/trace",
            r#"{"person":"a b"}"#,
            Problem(400),
        ),
        row(
            "trace: depth 3",
            "POST",
            "/v1/trace",
            r#"{"person":"uf1","depth":3}"#,
            Problem(400),
        ),
        row(
            "trace: depth 0",
            "POST",
            "/v1/trace",
            r#"{"person":"uf1","depth":0}"#,
            Problem(400),
        ),
        row(
            "trace: depth huge",
            "POST",
            "/v1/trace",
            r#"{"person":"uf1","depth":1e99}"#,
            Problem(400),
        ),
        row(
            "trace: from > to",
            "POST",
            "/v1/trace",
            r#"{"person":"uf1","from":10,"to":5}"#,
            Problem(400),
        ),
        row(
            "trace: negative overlap",
            "POST",
            "/v1/trace",
            r#"{"person":"uf1","min_overlap_s":-1}"#,
            Problem(400),
        ),
        row(
            "trace: string from",
            "POST",
            "/v1/trace",
            r#"{"person":"uf1","from":"0"}"#,
            Problem(400),
        ),
        row(
            "trace: extreme window",
            "POST",
            "/v1/trace",
            r#"{"person":"uf1","from":-9223372036854775808,"to":9223372036854775807}"#,
            Status(200),
        ),
        row(
            "trace: unknown person",
            "POST",
            "/v1/trace",
            r#"{"person":"nobody"}"#,
            Problem(404),
        ),
        Row {
            content_type: Some("text/plain"),
            ..row(
                "trace: text/plain",
                "POST",
                "/v1/trace",
                r#"{"person":"uf1"}"#,
                Problem(415),
            )
        },
        // --- read routes: queries and path tricks
        row(
            "visits: bad from",
            "GET",
            "/v1/persons/uf1/visits?from=abc",
            "",
            Problem(400),
        ),
        row(
            "visits: from > to",
            "GET",
            "/v1/persons/uf1/visits?from=10&to=5",
            "",
            Problem(400),
        ),
        row(
            "visits: overflowing to",
            "GET",
            "/v1/persons/uf1/visits?to=99999999999999999999",
            "",
            Problem(400),
        ),
        row(
            "visits: unknown person",
            "GET",
            "/v1/persons/nobody/visits",
            "",
            Problem(404),
        ),
        row(
            "visits: invalid person",
            "GET",
            "/v1/persons/a%20b/visits",
            "",
            Problem(404),
        ),
        row(
            "visits: oversized person",
            "GET",
            &format!("/v1/persons/{long}/visits"),
            "",
            Problem(404),
        ),
        row(
            "visits: encoded slash",
            "GET",
            "/v1/persons/..%2F..%2Fetc/visits",
            "",
            Problem(404),
        ),
        row(
            "visits: NUL",
            "GET",
            "/v1/persons/%00/visits",
            "",
            Problem(404),
        ),
        row(
            "visits: bad escape",
            "GET",
            "/v1/persons/%zz/visits",
            "",
            Problem(404),
        ),
        row("venue: ..%2F", "GET", "/v1/venues/..%2F", "", Problem(404)),
        row(
            "venue: dot-dot",
            "GET",
            "/v1/venues/../v1/stats",
            "",
            Problem(404),
        ),
        row(
            "venue: %2e%2e",
            "GET",
            "/v1/venues/%2e%2e/occupancy",
            "",
            Problem(404),
        ),
        row(
            "venue: empty id",
            "GET",
            "/v1/venues//occupancy",
            "",
            Problem(404),
        ),
        row("venue: unknown", "GET", "/v1/venues/NOPE", "", Problem(404)),
        row(
            "venue: invalid UTF-8 escape",
            "GET",
            "/v1/venues/%ff%fe",
            "",
            Problem(404),
        ),
        row(
            "occupancy: top=-1",
            "GET",
            "/v1/occupancy?top=-1",
            "",
            Problem(400),
        ),
        row(
            "occupancy: top=1001",
            "GET",
            "/v1/occupancy?top=1001",
            "",
            Problem(400),
        ),
        row(
            "occupancy: top=abc",
            "GET",
            "/v1/occupancy?top=abc",
            "",
            Problem(400),
        ),
        row(
            "events: last=-5",
            "GET",
            "/v1/venues/V0/events?last=-5",
            "",
            Problem(400),
        ),
        row(
            "audit: since=abc",
            "GET",
            "/v1/audit?since=abc",
            "",
            Problem(400),
        ),
        row("unknown route", "GET", "/v2/scans", "", Problem(404)),
        row("traversal", "GET", "/../../etc/passwd", "", Problem(404)),
        row(
            "wrong method on scans",
            "GET",
            "/v1/scans",
            "",
            Problem(405),
        ),
        row("DELETE venues", "DELETE", "/v1/venues", "", Problem(405)),
        row("PUT stats", "PUT", "/v1/stats", "x", Problem(405)),
        // --- tokens
        Row {
            token: None,
            ..scans("no token", ok("tok1"), Problem(401))
        },
        Row {
            token: Some("not-a-token"),
            ..scans("unknown token", ok("tok2"), Problem(401))
        },
        Row {
            token: Some(METRICS),
            ..scans("metrics token posts scans", ok("tok3"), Problem(403))
        },
        Row {
            token: Some(EPI),
            ..scans("epidemiologist posts scans", ok("tok4"), Problem(403))
        },
        Row {
            token: Some(OWNER),
            ..scans("venue owner posts scans", ok("tok5"), Problem(403))
        },
        Row {
            token: Some(SCANNER),
            ..row(
                "scanner traces",
                "POST",
                "/v1/trace",
                r#"{"person":"uf1"}"#,
                Problem(403),
            )
        },
        Row {
            token: Some(SCANNER),
            ..row(
                "scanner registers venues",
                "POST",
                "/v1/venues",
                r#"{"id":"VS","name":"n"}"#,
                Problem(403),
            )
        },
        Row {
            token: Some(OWNER),
            ..row(
                "owner of V1 reads V0",
                "GET",
                "/v1/venues/V0/occupancy",
                "",
                Problem(403),
            )
        },
        Row {
            token: Some(OWNER),
            ..row(
                "owner of V1 reads V1",
                "GET",
                "/v1/venues/V1/occupancy",
                "",
                Status(200),
            )
        },
        Row {
            token: Some(EPI),
            ..row(
                "epidemiologist reads audit",
                "GET",
                "/v1/audit",
                "",
                Problem(403),
            )
        },
        Row {
            token: None,
            ..row("anonymous stats", "GET", "/v1/stats", "", Problem(401))
        },
        Row {
            token: None,
            ..row("anonymous metrics", "GET", "/metrics", "", Problem(401))
        },
    ];
    rows.extend(v2_rows(t));
    // Each row name is unique (failures are reported by name).
    let mut names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), rows.len(), "duplicate row names");
    rows.push(Row {
        stores: 1,
        ..scans("a valid scan still works", ok("valid1"), Status(200))
    });
    rows
}

/// v2 routes (sections 10-12): malformed bodies, wrong types, out-of-range times, oversized and
/// hostile ids. None of them may store a case, sample, declaration, area or notice (checked at the
/// end through the list routes).
fn v2_rows(t: i64) -> Vec<Row> {
    use Want::*;
    let long = "x".repeat(81);
    let post =
        |name: &str, path: &str, body: String, want: Want| row(name, "POST", path, body, want);
    vec![
        post("case: broken JSON", "/v1/cases", r#"{"person":"a""#.into(), Problem(400)),
        post("case: array body", "/v1/cases", format!(r#"[{{"person":"a","sampled_at":{t}}}]"#), Problem(400)),
        post("case: numeric person", "/v1/cases", format!(r#"{{"person":7,"sampled_at":{t}}}"#), Problem(400)),
        post("case: float time", "/v1/cases", r#"{"person":"a","sampled_at":1.5e9}"#.into(), Problem(400)),
        post("case: huge time", "/v1/cases", r#"{"person":"a","sampled_at":99999999999999999999}"#.into(), Problem(400)),
        post("case: time far in the past", "/v1/cases", r#"{"person":"a","sampled_at":-9223372036854775808}"#.into(), Problem(400)),
        post("case: oversized id", "/v1/cases", format!(r#"{{"id":"{long}","person":"a","sampled_at":{t}}}"#), Problem(400)),
        post("case: id with a slash", "/v1/cases", format!(r#"{{"id":"a/b","person":"a","sampled_at":{t}}}"#), Problem(400)),
        post("case: unknown area", "/v1/cases", format!(r#"{{"person":"a","sampled_at":{t},"area":"NOPE"}}"#), Problem(400)),
        post("case: note of 64 KiB", "/v1/cases", format!(r#"{{"person":"a","sampled_at":{t},"note":"{}"}}"#, "n".repeat(65_536)), Problem(400)),
        post("case: deeply nested", "/v1/cases", nested(100_000), Problem(400)),
        row("case patch: unknown case", "PATCH", "/v1/cases/nope", r#"{"status":"recovered"}"#, Problem(404)),
        row("case patch: bad status", "PATCH", "/v1/cases/nope", r#"{"status":7}"#, Problem(400)),
        row("case: unknown case contacts", "GET", "/v1/cases/%00/contacts", "", Problem(404)),
        row("cases: bad status filter", "GET", "/v1/cases?status=ACTIVE", "", Problem(400)),
        row("status: weird person id is none", "GET", "/v1/persons/%E2%80%AE/status", "", Status(200)),
        row("sites: bad since", "GET", "/v1/exposure-sites?since=1e9", "", Problem(400)),
        post("sample: broken JSON", "/v1/samples", r#"{"id":"s""#.into(), Problem(400)),
        post("sample: persons not a list", "/v1/samples", r#"{"id":"s1","kind":"pcr","persons":"a"}"#.into(), Problem(400)),
        post("sample: 10,000 persons", "/v1/samples", format!(r#"{{"id":"s1","kind":"pcr","persons":[{}]}}"#, (0..10_000).map(|i| format!("\"p{i}\"")).collect::<Vec<_>>().join(",")), Problem(400)),
        post("sample: unknown kind", "/v1/samples", r#"{"id":"s1","kind":"saliva","persons":["a"]}"#.into(), Problem(400)),
        post("sample: future collection", "/v1/samples", format!(r#"{{"id":"s1","kind":"pcr","persons":["a"],"collected_at":{}}}"#, t + 86_400), Problem(400)),
        post("result: unknown sample", "/v1/samples/nope/result", r#"{"result":"positive"}"#.into(), Problem(404)),
        post("result: bad result", "/v1/samples/nope/result", r#"{"result":true}"#.into(), Problem(400)),
        post("declaration: unknown symptom", "/v1/declarations", r#"{"person":"a","symptoms":["x"],"exposure":false}"#.into(), Problem(400)),
        post("declaration: bad date", "/v1/declarations", r#"{"person":"a","symptoms":[],"exposure":false,"travel":[{"from":"A","to":"B","date":"2026-02-31"}]}"#.into(), Problem(400)),
        post("declaration: exposure not a bool", "/v1/declarations", r#"{"person":"a","symptoms":[],"exposure":1}"#.into(), Problem(400)),
        post("areas: cycle", "/v1/areas", r#"[{"id":"A","name":"A","population":1,"parent":"B"},{"id":"B","name":"B","population":1,"parent":"A"}]"#.into(), Problem(400)),
        post("areas: negative population", "/v1/areas", r#"{"id":"A","name":"A","population":-5}"#.into(), Problem(400)),
        post("areas: population as float", "/v1/areas", r#"{"id":"A","name":"A","population":1.5}"#.into(), Problem(400)),
        post("notice: unknown kind", "/v1/notices", r#"{"kind":"ad","title":"t","body":"b"}"#.into(), Problem(400)),
        post("notice: body of 1 MiB", "/v1/notices", format!(r#"{{"kind":"news","title":"t","body":"{}"}}"#, "b".repeat(1 << 20)), Problem(400)),
        Row {
            content_type: Some("text/plain"),
            ..post("notice: text/plain", "/v1/notices", r#"{"kind":"news","title":"t","body":"b"}"#.into(), Problem(415))
        },
        Row {
            token: Some(SCANNER),
            ..post("case: scanner registers", "/v1/cases", format!(r#"{{"person":"a","sampled_at":{t}}}"#), Problem(403))
        },
        Row {
            token: None,
            ..row("anonymous pass", "GET", "/v1/persons/a/pass", "", Problem(401))
        },
    ]
}

/// Raw requests the HTTP layer must survive.
fn protocol_rows() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("garbage request line", b"GARBAGE\r\n\r\n".to_vec()),
        ("binary junk", (0..=255u8).cycle().take(4096).collect()),
        (
            "oversized header",
            format!(
                "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "a".repeat(1 << 20)
            )
            .into_bytes(),
        ),
        (
            "thousand headers",
            format!(
                "GET /healthz HTTP/1.1\r\nHost: x\r\n{}\r\n",
                (0..1000).map(|i| format!("X-H{i}: v\r\n")).collect::<String>()
            )
            .into_bytes(),
        ),
        (
            "bad content-length",
            b"POST /v1/scans HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n".to_vec(),
        ),
        (
            "conflicting lengths",
            b"POST /v1/scans HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
                .to_vec(),
        ),
        (
            "bad chunk size",
            b"POST /v1/scans HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
        ),
    ]
}

#[test]
fn malformed_requests_get_problems_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(&tokens, tokens_toml()).unwrap();
    let data = dir.path().join("data");
    let server = ServerProcess::start(
        Launch::new(&data)
            .arg("--tokens")
            .arg(tokens.to_str().unwrap()),
    );
    let addr = server.addr;
    let send = |method: &str, path: &str, token: Option<&str>, ct: Option<&str>, body: &[u8]| {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut h: Vec<(&str, &str)> = Vec::new();
        if let Some(a) = &auth {
            h.push(("Authorization", a));
        }
        if let Some(c) = ct {
            h.push(("Content-Type", c));
        }
        http::request(addr, method, path, &h, body)
    };
    let stats = || {
        let r = send("GET", "/v1/stats", Some(ADMIN), None, b"").unwrap();
        assert_eq!(r.status, 200);
        let v = r.json();
        (v["scans"].as_u64().unwrap(), v["venues"].as_u64().unwrap())
    };
    let r = send(
        "POST",
        "/v1/venues",
        Some(ADMIN),
        Some("application/json"),
        br#"[{"id":"V0","name":"zero"},{"id":"V1","name":"one"}]"#,
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    let rows = table();
    let mut expected_scans = 0u64;
    let mut failures = Vec::new();
    for row in &rows {
        let res = send(
            row.method,
            &row.path,
            row.token,
            row.content_type,
            &row.body,
        );
        let verdict = match (&row.want, res) {
            (_, Err(e)) => Err(format!("transport error {e}")),
            (Want::Problem(s), Ok(r)) => {
                if r.is_problem(*s) {
                    Ok(())
                } else {
                    Err(format!(
                        "got {} {:?} {}",
                        r.status,
                        r.header("content-type"),
                        r.text().chars().take(300).collect::<String>()
                    ))
                }
            }
            (Want::Status(s), Ok(r)) => {
                if r.status == *s {
                    Ok(())
                } else {
                    Err(format!("got {} {}", r.status, r.text()))
                }
            }
            (Want::Rejected(reasons), Ok(r)) => {
                let v: Option<Value> = serde_json::from_slice(&r.body).ok();
                let got: Option<Vec<String>> = v.as_ref().and_then(|v| {
                    v["rejected"].as_array().map(|a| {
                        a.iter()
                            .map(|x| x["reason"].as_str().unwrap_or("?").to_string())
                            .collect()
                    })
                });
                let accepted = v.as_ref().and_then(|v| v["accepted"].as_u64());
                if r.status == 200
                    && accepted == Some(0)
                    && got.as_deref().is_some_and(|g| g == reasons.as_slice())
                {
                    Ok(())
                } else {
                    Err(format!(
                        "got {} {} (want rejected {reasons:?})",
                        r.status,
                        r.text()
                    ))
                }
            }
        };
        expected_scans += row.stores;
        let (stored, _) = stats();
        if let Err(e) = verdict {
            failures.push(format!("{} [{} {}]: {e}", row.name, row.method, row.path));
        }
        if stored != expected_scans {
            failures.push(format!(
                "{}: /v1/stats scans = {stored}, want {expected_scans}",
                row.name
            ));
            expected_scans = stored;
        }
        let h = send("GET", "/healthz", None, None, b"");
        assert!(
            h.as_ref().is_ok_and(|h| h.status == 200),
            "/healthz after {}: {h:?}",
            row.name
        );
    }
    let mut protocol = 0;
    for (name, raw) in protocol_rows() {
        match http::raw_request(addr, &raw, Duration::from_secs(20)) {
            Ok(r) if (400..500).contains(&r.status) => {}
            Ok(r) => failures.push(format!("{name}: got {} {}", r.status, r.text())),
            Err(_) => {} // closed without an answer
        }
        protocol += 1;
        let h = send("GET", "/healthz", None, None, b"").unwrap();
        assert_eq!(h.status, 200, "/healthz after {name}");
    }
    let (stored, venues) = stats();
    assert_eq!(venues, 2, "a rejected venue registration was stored");
    for (path, key) in [
        ("/v1/cases", "cases"),
        ("/v1/areas", "areas"),
        ("/v1/notices", "notices"),
        ("/v1/followups", "persons"),
    ] {
        let r = send("GET", path, Some(ADMIN), None, b"").unwrap();
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(
            r.json()[key],
            serde_json::json!([]),
            "a rejected row stored into {path}"
        );
    }
    let r = send("GET", "/v1/samples/s1", Some(ADMIN), None, b"").unwrap();
    assert_eq!(r.status, 404, "a rejected sample was stored");
    eprintln!(
        "reliability_hostile: {} table rows + {protocol} protocol rows tried; {stored} scans \
         stored; {} failures",
        rows.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    assert_eq!(
        server.log_text().matches("panicked").count(),
        0,
        "server panicked"
    );
}
