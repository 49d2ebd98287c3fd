//! In-scans counted per hour of their timestamp, kept as scans are stored and purged, so that
//! "check-ins per hour over the last day" (the portal's chart) costs a few map reads instead of
//! a walk over every venue's in-scans.
//!
//! The current hour counts only in-scans with `ts <= now`. A stored in-scan can be ahead of the
//! clock by the skew allowance (contract section 2), so in-scans stamped ahead of the clock when
//! stored are also kept by second until they are an hour old; the current hour subtracts those
//! still ahead. (The clock is taken not to go back by more than that hour.)

use std::collections::BTreeMap;

/// How long an in-scan stored ahead of the clock is kept by second after its time.
const AHEAD_KEPT_S: i64 = 3600;

#[derive(Debug, Default)]
pub(crate) struct HourlyIns {
    /// Hour number (`ts / 3600`) → stored in-scans with `ts` in it.
    by_hour: BTreeMap<u32, u64>,
    /// `ts` → in-scans stored while `ts` was ahead of the clock (until an hour past `ts`).
    ahead: BTreeMap<u32, u64>,
}

impl HourlyIns {
    /// Counts one stored in-scan at `ts`, stored when the clock read `now`.
    pub(crate) fn add(&mut self, ts: u32, now: i64) {
        *self.by_hour.entry(ts / 3600).or_default() += 1;
        if i64::from(ts) > now {
            *self.ahead.entry(ts).or_default() += 1;
        }
    }

    /// Forgets one purged in-scan at `ts`.
    pub(crate) fn remove(&mut self, ts: u32) {
        decrement(&mut self.by_hour, ts / 3600);
        decrement(&mut self.ahead, ts);
    }

    /// Drops the by-second entries an hour past their time (called by the ticker).
    pub(crate) fn forget_ahead_before(&mut self, now: i64) {
        let floor = now - AHEAD_KEPT_S;
        while let Some((&ts, _)) = self.ahead.first_key_value() {
            if i64::from(ts) >= floor {
                break;
            }
            self.ahead.pop_first();
        }
    }

    /// In-scans with `ts` in each of the `hours` whole hours before `now`'s hour and in that hour
    /// itself up to `now`, oldest first: `hours + 1` counts.
    pub(crate) fn per_hour(&self, now: i64, hours: u32) -> Vec<u64> {
        let current = now.div_euclid(3600);
        (0..=i64::from(hours))
            .map(|back| {
                let hour = current - i64::from(hours) + back;
                let Ok(h) = u32::try_from(hour) else { return 0 };
                let all = self.by_hour.get(&h).copied().unwrap_or(0);
                if hour != current {
                    return all;
                }
                let after_now = (now + 1).clamp(0, i64::from(u32::MAX)) as u32;
                let hour_end = u32::try_from((hour + 1) * 3600).unwrap_or(u32::MAX);
                let still_ahead: u64 = self.ahead.range(after_now..hour_end).map(|(_, n)| n).sum();
                all.saturating_sub(still_ahead)
            })
            .collect()
    }
}

fn decrement(map: &mut BTreeMap<u32, u64>, key: u32) {
    if let Some(n) = map.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            map.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_hour_counts_up_to_now() {
        let hour = 500_000u32;
        let start = i64::from(hour) * 3600;
        let mut h = HourlyIns::default();
        h.add(hour * 3600 + 10, start + 100);
        // Stored 200 s ahead of the clock: not counted until the clock reaches it.
        h.add(hour * 3600 + 300, start + 100);
        h.add(hour * 3600 - 1, start + 100);
        assert_eq!(h.per_hour(start + 100, 1), vec![1, 1]);
        assert_eq!(h.per_hour(start + 299, 1), vec![1, 1]);
        assert_eq!(h.per_hour(start + 300, 1), vec![1, 2]);
        // Next hour: the whole hour counts.
        assert_eq!(h.per_hour(start + 3600, 1), vec![2, 0]);
        h.forget_ahead_before(start + 3600 + 301);
        assert!(h.ahead.is_empty());
        assert_eq!(h.per_hour(start + 3600, 1), vec![2, 0]);
    }

    #[test]
    fn purged_scans_are_forgotten() {
        let mut h = HourlyIns::default();
        h.add(7200, 7000);
        h.add(7300, 7000);
        h.remove(7200);
        h.remove(7300);
        assert!(h.by_hour.is_empty() && h.ahead.is_empty());
        assert_eq!(h.per_hour(9000, 2), vec![0, 0, 0]);
    }
}
