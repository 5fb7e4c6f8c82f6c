/*
 * revocation.c — what identifies a token for revocation: its issuer and
 * jti.  tokex.revoked_token is keyed by the SHA-256 of issuer, NUL and the
 * jti's text, so a jti of any length or JSON type (string or number) can
 * be revoked, and one issuer's jti never revokes another issuer's token.
 * The revocation functions themselves are SQL (src/sql/35_revocation.sql).
 */
#include "tokex.h"

#include "common/shortest_dec.h"
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
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned int n = 0;
	bool		ok;

	ok = ctx != NULL &&
		EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
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
 * tokex._jti_text(jti jsonb) -> text: the same text for a jti read from a
 * token in SQL, or NULL when it is no identifier.
 */
PG_FUNCTION_INFO_V1(tokex_jti_text_sql);
Datum
tokex_jti_text_sql(PG_FUNCTION_ARGS)
{
	Jsonb	   *jb = PG_GETARG_JSONB_P(0);
	char	   *s = JsonbToCString(NULL, &jb->root, VARSIZE(jb));
	json_error_t jerr;
	json_t	   *j = tokex_json_track(json_loads(s, JSON_DECODE_ANY, &jerr));
	char	   *out;

	if (j == NULL)
		PG_RETURN_NULL();
	out = tokex_jti_text(j);
	if (out == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(out));
}
