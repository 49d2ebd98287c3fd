//! checkin-loadtest as a library: the seeded dataset generator ([`gen`]), the dataset writers
//! ([`dataset`]), the loopback-only target parsing ([`net`]), the HTTP load drivers ([`load`]),
//! case registration during ingestion ([`cases`]), the health-record drivers (vaccination bulk
//! import, pass, certificates: [`records`]) and their latency/error report ([`report`]).
//! The `checkin-loadtest` binary is a thin CLI over these; benches and end-to-end tests call
//! them in-process.

pub mod cases;
pub mod dataset;
pub mod demo;
pub mod gen;
pub mod http;
pub mod load;
pub mod net;
pub mod records;
pub mod report;
pub mod rng;

pub use cases::CaseOptions;
pub use load::{run_ingest, run_ingest_with_cases, run_trace, IngestOptions, TraceOptions};
pub use report::Report;
