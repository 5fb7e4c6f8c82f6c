------------------------------------------------------------------------
-- The identity graph: identities, delegations, resources, policy (the
-- tables are the admin API; plain DML takes effect at the next call)
------------------------------------------------------------------------

-- A node: a person, an agent or a service.  (issuer, subject) maps an
-- external token's iss/sub to it; tokex's own tokens carry the id as sub.
CREATE TABLE tokex.identity (
  id                 text PRIMARY KEY
                     CHECK (id ~ '^[[:graph:]]+$' AND pg_catalog.length(id) <= 256),
  kind               text NOT NULL CHECK (kind IN ('human', 'agent', 'service')),
  issuer             text,
  subject            text,
  status             text NOT NULL DEFAULT 'active'
                     CHECK (status IN ('active', 'suspended', 'offboarded', 'decommissioned')),
  status_reason      text,
  tokens_valid_after timestamptz,
  attributes         jsonb NOT NULL DEFAULT '{}' CHECK (pg_catalog.jsonb_typeof(attributes) = 'object'),
  created_at         timestamptz NOT NULL DEFAULT pg_catalog.now(),
  UNIQUE (issuer, subject),
  CHECK ((issuer IS NULL) = (subject IS NULL))
);

-- An edge: principal lets delegate act for them, within scopes and audiences
-- (NULL audiences = any registered resource).  max_depth counts the hops this
-- edge may start: 1 = the delegate acts but cannot pass it on.
CREATE TABLE tokex.delegation (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  principal     text NOT NULL REFERENCES tokex.identity (id) ON UPDATE CASCADE,
  delegate      text NOT NULL REFERENCES tokex.identity (id) ON UPDATE CASCADE,
  scopes        text[] NOT NULL CHECK (pg_catalog.array_position(scopes, NULL) IS NULL),
  audiences     text[] CHECK (pg_catalog.array_position(audiences, NULL) IS NULL),
  max_depth     integer NOT NULL DEFAULT 1 CHECK (max_depth BETWEEN 1 AND 16),
  valid_from    timestamptz NOT NULL DEFAULT pg_catalog.now(),
  valid_until   timestamptz,
  revoked_at    timestamptz,
  revoke_reason text,
  created_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
  CHECK (principal <> delegate),
  CHECK (valid_until IS NULL OR valid_until > valid_from)
);

CREATE INDEX delegation_edge ON tokex.delegation (principal, delegate) WHERE revoked_at IS NULL;

CREATE INDEX delegation_delegate ON tokex.delegation (delegate);

-- Every audience a token may be minted for.
CREATE TABLE tokex.resource (
  audience     text PRIMARY KEY CHECK (audience ~ '^[[:graph:]]+$' AND pg_catalog.length(audience) <= 1024),
  resource_uri text UNIQUE CHECK (resource_uri ~ '^[a-zA-Z][a-zA-Z0-9+.-]*:[^[:space:]#]+$'),
  scopes       text[] NOT NULL CHECK (pg_catalog.array_position(scopes, NULL) IS NULL),
  token_ttl    interval CHECK (token_ttl >= '1 second'::interval),  -- tokens count whole seconds
  token_format text NOT NULL DEFAULT 'jwt'
               CHECK (token_format IN ('jwt', 'reference', 'txn_token', 'credential')),
  description  text
);

-- Org rules on top of the person's delegations.  NULL means "any".
-- actor is the current (outermost) actor; an exchange without an actor only
-- matches rows whose actor and actor_kind are NULL.
CREATE TABLE tokex.policy (
  id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  effect       text NOT NULL CHECK (effect IN ('allow', 'deny')),
  subject      text REFERENCES tokex.identity (id) ON UPDATE CASCADE ON DELETE CASCADE,
  subject_kind text CHECK (subject_kind IN ('human', 'agent', 'service')),
  actor        text REFERENCES tokex.identity (id) ON UPDATE CASCADE ON DELETE CASCADE,
  actor_kind   text CHECK (actor_kind IN ('human', 'agent', 'service')),
  audience     text REFERENCES tokex.resource (audience) ON UPDATE CASCADE ON DELETE CASCADE,
  client_id    text,
  scopes       text[] CHECK (pg_catalog.array_position(scopes, NULL) IS NULL),
  max_depth    integer CHECK (max_depth BETWEEN 0 AND 16),
  valid        tstzrange,
  priority     integer NOT NULL DEFAULT 0,
  description  text
);

-- The decision finds the policy rows of an exchange by these (tokex._decide):
-- those naming its subject, else its actor, else its audience, else none.
CREATE INDEX policy_by_subject ON tokex.policy (subject);

CREATE INDEX policy_by_actor ON tokex.policy (actor) WHERE subject IS NULL;

CREATE INDEX policy_by_audience ON tokex.policy (audience) WHERE subject IS NULL AND actor IS NULL;

CREATE INDEX policy_unbound ON tokex.policy (id) WHERE subject IS NULL AND actor IS NULL AND audience IS NULL;

SELECT pg_catalog.pg_extension_config_dump('tokex.identity', '');

SELECT pg_catalog.pg_extension_config_dump('tokex.delegation', '');

SELECT pg_catalog.pg_extension_config_dump('tokex.resource', '');

SELECT pg_catalog.pg_extension_config_dump('tokex.policy', '');

SELECT pg_catalog.pg_extension_config_dump('tokex.delegation_id_seq', '');

SELECT pg_catalog.pg_extension_config_dump('tokex.policy_id_seq', '');

------------------------------------------------------------------------
-- Sessions and revocation
------------------------------------------------------------------------
