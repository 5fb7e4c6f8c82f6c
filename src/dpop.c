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

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

static const char *const private_members[] = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"};

/* url without its query and fragment (RFC 9449 §4.3 step 9) */
static char *
without_query(const char *url)
{
	size_t		n = strcspn(url, "?#");

	return pnstrdup(url, n);
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

/* base64url(SHA-256(s)), as ath carries it */
static char *
b64_sha256(const char *s, size_t n)
{
	uint8		h[32];

	tokex_sha256(s, n, h);
	return tokex_adopt(jose_b64url_encode(h, 32, NULL));
}

/*
 * Check a DPoP proof for a request (htm, htu) and, when given, the access
 * token it accompanies (ath).  NULL when it holds, with out filled; else
 * why not.  Nothing here raises for a bad proof.
 */
const char *
dpop_check(const char *proof, size_t len, const char *htm, const char *htu,
		   const char *access_token, size_t at_len, DpopProof *out)
{
	jose_jws	jws;
	jose_error	err;
	json_t	   *jwk;
	json_t	   *claims;
	json_t	   *v;
	jose_key   *key;
	int64		now = tokex_now();
	double		iat;

	memset(out, 0, sizeof(*out));
	if (jose_jws_parse(proof, len, &jws, &err) < 0)
		return psprintf("the proof is not a JWS: %s", err.detail);
	/* the header (and the jwk in it) outlives jws, which is cleared on every path below */
	tokex_json_track(json_incref(jws.header));
	if (jws.typ == NULL || strcmp(jws.typ, "dpop+jwt") != 0)
	{
		jose_jws_clear(&jws);
		return "the proof's typ is not dpop+jwt";
	}
	if (jose_alg_kty(jws.alg) == JOSE_KTY_OCT)
	{
		jose_jws_clear(&jws);
		return "the proof is signed with a symmetric algorithm";
	}
	jwk = json_object_get(jws.header, "jwk");
	if (!json_is_object(jwk))
	{
		jose_jws_clear(&jws);
		return "the proof has no jwk header";
	}
	for (size_t i = 0; i < lengthof(private_members); i++)
		if (json_object_get(jwk, private_members[i]))
		{
			jose_jws_clear(&jws);
			return "the proof's jwk holds a private key";
		}
	key = tokex_track(jose_jwk_parse(jwk, jws.alg, false, &err), 0, tokex_release_key);
	if (key == NULL)
	{
		jose_jws_clear(&jws);
		return psprintf("the proof's jwk: %s", err.detail);
	}
	if (jose_jws_verify(&jws, key, &err) < 0)
	{
		jose_jws_clear(&jws);
		return psprintf("the proof's signature: %s", err.detail);
	}
	claims = tokex_json_track(jose_jws_payload_json(&jws, &err));
	jose_jws_clear(&jws);
	if (claims == NULL)
		return psprintf("the proof's claims: %s", err.detail);
	if (jose_jwk_thumbprint(key, out->jkt, &err) < 0)
		return psprintf("the proof's jwk: %s", err.detail);

	v = json_object_get(claims, "jti");
	if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 256)
		return "the proof has no jti (a string of at most 256 characters)";
	out->jti = pstrdup(json_string_value(v));
	v = json_object_get(claims, "htm");
	if (!json_is_string(v) || strcmp(json_string_value(v), htm) != 0)
		return psprintf("the proof's htm is not %s", htm);
	v = json_object_get(claims, "htu");
	if (!json_is_string(v) || strstr(json_string_value(v), "://") == NULL ||
		strcmp(without_query(json_string_value(v)), without_query(htu)) != 0)
		return psprintf("the proof's htu is not %s", without_query(htu));
	v = json_object_get(claims, "iat");
	if (!json_is_number(v))
		return "the proof has no iat";
	iat = json_number_value(v);
	if (iat > (double) (now + tokex_clock_skew))
		return "the proof's iat is in the future";
	if (iat < (double) (now - tokex_dpop_max_age - tokex_clock_skew))
		return "the proof is too old (tokex.dpop_max_age)";
	out->expires = (int64) iat + tokex_dpop_max_age + tokex_clock_skew + 1;
	v = json_object_get(claims, "ath");
	if (access_token)
	{
		if (!json_is_string(v) || strcmp(json_string_value(v), b64_sha256(access_token, at_len)) != 0)
			return "the proof's ath is not the access token's hash";
	}
	v = json_object_get(claims, "nonce");
	out->nonce = json_is_string(v) ? pstrdup(json_string_value(v)) : NULL;
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

static void
nonce_mac(int64 t, uint8 out[8 + 16])
{
	uint8		mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;
	bytea	   *secret;
	bool		isnull;

	for (int i = 0; i < 8; i++)
		out[i] = (uint8) (((uint64) t) >> (56 - 8 * i));
	tokex_keep_plan(&secret_plan, "SELECT secret FROM tokex.dpop_secret", 0, NULL);
	if (execute_now(secret_plan, NULL, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "tokex: no DPoP nonce secret (tokex.dpop_secret)");
	secret = DatumGetByteaPP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (HMAC(EVP_sha256(), VARDATA_ANY(secret), VARSIZE_ANY_EXHDR(secret), out, 8, mac, &maclen) == NULL)
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("HMAC failed")));
	memcpy(out + 8, mac, 16);
}

/* A fresh nonce (inside SPI). */
char *
dpop_nonce_new(void)
{
	uint8		n[8 + 16];

	nonce_mac(tokex_now(), n);
	return tokex_adopt(jose_b64url_encode(n, sizeof(n), NULL));
}

/* Is nonce one tokex issued within tokex.dpop_nonce_lifetime? (inside SPI) */
bool
dpop_nonce_ok(const char *nonce)
{
	uint8	   *raw = NULL;
	size_t		len = 0;
	jose_error	err;
	uint8		want[8 + 16];
	int64		t = 0;
	int64		now = tokex_now();
	bool		ok;

	if (nonce == NULL || jose_b64url_decode(nonce, strlen(nonce), 64, &raw, &len, &err) < 0)
		return false;
	/* owned by the call's context: nonce_mac below may raise */
	tokex_track(raw, len, tokex_release_free);
	if (len != sizeof(want))
		return false;
	for (int i = 0; i < 8; i++)
		t = (int64) (((uint64) t << 8) | raw[i]);
	nonce_mac(t, want);
	ok = CRYPTO_memcmp(raw, want, sizeof(want)) == 0 &&
		t <= now + tokex_clock_skew && t >= now - tokex_dpop_nonce_lifetime;
	return ok;
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
