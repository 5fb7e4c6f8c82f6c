/*
 * jwt.c — JWTs as PostgreSQL sees them: tokex_verify, which every token
 * presented to tokex goes through (tokex's own keys or a trusted issuer's,
 * chosen by iss), and the SQL primitives jwt_sign, jwt_verify and
 * jwt_decode.  The JOSE work is jose_jwt_verify and jose_jws_sign in the
 * core; the keys come from keys.c and issuers.c.
 *
 * What the core hands back is owned by the current memory context
 * (tokex_track, tokex_adopt), so an ERROR cannot leak it.
 */
#include "issue.h"

#include "catalog/pg_type.h"
#include "funcapi.h"
#include "lib/ilist.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

/* The keys a token may be verified with, all loaded before verification starts. */
typedef struct KeyChoice
{
	TokexToken *token;
	const jose_keyset *own;
	const TrustedIssuers *trusted;
} KeyChoice;

/*
 * jose_keyset_fn for tokex_verify: the token's "iss" chooses the keys,
 * tokex's own or a trusted issuer's (with the audience that issuer
 * requires).  It only looks among keys loaded beforehand, so it cannot
 * raise inside the core.
 */
static int
issuer_keys(void *arg, json_t *claims, jose_keyset *out, jose_error *err)
{
	KeyChoice  *c = (KeyChoice *) arg;
	json_t	   *iss = json_object_get(claims, "iss");
	const jose_keyset *keys;

	if (!json_is_string(iss))
		return jose_seterr(err, JOSE_E_CLAIM_TYPE, "token has no \"iss\" claim");
	c->token->own = tokex_issuer && tokex_issuer[0] &&
		strcmp(json_string_value(iss), tokex_issuer) == 0;
	keys = c->token->own ? c->own : tokex_trusted_issuer_keys(c->trusted, json_string_value(iss));
	if (keys == NULL || keys->nkeys == 0)
		return jose_seterr(err, JOSE_E_NO_KEY, c->token->own ? "tokex has no published keys" :
						   "issuer is not trusted");
	*out = *keys;
	return 0;
}

/* ---------------------------------------------------------------------
 * The verified-token cache
 *
 * An agent presents the same session credential and actor token call after
 * call.  What their verification costs (the signature, the parsing) is
 * kept per backend, keyed by the token's SHA-256: the header and claims as
 * verified, whether the token is tokex's own, and tokex.issuer at the time
 * (which decides "own").  A hit still runs every claim check (times,
 * audience), and the caller still runs every liveness check (revocation,
 * identities, session, delegations).  Everything is dropped when a key or
 * a trusted issuer changes (tokex_table_cache_generation); at most
 * tokex.verified_token_cache entries, least recently used first out, and
 * an expired entry goes when it is next met.
 * ---------------------------------------------------------------------
 */
typedef struct VerifiedToken
{
	uint8		hash[32];		/* the hash table key */
	dlist_node	lru;			/* most recently used at the head */
	json_t	   *header;			/* one reference each, owned by the entry */
	json_t	   *payload;
	char	   *payload_text;	/* in cache_cxt */
	char	   *issuer;			/* tokex.issuer when verified, in cache_cxt */
	bool		own;
} VerifiedToken;

static HTAB *cache = NULL;
static MemoryContext cache_cxt = NULL;
static dlist_head cache_lru = DLIST_STATIC_INIT(cache_lru);
static uint64 cache_generation = 0;
static long cache_entries = 0;
static int64 cache_hits = 0;
static int64 cache_misses = 0;

static void
cache_drop(VerifiedToken *e)
{
	dlist_delete(&e->lru);
	json_decref(e->header);
	json_decref(e->payload);
	pfree(e->payload_text);
	pfree(e->issuer);
	hash_search(cache, e->hash, HASH_REMOVE, NULL);
	cache_entries--;
}

static void
cache_clear(void)
{
	while (!dlist_is_empty(&cache_lru))
		cache_drop(dlist_container(VerifiedToken, lru, dlist_head_node(&cache_lru)));
}

