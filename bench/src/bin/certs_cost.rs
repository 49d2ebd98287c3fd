//! What one certificate costs in process, step by step: the figures behind the HTTP rates of
//! `bench/records/reads.sh` (docs/BENCHMARKS.md, "Health records").
//!
//! `cargo run --release -p checkin-bench --bin certs_cost -- [ROUNDS]` (default 3,000) times, per
//! call, on the calling thread (median, p90 and mean of ROUNDS calls each):
//!
//! - `certs::issue` of a person with three doses (what `GET /v1/persons/{id}/certificate` signs);
//! - its parts: `SigningKey::sign` (ECDSA P-256, RFC 6979) of a COSE `Sig_structure`-sized
//!   message; a zlib stream of a COSE_Sign1-sized buffer at `Compression::best()` (what `issue`
//!   uses; `issue` now keeps one compressor per thread), at the default level and at `fast`,
//!   and the encoder's set-up alone;
//! - for comparison, p256 0.14's own ECDSA (RFC 6979 signing, verifying), which `certs` used
//!   before it signed and verified with `ring`;
//! - `certs::verify` of that certificate (what `POST /v1/verify` runs) and its ECDSA part
//!   (`VerifyingKey::verify` of the same signature over the same message).

use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

use certs::{Certificate, HealthClaims, PassColor, SigningKey, Vaccination};
use flate2::write::ZlibEncoder;
use flate2::Compression;
use p256::ecdsa::signature::Verifier;

/// Median, p90 and mean of `rounds` calls of `f`, in microseconds.
fn time(rounds: usize, mut f: impl FnMut()) -> (f64, f64, f64) {
    for _ in 0..rounds.min(100) {
        f();
    }
    let mut us: Vec<f64> = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        f();
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    us.sort_by(f64::total_cmp);
    let at = |q: f64| us[((us.len() as f64 * q) as usize).min(us.len() - 1)];
    (at(0.5), at(0.9), us.iter().sum::<f64>() / us.len() as f64)
}

fn row(name: &str, (p50, p90, mean): (f64, f64, f64)) {
    println!("{name:<58} median {p50:>8.1} µs   p90 {p90:>8.1} µs   mean {mean:>8.1} µs");
}

fn zlib(level: Compression, data: &[u8]) -> usize {
    let mut z = ZlibEncoder::new(Vec::new(), level);
    let out = z
        .write_all(data)
        .and_then(|()| z.finish())
        .unwrap_or_default();
    out.len()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: usize = match std::env::args().nth(1) {
        Some(a) => a.parse()?,
        None => 3_000,
    };
    let key = SigningKey::generate()?;
    let now = 1_796_000_000;
    let claims = HealthClaims {
        person: "p000123".into(),
        pass: PassColor::Green,
        vaccinations: (1..=3)
            .map(|n| Vaccination {
                dose_number: n,
                product: "EU/1/21/1529".into(),
                administered_at: 1_630_000_000 + i64::from(n) * 5_000_000,
            })
            .collect(),
        tests: Vec::new(),
        recoveries: Vec::new(),
    };
    let cert = Certificate::new("VN", now, 365, claims);
    let hc1 = certs::issue(&key, &cert)?;
    let keys = [key.public_key().clone()];
    if !certs::verify(&hc1, &keys, now).is_valid() {
        return Err("the certificate does not verify".into());
    }
    // Stand-ins of the sizes `issue` handles: the Sig_structure it signs and the COSE_Sign1 it
    // compresses (~200-250 bytes for three doses).
    let message: Vec<u8> = (0..230u32).map(|i| (i * 7 % 251) as u8).collect();
    let cose: Vec<u8> = (0..250u32).map(|i| (i * 13 % 97) as u8).collect();
    let sig = key.sign(&message);
    let signature = p256::ecdsa::Signature::from_slice(&sig)?;
    let vk = *key.public_key().verifying_key();
    vk.verify(&message, &signature)?;
    let p256_key = p256::ecdsa::SigningKey::from_slice(&[7u8; 32])?;
    let p256_vk = *p256_key.verifying_key();
    let p256_sig: p256::ecdsa::Signature =
        p256::ecdsa::signature::Signer::sign(&p256_key, &message);

    println!(
        "certs_cost: {rounds} rounds per row, one thread; hc1 {} characters; {} cores, load {}",
        hc1.len(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        checkin_bench::load_average()
    );
    let t0 = Instant::now();
    row(
        "certs::issue (3 doses), whole",
        time(rounds, || {
            black_box(certs::issue(&key, &cert).ok());
        }),
    );
    row(
        "  SigningKey::sign (ECDSA P-256, ring) of 230 bytes",
        time(rounds, || {
            black_box(key.sign(black_box(&message)));
        }),
    );
    row(
        "  p256 0.14 SigningKey::sign (RFC 6979) of 230 bytes",
        time(rounds, || {
            let s: p256::ecdsa::Signature =
                p256::ecdsa::signature::Signer::sign(&p256_key, black_box(&message));
            black_box(s);
        }),
    );
    row(
        "  zlib of 250 bytes, Compression::best(), fresh encoder",
        time(rounds, || {
            black_box(zlib(Compression::best(), black_box(&cose)));
        }),
    );
    row(
        "  zlib of 250 bytes, Compression::default()",
        time(rounds, || {
            black_box(zlib(Compression::default(), black_box(&cose)));
        }),
    );
    row(
        "  zlib of 250 bytes, Compression::fast()",
        time(rounds, || {
            black_box(zlib(Compression::fast(), black_box(&cose)));
        }),
    );
    row(
        "  ZlibEncoder::new alone (best)",
        time(rounds, || {
            black_box(ZlibEncoder::new(Vec::new(), Compression::best()));
        }),
    );
    row(
        "certs::verify, whole",
        time(rounds, || {
            black_box(certs::verify(black_box(&hc1), &keys, now).is_valid());
        }),
    );
    row(
        "  PublicKey::verifies (ECDSA P-256, ring) of 230 bytes",
        time(rounds, || {
            black_box(keys[0].verifies(black_box(&message), &sig));
        }),
    );
    row(
        "  p256 0.14 VerifyingKey::verify of 230 bytes",
        time(rounds, || {
            black_box(p256_vk.verify(black_box(&message), &p256_sig).is_ok());
        }),
    );
    let spent: Duration = t0.elapsed();
    println!("total {:.1} s", spent.as_secs_f64());
    Ok(())
}
