//! Cases (contract section 10): their fields, how a registration is checked, the case window and
//! the status transitions.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::policy::Policy;

/// Longest accepted case note, in bytes.
pub const MAX_NOTE_BYTES: usize = 2_000;

/// A case's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum CaseStatus {
    Active,
    Recovered,
    Discarded,
}

impl CaseStatus {
    pub const ALL: [CaseStatus; 3] = [
        CaseStatus::Active,
        CaseStatus::Recovered,
        CaseStatus::Discarded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CaseStatus::Active => "active",
            CaseStatus::Recovered => "recovered",
            CaseStatus::Discarded => "discarded",
        }
    }

    pub fn parse(s: &str) -> Option<CaseStatus> {
        CaseStatus::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Whether a case in this status counts for its contacts (every case not discarded).
    pub fn counts(self) -> bool {
        self != CaseStatus::Discarded
    }
}

/// A stored case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    pub id: String,
    pub person: String,
    pub sampled_at: i64,
    pub onset: Option<i64>,
    pub isolated_at: i64,
    /// Whether the registration named `isolated_at` (else it is the registration time); a retry
    /// that leaves it out matches only a case that left it out.
    pub isolated_at_given: bool,
    pub area: Option<String>,
    pub note: Option<String>,
    /// `manual`, or `sample:<sample id>`.
    pub source: String,
    pub status: CaseStatus,
    pub registered_at: i64,
    pub recovered_at: Option<i64>,
}

impl Case {
    /// The case window `[from, to]` under `policy`: `from = min(sampled_at, onset) - lookback`,
    /// `to = isolated_at`. Empty (no contacts) when `from > to`.
    pub fn window(&self, policy: &Policy) -> (i64, i64) {
        let first = self
            .onset
            .map_or(self.sampled_at, |o| o.min(self.sampled_at));
        (
            first - i64::from(policy.lookback_days) * 86_400,
            self.isolated_at,
        )
    }

    /// When the case's person became F0: `sampled_at`, or `onset` if earlier.
    pub fn f0_since(&self) -> i64 {
        self.onset
            .map_or(self.sampled_at, |o| o.min(self.sampled_at))
    }
}

/// A case as answered: the stored case, its window and how many contacts its standing trace has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseView {
    pub case: Case,
    pub from: i64,
    pub to: i64,
    pub f1: usize,
    pub f2: usize,
}

/// A registration request (`POST /v1/cases`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewCase {
    pub id: Option<String>,
    pub person: String,
    pub sampled_at: i64,
    pub onset: Option<i64>,
    pub isolated_at: Option<i64>,
    pub area: Option<String>,
    pub note: Option<String>,
}

/// A requested status change (`PATCH /v1/cases/{id}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseChange {
    /// active → recovered, `recovered_at = at` (default now).
    Recover { at: Option<i64> },
    /// active or recovered → discarded.
    Discard,
    /// Any other status asked for; always a conflict.
    Other(CaseStatus),
}

/// The id prefix of the cases one-person positive samples register (`sample:<sample id>`); a
/// client may not give a case such an id.
pub const SAMPLE_CASE_PREFIX: &str = "sample:";

