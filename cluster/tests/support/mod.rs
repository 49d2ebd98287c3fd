//! Shared by the cluster crate's tests that run processes through `deploy/local-cluster.sh`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// `deploy/local-cluster.sh` of this checkout.
pub fn local_cluster_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local-cluster.sh")
}

/// Kills the cluster process `name` of the cluster in `dir` with `kill -9` (its pid from
/// `dir/pids/NAME.pid`) and waits until it is gone (or a zombie), so that `restart` sees it
/// stopped.
pub fn kill9(dir: &Path, name: &str) {
    let pid =
        std::fs::read_to_string(dir.join("pids").join(format!("{name}.pid"))).expect("pid file");
    let pid = pid.trim();
    let killed = Command::new("kill")
        .args(["-9", pid])
        .status()
        .expect("kill");
    assert!(killed.success(), "kill -9 {name}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z ")) {
        assert!(Instant::now() < deadline, "{name} did not die");
        std::thread::sleep(Duration::from_millis(50));
    }
}
