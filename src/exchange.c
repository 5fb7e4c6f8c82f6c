/*
 * exchange.c — tokex.exchange: RFC 8693 token exchange for agents.
 *
 * parse parameters -> verify subject and actor tokens -> build the actor
 * chain from the tokens' claims -> decide (tokex.decide, one prepared SQL
 * query over identity, delegation, resource, policy, client) -> may_act ->
 * mint an RFC 9068 access token -> one audit row, granted or denied.
 *
 * A client's mistake or a denial is returned as RFC 8693 §2.2.2 JSON, never
 * raised, so the audit row commits with the caller's transaction.
 */
#include "tokex.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/snapmgr.h"
#include "mb/pg_wchar.h"
#include "utils/datetime.h"
#include "utils/datum.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include <openssl/evp.h>

#define URN_TT		"urn:ietf:params:oauth:token-type:"
#define TT_JWT		URN_TT "jwt"
#define TT_ACCESS	URN_TT "access_token"
#define TT_ID		URN_TT "id_token"
#define MAX_CHAIN	17			/* subject + tokex.max_chain_depth (<= 16) actors */
#define MAX_SCOPES	64

typedef struct Exchange
{
	MemoryContext cxt;			/* the call's context: outlives SPI */

	/* request */
	text	   *subject_token;
	char	   *subject_token_type;
	text	   *actor_token;
	char	   *actor_token_type;
	char	   *audience;
	char	   *resource;
	char	   *scope;
	char	   *requested_token_type;
	char	   *client_id;

	/* what we learned */
	pg_uuid_t	exchange_id;
	uint8		subject_hash[32];
	uint8		actor_hash[32];
	TokexToken *subj;
	TokexToken *act;
	int			nchain;			/* subject + actors */
	char	   *chain_iss[MAX_CHAIN];
	char	   *chain_sub[MAX_CHAIN];
	TimestampTz chain_iat[MAX_CHAIN];
	char	   *chain_id[MAX_CHAIN];	/* identity ids, once resolved */
	int			nrequested;
	char	   *requested[MAX_SCOPES];
	const char *issued_type;
	bool		has_sid;		/* subject token is tokex's and names a session */
	pg_uuid_t	sid;
	bool		sql_face;		/* tokex.exchange: the client comes from the caller's role */
	int			nmay;			/* the subject token's may_act entries */
	char	  **may_iss;
	char	  **may_sub;
	char	  **may_id;			/* resolved by tokex.decide; NULL = no known identity */
	int			nrevkeys;		/* revocation keys of the presented tokens */
	bytea	   *revkeys[2];
	int			nown;			/* jtis of presented tokens tokex issued */
	pg_uuid_t	own_jti[2];
	TimestampTz at;				/* the time of the call */

	/* decision */
	const char *error;			/* OAuth error code, NULL when granted */
	char	   *reason;
	char	   *target;
	int			nscope;
	char	  **scope_out;
	Datum		delegation_ids;	/* bigint[] or 0 */
	Datum		policy_ids;
	int64		ttl;			/* seconds, from the resource; 0 = default */
	char	   *access_token;
	const char *token_client_id;	/* client_id claim: the parameter, else the current actor */
	int64		iat;
	int64		exp;
} Exchange;

static SPIPlanPtr decide_plan = NULL;

/*
 * The decision and token-state queries are inlined SQL functions: planning
 * them costs more than running them, so they always use one generic plan,
 * made once per backend (parameters only ever select rows by key).
 */
static SPIPlanPtr
prepare(const char *sql, int nargs, Oid *types)
{
	return SPI_prepare_cursor(sql, nargs, types, CURSOR_OPT_GENERIC_PLAN);
}

static void
deny(Exchange *x, const char *error, const char *fmt,...) pg_attribute_printf(3, 4);

static void
deny(Exchange *x, const char *error, const char *fmt,...)
{
	StringInfoData buf;
	MemoryContext old;

	if (x->error)
		return;					/* the first reason stands */
	/* the reason is read after SPI_finish, so not in SPI's context */
	old = MemoryContextSwitchTo(x->cxt);
	initStringInfo(&buf);
	for (;;)
	{
		va_list		args;
		int			needed;

		va_start(args, fmt);
		needed = appendStringInfoVA(&buf, fmt, args);
		va_end(args);
		if (needed == 0)
			break;
		enlargeStringInfo(&buf, needed);
	}
	MemoryContextSwitchTo(old);
	x->error = error;
	x->reason = buf.data;
}

static char *
arg_cstring(FunctionCallInfo fcinfo, int n)
{
	return PG_ARGISNULL(n) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(n));
}

static void
sha256(const text *t, uint8 out[32])
{
	if (EVP_Digest(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), out, NULL, EVP_sha256(), NULL) != 1)
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("SHA-256 failed")));
}

static bool
token_type_ok(const char *t)
{
	return strcmp(t, TT_JWT) == 0 || strcmp(t, TT_ACCESS) == 0 || strcmp(t, TT_ID) == 0;
}

