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
#include "utils/array.h"
#include "utils/datum.h"
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
static SPIPlanPtr audit_plan = NULL;

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

/* Parse the canonical 8-4-4-4-12 form; anything else is not one of ours. */
static bool
parse_uuid(const char *s, pg_uuid_t *out)
{
	int			j = 0;

	if (s == NULL || strlen(s) != 36)
		return false;
	for (int i = 0; i < 36; i++)
	{
		char		c = s[i];
		int			v;

		if (i == 8 || i == 13 || i == 18 || i == 23)
		{
			if (c != '-')
				return false;
			continue;
		}
		if (c >= '0' && c <= '9')
			v = c - '0';
		else if (c >= 'a' && c <= 'f')
			v = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v = c - 'A' + 10;
		else
			return false;
		if (j % 2 == 0)
			out->data[j / 2] = (unsigned char) (v << 4);
		else
			out->data[j / 2] |= (unsigned char) v;
		j++;
	}
	return true;
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

		if (!json_is_string(sid) || !parse_uuid(json_string_value(sid), &x->sid))
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

/* may_act (RFC 8693 §4.4): an object or an array of objects naming who may act. */
static void
check_may_act(Exchange *x)
{
	json_t	   *m = json_object_get(x->subj->payload, "may_act");
	json_t	   *one[1];
	json_t	  **list;
	size_t		n;

	if (m == NULL)
		return;
	if (x->act == NULL)
	{
		/* a delegated chain re-exchanged without a new actor adds no one */
		if (x->nchain > 1)
			return;
		{
			deny(x, "invalid_request", "the subject token names who may act (may_act): an actor_token is required");
			return;
		}
	}
	if (json_is_object(m))
	{
		one[0] = m;
		list = one;
		n = 1;
	}
	else if (json_is_array(m) && json_array_size(m) > 0)
	{
		list = palloc(sizeof(json_t *) * json_array_size(m));
		n = json_array_size(m);
		for (size_t i = 0; i < n; i++)
			list[i] = json_array_get(m, i);
	}
	else
	{
		deny(x, "invalid_grant", "subject token may_act claim is malformed");
		return;
	}

	for (size_t i = 0; i < n; i++)
	{
		json_t	   *sub = json_object_get(list[i], "sub");
		json_t	   *iss = json_object_get(list[i], "iss");

		if (!json_is_object(list[i]) || !json_is_string(sub) || (iss && !json_is_string(iss)))
		{
			deny(x, "invalid_grant", "subject token may_act claim is malformed");
			return;
		}
		/* without iss, may_act names an identity of the subject token's issuer */
		if (strcmp(json_string_value(sub), x->act->sub) == 0 &&
			strcmp(iss ? json_string_value(iss) : x->subj->iss, x->act->iss) == 0)
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

/* Steps 2-8 of the decision: tokex.decide, then may_act. Runs inside SPI. */
static void
decide(Exchange *x, MemoryContext keep)
{
	Datum		values[11];
	char		nulls[11];
	bool		isnull;
	HeapTuple	tup;
	TupleDesc	td;
	MemoryContext old;
	int			rc;
	char	  **ids;
	char	   *identity_error;

	if (decide_plan == NULL)
	{
		Oid			types[11] = {TEXTARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID, TEXTOID, TEXTOID,
		TEXTARRAYOID, TEXTARRAYOID, TEXTOID, TEXTOID, TEXTARRAYOID, UUIDOID};
		SPIPlanPtr	p = prepare("SELECT * FROM tokex.decide($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
								11, types);

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
	{
		char	   *jtis[2];
		int			njti = 0;
		json_t	   *j = json_object_get(x->subj->payload, "jti");

		if (json_is_string(j))
			jtis[njti++] = (char *) json_string_value(j);
		j = x->act ? json_object_get(x->act->payload, "jti") : NULL;
		if (json_is_string(j))
			jtis[njti++] = (char *) json_string_value(j);
		values[9] = text_array(jtis, njti);
	}
	if (x->has_sid)
		values[10] = UUIDPGetDatum(&x->sid);
	else
		nulls[10] = 'n';

	/* not read-only: see what this statement wrote before (a session just started) */
	rc = SPI_execute_plan(decide_plan, values, nulls, false, 1);
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

static void
audit(Exchange *x)
{
	Datum		v[21];
	char		n[21];
	int			rc;
	char	  **actors = x->nchain > 1 ? palloc(sizeof(char *) * x->nchain) : NULL;

	if (audit_plan == NULL)
	{
		Oid			types[21] = {UUIDOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTARRAYOID,
			TEXTOID, TEXTOID, TEXTARRAYOID, TEXTARRAYOID, UUIDOID, TIMESTAMPTZOID, INT8ARRAYOID,
		INT8ARRAYOID, TEXTOID, TEXTOID, BYTEAOID, BYTEAOID, TEXTOID, TEXTOID};
		SPIPlanPtr	p = SPI_prepare("INSERT INTO tokex.audit_event (exchange_id, decision, error, reason, "
									"subject, actor, actor_chain, client_id, audience, requested_scope, scope, "
									"jti, expires_at, delegation_ids, policy_ids, subject_issuer, actor_issuer, "
									"subject_token_sha256, actor_token_sha256, subject_sid, issued_token_type) "
									"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, "
									"$15, $16, $17, $18, $19, $20, $21)", 21, types);

		if (p == NULL || SPI_keepplan(p) != 0)
			elog(ERROR, "tokex: cannot prepare the audit insert: %s", SPI_result_code_string(SPI_result));
		audit_plan = p;
	}
	memset(n, 'n', sizeof(n));
#define SET(i, d) (v[i] = (d), n[i] = ' ')
#define SETS(i, s) do { if (s) SET(i, CStringGetTextDatum(s)); } while (0)
	SET(0, UUIDPGetDatum(&x->exchange_id));
	SET(1, CStringGetTextDatum(x->error ? "denied" : "granted"));
	SETS(2, x->error);
	SETS(3, x->reason);
	for (int i = 0; i < x->nchain; i++)
	{
		char	   *who = x->chain_id[i] ? x->chain_id[i] : x->chain_sub[i];

		if (i == 0)
			SETS(4, who);
		else
			actors[i - 1] = who;
	}
	if (actors)
	{
		SETS(5, actors[x->nchain - 2]);
		SET(6, text_array(actors, x->nchain - 1));
	}
	SETS(7, x->error ? x->client_id : x->token_client_id);
	SETS(8, x->target ? x->target : x->audience ? x->audience : x->resource);
	if (x->scope)
		SET(9, text_array(x->requested, x->nrequested));
	if (!x->error)
	{
		SET(10, text_array(x->scope_out, x->nscope));
		SET(11, UUIDPGetDatum(&x->exchange_id));
		SET(12, TimestampTzGetDatum(time_t_to_timestamptz((pg_time_t) x->exp)));
	}
	if (x->delegation_ids)
		SET(13, x->delegation_ids);
	if (x->policy_ids)
		SET(14, x->policy_ids);
	if (x->subj)
		SETS(15, x->subj->iss);
	if (x->act)
		SETS(16, x->act->iss);
	if (x->subject_token)
	{
		bytea	   *b = palloc(VARHDRSZ + 32);

		SET_VARSIZE(b, VARHDRSZ + 32);
		memcpy(VARDATA(b), x->subject_hash, 32);
		SET(17, PointerGetDatum(b));
	}
	if (x->actor_token)
	{
		bytea	   *b = palloc(VARHDRSZ + 32);

		SET_VARSIZE(b, VARHDRSZ + 32);
		memcpy(VARDATA(b), x->actor_hash, 32);
		SET(18, PointerGetDatum(b));
	}
	if (x->subj && json_is_string(json_object_get(x->subj->payload, "sid")))
		SETS(19, json_string_value(json_object_get(x->subj->payload, "sid")));
	if (!x->error)
		SETS(20, x->issued_type);
#undef SET
#undef SETS
	rc = SPI_execute_plan(audit_plan, v, n, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "tokex: audit insert failed: %s", SPI_result_code_string(rc));
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

PG_FUNCTION_INFO_V1(tokex_exchange);
Datum
tokex_exchange(PG_FUNCTION_ARGS)
{
	Exchange   *x = palloc0(sizeof(Exchange));
	MemoryContext keep = CurrentMemoryContext;
	jose_error	err;

	x->cxt = keep;

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
	}
	if (!x->error)
		build_chain(x);
	if (!x->error && x->audience && strchr(x->audience, ' '))
		deny(x, "invalid_target", "exactly one audience may be requested");

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "tokex: SPI_connect failed");
	if (!x->error)
		decide(x, keep);
	if (!x->error)
		check_rebinding(x);
	if (!x->error)
		mint(x, keep);
	audit(x);
	SPI_finish();

	PG_RETURN_DATUM(response(x));
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
	Datum		v[8];
	char		n[8];
	json_t	   *jti = json_object_get(x->subj->payload, "jti");
	pg_uuid_t	jti_uuid;
	bool		isnull;
	bool		active;
	int			rc;

	if (active_plan == NULL)
	{
		Oid			types[8] = {TEXTARRAYOID, TEXTARRAYOID, TIMESTAMPTZOID, TEXTOID, BOOLOID,
		TEXTOID, UUIDOID, UUIDOID};
		SPIPlanPtr	p = prepare("SELECT active FROM tokex._token_active($1, $2, $3, $4, $5, $6, $7, $8)",
								8, types);

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
	if (json_is_string(jti))
		v[5] = CStringGetTextDatum(json_string_value(jti));
	else
		n[5] = 'n';
	if (x->subj->own && json_is_string(jti) && parse_uuid(json_string_value(jti), &jti_uuid))
		v[6] = UUIDPGetDatum(&jti_uuid);
	else
		n[6] = 'n';
	if (x->has_sid)
		v[7] = UUIDPGetDatum(&x->sid);
	else
		n[7] = 'n';
	rc = SPI_execute_plan(active_plan, v, n, true, 1);
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

	if (PG_ARGISNULL(0))
		PG_RETURN_DATUM(inactive());
	token = PG_GETARG_TEXT_PP(0);
	x->subj = tokex_verify(VARDATA_ANY(token), VARSIZE_ANY_EXHDR(token), NULL, &err);
	if (x->subj == NULL)
		PG_RETURN_DATUM(inactive());
	build_chain(x);
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