/* The entry for hash, or NULL; the whole cache goes when keys or issuers changed. */
static VerifiedToken *
cache_find(const uint8 hash[32])
{
	VerifiedToken *e;

	if (cache == NULL || tokex_token_cache_size <= 0)
		return NULL;
	if (cache_generation != tokex_table_cache_generation)
	{
		cache_clear();
		cache_generation = tokex_table_cache_generation;
		return NULL;
	}
	e = hash_search(cache, hash, HASH_FIND, NULL);
	if (e && strcmp(e->issuer, tokex_issuer ? tokex_issuer : "") != 0)
	{
		cache_drop(e);
		return NULL;
	}
	if (e)
	{
		dlist_delete(&e->lru);
		dlist_push_head(&cache_lru, &e->lru);
	}
	return e;
}

static void
cache_add(const uint8 hash[32], const jose_jwt *jwt, bool own)
{
	VerifiedToken *e;
	bool		found;

	if (tokex_token_cache_size <= 0)
		return;
	if (cache == NULL)
	{
		HASHCTL		ctl = {0};

		cache_cxt = AllocSetContextCreate(TopMemoryContext, "tokex verified tokens", ALLOCSET_DEFAULT_SIZES);
		ctl.keysize = 32;
		ctl.entrysize = sizeof(VerifiedToken);
		ctl.hcxt = cache_cxt;
		cache = hash_create("tokex verified tokens", 256, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		cache_generation = tokex_table_cache_generation;
	}
	if (cache_generation != tokex_table_cache_generation)
	{
		cache_clear();
		cache_generation = tokex_table_cache_generation;
	}
	while (cache_entries >= tokex_token_cache_size && !dlist_is_empty(&cache_lru))
		cache_drop(dlist_container(VerifiedToken, lru, dlist_tail_node(&cache_lru)));
	/* copy first: nothing may raise once the entry is in the table */
	{
		char	   *text = MemoryContextStrdup(cache_cxt, jwt->payload_text);
		char	   *issuer = MemoryContextStrdup(cache_cxt, tokex_issuer ? tokex_issuer : "");

		e = hash_search(cache, hash, HASH_ENTER, &found);
		if (found)
		{
			pfree(text);
			pfree(issuer);
			return;
		}
		e->payload_text = text;
		e->issuer = issuer;
	}
	e->header = json_incref(jwt->header);
	e->payload = json_incref(jwt->payload);
	e->own = own;
	dlist_push_head(&cache_lru, &e->lru);
	cache_entries++;
}

static TokexToken *
token_of(json_t *header, json_t *payload, const char *payload_text, bool own)
{
	TokexToken *t = palloc0(sizeof(TokexToken));
	json_t	   *typ = json_object_get(header, "typ");

	t->header = header;
	t->payload = payload;
	t->payload_text = payload_text;
	t->own = own;
	t->iss = json_string_value(json_object_get(payload, "iss"));
	/* NULL when absent; the claim checks refused a sub that is not a string */
	t->sub = json_string_value(json_object_get(payload, "sub"));
	t->typ = json_is_string(typ) ? json_string_value(typ) : NULL;
	return t;
}

/*
 * Verify a compact JWS and its registered claims.  Returns NULL with err set
 * on any failure; never raises for a bad token (it may raise for a broken
 * key cache).  The claims live as long as the current memory context.
 */
TokexToken *
tokex_verify(const char *token, size_t len, const char *audience, jose_error *err)
{
	KeyChoice	choice;
	jose_jwt_rules rules = {0};
	TokexToken *t;
	jose_jwt   *jwt;
	uint8		hash[32];
	VerifiedToken *hit;

	choice.own = tokex_own_keys();
	choice.trusted = tokex_trusted_issuers();
	tokex_sha256(token, len, hash);
	hit = cache_find(hash);
	if (hit)
		cache_hits++;
	else
		cache_misses++;
	if (hit)
	{
		/* the claims are checked again, at this call's time and audience */
		if (jose_jwt_check_claims(hit->payload, tokex_now(), tokex_clock_skew, audience, true, err) < 0)
		{
			if (err->code == JOSE_E_EXPIRED)
				cache_drop(hit);
			return NULL;
		}
		/* the call holds its own references, so an eviction cannot pull them away */
		return token_of(tokex_json_track(json_incref(hit->header)),
						tokex_json_track(json_incref(hit->payload)),
						pstrdup(hit->payload_text), hit->own);
	}
	choice.token = t = palloc0(sizeof(TokexToken));
	rules.select = issuer_keys;
	rules.select_arg = &choice;
	rules.now = tokex_now();
	rules.skew = tokex_clock_skew;
	rules.audience = audience;
	rules.require_exp = true;
	jwt = tokex_track(jose_jwt_verify(token, len, &rules, err), 0, tokex_release_jwt);
	if (jwt == NULL)
		return NULL;
	cache_add(hash, jwt, t->own);
	return token_of(jwt->header, jwt->payload, jwt->payload_text, t->own);
}

/* tokex._verified_token_cache(): this backend's cache, for tests and operators. */
PG_FUNCTION_INFO_V1(tokex_verified_token_cache);
Datum
tokex_verified_token_cache(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		v[3];
	bool		n[3] = {false, false, false};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "tokex: _verified_token_cache must return a record");
	v[0] = Int64GetDatum(cache_entries);
	v[1] = Int64GetDatum(cache_hits);
	v[2] = Int64GetDatum(cache_misses);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), v, n)));
}