/* RFC 6749 §3.3 scope-token: %x21 / %x23-5B / %x5D-7E, space separated */
static bool
split_scope(const char *s, char **out, int *n)
{
	char	   *copy = pstrdup(s);
	char	   *tok;
	char	   *save = NULL;

	*n = 0;
	for (const char *p = s; *p; p++)
		if (*p != ' ' && (*p < 0x21 || *p > 0x7e || *p == '"' || *p == '\\'))
			return false;
	for (tok = strtok_r(copy, " ", &save); tok; tok = strtok_r(NULL, " ", &save))
	{
		if (*n >= MAX_SCOPES)
			return false;
		out[(*n)++] = tok;
	}
	return *n > 0;
}

/* Step 1: parameters (RFC 8693 §2.1). */
static void
check_params(Exchange *x)
{
	if (x->subject_token == NULL || VARSIZE_ANY_EXHDR(x->subject_token) == 0)
	{
		deny(x, "invalid_request", "subject_token is required");
		return;
	}
	if (x->subject_token_type == NULL)
	{
		deny(x, "invalid_request", "subject_token_type is required");
		return;
	}
	if (!token_type_ok(x->subject_token_type))
	{
		deny(x, "invalid_request", "unsupported subject_token_type");
		return;
	}
	if ((x->actor_token != NULL) != (x->actor_token_type != NULL))
	{
		deny(x, "invalid_request", "actor_token and actor_token_type go together");
		return;
	}
	if (x->actor_token_type && !token_type_ok(x->actor_token_type))
	{
		deny(x, "invalid_request", "unsupported actor_token_type");
		return;
	}
	if (x->requested_token_type == NULL || strcmp(x->requested_token_type, TT_ACCESS) == 0)
		x->issued_type = TT_ACCESS;
	else if (strcmp(x->requested_token_type, TT_JWT) == 0)
		x->issued_type = TT_JWT;
	else
	{
		deny(x, "invalid_request", "unsupported requested_token_type");
		return;
	}
	if (x->scope && !split_scope(x->scope, x->requested, &x->nrequested))
	{
		deny(x, "invalid_request", "scope is not a list of scope tokens");
		return;
	}
	if (x->audience == NULL && x->resource == NULL)
	{
		deny(x, "invalid_request", "audience or resource is required");
		return;
	}
	if (x->resource && strchr(x->resource, ':') == NULL)
	{
		deny(x, "invalid_request", "resource must be an absolute URI");
		return;
	}
}

static TimestampTz
claim_time(json_t *payload, const char *name)
{
	json_t	   *v = json_object_get(payload, name);

	/* a token without iat counts as older than any revocation */
	if (!json_is_number(v))
		return DT_NOBEGIN;
	return time_t_to_timestamptz((pg_time_t) json_number_value(v));
}

/*
 * The chain comes from the tokens, never from which parameters were sent: a
 * subject token carrying act is already delegated, and its actors stay in
 * the chain whether or not a new actor_token is added.
 */
static void
build_chain(Exchange *x)
{
	json_t	   *a;
	int			nprior = 0;
	char	   *prior_iss[MAX_CHAIN];
	char	   *prior_sub[MAX_CHAIN];
	TimestampTz iat = claim_time(x->subj->payload, "iat");

	if (x->subj->sub == NULL)
	{
		deny(x, "invalid_grant", "subject token has no sub");
		return;
	}
	if (x->subj->own && json_object_get(x->subj->payload, "sid"))
	{
		json_t	   *sid = json_object_get(x->subj->payload, "sid");

		if (!json_is_string(sid) || !tokex_parse_uuid(json_string_value(sid), &x->sid))
		{
			deny(x, "invalid_grant", "subject token sid is malformed");
			return;
		}
		x->has_sid = true;
	}
	x->chain_iss[0] = pstrdup(x->subj->iss);
	x->chain_sub[0] = pstrdup(x->subj->sub);
	x->chain_iat[0] = iat;
	x->nchain = 1;

	/* act nests the current actor outermost (RFC 8693 §4.1) */
	for (a = json_object_get(x->subj->payload, "act"); a; a = json_object_get(a, "act"))
	{
		json_t	   *sub = json_object_get(a, "sub");
		json_t	   *iss = json_object_get(a, "iss");

		if (!json_is_object(a) || !json_is_string(sub) || (iss && !json_is_string(iss)))
		{
			deny(x, "invalid_grant", "subject token act claim is malformed");
			return;
		}
		if (nprior + 2 >= MAX_CHAIN)
		{
			deny(x, "invalid_grant", "actor chain longer than tokex.max_chain_depth (%d)",
				 tokex_max_chain_depth);
			return;
		}
		/* an issuer vouches only for its own namespace */
		if (iss && strcmp(json_string_value(iss), x->subj->iss) != 0)
		{
			deny(x, "invalid_grant", "subject token act names an identity of another issuer");
			return;
		}
		prior_iss[nprior] = pstrdup(x->subj->iss);
		prior_sub[nprior] = pstrdup(json_string_value(sub));
		nprior++;
	}
	for (int i = nprior - 1; i >= 0; i--)
	{
		x->chain_iss[x->nchain] = prior_iss[i];
		x->chain_sub[x->nchain] = prior_sub[i];
		x->chain_iat[x->nchain] = iat;
		x->nchain++;
	}
	if (x->act)
	{
		if (x->act->sub == NULL)
		{
			deny(x, "invalid_grant", "actor token has no sub");
			return;
		}
		x->chain_iss[x->nchain] = pstrdup(x->act->iss);
		x->chain_sub[x->nchain] = pstrdup(x->act->sub);
		x->chain_iat[x->nchain] = claim_time(x->act->payload, "iat");
		x->nchain++;
	}
	/* checked on the whole chain, so the audit row names the refused actor */
	if (x->nchain - 1 > tokex_max_chain_depth)
		deny(x, "invalid_grant", "actor chain longer than tokex.max_chain_depth (%d)",
			 tokex_max_chain_depth);
}

