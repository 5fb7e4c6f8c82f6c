/*
 * session.c — the credentials an agent holds: session credentials
 * (tokex.start_session), identity tokens (tokex.identity_token) and the
 * client_credentials grant of the HTTP face (tokex._client_credentials).
 *
 * Each is an issuance like an exchange, through the same steps:
 * parse -> decide (a query over the graph) -> mint -> audit -> respond.
 * start_session and identity_token are administrator calls: their mistakes
 * raise, as they always have; client_credentials answers OAuth error JSON.
 */
#include "issue.h"

#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"

/* the queries of these issuances, prepared once per backend */
static struct
{
	SPIPlanPtr	session_decide;
	SPIPlanPtr	session_insert;
	SPIPlanPtr	identity;
	SPIPlanPtr	client;
}			plans;

static int64
interval_seconds(Interval *iv)
{
	return iv->time / USECS_PER_SEC + (int64) iv->day * SECS_PER_DAY +
		(int64) iv->month * DAYS_PER_MONTH * SECS_PER_DAY;
}

static void
need_issuer(void)
{
	if (tokex_issuer == NULL || tokex_issuer[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("tokex.issuer is not set"),
				 errhint("Set it with ALTER DATABASE ... SET tokex.issuer = 'https://...'.")));
}

/*
 * Column "id" of the first row a one-parameter query finds for arg,
 * read as of the call, or NULL when it finds none (or arg is NULL).
 */
static char *
lookup(SPIPlanPtr *plan, const char *sql, const char *arg, MemoryContext cxt)
{
	Oid			types[1] = {TEXTOID};
	Datum		v[1];

	tokex_keep_plan(plan, sql, 1, types);
	if (arg == NULL)
		return NULL;
	v[0] = CStringGetTextDatum(arg);
	if (execute_now(*plan, v, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		return NULL;
	return MemoryContextStrdup(cxt, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
												 spi_column("id")));
}

/* Step (session): both identities active, a live delegation covering the scopes. */
static void
decide_session(Issuance *x, char *principal, char *agent, Datum scopes, bool scopes_null,
			   int64 ttl)
{
	Oid			types[4] = {TEXTOID, TEXTOID, TEXTARRAYOID, TIMESTAMPTZOID};
	Datum		v[4];
	char		n[4] = {' ', ' ', scopes_null ? 'n' : ' ', ' '};
	HeapTuple	tup;
	TupleDesc	td;
	bool		isnull;
	char	   *problem;
	Datum		until;

	tokex_keep_plan(&plans.session_decide,
		 "SELECT * FROM tokex._decide_session($1, $2, $3, $4)", 4, types);
	v[0] = CStringGetTextDatum(principal);
	v[1] = CStringGetTextDatum(agent);
	v[2] = scopes;
	v[3] = TimestampTzGetDatum(x->at);
	if (execute_now(plans.session_decide, v, n, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "tokex: session decision failed");
	tup = SPI_tuptable->vals[0];
	td = SPI_tuptable->tupdesc;
	problem = SPI_getvalue(tup, td, spi_column("problem"));
	if (problem && strcmp(problem, "identities") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("cannot start a session for \"%s\" and \"%s\"", principal, agent),
				 errdetail("Both must be known, active identities.")));
	if (problem)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("no live delegation from \"%s\" to \"%s\"%s", principal, agent,
						scopes_null ? "" : " covering the requested scopes")));
	{
		MemoryContext old = MemoryContextSwitchTo(x->cxt);

		x->delegation_ids = datumCopy(SPI_getbinval(tup, td, spi_column("delegation_ids"), &isnull),
									  false, -1);
		x->nscope = untext_array(SPI_getbinval(tup, td, spi_column("scopes"), &isnull), &x->scope_out);
		MemoryContextSwitchTo(old);
	}
	/* never past the delegation */
	x->session_expires = x->at + ttl * USECS_PER_SEC;
	until = SPI_getbinval(tup, td, spi_column("valid_until"), &isnull);
	if (!isnull && DatumGetTimestampTz(until) < x->session_expires)
		x->session_expires = DatumGetTimestampTz(until);
}

