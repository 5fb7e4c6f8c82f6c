------------------------------------------------------------------------
-- Shared Signals (OpenID SSF 1.0): tokex is a transmitter, each resource
-- a receiver.  Every revocation becomes, in its own transaction, one CAEP
-- Security Event Token (RFC 8417) per receiver that holds live tokens it
-- kills; receivers poll for them (RFC 8936) through PostgREST.
--
--   audit_event --(statement trigger)--> ssf_token   live tokens of receivers
--   revocation, policy --(row triggers)-> ssf_event   one row per (receiver, revocation)
--   tokex_api.ssf_poll                   signs pending events, takes acks
--
-- Events are stored as claims and signed when delivered: a revocation costs
-- no signature however many receivers it reaches, a retransmission is
-- signed by the key active then (one a receiver can fetch from the JWKS,
-- even after the key active at the revocation was rotated out or revoked),
-- and an event is a committed row, never lost by a crash.
------------------------------------------------------------------------

-- A receiver: the resource (audience) whose tokens it validates.
CREATE TABLE tokex.ssf_stream (
  stream_id        uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
  audience         text NOT NULL UNIQUE
                   REFERENCES tokex.resource (audience) ON UPDATE CASCADE ON DELETE CASCADE,
  -- the SETs' aud; NULL: the audience (what the receiver's tokens carry)
  aud              text[] CHECK (pg_catalog.cardinality(aud) > 0 AND pg_catalog.array_position(aud, NULL) IS NULL),
  delivery_method  text NOT NULL DEFAULT 'urn:ietf:rfc:8936' CHECK (delivery_method IN ('urn:ietf:rfc:8936')),
  events_requested text[] NOT NULL
                   DEFAULT '{https://schemas.openid.net/secevent/caep/event-type/session-revoked}'
                   CHECK (pg_catalog.array_position(events_requested, NULL) IS NULL),
  -- enabled: events made and delivered; paused: made and held; disabled: none made
  status           text NOT NULL DEFAULT 'enabled' CHECK (status IN ('enabled', 'paused', 'disabled')),
  status_reason    text,
  -- the clients (tokex.client) that may poll and manage this stream
  clients          text[] NOT NULL DEFAULT '{}' CHECK (pg_catalog.array_position(clients, NULL) IS NULL),
  description      text,
  created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
  updated_at       timestamptz NOT NULL DEFAULT pg_catalog.now()
);

-- Live tokens that receivers hold: the granted audit rows of stream
-- audiences, copied as the audit writer commits them (tokex._ssf_track), so
-- that a revocation finds the tokens it kills by index, not by scanning
-- the audit.  A row leaves when its token expires or is named in an event.
CREATE TABLE tokex.ssf_token (
  jti            uuid PRIMARY KEY,
  stream_id      uuid NOT NULL REFERENCES tokex.ssf_stream (stream_id) ON DELETE CASCADE,
  issued_at      timestamptz NOT NULL,
  expires_at     timestamptz NOT NULL,
  subject        text,
  actor          text,
  actor_chain    text[],
  client_id      text,
  scope          text[],
  sid            text,
  delegation_ids bigint[],
  policy_ids     bigint[],
  kid            text          -- the key active when the audit writer committed it
);

CREATE INDEX ssf_token_stream ON tokex.ssf_token (stream_id);

CREATE INDEX ssf_token_subject ON tokex.ssf_token (subject);

CREATE INDEX ssf_token_actors ON tokex.ssf_token USING gin (actor_chain);

CREATE INDEX ssf_token_sid ON tokex.ssf_token (sid) WHERE sid IS NOT NULL;

CREATE INDEX ssf_token_delegations ON tokex.ssf_token USING gin (delegation_ids);

CREATE INDEX ssf_token_expiry ON tokex.ssf_token (expires_at);

-- One SET per (receiver, revocation), in the order made (id).  claims are
-- the SET's claims but iss, jti and the event's list of tokens (jtis), which
-- are added when it is signed at delivery (tokex._ssf_set_claims): a
-- revocation of 10 000 tokens stores an array, not 10 000 JSON objects.
CREATE TABLE tokex.ssf_event (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  jti           uuid NOT NULL UNIQUE DEFAULT pg_catalog.gen_random_uuid(),
  stream_id     uuid NOT NULL REFERENCES tokex.ssf_stream (stream_id) ON DELETE CASCADE,
  revocation_id bigint,         -- NULL: a policy change
  created_at    timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
  claims        jsonb NOT NULL,
  jtis          uuid[] NOT NULL,  -- the tokens it names, in the order issued
  -- the latest exp of the tokens it names: after it, there is nothing to drop
  expires_at    timestamptz NOT NULL,
  delivered_at  timestamptz,
  acked_at      timestamptz,
  -- RFC 8936 setErrs: the receiver's {"err": ..., "description": ...}
  set_error     jsonb
);

CREATE INDEX ssf_event_pending ON tokex.ssf_event (stream_id, id) WHERE acked_at IS NULL;

CREATE INDEX ssf_event_acked ON tokex.ssf_event (acked_at) WHERE acked_at IS NOT NULL;

-- ssf_token is not dumped: it is derived from the audit, and a restored
-- stream rebuilds it (tokex._ssf_stream_backfill)
SELECT pg_catalog.pg_extension_config_dump('tokex.ssf_stream', '');