/// Whether `id` is a valid case id: 1–80 bytes of `[A-Za-z0-9._:-]`.
pub fn is_valid_case_id(id: &str) -> bool {
    (1..=80).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Whether `id` is a valid area id (the venue id alphabet, 1–64 bytes).
pub fn is_valid_area_id(id: &str) -> bool {
    engine::is_valid_venue_id(id)
}

impl NewCase {
    /// Checks the fields of a manual registration at `now` (times within
    /// `[now - retention, now + 300]`).
    pub(crate) fn validate(&self, now: i64, retention_days: u32) -> Result<()> {
        if let Some(id) = &self.id {
            if !is_valid_case_id(id) {
                return Err(Error::Invalid(
                    "id must be 1-80 bytes of [A-Za-z0-9._:-]".into(),
                ));
            }
            // The server's own ids: the case a one-person positive registers is found by it.
            if id.starts_with(SAMPLE_CASE_PREFIX) {
                return Err(Error::Invalid(format!(
                    "ids starting with '{SAMPLE_CASE_PREFIX}' are the server's, for the cases \
                     positive samples register"
                )));
            }
        }
        if !engine::is_valid_person_id(&self.person) {
            return Err(Error::Invalid(
                "person must be 1-64 bytes of [A-Za-z0-9._:+-]".into(),
            ));
        }
        let oldest = now - i64::from(retention_days) * 86_400;
        let newest = now + 300;
        let in_bounds = |name: &str, t: i64| {
            if t < oldest {
                Err(Error::Invalid(format!(
                    "{name} is older than the retention period ({oldest})"
                )))
            } else if t > newest {
                Err(Error::Invalid(format!(
                    "{name} is more than 300 s in the future ({newest})"
                )))
            } else {
                Ok(())
            }
        };
        in_bounds("sampled_at", self.sampled_at)?;
        if let Some(onset) = self.onset {
            in_bounds("onset", onset)?;
        }
        if let Some(isolated) = self.isolated_at {
            in_bounds("isolated_at", isolated)?;
        }
        if let Some(area) = &self.area {
            if !is_valid_area_id(area) {
                return Err(Error::Invalid(
                    "area must be 1-64 bytes of [A-Za-z0-9._:-]".into(),
                ));
            }
        }
        if self.note.as_ref().is_some_and(|n| n.len() > MAX_NOTE_BYTES) {
            return Err(Error::Invalid(format!(
                "note must be at most {MAX_NOTE_BYTES} bytes"
            )));
        }
        Ok(())
    }

    /// Whether a stored case is what this request would have registered (an idempotent retry).
    pub(crate) fn matches(&self, case: &Case) -> bool {
        self.person == case.person
            && self.sampled_at == case.sampled_at
            && self.onset == case.onset
            && match self.isolated_at {
                Some(t) => t == case.isolated_at,
                None => !case.isolated_at_given,
            }
            && self.area == case.area
            && self.note == case.note
    }
}

/// Applies `change` to `case` at `now`: the new status and `recovered_at`, or `None` if the case
/// is already exactly there (a retry), or a conflict.
pub(crate) fn transition(
    case: &Case,
    change: CaseChange,
    now: i64,
) -> Result<Option<(CaseStatus, Option<i64>)>> {
    let conflict = |to: &str| {
        Error::Conflict(format!(
            "case {} is {}; it cannot become {to}",
            case.id,
            case.status.as_str()
        ))
    };
    match (case.status, change) {
        (CaseStatus::Active, CaseChange::Recover { at }) => {
            let at = at.unwrap_or(now);
            if at < case.sampled_at {
                return Err(Error::Invalid(format!(
                    "at must not be before the case's sampled_at ({})",
                    case.sampled_at
                )));
            }
            if at > now + 300 {
                return Err(Error::Invalid("at is more than 300 s in the future".into()));
            }
            Ok(Some((CaseStatus::Recovered, Some(at))))
        }
        (CaseStatus::Recovered, CaseChange::Recover { at })
            if at.is_none() || at == case.recovered_at =>
        {
            Ok(None)
        }
        (CaseStatus::Active | CaseStatus::Recovered, CaseChange::Discard) => {
            Ok(Some((CaseStatus::Discarded, case.recovered_at)))
        }
        (CaseStatus::Discarded, CaseChange::Discard) => Ok(None),
        (_, CaseChange::Recover { .. }) => Err(conflict("recovered")),
        (_, CaseChange::Other(s)) => Err(conflict(s.as_str())),
    }
}

/// Shared, cheaply cloned id.
pub(crate) type CaseId = Arc<str>;

#[cfg(test)]
mod tests {
    use super::*;

    fn case(status: CaseStatus) -> Case {
        Case {
            id: "K1".into(),
            person: "p".into(),
            sampled_at: 1000,
            onset: None,
            isolated_at: 2000,
            isolated_at_given: false,
            area: None,
            note: None,
            source: "manual".into(),
            status,
            registered_at: 2000,
            recovered_at: (status == CaseStatus::Recovered).then_some(3000),
        }
    }

    #[test]
    fn transitions_follow_the_contract() {
        use CaseStatus::*;
        let now = 5000;
        assert_eq!(
            transition(&case(Active), CaseChange::Recover { at: None }, now).ok(),
            Some(Some((Recovered, Some(now))))
        );
        assert_eq!(
            transition(&case(Active), CaseChange::Discard, now).ok(),
            Some(Some((Discarded, None)))
        );
        assert_eq!(
            transition(&case(Recovered), CaseChange::Discard, now).ok(),
            Some(Some((Discarded, Some(3000))))
        );
        // Retries of the same change change nothing.
        assert_eq!(
            transition(&case(Recovered), CaseChange::Recover { at: None }, now).ok(),
            Some(None)
        );
        assert_eq!(
            transition(
                &case(Recovered),
                CaseChange::Recover { at: Some(3000) },
                now
            )
            .ok(),
            Some(None)
        );
        assert_eq!(
            transition(&case(Discarded), CaseChange::Discard, now).ok(),
            Some(None)
        );
        // Everything else is a conflict.
        for (from, change) in [
            (Recovered, CaseChange::Recover { at: Some(4000) }),
            (Discarded, CaseChange::Recover { at: None }),
            (Active, CaseChange::Other(Active)),
            (Recovered, CaseChange::Other(Active)),
            (Discarded, CaseChange::Other(Active)),
        ] {
            assert!(
                matches!(
                    transition(&case(from), change, now),
                    Err(Error::Conflict(_))
                ),
                "{from:?} {change:?}"
            );
        }
        // A recovery before the sample is refused as bad input.
        assert!(matches!(
            transition(&case(Active), CaseChange::Recover { at: Some(999) }, now),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn window_starts_lookback_before_the_earlier_of_sample_and_onset() {
        let p = Policy::default();
        let mut c = case(CaseStatus::Active);
        assert_eq!(c.window(&p), (1000 - 2 * 86_400, 2000));
        c.onset = Some(500);
        assert_eq!(c.window(&p), (500 - 2 * 86_400, 2000));
        assert_eq!(c.f0_since(), 500);
        c.onset = Some(1500);
        assert_eq!(c.window(&p), (1000 - 2 * 86_400, 2000));
    }

    #[test]
    fn case_ids_follow_the_contract_alphabet() {
        assert!(is_valid_case_id("sample:TUBE-1.a_b"));
        assert!(is_valid_case_id(&"k".repeat(80)));
        assert!(!is_valid_case_id(&"k".repeat(81)));
        assert!(!is_valid_case_id(""));
        assert!(!is_valid_case_id("a+b"));
        assert!(!is_valid_case_id("a/b"));
    }
}
