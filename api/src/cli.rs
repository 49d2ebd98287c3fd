//! The command line of `checkin-server` (contract section 9): flags, their `CHECKIN_*`
//! environment variables and defaults, and the rule that open mode stays on loopback.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use engine::{Config, Durability};
use health::{HealthConfig, Policy};

use crate::app::ServerOptions;

/// The HTTP server of the national QR check-in system.
///
/// Stores every acknowledged scan durably in the data directory, derives visits and live
/// occupancy, and answers contact traces. Serves HTTP/1.1 and cleartext HTTP/2 (prior
/// knowledge) on the same address. Without --tokens it runs in open mode (no authentication)
/// and then listens on loopback addresses only.
#[derive(Debug, Clone, Parser)]
#[command(name = "checkin-server", version, about, long_about)]
pub struct Cli {
    /// Address to listen on (host:port). Without --tokens it must be a loopback address.
    #[arg(long, env = "CHECKIN_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,

    /// Data directory: the scan log, venues and audit log. Created if missing; one server per
    /// directory at a time.
    #[arg(long, env = "CHECKIN_DATA", default_value = "./checkin-data")]
    pub data: PathBuf,

    /// Cluster mode (docs/cluster.md): NATS JetStream URLs, comma-separated. Scans and venues go
    /// to the replicated stream; visits, occupancy and traces come from the shard processes.
    /// Without it the server runs alone on its embedded store.
    #[arg(long, env = "CHECKIN_CLUSTER")]
    pub cluster: Option<String>,

    /// Cluster mode: the number of shards (the same on every process of the cluster).
    #[arg(long, env = "CHECKIN_CLUSTER_SHARDS", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub cluster_shards: u32,

    /// Cluster mode: most bytes of JSON in one query to a shard or one page of its answer; a
    /// larger read (a trace of a large cluster of cases) goes in several. 0: three quarters of
    /// the NATS servers' max_payload (docs/cluster.md).
    #[arg(long, env = "CHECKIN_CLUSTER_MESSAGE_BYTES", default_value_t = 0)]
    pub cluster_message_bytes: usize,

    /// Cluster mode: seconds between snapshots of this node's replica in
    /// DATA/cluster-snapshots, which a new node is seeded with (docs/cluster.md); 0: none.
    #[arg(long, env = "CHECKIN_REPLICA_SNAPSHOT_EVERY", default_value_t = 3600)]
    pub replica_snapshot_every: u64,

    /// Cluster mode: seconds this node's replica may stay stopped at one message by a failure
    /// of its own (a full disk, a failed health database) before the server stops with status 1,
    /// so that its supervisor restarts it (a restart reopens the stores); 0: never.
    #[arg(long, env = "CHECKIN_REPLICA_STALL_EXIT", default_value_t = 60)]
    pub replica_stall_exit: u64,

    /// Tokens file (TOML, [[tokens]] with name, role, sha256 and, for role "venue", venues).
    /// Without it the server runs open: no authentication, loopback only.
    #[arg(long, env = "CHECKIN_TOKENS")]
    pub tokens: Option<PathBuf>,

    /// When a scan is acknowledged: "fsync" = after it is synced to disk (survives power loss,
    /// group committed); "os" = once it is in the OS page cache (survives a crash of the server,
    /// not of the machine).
    #[arg(long, env = "CHECKIN_DURABILITY", value_enum, default_value_t = DurabilityArg::Fsync)]
    pub durability: DurabilityArg,

    /// Stay in seconds of venues that do not set their own default_stay_s: a visit without a
    /// check-out ends this long after the last check-in.
    #[arg(long, env = "CHECKIN_DEFAULT_STAY", default_value_t = engine::DEFAULT_STAY_S,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(engine::MAX_STAY_S)))]
    pub default_stay: u32,

    /// Days of scans kept: older scans are rejected as too_old and purged, whole log segments
    /// at a time.
    #[arg(long, env = "CHECKIN_RETENTION_DAYS", default_value_t = engine::DEFAULT_RETENTION_DAYS,
          value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub retention_days: u32,