SELECT pg_catalog.pg_extension_config_dump('tokex.ssf_event', '');

SELECT pg_catalog.pg_extension_config_dump('tokex.ssf_event_id_seq', '');

CREATE FUNCTION tokex._ssf_stream_touch() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, tokex, pg_temp AS $$
BEGIN
  NEW.updated_at := pg_catalog.now();
  RETURN NEW;
END
$$;

CREATE TRIGGER ssf_stream_touch BEFORE UPDATE ON tokex.ssf_stream
  FOR EACH ROW EXECUTE FUNCTION tokex._ssf_stream_touch();

-- A stream starts with the live tokens already issued for its audience (a
-- one-time read of the audit).
CREATE FUNCTION tokex._ssf_stream_backfill() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
BEGIN
  INSERT INTO tokex.ssf_token (jti, stream_id, issued_at, expires_at, subject, actor, actor_chain, client_id,
                               scope, sid, delegation_ids, policy_ids)
  SELECT a.jti, NEW.stream_id, a.at, a.expires_at, a.subject, a.actor, a.actor_chain, a.client_id,
         a.scope, a.subject_sid, a.delegation_ids, a.policy_ids
    FROM tokex.audit_event a
   WHERE a.audience OPERATOR(pg_catalog.=) NEW.audience AND a.decision OPERATOR(pg_catalog.=) 'granted'
     AND a.jti IS NOT NULL AND a.expires_at OPERATOR(pg_catalog.>) pg_catalog.clock_timestamp()
  ON CONFLICT (jti) DO NOTHING;
  RETURN NULL;
END
$$;

CREATE TRIGGER ssf_stream_backfill AFTER INSERT ON tokex.ssf_stream
  FOR EACH ROW EXECUTE FUNCTION tokex._ssf_stream_backfill();

-- An event inserted from outside a revocation (pg_restore, which loads a
-- stream, and so its backfill, before its events): the tokens it names
-- are no longer live for it.
CREATE FUNCTION tokex._ssf_event_named() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
BEGIN
  DELETE FROM tokex.ssf_token t WHERE t.jti OPERATOR(pg_catalog.=) ANY (NEW.jtis);
  RETURN NULL;
END
$$;

CREATE TRIGGER ssf_event_named AFTER INSERT ON tokex.ssf_event
  FOR EACH ROW WHEN (pg_catalog.pg_trigger_depth() = 0) EXECUTE FUNCTION tokex._ssf_event_named();

-- Runs in the audit writer's transaction, once per batch of rows: what it
-- adds to issuing a token is one join against ssf_stream per batch, and an
-- insert only for tokens of a stream's audience.  It must not fail (a
-- failure would refuse the batch's tokens): ON CONFLICT, no casts, and a
-- stream deleted while the batch was being written is just not tracked
-- (the second attempt no longer sees it).
CREATE FUNCTION tokex._ssf_track() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
BEGIN
  -- no stream at all (the common case): no subtransaction, no join
  IF NOT EXISTS (SELECT 1 FROM tokex.ssf_stream) THEN
    RETURN NULL;
  END IF;
  FOR attempt IN 1..2 LOOP
    BEGIN
      INSERT INTO tokex.ssf_token (jti, stream_id, issued_at, expires_at, subject, actor, actor_chain, client_id,
                                   scope, sid, delegation_ids, policy_ids, kid)
      SELECT n.jti, s.stream_id, n.at, n.expires_at, n.subject, n.actor, n.actor_chain, n.client_id,
             n.scope, n.subject_sid, n.delegation_ids, n.policy_ids,
             (SELECT k.kid FROM tokex.key k WHERE k.status OPERATOR(pg_catalog.=) 'active')
        FROM ssf_new_rows n JOIN tokex.ssf_stream s ON s.audience OPERATOR(pg_catalog.=) n.audience
       WHERE n.decision OPERATOR(pg_catalog.=) 'granted' AND n.jti IS NOT NULL
         AND n.expires_at OPERATOR(pg_catalog.>) pg_catalog.clock_timestamp()
      ON CONFLICT (jti) DO NOTHING;
      RETURN NULL;
    EXCEPTION WHEN foreign_key_violation THEN
      IF attempt OPERATOR(pg_catalog.=) 2 THEN
        RAISE WARNING 'tokex: tokens of a stream deleted meanwhile are not tracked';
      END IF;
    END;
  END LOOP;
  RETURN NULL;
END
$$;

CREATE TRIGGER audit_event_ssf AFTER INSERT ON tokex.audit_event
  REFERENCING NEW TABLE AS ssf_new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION tokex._ssf_track();

-- Does policy row p match the exchange that minted token t (for audience,
-- its subject and actor being of these kinds), at time at?  The matching of
-- tokex._decide's policy_here/policy, on what the audit row recorded.  No
-- SET search_path, no subquery, nothing volatile (every name is qualified),
-- so that the planner inlines it into the scan of the live tokens that a
-- policy change makes.
CREATE FUNCTION tokex._ssf_policy_matches(p tokex.policy, t tokex.ssf_token, audience text,
                                          subject_kind text, actor_kind text, at timestamptz) RETURNS boolean
