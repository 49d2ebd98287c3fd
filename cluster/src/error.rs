//! Errors of cluster mode.

/// What went wrong talking to JetStream or a shard.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// NATS could not be reached or refused the connection.
    #[error("cannot connect to NATS: {0}")]
    Connect(String),
    /// A JetStream management call (stream or consumer) failed.
    #[error("JetStream: {0}")]
    JetStream(String),
    /// A publish was not acknowledged by JetStream.
    #[error("JetStream did not acknowledge a publish: {0}")]
    Publish(String),
    /// No replica of a shard answered in time (one may be taking over).
    #[error("shard {shard} did not answer: {reason}")]
    ShardUnavailable { shard: u32, reason: String },
    /// A message or reply could not be decoded.
    #[error("undecodable {what}: {reason}")]
    Decode { what: &'static str, reason: String },
    /// This process's settings differ from the ones the cluster was set up with
    /// ([`crate::Layout`]).
    #[error("{0}")]
    Layout(String),
    /// The local engine failed.
    #[error("engine: {0}")]
    Engine(#[from] engine::Error),
}

/// Cluster-mode result.
pub type Result<T> = std::result::Result<T, ClusterError>;
