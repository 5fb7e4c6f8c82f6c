/*
 * keys.c — tokex's own signing keys: the per-backend cache of the keys in
 * tokex.key (each parsed from PKCS#8 once), the choice of the key that
 * signs, signing itself, and the SQL helpers of key management
 * (_generate_key, _sign).  What is published and verified is the keyset
 * of every key not revoked.
 *
 * Parsing a key costs far more than using it, so keys are kept across calls
 * and dropped when tokex.key changes: a statement trigger
 * (tokex._keystore_invalidate, below) queues a relcache invalidation of the
 * table, which PostgreSQL delivers to every backend when the change commits
 * (and to the changing backend at its next command), so no backend signs or
 * verifies with a key that a committed transaction revoked.  Time plays no
 * part.
 *
 * issuers.c caches tokex.trusted_issuer the same way, so the mechanism is
 * here once (TokexTableCache): a cache names its table, the query that
 * reads it and how one row enters the cache, and registers its own relcache
 * callback, so that a change to one table reloads only that table's cache.
 * The one trigger function serves both tables, since it invalidates
 * whichever table fired it.
 */
#include "tokex.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

/* ---------------- caches of a tokex table ---------------- */

uint64		tokex_table_cache_generation = 0;

static void
table_cache_invalidate(Datum arg, Oid relid)
{
	TokexTableCache *c = (TokexTableCache *) DatumGetPointer(arg);

	if (relid == InvalidOid || relid == c->relid)
		c->valid = false;
}

void *
tokex_table_cache(TokexTableCache *c)
{
	MemoryContext cxt;
	void	   *data;
	int			rc;

	/*
	 * Judged as of the call, like every decision: take in the invalidations
	 * committed since this transaction last did (a long transaction takes
	 * them only at its next lock), and read the table with the latest
	 * snapshot, not a REPEATABLE READ transaction's older one.
	 */
	AcceptInvalidationMessages();
	if (c->valid && c->data != NULL)
		return c->data;
	tokex_check_version();
	if (!c->registered)
	{
		CacheRegisterRelcacheCallback(table_cache_invalidate, PointerGetDatum(c));
		c->registered = true;
	}
	c->relid = get_relname_relid(c->relname, get_namespace_oid("tokex", false));

	/* never keep serving a stale cache if this load fails */
	if (c->cxt)
	{
		MemoryContextDelete(c->cxt);
		c->cxt = NULL;
		c->data = NULL;
	}

	/*
	 * Build under the caller's context so an ERROR takes the half-built
	 * cache (and the keys it tracks) with it; keep it only once complete.
	 */
	cxt = AllocSetContextCreate(CurrentMemoryContext, "tokex table cache", ALLOCSET_SMALL_SIZES);
	MemoryContextSetIdentifier(cxt, c->relname);
	/* mark valid first: an invalidation arriving while we read wins */
	c->valid = true;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "tokex: SPI_connect failed");
	{
		SPIPlanPtr	plan = SPI_prepare(c->query, 0, NULL);

		if (plan == NULL)
			elog(ERROR, "tokex: cannot read tokex.%s: %s", c->relname, SPI_result_code_string(SPI_result));
		rc = SPI_execute_snapshot(plan, NULL, NULL, GetLatestSnapshot(), InvalidSnapshot, true, false, 0);
	}
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "tokex: cannot read tokex.%s: %s", c->relname, SPI_result_code_string(rc));
	data = c->begin(cxt, SPI_processed);
	for (uint64 i = 0; i < SPI_processed; i++)
		c->add(data, cxt, SPI_tuptable->vals[i], SPI_tuptable->tupdesc);
	SPI_finish();

	MemoryContextSetParent(cxt, TopMemoryContext);
	c->cxt = cxt;
	c->data = data;
	/* what was verified with the old keys is verified again (jwt.c) */
	tokex_table_cache_generation++;
	return data;
}

static int
row_column(TupleDesc desc, const char *column)
{
	int			n = SPI_fnumber(desc, column);

	if (n <= 0)
		elog(ERROR, "tokex: cache query has no column \"%s\"", column);
	return n;
}

char *
tokex_row_text(HeapTuple row, TupleDesc desc, const char *column)
{
	return SPI_getvalue(row, desc, row_column(desc, column));
}

Datum
tokex_row_datum(HeapTuple row, TupleDesc desc, const char *column, bool *isnull)
{
	return SPI_getbinval(row, desc, row_column(desc, column), isnull);
}

/* Statement trigger on tokex.key and tokex.trusted_issuer: drop every backend's cache at commit. */
PG_FUNCTION_INFO_V1(tokex_keystore_invalidate);
Datum
tokex_keystore_invalidate(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
						errmsg("tokex_keystore_invalidate must be called as a trigger")));
	CacheInvalidateRelcache(td->tg_relation);
	return PointerGetDatum(NULL);
}

/* ---------------- tokex's own keys ---------------- */

typedef struct OwnKey
{
	jose_key   *key;
	bool		can_sign;		/* status 'active' or 'next' */
	bool		active;
} OwnKey;