LANGUAGE sql STABLE AS $$
  SELECT (p.subject IS NULL OR p.subject OPERATOR(pg_catalog.=) t.subject)
     AND (p.subject_kind IS NULL OR p.subject_kind OPERATOR(pg_catalog.=) subject_kind)
     AND (p.actor IS NULL OR p.actor OPERATOR(pg_catalog.=) t.actor)
     AND (p.actor_kind IS NULL OR p.actor_kind OPERATOR(pg_catalog.=) actor_kind)
     AND (p.audience IS NULL OR p.audience OPERATOR(pg_catalog.=) audience)
     AND (p.client_id IS NULL OR p.client_id OPERATOR(pg_catalog.=) t.client_id)
     AND (p.max_depth IS NULL
          OR COALESCE(pg_catalog.cardinality(t.actor_chain), 0) OPERATOR(pg_catalog.<=) p.max_depth)
     AND (p.valid IS NULL OR p.valid OPERATOR(pg_catalog.@>) at)
$$;

-- The live tokens of every stream that revocation rev kills.  One branch
-- per kind of tokex.revocation; a kind without a branch names no token.
-- A new kind (an API key, say) is one more WHEN here, one in
-- tokex._ssf_subject, and a trigger that logs it in tokex.revocation.
CREATE FUNCTION tokex._ssf_affected(rev tokex.revocation) RETURNS SETOF tokex.ssf_token
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  t0 timestamptz := pg_catalog.clock_timestamp();
BEGIN
  CASE rev.kind
    WHEN 'identity' THEN
      -- the identity in any position of the chain; what it stopped: all its
      -- tokens when it is no longer active, else those issued before
      -- tokens_valid_after
      RETURN QUERY
        SELECT t.* FROM tokex.ssf_token t, tokex.identity i
         WHERE i.id OPERATOR(pg_catalog.=) rev.target
           AND (t.subject OPERATOR(pg_catalog.=) rev.target
                OR t.actor_chain OPERATOR(pg_catalog.@>) ARRAY[rev.target])
           AND (i.status OPERATOR(pg_catalog.<>) 'active'
                OR t.issued_at OPERATOR(pg_catalog.<) i.tokens_valid_after);
    WHEN 'delegation' THEN
      RETURN QUERY
        SELECT t.* FROM tokex.ssf_token t
         WHERE t.delegation_ids OPERATOR(pg_catalog.@>) ARRAY[rev.target::bigint];
    WHEN 'session' THEN
      RETURN QUERY
        SELECT t.* FROM tokex.ssf_token t WHERE t.sid OPERATOR(pg_catalog.=) rev.target;
    WHEN 'token' THEN
      -- a jti of tokex's own (another issuer's tokens are no receiver's here)
      RETURN QUERY
        SELECT t.* FROM tokex.ssf_token t
         WHERE rev.target ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
           AND t.jti OPERATOR(pg_catalog.=) rev.target::uuid
           AND EXISTS (SELECT 1 FROM tokex.revoked_token r
                        WHERE r.key OPERATOR(pg_catalog.=) tokex._jti_key(tokex._setting('issuer'), rev.target));
    WHEN 'key' THEN
      -- the audit does not record which key signed a token: the key active
      -- when the audit writer committed it, or a token issued while the key
      -- was active (one second either side, for a backend that had not yet
      -- seen a rotation)
      RETURN QUERY
        SELECT t.* FROM tokex.ssf_token t, tokex.key k
         WHERE k.kid OPERATOR(pg_catalog.=) rev.target
           AND (t.kid OPERATOR(pg_catalog.=) rev.target
                OR (t.issued_at OPERATOR(pg_catalog.>=) (k.activated_at OPERATOR(pg_catalog.-) interval '1 second')
                    AND t.issued_at OPERATOR(pg_catalog.<=)
                        (COALESCE(k.retired_at, k.revoked_at, t0) OPERATOR(pg_catalog.+) interval '1 second')));
    WHEN 'api_key' THEN
      -- the tokens obtained with the key, as the actor's or the subject's
      -- credential (the audit row keeps its SHA-256): a revoked key kills them
      RETURN QUERY
        SELECT t.* FROM tokex.ssf_token t
          -- the token's audit row is in the partition of its issued_at (its at)
          JOIN tokex.audit_event a ON a.jti OPERATOR(pg_catalog.=) t.jti AND a.at OPERATOR(pg_catalog.=) t.issued_at
          JOIN tokex.api_key k ON k.id OPERATOR(pg_catalog.=) rev.target::bigint
         WHERE k.key_sha256 OPERATOR(pg_catalog.=) a.actor_token_sha256
            OR k.key_sha256 OPERATOR(pg_catalog.=) a.subject_token_sha256;
    WHEN 'policy' THEN
      -- what tokex.exchange would now refuse, of the tokens policy decided
      -- (an exchange's: its audit row names the policy rows that matched):
      -- this row is a deny that matches the token's exchange (a deny with
      -- scopes: and the token carries one of them), or no allow row matches
      -- it any more (an allow deleted, narrowed or turned to deny)
      RETURN QUERY
        SELECT t.* FROM tokex.ssf_token t
          JOIN tokex.ssf_stream s ON s.stream_id OPERATOR(pg_catalog.=) t.stream_id
          LEFT JOIN tokex.identity si ON si.id OPERATOR(pg_catalog.=) t.subject
          LEFT JOIN tokex.identity ai ON ai.id OPERATOR(pg_catalog.=) t.actor
         WHERE pg_catalog.cardinality(t.policy_ids) OPERATOR(pg_catalog.>) 0
           AND (EXISTS (SELECT 1 FROM tokex.policy p
                         WHERE p.id OPERATOR(pg_catalog.=) rev.target::bigint
                           AND p.effect OPERATOR(pg_catalog.=) 'deny'
                           AND (p.scopes IS NULL OR t.scope OPERATOR(pg_catalog.&&) p.scopes)
                           AND tokex._ssf_policy_matches(p, t, s.audience, si.kind, ai.kind, t0))
                OR NOT EXISTS (SELECT 1 FROM tokex.policy a
                                WHERE a.effect OPERATOR(pg_catalog.=) 'allow'
                                  AND tokex._ssf_policy_matches(a, t, s.audience, si.kind, ai.kind, t0)));
    ELSE
      RETURN;
  END CASE;
