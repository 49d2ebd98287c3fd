//! The web pages over plain HTTP (no browser): gzip when the request's `Accept-Encoding` takes
//! it (HTML, CSS, scripts, SVG; `Vary: Accept-Encoding` either way; the JSON API untouched), and
//! the portal's cache (built at most once per `ServerOptions::portal_refresh`, both languages; a
//! `?q=` answer filters the cached data; zero builds every answer).
#![allow(clippy::unwrap_used)]

mod api_support;

use std::io::Read as _;
use std::time::{Duration, Instant};

use api::ServerOptions;
use api_support::{Opts, Server};
use bytes::Bytes;
use serde_json::json;

const GZIP: (&str, &str) = ("accept-encoding", "gzip, deflate, br, zstd");

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b)
        .read_to_end(&mut out)
        .expect("a gzip body");
    out
}

/// The `/assets/…` URLs a page links to.
fn asset_urls(html: &str) -> Vec<String> {
    html.split('"')
        .filter(|s| s.starts_with("/assets/"))
        .map(str::to_owned)
        .collect()
}

async fn server(refresh: Duration) -> Server {
    Server::start_with(Opts {
        options: ServerOptions {
            portal_refresh: refresh,
            ..ServerOptions::default()
        },
        ..Opts::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_assets_are_gzipped_when_the_client_takes_it() {
    // A long refresh: both requests of a pair read the same built portal.
    let s = server(Duration::from_secs(600)).await;
    s.venues(&["V1"]).await;
    let r = s
        .post(
            "/v1/notices",
            &json!({"kind": "news", "title": "Mở thêm 3 điểm tiêm", "body": "Tại các trạm y tế."}),
        )
        .await;
    assert!(r.status < 300, "{}", r.text());

    let mut assets = Vec::new();
    for path in [
        "/",
        "/?lang=en",
        "/?q=v1",
        "/console",
        "/verify",
        "/venue/V1",
        "/venue/V1/poster",
        "/venue/NOPE",
    ] {
        let plain = s.get(path).await;
        assert!(plain.status == 200 || path == "/venue/NOPE", "{path}");
        assert_eq!(plain.header("content-encoding"), None, "{path}");
        assert_eq!(plain.header("vary"), Some("accept-encoding"), "{path}");
        let z = s.send("GET", path, None, &[GZIP], Bytes::new()).await;
        assert_eq!(z.status, plain.status, "{path}");
        assert_eq!(z.header("content-encoding"), Some("gzip"), "{path}");
        assert_eq!(z.header("vary"), Some("accept-encoding"), "{path}");
        assert_eq!(
            z.header("content-type"),
            Some("text/html; charset=utf-8"),
            "{path}"
        );
        assert!(
            z.header("content-security-policy").is_some(),
            "{path}: the page headers stay"
        );
        let unzipped = gunzip(&z.body);
        if path != "/venue/V1/poster" {
            assert_eq!(unzipped, plain.body, "{path}: the same page");
        }
        assert!(
            z.body.len() * 2 < plain.body.len(),
            "{path}: {} gzipped vs {} bytes",
            z.body.len(),
            plain.body.len()
        );
        assets.extend(asset_urls(&plain.text()));
    }
    let portal = s.get("/").await.text();
    assert!(portal.contains("Mở thêm 3 điểm tiêm"));

    // Every embedded file the pages link: CSS, scripts and the SVG icon.
    assets.sort();
    assets.dedup();
    assert!(assets.len() >= 8, "{assets:?}");
    for url in &assets {
        let plain = s.get(url).await;
        assert_eq!(plain.status, 200, "{url}");
        assert_eq!(plain.header("content-encoding"), None, "{url}");
        assert_eq!(plain.header("vary"), Some("accept-encoding"), "{url}");
        let z = s.send("GET", url, None, &[GZIP], Bytes::new()).await;
        if plain.body.len() < api::web::compress::MIN_BYTES {
            // Too short to gain (the icon): sent as it is.
            assert_eq!(z.header("content-encoding"), None, "{url}");
            assert_eq!(z.body, plain.body);
            continue;
        }
        assert_eq!(z.header("content-encoding"), Some("gzip"), "{url}");
        assert_eq!(z.header("content-type"), plain.header("content-type"));
        assert_eq!(
            z.header("cache-control"),
            Some("public, max-age=31536000, immutable")
        );
        assert_eq!(gunzip(&z.body), plain.body, "{url}");
        assert!(z.body.len() < plain.body.len(), "{url}");
    }

    // The poster's QR code (SVG), fetched as the poster script does.
    let z = s
        .send("GET", "/venue/V1/poster.svg", None, &[GZIP], Bytes::new())
        .await;
    assert_eq!(z.status, 200);
    assert_eq!(z.header("content-type"), Some("image/svg+xml"));
    assert_eq!(z.header("content-encoding"), Some("gzip"));
    assert!(String::from_utf8(gunzip(&z.body)).unwrap().contains("<svg"));

    // A refusal is honoured; `*` takes gzip; the JSON API is not compressed.
    for (accept, gz) in [
        ("gzip;q=0, br", false),
        ("identity", false),
        ("*", true),
        ("x-gzip", true),
    ] {
        let r = s
            .send(
                "GET",
                "/",
                None,
                &[("accept-encoding", accept)],
                Bytes::new(),
            )
            .await;
        assert_eq!(
            r.header("content-encoding") == Some("gzip"),
            gz,
            "Accept-Encoding: {accept}"
        );
    }
    let r = s
        .send("GET", "/v1/summary", None, &[GZIP], Bytes::new())
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_is_built_at_most_once_per_refresh() {
    let refresh = Duration::from_secs(4);
    let s = server(refresh).await;
    s.venues(&["V1"]).await;
    let started = Instant::now();
    let first = s.get("/").await.text();
    assert!(first.contains("<html lang=\"vi\">"));
    assert!(!first.contains("Thông báo mới"));
    let en = s.get("/?lang=en").await.text();
    assert!(en.contains("<html lang=\"en\">"), "one page per language");
    let r = s
        .post(
            "/v1/notices",
            &json!({"kind": "news", "title": "Thông báo mới", "body": "x"}),
        )
        .await;
    assert!(r.status < 300, "{}", r.text());
    // Within the refresh the built page is answered as it is, filtered or not.
    let again = s.get("/").await.text();
    let filtered = s.get("/?q=v1").await.text();
    assert!(
        started.elapsed() < refresh,
        "the machine is too slow for this test's timing"
    );
    assert_eq!(again, first, "the same bytes within the refresh");
    assert!(!filtered.contains("Thông báo mới"));
    // Then it is built again (the first request after the refresh may still get the old page
    // while the new one is built) and shows the notice, in both languages.
    let deadline = Instant::now() + refresh + Duration::from_secs(10);
    let shown = loop {
        let html = s.get("/").await.text();
        if html.contains("Thông báo mới") {
            break Instant::now();
        }
        assert!(Instant::now() < deadline, "the portal was never rebuilt");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        shown.duration_since(started) >= refresh,
        "rebuilt before its refresh: {:?}",
        shown.duration_since(started)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.get("/?lang=en").await.text().contains("Thông báo mới") {
        assert!(
            Instant::now() < deadline,
            "the English portal was never rebuilt"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_zero_refresh_every_answer_is_built() {
    let s = server(Duration::ZERO).await;
    assert!(!s.get("/").await.text().contains("Thông báo mới"));
    let r = s
        .post(
            "/v1/notices",
            &json!({"kind": "news", "title": "Thông báo mới", "body": "x"}),
        )
        .await;
    assert!(r.status < 300, "{}", r.text());
    assert!(s.get("/").await.text().contains("Thông báo mới"));
}

/// Portal builds so far, from `/metrics`.
async fn portal_builds(s: &Server) -> u64 {
    let text = s.get("/metrics").await.text();
    text.lines()
        .find_map(|l| l.strip_prefix("checkin_portal_build_seconds_count "))
        .and_then(|n| n.trim().parse().ok())
        .expect("the portal build histogram")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_portal_is_built_again_in_the_background() {
    let s = Server::start_with(Opts {
        options: ServerOptions {
            portal_refresh: Duration::from_millis(100),
            portal_idle_rebuild: Duration::from_millis(400),
            ..ServerOptions::default()
        },
        ..Opts::default()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        portal_builds(&s).await,
        0,
        "nothing is built before anyone asks"
    );
    assert_eq!(s.get("/").await.status, 200);
    assert_eq!(portal_builds(&s).await, 1);
    let r = s
        .post(
            "/v1/notices",
            &json!({"kind": "news", "title": "Tin sau khi cổng vắng khách", "body": "x"}),
        )
        .await;
    assert!(r.status < 300, "{}", r.text());
    // Nobody asks for 2.5 s: the portal is built again in the background meanwhile (without
    // that, the first build, without the notice, would be answered from its grace).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let builds = portal_builds(&s).await;
    assert!(builds >= 3, "{builds} builds");
    let page = s.get("/").await.text();
    assert!(
        page.contains("Tin sau khi cổng vắng khách"),
        "the answer after the idle spell comes from a background build"
    );
}
