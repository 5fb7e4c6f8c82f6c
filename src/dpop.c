/*
 * dpop.c — DPoP proofs (RFC 9449): a token bound to a key the agent holds,
 * so that a leaked token (in a prompt, a log, a tool's output) is useless
 * without that key.
 *
 * A proof is a JWS the client signs per request: header typ dpop+jwt, an
 * asymmetric alg, and jwk, the public key; claims jti (never accepted twice
 * within the window), htm and htu (the request's method and URL, without
 * query or fragment), iat (within tokex.dpop_max_age), ath (the SHA-256 of
 * the access token, when one is presented with it) and nonce (when
 * tokex.dpop_nonce asks for one).  The key's RFC 7638 thumbprint is what a
 * bound token names in cnf.jkt.
 */
#include "issue.h"

#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"


/* url without its query and fragment (RFC 9449 §4.3 step 9) */
static char *
without_query(const char *url)
{
	return pnstrdup(url, jose_dpop_url_len(url));
}

/* The token endpoint a proof must name (htu): tokex._endpoint('/rpc/token'). */
char *
dpop_token_endpoint(void)
{
	const char *base = tokex_base_url && tokex_base_url[0] ? tokex_base_url : tokex_issuer;
	size_t		n = base ? strlen(base) : 0;

	while (n > 0 && base[n - 1] == '/')
		n--;
	return psprintf("%.*s%s", (int) n, base ? base : "",
					tokex_endpoint_style == TOKEX_ENDPOINTS_PLAIN ? "/token" : "/rpc/token");
}

/*
 * Check a DPoP proof for a request (htm, htu) and, when given, the access
 * token it accompanies (ath): jose_dpop_check (src/jose/dpop.c) with
 * tokex's clock and settings.  NULL when it holds, with out filled (in the
 * current context); else why not.  Nothing here raises for a bad proof.
 */
const char *
dpop_check(const char *proof, size_t len, const char *htm, const char *htu,
		   const char *access_token, size_t at_len, DpopProof *out)
{
	jose_dpop_rules rules = {
		.htm = htm,
		.htu = htu,
		.access_token = access_token,
		.at_len = at_len,
		.now = tokex_now(),
		.skew = tokex_clock_skew,
		.max_age = tokex_dpop_max_age,
	};
	jose_dpop	p;
	jose_dpop_fault fault;
	jose_error	err;

	memset(out, 0, sizeof(*out));
	if (jose_dpop_check(proof, len, &rules, &p, &fault, &err) < 0)
	{
		/* not the proof's fault: out of memory, SHA-256 failed */
		if (fault == JOSE_DPOP_OK)
			ereport(ERROR, (errcode(strcmp(err.detail, "out of memory") == 0 ? ERRCODE_OUT_OF_MEMORY
								   : ERRCODE_INTERNAL_ERROR), errmsg("%s", err.detail)));
		/* the request's own method and URL may be longer than err.detail holds */
		if (fault == JOSE_DPOP_HTM)
			return psprintf("the proof's htm is not %s", htm);
		if (fault == JOSE_DPOP_HTU)
			return psprintf("the proof's htu is not %s", without_query(htu));
		return pstrdup(err.detail);
	}
	memcpy(out->jkt, p.jkt, sizeof(out->jkt));
	out->expires = p.expires;
	out->jti = pstrdup(p.jti);
	out->nonce = p.nonce ? pstrdup(p.nonce) : NULL;
	jose_dpop_clear(&p);
	return NULL;
}

/*
 * The proofs seen: a table in shared memory (tokex preloaded), so that
 * remembering a proof neither writes to the database nor goes away with
 * the caller's transaction: it works in a READ ONLY transaction (PostgREST
 * runs every GET that way), on a hot standby, and a proof whose request
 * was rolled back stays spent.  Open addressing over the first 8 bytes of
 * SHA-256(jkt, NUL, jti); an entry is free again once the proof it records
 * expired.  A server restart forgets (a proof lives tokex.dpop_max_age).
 * Without the preload, the jti goes in tokex.dpop_jti, in the caller's
 * transaction.
 */
#define REPLAY_SLOTS 65536		/* a power of two */
#define REPLAY_PROBES 64

typedef struct ReplayEntry
{
	uint8		key[16];
	int64		expires;		/* 0: never used */
} ReplayEntry;

typedef struct ReplayShmem
{
	LWLock	   *lock;
	ReplayEntry slots[REPLAY_SLOTS];
} ReplayShmem;

static ReplayShmem *replay = NULL;
static shmem_request_hook_type prev_request_hook = NULL;
static shmem_startup_hook_type prev_startup_hook = NULL;

static void
replay_request(void)
{
	if (prev_request_hook)
		prev_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(ReplayShmem)));
	RequestNamedLWLockTranche("tokex_dpop", 1);
}

static void
replay_startup(void)
{
	bool		found;

	if (prev_startup_hook)
		prev_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	replay = ShmemInitStruct("tokex dpop proofs", sizeof(ReplayShmem), &found);
	if (!found)
	{
		memset(replay, 0, sizeof(ReplayShmem));
		replay->lock = &(GetNamedLWLockTranche("tokex_dpop"))->lock;
	}
	LWLockRelease(AddinShmemInitLock);
}

/* _PG_init, when preloaded */
void
tokex_dpop_init(void)
{
	prev_request_hook = shmem_request_hook;
	shmem_request_hook = replay_request;
	prev_startup_hook = shmem_startup_hook;
	shmem_startup_hook = replay_startup;
}