END
$$;

-- RFC 9493 / SSF subject identifiers of tokex's identities.
CREATE FUNCTION tokex._ssf_iss_sub(iss text, id text) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT CASE WHEN id IS NOT NULL
              THEN pg_catalog.jsonb_build_object('format', 'iss_sub', 'iss', iss, 'sub', id) END
$$;

-- The SET's sub_id: what the revocation is about.  A person or agent:
-- iss_sub; a delegation: the pair as a complex subject (user = the
-- principal, application = the delegate); a session: the pair and the
-- session (opaque id = the sid its tokens carry); a token: jwt_id; a key:
-- opaque kid; a policy row: the pair it names, else the policy (opaque).
CREATE FUNCTION tokex._ssf_subject(rev tokex.revocation, iss text) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  u text;
  a text;
  s jsonb;
BEGIN
  CASE rev.kind
    WHEN 'identity' THEN
      RETURN tokex._ssf_iss_sub(iss, rev.target);
    WHEN 'delegation' THEN
      SELECT d.principal, d.delegate INTO u, a FROM tokex.delegation d
       WHERE d.id OPERATOR(pg_catalog.=) rev.target::bigint;
    WHEN 'session' THEN
      SELECT x.principal, x.agent INTO u, a FROM tokex.session x WHERE x.id OPERATOR(pg_catalog.=) rev.target::uuid;
      s := pg_catalog.jsonb_build_object('format', 'opaque', 'id', rev.target);
    WHEN 'token' THEN
      RETURN pg_catalog.jsonb_build_object('format', 'jwt_id', 'iss', iss, 'jti', rev.target);
    WHEN 'api_key' THEN
      -- the agent or service whose key it was
      SELECT k.identity INTO a FROM tokex.api_key k WHERE k.id OPERATOR(pg_catalog.=) rev.target::bigint;
      RETURN tokex._ssf_iss_sub(iss, a);
    WHEN 'policy' THEN
      SELECT p.subject, p.actor INTO u, a FROM tokex.policy p WHERE p.id OPERATOR(pg_catalog.=) rev.target::bigint;
      IF u IS NULL AND a IS NULL THEN
        RETURN pg_catalog.jsonb_build_object('format', 'opaque', 'id', 'policy ' OPERATOR(pg_catalog.||) rev.target);
      END IF;
    ELSE
      RETURN pg_catalog.jsonb_build_object('format', 'opaque', 'id', rev.target);
  END CASE;
  RETURN pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
    'format', 'complex', 'user', tokex._ssf_iss_sub(iss, u), 'application', tokex._ssf_iss_sub(iss, a),
    'session', s));
END
$$;

-- A stream's SET audience: one string, or an array of several.
CREATE FUNCTION tokex._ssf_aud(s tokex.ssf_stream) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT CASE WHEN s.aud IS NULL THEN pg_catalog.to_jsonb(s.audience)
              WHEN pg_catalog.cardinality(s.aud) OPERATOR(pg_catalog.=) 1 THEN pg_catalog.to_jsonb(s.aud[1])
              ELSE pg_catalog.to_jsonb(s.aud) END
$$;

-- A revocation, in its transaction: the tokens it kills leave ssf_token,
-- and each stream that held some (and is not disabled, and asked for
-- session-revoked) gets one event naming them.  rev is a tokex.revocation
-- row, or for a policy change one made up (no id: policy changes are not
-- logged in tokex.revocation).
CREATE FUNCTION tokex._ssf_emit(rev tokex.revocation) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  iss text := tokex._setting('issuer');
  session_revoked constant text := 'https://schemas.openid.net/secevent/caep/event-type/session-revoked';
  n bigint;
  t0 timestamptz := pg_catalog.clock_timestamp();   -- as of the call, like the exchange