/* Step (session): the session row, in the caller's transaction. */
static void
record_session(Issuance *x)
{
	Oid			types[7] = {UUIDOID, TEXTOID, TEXTOID, INT8OID, TEXTARRAYOID, TIMESTAMPTZOID, TIMESTAMPTZOID};
	Datum		v[7];
	Datum	   *d;
	int			n;
	bool	   *nulls;

	tokex_keep_plan(&plans.session_insert,
		 "INSERT INTO tokex.session (id, principal, agent, delegation_id, scopes, created_at, expires_at) "
		 "VALUES ($1, $2, $3, $4, $5, $6, $7)", 7, types);
	deconstruct_array(DatumGetArrayTypeP(x->delegation_ids), INT8OID, 8, FLOAT8PASSBYVAL,
					  TYPALIGN_DOUBLE, &d, &nulls, &n);
	v[0] = UUIDPGetDatum(&x->sid);
	v[1] = CStringGetTextDatum(x->chain_id[0]);
	v[2] = CStringGetTextDatum(x->chain_id[1]);
	v[3] = d[0];
	v[4] = text_array(x->scope_out, x->nscope);
	v[5] = TimestampTzGetDatum(x->at);
	v[6] = TimestampTzGetDatum(x->session_expires);
	if (SPI_execute_plan(plans.session_insert, v, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "tokex: cannot record the session");
}

/*
 * tokex.start_session(principal, agent, scopes, ttl): a session credential
 * for agent to act for principal, within a live delegation.
 */
PG_FUNCTION_INFO_V1(tokex_start_session);
Datum
tokex_start_session(PG_FUNCTION_ARGS)
{
	Issuance   *x;
	int64		ttl;

	/* parse */
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(3))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						errmsg("principal, agent and ttl are required")));
	ttl = interval_seconds(PG_GETARG_INTERVAL_P(3));
	if (ttl <= 0 || ttl > SECS_PER_DAY)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("session ttl must be positive and at most 1 day")));
	if (!PG_ARGISNULL(2))
	{
		ArrayType  *a = PG_GETARG_ARRAYTYPE_P(2);

		if (ArrayGetNItems(ARR_NDIM(a), ARR_DIMS(a)) == 0 || array_contains_nulls(a))
			ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							errmsg("scopes must be NULL (the delegation's) or a list of scopes")));
	}
	need_issuer();
	x = issuance_new(OP_SESSION);
	x->sid = x->exchange_id;	/* one random id would do, but keep them distinct */
	if (!pg_strong_random(x->sid.data, UUID_LEN))
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("no random bytes for a session id")));
	x->sid.data[6] = (x->sid.data[6] & 0x0f) | 0x40;
	x->sid.data[8] = (x->sid.data[8] & 0x3f) | 0x80;
	x->nchain = 2;
	x->chain_id[0] = text_to_cstring(PG_GETARG_TEXT_PP(0));
	x->chain_id[1] = text_to_cstring(PG_GETARG_TEXT_PP(1));
	x->issued_type = NULL;		/* a JWT, not an access token */

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "tokex: SPI_connect failed");
	decide_session(x, x->chain_id[0], x->chain_id[1], PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2),
				   PG_ARGISNULL(2), ttl);
	record_session(x);
	PG_RETURN_DATUM(issue_finish(x));
}

/*
 * tokex.identity_token(identity, ttl): an actor token for an agent or
 * service registered in tokex, for deployments without an external workload
 * identity issuer.
 */
PG_FUNCTION_INFO_V1(tokex_identity_token);
Datum
tokex_identity_token(PG_FUNCTION_ARGS)
{
	Issuance   *x;
	Interval   *iv = PG_ARGISNULL(1) ? NULL : PG_GETARG_INTERVAL_P(1);
	char	   *identity = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));

	if (iv == NULL || interval_seconds(iv) <= 0 || interval_seconds(iv) > SECS_PER_DAY)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("ttl must be positive and at most 1 day")));
	need_issuer();
	x = issuance_new(OP_IDENTITY_TOKEN);
	x->ttl = interval_seconds(iv);
	x->nchain = 1;
	x->chain_id[0] = identity;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "tokex: SPI_connect failed");
	/* decide: an active agent or service */
	if (lookup(&plans.identity,
			   "SELECT i.id FROM tokex.identity i WHERE i.id OPERATOR(pg_catalog.=) $1 "
			   "AND i.kind OPERATOR(pg_catalog.=) ANY (ARRAY['agent', 'service']) "
			   "AND i.status OPERATOR(pg_catalog.=) 'active'", identity, x->cxt) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("cannot mint a credential for \"%s\"", identity ? identity : "(null)"),
				 errdetail("Only active agents and services get identity tokens.")));
	PG_RETURN_DATUM(issue_finish(x));
}

/*
 * tokex._client_credentials(client_id, scope, audience, resource): the
 * client_credentials grant (RFC 6749 §4.4) for a client the HTTP face has
 * authenticated: an actor token for the identity the client acts for,
 * carrying no scope or audience (exchange it for those).  Granted to no
 * one; tokex_api.token calls it.
 */
PG_FUNCTION_INFO_V1(tokex_client_credentials);
Datum
tokex_client_credentials(PG_FUNCTION_ARGS)
{
	Issuance   *x;

	need_issuer();
	x = issuance_new(OP_CLIENT_CREDENTIALS);
	x->client_id = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	x->scope = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	x->audience = PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2));
	x->resource = PG_ARGISNULL(3) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(3));
	x->issued_type = "urn:ietf:params:oauth:token-type:access_token";

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "tokex: SPI_connect failed");
	/* decide: the client acts for an active agent or service (never for a person) */
	x->chain_id[0] = lookup(&plans.client,
							"SELECT i.id FROM tokex.client c "
							"JOIN tokex.identity i ON i.id OPERATOR(pg_catalog.=) c.identity "
							"WHERE c.client_id OPERATOR(pg_catalog.=) $1 "
							"AND i.kind OPERATOR(pg_catalog.=) ANY (ARRAY['agent', 'service']) "
							"AND i.status OPERATOR(pg_catalog.=) 'active'", x->client_id, x->cxt);
	/* the audit row records what was asked, as it was asked */
	if (x->scope)
		(void) split_scope(x->scope, x->requested, &x->nrequested);
	if (x->chain_id[0] == NULL)
		deny(x, "unauthorized_client", "the client acts for no active agent or service");
	else
		x->nchain = 1;
	if (!x->error && (x->scope || x->audience || x->resource))
		deny(x, "invalid_scope", "client_credentials tokens carry no scope or audience; exchange them");
	if (!x->error)
		x->target = tokex_issuer;	/* its audience: tokex itself */
	PG_RETURN_DATUM(issue_finish(x));
}