/*
 * may_act (RFC 8693 §4.4): an object or an array of objects naming who may
 * act.  Read here; tokex.decide resolves each entry to an identity, and
 * check_may_act compares identities, so an agent known under several
 * issuers is admitted whichever credential it presents.
 */
static void
read_may_act(Exchange *x)
{
	json_t	   *m = json_object_get(x->subj->payload, "may_act");
	size_t		n;

	if (m == NULL)
		return;
	if (json_is_object(m))
		n = 1;
	else if (json_is_array(m) && json_array_size(m) > 0 && json_array_size(m) <= 64)
		n = json_array_size(m);
	else
	{
		deny(x, "invalid_grant", "subject token may_act claim is malformed");
		return;
	}
	x->may_iss = palloc(sizeof(char *) * n);
	x->may_sub = palloc(sizeof(char *) * n);
	for (size_t i = 0; i < n; i++)
	{
		json_t	   *e = json_is_object(m) ? m : json_array_get(m, i);
		json_t	   *sub = json_object_get(e, "sub");
		json_t	   *iss = json_object_get(e, "iss");

		if (!json_is_object(e) || !json_is_string(sub) || (iss && !json_is_string(iss)))
		{
			deny(x, "invalid_grant", "subject token may_act claim is malformed");
			return;
		}
		/* without iss, may_act names an identity of the subject token's issuer */
		x->may_iss[i] = pstrdup(iss ? json_string_value(iss) : x->subj->iss);
		x->may_sub[i] = pstrdup(json_string_value(sub));
	}
	x->nmay = (int) n;
}

static void
check_may_act(Exchange *x)
{
	const char *actor_id;

	if (json_object_get(x->subj->payload, "may_act") == NULL)
		return;
	if (x->act == NULL)
	{
		/* a delegated chain re-exchanged without a new actor adds no one */
		if (x->nchain > 1)
			return;
		deny(x, "invalid_request", "the subject token names who may act (may_act): an actor_token is required");
		return;
	}
	actor_id = x->chain_id[x->nchain - 1];
	for (int i = 0; i < x->nmay; i++)
	{
		/* the same identity, whichever issuer names it */
		if (x->may_id && x->may_id[i] && actor_id && strcmp(x->may_id[i], actor_id) == 0)
			return;
		/* an entry that names no known identity matches only its exact pair */
		if ((x->may_id == NULL || x->may_id[i] == NULL) &&
			strcmp(x->may_sub[i], x->act->sub) == 0 && strcmp(x->may_iss[i], x->act->iss) == 0)
			return;
	}
	deny(x, "invalid_grant", "actor \"%s\" is not admitted by the subject token's may_act", x->act->sub);
}

static Datum
text_array(char **items, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * (n ? n : 1));

	for (int i = 0; i < n; i++)
		d[i] = CStringGetTextDatum(items[i]);
	return PointerGetDatum(construct_array(d, n, TEXTOID, -1, false, TYPALIGN_INT));
}

static Datum
tstz_array(TimestampTz *items, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * (n ? n : 1));

	for (int i = 0; i < n; i++)
		d[i] = TimestampTzGetDatum(items[i]);
	return PointerGetDatum(construct_array(d, n, TIMESTAMPTZOID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/* text[] from a datum into C strings in the current context */
static int
untext_array(Datum arr, char ***out)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	deconstruct_array(DatumGetArrayTypeP(arr), TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	*out = palloc(sizeof(char *) * (n ? n : 1));
	for (int i = 0; i < n; i++)
		(*out)[i] = nulls[i] ? NULL : TextDatumGetCString(elems[i]);
	return n;
}

static char *
scope_string(char **scopes, int n)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; i < n; i++)
		appendStringInfo(&buf, "%s%s", i ? " " : "", scopes[i]);
	return buf.data;
}

/* The scope claim of the subject token bounds the grant; absent = no bound. */
static Datum
token_scope(Exchange *x, bool *isnull)
{
	json_t	   *s = json_object_get(x->subj->payload, "scope");
	char	   *items[MAX_SCOPES];
	int			n = 0;

	*isnull = true;
	if (s == NULL)
		return (Datum) 0;
	*isnull = false;
	if (!json_is_string(s) || !split_scope(json_string_value(s), items, &n))
		return text_array(items, 0);	/* malformed or empty: grants nothing */
	return text_array(items, n);
}