BEGIN
  DELETE FROM tokex.ssf_token WHERE expires_at OPERATOR(pg_catalog.<=) t0;
  WITH hit AS (
    DELETE FROM tokex.ssf_token t WHERE t.jti IN (SELECT a.jti FROM tokex._ssf_affected(rev) a)
    RETURNING t.*
  )
  INSERT INTO tokex.ssf_event (stream_id, revocation_id, claims, jtis, expires_at)
  SELECT s.stream_id, rev.id,
         pg_catalog.jsonb_build_object(
           'iat', pg_catalog.floor(extract(epoch FROM pg_catalog.clock_timestamp()))::bigint,
           'aud', tokex._ssf_aud(s),
           'txn', COALESCE(rev.id::text, pg_catalog.format('policy %s, transaction %s', rev.target,
                                                              pg_catalog.txid_current())),
           'sub_id', tokex._ssf_subject(rev, iss),
           'events', pg_catalog.jsonb_build_object(session_revoked, pg_catalog.jsonb_strip_nulls(
             pg_catalog.jsonb_build_object(
               'event_timestamp', pg_catalog.floor(extract(epoch FROM rev.at))::bigint,
               'initiating_entity', CASE rev.kind WHEN 'policy' THEN 'policy' ELSE 'admin' END,
               'reason_admin', CASE WHEN rev.reason IS NOT NULL
                                    THEN pg_catalog.jsonb_build_object('en', rev.reason) END,
               'tokex_revocation', pg_catalog.jsonb_build_object('kind', rev.kind, 'target', rev.target))))),
         pg_catalog.array_agg(h.jti ORDER BY h.issued_at, h.jti),
         pg_catalog.max(h.expires_at)
    FROM hit h JOIN tokex.ssf_stream s ON s.stream_id OPERATOR(pg_catalog.=) h.stream_id
   WHERE s.status OPERATOR(pg_catalog.<>) 'disabled'
     AND session_revoked OPERATOR(pg_catalog.=) ANY (s.events_requested)
   GROUP BY s.stream_id;
  GET DIAGNOSTICS n = ROW_COUNT;
  IF n > 0 AND iss IS NULL THEN
    -- the events must name tokex's tokens as their receivers know them
    RAISE EXCEPTION 'tokex.issuer is not set' USING ERRCODE = 'object_not_in_prerequisite_state',
      DETAIL = 'This revocation produces Security Event Tokens, which carry the issuer.',
      HINT = 'Set it with ALTER DATABASE ... SET tokex.issuer = ''https://...''.';
  END IF;
END
$$;

CREATE FUNCTION tokex._ssf_on_revocation() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
BEGIN
  PERFORM tokex._ssf_emit(NEW);
  RETURN NULL;
END
$$;

CREATE TRIGGER revocation_ssf AFTER INSERT ON tokex.revocation
  FOR EACH ROW EXECUTE FUNCTION tokex._ssf_on_revocation();

-- A policy change that can remove access: a deny row inserted, or changed
-- and in force after the change; an allow row deleted or changed.  Which
-- tokens it kills is tokex._ssf_affected's rule.  It is no row of
-- tokex.revocation (policy is not revoked, it is changed).
CREATE FUNCTION tokex._ssf_on_policy() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  p tokex.policy := CASE WHEN TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN OLD ELSE NEW END;
  rev tokex.revocation;
BEGIN
  IF TG_OP OPERATOR(pg_catalog.=) 'INSERT' AND NEW.effect OPERATOR(pg_catalog.<>) 'deny' THEN
    RETURN NULL;
  ELSIF TG_OP OPERATOR(pg_catalog.=) 'DELETE' AND OLD.effect OPERATOR(pg_catalog.<>) 'allow' THEN
    RETURN NULL;
  ELSIF TG_OP OPERATOR(pg_catalog.=) 'UPDATE'
        AND (OLD.effect, OLD.subject, OLD.subject_kind, OLD.actor, OLD.actor_kind, OLD.audience, OLD.client_id,
             OLD.scopes, OLD.max_depth, OLD.valid)
            IS NOT DISTINCT FROM
            (NEW.effect, NEW.subject, NEW.subject_kind, NEW.actor, NEW.actor_kind, NEW.audience, NEW.client_id,
             NEW.scopes, NEW.max_depth, NEW.valid) THEN
    RETURN NULL;
  ELSIF TG_OP OPERATOR(pg_catalog.=) 'UPDATE' AND OLD.effect OPERATOR(pg_catalog.=) 'deny'
        AND NOT (NEW.effect OPERATOR(pg_catalog.=) 'deny'
                 AND (NEW.valid IS NULL OR NEW.valid OPERATOR(pg_catalog.@>) pg_catalog.clock_timestamp())) THEN
    RETURN NULL;
  END IF;
  rev.at := pg_catalog.clock_timestamp();
  rev.kind := 'policy';
  rev.target := p.id::text;
  rev.reason := p.description;
  rev.by_user := SESSION_USER;
  PERFORM tokex._ssf_emit(rev);
  RETURN NULL;
END
$$;

CREATE TRIGGER policy_ssf AFTER INSERT OR UPDATE OR DELETE ON tokex.policy
  FOR EACH ROW EXECUTE FUNCTION tokex._ssf_on_policy();