/* false: seen before.  Raises when every slot it may use holds a live proof (fail closed). */
static bool
replay_remember(const DpopProof *p)
{
	uint8		h[32];
	char	   *k = psprintf("%s%c%s", p->jkt, '\0', p->jti);
	uint64		start;
	int64		now = tokex_now();
	int			free_slot = -1;
	bool		fresh = true;

	tokex_sha256(k, strlen(p->jkt) + 1 + strlen(p->jti), h);
	memcpy(&start, h, sizeof(start));
	LWLockAcquire(replay->lock, LW_EXCLUSIVE);
	for (int i = 0; i < REPLAY_PROBES; i++)
	{
		ReplayEntry *e = &replay->slots[(start + i) & (REPLAY_SLOTS - 1)];
		bool		live = e->expires > now;

		if (live && memcmp(e->key, h + 16, 16) == 0)
		{
			fresh = false;
			break;
		}
		if (!live && free_slot < 0)
			free_slot = (int) ((start + i) & (REPLAY_SLOTS - 1));
	}
	if (fresh && free_slot >= 0)
	{
		memcpy(replay->slots[free_slot].key, h + 16, 16);
		replay->slots[free_slot].expires = p->expires;
	}
	LWLockRelease(replay->lock);
	if (fresh && free_slot < 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("too many DPoP proofs within tokex.dpop_max_age to remember another"),
				 errhint("Lower tokex.dpop_max_age.")));
	return fresh;
}

/*
 * Remember the proof's jti for as long as the proof could be accepted; false
 * when it was seen before (a replay).  Inside SPI (used only without the
 * preload).
 */
static SPIPlanPtr remember_plan = NULL;

bool
dpop_remember(const DpopProof *p)
{
	Datum		v[3];
	int			rc;

	if (replay)
		return replay_remember(p);
	tokex_keep_plan(&remember_plan,
					"WITH gone AS (DELETE FROM tokex.dpop_jti WHERE expires_at OPERATOR(pg_catalog.<) pg_catalog.now()) "
					"INSERT INTO tokex.dpop_jti (jkt, jti, expires_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
					3, (Oid[]) {TEXTOID, TEXTOID, TIMESTAMPTZOID});
	v[0] = CStringGetTextDatum(p->jkt);
	v[1] = CStringGetTextDatum(p->jti);
	v[2] = TimestampTzGetDatum(time_t_to_timestamptz((pg_time_t) p->expires));
	rc = SPI_execute_plan(remember_plan, v, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "tokex: cannot record a DPoP proof: %s", SPI_result_code_string(rc));
	return SPI_processed == 1;
}

/* The jkt a token is bound to (cnf.jkt), NULL if none; *other when cnf binds it some other way. */
const char *
dpop_bound_jkt(const TokexToken *t, bool *other)
{
	json_t	   *cnf = t ? json_object_get(t->payload, "cnf") : NULL;
	json_t	   *jkt = json_object_get(cnf, "jkt");

	*other = cnf != NULL && !json_is_string(jkt);
	return json_is_string(jkt) ? json_string_value(jkt) : NULL;
}


/* ---------------------------------------------------------------------
 * Server nonces (RFC 9449 §8), when tokex.dpop_nonce is on: a proof must
 * carry a nonce tokex issued within tokex.dpop_nonce_lifetime.  A nonce is
 * base64url(issue time, 8 bytes big-endian || the first 16 bytes of
 * HMAC-SHA256(tokex.dpop_secret, the time)): nothing to store, and any
 * backend checks any other's.
 * ---------------------------------------------------------------------
 */
static SPIPlanPtr secret_plan = NULL;

/* tokex.dpop_secret's secret (inside SPI, in SPI's context) */
static bytea *
nonce_secret(void)
{
	bool		isnull;

	tokex_keep_plan(&secret_plan, "SELECT secret FROM tokex.dpop_secret", 0, NULL);
	if (execute_now(secret_plan, NULL, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "tokex: no DPoP nonce secret (tokex.dpop_secret)");
	return DatumGetByteaPP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/* A fresh nonce (inside SPI). */
char *
dpop_nonce_new(void)
{
	bytea	   *secret = nonce_secret();
	jose_error	err;
	char	   *n = jose_dpop_nonce_new((const uint8 *) VARDATA_ANY(secret), VARSIZE_ANY_EXHDR(secret),
										tokex_now(), &err);

	if (n == NULL)
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("HMAC failed")));
	return tokex_adopt(n);
}

/* Is nonce one tokex issued within tokex.dpop_nonce_lifetime? (inside SPI) */
bool
dpop_nonce_ok(const char *nonce)
{
	int64		t;
	jose_error	err;
	bytea	   *secret;
	int			ok;

	/* the secret is read only for what has a nonce's shape */
	if (nonce == NULL || jose_dpop_nonce_time(nonce, strlen(nonce), &t, &err) < 0)
		return false;
	secret = nonce_secret();
	ok = jose_dpop_nonce_ok(nonce, strlen(nonce), (const uint8 *) VARDATA_ANY(secret),
							VARSIZE_ANY_EXHDR(secret), tokex_now(), tokex_clock_skew,
							tokex_dpop_nonce_lifetime, &err);
	if (ok < 0)
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("HMAC failed")));
	return ok == 1;
}

/* tokex._random_bytes(n): n bytes from the operating system's CSPRNG. */
PG_FUNCTION_INFO_V1(tokex_random_bytes);
Datum
tokex_random_bytes(PG_FUNCTION_ARGS)
{
	int32		n = PG_GETARG_INT32(0);
	bytea	   *b;

	if (n < 1 || n > 1024)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("between 1 and 1024 bytes")));
	b = palloc(VARHDRSZ + n);
	SET_VARSIZE(b, VARHDRSZ + n);
	if (!pg_strong_random(VARDATA(b), n))
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("no random bytes")));
	PG_RETURN_BYTEA_P(b);
}
