/*
 * issuers.c — the issuers tokex trusts (tokex.trusted_issuer): the
 * per-backend cache of their JWKS, parsed into keys once and dropped when
 * the table changes (a TokexTableCache, see keys.c), the lookup of a
 * token's iss, and _jwks_check, which judges a JWKS before it is trusted
 * (an issuer's, or a client's for private_key_jwt) by the same rules that
 * apply when it is read back.
 */
#include "tokex.h"

#include "utils/jsonb.h"

typedef struct TrustedIssuer
{
	char	   *issuer;
	jose_keyset keys;			/* with the audience it requires, or NULL */
} TrustedIssuer;

struct TrustedIssuers
{
	TrustedIssuer *issuers;
	int			n;
};

static void *
trusted_begin(MemoryContext cxt, uint64 nrows)
{
	TrustedIssuers *ti = MemoryContextAllocZero(cxt, sizeof(TrustedIssuers));

	ti->issuers = MemoryContextAllocZero(cxt, sizeof(TrustedIssuer) * (nrows + 1));
	return ti;
}

/* One issuer: its JWKS must read as a whole, as _jwks_check required when it was trusted. */
static void
trusted_add(void *cache, MemoryContext cxt, HeapTuple row, TupleDesc desc)
{
	TrustedIssuers *ti = (TrustedIssuers *) cache;
	TrustedIssuer *t = &ti->issuers[ti->n];
	char	   *iss = tokex_row_text(row, desc, "issuer");
	char	   *jwks = tokex_row_text(row, desc, "jwks");
	char	   *aud = tokex_row_text(row, desc, "audience");
	jose_error	err;
	jose_key  **keys = NULL;
	size_t		n = 0;
	int			rc;

	rc = jose_jwks_parse_text(jwks, strlen(jwks), &keys, &n, &err);
	t->keys.keys = tokex_track_in(cxt, keys, n, tokex_release_keys);
	t->keys.nkeys = n;
	/* an issuer's JWKS may hold HMAC secrets: keep only the parsed keys */
	explicit_bzero(jwks, strlen(jwks));
	pfree(jwks);
	if (rc < 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("JWKS of trusted issuer \"%s\" cannot be loaded", iss),
				 errdetail("%s", err.detail)));
	t->issuer = MemoryContextStrdup(cxt, iss);
	t->keys.audience = aud ? MemoryContextStrdup(cxt, aud) : NULL;
	ti->n++;
}

static TokexTableCache trusted_cache = {
	"trusted_issuer",
	"SELECT issuer, jwks::text AS jwks, audience FROM tokex.trusted_issuer",
	trusted_begin, trusted_add
};

const TrustedIssuers *
tokex_trusted_issuers(void)
{
	return tokex_table_cache(&trusted_cache);
}

const jose_keyset *
tokex_trusted_issuer_keys(const TrustedIssuers *ti, const char *iss)
{
	for (int i = 0; i < ti->n; i++)
		if (strcmp(ti->issuers[i].issuer, iss) == 0)
			return &ti->issuers[i].keys;
	return NULL;
}

/* tokex._jwks_check(jwks) -> number of usable keys, or ERROR saying why not */
PG_FUNCTION_INFO_V1(tokex_jwks_check);
Datum
tokex_jwks_check(PG_FUNCTION_ARGS)
{
	json_t	   *j = tokex_jsonb_to_json(PG_GETARG_JSONB_P(0), "JWKS");
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
