------------------------------------------------------------------------
-- Audit proof: a hash per row, sealed and signed blocks, verification
-- (src/seal.c; the README's "Proving the audit trail")
------------------------------------------------------------------------

-- Every audit_event and token_use row takes its place (seq) from here, in
-- the trigger below, after its transaction's xid (see src/seal.c).
CREATE SEQUENCE tokex.audit_seq;

SELECT pg_catalog.pg_extension_config_dump('tokex.audit_seq', '');

CREATE FUNCTION tokex._audit_row() RETURNS trigger
  LANGUAGE C AS 'MODULE_PATHNAME', 'tokex_audit_row_trigger';

CREATE TRIGGER audit_event_row BEFORE INSERT ON tokex.audit_event
  FOR EACH ROW EXECUTE FUNCTION tokex._audit_row();

ALTER TABLE tokex.audit_event ENABLE ALWAYS TRIGGER audit_event_row;

CREATE TRIGGER token_use_row BEFORE INSERT ON tokex.token_use
  FOR EACH ROW EXECUTE FUNCTION tokex._audit_row();

ALTER TABLE tokex.token_use ENABLE ALWAYS TRIGGER token_use_row;

-- (each partition's BRIN index on seq: tokex._audit_partition_dress)

-- The canonical text of a row, and its RFC 9162 leaf hash recomputed.
CREATE FUNCTION tokex._audit_canonical(r record) RETURNS text
  LANGUAGE C STABLE STRICT AS 'MODULE_PATHNAME', 'tokex_audit_canonical';

CREATE FUNCTION tokex._audit_row_hash(r record) RETURNS bytea
  LANGUAGE C STABLE STRICT AS 'MODULE_PATHNAME', 'tokex_audit_row_hash';

CREATE FUNCTION tokex._merkle_root(leaves bytea[]) RETURNS bytea
  LANGUAGE C IMMUTABLE STRICT AS 'MODULE_PATHNAME', 'tokex_merkle_root';

CREATE FUNCTION tokex._audit_safe_seq() RETURNS bigint
  LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'tokex_audit_safe_seq';

-- The audit signing key: not a token key, so no token can pass for a block
-- and rotating token keys leaves the chain alone.  private_key is readable
-- only by the extension owner.
CREATE TABLE tokex.audit_key (
  kid         text PRIMARY KEY,
  alg         text NOT NULL,
  status      text NOT NULL CHECK (status IN ('active', 'retired')),
  public_jwk  jsonb NOT NULL,
  private_key bytea NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
  retired_at  timestamptz
);

CREATE UNIQUE INDEX audit_key_one_active ON tokex.audit_key ((true)) WHERE status = 'active';

SELECT pg_catalog.pg_extension_config_dump('tokex.audit_key', '');

REVOKE ALL ON tokex.audit_key FROM PUBLIC;

CREATE FUNCTION tokex._audit_sign(kid text, header text) RETURNS text
  LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'tokex_audit_sign';

CREATE FUNCTION tokex._audit_jws_payload(jws text, public_jwk jsonb) RETURNS text
  LANGUAGE C IMMUTABLE STRICT AS 'MODULE_PATHNAME', 'tokex_audit_jws_payload';

CREATE FUNCTION tokex._audit_jws_parts(jws text, OUT header jsonb, OUT payload text)
  LANGUAGE C IMMUTABLE STRICT AS 'MODULE_PATHNAME', 'tokex_audit_jws_parts';

-- One sealed block: the rows with from_seq < seq <= to_seq of audit_event
-- and token_use together, in seq order, under an RFC 9162 Merkle root; hash
-- is the SHA-256 of the block's header (tokex._audit_header) and prev the
-- hash of the block before it; jws is the header signed with the audit key.
-- pruned_through: the rows of blocks up to this one were dropped by the
-- retention (tokex.apply_audit_retention): those blocks keep their headers.
CREATE TABLE tokex.audit_block (
  block         bigint PRIMARY KEY,
  from_seq      bigint NOT NULL,
  to_seq        bigint NOT NULL,
  row_count     bigint NOT NULL,
  root          bytea NOT NULL,
  first_at      timestamptz,
  last_at       timestamptz,
  prev          bytea NOT NULL,
  pruned_through bigint,
  sealed_at     timestamptz NOT NULL,
  kid           text NOT NULL,
  hash          bytea NOT NULL,
  jws           text NOT NULL
);

SELECT pg_catalog.pg_extension_config_dump('tokex.audit_block', '');

CREATE INDEX audit_block_last_at ON tokex.audit_block (last_at);

CREATE TRIGGER audit_block_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON tokex.audit_block
  FOR EACH STATEMENT EXECUTE FUNCTION tokex._append_only();

ALTER TABLE tokex.audit_block ENABLE ALWAYS TRIGGER audit_block_append_only;

CREATE FUNCTION tokex._audit_ts(t timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT pg_catalog.to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

-- A block's header: JSON with its keys sorted and every value a string
-- (RFC 8785 form), the payload its JWS signs.
CREATE FUNCTION tokex._audit_header(b tokex.audit_block) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT pg_catalog.concat(
    '{"block":"', b.block, '","count":"', b.row_count, '"',
    ',"first_at":"' OPERATOR(pg_catalog.||) tokex._audit_ts(b.first_at) OPERATOR(pg_catalog.||) '"',
    ',"from_seq":"', b.from_seq, '","kid":', pg_catalog.to_json(b.kid),
    ',"last_at":"' OPERATOR(pg_catalog.||) tokex._audit_ts(b.last_at) OPERATOR(pg_catalog.||) '"',
    ',"prev":"', pg_catalog.encode(b.prev, 'hex'), '"',
    ',"pruned_through":"' OPERATOR(pg_catalog.||) b.pruned_through OPERATOR(pg_catalog.||) '"',
    ',"root":"', pg_catalog.encode(b.root, 'hex'), '","sealed_at":"', tokex._audit_ts(b.sealed_at),
    '","to_seq":"', b.to_seq, '","v":"1"}')
$$;

-- The rows of a seq range, both tables, with what a block needs of them.
CREATE FUNCTION tokex._audit_rows(lo bigint, hi bigint)
RETURNS TABLE (seq bigint, row_hash bytea, at timestamptz)
LANGUAGE sql STABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT e.seq, e.row_hash, e.at FROM tokex.audit_event e
   WHERE e.seq OPERATOR(pg_catalog.>) lo AND e.seq OPERATOR(pg_catalog.<=) hi
  UNION ALL
  SELECT u.seq, u.row_hash, u.at FROM tokex.token_use u
   WHERE u.seq OPERATOR(pg_catalog.>) lo AND u.seq OPERATOR(pg_catalog.<=) hi
$$;

-- The active audit key's kid, made (ES256) when there is none yet.
CREATE FUNCTION tokex._audit_active_kid() RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  k record;
  v_kid text;
BEGIN
  SELECT a.kid INTO v_kid FROM tokex.audit_key a WHERE a.status OPERATOR(pg_catalog.=) 'active';
  IF v_kid IS NULL THEN
    SELECT * INTO k FROM tokex._generate_key('ES256');
    INSERT INTO tokex.audit_key (kid, alg, status, public_jwk, private_key)
    VALUES (k.kid, 'ES256', 'active', k.public_jwk, k.private_key);
    v_kid := k.kid;
  END IF;
  RETURN v_kid;
END
$$;

-- new_pruned_through: for the retention, which seals a block (even an empty
-- one) that records how far rows were dropped.
CREATE FUNCTION tokex._seal_audit(new_pruned_through bigint) RETURNS bigint
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  hi bigint;
  p tokex.audit_block;
  b tokex.audit_block;
  h text;
BEGIN
  -- one sealer at a time; readers (and verifiers) go on
  LOCK TABLE tokex.audit_block IN EXCLUSIVE MODE;
  hi := tokex._audit_safe_seq();
  SELECT * INTO p FROM tokex.audit_block ORDER BY block DESC LIMIT 1;
  b.from_seq := COALESCE(p.to_seq, 0);
  b.to_seq := GREATEST(COALESCE(hi, 0), b.from_seq);
  SELECT pg_catalog.count(*), tokex._merkle_root(COALESCE(pg_catalog.array_agg(r.row_hash ORDER BY r.seq), '{}')),
         pg_catalog.min(r.at), pg_catalog.max(r.at)
    INTO b.row_count, b.root, b.first_at, b.last_at
    FROM tokex._audit_rows(b.from_seq, b.to_seq) r;
  b.pruned_through := GREATEST(p.pruned_through, new_pruned_through);
  IF b.row_count OPERATOR(pg_catalog.=) 0
     AND b.pruned_through IS NOT DISTINCT FROM p.pruned_through THEN
    RETURN NULL;
  END IF;
  b.block := COALESCE(p.block, 0) OPERATOR(pg_catalog.+) 1;
  b.prev := COALESCE(p.hash, pg_catalog.decode(pg_catalog.repeat('00', 32), 'hex'));
  b.sealed_at := pg_catalog.clock_timestamp();
  b.kid := tokex._audit_active_kid();
  h := tokex._audit_header(b);
  b.hash := pg_catalog.sha256(pg_catalog.convert_to(h, 'UTF8'));
  b.jws := tokex._audit_sign(b.kid, h);
  INSERT INTO tokex.audit_block SELECT b.*;
  RETURN b.block;
END
$$;

-- Seal, in this transaction, every row that no running transaction can
-- still add below: one new block, or NULL when there is nothing to seal
-- (or running writers did not finish within two seconds).  Run it in a
-- transaction of its own at READ COMMITTED (the background sealer, pg_cron
-- or by hand); it never blocks an exchange.
CREATE FUNCTION tokex.seal_audit() RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp
AS $$ SELECT tokex._seal_audit(NULL) $$;

-- A new audit key signs from the next block on; the old one is kept
-- (retired) to verify the blocks it signed.
CREATE FUNCTION tokex.rotate_audit_key(alg text DEFAULT 'ES256') RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE k record;
BEGIN
  LOCK TABLE tokex.audit_block IN EXCLUSIVE MODE;
  SELECT * INTO k FROM tokex._generate_key(COALESCE(alg, 'ES256'));
  UPDATE tokex.audit_key SET status = 'retired', retired_at = pg_catalog.now()
   WHERE status OPERATOR(pg_catalog.=) 'active';
  INSERT INTO tokex.audit_key (kid, alg, status, public_jwk, private_key)
  VALUES (k.kid, COALESCE(alg, 'ES256'), 'active', k.public_jwk, k.private_key);
  RETURN k.kid;
END
$$;

-- The audit keys' public halves (JWKS), for witnesses and outside verifiers.
CREATE FUNCTION tokex.audit_keys() RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT pg_catalog.jsonb_build_object('keys',
           COALESCE(pg_catalog.jsonb_agg(public_jwk ORDER BY created_at), '[]'::jsonb))
    FROM tokex.audit_key
$$;

-- The latest block's header, signed: what a witness keeps.
CREATE FUNCTION tokex.audit_head() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT b.jws FROM tokex.audit_block b ORDER BY b.block DESC LIMIT 1
$$;

-- The chain's problems in blocks from_block .. to_block: each header, its
-- signature and its link to the block before; with_rows, also each block's
-- rows (count and Merkle root) and each row's hash, except in blocks whose
-- rows the retention dropped (up to the latest pruned_through).
CREATE FUNCTION tokex._audit_verify(from_block bigint, to_block bigint, with_rows boolean)
RETURNS TABLE (block bigint, problem text, detail text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  b tokex.audit_block;
  p tokex.audit_block;
  h text;
  payload text;
  jwk jsonb;
  cut bigint;
  n bigint;
  r bytea;
  expect bigint;
  last_seq bigint;
  hi bigint;
BEGIN
  SELECT pg_catalog.max(a.pruned_through) INTO cut FROM tokex.audit_block a;
  IF from_block IS NOT NULL AND from_block OPERATOR(pg_catalog.>) 1 THEN
    SELECT * INTO p FROM tokex.audit_block a WHERE a.block OPERATOR(pg_catalog.<) from_block
     ORDER BY a.block DESC LIMIT 1;
  END IF;
  expect := COALESCE(p.block OPERATOR(pg_catalog.+) 1, from_block, 1);
  FOR b IN SELECT * FROM tokex.audit_block a
            WHERE a.block OPERATOR(pg_catalog.>=) COALESCE(from_block, 1)
              AND (to_block IS NULL OR a.block OPERATOR(pg_catalog.<=) to_block)
            ORDER BY a.block LOOP
    IF b.block OPERATOR(pg_catalog.<>) expect THEN
      RETURN QUERY SELECT expect, 'missing block'::text,
        pg_catalog.format('blocks %s to %s are missing', expect, b.block OPERATOR(pg_catalog.-) 1);
    END IF;
    h := tokex._audit_header(b);
    IF pg_catalog.sha256(pg_catalog.convert_to(h, 'UTF8')) OPERATOR(pg_catalog.<>) b.hash THEN
      RETURN QUERY SELECT b.block, 'altered block'::text, 'the block''s columns do not hash to its recorded hash'::text;
    END IF;
    SELECT k.public_jwk INTO jwk FROM tokex.audit_key k WHERE k.kid OPERATOR(pg_catalog.=) b.kid;
    payload := tokex._audit_jws_payload(b.jws, jwk);
    IF jwk IS NULL THEN
      RETURN QUERY SELECT b.block, 'bad signature'::text,
        pg_catalog.format('the block names audit key %s, which tokex.audit_keys() does not have', b.kid);
    ELSIF payload IS NULL THEN
      RETURN QUERY SELECT b.block, 'bad signature'::text,
        pg_catalog.format('the block''s JWS is not signed by audit key %s', b.kid);
    ELSIF payload OPERATOR(pg_catalog.<>) h THEN
      RETURN QUERY SELECT b.block, 'altered block'::text, 'the block''s columns differ from the header its JWS signs'::text;
    END IF;
    IF p.block IS NULL AND b.block OPERATOR(pg_catalog.=) 1 THEN
      IF b.prev OPERATOR(pg_catalog.<>) pg_catalog.decode(pg_catalog.repeat('00', 32), 'hex')
         OR b.from_seq OPERATOR(pg_catalog.<>) 0 THEN
        RETURN QUERY SELECT b.block, 'broken link'::text, 'the first block does not start the chain'::text;
      END IF;
    ELSIF p.block IS NOT NULL THEN
      IF b.prev OPERATOR(pg_catalog.<>) p.hash THEN
        RETURN QUERY SELECT b.block, 'broken link'::text,
          pg_catalog.format('prev is not the hash of block %s', p.block);
      END IF;
      IF b.from_seq OPERATOR(pg_catalog.<>) p.to_seq THEN
        RETURN QUERY SELECT b.block, 'broken link'::text,
          pg_catalog.format('rows %s to %s are in no block', p.to_seq, b.from_seq);
      END IF;
    END IF;
    IF with_rows AND cut IS NOT NULL AND b.block OPERATOR(pg_catalog.<=) cut THEN
      -- the retention dropped every row of this block: a row here was put back or never dropped
      SELECT pg_catalog.count(*) INTO n FROM tokex._audit_rows(b.from_seq, b.to_seq) x;
      IF n OPERATOR(pg_catalog.>) 0 THEN
        RETURN QUERY SELECT b.block, 'inserted row'::text,
          pg_catalog.format('%s rows in a block whose rows the retention dropped (pruned through block %s)', n, cut);
      END IF;
    END IF;
    IF with_rows AND (cut IS NULL OR b.block OPERATOR(pg_catalog.>) cut) THEN
      SELECT pg_catalog.count(*), tokex._merkle_root(COALESCE(pg_catalog.array_agg(x.row_hash ORDER BY x.seq), '{}'))
        INTO n, r FROM tokex._audit_rows(b.from_seq, b.to_seq) x;
      IF n OPERATOR(pg_catalog.<) b.row_count THEN
        RETURN QUERY SELECT b.block, 'missing row'::text,
          pg_catalog.format('%s of the block''s %s rows are missing', b.row_count OPERATOR(pg_catalog.-) n, b.row_count);
      ELSIF n OPERATOR(pg_catalog.>) b.row_count THEN
        RETURN QUERY SELECT b.block, 'inserted row'::text,
          pg_catalog.format('%s rows more than the block''s %s', n OPERATOR(pg_catalog.-) b.row_count, b.row_count);
      ELSIF r OPERATOR(pg_catalog.<>) b.root THEN
        RETURN QUERY SELECT b.block, 'altered row'::text,
          'the rows do not hash to the block''s Merkle root: changed, or deleted and replaced'::text;
      END IF;
      RETURN QUERY SELECT b.block, 'altered row'::text, x.what FROM tokex._audit_altered(b.from_seq, b.to_seq) x;
    END IF;
    p := b;
    expect := b.block OPERATOR(pg_catalog.+) 1;
  END LOOP;
  IF with_rows AND to_block IS NULL THEN
    last_seq := COALESCE(p.to_seq, (SELECT pg_catalog.max(a.to_seq) FROM tokex.audit_block a), 0);
    -- not sealed yet: each row's own hash
    RETURN QUERY SELECT NULL::bigint, 'altered row'::text, x.what
      FROM tokex._audit_altered(last_seq, NULL) x;
    IF from_block IS NULL THEN
      -- a seq no insert was given: not above 0, or beyond what the
      -- sequence has handed out (such a row would never be sealed)
      hi := (SELECT s.last_value FROM tokex.audit_seq s);
      RETURN QUERY SELECT NULL::bigint, 'inserted row'::text,
        pg_catalog.format('%s row with seq %s, outside every block', x.tbl, x.seq)
        FROM (SELECT 'audit_event' AS tbl, e.seq FROM tokex.audit_event e
               WHERE e.seq OPERATOR(pg_catalog.<=) 0 OR e.seq OPERATOR(pg_catalog.>) hi
              UNION ALL
              SELECT 'token_use', u.seq FROM tokex.token_use u
               WHERE u.seq OPERATOR(pg_catalog.<=) 0 OR u.seq OPERATOR(pg_catalog.>) hi) x;
    END IF;
  END IF;
END
$$;

-- Rows in lo < seq <= hi (hi NULL: no bound) whose columns no longer hash
-- to their row_hash.
CREATE FUNCTION tokex._audit_altered(lo bigint, hi bigint) RETURNS TABLE (what text)
LANGUAGE sql STABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT pg_catalog.format('audit_event %s (seq %s) does not hash to its row_hash', e.exchange_id, e.seq)
    FROM tokex.audit_event e
   WHERE e.seq OPERATOR(pg_catalog.>) lo AND (hi IS NULL OR e.seq OPERATOR(pg_catalog.<=) hi)
     AND e.row_hash IS DISTINCT FROM tokex._audit_row_hash(e)
  UNION ALL
  SELECT pg_catalog.format('token_use %s (seq %s) does not hash to its row_hash', u.id, u.seq)
    FROM tokex.token_use u
   WHERE u.seq OPERATOR(pg_catalog.>) lo AND (hi IS NULL OR u.seq OPERATOR(pg_catalog.<=) hi)
     AND u.row_hash IS DISTINCT FROM tokex._audit_row_hash(u)
$$;

-- One row per problem in blocks from_block .. to_block (all by default):
-- altered row, missing row, inserted row, missing block, altered block,
-- broken link, bad signature.  Nothing when the trail holds.
CREATE FUNCTION tokex.audit_verify(from_block bigint DEFAULT NULL, to_block bigint DEFAULT NULL)
RETURNS TABLE (block bigint, problem text, detail text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT * FROM tokex._audit_verify(from_block, to_block, true)
$$;

-- Is the head a witness kept (tokex.audit_head() then) still a prefix of
-- today's chain?  Its signature by a known audit key, the same block today,
-- and every block since linked and signed.  Nothing when it is.
CREATE FUNCTION tokex.audit_verify_head(head text)
RETURNS TABLE (block bigint, problem text, detail text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  parts record;
  jwk jsonb;
  n bigint;
  today tokex.audit_block;
BEGIN
  SELECT * INTO parts FROM tokex._audit_jws_parts(head);
  IF parts.payload IS NULL OR pg_catalog.jsonb_typeof(parts.payload::jsonb->'block') IS DISTINCT FROM 'string'
     OR (parts.payload::jsonb->>'block') !~ '^[0-9]{1,18}$' THEN
    RAISE EXCEPTION 'not an audit head' USING ERRCODE = 'invalid_parameter_value',
      DETAIL = 'An audit head is the compact JWS tokex.audit_head() returns.';
  END IF;
  n := (parts.payload::jsonb->>'block')::bigint;
  SELECT k.public_jwk INTO jwk FROM tokex.audit_key k WHERE k.kid OPERATOR(pg_catalog.=) (parts.header->>'kid');
  IF jwk IS NULL THEN
    RETURN QUERY SELECT n, 'unknown key'::text,
      pg_catalog.format('the head is signed by audit key %s, which tokex.audit_keys() no longer has', parts.header->>'kid');
  ELSIF tokex._audit_jws_payload(head, jwk) IS NULL THEN
    RETURN QUERY SELECT n, 'bad signature'::text, 'the head''s signature does not verify'::text;
  END IF;
  SELECT * INTO today FROM tokex.audit_block b WHERE b.block OPERATOR(pg_catalog.=) n;
  IF today.block IS NULL THEN
    RETURN QUERY SELECT n, 'missing block'::text,
      pg_catalog.format('the chain today ends at block %s: the witnessed block %s is gone',
                        COALESCE((SELECT pg_catalog.max(b.block) FROM tokex.audit_block b), 0), n);
    RETURN;
  END IF;
  IF tokex._audit_header(today) OPERATOR(pg_catalog.<>) parts.payload THEN
    RETURN QUERY SELECT n, 'fork'::text,
      pg_catalog.format('block %s today differs from the head the witness kept', n);
  END IF;
  RETURN QUERY SELECT * FROM tokex._audit_verify(n, NULL, false);
  -- a retention since the witnessed head is signed like any block, by a key
  -- the database holds: only the witness can judge whether it was due
  RETURN QUERY SELECT b.block, 'pruned'::text,
      pg_catalog.format('block %s, sealed after the witnessed block %s, records the rows of blocks up to %s dropped (the retention); compare with the retention you expect',
                        b.block, n, b.pruned_through)
    FROM tokex.audit_block b
   WHERE b.block OPERATOR(pg_catalog.>) n AND b.pruned_through IS NOT NULL
   ORDER BY b.block;
END
$$;

-- The evidence for an outside verifier (test/interop/audit-verify.mjs):
-- each sealed row of blocks from_block .. to_block as its canonical text,
-- the bytes its row_hash is the RFC 9162 leaf hash of.  With the blocks'
-- JWS (tokex.audit_block) and tokex.audit_keys(), nothing else is needed.
CREATE FUNCTION tokex.audit_rows(from_block bigint DEFAULT NULL, to_block bigint DEFAULT NULL)
RETURNS TABLE (block bigint, seq bigint, canonical text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT b.block, x.seq, x.canonical
    FROM tokex.audit_block b,
         LATERAL (SELECT e.seq, tokex._audit_canonical(e) AS canonical FROM tokex.audit_event e
                   WHERE e.seq OPERATOR(pg_catalog.>) b.from_seq AND e.seq OPERATOR(pg_catalog.<=) b.to_seq
                  UNION ALL
                  SELECT u.seq, tokex._audit_canonical(u) FROM tokex.token_use u
                   WHERE u.seq OPERATOR(pg_catalog.>) b.from_seq AND u.seq OPERATOR(pg_catalog.<=) b.to_seq) x
   WHERE b.block OPERATOR(pg_catalog.>=) COALESCE(from_block, 1)
     AND (to_block IS NULL OR b.block OPERATOR(pg_catalog.<=) to_block)
   ORDER BY x.seq
$$;

-- Retention: the rows of whole blocks older than keep (default: the
-- setting tokex.audit_retention; 0 keeps everything) are dropped, after a
-- block is sealed whose signed header records how far (pruned_through), so
-- the chain stays verifiable across the gap and a deletion nobody signed
-- still shows.  A block whose exchange is still referenced by a later use
-- (token_use) is kept, with every block after it.  Returns the number of
-- rows dropped.  The background sealer runs it when the setting is on.
CREATE FUNCTION tokex._audit_pruning() RETURNS boolean
  LANGUAGE C STABLE AS 'MODULE_PATHNAME', 'tokex_audit_pruning';

CREATE FUNCTION tokex._audit_retention() RETURNS integer
  LANGUAGE C STABLE AS 'MODULE_PATHNAME', 'tokex_audit_retention_setting';

CREATE FUNCTION tokex._audit_prune(through_seq bigint) RETURNS bigint
  LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'tokex_audit_prune';

CREATE FUNCTION tokex.apply_audit_retention(keep interval DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  k bigint;
  bound bigint;
  conflict bigint;
  done bigint;
BEGIN
  keep := COALESCE(keep, pg_catalog.make_interval(secs => tokex._audit_retention()));
  IF keep OPERATOR(pg_catalog.<=) '0'::interval THEN
    RETURN 0;
  END IF;
  SELECT b.block INTO k FROM tokex.audit_block b
   WHERE b.last_at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) keep)
   ORDER BY b.last_at DESC LIMIT 1;
  SELECT pg_catalog.max(b.pruned_through) INTO done FROM tokex.audit_block b;
  LOOP
    IF k IS NULL OR k OPERATOR(pg_catalog.<=) COALESCE(done, 0) THEN
      RETURN 0;
    END IF;
    SELECT b.to_seq INTO bound FROM tokex.audit_block b WHERE b.block OPERATOR(pg_catalog.=) k;
    -- a later use of an exchange in the range keeps that exchange's block
    SELECT pg_catalog.min(e.seq) INTO conflict
      FROM tokex.token_use u JOIN tokex.audit_event e ON e.exchange_id OPERATOR(pg_catalog.=) u.exchange_id
     WHERE u.seq OPERATOR(pg_catalog.>) bound AND e.seq OPERATOR(pg_catalog.<=) bound;
    EXIT WHEN conflict IS NULL;
    SELECT pg_catalog.max(b.block) INTO k FROM tokex.audit_block b WHERE b.to_seq OPERATOR(pg_catalog.<) conflict;
  END LOOP;
  PERFORM tokex._seal_audit(k);
  RETURN tokex._audit_drop_partitions(bound) OPERATOR(pg_catalog.+) tokex._audit_prune(bound);
END
$$;

-- The partitions of audit_event and token_use (not DEFAULT) that hold only
-- rows with seq <= through_seq and whose time is over, detached and
-- dropped: the retention's cut without a DELETE (tokex._audit_prune then
-- deletes what is left at or below the cut in other partitions).  A
-- partition whose lock is not had within 200 ms (inserts queue behind the
-- wait) is left for the next round.  Returns the number of rows dropped.
CREATE FUNCTION tokex._audit_drop_partitions(through_seq bigint) RETURNS bigint
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, tokex, pg_temp SET lock_timeout = '200ms' AS $$
DECLARE
  p record;
  n bigint;
  total bigint := 0;
  newer boolean;
BEGIN
  FOR p IN
    SELECT c.oid::regclass AS part, c.relname, i.inhparent::regclass AS root
      FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.inhrelid
     WHERE i.inhparent OPERATOR(pg_catalog.=) ANY (ARRAY['tokex.audit_event'::regclass, 'tokex.token_use'::regclass])
       AND NOT COALESCE(pg_catalog.pg_get_expr(c.relpartbound, c.oid) OPERATOR(pg_catalog.=) 'DEFAULT', false)
       AND tokex._audit_partition_upper(c.oid) OPERATOR(pg_catalog.<=) pg_catalog.now()
     ORDER BY c.relname
  LOOP
    EXECUTE pg_catalog.format('SELECT EXISTS (SELECT 1 FROM tokex.%I WHERE seq OPERATOR(pg_catalog.>) $1)', p.relname)
      INTO newer USING through_seq;
    CONTINUE WHEN newer;
    BEGIN
      EXECUTE pg_catalog.format('SELECT pg_catalog.count(*) FROM tokex.%I', p.relname) INTO n;
      EXECUTE pg_catalog.format('ALTER TABLE %s DETACH PARTITION tokex.%I', p.root, p.relname);
      EXECUTE pg_catalog.format('DROP TABLE tokex.%I', p.relname);
      total := total OPERATOR(pg_catalog.+) n;
    EXCEPTION WHEN lock_not_available THEN
      RAISE NOTICE 'tokex: partition % is busy, left for the next retention round', p.relname;
    END;
  END LOOP;
  RETURN total;
END
$$;

-- The upper bound of a range partition (NULL for another one).
CREATE FUNCTION tokex._audit_partition_upper(part oid) RETURNS timestamptz
LANGUAGE sql STABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT CASE WHEN b ~ 'TO \(MAXVALUE\)$' THEN 'infinity'::timestamptz
              ELSE (pg_catalog.regexp_match(b, 'TO \(''([^'']+)''\)'))[1]::timestamptz END
    FROM (SELECT pg_catalog.pg_get_expr(c.relpartbound, c.oid) AS b FROM pg_catalog.pg_class c
           WHERE c.oid OPERATOR(pg_catalog.=) part) x
$$;

-- Partitions made ahead of time: for audit_event and token_use, one per
-- tokex.audit_partition_interval (day, week or month, UTC) from the next one
-- to tokex.audit_partition_ahead intervals ahead, where none is yet.  Not
-- the current one: a row being inserted meanwhile, routed to the DEFAULT
-- partition before the new one was attached, would then fail the DEFAULT
-- partition's narrowed range.  current => true makes it too, for when
-- nothing inserts (right after CREATE EXTENSION).
-- An interval whose rows are already in the DEFAULT partition (those of
-- the first weeks after CREATE EXTENSION) is left there.  Partitions are
-- made with CREATE TABLE and ATTACH PARTITION, which does not stop the
-- exchanges' inserts (but for those into the DEFAULT partition, a moment);
-- a lock not had at once (any lock: within 100 ms, before a deadlock check,
-- so that the sealer gives way) is tried again at the next call.  The
-- background sealer calls it once a minute; pg_cron or an administrator
-- can too.  Returns the number of partitions made.
CREATE FUNCTION tokex.audit_partition_ahead(current boolean DEFAULT false) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp SET lock_timeout = '100ms' AS $$
DECLARE
  unit text := COALESCE(pg_catalog.current_setting('tokex.audit_partition_interval', true), 'month');
  ahead integer := COALESCE(pg_catalog.current_setting('tokex.audit_partition_ahead', true), '3')::integer;
  step interval;
  upto timestamptz;
  lo timestamptz;
  hi timestamptz;
  t text;
  made integer := 0;
  busy boolean;
BEGIN
  IF unit NOT IN ('day', 'week', 'month') THEN
    RAISE EXCEPTION 'tokex.audit_partition_interval is day, week or month, not "%"', unit
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  step := pg_catalog.concat('1 ', unit)::interval;
  BEGIN
    FOREACH t IN ARRAY ARRAY['audit_event', 'token_use'] LOOP
      lo := pg_catalog.date_trunc(unit, pg_catalog.now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
      upto := ((lo AT TIME ZONE 'UTC') OPERATOR(pg_catalog.+) (step OPERATOR(pg_catalog.*) (ahead OPERATOR(pg_catalog.+) 1)))
              AT TIME ZONE 'UTC';
      IF NOT COALESCE(current, false) THEN
        lo := ((lo AT TIME ZONE 'UTC') OPERATOR(pg_catalog.+) step) AT TIME ZONE 'UTC';
      END IF;
      WHILE lo OPERATOR(pg_catalog.<) upto LOOP
        hi := ((lo AT TIME ZONE 'UTC') OPERATOR(pg_catalog.+) step) AT TIME ZONE 'UTC';
        -- an interval a partition already covers, even in part, is left as it is
        SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i
                        WHERE i.inhparent OPERATOR(pg_catalog.=) pg_catalog.format('tokex.%I', t)::regclass
                          AND tokex._audit_partition_lower(i.inhrelid) OPERATOR(pg_catalog.<) hi
                          AND tokex._audit_partition_upper(i.inhrelid) OPERATOR(pg_catalog.>) lo)
          INTO busy;
        IF NOT busy THEN
          EXECUTE pg_catalog.format('SELECT EXISTS (SELECT 1 FROM tokex.%I WHERE at OPERATOR(pg_catalog.>=) $1 '
                                    'AND at OPERATOR(pg_catalog.<) $2)', t OPERATOR(pg_catalog.||) '_default')
            INTO busy USING lo, hi;
        END IF;
        IF NOT busy THEN
          BEGIN
            PERFORM tokex._audit_partition_create(t, lo, hi);
            made := made OPERATOR(pg_catalog.+) 1;
          EXCEPTION WHEN lock_not_available OR check_violation OR invalid_object_definition OR duplicate_table THEN
            -- busy, rows reached the DEFAULT partition meanwhile, or a partition or
            -- table made by hand is in the way: not this interval, and the sealer
            -- that calls this still seals
            NULL;
          END;
        END IF;
        lo := hi;
      END LOOP;
    END LOOP;
  EXCEPTION WHEN lock_not_available THEN
    -- a table or function locked by someone else (DROP EXTENSION, a DDL):
    -- what this call made is undone with the block; next time
    RETURN 0;
  END;
  RETURN made;
END
$$;

CREATE FUNCTION tokex._audit_partition_lower(part oid) RETURNS timestamptz
LANGUAGE sql STABLE SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT CASE WHEN b ~ '^FOR VALUES FROM \(MINVALUE\)' THEN '-infinity'::timestamptz
              ELSE (pg_catalog.regexp_match(b, 'FROM \(''([^'']+)''\)'))[1]::timestamptz END
    FROM (SELECT pg_catalog.pg_get_expr(c.relpartbound, c.oid) AS b FROM pg_catalog.pg_class c
           WHERE c.oid OPERATOR(pg_catalog.=) part) x
$$;

-- One partition of table t (audit_event or token_use) for [lo, hi), named
-- t_pYYYYMMDD after lo (UTC): made on its own, dressed, then attached, so
-- the parent is locked only SHARE UPDATE EXCLUSIVE (inserts go on).
CREATE FUNCTION tokex._audit_partition_create(t text, lo timestamptz, hi timestamptz) RETURNS regclass
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, tokex, pg_temp AS $$
DECLARE
  n text := pg_catalog.format('%s_p%s', t, pg_catalog.to_char(lo AT TIME ZONE 'UTC', 'YYYYMMDD'));
BEGIN
  -- the locks ATTACH takes (the parent's, and the DEFAULT partition's, which
  -- it reads), had now or not at all: waiting for a transaction that holds
  -- the DEFAULT partition could deadlock with one that then locks the parent
  EXECUTE pg_catalog.format('LOCK TABLE ONLY tokex.%I IN SHARE UPDATE EXCLUSIVE MODE NOWAIT', t);
  EXECUTE pg_catalog.format('LOCK TABLE ONLY tokex.%I IN ACCESS EXCLUSIVE MODE NOWAIT', t OPERATOR(pg_catalog.||) '_default');
  EXECUTE pg_catalog.format('CREATE TABLE tokex.%I (LIKE tokex.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', n, t);
  -- the range as a constraint first: ATTACH then skips its scan
  EXECUTE pg_catalog.format('ALTER TABLE tokex.%I ADD CONSTRAINT %I CHECK (at >= %L AND at < %L)',
                            n, n OPERATOR(pg_catalog.||) '_range', lo, hi);
  EXECUTE pg_catalog.format('ALTER TABLE tokex.%I ATTACH PARTITION tokex.%I FOR VALUES FROM (%L) TO (%L)', t, n, lo, hi);
  EXECUTE pg_catalog.format('ALTER TABLE tokex.%I DROP CONSTRAINT %I', n, n OPERATOR(pg_catalog.||) '_range');
  PERFORM tokex._audit_partition_dress(pg_catalog.format('tokex.%I', n)::regclass);
  EXECUTE pg_catalog.format('REVOKE ALL ON tokex.%I FROM PUBLIC', n);
  RETURN pg_catalog.format('tokex.%I', n)::regclass;
END
$$;

-- The SIEM export: one JSON line per audit row since a time, in seq order,
-- as OCSF 1.3 events.  An exchange (or any issuance, granted or refused) is
-- an Authorize Session event (class 3003, activity 1 Assign Privileges: the
-- scopes granted to an actor for a subject); a downstream use is an API
-- Activity event (class 6003).  What OCSF has no place for is under
-- "unmapped".  For COPY ... TO STDOUT, see the README.
CREATE FUNCTION tokex.audit_export(since timestamptz) RETURNS TABLE (line text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, tokex, pg_temp AS $$
  SELECT x.line FROM (
    SELECT e.seq, pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
      'class_uid', 3003, 'class_name', 'Authorize Session',
      'category_uid', 3, 'category_name', 'Identity & Access Management',
      'activity_id', 1, 'activity_name', 'Assign Privileges',
      'type_uid', 300301, 'type_name', 'Authorize Session: Assign Privileges',
      'time', (pg_catalog.date_part('epoch', e.at) OPERATOR(pg_catalog.*) 1000)::bigint,
      'severity_id', 1, 'severity', 'Informational',
      'status_id', CASE e.decision WHEN 'granted' THEN 1 ELSE 2 END,
      'status', CASE e.decision WHEN 'granted' THEN 'Success' ELSE 'Failure' END,
      'status_code', e.error, 'status_detail', e.reason,
      'message', pg_catalog.format('%s %s: %s for %s', e.operation, e.decision,
                                   COALESCE(e.actor, e.subject, e.client_id, '?'), COALESCE(e.subject, '?')),
      'user', pg_catalog.jsonb_build_object('uid', e.subject),
      'actor', pg_catalog.jsonb_build_object('user', pg_catalog.jsonb_build_object('uid', e.actor),
                                             'app_uid', e.client_id),
      'privileges', pg_catalog.to_jsonb(e.scope),
      'session', pg_catalog.jsonb_build_object('uid', e.subject_sid, 'issuer', e.subject_issuer),
      'dst_endpoint', pg_catalog.jsonb_build_object('svc_name', e.audience),
      'metadata', pg_catalog.jsonb_build_object(
        'version', '1.3.0', 'uid', e.exchange_id, 'sequence', e.seq, 'log_name', 'tokex.audit_event',
        'product', pg_catalog.jsonb_build_object('name', 'tokex', 'vendor_name', 'tokex',
                                                 'version', (SELECT x.extversion FROM pg_catalog.pg_extension x
                                                              WHERE x.extname OPERATOR(pg_catalog.=) 'tokex'))),
      'unmapped', pg_catalog.jsonb_build_object(
        'operation', e.operation, 'jti', e.jti, 'audience', e.audience, 'requested_scope', e.requested_scope,
        'actor_chain', e.actor_chain, 'delegation_ids', e.delegation_ids, 'policy_ids', e.policy_ids,
        'expires_at', e.expires_at, 'issued_token_type', e.issued_token_type,
        'actor_issuer', e.actor_issuer, 'db_user', e.db_user,
        'row_hash', pg_catalog.encode(e.row_hash, 'hex'))))::text
    FROM tokex.audit_event e WHERE e.at OPERATOR(pg_catalog.>=) since
    UNION ALL
    SELECT u.seq, pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
      'class_uid', 6003, 'class_name', 'API Activity',
      'category_uid', 6, 'category_name', 'Application Activity',
      'activity_id', a.id, 'activity_name', a.name,
      'type_uid', 600300 OPERATOR(pg_catalog.+) a.id, 'type_name', 'API Activity: ' OPERATOR(pg_catalog.||) a.name,
      'time', (pg_catalog.date_part('epoch', u.at) OPERATOR(pg_catalog.*) 1000)::bigint,
      'severity_id', 1, 'severity', 'Informational',
      'status_id', CASE WHEN u.outcome ~* '^(ok|success|allowed|2[0-9][0-9])' THEN 1 ELSE 99 END,
      'status', u.outcome,
      'api', pg_catalog.jsonb_build_object('operation', u.action),
      'user', pg_catalog.jsonb_build_object('uid', e.subject),
      'actor', pg_catalog.jsonb_build_object('user', pg_catalog.jsonb_build_object('uid', e.actor),
                                             'app_uid', e.client_id),
      'dst_endpoint', pg_catalog.jsonb_build_object('svc_name', e.audience),
      'metadata', pg_catalog.jsonb_build_object(
        'version', '1.3.0', 'uid', 'use-' OPERATOR(pg_catalog.||) u.id, 'sequence', u.seq,
        'log_name', 'tokex.token_use', 'correlation_uid', u.exchange_id,
        'product', pg_catalog.jsonb_build_object('name', 'tokex', 'vendor_name', 'tokex',
                                                 'version', (SELECT x.extversion FROM pg_catalog.pg_extension x
                                                              WHERE x.extname OPERATOR(pg_catalog.=) 'tokex'))),
      'unmapped', pg_catalog.jsonb_build_object(
        'exchange_id', u.exchange_id, 'actor_chain', e.actor_chain, 'scope', e.scope,
        'recorded_by', u.db_user, 'row_hash', pg_catalog.encode(u.row_hash, 'hex'))))::text
    FROM tokex.token_use u
    LEFT JOIN tokex.audit_event e ON e.exchange_id OPERATOR(pg_catalog.=) u.exchange_id,
    LATERAL (SELECT CASE pg_catalog.upper(pg_catalog.split_part(u.action, ' ', 1))
                      WHEN 'POST' THEN 1 WHEN 'GET' THEN 2 WHEN 'HEAD' THEN 2 WHEN 'PUT' THEN 3
                      WHEN 'PATCH' THEN 3 WHEN 'DELETE' THEN 4 ELSE 99 END AS id) c,
    LATERAL (SELECT c.id, CASE c.id WHEN 1 THEN 'Create' WHEN 2 THEN 'Read' WHEN 3 THEN 'Update'
                                    WHEN 4 THEN 'Delete' ELSE 'Other' END AS name) a
    WHERE u.at OPERATOR(pg_catalog.>=) since
  ) x(seq, line)
  ORDER BY x.seq
$$;
