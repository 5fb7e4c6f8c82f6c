------------------------------------------------------------------------
-- Privileges: nothing is executable by PUBLIC unless granted here.
------------------------------------------------------------------------
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA tokex FROM PUBLIC;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA tokex_api FROM PUBLIC;

-- the JWKS is public, but over HTTP it is served by tokex_api.jwks()
GRANT EXECUTE ON FUNCTION tokex.jwks() TO tokex_admin, tokex_app, tokex_auditor;

GRANT EXECUTE ON FUNCTION tokex.jwt_decode(text) TO tokex_admin, tokex_app, tokex_auditor;

GRANT EXECUTE ON FUNCTION tokex.jwt_verify(text, text) TO tokex_admin, tokex_app;

GRANT EXECUTE ON FUNCTION tokex.jwt_sign(jsonb, text), tokex.create_key(text),
  tokex.activate_key(text), tokex.retire_key(text), tokex.revoke_key(text),
  tokex.trust_issuer(text, jsonb, text) TO tokex_admin;

GRANT EXECUTE ON FUNCTION tokex.exchange(text, text, text, text, text, text, text, text, text, jsonb, jsonb, text)
  TO tokex_app, tokex_admin;

GRANT EXECUTE ON FUNCTION tokex.decide(text[], text[], timestamptz[], text, text, text[], text[], text, text, bytea[], uuid,
                                        uuid[], text[], text[], timestamptz)
  TO tokex_admin;

GRANT SELECT, INSERT, UPDATE, DELETE ON tokex.identity, tokex.delegation, tokex.resource,
  tokex.policy TO tokex_admin;

-- admins manage clients but never read their secret hashes
GRANT SELECT (client_id, identity, grant_types, audiences, status, jwks, description, created_at),
  INSERT, UPDATE, DELETE ON tokex.client TO tokex_admin;

GRANT USAGE ON SEQUENCE tokex.delegation_id_seq, tokex.policy_id_seq TO tokex_admin;

GRANT SELECT ON tokex.audit TO tokex_auditor, tokex_admin;

GRANT EXECUTE ON FUNCTION tokex.introspect(text), tokex.record_use(text, text, text),
  tokex.start_session(text, text, text[], interval) TO tokex_app, tokex_admin;

GRANT EXECUTE ON FUNCTION tokex.identity_token(text, interval), tokex.revoke_session(uuid, text),
  tokex.revoke_identity(text, text), tokex.revoke_delegation(text, text, text),
  tokex.revoke_token(text, text, text) TO tokex_admin;

GRANT SELECT ON tokex.audit_trail, tokex.revocation TO tokex_auditor, tokex_admin;

GRANT SELECT, UPDATE ON tokex.session TO tokex_admin;

GRANT SELECT, INSERT ON tokex.revoked_token TO tokex_admin;

GRANT EXECUTE ON FUNCTION tokex.register_client(text, text, text[], text[], jsonb) TO tokex_admin;

-- The HTTP face: grant tokex_web to PostgREST's anonymous role.  It reaches
-- exactly the tokex_api functions and nothing else in tokex.
GRANT USAGE ON SCHEMA tokex_api TO tokex_web;

GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA tokex_api TO tokex_web;

GRANT SELECT (introspect_any) ON tokex.client TO tokex_admin;

-- API keys: made and revoked through the functions (the key is shown once);
-- administrators list them and may revoke or expire them by plain UPDATE
GRANT EXECUTE ON FUNCTION tokex.create_api_key(text, timestamptz, text), tokex.revoke_api_key(text, text)
  TO tokex_admin;

-- (no DELETE: a revoked key's row is what keeps the tokens obtained with it dead)
GRANT SELECT, UPDATE (label, expires_at, revoked_at, revoke_reason) ON tokex.api_key TO tokex_admin;

GRANT SELECT ON tokex.api_key TO tokex_auditor;

-- token types: registered by the administrator whose role the verifier runs as
GRANT EXECUTE ON FUNCTION tokex.register_token_type(text, regprocedure, text) TO tokex_admin;

GRANT SELECT, INSERT, UPDATE, DELETE ON tokex.token_type TO tokex_admin;

GRANT SELECT ON tokex.token_type TO tokex_auditor;

-- The resource side: a resource API's roles (grant them tokex_resource)
-- authenticate, and its row-level security reads the accessors, which
-- return only this session's own authenticated claims.
GRANT EXECUTE ON FUNCTION tokex.authenticate(text, text, text, text), tokex.on_behalf_of(), tokex.current_actor(),
  tokex.actor_chain(), tokex.has_scope(text), tokex.token_claims() TO tokex_resource, tokex_admin;

GRANT EXECUTE ON FUNCTION tokex.heartbeat() TO tokex_admin;

GRANT SELECT ON tokex.heartbeat TO tokex_admin, tokex_auditor;

-- Shared Signals (75_ssf.sql): admins manage streams and read events; a
-- receiver inside the database polls as a role mapped to its client.
GRANT SELECT, INSERT, UPDATE, DELETE ON tokex.ssf_stream TO tokex_admin;

GRANT SELECT ON tokex.ssf_event, tokex.ssf_token TO tokex_admin;

GRANT EXECUTE ON FUNCTION tokex.ssf_poll(uuid, int, uuid[], jsonb) TO tokex_app, tokex_admin;

GRANT EXECUTE ON FUNCTION tokex.ssf_prune(uuid) TO tokex_admin;

-- the audit proof (26_audit_proof.sql): auditors seal and verify; the
-- audit keys' public halves are for anyone who checks a head; the rows'
-- canonical text carries the token hashes auditors do not read, so the
-- export for an outside verifier is the administrators'
GRANT EXECUTE ON FUNCTION tokex.seal_audit(), tokex.audit_verify(bigint, bigint),
  tokex.audit_verify_head(text), tokex.audit_head(),
  tokex.audit_export(timestamptz) TO tokex_auditor, tokex_admin;

GRANT EXECUTE ON FUNCTION tokex.audit_rows(bigint, bigint) TO tokex_admin;

GRANT EXECUTE ON FUNCTION tokex.audit_keys() TO tokex_auditor, tokex_admin, tokex_app;

-- (tokex.apply_audit_retention: the owner's alone, as the setting tokex.audit_retention is
-- a superuser's: dropping evidence is not an administrator's call)
GRANT EXECUTE ON FUNCTION tokex.rotate_audit_key(text) TO tokex_admin;

-- making partitions ahead of time drops nothing
GRANT EXECUTE ON FUNCTION tokex.audit_partition_ahead(boolean) TO tokex_admin;

GRANT SELECT ON tokex.audit_block TO tokex_auditor, tokex_admin;
