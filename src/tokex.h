/*
 * tokex.h — declarations shared by the PostgreSQL side of tokex.
 */
#ifndef TOKEX_H
#define TOKEX_H

#include "postgres.h"

#include "access/htup.h"
#include "access/tupdesc.h"
#include "fmgr.h"

/*
 * PostgreSQL's fmgrprotos.h declares SQL functions named json_object and
 * json_typeof, which jansson also defines (json_typeof as a macro).  Read
 * PostgreSQL's declarations under other names, once, before jansson.
 */
#define json_object pg_sql_json_object
#define json_typeof pg_sql_json_typeof
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#undef json_object
#undef json_typeof

#include "utils/jsonb.h"
#include "utils/uuid.h"

#include "jose/jose.h"

/* GUCs (tokex.c) */
extern char *tokex_issuer;
extern int	tokex_clock_skew;
extern int	tokex_default_ttl;
extern int	tokex_max_ttl;
extern int	tokex_max_chain_depth;
extern int	tokex_token_cache_size;
extern int	tokex_dpop_max_age;
extern char *tokex_resource_audience;
extern bool tokex_dpop_nonce;
extern int	tokex_dpop_nonce_lifetime;
extern char *tokex_base_url;
extern int	tokex_endpoint_style;

#define TOKEX_ENDPOINTS_RPC		0
#define TOKEX_ENDPOINTS_PLAIN	1
extern int	tokex_secret_iterations;

/* The SQL objects are the version this library was built for; ERROR (with a hint) if not. */
extern void tokex_check_version(void);

/* Current wall-clock time in Unix seconds (tokens care about now, not xact start). */
extern int64 tokex_now(void);

/*
 * Cleanup (tokex.c): what the JOSE core, jansson and OpenSSL hand to
 * PostgreSQL code is owned by a memory context from the moment it arrives,
 * so that an ERROR, which resets or deletes the context, frees it as surely
 * as a normal return.  This is tokex's one cleanup mechanism: objects are
 * registered with a reset callback (tokex_track), plain strings are copied
 * into the context (tokex_adopt); no PG_TRY, and no hand-written free of an
 * object anything may raise past.
 *
 * tokex_track: release(obj, n) runs when cxt is reset or deleted.  Returns
 * obj; NULL (the library's out-of-memory) is returned as NULL for the caller
 * to report.  If the bookkeeping itself cannot be allocated, obj is released
 * before the ERROR is raised.
 */
typedef void (*TokexRelease) (void *obj, size_t n);

extern void *tokex_track_in(MemoryContext cxt, void *obj, size_t n, TokexRelease release);
#define tokex_track(obj, n, release) \
	tokex_track_in(CurrentMemoryContext, (obj), (n), (release))

extern void tokex_release_free(void *obj, size_t n);	/* free() */
extern void tokex_release_secret(void *obj, size_t n);	/* wipe n bytes, free() */
extern void tokex_release_json(void *obj, size_t n);	/* json_decref() */
extern void tokex_release_key(void *obj, size_t n);	/* jose_key_free() */
extern void tokex_release_keys(void *obj, size_t n);	/* jose_keys_free(obj, n) */
extern void tokex_release_jwt(void *obj, size_t n);	/* jose_jwt_free() */

static inline json_t *
tokex_json_track(json_t *j)
{
	return (json_t *) tokex_track(j, 0, tokex_release_json);
}

/*
 * Take a malloc'd string from jansson or the JOSE core into palloc memory and
 * free the original; NULL (their out-of-memory) or a failed copy is an ERROR,
 * raised only after the original is freed.
 */
extern char *tokex_adopt(char *s);

/* A jsonb object as a jansson object (tracked); else ERROR 22023 "invalid <what>". */
extern json_t *tokex_jsonb_to_json(Jsonb *jb, const char *what);

/* JSON text -> jsonb Datum. */
extern Datum tokex_jsonb_in(const char *s);
extern Datum tokex_json_to_jsonb(json_t *j);

/* SHA-256 of n bytes (ERROR if OpenSSL fails). */
extern const EVP_MD *tokex_sha256_md(void);
extern void tokex_sha256(const void *p, size_t n, uint8 out[32]);

/* Parse a UUID in its canonical 8-4-4-4-12 form only. */
extern bool tokex_parse_uuid(const char *s, pg_uuid_t *out);

/* Revocation by (issuer, jti): the jti's text (NULL: no identifier) and key. */
extern char *tokex_jti_text(const json_t *jti);
extern void tokex_jti_key(const char *iss, const char *jti, uint8 out[32]);

