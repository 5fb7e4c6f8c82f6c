-- PL/Proxy sharding prototype (docs/scale-out.md, stage 2): what each shard
-- database adds to tokex so the router can drive it.  Run as a superuser in
-- each shard after CREATE EXTENSION tokex, with the shard's partition number
-- set first:  ALTER DATABASE <shard> SET tokex_shard.id = '<n>'.
-- A prototype: the router connects as a superuser and nothing here is
-- granted to anyone else.
CREATE SCHEMA tokex_shard;
REVOKE ALL ON SCHEMA tokex_shard FROM PUBLIC;

-- people live on their shard; agents on every shard (the router writes them RUN ON ALL)
CREATE FUNCTION tokex_shard.add_identity(id text, kind text) RETURNS boolean
LANGUAGE sql AS $$
  INSERT INTO tokex.identity (id, kind) VALUES (id, kind) ON CONFLICT DO NOTHING;
  SELECT true
$$;

CREATE FUNCTION tokex_shard.delegate(principal text, delegate text, scopes text[]) RETURNS bigint
LANGUAGE sql AS $$
  INSERT INTO tokex.delegation (principal, delegate, scopes) VALUES (principal, delegate, scopes)
  RETURNING id
$$;

CREATE FUNCTION tokex_shard.session_token(principal text, agent text) RETURNS text
LANGUAGE sql AS $$ SELECT tokex.start_session(principal, agent)->>'session_token' $$;

CREATE FUNCTION tokex_shard.actor_token(agent text) RETURNS text
LANGUAGE sql AS $$ SELECT tokex.identity_token(agent, interval '1 hour') $$;

-- this shard's published keys, with its partition number, for the router's kid map
CREATE FUNCTION tokex_shard.keys(OUT shard int, OUT kid text) RETURNS SETOF record
LANGUAGE sql AS $$
  SELECT current_setting('tokex_shard.id')::int, k->>'kid'
    FROM jsonb_array_elements(tokex.jwks()->'keys') k
$$;

-- A global revocation, idempotent: the router's time, not this shard's, so a
-- retry finds nothing to change and the revocation trigger logs it once.
-- false: this shard does not know the identity.
CREATE FUNCTION tokex_shard.revoke_identity_at(id text, reason text, at timestamptz) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
  UPDATE tokex.identity i
     SET status = CASE WHEN i.kind = 'human' THEN 'offboarded' ELSE 'decommissioned' END,
         status_reason = reason, tokens_valid_after = at
   WHERE i.id = revoke_identity_at.id
     AND (i.status = 'active' OR i.tokens_valid_after IS DISTINCT FROM at);
  RETURN EXISTS (SELECT 1 FROM tokex.identity i WHERE i.id = revoke_identity_at.id);
END
$$;

-- for tests and the witness: how many audit rows and revocation records name someone here
CREATE FUNCTION tokex_shard.counts(who text, OUT shard int, OUT audit_rows bigint, OUT revocations bigint)
LANGUAGE sql AS $$
  SELECT current_setting('tokex_shard.id')::int,
         (SELECT count(*) FROM tokex.audit a WHERE a.subject = who),
         (SELECT count(*) FROM tokex.revocation r WHERE r.kind = 'identity' AND r.target = who)
$$;