PG_FUNCTION_INFO_V1(tokex_jwt_sign);
Datum
tokex_jwt_sign(PG_FUNCTION_ARGS)
{
	Jsonb	   *claims;
	json_t	   *j;
	json_t	   *iss;
	char	   *kid = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	StringInfoData extra;
	json_t	   *jti;
	json_t	   *exp;
	Issuance   *x;

	if (PG_ARGISNULL(0))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("claims must not be NULL")));
	claims = PG_GETARG_JSONB_P(0);
	j = tokex_jsonb_to_json(claims, "claims");	/* validates: an object jansson can parse */
	iss = json_object_get(j, "iss");
	if (iss && !(json_is_string(iss) && tokex_issuer && strcmp(json_string_value(iss), tokex_issuer) == 0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid claims"),
				 errdetail("tokex signs only as its own issuer (tokex.issuer).")));
	x = issuance_new(OP_JWT_SIGN);
	x->sign_key = tokex_signing_key(kid);

	/* sign the jsonb text itself, so numbers keep the digits they were given */
	initStringInfo(&extra);
	if (iss == NULL)
	{
		appendStringInfoString(&extra, "\"iss\":");
		escape_json(&extra, tokex_issuer);
	}
	if (json_object_get(j, "iat") == NULL)
		appendStringInfo(&extra, "%s\"iat\":" INT64_FORMAT, extra.len ? "," : "", tokex_now());
	/* every token tokex signs has an audit row, keyed by its jti: the issuance's id */
	jti = json_object_get(j, "jti");
	if (jti == NULL)
		appendStringInfo(&extra, "%s\"jti\":\"%s\"", extra.len ? "," : "",
						 DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&x->exchange_id))));
	else if (!json_is_string(jti) || !tokex_parse_uuid(json_string_value(jti), &x->exchange_id))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid claims"),
				 errdetail("jti must be a UUID: it keys the token's audit row."),
				 errhint("Leave jti out and tokex generates one.")));
	/* the audit row and revocation name the jti as uuid_out writes it */
	else if (strcmp(DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&x->exchange_id))),
					json_string_value(jti)) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid claims"),
				 errdetail("jti must be a UUID in lower case, as tokex writes it in the audit row.")));
	if (extra.len)
		claims = DatumGetJsonbP(DirectFunctionCall2(jsonb_concat, JsonbPGetDatum(claims),
													tokex_jsonb_in(psprintf("{%s}", extra.data))));
	x->sign_payload = JsonbToCString(NULL, &claims->root, VARSIZE(claims));

	/* what the audit row says of it */
	if (json_is_string(json_object_get(j, "sub")))
	{
		x->nchain = 1;
		x->chain_id[0] = pstrdup(json_string_value(json_object_get(j, "sub")));
	}
	if (json_is_string(json_object_get(j, "aud")))
		x->target = pstrdup(json_string_value(json_object_get(j, "aud")));
	if (json_is_string(json_object_get(j, "client_id")))
		x->client_id = pstrdup(json_string_value(json_object_get(j, "client_id")));
	exp = json_object_get(j, "exp");
	if (json_is_integer(exp) && json_integer_value(exp) > 0 &&
		json_integer_value(exp) < INT64CONST(253402300800))
		x->exp = (int64) json_integer_value(exp);

	/* mint -> audit (committed before the token is returned) -> the token */
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "tokex: SPI_connect failed");
	PG_RETURN_DATUM(issue_finish(x));
}

