-- The PostgreSQL peer's dose-record table (bench/peers/vaccinations.sh): the columns of
-- POST /v1/vaccinations, keyed as our server keys them, (person, dose number). The primary key is
-- the index a team would need to find a person's doses and to refuse a second record of the same
-- dose; COPY into it fails a whole batch on a duplicate instead of answering per row (accepted,
-- conflict) as our server does, and it checks no vaccine code, date or area: both favour the peer.
CREATE TABLE doses (
    person          text     NOT NULL,
    dose            smallint NOT NULL,
    vaccine         text     NOT NULL,
    administered_at bigint   NOT NULL,
    lot             text,
    site            text,
    area            text,
    PRIMARY KEY (person, dose)
);