-- Acknowledged events older than tokex.ssf_retention, pending ones whose
-- tokens have all expired, and tokens no longer live.  Poll runs it for
-- its stream; call it (pg_cron) for streams nobody polls.
CREATE FUNCTION tokex.ssf_prune(stream_id uuid DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  n bigint;
  t0 timestamptz := pg_catalog.clock_timestamp();
BEGIN
  DELETE FROM tokex.ssf_event e
   WHERE (ssf_prune.stream_id IS NULL OR e.stream_id OPERATOR(pg_catalog.=) ssf_prune.stream_id)
     AND ((e.acked_at IS NOT NULL AND e.acked_at OPERATOR(pg_catalog.<)
             (t0 OPERATOR(pg_catalog.-) tokex._setting('ssf_retention')::interval))
          OR (e.acked_at IS NULL AND e.expires_at OPERATOR(pg_catalog.<=) t0));
  GET DIAGNOSTICS n = ROW_COUNT;
  DELETE FROM tokex.ssf_token WHERE expires_at OPERATOR(pg_catalog.<=) t0;
  RETURN n;
END
$$;

-- A stream's SSF configuration (SSF 1.0 §8.1.1).
CREATE FUNCTION tokex._ssf_config(s tokex.ssf_stream) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT pg_catalog.jsonb_build_object(
    'stream_id', s.stream_id,
    'iss', tokex._issuer(),
    'aud', tokex._ssf_aud(s),
    'delivery', pg_catalog.jsonb_build_object('method', s.delivery_method,
                                              'endpoint_url', tokex._endpoint('/rpc/ssf_poll')),
    'events_supported', '["https://schemas.openid.net/secevent/caep/event-type/session-revoked"]'::jsonb,
    'events_requested', pg_catalog.to_jsonb(s.events_requested),
    'events_delivered', pg_catalog.to_jsonb(ARRAY(
       SELECT e FROM pg_catalog.unnest(s.events_requested) e
        WHERE e OPERATOR(pg_catalog.=) 'https://schemas.openid.net/secevent/caep/event-type/session-revoked')),
    'description', s.description)
$$;

-- The stream an authenticated client asks about: stream_id, or its only
-- stream.  Over HTTP: the client authenticated as at the token endpoint.
-- Returns the stream, or the RFC 8935 §2.4 error to answer.
CREATE FUNCTION tokex._ssf_client_stream(path text, stream_id text, client_id text, client_secret text,
                                         client_assertion text, client_assertion_type text,
                                         OUT stream tokex.ssf_stream, OUT refusal jsonb)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  a record;
  n int;
BEGIN
  SELECT * INTO a FROM tokex._authenticate(client_id, client_secret, client_assertion, client_assertion_type,
                                           tokex._endpoint(path));
  IF a.client IS NULL OR (a.client).client_id IS NULL THEN
    refusal := tokex._respond(pg_catalog.jsonb_build_object('err', 'authentication_failed',
                 'description', tokex._public_description('invalid_client', a.why)),
                 401, 'Basic realm="tokex", charset="UTF-8"');
    RETURN;
  END IF;
  SELECT pg_catalog.count(*) INTO n FROM tokex.ssf_stream s
   WHERE (a.client).client_id OPERATOR(pg_catalog.=) ANY (s.clients);
  IF _ssf_client_stream.stream_id IS NULL AND n OPERATOR(pg_catalog.>) 1 THEN
    refusal := tokex._respond('{"err": "invalid_request", "description": "stream_id is required: the client may poll more than one stream"}', 400);
    RETURN;
  END IF;
  SELECT * INTO stream FROM tokex.ssf_stream s
   WHERE (a.client).client_id OPERATOR(pg_catalog.=) ANY (s.clients)
     AND (_ssf_client_stream.stream_id IS NULL OR s.stream_id::text OPERATOR(pg_catalog.=) _ssf_client_stream.stream_id);
  IF NOT FOUND THEN
    -- another receiver's stream looks like no stream
    stream := NULL;
    refusal := tokex._respond('{"err": "access_denied", "description": "the client may not use this stream"}', 403);
  END IF;
END
$$;

-- The claims of event e's SET as it is signed: iss, jti, and the tokens it
-- names as RFC 9493-style jwt_id subject identifiers in its event.
CREATE FUNCTION tokex._ssf_set_claims(e tokex.ssf_event, iss text) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT pg_catalog.jsonb_build_object('iss', iss, 'jti', e.jti)
         OPERATOR(pg_catalog.||) pg_catalog.jsonb_set(e.claims,
           ARRAY['events', 'https://schemas.openid.net/secevent/caep/event-type/session-revoked', 'tokens'],
           (SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('format', 'jwt_id', 'iss', iss, 'jti', j)
                                        ORDER BY o)
              FROM pg_catalog.unnest(e.jtis) WITH ORDINALITY AS x(j, o)))
$$;

-- Poll (RFC 8936 §2.4) for one stream: acknowledge ack, record setErrs, then
-- up to max_events pending events in order, each signed now; returns
-- {"sets": {jti: SET, ...}, "moreAvailable": bool} (json: the order kept).
CREATE FUNCTION tokex._ssf_poll(s tokex.ssf_stream, max_events int, ack jsonb, set_errs jsonb)
RETURNS json
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  lim int := LEAST(COALESCE(max_events, 100), 1000);
  iss text := tokex._issuer();
  sets json;
  more boolean;
  t0 timestamptz := pg_catalog.clock_timestamp();