PG_FUNCTION_INFO_V1(tokex_jwt_verify);
Datum
tokex_jwt_verify(PG_FUNCTION_ARGS)
{
	text	   *token;
	char	   *aud = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	jose_error	err;
	TokexToken *t;

	tokex_replica_check();		/* a standby that fell behind says so */
	if (PG_ARGISNULL(0))
	{
		jose_seterr(&err, JOSE_E_FORMAT, "token is NULL");
		tokex_invalid_token(&err);
	}
	token = PG_GETARG_TEXT_PP(0);
	t = tokex_verify(VARDATA_ANY(token), VARSIZE_ANY_EXHDR(token), aud, &err);
	if (t == NULL)
		tokex_invalid_token(&err);
	/* the claims exactly as signed: re-serializing would reword numbers */
	PG_RETURN_DATUM(tokex_jsonb_in(t->payload_text));
}

/* decode one base64url segment that must hold a JSON value; palloc'd text or ERROR */
static char *
decode_segment(const char *seg, size_t len, const char *what)
{
	uint8_t    *buf;
	size_t		n;
	jose_error	err;

	if (jose_b64url_decode(seg, len, JOSE_MAX_TOKEN_LEN, &buf, &n, &err) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("malformed token"),
				 errdetail("The %s is not valid base64url.", what)));
	tokex_track(buf, n, tokex_release_free);
	if (tokex_json_track(jose_json_parse((char *) buf, n, JOSE_E_PAYLOAD, &err)) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("malformed token"),
				 errdetail("The %s is not JSON (%s).", what, jose_json_reason_text(err.json_reason))));
	return pnstrdup((char *) buf, n);
}

PG_FUNCTION_INFO_V1(tokex_jwt_decode);
Datum
tokex_jwt_decode(PG_FUNCTION_ARGS)
{
	text	   *token = PG_GETARG_TEXT_PP(0);
	const char *s = VARDATA_ANY(token);
	size_t		len = VARSIZE_ANY_EXHDR(token);
	const char *d1,
			   *d2;
	char	   *h,
			   *p;

	if (len > JOSE_MAX_TOKEN_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("token too long"),
				 errdetail("Tokens are limited to %d bytes.", JOSE_MAX_TOKEN_LEN)));
	d1 = memchr(s, '.', len);
	d2 = d1 ? memchr(d1 + 1, '.', len - (size_t) (d1 + 1 - s)) : NULL;
	if (d2 == NULL || memchr(d2 + 1, '.', len - (size_t) (d2 + 1 - s)) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("malformed token"),
				 errdetail("A compact JWS has exactly three segments.")));
	h = decode_segment(s, (size_t) (d1 - s), "header");
	p = decode_segment(d1 + 1, (size_t) (d2 - d1 - 1), "payload");
	PG_RETURN_DATUM(tokex_jsonb_in(psprintf("{\"header\":%s,\"payload\":%s}", h, p)));
}
