//! `checkin-import`: streams a CSV file of dose records (any size: a million rows is routine)
//! to `POST /v1/vaccinations` in chunks, retrying what the server could not take yet, and
//! reports accepted and rejected rows by reason with their row numbers in the file; and writes
//! realistic seeded test files of any size.
//!
//! - [`send`]: the reader thread that cuts the file into CSV chunks (each with the header), the
//!   HTTP/1.1 client that posts them with retries and backoff, the progress bar.
//! - [`report`]: the final report, as text or JSON.
//! - [`gen`]: the seeded generator of test files and their area tree, and what the server must
//!   answer for them.
//!
//! Only plain `http://` is spoken: run it on the server's host or through the TLS-terminating
//! proxy's internal address (see README.md).
#![deny(unsafe_code)]

pub mod gen;
pub mod report;
pub mod send;

pub use report::{Rejected, Report};
pub use send::{import, Failed, ImportError, Options};
