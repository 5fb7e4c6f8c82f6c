/*
 * revocation.c — what identifies a token for revocation: its issuer and
 * jti.  tokex.revoked_token is keyed by the SHA-256 of issuer, NUL and the
 * jti's text, so a jti of any length or JSON type (string or number) can
 * be revoked, and one issuer's jti never revokes another issuer's token.
 * The revocation functions themselves are SQL (src/sql/35_revocation.sql).
 */
#include "tokex.h"

#include "common/shortest_dec.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include <openssl/evp.h>

/*
 * A jti as text, for revocation: a string as it is, an integer in decimal,
 * a real in its shortest round-trip form (as float8out writes it).  Other
 * JSON types are no identifier: NULL.
 */
char *
tokex_jti_text(const json_t *jti)
{
	if (json_is_string(jti))
		return pstrdup(json_string_value(jti));
	if (json_is_integer(jti))
		return psprintf(INT64_FORMAT, (int64) json_integer_value(jti));
	if (json_is_real(jti))
	{
		char		buf[DOUBLE_SHORTEST_DECIMAL_LEN];

		double_to_shortest_decimal_buf(json_real_value(jti), buf);
		return pstrdup(buf);
	}
	return NULL;
}

/* The revocation key of (issuer, jti): SHA-256 of issuer, NUL, jti. */
void
tokex_jti_key(const char *iss, const char *jti, uint8 out[32])
{
	const EVP_MD *sha256 = tokex_sha256_md();	/* may raise: before the allocation */
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned int n = 0;
	bool		ok;

	ok = ctx != NULL &&
		EVP_DigestInit_ex(ctx, sha256, NULL) == 1 &&
		EVP_DigestUpdate(ctx, iss, strlen(iss) + 1) == 1 &&	/* with its NUL */
		EVP_DigestUpdate(ctx, jti, strlen(jti)) == 1 &&
		EVP_DigestFinal_ex(ctx, out, &n) == 1 && n == 32;
	EVP_MD_CTX_free(ctx);
	if (!ok)
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("SHA-256 failed")));
}

/* tokex._jti_key(issuer, jti) -> bytea */
PG_FUNCTION_INFO_V1(tokex_jti_key_sql);
Datum
tokex_jti_key_sql(PG_FUNCTION_ARGS)
{
	char	   *iss = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *jti = text_to_cstring(PG_GETARG_TEXT_PP(1));
	bytea	   *b = palloc(VARHDRSZ + 32);

	SET_VARSIZE(b, VARHDRSZ + 32);
	tokex_jti_key(iss, jti, (uint8 *) VARDATA(b));
	PG_RETURN_BYTEA_P(b);
}

/*
 * tokex._token_jti(token) -> {iss, jti}: what revokes a token, read from
 * the token itself (unverified: revoking a token needs no proof that it is
 * valid).  The jti is read from the token's own JSON, as the exchange and
 * introspection read it, so a numeric jti such as 1.5e16 gets the same text
 * both ways (jsonb would normalise it first).  NULL elements when absent;
 * ERROR when the token cannot be read.
 */
PG_FUNCTION_INFO_V1(tokex_token_jti);
Datum
tokex_token_jti(PG_FUNCTION_ARGS)
{
	text	   *token = PG_GETARG_TEXT_PP(0);
	jose_jws	jws;
	jose_error	err;
	json_t	   *payload;
	json_t	   *iss;
	json_t	   *jti;
	char	   *text;
	Datum		items[2];
	bool		nulls[2] = {true, true};
	int			dims[1] = {2};
	int			lbs[1] = {1};

	if (jose_jws_parse(VARDATA_ANY(token), VARSIZE_ANY_EXHDR(token), &jws, &err) < 0)
		tokex_invalid_token(&err);
	payload = tokex_json_track(jose_jws_payload_json(&jws, &err));
	jose_jws_clear(&jws);
	if (payload == NULL)
		tokex_invalid_token(&err);
	iss = json_object_get(payload, "iss");
	jti = json_object_get(payload, "jti");
	if (json_is_string(iss))
	{
		items[0] = CStringGetTextDatum(json_string_value(iss));
		nulls[0] = false;
	}
	if (jti && (text = tokex_jti_text(jti)) != NULL)
	{
		items[1] = CStringGetTextDatum(text);
		nulls[1] = false;
	}
	else if (jti)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the token's jti is neither a string nor a number")));
	PG_RETURN_ARRAYTYPE_P(construct_md_array(items, nulls, 1, dims, lbs, TEXTOID, -1, false, TYPALIGN_INT));
}