/* Raise the contract error for a failed verification: 28000, "invalid token". */
extern void tokex_invalid_token(const jose_error *err) pg_attribute_noreturn();

/*
 * keys.c: a per-backend cache built from one table of schema tokex (tokex.key
 * in keys.c, tokex.trusted_issuer in issuers.c) and dropped when that table
 * changes.  tokex_table_cache() returns the cache, (re)building it first when
 * it is missing or stale, which may raise: it runs query, begin() makes the
 * empty cache with room for nrows, and add() puts one row in, reading its
 * columns by name (tokex_row_text, tokex_row_datum).  Both allocate and track
 * what the cache keeps in cxt, never in the current context, which is SPI's
 * and short-lived.  Define one statically: {"table", "SELECT ...", begin, add}.
 */
typedef struct TokexTableCache
{
	const char *relname;
	const char *query;
	void	   *(*begin) (MemoryContext cxt, uint64 nrows);
	void		(*add) (void *cache, MemoryContext cxt, HeapTuple row, TupleDesc desc);
	void	   *data;			/* the cache, NULL until it was built */
	MemoryContext cxt;
	Oid			relid;
	bool		valid;
	bool		registered;
} TokexTableCache;

extern char *tokex_row_text(HeapTuple row, TupleDesc desc, const char *column);
extern Datum tokex_row_datum(HeapTuple row, TupleDesc desc, const char *column, bool *isnull);
extern void *tokex_table_cache(TokexTableCache *cache);

/* Counts the rebuilds of every table cache: a key or an issuer changed. */
extern uint64 tokex_table_cache_generation;

/*
 * keys.c: tokex's own keys.  tokex_own_keys: every key not revoked, what
 * tokex's tokens verify against.  tokex_signing_key: the active key, or kid
 * when it is active or next; ERROR when there is none or tokex.issuer is
 * unset.  tokex_sign_text / tokex_sign: a compact JWS (palloc'd) over JSON
 * text / a claims object, with header alg, kid and typ.
 */
extern const jose_keyset *tokex_own_keys(void);
extern const jose_key *tokex_signing_key(const char *kid);
extern char *tokex_sign_text(const jose_key *key, const char *payload, size_t len,
							 const char *typ);
extern char *tokex_sign(json_t *payload, const char *typ, const char *kid);

/*
 * issuers.c: the issuers tokex trusts.  tokex_trusted_issuers loads them
 * (may raise); tokex_trusted_issuer_keys only looks up an iss among them:
 * its keys and the audience it requires, or NULL when it is not trusted.
 */
typedef struct TrustedIssuers TrustedIssuers;
extern const TrustedIssuers *tokex_trusted_issuers(void);
extern const jose_keyset *tokex_trusted_issuer_keys(const TrustedIssuers *ti, const char *iss);

/*
 * jwt.c: tokex_verify checks a compact JWS against tokex's own keys or the
 * trusted issuer its iss names; NULL with err set when it is not valid.
 * Everything in a TokexToken belongs to the verified JWT, which is released
 * with the memory context that was current at verification.
 */
typedef struct TokexToken
{
	json_t	   *header;
	json_t	   *payload;		/* the claims */
	bool		own;			/* issued by tokex itself */
	const char *iss;
	const char *sub;			/* or NULL */
	const char *typ;			/* header typ, or NULL */
	const char *payload_text;	/* the verified payload bytes, as signed */
} TokexToken;

extern TokexToken *tokex_verify(const char *token, size_t len, const char *audience,
								jose_error *err);

/* audit.c: the audit writer (no token without its committed row) */
extern void tokex_audit_init(void);
extern bool tokex_audit_durable(void);
extern void tokex_audit_require_durable(void);
extern void tokex_audit_write(json_t *row, bool granted);
extern bool tokex_worker_xact(const char *activity, void (*fn) (void *arg), void *arg,
							  char *why, size_t whylen);
extern void tokex_worker_hold_extension(void);

/* seal.c: row hashes, sealed blocks, the background sealer */
extern void tokex_seal_init(void);
extern void tokex_seal_shmem_request(void);
extern void tokex_seal_shmem_startup(void);

/* standby.c: hot standbys (heartbeat, max_replica_lag, revocation_sync) */
extern void tokex_standby_init(void);
extern bool tokex_replica_behind(void);
extern void tokex_replica_check(void);
extern void tokex_audit_standby(json_t *row, bool granted);

#endif							/* TOKEX_H */