static Datum
bytea_array(bytea **items, int n)
{
	return PointerGetDatum(construct_array((Datum *) items, n, BYTEAOID, -1, false, TYPALIGN_INT));
}

static Datum
uuid_array(pg_uuid_t *items, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * (n ? n : 1));

	for (int i = 0; i < n; i++)
		d[i] = UUIDPGetDatum(&items[i]);
	return PointerGetDatum(construct_array(d, n, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
}

/*
 * What revocation needs of a presented token: its key (issuer, jti), and
 * for a token of ours, the jti that names its audit row.  A token of ours
 * whose jti is no UUID has no audit row, so it was never issued.
 */
static bool
note_presented(Exchange *x, TokexToken *t, const char *which)
{
	json_t	   *jti = json_object_get(t->payload, "jti");
	char	   *text = NULL;

	if (jti)
	{
		bytea	   *k;

		text = tokex_jti_text(jti);
		if (text == NULL)
		{
			deny(x, "invalid_grant", "%s: jti is neither a string nor a number", which);
			return false;
		}
		k = palloc(VARHDRSZ + 32);
		SET_VARSIZE(k, VARHDRSZ + 32);
		tokex_jti_key(t->iss, text, (uint8 *) VARDATA(k));
		x->revkeys[x->nrevkeys++] = k;
	}
	if (t->own)
	{
		if (text == NULL || !tokex_parse_uuid(text, &x->own_jti[x->nown]))
		{
			deny(x, "invalid_grant", "%s: a token of tokex's without its audit row was never issued", which);
			return false;
		}
		x->nown++;
	}
	return true;
}

/*
 * Decisions are judged as of the call: the latest committed state (not the
 * snapshot of a REPEATABLE READ or SERIALIZABLE transaction opened before a
 * revocation committed) and the clock (not the transaction's start).  The
 * caller's own uncommitted changes stay visible.
 */
static int
execute_now(SPIPlanPtr plan, Datum *values, const char *nulls, bool read_only, long tcount)
{
	return SPI_execute_snapshot(plan, values, nulls, GetLatestSnapshot(), InvalidSnapshot,
								read_only, false, tcount);
}

/* Steps 2-8 of the decision: tokex.decide, then may_act. Runs inside SPI. */
static void
decide(Exchange *x, MemoryContext keep)
{
	Datum		values[15];
	char		nulls[15];
	bool		isnull;
	HeapTuple	tup;
	TupleDesc	td;
	MemoryContext old;
	int			rc;
	char	  **ids;
	char	   *identity_error;

	if (decide_plan == NULL)
	{
		Oid			types[15] = {TEXTARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID, TEXTOID, TEXTOID,
			TEXTARRAYOID, TEXTARRAYOID, TEXTOID, TEXTOID, BYTEAARRAYOID, UUIDOID, UUIDARRAYOID,
		TEXTARRAYOID, TEXTARRAYOID, TIMESTAMPTZOID};
		SPIPlanPtr	p = prepare("SELECT * FROM tokex.decide($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, "
								"$11, $12, $13, $14, $15)", 15, types);

		if (p == NULL || SPI_keepplan(p) != 0)
			elog(ERROR, "tokex: cannot prepare the decision query: %s", SPI_result_code_string(SPI_result));
		decide_plan = p;
	}
	memset(nulls, ' ', sizeof(nulls));
	values[0] = text_array(x->chain_iss, x->nchain);
	values[1] = text_array(x->chain_sub, x->nchain);
	values[2] = tstz_array(x->chain_iat, x->nchain);
	values[3] = x->audience ? CStringGetTextDatum(x->audience) : (nulls[3] = 'n', (Datum) 0);
	values[4] = x->resource ? CStringGetTextDatum(x->resource) : (nulls[4] = 'n', (Datum) 0);
	values[5] = x->scope ? text_array(x->requested, x->nrequested) : (nulls[5] = 'n', (Datum) 0);
	values[6] = token_scope(x, &isnull);
	nulls[6] = isnull ? 'n' : ' ';
	values[7] = x->client_id ? CStringGetTextDatum(x->client_id) : (nulls[7] = 'n', (Datum) 0);
	values[8] = CStringGetTextDatum(tokex_issuer ? tokex_issuer : "");
	values[9] = bytea_array(x->revkeys, x->nrevkeys);
	if (x->has_sid)
		values[10] = UUIDPGetDatum(&x->sid);
	else
		nulls[10] = 'n';
	values[11] = uuid_array(x->own_jti, x->nown);
	if (x->nmay > 0)
	{
		values[12] = text_array(x->may_iss, x->nmay);
		values[13] = text_array(x->may_sub, x->nmay);
	}
	else
		nulls[12] = nulls[13] = 'n';
	values[14] = TimestampTzGetDatum(x->at);

	rc = execute_now(decide_plan, values, nulls, false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "tokex: decision query failed: %s", SPI_result_code_string(rc));
	tup = SPI_tuptable->vals[0];
	td = SPI_tuptable->tupdesc;

	old = MemoryContextSwitchTo(keep);
	identity_error = SPI_getvalue(tup, td, 1);
	if (!heap_attisnull(tup, 4, td))
	{
		untext_array(SPI_getbinval(tup, td, 4, &isnull), &ids);
		for (int i = 0; i < x->nchain; i++)
			x->chain_id[i] = ids[i];
	}
	x->delegation_ids = datumCopy(SPI_getbinval(tup, td, 6, &isnull), false, -1);
	x->policy_ids = datumCopy(SPI_getbinval(tup, td, 7, &isnull), false, -1);
	x->target = SPI_getvalue(tup, td, 8);
	if (!heap_attisnull(tup, 9, td))
		x->nscope = untext_array(SPI_getbinval(tup, td, 9, &isnull), &x->scope_out);
	{
		Datum		ttl = SPI_getbinval(tup, td, 10, &isnull);

		if (!isnull)
		{
			Interval   *iv = DatumGetIntervalP(ttl);

			x->ttl = (int64) (iv->time / USECS_PER_SEC) +
				(int64) iv->day * SECS_PER_DAY + (int64) iv->month * 30 * SECS_PER_DAY;
		}
	}
	if (x->nmay > 0 && !heap_attisnull(tup, 11, td) &&
		untext_array(SPI_getbinval(tup, td, 11, &isnull), &x->may_id) != x->nmay)
		x->may_id = NULL;
	if (identity_error)
		deny(x, "invalid_grant", "%s", identity_error);
	check_may_act(x);
	if (!x->error && !heap_attisnull(tup, 2, td))
		deny(x, SPI_getvalue(tup, td, 2), "%s", SPI_getvalue(tup, td, 3));
	MemoryContextSwitchTo(old);
}

/*
 * A tokex access token is a bearer credential for its audience.  Whoever
 * received it (that resource server) may re-exchange it to narrow it, but
 * reaching another audience takes a new actor with its own credential:
 * otherwise any resource server could move a person's token sideways.
 */
static void
check_rebinding(Exchange *x)
{
	json_t	   *aud;

	if (x->act || !x->subj->own || x->subj->typ == NULL || strcmp(x->subj->typ, "at+jwt") != 0)
		return;
	aud = json_object_get(x->subj->payload, "aud");
	if (!json_is_string(aud) || x->target == NULL || strcmp(json_string_value(aud), x->target) != 0)
		deny(x, "invalid_target",
			 "an access token is re-exchanged without a new actor only for its own audience");
}

/* Step 9: an RFC 9068 access token. */
static void
mint(Exchange *x, MemoryContext keep)
{
	json_t	   *claims;
	json_t	   *act = NULL;
	json_t	   *sid = json_object_get(x->subj->payload, "sid");
	char		jti[UUID_LEN * 2 + 5];
	int64		ttl = x->ttl > 0 ? x->ttl : tokex_default_ttl;
	char	   *tok;
	MemoryContext old;

	x->iat = tokex_now();
	ttl = Min(ttl, tokex_max_ttl);
	/* never outlive the credentials it was exchanged for */
	ttl = Min(ttl, (int64) json_number_value(json_object_get(x->subj->payload, "exp")) - x->iat);
	if (x->act)
		ttl = Min(ttl, (int64) json_number_value(json_object_get(x->act->payload, "exp")) - x->iat);
	if (ttl <= 0)
	{
		deny(x, "invalid_grant", "the presented tokens expire too soon to mint a token");
		return;
	}
	x->exp = x->iat + ttl;

	snprintf(jti, sizeof(jti), "%s",
			 DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&x->exchange_id))));
	x->token_client_id = x->client_id ? x->client_id : x->chain_id[x->nchain - 1];

	/* actors from the first to the current: the current one ends outermost */
	for (int i = 1; i < x->nchain; i++)
	{
		json_t	   *a = json_pack("{s:s}", "sub", x->chain_id[i]);

		if (act)
			json_object_set_new(a, "act", act);
		act = a;
	}
	claims = tokex_json_track(json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:I,s:I,s:I}",
										"iss", tokex_issuer,
										"sub", x->chain_id[0],
										"aud", x->target,
										"scope", scope_string(x->scope_out, x->nscope),
										"client_id", x->token_client_id,
										"jti", jti,
										"iat", (json_int_t) x->iat,
										"nbf", (json_int_t) x->iat,
										"exp", (json_int_t) x->exp));
	if (claims == NULL)
	{
		json_decref(act);
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	}
	if (act)
		json_object_set_new(claims, "act", act);
	if (x->has_sid)				/* only a tokex session; an IdP's sid means nothing here */
		json_object_set(claims, "sid", sid);
	tok = tokex_sign(claims, "at+jwt", NULL);
	old = MemoryContextSwitchTo(keep);
	x->access_token = pstrdup(tok);
	MemoryContextSwitchTo(old);
}

