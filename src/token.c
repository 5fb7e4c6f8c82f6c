/*
 * token.c — JWTs as PostgreSQL sees them: verify a token against tokex's own
 * keys or a trusted issuer, sign claims with the active key, and the
 * SQL-callable jwt_sign / jwt_verify / jwt_decode and key helpers.
 *
 * jansson objects, keys and buffers from the JOSE core are owned by the
 * current memory context (tokex_track, tokex_adopt) so an ERROR cannot leak
 * them.
 */
#include "tokex.h"

#include "fmgr.h"
#include "funcapi.h"
#include "access/htup_details.h"
#include "utils/builtins.h"
#include "catalog/pg_type.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

/*
 * jose_keyset_fn for tokex_verify: the token's "iss" chooses the keys,
 * tokex's own or a trusted issuer's (with the audience that issuer
 * requires).  Only looks at the loaded keystore, so it cannot raise.
 */
static int
issuer_keys(void *arg, json_t *claims, jose_keyset *out, jose_error *err)
{
	TokexToken *t = (TokexToken *) arg;
	json_t	   *iss = json_object_get(claims, "iss");
	const TokexIssuer *ti;

	if (!json_is_string(iss))
		return jose_seterr(err, JOSE_E_CLAIM_TYPE, "token has no \"iss\" claim");
	t->own = tokex_issuer && tokex_issuer[0] && strcmp(json_string_value(iss), tokex_issuer) == 0;
	ti = t->own ? keystore_own() : keystore_issuer(json_string_value(iss));
	if (ti == NULL || ti->nkeys == 0)
		return jose_seterr(err, JOSE_E_NO_KEY, t->own ? "tokex has no published keys" :
						   "issuer is not trusted");
	out->keys = ti->keys;
	out->nkeys = ti->nkeys;
	out->audience = ti->audience;
	return 0;
}

/*
 * Verify a compact JWS and its registered claims.  Returns NULL with err set
 * on any failure; never raises for a bad token (it may raise for a broken
 * keystore).  The claims live as long as the current memory context.
 */
TokexToken *
tokex_verify(const char *token, size_t len, const char *audience, jose_error *err)
{
	TokexToken *t;
	jose_jwt_rules rules = {0};
	jose_jwt   *jwt;
	json_t	   *typ;

	keystore_ensure();
	t = palloc0(sizeof(TokexToken));
	rules.select = issuer_keys;
	rules.select_arg = t;
	rules.now = tokex_now();
	rules.skew = tokex_clock_skew;
	rules.audience = audience;
	rules.require_exp = true;
	jwt = tokex_track(jose_jwt_verify(token, len, &rules, err), 0, tokex_release_jwt);
	if (jwt == NULL)
		return NULL;
	t->header = jwt->header;
	t->payload = jwt->payload;
	t->payload_text = jwt->payload_text;
	t->iss = json_string_value(json_object_get(t->payload, "iss"));
	/* NULL when absent; the claim checks refused a sub that is not a string */
	t->sub = json_string_value(json_object_get(t->payload, "sub"));
	typ = json_object_get(t->header, "typ");
	t->typ = json_is_string(typ) ? json_string_value(typ) : NULL;
	return t;
}

/* tokex's signing key: the active one, or kid when it is active or next; ERROR if none */
static const jose_key *
signing_key(const char *kid)
{
	const jose_key *key;
	jose_error	err;

	if (tokex_issuer == NULL || tokex_issuer[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("tokex.issuer is not set"),
				 errhint("Set it with ALTER DATABASE ... SET tokex.issuer = 'https://...'.")));
	keystore_ensure();
	key = keystore_signing_key(kid, &err);
	if (key == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no signing key"),
				 errdetail("%s", err.detail),
				 errhint("Create one with tokex.create_key() or activate one with tokex.activate_key().")));
	return key;
}

/* Compact JWS over payload text (a JSON object) in palloc memory. */
static char *
sign_text(const jose_key *key, const char *payload, size_t len, const char *typ)
{
	jose_error	err;
	json_t	   *header = tokex_json_track(json_pack("{s:s,s:s,s:s}", "alg", jose_alg_name(key->alg),
													 "kid", key->kid, "typ", typ));
	char	   *h;
	char	   *tok;

	if (header == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	h = tokex_adopt(json_dumps(header, JSON_COMPACT));
	tok = jose_jws_sign(key, h, strlen(h), payload, len, &err);
	if (tok == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("cannot sign token"),
				 errdetail("%s", err.detail)));
	return tokex_adopt(tok);
}

