//! The pages' static files, embedded in the binary at build time (`api/web/`), each served under
//! a name that carries the first 10 hex digits of its SHA-256 (`/assets/site.3fa2b1c9d0.css`),
//! so they can be cached for a year: a changed file gets a new name.

use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// One embedded file.
pub struct Asset {
    /// The name in `api/web/`, e.g. `site.css`.
    pub name: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

/// Every embedded file.
pub static ASSETS: &[Asset] = &[
    Asset {
        name: "site.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../web/site.css"),
    },
    Asset {
        name: "common.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../web/common.js"),
    },
    Asset {
        name: "portal.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../web/portal.js"),
    },
    Asset {
        name: "venue.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../web/venue.js"),
    },
    Asset {
        name: "console.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../web/console.js"),
    },
    Asset {
        name: "verify.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../web/verify.js"),
    },
    Asset {
        name: "poster.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../web/poster.js"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        bytes: include_bytes!("../../web/icon.svg"),
    },
];

/// The hashed URL of every asset, by index in [`ASSETS`], made once.
fn urls() -> &'static [String] {
    static URLS: OnceLock<Vec<String>> = OnceLock::new();
    URLS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let digest = Sha256::digest(a.bytes);
                let hex: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
                let (stem, ext) = a.name.rsplit_once('.').unwrap_or((a.name, ""));
                format!("/assets/{stem}.{hex}.{ext}")
            })
            .collect()
    })
}

/// The hashed URL of the asset called `name` (`"/assets/missing"` for a name not embedded: a
/// template naming a file that is not there shows as a broken link in the browser tests).
pub fn url(name: &str) -> &'static str {
    ASSETS
        .iter()
        .position(|a| a.name == name)
        .and_then(|i| urls().get(i))
        .map_or("/assets/missing", String::as_str)
}

/// The asset served at `path` (a hashed URL), if any.
pub fn find(path: &str) -> Option<&'static Asset> {
    find_indexed(path).map(|(_, a)| a)
}

/// [`find`], with the asset's index in [`ASSETS`].
pub fn find_indexed(path: &str) -> Option<(usize, &'static Asset)> {
    let i = urls().iter().position(|u| u == path)?;
    ASSETS.get(i).map(|a| (i, a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_hashed_url_that_finds_it() {
        for a in ASSETS {
            let u = url(a.name);
            assert!(u.starts_with("/assets/"), "{u}");
            assert_eq!(find(u).map(|f| f.name), Some(a.name));
            assert_eq!(u.len(), "/assets/".len() + a.name.len() + 11);
        }
        assert!(find("/assets/site.css").is_none());
        assert_eq!(url("nope.js"), "/assets/missing");
    }
}
