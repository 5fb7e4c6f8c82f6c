/*
 * jose.h — the PostgreSQL-free JOSE core of tokex.
 *
 * Everything here is plain C over OpenSSL 3 (EVP) and jansson, with no
 * PostgreSQL headers, so it can be unit-tested, run under ASan/UBSan and
 * fuzzed on its own.  The PostgreSQL layer in src/ wraps it.
 *
 * Conventions:
 *   - No function here longjmps or exits.  Every function either succeeds or
 *     returns an error (NULL / -1) with a jose_error filled in; on error it has
 *     freed everything it allocated.
 *   - Memory comes from malloc; objects returned to the caller are freed with
 *     the matching *_free function (or free() for plain buffers/strings).
 *   - Error details are stable, safe to show to a client (they never contain
 *     key material or token bytes) and are what jwt_verify puts in DETAIL.
 */
#ifndef TOKEX_JOSE_H
#define TOKEX_JOSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/evp.h>

/* Hard limits, checked before any allocation. */
#define JOSE_MAX_TOKEN_LEN		(64 * 1024)	/* bytes of compact JWS */
#define JOSE_MAX_JSON_DEPTH		32			/* nesting of header/payload/JWK */
#define JOSE_MAX_JSON_MEMBERS	4096		/* members + array elements of one JSON text */
#define JOSE_MAX_JWKS_KEYS		64
#define JOSE_MIN_RSA_BITS		2048
#define JOSE_MAX_RSA_BITS		8192		/* its signatures fit the 1024-byte limit */
#define JOSE_MAX_NUMERIC_DATE	253402300799.0	/* 9999-12-31T23:59:59Z */

typedef enum jose_alg
{
	JOSE_ALG_UNKNOWN = 0,		/* also what "none" maps to */
	JOSE_ALG_HS256,
	JOSE_ALG_HS384,
	JOSE_ALG_HS512,
	JOSE_ALG_RS256,
	JOSE_ALG_RS384,
	JOSE_ALG_RS512,
	JOSE_ALG_PS256,
	JOSE_ALG_PS384,
	JOSE_ALG_PS512,
	JOSE_ALG_ES256,
	JOSE_ALG_ES384,
	JOSE_ALG_ES512,
	JOSE_ALG_EDDSA,
	JOSE_ALG_COUNT_
} jose_alg;

typedef enum jose_kty
{
	JOSE_KTY_EC = 1,
	JOSE_KTY_OKP,
	JOSE_KTY_RSA,
	JOSE_KTY_OCT
} jose_kty;

/*
 * Stable error codes, each with a name (jose_errcode_name: "EXPIRED") and a
 * fixed text (jose_strerror: "token expired").  One list, so that the enum
 * and both tables cannot drift apart.
 */
#define JOSE_ERRCODES(X) \
	X(INTERNAL, "internal error")	/* OpenSSL/jansson/allocation failure */ \
	X(TOO_LONG, "token too long")	/* longer than JOSE_MAX_TOKEN_LEN */ \
	X(FORMAT, "token is not a JWS compact serialization")	/* not three segments */ \
	X(BASE64, "invalid base64url")	/* a segment is not strict base64url */ \
	X(HEADER, "invalid JOSE header")	/* not a JSON object / bad member types */ \
	X(PAYLOAD, "payload is not a JSON object") \
	X(ALG_MISSING, "header has no alg") \
	X(ALG_NONE, "alg none is not accepted") \
	X(ALG_UNSUPPORTED, "unsupported alg") \
	X(CRIT, "unsupported crit")	/* an extension we do not understand, or malformed */ \
	X(ALG_KEY_MISMATCH, "alg does not match the key") \
	X(KEY_TOO_WEAK, "key too weak for alg")	/* RSA < 2048 bits, HMAC key < hash */ \
	X(SIG_LENGTH, "signature has the wrong length")	/* for the alg/key */ \
	X(SIGNATURE, "signature does not verify") \
	X(NO_KEY, "no matching key")	/* no key matches kid / alg */ \
	X(CLAIM_TYPE, "malformed claim")	/* exp/nbf/iat not a NumericDate, iss/sub/aud */ \
	X(EXPIRED, "token expired")	/* now >= exp + skew */ \
	X(NOT_YET_VALID, "token not yet valid")	/* now < nbf - skew */ \
	X(IAT_FUTURE, "token issued in the future")	/* iat > now + skew */ \
	X(AUDIENCE, "audience not accepted")	/* a required audience not in aud */ \
	X(JWK, "invalid JWK")	/* malformed / unsupported JWK */ \
	X(JWKS, "invalid JWKS") \
	X(JSON_DEPTH, "JSON nested too deeply")	/* deeper than JOSE_MAX_JSON_DEPTH */ \
	X(KEY_OPS, "key not allowed for this operation")	/* by its "key_ops" */ \
	X(JSON_MEMBERS, "JSON has too many members")	/* more than JOSE_MAX_JSON_MEMBERS */

