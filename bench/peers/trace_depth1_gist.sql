-- PG_INDEX=gist variant of trace_depth1.sql: the overlap search uses the GiST index over
-- (venue, int8range(vstart, vend)). Contract section 5, depth 1, same JSON as POST /v1/trace
-- (visits and f1; f2 is empty at depth 1). Parameters: %(person)s, %(from)s, %(to)s,
-- %(min_overlap)s. The visits table holds exactly the visits our engine derives (export_visits).
WITH c AS (                      -- case visits clipped to [from, to], zero-length ones dropped
    SELECT venue,
           greatest(vstart, %(from)s::bigint) AS s,
           least(vend, %(to)s::bigint)        AS e
    FROM visits
    WHERE person = %(person)s
      AND vstart < %(to)s::bigint AND vend > %(from)s::bigint
      AND greatest(vstart, %(from)s::bigint) < least(vend, %(to)s::bigint)
),
pairs AS (                       -- (case visit, other visit) at the same venue, positive overlap
    SELECT q.person, q.venue,
           least(c.e, q.vend) - greatest(c.s, q.vstart) AS ov,
           greatest(c.s, q.vstart)                      AS fc
    FROM c
    JOIN visits q
      ON q.venue = c.venue
     AND int8range(q.vstart, q.vend) && int8range(c.s, c.e)
    WHERE q.person <> %(person)s AND q.vstart < q.vend
),
f1 AS (                          -- exposure summed per contact, threshold max(min_overlap_s, 1)
    SELECT person,
           sum(ov)::bigint                         AS exposure_s,
           min(fc)                                 AS first_contact,
           array_agg(DISTINCT venue ORDER BY venue) AS venues
    FROM pairs
    GROUP BY person
    HAVING sum(ov) >= greatest(%(min_overlap)s::bigint, 1)
)
SELECT json_build_object(
    'visits', (SELECT coalesce(json_agg(json_build_object('venue', venue, 'start', s, 'end', e)
                                        ORDER BY s), '[]'::json) FROM c),
    'f1', (SELECT coalesce(json_agg(json_build_object('person', person, 'exposure_s', exposure_s,
                                                      'first_contact', first_contact,
                                                      'venues', venues)
                                    ORDER BY exposure_s DESC, person), '[]'::json) FROM f1)
)::text
