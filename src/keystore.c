/*
 * keystore.c — per-backend cache of tokex's own signing keys and of the
 * trusted issuers' JWKS, parsed into OpenSSL keys once.
 *
 * Parsing a key costs far more than using it, so keys are kept across calls.
 * They are dropped when tokex.key or tokex.trusted_issuer changes: a statement
 * trigger on both tables queues a relcache invalidation, which PostgreSQL
 * delivers to every backend when the change commits (and to the changing
 * backend at its next command), so no backend ever verifies against a key
 * that a committed transaction revoked.  Time plays no part.
 *
 * The keys are tracked by the store's memory context (tokex_track_in), which
 * is built under the caller's context and kept only once complete, so an
 * ERROR while loading frees what was loaded.
 */
#include "tokex.h"

#include "catalog/namespace.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

typedef struct OwnKey
{
	jose_key   *key;
	bool		can_sign;		/* status 'active' or 'next' */
	bool		active;
} OwnKey;

typedef struct Keystore
{
	MemoryContext cxt;
	OwnKey	   *own;
	int			nown;
	TokexIssuer own_issuer;		/* own keys as an issuer for verification */
	TokexIssuer *issuers;
	int			nissuers;
} Keystore;

static Keystore *keystore = NULL;
static bool keystore_valid = false;
static bool callback_registered = false;
static Oid	key_relid = InvalidOid;
static Oid	issuer_relid = InvalidOid;

static void
keystore_relcache_cb(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == key_relid || relid == issuer_relid)
		keystore_valid = false;
}

static void
load_own(Keystore *ks)
{
	int			rc = SPI_execute("SELECT kid, alg, status, private_key FROM tokex.key "
								 "WHERE status OPERATOR(pg_catalog.<>) 'revoked' "
								 "ORDER BY created_at", true, 0);

	if (rc != SPI_OK_SELECT)
		elog(ERROR, "tokex: cannot read tokex.key: %s", SPI_result_code_string(rc));
	ks->own = MemoryContextAllocZero(ks->cxt, sizeof(OwnKey) * (SPI_processed + 1));
	ks->own_issuer.keys = MemoryContextAllocZero(ks->cxt, sizeof(jose_key *) * (SPI_processed + 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	td = SPI_tuptable->tupdesc;
		char	   *kid = SPI_getvalue(tup, td, 1);
		char	   *alg = SPI_getvalue(tup, td, 2);
		char	   *status = SPI_getvalue(tup, td, 3);
		bool		isnull;
		bytea	   *der = DatumGetByteaPP(SPI_getbinval(tup, td, 4, &isnull));
		jose_error	err;
		jose_key   *key;

		key = tokex_track_in(ks->cxt, jose_key_from_der(jose_alg_from_name(alg),
														(uint8_t *) VARDATA_ANY(der),
														VARSIZE_ANY_EXHDR(der), &err),
							 0, tokex_release_key);
		if (key == NULL || strcmp(key->kid, kid) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("signing key \"%s\" cannot be loaded", kid),
					 errdetail("%s", key ? "its kid is not its thumbprint" : err.detail)));
		ks->own[ks->nown].key = key;
		ks->own[ks->nown].can_sign = strcmp(status, "active") == 0 || strcmp(status, "next") == 0;
		ks->own[ks->nown].active = strcmp(status, "active") == 0;
		ks->own_issuer.keys[ks->nown] = key;
		ks->nown++;
		ks->own_issuer.nkeys = ks->nown;
	}
}

static void
load_issuers(Keystore *ks)
{
	int			rc = SPI_execute("SELECT issuer, jwks::text, audience FROM tokex.trusted_issuer",
								 true, 0);

	if (rc != SPI_OK_SELECT)
		elog(ERROR, "tokex: cannot read tokex.trusted_issuer: %s", SPI_result_code_string(rc));
	ks->issuers = MemoryContextAllocZero(ks->cxt, sizeof(TokexIssuer) * (SPI_processed + 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	td = SPI_tuptable->tupdesc;
		char	   *iss = SPI_getvalue(tup, td, 1);
		char	   *jwks = SPI_getvalue(tup, td, 2);
		char	   *aud = SPI_getvalue(tup, td, 3);
		TokexIssuer *ti = &ks->issuers[ks->nissuers];
		jose_error	err;
		jose_key  **keys = NULL;
		size_t		n = 0;

		rc = jose_jwks_parse_text(jwks, strlen(jwks), &keys, &n, &err);
		ti->keys = tokex_track_in(ks->cxt, keys, n, tokex_release_keys);
		ti->nkeys = n;
		/* an issuer's JWKS may hold HMAC secrets: keep only the parsed keys */
		explicit_bzero(jwks, strlen(jwks));
		pfree(jwks);
		if (rc < 0)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("JWKS of trusted issuer \"%s\" cannot be loaded", iss),
					 errdetail("%s", err.detail)));
		ks->nissuers++;
		ti->issuer = MemoryContextStrdup(ks->cxt, iss);
		ti->audience = aud ? MemoryContextStrdup(ks->cxt, aud) : NULL;
	}
}

void
keystore_ensure(void)
{
	Keystore   *ks;
	MemoryContext cxt,
				old;
	Oid			nsp;

	if (keystore_valid && keystore != NULL)
		return;
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(keystore_relcache_cb, (Datum) 0);
		callback_registered = true;
	}
	nsp = get_namespace_oid("tokex", false);
	key_relid = get_relname_relid("key", nsp);
	issuer_relid = get_relname_relid("trusted_issuer", nsp);

	/*
	 * Build under the caller's context so an ERROR takes the half-built
	 * store (and the keys it tracks) with it; keep it only once complete.
	 */
	cxt = AllocSetContextCreate(CurrentMemoryContext, "tokex keystore", ALLOCSET_SMALL_SIZES);
	ks = MemoryContextAllocZero(cxt, sizeof(Keystore));
	ks->cxt = cxt;

	/* never keep serving a stale store if this load fails */
	if (keystore)
	{
		MemoryContextDelete(keystore->cxt);
		keystore = NULL;
	}
	/* mark valid first: an invalidation arriving while we read wins */
	keystore_valid = true;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "tokex: SPI_connect failed");
	old = MemoryContextSwitchTo(cxt);
	load_own(ks);
	load_issuers(ks);
	MemoryContextSwitchTo(old);
	SPI_finish();

	MemoryContextSetParent(cxt, TopMemoryContext);
	keystore = ks;
}

const TokexIssuer *
keystore_own(void)
{
	return keystore ? &keystore->own_issuer : NULL;
}

const TokexIssuer *
keystore_issuer(const char *iss)
{
	if (keystore == NULL)
		return NULL;
	for (int i = 0; i < keystore->nissuers; i++)
		if (strcmp(keystore->issuers[i].issuer, iss) == 0)
			return &keystore->issuers[i];
	return NULL;
}

const jose_key *
keystore_signing_key(const char *kid, jose_error *err)
{
	if (keystore != NULL)
		for (int i = 0; i < keystore->nown; i++)
		{
			OwnKey	   *ok = &keystore->own[i];

			if (kid ? (ok->can_sign && strcmp(ok->key->kid, kid) == 0) : ok->active)
				return ok->key;
		}
	jose_seterr(err, JOSE_E_NO_KEY, kid ? "no active or next signing key with this kid" :
				"there is no active signing key");
	return NULL;
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