typedef enum jose_errcode
{
	JOSE_OK = 0,
#define JOSE_ERRCODE_ENUM(name, text) JOSE_E_##name,
	JOSE_ERRCODES(JOSE_ERRCODE_ENUM)
#undef JOSE_ERRCODE_ENUM
	JOSE_E_COUNT_
} jose_errcode;

/*
 * Why a JSON text was refused, whatever code the caller chose for the
 * refusal (JOSE_E_HEADER, JOSE_E_PAYLOAD, JOSE_E_JWKS ...): callers that
 * explain the refusal in their own words switch on this, never on the
 * detail text.
 */
typedef enum jose_json_reason
{
	JOSE_JSON_NONE = 0,			/* the error is not about JSON syntax */
	JOSE_JSON_SYNTAX,			/* not valid JSON */
	JOSE_JSON_DUPLICATE,		/* an object repeats a member name */
	JOSE_JSON_RANGE,			/* an integer outside the 64-bit range */
	JOSE_JSON_DEPTH,			/* nested deeper than JOSE_MAX_JSON_DEPTH */
	JOSE_JSON_MEMBERS,			/* more than JOSE_MAX_JSON_MEMBERS values */
} jose_json_reason;

typedef struct jose_error
{
	jose_errcode code;
	jose_json_reason json_reason;	/* set by jose_json_parse, else NONE */
	char		detail[256];	/* human-readable, no secrets */
} jose_error;

/*
 * Fill err with code and a formatted detail (printf-style; NULL: the code's
 * text); json_reason is reset to NONE.  Returns -1.
 */
int			jose_seterr(jose_error *err, jose_errcode code, const char *fmt,...)
			__attribute__((format(printf, 3, 4)));
const char *jose_strerror(jose_errcode code);
const char *jose_errcode_name(jose_errcode code);	/* "EXPIRED"; "OK" for JOSE_OK */
const char *jose_json_reason_text(jose_json_reason reason);	/* "duplicate member" */

/* ---------------- algorithms ---------------- */

/* "ES256" -> JOSE_ALG_ES256; "none", unknown, NULL -> JOSE_ALG_UNKNOWN. Case-sensitive. */
jose_alg	jose_alg_from_name(const char *name);
const char *jose_alg_name(jose_alg alg);	/* NULL for UNKNOWN */
jose_kty	jose_alg_kty(jose_alg alg);
bool		jose_alg_can_sign(jose_alg alg);	/* false for HS* (verify-only in tokex) */

/* ---------------- base64url (RFC 4648 §5, no padding) ---------------- */

/* Returns malloc'd NUL-terminated string; *outlen (may be NULL) gets strlen. */
char	   *jose_b64url_encode(const uint8_t *in, size_t inlen, size_t *outlen);

/*
 * Strict decode: rejects '=', any byte outside [A-Za-z0-9_-], length % 4 == 1,
 * and non-zero unused trailing bits.  Length is checked against maxlen before
 * allocating.  Returns 0 and a malloc'd buffer (NUL-terminated for
 * convenience, not counted in *outlen) or -1 (JOSE_E_BASE64 / JOSE_E_TOO_LONG).
 */
int			jose_b64url_decode(const char *in, size_t inlen, size_t maxlen,
							   uint8_t **out, size_t *outlen, jose_error *err);

/* ---------------- JSON ---------------- */

/*
 * Parse a JSON text as jansson does but with JSON_REJECT_DUPLICATES, a
 * nesting limit of JOSE_MAX_JSON_DEPTH and at most JOSE_MAX_JSON_MEMBERS
 * object members and array elements (all levels together), both checked on
 * the text before jansson allocates anything; returns a new reference or
 * NULL.  On failure err gets `code` (the caller's choice, e.g.
 * JOSE_E_HEADER), JOSE_E_JSON_DEPTH or JOSE_E_JSON_MEMBERS, and json_reason
 * says what was wrong with the text.
 */
json_t	   *jose_json_parse(const char *buf, size_t len, jose_errcode code,
							jose_error *err);

/* ---------------- keys (key.c) ---------------- */

/* What a key may be used for: RFC 7517 §4.3 "key_ops" values tokex acts on. */
#define JOSE_OP_SIGN			0x1u
#define JOSE_OP_VERIFY			0x2u

