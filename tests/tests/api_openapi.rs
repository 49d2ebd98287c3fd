//! docs/openapi.yaml and the server's route table (`api::ROUTES`) describe the same API: every
//! routed path and method is documented, and nothing is documented that is not routed.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

/// The `(METHOD, /path)` pairs under `paths:` of an OpenAPI document in this repository's style
/// (paths at two spaces of indentation, methods at four).
fn documented(yaml: &str) -> BTreeSet<(String, String)> {
    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    let mut out = BTreeSet::new();
    let mut in_paths = false;
    let mut path: Option<String> = None;
    for line in yaml.lines() {
        if !line.starts_with(' ') && !line.trim().is_empty() {
            in_paths = line.trim_end() == "paths:";
            path = None;
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = line.strip_prefix("  /") {
            path = Some(format!("/{}", p.trim_end().trim_end_matches(':')));
        } else if let Some(m) = line.strip_prefix("    ") {
            let Some((m, _)) = m.split_once(':') else {
                continue;
            };
            if !m.starts_with(' ') && METHODS.contains(&m) {
                let p = path.clone().expect("a method outside a path");
                out.insert((m.to_uppercase(), p));
            }
        }
    }
    out
}

#[test]
fn openapi_matches_the_route_table() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.yaml");
    let yaml = std::fs::read_to_string(path).unwrap();
    assert!(yaml.starts_with("openapi: 3."));
    let documented = documented(&yaml);
    let routed: BTreeSet<(String, String)> = api::ROUTES
        .iter()
        .map(|r| (r.method.to_owned(), r.pattern.to_owned()))
        .collect();
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty(),
        "routed but not in openapi.yaml: {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "in openapi.yaml but not routed: {unrouted:?}"
    );
    // Every routed (method, pattern) is distinct: the set is as large as the table.
    assert_eq!(routed.len(), api::ROUTES.len());
}

#[test]
fn the_parser_sees_paths_and_methods() {
    let yaml = "openapi: 3.0.3\npaths:\n  /a/{id}:\n    get:\n      responses: {}\n    post:\n      x: 1\n  /b:\n    delete: {}\ncomponents:\n  /c:\n    get: {}\n";
    let got = documented(yaml);
    let want: BTreeSet<(String, String)> =
        [("GET", "/a/{id}"), ("POST", "/a/{id}"), ("DELETE", "/b")]
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
    assert_eq!(got, want);
}