BEGIN
  IF max_events OPERATOR(pg_catalog.<) 0 THEN
    RAISE EXCEPTION 'maxEvents must not be negative' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF ack IS NOT NULL AND pg_catalog.jsonb_typeof(ack) NOT IN ('array', 'string') THEN
    RAISE EXCEPTION 'ack must be an array of jti strings' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF set_errs IS NOT NULL AND pg_catalog.jsonb_typeof(set_errs) OPERATOR(pg_catalog.<>) 'object' THEN
    RAISE EXCEPTION 'setErrs must be an object' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  -- acknowledgements of this stream's events only; unknown jtis are ignored
  UPDATE tokex.ssf_event e SET acked_at = pg_catalog.now()
   WHERE e.stream_id OPERATOR(pg_catalog.=) s.stream_id AND e.acked_at IS NULL
     AND e.jti::text IN (SELECT j FROM pg_catalog.jsonb_array_elements_text(
                           CASE pg_catalog.jsonb_typeof(ack) WHEN 'string' THEN pg_catalog.jsonb_build_array(ack)
                                ELSE COALESCE(ack, '[]') END) j);
  UPDATE tokex.ssf_event e SET acked_at = pg_catalog.now(), set_error = x.value
    FROM pg_catalog.jsonb_each(COALESCE(set_errs, '{}')) x
   WHERE e.stream_id OPERATOR(pg_catalog.=) s.stream_id AND e.acked_at IS NULL
     AND e.jti::text OPERATOR(pg_catalog.=) x.key;
  PERFORM tokex.ssf_prune(s.stream_id);
  IF s.status OPERATOR(pg_catalog.<>) 'enabled' THEN
    lim := 0;                 -- paused: held; disabled: nothing to deliver
  END IF;
  WITH next AS (
    SELECT e FROM tokex.ssf_event e
     WHERE e.stream_id OPERATOR(pg_catalog.=) s.stream_id AND e.acked_at IS NULL
       AND e.expires_at OPERATOR(pg_catalog.>) t0
     ORDER BY e.id LIMIT lim
  ), sent AS (
    UPDATE tokex.ssf_event e SET delivered_at = COALESCE(e.delivered_at, pg_catalog.now())
      FROM next WHERE e.id OPERATOR(pg_catalog.=) (next.e).id
  )
  SELECT pg_catalog.json_object_agg((n.e).jti, tokex._sign(tokex._ssf_set_claims(n.e, iss), 'secevent+jwt')
                                    ORDER BY (n.e).id)
    INTO sets FROM next n;
  SELECT EXISTS (SELECT 1 FROM tokex.ssf_event e
                  WHERE e.stream_id OPERATOR(pg_catalog.=) s.stream_id AND e.acked_at IS NULL
                    AND e.expires_at OPERATOR(pg_catalog.>) t0
                  OFFSET lim)
    INTO more;
  RETURN pg_catalog.json_build_object('sets', COALESCE(sets, '{}'::json),
                                      'moreAvailable', more AND lim OPERATOR(pg_catalog.>) 0);
END
$$;