typedef struct jose_key
{
	jose_kty	kty;
	jose_alg	alg;			/* the one algorithm this key is bound to */
	char	   *kid;			/* JWK "kid", or the RFC 7638 thumbprint */
	char		thumbprint[44];	/* RFC 7638 SHA-256, base64url, NUL-terminated */
	EVP_PKEY   *pkey;			/* EC/OKP/RSA; NULL for oct */
	uint8_t    *secret;			/* oct only */
	size_t		secret_len;
	bool		has_private;
	unsigned	ops;			/* JOSE_OP_*: from "key_ops", else both */
} jose_key;

void		jose_key_free(jose_key *key);

/*
 * Generate a new key pair for alg (not HS*).  RSA: 2048 bits for *256,
 * 3072 for *384 / *512.  kid = thumbprint.
 */
jose_key   *jose_key_generate(jose_alg alg, jose_error *err);

/* Private key as PKCS#8 DER (malloc'd) and back.  Not for oct keys. */
int			jose_key_to_der(const jose_key *key, uint8_t **der, size_t *len,
							jose_error *err);
jose_key   *jose_key_from_der(jose_alg alg, const uint8_t *der, size_t len,
							  jose_error *err);

/* ---------------- one JWK (jwk.c) ---------------- */

/*
 * JWK -> key.  Binding of the algorithm:
 *   - JWK "alg" present: must be supported and fit the kty/crv; that is the alg.
 *   - absent: EC P-256/P-384/P-521 -> ES256/ES384/ES512, OKP Ed25519 -> EdDSA;
 *     RSA and oct have no single implied alg, so `default_alg` is used
 *     (JOSE_ALG_UNKNOWN there -> JOSE_E_JWK "JWK has no alg").
 * "use", when present, must be "sig".  "key_ops", when present, must be an
 * array of distinct strings that names "sign" or "verify" (and nothing else
 * when "use" is also present: RFC 7517 §4.3 wants them consistent); the key
 * is then limited to what it names (key->ops): jose_sign_raw and
 * jose_verify_raw refuse the other operation with JOSE_E_KEY_OPS.
 * EC public points are checked to be on the curve; RSA moduli must be >= 2048
 * bits and free of the ROCA fingerprint (CVE-2017-15361, JOSE_E_KEY_TOO_WEAK);
 * oct keys must be at least as long as the hash of their alg.  Private
 * members (d, p, ...) are read only when allow_private; otherwise their
 * presence is ignored.
 */
jose_key   *jose_jwk_parse(json_t *jwk, jose_alg default_alg, bool allow_private,
						   jose_error *err);

/* Public JWK with kty, crv/x/y or n/e, kid, alg, use:"sig". New reference. */
json_t	   *jose_jwk_public(const jose_key *key, jose_error *err);

/* RFC 7638 thumbprint of the public part into out[44]. */
int			jose_jwk_thumbprint(const jose_key *key, char out[44], jose_error *err);

/* ---------------- JWS compact (jws.c) ---------------- */

/* Raw signature primitives: msg -> JWS signature bytes (ES*: r||s fixed length). */
int			jose_sign_raw(const jose_key *key, const uint8_t *msg, size_t msglen,
						  uint8_t **sig, size_t *siglen, jose_error *err);
int			jose_verify_raw(const jose_key *key, jose_alg alg,
							const uint8_t *msg, size_t msglen,
							const uint8_t *sig, size_t siglen, jose_error *err);

/*
 * Sign: header_json and payload_json are serialized JSON objects (the caller
 * puts alg/kid/typ in the header).  Returns malloc'd compact JWS or NULL.
 */
char	   *jose_jws_sign(const jose_key *key, const char *header_json,
						  size_t header_len, const char *payload_json,
						  size_t payload_len, jose_error *err);

typedef struct jose_jws
{
	json_t	   *header;			/* owned */
	jose_alg	alg;			/* from header; never UNKNOWN after parse */
	const char *kid;			/* borrowed from header, or NULL */
	const char *typ;			/* borrowed from header, or NULL */
	const char *signing_input;	/* borrowed from the token: "h.p" */
	size_t		signing_input_len;
	uint8_t    *payload;		/* owned, decoded bytes, NUL-terminated */
	size_t		payload_len;
	uint8_t    *sig;			/* owned */
	size_t		sig_len;
} jose_jws;

/*
 * Split and decode a compact JWS without verifying it: checks length, three
 * segments, strict base64url, header is an object with a supported alg (none
 * refused), crit understood.  The token must outlive the jose_jws.
 */
int			jose_jws_parse(const char *token, size_t len, jose_jws *out,
						   jose_error *err);
void		jose_jws_clear(jose_jws *jws);

