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
	X(JSON_MEMBERS, "JSON has too many members")	/* more than JOSE_MAX_JSON_MEMBERS */ \
	X(DPOP, "invalid DPoP proof")	/* a DPoP proof's own rules (dpop.c): jose_dpop_fault says which */

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
	/*
	 * EC only, made on first use and kept with the key: a context set up
	 * once for verifying (signing) digests.  Setting one up per call was a
	 * seventh of a verification: the provider's algorithm is looked up by
	 * name every time.
	 */
	EVP_PKEY_CTX *verify_ctx;
	EVP_PKEY_CTX *sign_ctx;
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

/* ---------------- opaque credentials (opaque.c) ---------------- */

/*
 * tkx_<kind>_ + JOSE_OPAQUE_BODY base62 characters (256 random bits) +
 * JOSE_OPAQUE_CRC base62 characters of the CRC-32 of everything before
 * them.  Kinds: "ak" (API key), "at" (reference token).
 */
#define JOSE_OPAQUE_BODY		43
#define JOSE_OPAQUE_CRC			6

uint32_t	jose_crc32(const char *p, size_t n);	/* ISO-HDLC, as zlib's */
/* The CRC-32 of p as JOSE_OPAQUE_CRC base62 digits, most significant first. */
void		jose_opaque_crc(const char *p, size_t n, char out[JOSE_OPAQUE_CRC]);
size_t		jose_opaque_len(const char *kind);	/* strlen of a credential of kind */

/*
 * A new credential of kind, malloc'd; its body is drawn from fill (which
 * fills len bytes with random ones, false when it cannot).  NULL with
 * JOSE_E_INTERNAL when fill or malloc fails.
 */
char	   *jose_opaque_new(const char *kind, bool (*fill) (void *buf, size_t len),
							jose_error *err);

/* Is s (len bytes, no terminator needed) a well-formed credential of kind, checksum included? */
bool		jose_opaque_ok(const char *s, size_t len, const char *kind);

/* ---------------- DPoP proofs, RFC 9449 (dpop.c) ---------------- */

/* What a proof is checked against: the request, the token it comes with, the clock. */
typedef struct jose_dpop_rules
{
	const char *htm;			/* the request's method */
	const char *htu;			/* its URL (query and fragment are ignored) */
	const char *access_token;	/* the token presented with it (ath), or NULL */
	size_t		at_len;
	int64_t		now;			/* Unix seconds */
	int64_t		skew;			/* tolerance for iat, seconds (0..86400) */
	int64_t		max_age;		/* how old iat may be, seconds (0..86400) */
} jose_dpop_rules;

/* Which rule a refused proof broke (err->detail says it in words). */
typedef enum jose_dpop_fault
{
	JOSE_DPOP_OK = 0,			/* also a refusal that is not the proof's fault:
								 * JOSE_E_INTERNAL, out of memory or SHA-256 failed */
	JOSE_DPOP_NOT_JWS,			/* err has jose_jws_parse's code */
	JOSE_DPOP_TYP,				/* typ is not dpop+jwt */
	JOSE_DPOP_SYMMETRIC,		/* an HS* alg */
	JOSE_DPOP_NO_JWK,			/* no jwk object in the header */
	JOSE_DPOP_PRIVATE_JWK,		/* the jwk has a private member (d, p, ..., k) */
	JOSE_DPOP_JWK,				/* the jwk is no key for alg; err has jose_jwk_parse's code */
	JOSE_DPOP_SIGNATURE,		/* err has jose_jws_verify's code */
	JOSE_DPOP_CLAIMS,			/* the payload is no JSON object */
	JOSE_DPOP_JTI,				/* jti missing, empty or longer than 256 */
	JOSE_DPOP_HTM,
	JOSE_DPOP_HTU,
	JOSE_DPOP_IAT,				/* no iat number */
	JOSE_DPOP_IAT_FUTURE,		/* iat > now + skew */
	JOSE_DPOP_TOO_OLD,			/* iat < now - max_age - skew */
	JOSE_DPOP_ATH,				/* ath is not base64url(SHA-256(access token)) */
} jose_dpop_fault;

/* A proof that held. */
typedef struct jose_dpop
{
	char		jkt[44];		/* the RFC 7638 thumbprint of its jwk */
	char	   *jti;			/* malloc'd */
	char	   *nonce;			/* malloc'd, or NULL */
	int64_t		expires;		/* when it can no longer be accepted (iat + max_age + skew + 1) */
} jose_dpop;

/*
 * Check a DPoP proof (RFC 9449 §4.3): a JWS with typ dpop+jwt, an
 * asymmetric alg and a public jwk in its header that verifies its
 * signature; claims jti (1..256 bytes), htm = rules->htm, htu = rules->htu
 * (both without query and fragment, htu with a scheme), iat within
 * [now - max_age - skew, now + skew] (and within +-JOSE_MAX_NUMERIC_DATE),
 * and ath when rules->access_token.
 * The nonce, when present, is handed back unchecked (see jose_dpop_nonce_ok),
 * as is the replay check (the caller remembers jkt + jti until expires).
 * 0 with *out filled (free with jose_dpop_clear), or -1 with err set (code
 * JOSE_E_DPOP or the failing step's), *fault saying which rule, and *out
 * empty.  err->detail holds rules->htm and htu for those faults; a
 * caller that shows the message for a long URL formats it itself.
 */
int			jose_dpop_check(const char *proof, size_t len, const jose_dpop_rules *rules,
							jose_dpop *out, jose_dpop_fault *fault, jose_error *err);
void		jose_dpop_clear(jose_dpop *p);

/* The length of url without its query and fragment. */
size_t		jose_dpop_url_len(const char *url);

/*
 * Server nonces (RFC 9449 §8), stateless: base64url(t as 8 bytes
 * big-endian || the first 16 bytes of HMAC-SHA256(secret, those 8 bytes)).
 */
#define JOSE_DPOP_NONCE_RAW		24	/* bytes before base64url */
#define JOSE_DPOP_NONCE_LEN		32	/* characters after */

/* The nonce for time t, malloc'd; NULL with JOSE_E_INTERNAL when HMAC fails. */
char	   *jose_dpop_nonce_new(const uint8_t *secret, size_t secret_len, int64_t t,
								jose_error *err);
/* The time a nonce names, unchecked: 0, or -1 (JOSE_E_BASE64, JOSE_E_FORMAT) when it has no nonce's shape. */
int			jose_dpop_nonce_time(const char *nonce, size_t len, int64_t *t, jose_error *err);

/*
 * 1 when nonce is one made with secret at a time within [now - lifetime,
 * now + skew], 0 when not, -1 (JOSE_E_INTERNAL) when HMAC fails.
 */
int			jose_dpop_nonce_ok(const char *nonce, size_t len, const uint8_t *secret,
							   size_t secret_len, int64_t now, int64_t skew, int64_t lifetime,
							   jose_error *err);

#endif							/* TOKEX_JOSE_H */