-- For a receiver inside the database: poll a stream as a role mapped to
-- one of its clients (tokex.client.db_roles), or as an administrator.
CREATE FUNCTION tokex.ssf_poll(stream_id uuid, max_events int DEFAULT 100, ack uuid[] DEFAULT NULL,
                               set_errs jsonb DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  s tokex.ssf_stream;
BEGIN
  SELECT * INTO s FROM tokex.ssf_stream x WHERE x.stream_id OPERATOR(pg_catalog.=) ssf_poll.stream_id;
  IF NOT FOUND OR NOT (pg_catalog.pg_has_role(SESSION_USER, 'tokex_admin', 'MEMBER')
                       OR EXISTS (SELECT 1 FROM tokex.client c, pg_catalog.unnest(c.db_roles) r
                                   WHERE c.client_id OPERATOR(pg_catalog.=) ANY (s.clients)
                                     AND c.status OPERATOR(pg_catalog.=) 'active'
                                     AND pg_catalog.pg_has_role(SESSION_USER, r, 'MEMBER'))) THEN
    RAISE EXCEPTION 'no stream % for this role', ssf_poll.stream_id USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN tokex._ssf_poll(s, max_events, pg_catalog.to_jsonb(ack), set_errs);
END
$$;

-- POST /rpc/ssf_poll (RFC 8936 §2.4): JSON {"maxEvents", "returnImmediately",
-- "ack", "setErrs"} (or a form), client authentication as at /rpc/token,
-- stream_id when the client may poll more than one stream.  tokex answers
-- at once: returnImmediately false is accepted, and nothing is held open.
CREATE FUNCTION tokex_api.ssf_poll(
  "maxEvents" int DEFAULT NULL, "returnImmediately" boolean DEFAULT NULL,
  ack jsonb DEFAULT NULL, "setErrs" jsonb DEFAULT NULL, stream_id text DEFAULT NULL,
  client_id text DEFAULT NULL, client_secret text DEFAULT NULL,
  client_assertion text DEFAULT NULL, client_assertion_type text DEFAULT NULL)
RETURNS json
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  c record;
  r json;
BEGIN
  IF tokex._not_post() THEN
    RETURN tokex._respond('{"err": "invalid_request", "description": "the poll endpoint takes POST"}', 405);
  END IF;
  SELECT * INTO c FROM tokex._ssf_client_stream('/rpc/ssf_poll', stream_id, client_id, client_secret,
                                                client_assertion, client_assertion_type);
  IF c.refusal IS NOT NULL THEN
    RETURN c.refusal;
  END IF;
  BEGIN
    r := tokex._ssf_poll(c.stream, "maxEvents", ack, "setErrs");
  EXCEPTION WHEN invalid_parameter_value THEN
    RETURN tokex._respond(pg_catalog.jsonb_build_object('err', 'invalid_request', 'description', SQLERRM), 400);
  END;
  PERFORM tokex._respond('{}'::jsonb);
  RETURN r;
END
$$;

-- The stream management endpoints (SSF 1.0 §8.1), for a client of the
-- stream.  what 'stream' (the configuration endpoint): the stream's
-- configuration; change may set events_requested and description, what a
-- receiver may change.  what 'status' (the status endpoint): its status;
-- change may set status (enabled, paused, disabled) and reason.  A change
-- takes POST.
CREATE FUNCTION tokex._ssf_manage(what text, stream_id text, change jsonb, client_id text, client_secret text,
                                  client_assertion text, client_assertion_type text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  c record;
  s tokex.ssf_stream;
  ev jsonb := change->'events_requested';
BEGIN
  SELECT * INTO c FROM tokex._ssf_client_stream('/rpc/ssf_' OPERATOR(pg_catalog.||) what, stream_id, client_id,
                                                client_secret, client_assertion, client_assertion_type);
  IF c.refusal IS NOT NULL THEN
    RETURN c.refusal;
  END IF;
  s := c.stream;
  IF change OPERATOR(pg_catalog.<>) '{}' AND tokex._not_post() THEN
    RETURN tokex._respond('{"err": "invalid_request", "description": "changes take POST"}', 405);
  END IF;
  IF what OPERATOR(pg_catalog.=) 'stream' THEN
    IF ev IS NOT NULL AND (pg_catalog.jsonb_typeof(ev) OPERATOR(pg_catalog.<>) 'array'
                           OR pg_catalog.jsonb_path_exists(ev, '$[*] ? (@.type() != "string")')) THEN
      RETURN tokex._respond('{"err": "invalid_request", "description": "events_requested must be an array of event type URIs"}', 400);
    END IF;
    UPDATE tokex.ssf_stream x
       SET events_requested = COALESCE(ARRAY(SELECT pg_catalog.jsonb_array_elements_text(ev)), x.events_requested),
           description = COALESCE(change->>'description', x.description)
     WHERE x.stream_id OPERATOR(pg_catalog.=) s.stream_id AND change OPERATOR(pg_catalog.<>) '{}'
    RETURNING * INTO s;
    IF NOT FOUND THEN
      s := c.stream;
    END IF;
    RETURN tokex._respond(tokex._ssf_config(s));
  END IF;
  IF change ? 'status' AND NOT (change->>'status' IN ('enabled', 'paused', 'disabled')) THEN
    RETURN tokex._respond('{"err": "invalid_request", "description": "status must be enabled, paused or disabled"}', 400);
  END IF;
  UPDATE tokex.ssf_stream x SET status = change->>'status', status_reason = change->>'reason'
   WHERE x.stream_id OPERATOR(pg_catalog.=) s.stream_id AND change ? 'status'
  RETURNING * INTO s;
  IF NOT FOUND THEN
    s := c.stream;
  END IF;
  RETURN tokex._respond(pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
    'stream_id', s.stream_id, 'status', s.status, 'reason', s.status_reason)));
END
$$;

-- POST /rpc/ssf_stream: the configuration endpoint (read; update)
CREATE FUNCTION tokex_api.ssf_stream(
  stream_id text DEFAULT NULL, events_requested jsonb DEFAULT NULL, description text DEFAULT NULL,
  client_id text DEFAULT NULL, client_secret text DEFAULT NULL,
  client_assertion text DEFAULT NULL, client_assertion_type text DEFAULT NULL)
RETURNS jsonb
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT tokex._ssf_manage('stream', stream_id,
           pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('events_requested', events_requested,
                                                                      'description', description)),
           client_id, client_secret, client_assertion, client_assertion_type)
$$;

-- POST /rpc/ssf_status: the status endpoint (read; update)
CREATE FUNCTION tokex_api.ssf_status(
  stream_id text DEFAULT NULL, status text DEFAULT NULL, reason text DEFAULT NULL,
  client_id text DEFAULT NULL, client_secret text DEFAULT NULL,
  client_assertion text DEFAULT NULL, client_assertion_type text DEFAULT NULL)
RETURNS jsonb
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT tokex._ssf_manage('status', stream_id,
           CASE WHEN status IS NULL THEN '{}'::jsonb
                ELSE pg_catalog.jsonb_build_object('status', status, 'reason', reason) END,
           client_id, client_secret, client_assertion, client_assertion_type)
$$;

-- GET /rpc/ssf_configuration: SSF transmitter metadata, what
-- /.well-known/ssf-configuration serves (SSF 1.0 §7.1).
CREATE FUNCTION tokex_api.ssf_configuration() RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
BEGIN
  PERFORM pg_catalog.set_config('response.headers', '[{"Cache-Control": "public, max-age=300"}]', true);
  RETURN pg_catalog.jsonb_build_object(
    'spec_version', '1_0',
    'issuer', tokex._issuer(),
    'jwks_uri', tokex._endpoint('/rpc/jwks'),
    'delivery_methods_supported', '["urn:ietf:rfc:8936"]'::jsonb,
    'configuration_endpoint', tokex._endpoint('/rpc/ssf_stream'),
    'status_endpoint', tokex._endpoint('/rpc/ssf_status'),
    'authorization_schemes', '[{"spec_urn": "urn:ietf:rfc:6749"}]'::jsonb,
    'default_subjects', 'ALL');
END
$$;
