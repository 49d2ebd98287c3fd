//! Shared dataset builders for the benches.
