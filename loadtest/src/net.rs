//! The target of a load run and the loopback-only rule: load traffic may only ever go to
//! 127.0.0.0/8 or ::1 (workplace rule). [`Target::parse`] refuses every other host before any
//! socket is opened, and the drivers connect only to the address it checked (no DNS lookup).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetError {
    /// Not `http://host[:port][/prefix]`.
    BadUrl(String),
    /// Only plain `http` is supported.
    Scheme(String),
    /// The host is not a loopback address.
    NotLoopback(String),
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetError::BadUrl(u) => {
                write!(
                    f,
                    "cannot parse URL {u:?}: expected http://HOST[:PORT][/PREFIX]"
                )
            }
            TargetError::Scheme(s) => write!(
                f,
                "unsupported scheme {s:?}: checkin-loadtest speaks plain http to a local server"
            ),
            TargetError::NotLoopback(h) => write!(
                f,
                "refusing to send load to {h:?}: only loopback targets (127.0.0.0/8, ::1, \
                 localhost) are allowed; load traffic to any other address is forbidden"
            ),
        }
    }
}

impl std::error::Error for TargetError {}

/// Is `ip` a loopback address (127.0.0.0/8, ::1, or an IPv4-mapped 127.x address)?
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|m| m.is_loopback()),
    }
}

/// A checked load target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The socket address connections go to (always loopback).
    pub addr: SocketAddr,
    /// The `Host` header value (`host:port` as written in the URL).
    pub authority: String,
    /// Path prefix without a trailing slash (`""` for none).
    pub prefix: String,
}

impl Target {
    /// Parses `http://HOST[:PORT][/PREFIX]` and checks the host is loopback. `HOST` is an IPv4
    /// literal, a bracketed IPv6 literal or `localhost` (taken as 127.0.0.1, never resolved).
    pub fn parse(url: &str) -> Result<Target, TargetError> {
        let bad = || TargetError::BadUrl(url.to_string());
        let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(TargetError::Scheme(scheme.to_string()));
        }
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(bad());
        }
        if path.contains(['?', '#']) {
            return Err(bad());
        }
        let (host, port) = if let Some(after) = authority.strip_prefix('[') {
            let (h, tail) = after.split_once(']').ok_or_else(bad)?;
            let port = match tail {
                "" => None,
                t => Some(t.strip_prefix(':').ok_or_else(bad)?),
            };
            (h, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let port: u16 = match port {
            None => 80,
            Some(p) => p.parse().map_err(|_| bad())?,
        };
        let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else if let Ok(v4) = host.parse::<Ipv4Addr>() {
            IpAddr::V4(v4)
        } else if let Ok(v6) = host.parse::<Ipv6Addr>() {
            IpAddr::V6(v6)
        } else {
            return Err(TargetError::NotLoopback(host.to_string()));
        };
        if !is_loopback(ip) {
            return Err(TargetError::NotLoopback(host.to_string()));
        }
        Ok(Target {
            addr: SocketAddr::new(ip, port),
            authority: authority.to_string(),
            prefix: path.trim_end_matches('/').to_string(),
        })
    }

    /// The request path for `route` (which starts with `/`).
    pub fn path(&self, route: &str) -> String {
        format!("{}{}", self.prefix, route)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_loopback() {
        let t = Target::parse("http://127.0.0.1:8080").expect("ok");
        assert_eq!(t.addr, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(t.authority, "127.0.0.1:8080");
        assert_eq!(t.path("/v1/scans"), "/v1/scans");
        let t = Target::parse("http://127.9.8.7:1/api/").expect("ok");
        assert_eq!(t.path("/v1/scans"), "/api/v1/scans");
        let t = Target::parse("http://[::1]:9000").expect("ok");
        assert_eq!(t.addr, "[::1]:9000".parse().expect("addr"));
        let t = Target::parse("HTTP://localhost").expect("ok");
        assert_eq!(t.addr, "127.0.0.1:80".parse().expect("addr"));
        assert!(Target::parse("http://[::ffff:127.0.0.1]:80").is_ok());
    }

    #[test]
    fn refuses_everything_else() {
        for url in [
            "http://10.0.0.1:8080",
            "http://192.168.1.10",
            "http://0.0.0.0:8080",
            "http://8.8.8.8",
            "http://[::]:8080",
            "http://[2001:db8::1]:80",
            "http://[::ffff:10.0.0.1]:80",
            "http://example.com",
            "http://localhost.evil.com:8080",
            "http://127.0.0.1.nip.io",
        ] {
            match Target::parse(url) {
                Err(TargetError::NotLoopback(_)) => {}
                other => panic!("{url}: {other:?}"),
            }
        }
        let msg = Target::parse("http://10.1.2.3")
            .expect_err("refused")
            .to_string();
        assert!(msg.contains("only loopback"), "{msg}");
        assert!(matches!(
            Target::parse("https://127.0.0.1"),
            Err(TargetError::Scheme(_))
        ));
        for url in [
            "127.0.0.1:8080",
            "http://",
            "http://127.0.0.1:99999",
            "http://user@127.0.0.1",
            "http://[::1",
            "http://127.0.0.1/x?y",
        ] {
            assert!(
                matches!(Target::parse(url), Err(TargetError::BadUrl(_))),
                "{url}"
            );
        }
    }

    #[test]
    fn loopback_predicate() {
        assert!(is_loopback("127.0.0.1".parse().expect("ip")));
        assert!(is_loopback("127.255.255.254".parse().expect("ip")));
        assert!(is_loopback("::1".parse().expect("ip")));
        assert!(!is_loopback("128.0.0.1".parse().expect("ip")));
        assert!(!is_loopback("::2".parse().expect("ip")));
    }
}