/* A text for the audit row, capped so that client-chosen strings cannot outgrow it. */
static json_t *
jcap(const char *s, int cap)
{
	int			len = strlen(s);

	if (len > cap)
		return json_stringn(s, pg_mbcliplen(s, len, cap));
	return json_string(s);
}

static json_t *
jcap_array(char **items, int n, int cap)
{
	json_t	   *a = json_array();

	for (int i = 0; i < n; i++)
		json_array_append_new(a, jcap(items[i], cap));
	return a;
}

static json_t *
jint8_array(Datum arr)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	json_t	   *a = json_array();

	deconstruct_array(DatumGetArrayTypeP(arr), INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
					  &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
		if (!nulls[i])
			json_array_append_new(a, json_integer((json_int_t) DatumGetInt64(elems[i])));
	return a;
}

static json_t *
jhex(const uint8 *p, int n)
{
	char		hex[2 + 64 + 1];

	hex[0] = '\\';
	hex[1] = 'x';
	hex_encode((const char *) p, n, hex + 2);
	hex[2 + 2 * n] = '\0';
	return json_string(hex);
}

/*
 * The exchange's audit row, granted or denied.  A granted row is committed
 * (by the audit writer) before the token is returned: see audit.c.
 */
static void
audit(Exchange *x)
{
	json_t	   *row = tokex_json_track(json_pack("{}"));
	char		id[UUID_LEN * 2 + 5];

#define PUT(k, v) json_object_set_new(row, (k), (v))
	snprintf(id, sizeof(id), "%s",
			 DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&x->exchange_id))));
	PUT("exchange_id", json_string(id));
	PUT("operation", json_string("exchange"));
	PUT("decision", json_string(x->error ? "denied" : "granted"));
	if (x->error)
	{
		PUT("error", json_string(x->error));
		PUT("reason", jcap(x->reason, 1024));
	}
	if (x->nchain > 0)
	{
		json_t	   *chain = json_array();

		for (int i = 0; i < x->nchain; i++)
		{
			char	   *who = x->chain_id[i] ? x->chain_id[i] : x->chain_sub[i];

			if (i == 0)
				PUT("subject", jcap(who, 512));
			else
				json_array_append_new(chain, jcap(who, 512));
			if (i == x->nchain - 1 && i > 0)
				PUT("actor", jcap(who, 512));
		}
		if (x->nchain > 1)
			PUT("actor_chain", chain);
		else
			json_decref(chain);
	}
	{
		const char *client = x->error ? x->client_id : x->token_client_id;

		if (client)
			PUT("client_id", jcap(client, 256));
	}
	if (x->target || x->audience || x->resource)
		PUT("audience", jcap(x->target ? x->target : x->audience ? x->audience : x->resource, 1024));
	if (x->scope)
		PUT("requested_scope", jcap_array(x->requested, x->nrequested, 256));
	if (!x->error)
	{
		char		buf[MAXDATELEN + 1];

		PUT("scope", jcap_array(x->scope_out, x->nscope, 256));
		PUT("jti", json_string(id));
		JsonEncodeDateTime(buf, TimestampTzGetDatum(time_t_to_timestamptz((pg_time_t) x->exp)),
						   TIMESTAMPTZOID, NULL);
		PUT("expires_at", json_string(buf));
		PUT("issued_token_type", json_string(x->issued_type));
	}
	if (x->delegation_ids)
		PUT("delegation_ids", jint8_array(x->delegation_ids));
	if (x->policy_ids)
		PUT("policy_ids", jint8_array(x->policy_ids));
	if (x->subj)
		PUT("subject_issuer", jcap(x->subj->iss, 1024));
	if (x->act)
		PUT("actor_issuer", jcap(x->act->iss, 1024));
	if (x->subject_token)
		PUT("subject_token_sha256", jhex(x->subject_hash, 32));
	if (x->actor_token)
		PUT("actor_token_sha256", jhex(x->actor_hash, 32));
	if (x->subj && json_is_string(json_object_get(x->subj->payload, "sid")))
		PUT("subject_sid", jcap(json_string_value(json_object_get(x->subj->payload, "sid")), 64));