    /// Capacity in bytes of one log segment file (preallocated; at least 65536). Retention frees
    /// disk a whole segment at a time, so smaller segments free space sooner; larger ones mean
    /// fewer files. Applies to segments created from now on.
    #[arg(long, env = "CHECKIN_SEGMENT_BYTES", default_value_t = 64 << 20,
          value_parser = clap::value_parser!(u64).range(65_536..=(1 << 40)))]
    pub segment_bytes: u64,

    /// Open connections at most; further connections are answered 503 and closed.
    #[arg(long, env = "CHECKIN_MAX_CONNECTIONS", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// A case's window starts this many days before the earlier of its sample and symptom
    /// onset.
    #[arg(long, env = "CHECKIN_CASE_LOOKBACK_DAYS", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(0..=60))]
    pub case_lookback_days: u32,

    /// Seconds of shared presence that make a close contact in a case's standing trace.
    #[arg(long, env = "CHECKIN_CASE_MIN_OVERLAP", default_value_t = 900,
          value_parser = clap::value_parser!(i64).range(0..=86_400))]
    pub case_min_overlap: i64,

    /// Visits of a case (or of an F1, for F2) shorter than this many seconds are left out of
    /// its standing trace.
    #[arg(long, env = "CHECKIN_CASE_MIN_STAY", default_value_t = 0,
          value_parser = clap::value_parser!(i64).range(0..=86_400))]
    pub case_min_stay: i64,

    /// Seconds a venue stays infectious after a case (or an F1, for F2) leaves it.
    #[arg(long, env = "CHECKIN_CASE_LINGER", default_value_t = 0,
          value_parser = clap::value_parser!(i64).range(0..=7_200))]
    pub case_linger: i64,

    /// Days an F1 contact stays F1 after their last contact.
    #[arg(long, env = "CHECKIN_F1_QUARANTINE_DAYS", default_value_t = 14,
          value_parser = clap::value_parser!(u32).range(1..=60))]
    pub f1_quarantine_days: u32,

    /// Most persons in one pooled test sample.
    #[arg(long, env = "CHECKIN_MAX_POOL", default_value_t = health::DEFAULT_MAX_POOL as u32,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_pool: u32,

    /// Days an F2 contact stays F2 after their last contact.
    #[arg(long, env = "CHECKIN_F2_QUARANTINE_DAYS", default_value_t = 7,
          value_parser = clap::value_parser!(u32).range(1..=60))]
    pub f2_quarantine_days: u32,

    /// The certificate signing key: a PKCS#8 PEM ECDSA P-256 private key file. Without it the
    /// server signs with signing-key.pem in the data directory, created (mode 0600) on first
    /// start; back that file up, certificates already issued verify only with it.
    #[arg(long, env = "CHECKIN_SIGNING_KEY")]
    pub signing_key: Option<PathBuf>,

    /// The issuer of the certificates the server signs (payload claim 1).
    #[arg(long, env = "CHECKIN_ISSUER", default_value = certs::DEFAULT_ISSUER,
          value_parser = crate::certificates::parse_issuer)]
    pub issuer: String,

    /// Days a certificate is valid after it is issued.
    #[arg(long, env = "CHECKIN_CERTIFICATE_DAYS", default_value_t = certs::DEFAULT_CERTIFICATE_DAYS,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::MAX_CERTIFICATE_DAYS)))]
    pub certificate_days: u32,
}

/// `--durability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DurabilityArg {
    /// Acknowledge after fsync (default).
    Fsync,
    /// Acknowledge once in the OS page cache.
    Os,
}

impl Cli {
    /// The engine settings these flags ask for.
    pub fn engine_config(&self) -> Config {
        let mut config = Config::new(&self.data);
        config.durability = match self.durability {
            DurabilityArg::Fsync => Durability::Fsync,
            DurabilityArg::Os => Durability::Os,
        };
        config.default_stay_s = self.default_stay;
        config.retention_days = self.retention_days;
        config.segment_bytes = self.segment_bytes;
        config
    }

    /// The health domain's settings: its database in the data directory, the case policy.
    pub fn health_config(&self) -> HealthConfig {
        let mut config = HealthConfig::new(&self.data);
        config.max_pool = self.max_pool as usize;
        config.policy = Policy {
            lookback_days: self.case_lookback_days,
            min_overlap_s: self.case_min_overlap,
            min_stay_s: self.case_min_stay,
            linger_s: self.case_linger,
            f1_quarantine_days: self.f1_quarantine_days,
            f2_quarantine_days: self.f2_quarantine_days,
        };
        config
    }

    /// The HTTP limits these flags ask for.
    pub fn server_options(&self) -> ServerOptions {
        ServerOptions {
            max_connections: self.max_connections as usize,
            ..ServerOptions::default()
        }
    }
}

/// Why the server refuses an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListenError {
    #[error("--listen {0}: not an address this host can resolve")]
    Unresolvable(String),
    #[error(
        "refusing to listen on {0} without --tokens: open mode (no authentication) is for local \
         use only; listen on 127.0.0.1 / [::1] or pass --tokens FILE"
    )]
    OpenModeNotLoopback(SocketAddr),
}

