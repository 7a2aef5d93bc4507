-- virmo-server schema, version 2 (PostgreSQL): job cancellation; time indexes for pruning by age.
ALTER TABLE jobs ADD COLUMN cancel_requested_at BIGINT;
CREATE INDEX alerts_by_time ON alerts (received_at);
CREATE INDEX events_by_time ON events (at);
CREATE INDEX responses_by_time ON responses (at);