typedef struct OwnKeys
{
	OwnKey	   *keys;			/* oldest first */
	jose_key  **all;			/* the same keys, as published.keys */
	int			n;
	jose_keyset published;		/* what tokex's tokens verify against */
} OwnKeys;

static void *
own_keys_begin(MemoryContext cxt, uint64 nrows)
{
	OwnKeys    *own = MemoryContextAllocZero(cxt, sizeof(OwnKeys));

	own->keys = MemoryContextAllocZero(cxt, sizeof(OwnKey) * (nrows + 1));
	own->all = MemoryContextAllocZero(cxt, sizeof(jose_key *) * (nrows + 1));
	own->published.keys = own->all;
	return own;
}

/* One key, parsed from PKCS#8; it must still be the key its kid names. */
static void
own_keys_add(void *cache, MemoryContext cxt, HeapTuple row, TupleDesc desc)
{
	OwnKeys    *own = (OwnKeys *) cache;
	char	   *kid = tokex_row_text(row, desc, "kid");
	char	   *status = tokex_row_text(row, desc, "status");
	bool		isnull;
	bytea	   *der = DatumGetByteaPP(tokex_row_datum(row, desc, "private_key", &isnull));
	jose_error	err;
	jose_key   *key;

	key = tokex_track_in(cxt, jose_key_from_der(jose_alg_from_name(tokex_row_text(row, desc, "alg")),
												(uint8_t *) VARDATA_ANY(der), VARSIZE_ANY_EXHDR(der),
												&err),
						 0, tokex_release_key);
	if (key == NULL || strcmp(key->kid, kid) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("signing key \"%s\" cannot be loaded", kid),
				 errdetail("%s", key ? "its kid is not its thumbprint" : err.detail)));
	own->keys[own->n].key = key;
	own->keys[own->n].can_sign = strcmp(status, "active") == 0 || strcmp(status, "next") == 0;
	own->keys[own->n].active = strcmp(status, "active") == 0;
	own->all[own->n++] = key;
	own->published.nkeys = own->n;
}

/* Every key not revoked, oldest first. */
static TokexTableCache own_cache = {
	"key",
	"SELECT kid, alg, status, private_key FROM tokex.key "
	"WHERE status OPERATOR(pg_catalog.<>) 'revoked' ORDER BY created_at",
	own_keys_begin, own_keys_add
};

const jose_keyset *
tokex_own_keys(void)
{
	return &((OwnKeys *) tokex_table_cache(&own_cache))->published;
}

/* tokex's signing key: the active one, or kid when it is active or next; ERROR if none */
const jose_key *
tokex_signing_key(const char *kid)
{
	OwnKeys    *own;

	if (tokex_issuer == NULL || tokex_issuer[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("tokex.issuer is not set"),
				 errhint("Set it with ALTER DATABASE ... SET tokex.issuer = 'https://...'.")));
	own = tokex_table_cache(&own_cache);
	for (int i = 0; i < own->n; i++)
	{
		OwnKey	   *ok = &own->keys[i];

		if (kid ? (ok->can_sign && strcmp(ok->key->kid, kid) == 0) : ok->active)
			return ok->key;
	}
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("no signing key"),
			 errdetail("%s", kid ? "no active or next signing key with this kid" :
					   "there is no active signing key"),
			 errhint("Create one with tokex.create_key() or activate one with tokex.activate_key().")));
	pg_unreachable();
}

/* ---------------- signing ---------------- */

/* Compact JWS over payload text (a JSON object) in palloc memory. */
char *
tokex_sign_text(const jose_key *key, const char *payload, size_t len, const char *typ)
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
	const jose_key *key = tokex_signing_key(kid);
	char	   *p = tokex_adopt(json_dumps(payload, JSON_COMPACT));

	return tokex_sign_text(key, p, strlen(p), typ);
}

/*
 * tokex._sign(claims, typ): sign claims as they are, with the active key,
 * and write no audit row.  Every token tokex hands out leaves through the
 * issuance pipeline instead; this exists for the extension owner's tests,
 * which need a token of tokex's that was never issued (one without its
 * audit row, which the exchange and introspection must refuse), and for
 * the Security Event Tokens of src/sql/75_ssf.sql (typ secevent+jwt: no
 * access token, so no audit row).  Granted to no one.
 */
PG_FUNCTION_INFO_V1(tokex_sign_internal);
Datum
tokex_sign_internal(PG_FUNCTION_ARGS)
{
	Jsonb	   *claims = PG_GETARG_JSONB_P(0);
	char	   *typ = text_to_cstring(PG_GETARG_TEXT_PP(1));
	const jose_key *key = tokex_signing_key(NULL);
	char	   *payload;

	if (!JB_ROOT_IS_OBJECT(claims))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("claims must be a JSON object")));
	payload = JsonbToCString(NULL, &claims->root, VARSIZE(claims));
	PG_RETURN_TEXT_P(cstring_to_text(tokex_sign_text(key, payload, strlen(payload), typ)));
}

/* ---------------- key management ---------------- */

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
	values[1] = tokex_jsonb_in(tokex_adopt(json_dumps(pub, JSON_COMPACT)));
	values[2] = PointerGetDatum(b);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(td), values, nulls)));
}