/// Resolves `--listen`; in open mode every resolved address must be loopback.
pub fn resolve_listen(listen: &str, open_mode: bool) -> Result<Vec<SocketAddr>, ListenError> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<SocketAddr> = listen
        .to_socket_addrs()
        .map_err(|_| ListenError::Unresolvable(listen.to_owned()))?
        .collect();
    if addrs.is_empty() {
        return Err(ListenError::Unresolvable(listen.to_owned()));
    }
    if open_mode {
        if let Some(bad) = addrs.iter().find(|a| !a.ip().is_loopback()) {
            return Err(ListenError::OpenModeNotLoopback(*bad));
        }
    }
    Ok(addrs)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn defaults_follow_the_contract() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["checkin-server"]).unwrap();
        assert_eq!(cli.listen, "127.0.0.1:8080");
        assert_eq!(cli.data, PathBuf::from("./checkin-data"));
        assert_eq!(cli.tokens, None);
        assert_eq!(cli.durability, DurabilityArg::Fsync);
        let cfg = cli.engine_config();
        assert_eq!(cfg.durability, Durability::Fsync);
        assert_eq!(cfg.default_stay_s, 7200);
        assert_eq!(cfg.retention_days, 21);
        assert_eq!(cfg.segment_bytes, 64 << 20);
        assert_eq!(cli.health_config().policy, Policy::default());
        assert_eq!(
            cli.health_config().db_path,
            PathBuf::from("./checkin-data/health.redb")
        );
    }

    #[test]
    fn case_policy_flags_parse_and_are_checked() {
        let cli = Cli::try_parse_from([
            "checkin-server",
            "--case-lookback-days",
            "3",
            "--case-min-overlap",
            "600",
            "--case-min-stay",
            "300",
            "--case-linger",
            "1800",
            "--f1-quarantine-days",
            "10",
            "--f2-quarantine-days",
            "5",
        ])
        .unwrap();
        let p = cli.health_config().policy;
        assert_eq!(
            p,
            Policy {
                lookback_days: 3,
                min_overlap_s: 600,
                min_stay_s: 300,
                linger_s: 1800,
                f1_quarantine_days: 10,
                f2_quarantine_days: 5,
            }
        );
        assert!(Cli::try_parse_from(["checkin-server", "--case-linger", "7201"]).is_err());
        assert!(Cli::try_parse_from(["checkin-server", "--case-min-stay", "-1"]).is_err());
        assert!(Cli::try_parse_from(["checkin-server", "--f1-quarantine-days", "0"]).is_err());
    }

    #[test]
    fn flags_parse_and_are_checked() {
        let cli = Cli::try_parse_from([
            "checkin-server",
            "--durability",
            "os",
            "--default-stay",
            "600",
            "--retention-days",
            "7",
        ])
        .unwrap();
        assert_eq!(cli.engine_config().durability, Durability::Os);
        assert_eq!(cli.engine_config().default_stay_s, 600);
        assert!(Cli::try_parse_from(["checkin-server", "--durability", "never"]).is_err());
        assert!(Cli::try_parse_from(["checkin-server", "--default-stay", "0"]).is_err());
        assert!(Cli::try_parse_from(["checkin-server", "--default-stay", "86401"]).is_err());
        assert!(Cli::try_parse_from(["checkin-server", "--segment-bytes", "1000"]).is_err());
        let cli = Cli::try_parse_from(["checkin-server", "--segment-bytes", "65536"]).unwrap();
        assert_eq!(cli.engine_config().segment_bytes, 65_536);
    }

    #[test]
    fn certificate_flags_parse_and_are_checked() {
        let cli = Cli::try_parse_from(["checkin-server"]).unwrap();
        assert_eq!(cli.signing_key, None);
        assert_eq!(cli.issuer, "VN");
        assert_eq!(cli.certificate_days, 365);
        let cli = Cli::try_parse_from([
            "checkin-server",
            "--signing-key",
            "/etc/checkin/key.pem",
            "--issuer",
            "VN-ST",
            "--certificate-days",
            "3650",
        ])
        .unwrap();
        assert_eq!(cli.signing_key, Some(PathBuf::from("/etc/checkin/key.pem")));
        assert_eq!(cli.issuer, "VN-ST");
        assert_eq!(cli.certificate_days, 3650);
        for days in ["0", "3651", "-1"] {
            assert!(Cli::try_parse_from(["checkin-server", "--certificate-days", days]).is_err());
        }
        for issuer in ["", "V\nN"] {
            assert!(Cli::try_parse_from(["checkin-server", "--issuer", issuer]).is_err());
        }
    }

    #[test]
    fn open_mode_stays_on_loopback() {
        assert!(resolve_listen("127.0.0.1:0", true).is_ok());
        assert!(resolve_listen("[::1]:0", true).is_ok());
        assert!(matches!(
            resolve_listen("0.0.0.0:8080", true),
            Err(ListenError::OpenModeNotLoopback(_))
        ));
        assert!(resolve_listen("0.0.0.0:8080", false).is_ok());
        assert!(matches!(
            resolve_listen("no port", true),
            Err(ListenError::Unresolvable(_))
        ));
    }
}
