//! `checkin-loadtest demo`: fills a fresh server with a small, realistic province so that every
//! web page has something to show: Sóc Trăng's districts and communes with their populations,
//! 24 venues, a week of scans by 1,500 persons (and people inside venues right now), test
//! samples and results (a positive one registers a case), first and second doses, a few manual
//! cases, and the province's notices. Seeded: the same seed gives the same data (shifted to
//! now). Plain blocking HTTP/1.1 over loopback; every call must succeed or the command stops.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::rng::Rng;

/// What the demo sent.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DemoReport {
    pub areas: usize,
    pub venues: usize,
    pub scans: usize,
    pub samples: usize,
    pub doses: usize,
    pub cases: usize,
    pub notices: usize,
}

/// The province: (id, name, population, parent).
const AREAS: &[(&str, &str, u64, Option<&str>)] = &[
    ("ST", "Tỉnh Sóc Trăng", 1_199_653, None),
    ("ST-TP", "Thành phố Sóc Trăng", 137_305, Some("ST")),
    ("ST-TP-P1", "Phường 1", 14_210, Some("ST-TP")),
    ("ST-TP-P2", "Phường 2", 16_870, Some("ST-TP")),
    ("ST-TP-P3", "Phường 3", 12_450, Some("ST-TP")),
    ("ST-TP-P4", "Phường 4", 11_980, Some("ST-TP")),
    ("ST-VC", "Thị xã Vĩnh Châu", 167_289, Some("ST")),
    ("ST-VC-P1", "Phường 1 (Vĩnh Châu)", 21_450, Some("ST-VC")),
    ("ST-VC-VH", "Xã Vĩnh Hải", 18_930, Some("ST-VC")),
    ("ST-MX", "Huyện Mỹ Xuyên", 155_200, Some("ST")),
    ("ST-MX-TT", "Thị trấn Mỹ Xuyên", 24_600, Some("ST-MX")),
    ("ST-MX-DT", "Xã Đại Tâm", 17_350, Some("ST-MX")),
    ("ST-KS", "Huyện Kế Sách", 158_500, Some("ST")),
    ("ST-KS-TT", "Thị trấn Kế Sách", 15_900, Some("ST-KS")),
    ("ST-KS-AL", "Xã An Lạc Thôn", 16_200, Some("ST-KS")),
];

/// Venues: (id, name, commune).
const VENUES: &[(&str, &str, &str)] = &[
    ("ST-CHO-1", "Chợ Sóc Trăng", "ST-TP-P1"),
    ("ST-SIEUTHI-1", "Siêu thị Co.opmart Sóc Trăng", "ST-TP-P2"),
    ("ST-BV-1", "Bệnh viện Đa khoa tỉnh Sóc Trăng", "ST-TP-P2"),
    ("ST-THPT-1", "Trường THPT Hoàng Lợi", "ST-TP-P3"),
    ("ST-UBND-1", "UBND Phường 1", "ST-TP-P1"),
    ("ST-BENXE-1", "Bến xe Sóc Trăng", "ST-TP-P4"),
    ("ST-CAFE-1", "Cà phê Phố Cũ", "ST-TP-P1"),
    ("ST-COM-1", "Quán cơm Tấm Bà Ba", "ST-TP-P3"),
    ("ST-CHUA-1", "Chùa Dơi", "ST-TP-P3"),
    ("ST-NH-1", "Ngân hàng Agribank Sóc Trăng", "ST-TP-P2"),
    ("VC-CHO-1", "Chợ Vĩnh Châu", "ST-VC-P1"),
    ("VC-CANG-1", "Cảng cá Vĩnh Châu", "ST-VC-VH"),
    ("VC-THCS-1", "Trường THCS Vĩnh Hải", "ST-VC-VH"),
    ("VC-TYT-1", "Trạm y tế xã Vĩnh Hải", "ST-VC-VH"),
    ("MX-CHO-1", "Chợ Mỹ Xuyên", "ST-MX-TT"),
    ("MX-KCN-1", "Nhà máy chế biến thủy sản Mỹ Xuyên", "ST-MX-DT"),
    ("MX-TTYT-1", "Trung tâm Y tế huyện Mỹ Xuyên", "ST-MX-TT"),
    ("MX-SIEUTHI-1", "Bách hóa Xanh Mỹ Xuyên", "ST-MX-TT"),
    ("KS-CHO-1", "Chợ Kế Sách", "ST-KS-TT"),
    ("KS-UBND-1", "UBND xã An Lạc Thôn", "ST-KS-AL"),
    ("KS-THPT-1", "Trường THPT Kế Sách", "ST-KS-TT"),
    ("KS-CAFE-1", "Cà phê Sông Hậu", "ST-KS-TT"),
    ("KS-DTIEM-1", "Điểm tiêm Nhà văn hóa Kế Sách", "ST-KS-TT"),
    ("ST-DTIEM-1", "Điểm tiêm Nhà thi đấu tỉnh", "ST-TP-P4"),
];

