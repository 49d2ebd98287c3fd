-- Run after `COPY visits FROM ...`: the indexes of the trace query, statistics, the visit bound.
-- btree (the default, PG_INDEX=btree): (person, vstart) finds the case's visits; (venue, vstart,
-- vend) finds the visits overlapping one case visit as a range scan on vstart, bounded below by
-- visit_bounds.max_len, with vend checked in the index (index-only scan after VACUUM).
CREATE INDEX visits_person_start ON visits (person, vstart) INCLUDE (venue, vend);
CREATE INDEX visits_venue_start_end ON visits (venue, vstart, vend) INCLUDE (person);
TRUNCATE visit_bounds;
INSERT INTO visit_bounds SELECT coalesce(max(vend - vstart), 0) FROM visits;
VACUUM (ANALYZE) visits;
