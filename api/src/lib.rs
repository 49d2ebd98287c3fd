//! `checkin-server` as a library: the HTTP service of the check-in contract over the engine.
//!
//! The binary (`main.rs`) only parses flags, opens the engine and calls [`serve`]; tests start the
//! same server in-process on port 0. This crate owns everything about the wire: routes, JSON and
//! NDJSON decoding, problem+json errors, bearer tokens and roles, Server-Sent Events, Prometheus
//! metrics and the connection lifecycle. It never decides what a scan means: validation beyond
//! JSON types, visits, occupancy and traces are the engine's.
//!
//! Module map:
//! - [`routes`]: the route table ([`ROUTES`]) and path/query parsing.
//! - `app`: shared state and the request pipeline (404/405, 401/403, dispatch, metrics).
//! - `handlers`: one function per route.
//! - [`decode`]: request bodies to engine inputs (the scan decoder is the hot path).
//! - [`dose_decode`]: `POST /v1/vaccinations` bodies (JSON, NDJSON, CSV) to dose records.
//! - `vaccinations`: the routes of dose records and a person's doses (over `health`).
//! - `body`: media types, size caps and read deadlines.
//! - [`access`]: tokens file, authentication, role rules.
//! - `sse`: live venue feeds.
//! - `outbreak`: the routes of cases, person status, tier events and exposure sites (over the
//!   `health` crate).
//! - `tier_feed`: the live feed of tier changes.
//! - `records`: samples and results, declarations, follow-ups, the pass, areas, summary, notices.
//! - `trace_body`: the JSON of a trace answer, written straight into a buffer (`pub(crate)`, for
//!   every route that answers in the shape of `POST /v1/trace`).
//! - `certificates`: the signing key, `GET /v1/keys`, a person's certificate (JSON or QR SVG)
//!   and `POST /v1/verify` (over the `certs` crate).
//! - `metrics`: the Prometheus families.
//! - [`problem`]: errors as `application/problem+json`.
//! - [`web`]: the web pages (portal, venue live view and poster, console, certificate check)
//!   and their embedded assets.
//! - `server`: accept loop, connection limit, graceful shutdown.
//! - [`cli`]: flags of the binary.
#![deny(unsafe_code)]

pub mod access;
mod app;
mod body;
mod certificates;
pub mod cli;
pub mod decode;
pub mod dose_decode;
mod handlers;
mod metrics;
mod outbreak;
pub mod problem;
mod records;
pub mod routes;
mod server;
// Cluster mode (`--cluster`): the routes over the shards (docs/cluster.md).
pub mod cluster_mode;
pub mod cluster_replica;
pub mod replica_checkpoint;
pub mod replica_snapshot;
mod sse;
mod tier_feed;
mod trace_body;
mod vaccinations;
pub mod web;

pub use access::{token_digest_hex, Access, Principal, Role, TokenSet, TokensError, Who};
pub use app::{App, ServerOptions};
pub use certificates::{
    load_signing_key, CertificatesError, KeySource, MAX_CERTIFICATE_DAYS, MAX_ISSUER_BYTES,
};
pub use decode::{decode_scans, DecodeError, ScanFormat, MAX_BODY_BYTES, MAX_SCANS};
pub use metrics::{Metrics, MetricsError};
pub use problem::ApiError;
pub use routes::{RouteSpec, ROUTES};
pub use server::{serve, ServeError};
