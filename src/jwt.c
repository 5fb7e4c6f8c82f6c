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
	json_t	   *typ;

	choice.own = tokex_own_keys();
	choice.trusted = tokex_trusted_issuers();
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