const PERSONS: u64 = 1_500;

/// A server reached over plain HTTP/1.1 (loopback only for a demo).
struct Server {
    addr: SocketAddr,
    token: Option<String>,
}

impl Server {
    fn call(&self, method: &str, path: &str, body: &Value) -> Result<(u16, Value)> {
        let payload = body.to_string();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            self.addr,
            payload.len()
        );
        if let Some(t) = &self.token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        req.push_str("\r\n");
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(10))
            .with_context(|| format!("cannot connect to {}", self.addr))?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        s.write_all(req.as_bytes())?;
        s.write_all(payload.as_bytes())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("no HTTP status in the answer to {method} {path}"))?;
        // The demo sends Content-Length bodies and reads `Connection: close` answers; the server
        // answers small bodies with Content-Length, so the rest is the body.
        let value = serde_json::from_str(body.trim()).unwrap_or(Value::Null);
        Ok((status, value))
    }

    /// A call that must succeed (2xx); 409 is taken as "already there" when `retry_ok`.
    fn must(&self, method: &str, path: &str, body: &Value, retry_ok: bool) -> Result<Value> {
        let (status, v) = self.call(method, path, body)?;
        if (200..300).contains(&status) || (retry_ok && status == 409) {
            return Ok(v);
        }
        bail!("{method} {path} answered {status}: {v}");
    }
}

