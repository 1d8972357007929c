-- The start request's W3C `baggage` header, kept with the run and handed to
-- every attempt's worker. Same statement on SQLite and PostgreSQL.
ALTER TABLE weft_runs ADD COLUMN baggage TEXT;
