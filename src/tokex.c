/*
 * tokex.c — module entry point: GUCs, and the small helpers every file
 * shares, among them the one way foreign objects are cleaned up (see
 * tokex.h: tokex_track, tokex_adopt).
 */
#include "tokex.h"
#include "issue.h"
#include "vault.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "executor/spi.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/builtins.h"
#include "utils/numeric.h"
#include "common/shortest_dec.h"
#include <math.h>
#include "utils/timestamp.h"

#include <openssl/evp.h>


PG_MODULE_MAGIC;

char	   *tokex_issuer = NULL;
int			tokex_clock_skew = 60;
int			tokex_default_ttl = 300;
int			tokex_max_ttl = 3600;
int			tokex_token_cache_size = 4096;
int			tokex_dpop_max_age = 60;
char	   *tokex_resource_audience = NULL;
bool		tokex_dpop_nonce = false;
int			tokex_dpop_nonce_lifetime = 300;
int			tokex_max_chain_depth = 4;
static int	tokex_ssf_retention = 7 * 86400;
char	   *tokex_base_url = NULL;
int			tokex_endpoint_style = TOKEX_ENDPOINTS_RPC;

/*
 * Where the HTTP endpoints are: PostgREST serves /rpc/<function>; a reverse
 * proxy (contrib/nginx) serves the same functions at /token, /introspect,
 * /revoke, /jwks and /.well-known/oauth-authorization-server.
 */
static const struct config_enum_entry endpoint_style_options[] = {
	{"rpc", TOKEX_ENDPOINTS_RPC, false},
	{"plain", TOKEX_ENDPOINTS_PLAIN, false},
	{NULL, 0, false}
};

/* An issuer identifier is a URL-like string: printable ASCII, no spaces. */
static bool
check_issuer(char **newval, void **extra, GucSource source)
{
	const char *s = *newval;

	if (s == NULL || *s == '\0')
		return true;
	if (strlen(s) > 1024)
	{
		GUC_check_errdetail("The issuer must be at most 1024 bytes.");
		return false;
	}
	for (; *s; s++)
		if (*s <= ' ' || *s > '~')
		{
			GUC_check_errdetail("The issuer must be printable ASCII without spaces.");
			return false;
		}
	return true;
}

void		_PG_init(void);

