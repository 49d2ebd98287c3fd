//! The case policy of contract section 10: the case window and the standing trace's rules, and
//! how long a contact's quarantine runs.

use crate::error::{Error, Result};

/// Server-wide case policy (the `--case-*` and `--f*-quarantine-days` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The case window starts this many days before `min(sampled_at, onset)`.
    pub lookback_days: u32,
    pub min_overlap_s: i64,
    pub min_stay_s: i64,
    pub linger_s: i64,
    pub f1_quarantine_days: u32,
    pub f2_quarantine_days: u32,
}

impl Default for Policy {
    /// The contract's defaults: 2 days lookback, 900 s overlap, no minimum stay, no linger,
    /// 14 days F1 and 7 days F2 quarantine.
    fn default() -> Policy {
        Policy {
            lookback_days: 2,
            min_overlap_s: 900,
            min_stay_s: 0,
            linger_s: 0,
            f1_quarantine_days: 14,
            f2_quarantine_days: 7,
        }
    }
}

impl Policy {
    /// Checks the bounds the trace rules put on the policy (section 5).
    pub fn validate(&self) -> Result<()> {
        if self.min_overlap_s < 0 {
            return Err(Error::Invalid("case min overlap must be >= 0".into()));
        }
        if !(0..=86_400).contains(&self.min_stay_s) {
            return Err(Error::Invalid("case min stay must be in 0..=86400".into()));
        }
        if !(0..=7_200).contains(&self.linger_s) {
            return Err(Error::Invalid("case linger must be in 0..=7200".into()));
        }
        if self.lookback_days > 60 {
            return Err(Error::Invalid(
                "case lookback must be at most 60 days".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn f1_quarantine_s(&self) -> i64 {
        i64::from(self.f1_quarantine_days) * 86_400
    }

    pub(crate) fn f2_quarantine_s(&self) -> i64 {
        i64::from(self.f2_quarantine_days) * 86_400
    }
}