#undef PUT
	tokex_audit_write(row, x->error == NULL);
}

static Datum
response(Exchange *x)
{
	json_t	   *j;
	char	   *s;

	if (x->error)
		j = json_pack("{s:s,s:s}", "error", x->error, "error_description", x->reason);
	else
		j = json_pack("{s:s,s:s,s:s,s:I,s:s}",
					  "access_token", x->access_token,
					  "issued_token_type", x->issued_type,
					  "token_type", "Bearer",
					  "expires_in", (json_int_t) (x->exp - x->iat),
					  "scope", scope_string(x->scope_out, x->nscope));
	s = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(tokex_adopt(s)));
}

/*
 * Who the client of a SQL call is, from something the caller cannot choose:
 * its role.  A role that is a member of one of a client's db_roles acts as
 * that client; when it maps to several it must name one (client_id), and it
 * may name only those.  A role mapped to none acts as no client (policy and
 * audience rows scoped to a client never match it).  Superusers may name
 * any client.  The HTTP face authenticates the client itself and calls
 * tokex._exchange_for_client, which no role may call directly.
 */
static SPIPlanPtr client_plan = NULL;

static void
resolve_sql_client(Exchange *x)
{
	Oid			caller = GetOuterUserId();
	Datum		v[1];
	int			rc;
	int			n;
	bool		named_ok = false;

	if (superuser_arg(caller))
		return;
	if (client_plan == NULL)
	{
		Oid			types[1] = {OIDOID};
		SPIPlanPtr	p = prepare("SELECT c.client_id FROM tokex.client c "
								"WHERE c.db_roles IS NOT NULL AND EXISTS ("
								"  SELECT 1 FROM pg_catalog.unnest(c.db_roles) rn "
								"    JOIN pg_catalog.pg_roles r ON r.rolname OPERATOR(pg_catalog.=) rn "
								"   WHERE pg_catalog.pg_has_role($1, r.oid, 'MEMBER')) "
								"ORDER BY 1 LIMIT 64", 1, types);

		if (p == NULL || SPI_keepplan(p) != 0)
			elog(ERROR, "tokex: cannot prepare the client query: %s", SPI_result_code_string(SPI_result));
		client_plan = p;
	}
	v[0] = ObjectIdGetDatum(caller);
	rc = execute_now(client_plan, v, NULL, true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "tokex: client query failed: %s", SPI_result_code_string(rc));
	n = (int) SPI_processed;
	for (int i = 0; i < n && x->client_id; i++)
		if (strcmp(SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1), x->client_id) == 0)
			named_ok = true;
	if (x->client_id && !named_ok)
		deny(x, "unauthorized_client", "role \"%s\" may not act for client \"%s\"",
			 GetUserNameFromId(caller, false), x->client_id);
	else if (x->client_id == NULL && n > 1)
		deny(x, "invalid_request", "role \"%s\" acts for several clients: client_id is required",
			 GetUserNameFromId(caller, false));
	else if (x->client_id == NULL && n == 1)
		x->client_id = MemoryContextStrdup(x->cxt,
										   SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
}