/* Sign a claims object with tokex's active key (or kid) as a compact JWS in palloc memory. */
char *
tokex_sign(json_t *payload, const char *typ, const char *kid)
{
	const jose_key *key = signing_key(kid);
	char	   *p = tokex_adopt(json_dumps(payload, JSON_COMPACT));

	return sign_text(key, p, strlen(p), typ);
}

/* jsonb object -> jansson object (tracked), or ERROR */
static json_t *
jsonb_to_json(Jsonb *jb, const char *what)
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

static Datum
cstring_to_jsonb(const char *s)
{
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(s));
}

PG_FUNCTION_INFO_V1(tokex_jwt_sign);
Datum
tokex_jwt_sign(PG_FUNCTION_ARGS)
{
	Jsonb	   *claims;
	json_t	   *j;
	json_t	   *iss;
	char	   *kid = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	const jose_key *key;
	StringInfoData extra;
	char	   *payload;
	json_t	   *jti;
	char	   *jti_text;
	char	   *token;
	json_t	   *row;

	if (PG_ARGISNULL(0))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("claims must not be NULL")));
	claims = PG_GETARG_JSONB_P(0);
	j = jsonb_to_json(claims, "claims");	/* validates: an object jansson can parse */
	iss = json_object_get(j, "iss");
	if (iss && !(json_is_string(iss) && tokex_issuer && strcmp(json_string_value(iss), tokex_issuer) == 0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid claims"),
				 errdetail("tokex signs only as its own issuer (tokex.issuer).")));
	key = signing_key(kid);

	/* sign the jsonb text itself, so numbers keep the digits they were given */
	initStringInfo(&extra);
	if (iss == NULL)
	{
		appendStringInfoString(&extra, "\"iss\":");
		escape_json(&extra, tokex_issuer);
	}
	if (json_object_get(j, "iat") == NULL)
		appendStringInfo(&extra, "%s\"iat\":" INT64_FORMAT, extra.len ? "," : "", tokex_now());
	/* every token tokex signs has an audit row, keyed by its jti */
	jti = json_object_get(j, "jti");
	if (jti == NULL)
	{
		pg_uuid_t	u;

		if (!pg_strong_random(u.data, UUID_LEN))
			ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("no random bytes for a jti")));
		u.data[6] = (u.data[6] & 0x0f) | 0x40;
		u.data[8] = (u.data[8] & 0x3f) | 0x80;
		jti_text = DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&u)));
		appendStringInfo(&extra, "%s\"jti\":\"%s\"", extra.len ? "," : "", jti_text);
	}
	else
	{
		pg_uuid_t	u;

		if (!json_is_string(jti) || !tokex_parse_uuid(json_string_value(jti), &u))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid claims"),
					 errdetail("jti must be a UUID: it keys the token's audit row."),
					 errhint("Leave jti out and tokex generates one.")));
		jti_text = DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&u)));
	}
	if (extra.len)
		claims = DatumGetJsonbP(DirectFunctionCall2(jsonb_concat, JsonbPGetDatum(claims),
													cstring_to_jsonb(psprintf("{%s}", extra.data))));
	payload = JsonbToCString(NULL, &claims->root, VARSIZE(claims));
	token = sign_text(key, payload, strlen(payload), "JWT");

	/* the row commits (by the audit writer) before the token is returned */
	row = tokex_json_track(json_pack("{s:s,s:s,s:s,s:s,s:s}", "exchange_id", jti_text,
									 "operation", "jwt_sign", "decision", "granted",
									 "jti", jti_text, "subject_issuer", tokex_issuer));
	if (row == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	if (json_is_string(json_object_get(j, "sub")))
		json_object_set(row, "subject", json_object_get(j, "sub"));
	if (json_is_string(json_object_get(j, "aud")))
		json_object_set(row, "audience", json_object_get(j, "aud"));
	if (json_is_string(json_object_get(j, "client_id")))
		json_object_set(row, "client_id", json_object_get(j, "client_id"));
	if (json_is_integer(json_object_get(j, "exp")))
	{
		char		buf[MAXDATELEN + 1];
		json_int_t	exp = json_integer_value(json_object_get(j, "exp"));

		if (exp > 0 && exp < INT64CONST(253402300800))
		{
			JsonEncodeDateTime(buf, TimestampTzGetDatum(time_t_to_timestamptz((pg_time_t) exp)),
							   TIMESTAMPTZOID, NULL);
			json_object_set_new(row, "expires_at", json_string(buf));
		}
	}
	tokex_audit_write(row, true);
	PG_RETURN_TEXT_P(cstring_to_text(token));
}

