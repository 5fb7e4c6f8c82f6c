------------------------------------------------------------------------
-- Views for auditors: plain SELECT answers who, on whose behalf, with what
-- privilege, and with what result.
------------------------------------------------------------------------

-- What an auditor reads: who, on whose behalf, with what privilege, result.
CREATE VIEW tokex.audit AS
SELECT at, exchange_id, operation, decision, error, reason, subject, actor, actor_chain, client_id,
       audience, requested_scope, scope, jti, expires_at, delegation_ids, policy_ids,
       subject_issuer, actor_issuer, subject_sid, issued_token_type, db_user
  FROM tokex.audit_event;

-- One row per downstream use, joined to the exchange that minted its token.
CREATE VIEW tokex.audit_trail AS
SELECT u.at            AS used_at,
       u.action,
       u.outcome,
       a.subject       AS on_behalf_of,
       a.actor,
       a.actor_chain,
       a.audience,
       a.scope,
       a.client_id,
       a.delegation_ids,
       a.policy_ids,
       a.exchange_id,
       a.at            AS exchanged_at,
       a.expires_at,
       u.db_user       AS recorded_by
  FROM tokex.token_use u
  JOIN tokex.audit_event a USING (exchange_id);