/* Check alg binding (header alg == key alg, key strength) and the signature. */
int			jose_jws_verify(const jose_jws *jws, const jose_key *key,
							jose_error *err);

/* ---------------- key sets (jwks.c) ---------------- */

/*
 * JWKS {"keys":[...]} -> array of keys.  Keys with "use" other than "sig", or
 * a well-formed "key_ops" without "verify", are skipped (RFC 7517 §5); any
 * other key that does not parse makes the whole JWKS an error (a trust anchor
 * is not half-read), as do zero signature keys, more than JOSE_MAX_JWKS_KEYS,
 * and a set that mixes symmetric (oct) and asymmetric keys, skipped ones
 * included.  RSA/oct keys without "alg" are bound to RS256/HS256.  Private
 * members are never read.
 */
int			jose_jwks_parse(json_t *jwks, jose_key ***keys, size_t *nkeys,
							jose_error *err);
/* The same from JSON text (JOSE_E_JWKS, with its json_reason, when it is not JSON). */
int			jose_jwks_parse_text(const char *text, size_t len, jose_key ***keys,
								 size_t *nkeys, jose_error *err);
void		jose_keys_free(jose_key **keys, size_t nkeys);

/*
 * Choose the key from keys[] for this JWS: with a kid, the key with that kid
 * (then alg must match, else JOSE_E_ALG_KEY_MISMATCH); without one, the keys
 * of the header's alg are tried in order.  Verifies the signature.  Returns
 * the index of the key that verified, or -1 (JOSE_E_NO_KEY, _MISMATCH, _SIGNATURE...).
 */
int			jose_jws_verify_with(const jose_jws *jws, jose_key *const *keys,
								 size_t nkeys, jose_error *err);

/* ---------------- JWT (jwt.c) ---------------- */

/*
 * Registered-claim checks on a parsed payload object: exp/nbf/iat must be
 * JSON numbers (NumericDate) between 0 and JOSE_MAX_NUMERIC_DATE when present; exp required when require_exp;
 * now < exp + skew; now >= nbf - skew; iat <= now + skew; iss/sub, when
 * present, strings; when audience != NULL, aud (string or array of strings)
 * must contain it.
 */
int			jose_jwt_check_claims(json_t *payload, int64_t now, int64_t skew,
								  const char *audience, bool require_exp,
								  jose_error *err);

/* Payload object for a parsed jws (parse with duplicates refused). New reference. */
json_t	   *jose_jws_payload_json(const jose_jws *jws, jose_error *err);

/*
 * The keys that may have signed a token, and an audience that every token
 * they verify must name (say, a trusted issuer's own requirement) or NULL.
 */
typedef struct jose_keyset
{
	jose_key   *const *keys;
	size_t		nkeys;
	const char *audience;
} jose_keyset;

/*
 * Chooses the candidate keys from a token's claims, not yet verified (by
 * "iss", say): 0 with *out filled, or -1 with err set.  It runs inside
 * jose_jwt_verify, so it must return to it: no longjmp (no ereport), no exit.
 */
typedef int (*jose_keyset_fn) (void *arg, json_t *claims, jose_keyset *out,
							   jose_error *err);

typedef struct jose_jwt_rules
{
	jose_keyset keys;			/* the candidate keys, when select is NULL */
	jose_keyset_fn select;		/* else this chooses them from the claims */
	void	   *select_arg;
	int64_t		now;			/* Unix seconds */
	int64_t		skew;			/* seconds of tolerance for exp, nbf, iat */
	const char *audience;		/* must be in aud, or NULL */
	bool		require_exp;
} jose_jwt_rules;

typedef struct jose_jwt
{
	json_t	   *header;			/* owned */
	json_t	   *payload;		/* owned: the claims */
	char	   *payload_text;	/* owned: the payload exactly as signed, NUL-terminated */
	size_t		payload_len;
	const jose_key *key;		/* the key that verified, borrowed from the keyset */
} jose_jwt;

/*
 * Verify a compact JWS as a JWT, the one way every caller does:
 * jose_jws_parse, then the candidate keys (rules->keys, or rules->select
 * given the claims), jose_jws_verify_with, the payload object (duplicates
 * refused), jose_jwt_check_claims with rules->audience, and the keyset's
 * own audience.  Without select, the payload is parsed only after the
 * signature verified.  Returns a new jose_jwt (free with jose_jwt_free) or
 * NULL with err set by the first check that failed.
 */
jose_jwt   *jose_jwt_verify(const char *token, size_t len, const jose_jwt_rules *rules,
							jose_error *err);
void		jose_jwt_free(jose_jwt *jwt);

#endif							/* TOKEX_JOSE_H */