/// Fills the server at `url` (`http://host:port`) with the demo province. `now` is the
/// server's clock (unix seconds).
pub fn run(url: &str, token: Option<String>, seed: u64, now: i64) -> Result<DemoReport> {
    let hostport = url
        .strip_prefix("http://")
        .context("--url must start with http:// (the demo talks plain HTTP to a local server)")?
        .trim_end_matches('/');
    let addr = hostport
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {hostport}"))?
        .next()
        .with_context(|| format!("no address for {hostport}"))?;
    let srv = Server { addr, token };
    let mut rng = Rng::new(seed);
    let mut report = DemoReport::default();

    let areas: Vec<Value> = AREAS
        .iter()
        .map(|(id, name, population, parent)| {
            let mut a = json!({"id": id, "name": name, "population": population});
            if let Some(p) = parent {
                a["parent"] = json!(p);
            }
            a
        })
        .collect();
    srv.must("POST", "/v1/areas", &Value::Array(areas), false)?;
    report.areas = AREAS.len();

    let venues: Vec<Value> = VENUES
        .iter()
        .map(|(id, name, _)| json!({"id": id, "name": name, "province": "Sóc Trăng", "default_stay_s": 5400}))
        .collect();
    srv.must("POST", "/v1/venues", &Value::Array(venues), false)?;
    report.venues = VENUES.len();

    // Each person's home commune (for doses and cases) and a week of visits: 0–3 a day, in
    // daytime, most ending with an "out" scan; the last hour puts some inside right now.
    let communes: Vec<&str> = AREAS
        .iter()
        .filter(|a| a.0.matches('-').count() == 2)
        .map(|a| a.0)
        .collect();
    let person = |i: u64| format!("vn-{i:05}");
    let home = |i: u64| communes[(i as usize * 7 + 3) % communes.len()];
    let mut scans = Vec::new();
    let day0 = now - 7 * 86_400;
    for i in 0..PERSONS {
        // The six days before today and today up to an hour ago.
        for d in 1..=7 {
            let visits = rng.below(4);
            for _ in 0..visits {
                let v = VENUES[rng.below(VENUES.len() as u64) as usize].0;
                // 06:00–20:00 Vietnam time (UTC+7).
                let day_start = (day0 + d * 86_400).div_euclid(86_400) * 86_400 - 7 * 3600;
                let ts = day_start + 6 * 3600 + rng.below(14 * 3600) as i64;
                if ts >= now - 3600 {
                    continue;
                }
                scans.push(json!({"person": person(i), "venue": v, "ts": ts}));
                if rng.chance(0.7) {
                    let out = (ts + 600 + rng.below(5400) as i64).min(now - 1);
                    scans
                        .push(json!({"person": person(i), "venue": v, "ts": out, "action": "out"}));
                }
            }
        }
        if rng.chance(0.12) {
            let v = VENUES[rng.below(VENUES.len() as u64) as usize].0;
            let ts = now - (60 + rng.below(2940)) as i64;
            scans.push(json!({"person": person(i), "venue": v, "ts": ts}));
        }
    }
    for chunk in scans.chunks(10_000) {
        srv.must("POST", "/v1/scans", &Value::Array(chunk.to_vec()), false)?;
    }
    report.scans = scans.len();

    // Doses: about 75 % a first dose, 55 % a second, at the injection points, weeks ago.
    let vaccines = ["EU/1/20/1528", "EU/1/21/1529", "BBIBP-CorV", "EU/1/20/1507"];
    let mut doses = Vec::new();
    for i in 0..PERSONS {
        if !rng.chance(0.75) {
            continue;
        }
        let vaccine = vaccines[rng.below(vaccines.len() as u64) as usize];
        let first = now - (60 + rng.below(120) as i64) * 86_400;
        let site = if i % 2 == 0 {
            "KS-DTIEM-1"
        } else {
            "ST-DTIEM-1"
        };
        doses.push(json!({"person": person(i), "dose": 1, "vaccine": vaccine, "administered_at": first, "site": site, "area": home(i)}));
        if rng.chance(0.73) {
            doses.push(json!({"person": person(i), "dose": 2, "vaccine": vaccine, "administered_at": first + 28 * 86_400, "site": site, "area": home(i)}));
        }
    }
    let (status, _) = srv.call("POST", "/v1/vaccinations", &Value::Array(doses.clone()))?;
    if (200..300).contains(&status) {
        report.doses = doses.len();
    }

    // Samples at the sampling sites over the last three days: most negative, a pooled one
    // positive, and three one-person positives (each registers a case).
    let mut positives = 0;
    for k in 0..40u64 {
        let id = format!("ST-TUBE-{seed}-{k:03}");
        let pooled = k % 5 == 0;
        let members: Vec<String> = if pooled {
            (0..5).map(|j| person(100 + k * 5 + j)).collect()
        } else {
            vec![person(10 + k * 31 % PERSONS)]
        };
        let collected = now - 3 * 86_400 + (k as i64) * 5_000;
        let site = if k % 2 == 0 { "VC-TYT-1" } else { "MX-TTYT-1" };
        let kind = if k % 3 == 0 { "antigen" } else { "pcr" };
        srv.must(
            "POST",
            "/v1/samples",
            &json!({"id": id, "kind": kind, "persons": members, "collected_at": collected, "site": site}),
            true,
        )?;
        let result = if k == 5 || (!pooled && k % 13 == 1 && positives < 3) {
            positives += usize::from(!pooled);
            "positive"
        } else {
            "negative"
        };
        srv.must(
            "POST",
            &format!("/v1/samples/{id}/result"),
            &json!({"result": result, "resulted_at": (collected + 6 * 3600).min(now)}),
            true,
        )?;
        report.samples += 1;
    }

    // A few manual cases, among people with visits, in their home communes.
    for (n, i) in [42u64, 318, 777, 1203].iter().enumerate() {
        let sampled = now - (n as i64 + 1) * 86_400 + 3_600;
        srv.must(
            "POST",
            "/v1/cases",
            &json!({"id": format!("ST-{:04}", n + 1), "person": person(*i), "sampled_at": sampled, "area": home(*i), "note": "Phát hiện qua sàng lọc cộng đồng"}),
            true,
        )?;
        report.cases += 1;
    }
    report.cases += positives;

    let notices = [
        ("directive", "Áp dụng biện pháp cấp độ 2 tại thành phố Sóc Trăng", "Từ 0 giờ ngày mai, các cơ sở kinh doanh hoạt động không quá 50 % công suất.\nNgười dân quét mã QR khi vào và khi ra khỏi mọi địa điểm công cộng."),
        ("news", "Mở thêm hai điểm tiêm vắc xin", "Nhà thi đấu tỉnh và Nhà văn hóa Kế Sách tiêm mũi 1 và mũi 2 từ 7 giờ đến 17 giờ hằng ngày."),
        ("news", "Xét nghiệm miễn phí cho người có triệu chứng", "Trạm y tế các xã, phường lấy mẫu miễn phí cho người sốt, ho, mất vị giác."),
    ];
    for (i, (kind, title, body)) in notices.iter().enumerate() {
        srv.must(
            "POST",
            "/v1/notices",
            &json!({"kind": kind, "title": title, "body": body, "published_at": now - 86_400 * (3 - i as i64)}),
            false,
        )?;
        report.notices += 1;
    }
    Ok(report)
}
