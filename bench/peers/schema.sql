-- The PostgreSQL peer's tables (bench/peers). The database is created with initdb --locale=C, so
-- text compares in byte order, as the contract orders person and venue ids.

-- (a) Durable ingestion: one row per scan, as a team would store them. No deduplication and no
-- foreign key to a venues table: both would cost PostgreSQL extra work per row that our server
-- does (exact duplicates are stored once, unknown venues are rejected), so leaving them out
-- favours the peer.
CREATE TABLE scans (
    person text   NOT NULL,
    venue  text   NOT NULL,
    ts     bigint NOT NULL,
    action text   NOT NULL CHECK (action IN ('in', 'out'))
);
CREATE INDEX scans_person_ts ON scans (person, ts);
CREATE INDEX scans_venue_ts  ON scans (venue, ts);

-- (b) Contact trace: the visits our engine derives (contract section 3), exported by
-- `export_visits` and loaded with COPY; indexes are built after the load (see load_visits.sql).
CREATE TABLE visits (
    person text   NOT NULL,
    venue  text   NOT NULL,
    vstart bigint NOT NULL,
    vend   bigint NOT NULL
);

-- Longest visit, so that an overlap search can bound `vstart` from below and stay an index range
-- scan (q.vend > c.s and q.vend - q.vstart <= max_len imply q.vstart > c.s - max_len).
CREATE TABLE visit_bounds (max_len bigint NOT NULL);