PG_FUNCTION_INFO_V1(tokex_jwt_verify);
Datum
tokex_jwt_verify(PG_FUNCTION_ARGS)
{
	text	   *token;
	char	   *aud = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	jose_error	err;
	TokexToken *t;

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
	PG_RETURN_DATUM(cstring_to_jsonb(t->payload_text));
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
	PG_RETURN_DATUM(cstring_to_jsonb(psprintf("{\"header\":%s,\"payload\":%s}", h, p)));
}

/* tokex._generate_key(alg) -> (kid, public_jwk, private_key); owner-only helper of create_key */
PG_FUNCTION_INFO_V1(tokex_generate_key);
Datum
tokex_generate_key(PG_FUNCTION_ARGS)
{
	char	   *algname = text_to_cstring(PG_GETARG_TEXT_PP(0));
	jose_alg	alg = jose_alg_from_name(algname);
	jose_error	err;
	jose_key   *key;
	json_t	   *pub;
	uint8_t    *der = NULL;
	size_t		derlen = 0;
	TupleDesc	td;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};
	bytea	   *b;

	if (!jose_alg_can_sign(alg))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unsupported signing algorithm \"%s\"", algname),
				 errhint("Use ES256, ES384, ES512, EdDSA, RS256, RS384, RS512, PS256, PS384 or PS512.")));
	if (get_call_result_type(fcinfo, NULL, &td) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "tokex._generate_key must return a record");

	key = tokex_track(jose_key_generate(alg, &err), 0, tokex_release_key);
	pub = key ? tokex_json_track(jose_jwk_public(key, &err)) : NULL;
	if (pub == NULL || jose_key_to_der(key, &der, &derlen, &err) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("key generation failed"),
				 errdetail("%s", err.detail)));
	tokex_track(der, derlen, tokex_release_secret);
	b = palloc(VARHDRSZ + derlen);
	SET_VARSIZE(b, VARHDRSZ + derlen);
	memcpy(VARDATA(b), der, derlen);
	values[0] = CStringGetTextDatum(key->kid);
	values[1] = cstring_to_jsonb(tokex_adopt(json_dumps(pub, JSON_COMPACT)));
	values[2] = PointerGetDatum(b);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(td), values, nulls)));
}

/* tokex._jwks_check(jwks) -> number of usable keys, or ERROR saying why not */
PG_FUNCTION_INFO_V1(tokex_jwks_check);
Datum
tokex_jwks_check(PG_FUNCTION_ARGS)
{
	json_t	   *j = jsonb_to_json(PG_GETARG_JSONB_P(0), "JWKS");
	jose_key  **keys;
	size_t		n;
	jose_error	err;

	if (jose_jwks_parse(j, &keys, &n, &err) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid JWKS"),
				 errdetail("%s", err.detail)));
	tokex_track(keys, n, tokex_release_keys);
	PG_RETURN_INT32((int32) n);
}

/*
 * tokex._sign(claims, typ): sign claims as they are, with the active key.
 * For tokex's own functions, which write the token's audit row themselves
 * (sessions, identity tokens, client_credentials); granted to no one.
 */
PG_FUNCTION_INFO_V1(tokex_sign_internal);
Datum
tokex_sign_internal(PG_FUNCTION_ARGS)
{
	Jsonb	   *claims = PG_GETARG_JSONB_P(0);
	char	   *typ = text_to_cstring(PG_GETARG_TEXT_PP(1));
	const jose_key *key = signing_key(NULL);
	char	   *payload;

	if (!JB_ROOT_IS_OBJECT(claims))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("claims must be a JSON object")));
	payload = JsonbToCString(NULL, &claims->root, VARSIZE(claims));
	PG_RETURN_TEXT_P(cstring_to_text(sign_text(key, payload, strlen(payload), typ)));
}
