-- PG_INDEX=gist: the alternative index design, a GiST index over (venue, [vstart, vend)) with
-- btree_gist, queried with the range overlap operator && (trace_depth1_gist.sql).
CREATE EXTENSION IF NOT EXISTS btree_gist;
CREATE INDEX visits_person_start ON visits (person, vstart) INCLUDE (venue, vend);
CREATE INDEX visits_venue_range ON visits USING gist (venue, int8range(vstart, vend));
TRUNCATE visit_bounds;
INSERT INTO visit_bounds SELECT coalesce(max(vend - vstart), 0) FROM visits;
VACUUM (ANALYZE) visits;