/* A token bound to a key (RFC 7800 cnf) cannot become a bearer token. */
static void
check_unbound(Exchange *x, TokexToken *t, const char *which)
{
	if (t && json_object_get(t->payload, "cnf"))
		deny(x, "invalid_grant",
			 "%s: a sender-constrained token (cnf) is exchanged only with proof of possession, "
			 "which tokex does not verify yet", which);
}

static Datum
exchange(FunctionCallInfo fcinfo, bool sql_face)
{
	Exchange   *x = palloc0(sizeof(Exchange));
	MemoryContext keep = CurrentMemoryContext;
	jose_error	err;

	x->cxt = keep;
	x->sql_face = sql_face;
	x->at = GetCurrentTimestamp();

	x->subject_token = PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0);
	x->subject_token_type = arg_cstring(fcinfo, 1);
	x->actor_token = PG_ARGISNULL(2) ? NULL : PG_GETARG_TEXT_PP(2);
	x->actor_token_type = arg_cstring(fcinfo, 3);
	x->audience = arg_cstring(fcinfo, 4);
	x->resource = arg_cstring(fcinfo, 5);
	x->scope = arg_cstring(fcinfo, 6);
	x->requested_token_type = arg_cstring(fcinfo, 7);
	x->client_id = arg_cstring(fcinfo, 8);

	if (!pg_strong_random(x->exchange_id.data, UUID_LEN))
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("no random bytes for the exchange id")));
	x->exchange_id.data[6] = (x->exchange_id.data[6] & 0x0f) | 0x40;	/* UUID v4 */
	x->exchange_id.data[8] = (x->exchange_id.data[8] & 0x3f) | 0x80;
	if (x->subject_token)
		sha256(x->subject_token, x->subject_hash);
	if (x->actor_token)
		sha256(x->actor_token, x->actor_hash);
	if (tokex_issuer == NULL || tokex_issuer[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("tokex.issuer is not set"),
				 errhint("Set it with ALTER DATABASE ... SET tokex.issuer = 'https://...'.")));

	check_params(x);
	if (!x->error)
	{
		x->subj = tokex_verify(VARDATA_ANY(x->subject_token), VARSIZE_ANY_EXHDR(x->subject_token),
							   NULL, &err);
		if (x->subj == NULL)
			deny(x, "invalid_grant", "subject_token: %s", err.detail);
		else if (note_presented(x, x->subj, "subject_token"))
			check_unbound(x, x->subj, "subject_token");
	}
	if (!x->error && x->actor_token)
	{
		x->act = tokex_verify(VARDATA_ANY(x->actor_token), VARSIZE_ANY_EXHDR(x->actor_token),
							  NULL, &err);
		if (x->act == NULL)
			deny(x, "invalid_grant", "actor_token: %s", err.detail);
		else if (x->act->own && x->act->typ && strcmp(x->act->typ, "at+jwt") == 0)
			deny(x, "invalid_grant", "actor_token: an access token minted for a resource is not an actor credential");
		else if (json_object_get(x->act->payload, "sid") || json_object_get(x->act->payload, "may_act") ||
				 json_object_get(x->act->payload, "act"))
			deny(x, "invalid_grant", "actor_token: a session or delegated token is not an actor credential");
		else if (note_presented(x, x->act, "actor_token"))
			check_unbound(x, x->act, "actor_token");
	}
	if (!x->error)
		build_chain(x);
	if (!x->error)
		read_may_act(x);
	if (!x->error && x->audience && strchr(x->audience, ' '))
		deny(x, "invalid_target", "exactly one audience may be requested");

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "tokex: SPI_connect failed");
	if (!x->error && sql_face)
		resolve_sql_client(x);
	if (!x->error)
		decide(x, keep);
	if (!x->error)
		check_rebinding(x);
	if (!x->error)
	{
		/* refuse before signing anything whose row could not be made durable */
		tokex_audit_require_durable();
		mint(x, keep);
	}
	audit(x);
	SPI_finish();

	PG_RETURN_DATUM(response(x));
}