void
_PG_init(void)
{
	DefineCustomStringVariable("tokex.issuer",
							   "Issuer identifier (iss) of the tokens tokex mints.",
							   "Required to mint tokens; an https URL is expected.",
							   &tokex_issuer, "", PGC_SUSET, 0,
							   check_issuer, NULL, NULL);
	DefineCustomIntVariable("tokex.clock_skew",
							"Tolerance for exp, nbf and iat checks.",
							NULL, &tokex_clock_skew, 60, 0, 600,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("tokex.default_ttl",
							"Lifetime of minted access tokens when the resource sets none.",
							NULL, &tokex_default_ttl, 300, 1, 86400,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("tokex.max_ttl",
							"Upper bound on the lifetime of any token tokex mints.",
							NULL, &tokex_max_ttl, 3600, 1, 7 * 86400,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("tokex.verified_token_cache",
							"Verified JWTs each backend keeps (their parsed, signature-checked claims).",
							"A token presented again (an agent's session and actor token, call after call) "
							"skips its signature check and parsing; every claim and liveness check still runs. "
							"Dropped when a key or trusted issuer changes. 0 turns it off.",
							&tokex_token_cache_size, 4096, 0, 1000000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("tokex.decision_fast_path",
							 "Grant by index probes what the decision query would grant.",
							 "Every check of tokex.decide is made; a refusal, or a case the fast path does "
							 "not take, is left to the query, which gives the reason. Off: the query decides every call.",
							 &tokex_fast_decide, true, PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("tokex.audit_direct_insert",
							 "The audit writer inserts its rows as the table's tuples, not through an INSERT of JSON.",
							 "The same rows, triggers, constraints and indexes; an administrator's own trigger on "
							 "tokex.audit_event, or a Shared Signals stream, sends a batch through the INSERT.",
							 &tokex_audit_direct, true, PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("tokex.dpop_max_age",
							"How old a DPoP proof's iat may be (RFC 9449 §11.1); its jti is remembered that long.",
							NULL, &tokex_dpop_max_age, 60, 1, 3600,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomBoolVariable("tokex.dpop_nonce",
							 "DPoP proofs at the token endpoint must carry a nonce tokex issued (RFC 9449 §8).",
							 "A proof without one, or with a stale one, is refused with use_dpop_nonce and a fresh nonce "
							 "(over HTTP, the DPoP-Nonce header).",
							 &tokex_dpop_nonce, false, PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("tokex.dpop_nonce_lifetime",
							"How long a DPoP nonce tokex issued is accepted.",
							NULL, &tokex_dpop_nonce_lifetime, 300, 10, 86400,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomStringVariable("tokex.resource_audience",
							   "The audience this database serves as a resource (tokex.authenticate).",
							   NULL, &tokex_resource_audience, "", PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("tokex.max_chain_depth",
							"Most actors an act chain may hold.",
							NULL, &tokex_max_chain_depth, 4, 1, 16,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("tokex.base_url",
							   "Public base URL of the HTTP face (PostgREST), for RFC 8414 metadata.",
							   "Endpoints are <base_url>/rpc/token and so on (see tokex.endpoint_style); defaults to tokex.issuer.",
							   &tokex_base_url, "", PGC_SUSET, 0,
							   check_issuer, NULL, NULL);
	DefineCustomEnumVariable("tokex.endpoint_style",
							 "Paths of the HTTP endpoints under tokex.base_url, for RFC 8414 metadata.",
							 "rpc: /rpc/token, /rpc/introspect, /rpc/revoke, /rpc/jwks, as PostgREST serves them; "
							 "plain: /token, /introspect, /revoke, /jwks, as the reverse proxy of contrib/nginx serves them.",
							 &tokex_endpoint_style, TOKEX_ENDPOINTS_RPC, endpoint_style_options,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("tokex.secret_hash_iterations",
							"PBKDF2-HMAC-SHA256 iterations for newly hashed client secrets.",
							NULL, &tokex_secret_iterations, 600000, 100000, 10000000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("tokex.ssf_retention",
							"How long acknowledged Security Event Tokens are kept.",
							"tokex.ssf_prune() and every poll delete them after this.",
							&tokex_ssf_retention, 7 * 86400, 0, 366 * 86400,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	tokex_vault_init();
	tokex_standby_init();
	if (process_shared_preload_libraries_in_progress)
	{
		tokex_audit_init();
		tokex_dpop_init();
	}
	tokex_seal_init();
#if PG_VERSION_NUM >= 150000
	MarkGUCPrefixReserved("tokex");
#else
	EmitWarningsOnPlaceholders("tokex");
#endif
}

int64
tokex_now(void)
{
	return (int64) timestamptz_to_time_t(GetCurrentTimestamp());
}

/*
 * One tracked object.  The callback record comes first in the same
 * allocation, so registering it cannot fail once the record exists.
 */
typedef struct TrackedObject
{
	MemoryContextCallback cb;
	void	   *obj;
	size_t		n;
	TokexRelease release;
} TrackedObject;

static void
release_tracked(void *arg)
{
	TrackedObject *t = (TrackedObject *) arg;
	void	   *obj = t->obj;

	t->obj = NULL;
	t->release(obj, t->n);
}

void *
tokex_track_in(MemoryContext cxt, void *obj, size_t n, TokexRelease release)
{
	TrackedObject *t;

	if (obj == NULL)
		return NULL;
	t = MemoryContextAllocExtended(cxt, sizeof(TrackedObject), MCXT_ALLOC_NO_OOM);
	if (t == NULL)
	{
		release(obj, n);
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	}
	t->obj = obj;
	t->n = n;
	t->release = release;
	t->cb.func = release_tracked;
	t->cb.arg = t;
	MemoryContextRegisterResetCallback(cxt, &t->cb);
	return obj;
}

void
tokex_release_free(void *obj, size_t n)
{
	free(obj);
}

void
tokex_release_secret(void *obj, size_t n)
{
	explicit_bzero(obj, n);
	free(obj);
}

void
tokex_release_json(void *obj, size_t n)
{
	json_decref((json_t *) obj);
}

void
tokex_release_key(void *obj, size_t n)
{
	jose_key_free((jose_key *) obj);
}

void
tokex_release_keys(void *obj, size_t n)
{
	jose_keys_free((jose_key **) obj, n);
}

void
tokex_release_jwt(void *obj, size_t n)
{
	jose_jwt_free((jose_jwt *) obj);
}

char *
tokex_adopt(char *s)
{
	char	   *copy = NULL;

	if (s != NULL)
	{
		size_t		len = strlen(s);

		copy = palloc_extended(len + 1, MCXT_ALLOC_NO_OOM);
		if (copy)
			memcpy(copy, s, len + 1);
		free(s);
	}
	if (copy == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	return copy;
}

json_t *
tokex_jsonb_to_json(Jsonb *jb, const char *what)
{
	char	   *s;
	jose_error	err;
	json_t	   *j;

	if (!JB_ROOT_IS_OBJECT(jb))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s", what),
				 errdetail("The %s must be a JSON object.", what)));
	s = JsonbToCString(NULL, &jb->root, VARSIZE(jb));
	j = tokex_json_track(jose_json_parse(s, strlen(s), JOSE_E_PAYLOAD, &err));
	if (j == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s", what),
				 errdetail("The %s cannot be read (%s).", what, jose_json_reason_text(err.json_reason))));
	return j;
}

Datum
tokex_jsonb_in(const char *s)
{
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(s));
}

/* Push one jansson value into a jsonb under construction; false: not here */
static bool
push_json(JsonbParseState **st, json_t *j, JsonbIteratorToken as, JsonbValue **res)
{
	JsonbValue	v;

	check_stack_depth();
	switch (json_typeof(j))
	{
		case JSON_OBJECT:
			{
				const char *k;
				json_t	   *e;

				*res = pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);
				json_object_foreach(j, k, e)
				{
					JsonbValue	key;

					key.type = jbvString;
					key.val.string.val = (char *) k;
					key.val.string.len = strlen(k);
					*res = pushJsonbValue(st, WJB_KEY, &key);
					if (!push_json(st, e, WJB_VALUE, res))
						return false;
				}
				*res = pushJsonbValue(st, WJB_END_OBJECT, NULL);
				return true;
			}
		case JSON_ARRAY:
			{
				size_t		i;
				json_t	   *e;

				*res = pushJsonbValue(st, WJB_BEGIN_ARRAY, NULL);
				json_array_foreach(j, i, e)
					if (!push_json(st, e, WJB_ELEM, res))
					return false;
				*res = pushJsonbValue(st, WJB_END_ARRAY, NULL);
				return true;
			}
		case JSON_STRING:
			v.type = jbvString;
			v.val.string.val = (char *) json_string_value(j);
			v.val.string.len = json_string_length(j);
			/* jsonb takes no NUL (jsonb_in refuses \u0000): let it say so */
			if (memchr(v.val.string.val, '\0', v.val.string.len) != NULL)
				return false;
			break;
		case JSON_INTEGER:
			v.type = jbvNumeric;
			v.val.numeric = int64_to_numeric(json_integer_value(j));
			break;
		case JSON_REAL:
			{
				/*
				 * The shortest digits that read back as the same double (0.1,
				 * not json_dumps's 0.10000000000000001), whatever the session's
				 * extra_float_digits (float8out's rounding would move an
				 * assertion's exp, and so how long its jti is remembered),
				 * with ".0" kept on a whole number as jansson does.
				 */
				char		t[DOUBLE_SHORTEST_DECIMAL_LEN + 2];
				double		d = json_real_value(j);

				if (isnan(d) || isinf(d))
					return false;	/* not JSON: let jsonb_in say so */
				double_to_shortest_decimal_buf(d, t);
				if (strspn(t, "-0123456789") == strlen(t))
					strcat(t, ".0");
				v.type = jbvNumeric;
				v.val.numeric = DatumGetNumeric(DirectFunctionCall3(numeric_in, CStringGetDatum(t),
																	ObjectIdGetDatum(InvalidOid),
																	Int32GetDatum(-1)));
				break;
			}
		case JSON_TRUE:
		case JSON_FALSE:
			v.type = jbvBool;
			v.val.boolean = json_is_true(j);
			break;
		case JSON_NULL:
			v.type = jbvNull;
			break;
		default:
			return false;
	}
	if (*st == NULL)
	{
		/* a scalar at the top: jsonb keeps it as a one-element raw-scalar array */
		JsonbValue	va;

		va.type = jbvArray;
		va.val.array.rawScalar = true;
		va.val.array.nElems = 1;
		pushJsonbValue(st, WJB_BEGIN_ARRAY, &va);
		pushJsonbValue(st, WJB_ELEM, &v);
		*res = pushJsonbValue(st, WJB_END_ARRAY, NULL);
	}
	else
		*res = pushJsonbValue(st, as, &v);
	return true;
}

/*
 * A jansson value as jsonb, built directly rather than written out and
 * parsed again by jsonb_in (as costly as an exchange's ES256 signature):
 * keys sorted and unique as jsonb_in makes them, numbers as numeric.  j is
 * not consumed.
 */
Datum
tokex_json_to_jsonb(json_t *j)
{
	JsonbParseState *st = NULL;
	JsonbValue *res = NULL;

	if (j == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	if (!push_json(&st, j, WJB_ELEM, &res))
	{
		char	   *t = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);

		if (t == NULL)
			ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
		return tokex_jsonb_in(tokex_adopt(t));
	}
	return JsonbPGetDatum(JsonbValueToJsonb(res));
}

void
tokex_invalid_token(const jose_error *err)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
			 errmsg("invalid token"),
			 errdetail("%s", err->detail[0] ? err->detail : jose_strerror(err->code))));
}

/* Parse the canonical 8-4-4-4-12 form; anything else is not one of ours. */
bool
tokex_parse_uuid(const char *s, pg_uuid_t *out)
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

/*
 * tokex._setting(name): a tokex setting as the library holds it.  SQL must
 * not read tokex.* with current_setting(): before the library is loaded in
 * a backend, any role can SET a placeholder of that name, and
 * current_setting() would return it.  Calling this C function loads the
 * library first, which drops a placeholder that role was not allowed to
 * set, and returns the checked value.
 */
PG_FUNCTION_INFO_V1(tokex_setting);
Datum
tokex_setting(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	const char *s = NULL;
	int			secs = -1;

	if (strcmp(name, "issuer") == 0)
		s = tokex_issuer;
	else if (strcmp(name, "base_url") == 0)
		s = tokex_base_url;
	else if (strcmp(name, "clock_skew") == 0)
		secs = tokex_clock_skew;
	else if (strcmp(name, "default_ttl") == 0)
		secs = tokex_default_ttl;
	else if (strcmp(name, "max_ttl") == 0)
		secs = tokex_max_ttl;
	else if (strcmp(name, "ssf_retention") == 0)
		secs = tokex_ssf_retention;
	else if (strcmp(name, "endpoint_style") == 0)
		s = tokex_endpoint_style == TOKEX_ENDPOINTS_PLAIN ? "plain" : "rpc";
	else if (strcmp(name, "secret_hash_iterations") == 0)
		PG_RETURN_TEXT_P(cstring_to_text(psprintf("%d", tokex_secret_iterations)));
	else
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("unknown tokex setting \"%s\"", name)));
	if (secs >= 0)
		PG_RETURN_TEXT_P(cstring_to_text(psprintf("%d seconds", secs)));
	if (s == NULL || s[0] == '\0')
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(s));
}

/*
 * The SQL objects must be the version this library was built for: after a
 * new library is installed and the server restarted, a database still at
 * the old version fails in whatever query meets a renamed or missing
 * object first.  Say why instead, once per backend until it matches
 * (versions only move forward, so a match is kept).
 */
void
tokex_check_version(void)
{
	static bool matched = false;
	char	   *v;

	if (matched)
		return;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "tokex: SPI_connect failed");
	if (SPI_execute("SELECT extversion FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'tokex'",
					true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "tokex: cannot read its own version");
	v = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
					 SPI_fnumber(SPI_tuptable->tupdesc, "extversion"));
	matched = v != NULL && strcmp(v, TOKEX_VERSION) == 0;
	if (!matched)
	{
		char	   *installed = v ? pstrdup(v) : "unknown";

		SPI_finish();
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("tokex in this database is at version %s, its library at %s", installed, TOKEX_VERSION),
				 errhint("Run ALTER EXTENSION tokex UPDATE in this database.")));
	}
	SPI_finish();
}

/*
 * SHA-256, fetched once per process: with EVP_sha256() every digest looks
 * the algorithm up in the provider's tables again.
 */
const EVP_MD *
tokex_sha256_md(void)
{
	static EVP_MD *sha256 = NULL;

	if (sha256 == NULL && (sha256 = EVP_MD_fetch(NULL, "SHA256", NULL)) == NULL)
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("SHA-256 is not available")));
	return sha256;
}

void
tokex_sha256(const void *p, size_t n, uint8 out[32])
{
	if (EVP_Digest(p, n, out, NULL, tokex_sha256_md(), NULL) != 1)
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("SHA-256 failed")));
}
