------------------------------------------------------------------------
-- Hot standbys (src/standby.c): the heartbeat that lets a standby know how
-- far behind the primary it is (tokex.max_replica_lag), and revocations
-- that wait for the standbys (tokex.revocation_sync).
------------------------------------------------------------------------

-- One row: the primary's clock at its last heartbeat.  A standby compares
-- the row it has replayed with its own clock, so the hosts' clocks must
-- agree (NTP) to well within tokex.max_replica_lag.
CREATE TABLE tokex.heartbeat (
  id boolean PRIMARY KEY DEFAULT true CHECK (id),
  at timestamptz NOT NULL
);

-- Called every tokex.heartbeat_interval by the heartbeat worker of each
-- database in tokex.heartbeat_database (or by a scheduler such as pg_cron).
CREATE FUNCTION tokex.heartbeat() RETURNS timestamptz
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
  INSERT INTO tokex.heartbeat (id, at) VALUES (true, pg_catalog.clock_timestamp())
  ON CONFLICT (id) DO UPDATE SET at = EXCLUDED.at
  RETURNING at
$$;

-- With tokex.revocation_sync on, the revoking transaction commits with
-- synchronous_commit = remote_apply; returns the setting.
CREATE FUNCTION tokex._revocation_sync() RETURNS boolean
LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'tokex_revocation_sync';