PG_FUNCTION_INFO_V1(tokex_exchange);
Datum
tokex_exchange(PG_FUNCTION_ARGS)
{
	return exchange(fcinfo, true);
}

/* tokex._exchange_for_client: the HTTP face, which authenticated the client. */
PG_FUNCTION_INFO_V1(tokex_exchange_for_client);
Datum
tokex_exchange_for_client(PG_FUNCTION_ARGS)
{
	return exchange(fcinfo, false);
}

/*
 * tokex.introspect (RFC 7662): {"active":false} for anything invalid,
 * expired, revoked or unknown, with nothing more said; else the claims.
 * Read-only, so it can serve from a hot standby.
 */
static SPIPlanPtr active_plan = NULL;

static bool
token_active(Exchange *x)
{
	Datum		v[9];
	char		n[9];
	bool		isnull;
	bool		active;
	int			rc;

	if (active_plan == NULL)
	{
		Oid			types[9] = {TEXTARRAYOID, TEXTARRAYOID, TIMESTAMPTZOID, TEXTOID, BOOLOID,
		BYTEAOID, UUIDOID, UUIDOID, TIMESTAMPTZOID};
		SPIPlanPtr	p = prepare("SELECT active FROM tokex._token_active($1, $2, $3, $4, $5, $6, $7, $8, $9)",
								9, types);

		if (p == NULL || SPI_keepplan(p) != 0)
			elog(ERROR, "tokex: cannot prepare the token state query: %s",
				 SPI_result_code_string(SPI_result));
		active_plan = p;
	}
	memset(n, ' ', sizeof(n));
	v[0] = text_array(x->chain_iss, x->nchain);
	v[1] = text_array(x->chain_sub, x->nchain);
	v[2] = TimestampTzGetDatum(x->chain_iat[0]);
	v[3] = CStringGetTextDatum(tokex_issuer ? tokex_issuer : "");
	v[4] = BoolGetDatum(x->subj->own);
	if (x->nrevkeys > 0)
		v[5] = PointerGetDatum(x->revkeys[0]);
	else
		n[5] = 'n';
	if (x->nown > 0)
		v[6] = UUIDPGetDatum(&x->own_jti[0]);
	else
		n[6] = 'n';
	if (x->has_sid)
		v[7] = UUIDPGetDatum(&x->sid);
	else
		n[7] = 'n';
	v[8] = TimestampTzGetDatum(x->at);
	rc = execute_now(active_plan, v, n, true, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "tokex: token state query failed: %s", SPI_result_code_string(rc));
	active = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	return !isnull && active;
}

static Datum
inactive(void)
{
	return DirectFunctionCall1(jsonb_in, CStringGetDatum("{\"active\":false}"));
}

PG_FUNCTION_INFO_V1(tokex_introspect);
Datum
tokex_introspect(PG_FUNCTION_ARGS)
{
	static const char *const members[] = {
		"iss", "sub", "act", "may_act", "aud", "scope", "client_id",
		"exp", "iat", "nbf", "jti", "sid"
	};
	Exchange   *x = palloc0(sizeof(Exchange));
	text	   *token;
	jose_error	err;
	bool		active;
	json_t	   *out;

	x->cxt = CurrentMemoryContext;
	x->at = GetCurrentTimestamp();

	if (PG_ARGISNULL(0))
		PG_RETURN_DATUM(inactive());
	token = PG_GETARG_TEXT_PP(0);
	x->subj = tokex_verify(VARDATA_ANY(token), VARSIZE_ANY_EXHDR(token), NULL, &err);
	if (x->subj == NULL)
		PG_RETURN_DATUM(inactive());
	build_chain(x);
	if (!x->error)
		note_presented(x, x->subj, "token");
	if (x->error)
		PG_RETURN_DATUM(inactive());

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "tokex: SPI_connect failed");
	active = token_active(x);
	SPI_finish();
	if (!active)
		PG_RETURN_DATUM(inactive());

	out = tokex_json_track(json_pack("{s:b,s:s}", "active", 1, "token_type", "Bearer"));
	if (out == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	for (size_t i = 0; i < lengthof(members); i++)
	{
		json_t	   *v = json_object_get(x->subj->payload, members[i]);

		if (v)
			json_object_set(out, members[i], v);
	}
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in,
										CStringGetDatum(tokex_adopt(json_dumps(out, JSON_COMPACT)))));
}
