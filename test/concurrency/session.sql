-- For one person/agent pair: a session, the agent's identity token and a
-- token minted from them (separate statements: an exchange only sees rows
-- committed or written before its statement started).
-- Prints: session_token session_id actor_token minted_token
\set ON_ERROR_STOP 1
SELECT tokex.start_session(:'person', :'agent', '{calendar.read}', '1 hour') AS s \gset
SELECT tokex.identity_token(:'agent', '1 hour') AS at \gset
SELECT (:'s'::jsonb)->>'session_token' AS st, (:'s'::jsonb)->>'session_id' AS sid \gset
SELECT :'st', :'sid', :'at',
       tokex.exchange(:'st', 'urn:ietf:params:oauth:token-type:jwt',
                      :'at', 'urn:ietf:params:oauth:token-type:jwt',
                      audience => 'calendar-api')->>'access_token';
