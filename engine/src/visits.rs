//! Visit derivation: the contract's section 3 algorithm, exactly, over one person's scans.
//!
//! A person's scans are kept as sorted `u64` keys (`ts << 32 | out << 31 | venue`), which orders
//! them by `(ts, action)` with `"in"` first. The contract then orders equal `(ts, action)` by venue
//! id *bytes*, not by our venue numbers, so runs of equal `(ts, action)` are re-sorted by name
//! here before they are fed to the [`Machine`].

/// Bit of a person key that marks an `"out"` scan.
pub(crate) const KEY_OUT: u64 = 1 << 31;
const VENUE_MASK: u64 = (1 << 31) - 1;

/// Builds a person-index key.
#[inline]
pub(crate) fn person_key(ts: u32, venue: u32, out: bool) -> u64 {
    ((ts as u64) << 32) | if out { KEY_OUT } else { 0 } | (venue as u64 & VENUE_MASK)
}

#[inline]
pub(crate) fn key_ts(key: u64) -> u32 {
    (key >> 32) as u32
}

#[inline]
pub(crate) fn key_venue(key: u64) -> u32 {
    (key & VENUE_MASK) as u32
}

#[inline]
pub(crate) fn key_is_out(key: u64) -> bool {
    key & KEY_OUT != 0
}

/// A derived visit, with the venue as a registry number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawVisit {
    pub venue: u32,
    pub start: i64,
    pub end: i64,
}

/// The visit open at some point of the algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Open {
    pub venue: u32,
    pub start: i64,
    pub deadline: i64,
}

/// The contract's state machine: `open` and the step for one scan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Machine {
    pub open: Option<Open>,
}

impl Machine {
    /// Feeds one scan (in the contract's order); `stay` is `stay(venue)`.
    #[inline]
    pub(crate) fn step(
        &mut self,
        ts: i64,
        venue: u32,
        out: bool,
        stay: i64,
        emit: &mut impl FnMut(RawVisit),
    ) {
        if let Some(o) = self.open {
            if ts >= o.deadline {
                emit(RawVisit {
                    venue: o.venue,
                    start: o.start,
                    end: o.deadline,
                });
                self.open = None;
            }
        }
        if !out {
            match &mut self.open {
                Some(o) if o.venue == venue => o.deadline = ts + stay,
                Some(o) => {
                    emit(RawVisit {
                        venue: o.venue,
                        start: o.start,
                        end: ts,
                    });
                    self.open = Some(Open {
                        venue,
                        start: ts,
                        deadline: ts + stay,
                    });
                }
                None => {
                    self.open = Some(Open {
                        venue,
                        start: ts,
                        deadline: ts + stay,
                    })
                }
            }
        } else if let Some(o) = self.open {
            if o.venue == venue {
                emit(RawVisit {
                    venue,
                    start: o.start,
                    end: ts,
                });
                self.open = None;
            }
        }
    }

    /// Closes the open visit at its deadline (end of the scans).
    pub(crate) fn finish(self, emit: &mut impl FnMut(RawVisit)) {
        if let Some(o) = self.open {
            emit(RawVisit {
                venue: o.venue,
                start: o.start,
                end: o.deadline,
            });
        }
    }
}

/// Calls `f(key)` for each key in the contract's order: the keys' own order, except that runs of
/// equal `(ts, action)` are ordered by venue id bytes (`name`).
pub(crate) fn for_each_in_contract_order<'n>(
    keys: &[u64],
    name: impl Fn(u32) -> &'n str,
    mut f: impl FnMut(u64),
) {
    let mut i = 0;
    while i < keys.len() {
        let group = keys[i] >> 31;
        let mut j = i + 1;
        while j < keys.len() && keys[j] >> 31 == group {
            j += 1;
        }
        if j - i == 1 {
            f(keys[i]);
        } else {
            let mut run: Vec<u64> = keys[i..j].to_vec();
            run.sort_by(|a, b| name(key_venue(*a)).cmp(name(key_venue(*b))));
            for k in run {
                f(k);
            }
        }
        i = j;
    }
}

/// Derives every visit of a person from their sorted keys.
pub(crate) fn derive<'n>(
    keys: &[u64],
    stay: impl Fn(u32) -> i64,
    name: impl Fn(u32) -> &'n str,
    mut emit: impl FnMut(RawVisit),
) {
    let mut m = Machine::default();
    for_each_in_contract_order(keys, name, |k| {
        let v = key_venue(k);
        m.step(key_ts(k) as i64, v, key_is_out(k), stay(v), &mut emit);
    });
    m.finish(&mut emit);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visits(scans: &[(u32, u32, bool)], names: &[&'static str]) -> Vec<(u32, i64, i64)> {
        let mut keys: Vec<u64> = scans.iter().map(|&(t, v, o)| person_key(t, v, o)).collect();
        keys.sort_unstable();
        let mut out = Vec::new();
        derive(
            &keys,
            |_| 100,
            |v| names[v as usize],
            |r| out.push((r.venue, r.start, r.end)),
        );
        out
    }

    #[test]
    fn rescan_extends_and_auto_checkout_at_deadline() {
        assert_eq!(
            visits(&[(10, 0, false), (50, 0, false)], &["a"]),
            vec![(0, 10, 150)]
        );
        assert_eq!(
            visits(&[(10, 0, false), (200, 0, false)], &["a"]),
            vec![(0, 10, 110), (0, 200, 300)]
        );
    }

    #[test]
    fn implicit_and_explicit_checkout() {
        assert_eq!(
            visits(
                &[(10, 0, false), (20, 1, false), (30, 1, true)],
                &["a", "b"]
            ),
            vec![(0, 10, 20), (1, 20, 30)]
        );
        // An "out" at another venue is ignored.
        assert_eq!(
            visits(&[(10, 0, false), (20, 1, true)], &["a", "b"]),
            vec![(0, 10, 110)]
        );
        // In before out at equal ts, whatever the arrival order: a zero-length visit.
        assert_eq!(
            visits(&[(10, 0, true), (10, 0, false)], &["a"]),
            vec![(0, 10, 10)]
        );
    }

    #[test]
    fn equal_ts_ties_follow_venue_bytes_not_numbers() {
        // Venue 0 is "z", venue 1 is "a": at equal ts, "a" (1) comes first, then "z" (0).
        assert_eq!(
            visits(&[(10, 0, false), (10, 1, false)], &["z", "a"]),
            vec![(1, 10, 10), (0, 10, 110)]
        );
    }
}
