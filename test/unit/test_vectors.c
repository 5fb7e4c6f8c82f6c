/*
 * test_vectors.c — the JOSE core against published test vectors, read in
 * place from $VECTORS_DIR (default ../shared/vectors next to the repository
 * root; never copied into the repository):
 *
 *   - Project Wycheproof v1 signature/MAC vectors for ES256, ES384, EdDSA,
 *     RS256, PS256 and HS256 through jose_jwk_parse + jose_verify_raw;
 *   - Wycheproof's JOSE-level files, json_web_signature_test.json (tokens
 *     over one JWK: use, key_ops, alg binding, base64url) and
 *     json_web_key_test.json (tokens over key sets: mixed sets, ROCA, weak
 *     keys), through the JWK/JWKS parsers and jose_jws_verify(_with); each
 *     reports a TAP SKIP when its file is not in the vectors directory;
 *   - the RFC 7520 JWS cookbook (4.1 RS256, 4.2 PS384, 4.3 ES512, 4.4 HS256)
 *     and the RFC 8037 Ed25519 example through jose_jws_parse/jose_jws_verify,
 *     reproducing the deterministic signatures with jose_sign_raw;
 *   - RFC 7638 §3.1 / RFC 8037 §A.3 JWK thumbprints.
 *
 * Without the vectors directory the program prints a TAP SKIP plan.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "jose.h"
#include "tap.h"
#include "util.h"

#ifndef DEFAULT_VECTORS_DIR
#define DEFAULT_VECTORS_DIR "../shared/vectors"
#endif

static const char *vectors_dir;

static json_t *
load_json(const char *rel)
{
	char		path[4096];
	json_error_t jerr;
	json_t	   *j;

	snprintf(path, sizeof(path), "%s/%s", vectors_dir, rel);
	j = json_load_file(path, 0, &jerr);
	if (j == NULL)
		tap_diag("cannot load %s: %s (line %d)", path, jerr.text, jerr.line);
	return j;
}

static const char *
jstr(json_t *obj, const char *name)
{
	return json_string_value(json_object_get(obj, name));
}

/* ---------------- Wycheproof ---------------- */

typedef enum key_source
{
	KEY_EC,						/* publicKeyJwk, or built from publicKey.uncompressed */
	KEY_OKP,					/* publicKeyJwk */
	KEY_RSA_KEYJWK,				/* keyJwk (PKCS#1 v1.5 file) */
	KEY_RSA_JWK,				/* publicKeyJwk (PSS file) */
	KEY_HMAC					/* per-test key -> {"kty":"oct","k":...} */
} key_source;

typedef struct wp_file
{
	const char *file;
	const char *label;
	jose_alg	alg;
	key_source	source;
} wp_file;

typedef struct wp_counts
{
	int			valid,
				valid_ok,
				invalid,
				invalid_ok,
				acceptable,
				acceptable_refused,
				policy_refused,		/* valid, but key refused as too weak */
				skipped,			/* HMAC tagSize != 256 */
				built_jwk;			/* ECDSA groups keyed from publicKey.uncompressed */
	int			refusal[JOSE_E_COUNT_];	/* how invalid cases were refused */
	char		failed[1024];		/* failing tcIds */
} wp_counts;

static void
note_failure(wp_counts *c, long tcid, const char *why)
{
	size_t		used = strlen(c->failed);

	if (used < sizeof(c->failed) - 32)
		snprintf(c->failed + used, sizeof(c->failed) - used, "%s%ld(%s)",
				 used ? " " : "", tcid, why);
}

/* JWK for an ECDSA group that has no publicKeyJwk: from 04||X||Y. */
static json_t *
ec_jwk_from_uncompressed(json_t *group)
{
	json_t	   *pk = json_object_get(group, "publicKey");
	const char *hex = jstr(pk, "uncompressed");
	const char *curve = jstr(pk, "curve");
	const char *crv;
	uint8_t    *pt;
	size_t		len,
				fs;
	json_t	   *jwk = NULL;

	if (hex == NULL || curve == NULL || !hex_decode(hex, &pt, &len))
		return NULL;
	crv = strcmp(curve, "secp256r1") == 0 ? "P-256" :
		strcmp(curve, "secp384r1") == 0 ? "P-384" : NULL;
	fs = (len - 1) / 2;
	if (crv && len >= 3 && pt[0] == 0x04 && len == 1 + 2 * fs)
	{
		char	   *x = b64(pt + 1, fs),
				   *y = b64(pt + 1 + fs, fs);

		jwk = json_pack("{s:s,s:s,s:s,s:s}", "kty", "EC", "crv", crv, "x", x, "y", y);
		free(x);
		free(y);
	}
	free(pt);
	return jwk;
}

static json_t *
oct_jwk(const char *keyhex)
{
	uint8_t    *k;
	size_t		klen;
	char	   *kb;
	json_t	   *jwk;

	if (!hex_decode(keyhex, &k, &klen))
		return NULL;
	kb = b64(k, klen);
	jwk = json_pack("{s:s,s:s}", "kty", "oct", "k", kb);
	free(kb);
	free(k);
	return jwk;
}

/* Key for a group (all but HMAC).  NULL with err filled when refused. */
static jose_key *
group_key(const wp_file *f, json_t *group, jose_error *err, bool *fixture_error,
		  int *built_jwk)
{
	json_t	   *jwk = NULL;
	jose_key   *key;

	*fixture_error = false;
	switch (f->source)
	{
		case KEY_EC:
			jwk = json_incref(json_object_get(group, "publicKeyJwk"));
			if (jwk == NULL)
			{
				jwk = ec_jwk_from_uncompressed(group);
				(*built_jwk)++;
			}
			break;
		case KEY_OKP:
		case KEY_RSA_JWK:
			jwk = json_incref(json_object_get(group, "publicKeyJwk"));
			break;
		case KEY_RSA_KEYJWK:
			jwk = json_incref(json_object_get(group, "keyJwk"));
			break;
		case KEY_HMAC:
			break;
	}
	if (jwk == NULL)
	{
		*fixture_error = true;
		return NULL;
	}
	key = jose_jwk_parse(jwk, f->alg, false, err);
	json_decref(jwk);
	return key;
}

/*
 * One test case.  key == NULL means the key was refused by jose_jwk_parse
 * with keyerr.  Updates the counts; returns nothing, failures are recorded.
 */
static void
run_case(wp_counts *c, const wp_file *f, json_t *t, const jose_key *key,
		 const jose_error *keyerr)
{
	long		tcid = (long) json_integer_value(json_object_get(t, "tcId"));
	const char *result = jstr(t, "result");
	const char *msghex = jstr(t, "msg");
	const char *sighex = jstr(t, f->source == KEY_HMAC ? "tag" : "sig");
	uint8_t    *msg = NULL,
			   *sig = NULL;
	size_t		msglen,
				siglen;
	bool		verified = false;
	jose_errcode code;
	jose_error	err = noerr();

	if (result == NULL || msghex == NULL || sighex == NULL ||
		!hex_decode(msghex, &msg, &msglen) || !hex_decode(sighex, &sig, &siglen))
	{
		note_failure(c, tcid, "unreadable");
		c->valid++;				/* count it somewhere so the line fails */
		free(msg);
		free(sig);
		return;
	}
	if (key)
	{
		verified = jose_verify_raw(key, f->alg, msg, msglen, sig, siglen, &err) == 0;
		code = verified ? JOSE_OK : err.code;
		if (!verified && err.detail[0] == '\0')
			note_failure(c, tcid, "empty detail");
	}
	else
		code = keyerr->code;

	if (strcmp(result, "valid") == 0)
	{
		c->valid++;
		if (verified)
			c->valid_ok++;
		else if (key == NULL && code == JOSE_E_KEY_TOO_WEAK)
			c->policy_refused++;
		else
			note_failure(c, tcid, errname(code));
	}
	else if (strcmp(result, "invalid") == 0)
	{
		c->invalid++;
		if (!verified)
		{
			c->invalid_ok++;
			if ((int) code >= 0 && code < JOSE_E_COUNT_)
				c->refusal[code]++;
		}
		else
			note_failure(c, tcid, "verified");
	}
	else
	{
		/*
		 * "acceptable": the only one is RSA tcId 8 (MissingNull, a DigestInfo
		 * without the NULL parameters).  We expect tokex to refuse it: RS256
		 * verification is strict PKCS#1 v1.5 with the canonical DigestInfo.
		 */
		c->acceptable++;
		if (!verified)
			c->acceptable_refused++;
		else
			note_failure(c, tcid, "acceptable-verified");
	}
	free(msg);
	free(sig);
}

static void
run_wycheproof(const wp_file *f)
{
	char		rel[256];
	json_t	   *root,
			   *groups,
			   *group;
	size_t		gi;
	wp_counts	c;
	char		codes[512] = "";

	memset(&c, 0, sizeof(c));
	snprintf(rel, sizeof(rel), "wycheproof/%s", f->file);
	root = load_json(rel);
	groups = json_object_get(root, "testGroups");
	if (!json_is_array(groups) || json_array_size(groups) == 0)
	{
		tap_ok(false, "%s: %s loads", f->label, f->file);
		json_decref(root);
		return;
	}

	json_array_foreach(groups, gi, group)
	{
		json_t	   *tests = json_object_get(group, "tests");
		json_t	   *t;
		size_t		ti;
		jose_key   *key = NULL;
		jose_error	keyerr = noerr();

		if (f->source == KEY_HMAC)
		{
			if (json_integer_value(json_object_get(group, "tagSize")) != 256)
			{
				c.skipped += (int) json_array_size(tests);
				continue;
			}
		}
		else
		{
			bool		fixture_error;

			key = group_key(f, group, &keyerr, &fixture_error, &c.built_jwk);
			if (fixture_error)
			{
				tap_diag("%s: group %zu has no usable key material", f->file, gi);
				c.valid++;		/* make the summary fail */
				note_failure(&c, -1, "group-key");
				continue;
			}
		}
		json_array_foreach(tests, ti, t)
		{
			if (f->source == KEY_HMAC)
			{
				json_t	   *jwk = oct_jwk(jstr(t, "key") ? jstr(t, "key") : "zz");
				jose_key   *hk;

				keyerr = noerr();
				hk = jwk ? jose_jwk_parse(jwk, JOSE_ALG_HS256, false, &keyerr) : NULL;
				if (jwk == NULL)
					keyerr.code = JOSE_E_INTERNAL;
				run_case(&c, f, t, hk, &keyerr);
				jose_key_free(hk);
				json_decref(jwk);
			}
			else
				run_case(&c, f, t, key, &keyerr);
		}
		jose_key_free(key);
	}

	tap_ok(c.valid > 0 && c.valid_ok + c.policy_refused == c.valid,
		   "%s: valid vectors verify (%d/%d, %d policy-refused)",
		   f->label, c.valid_ok, c.valid, c.policy_refused);
	tap_ok(c.invalid > 0 && c.invalid_ok == c.invalid,
		   "%s: invalid vectors refused (%d/%d)", f->label, c.invalid_ok, c.invalid);
	if (c.acceptable)
		tap_ok(c.acceptable_refused == c.acceptable,
			   "%s: acceptable vectors refused as expected (strict PKCS#1 v1.5) (%d/%d)",
			   f->label, c.acceptable_refused, c.acceptable);
	if (c.policy_refused)
		tap_diag("%s: %d valid vectors policy-refused: key refused by jose_jwk_parse "
				 "with KEY_TOO_WEAK (RFC 7518 §3.2 / RSA >= %d bits)",
				 f->label, c.policy_refused, JOSE_MIN_RSA_BITS);
	if (c.built_jwk)
		tap_diag("%s: %d groups have no publicKeyJwk; JWK built from publicKey.uncompressed",
				 f->label, c.built_jwk);
	if (c.skipped)
		tap_diag("%s: %d vectors not applicable (truncated tags, tagSize != 256)",
				 f->label, c.skipped);
	for (int i = 0; i < JOSE_E_COUNT_; i++)
		if (c.refusal[i])
		{
			size_t		used = strlen(codes);

			snprintf(codes + used, sizeof(codes) - used, " %s=%d", errname((jose_errcode) i),
					 c.refusal[i]);
		}
	if (codes[0])
		tap_diag("%s: invalid refused as:%s", f->label, codes);
	if (c.failed[0])
		tap_diag("%s: failing tcIds: %s", f->label, c.failed);
	json_decref(root);
}

/* ---------------- Wycheproof JSON Web Signature / JSON Web Key ---------------- */

/*
 * These files test a JOSE library as a whole: each group gives a key (JWS
 * file) or a key set (JWK file) and compact tokens over it.  Keys go in the
 * way a trusted issuer's keys do: a JWK without "alg" is bound as in a JWKS
 * (RSA -> RS256, oct -> HS256).  JWS groups are run twice, through
 * jose_jwk_parse + jose_jws_verify and through a one-key JWKS +
 * jose_jws_verify_with, and both must agree with the file.  Cases named
 * here are printed on their own line as well.
 */
typedef struct spotlight
{
	long		tcid;
	const char *what;
} spotlight;

static const spotlight jws_spot[] = {
	{353, "RSA key with use \"enc\""},
	{354, "EC key with use \"enc\""},
	{355, "RSA key with key_ops [\"encrypt\"]"},
	{356, "EC key with key_ops [\"encrypt\"]"},
};

static const spotlight jwk_spot[] = {
	{1, "key set mixing an HS256 and an ES256 key"},
	{6, "RSA key with use \"enc\""},
	{7, "RSA key with the ROCA fingerprint"},
	{8, "RSA-1024 key"},
};

/*
 * Where tokex and the file part ways, each on purpose.  These cases are
 * checked to come out as written here and are not counted with the rest.
 */
typedef struct deviation
{
	long		tcid;
	bool		accepted;		/* what tokex does */
	const char *why;
} deviation;

static const deviation jws_dev[] = {
	{346, false, "key alg PS256, token PS384 (RFC 7520 §4.2): a key verifies only its own alg (RFC 8725 §3.1)"},
	{350, false, "key alg PS256, token PS384 (RFC 7520 §4.2): a key verifies only its own alg (RFC 8725 §3.1)"},
	{347, false, "key alg \"ES521\" is no JWA algorithm (RFC 7520 §3.1 says ES512): key refused"},
	{351, false, "key alg \"ES521\" is no JWA algorithm (RFC 7520 §3.1 says ES512): key refused"},
	{367, true, "\"invalid\", yet byte for byte the valid tc357: verified, as tc357 must be"},
	{370, true, "\"invalid\", yet byte for byte the valid tc357: verified, as tc357 must be"},
	{372, false, "\"valid\" with a '?' in the header segment: not base64url (RFC 7515 §2), refused"},
	{373, false, "\"valid\" with a '?' in the payload segment: not base64url (RFC 7515 §2), refused"},
};

/* JWK "alg" absent: bound as jose_jwks_parse binds it */
static jose_alg
jwks_default_alg(json_t *jwk)
{
	return strcmp(jstr(jwk, "kty") ? jstr(jwk, "kty") : "", "oct") == 0 ?
		JOSE_ALG_HS256 : JOSE_ALG_RS256;
}

/* 0 when token verifies with this key set; else -1 with err */
static int
verify_with_set(const char *token, json_t *jwks, jose_error *err)
{
	jose_key  **keys = NULL;
	size_t		n = 0;
	jose_jws	jws;
	int			rc;

	if (jose_jwks_parse(jwks, &keys, &n, err) < 0)
		return -1;
	rc = jose_jws_parse(token, strlen(token), &jws, err);
	if (rc == 0)
	{
		rc = jose_jws_verify_with(&jws, keys, n, err) < 0 ? -1 : 0;
		jose_jws_clear(&jws);
	}
	jose_keys_free(keys, n);
	return rc;
}

/* 0 when token verifies with this one JWK; else -1 with err */
static int
verify_with_jwk(const char *token, json_t *jwk, jose_error *err)
{
	jose_key   *key = jose_jwk_parse(jwk, jwks_default_alg(jwk), false, err);
	jose_jws	jws;
	int			rc;

	if (key == NULL)
		return -1;
	rc = jose_jws_parse(token, strlen(token), &jws, err);
	if (rc == 0)
	{
		rc = jose_jws_verify(&jws, key, err);
		jose_jws_clear(&jws);
	}
	jose_key_free(key);
	return rc;
}

static void
run_wycheproof_jose(const char *file, const char *label, bool keysets,
					const spotlight *spot, size_t nspot, const deviation *dev, size_t ndev)
{
	char		rel[256],
				path[4096];
	json_t	   *root,
			   *groups,
			   *group;
	size_t		gi;
	struct stat st;
	int			valid = 0,
				valid_ok = 0,
				invalid = 0,
				invalid_ok = 0,
				devs = 0,
				devs_ok = 0,
				refusal[JOSE_E_COUNT_] = {0};
	char		failed[1024] = "",
				codes[512] = "";
	bool		spot_seen[16] = {false};

	snprintf(rel, sizeof(rel), "wycheproof/%s", file);
	snprintf(path, sizeof(path), "%s/%s", vectors_dir, rel);
	if (stat(path, &st) != 0)
	{
		char		reason[4400];

		snprintf(reason, sizeof(reason), "%s not in %s/wycheproof", file, vectors_dir);
		tap_skip(label, reason);
		return;
	}
	root = load_json(rel);
	groups = json_object_get(root, "testGroups");
	if (!tap_ok(json_is_array(groups) && json_array_size(groups) > 0, "%s: %s loads", label, file))
	{
		json_decref(root);
		return;
	}
	json_array_foreach(groups, gi, group)
	{
		json_t	   *keys = json_object_get(group, "public") ?
			json_object_get(group, "public") : json_object_get(group, "private");
		json_t	   *set = keysets ? json_incref(keys) : json_pack("{s:[O]}", "keys", keys);
		json_t	   *t;
		size_t		ti;

		json_array_foreach(json_object_get(group, "tests"), ti, t)
		{
			long		tcid = (long) json_integer_value(json_object_get(t, "tcId"));
			const char *result = jstr(t, "result");
			const char *token = jstr(t, "jws");
			jose_error	e1 = noerr(),
						e2 = noerr();
			bool		acc_set,
						acc_one,
						want = result && strcmp(result, "valid") == 0;
			const char *why = NULL;

			if (token == NULL || result == NULL || keys == NULL || set == NULL)
			{
				acc_set = acc_one = !want;	/* unreadable: make it fail */
				why = "unreadable";
			}
			else
			{
				acc_set = verify_with_set(token, set, &e2) == 0;
				acc_one = keysets ? acc_set : verify_with_jwk(token, keys, &e1) == 0;
			}
			for (size_t i = 0; i < ndev; i++)
				if (dev[i].tcid == tcid)
				{
					bool		as_written = acc_set == dev[i].accepted && acc_one == dev[i].accepted;

					devs++;
					devs_ok += as_written;
					tap_diag("%s tc%ld: the file says %s; tokex %s: %s%s", label, tcid, result,
							 acc_set ? "verifies it" : "refuses it", dev[i].why,
							 as_written ? "" : " (NOT AS DOCUMENTED)");
					why = "";
				}
			if (why)
				continue;
			if (want)
				valid++;
			else
				invalid++;
			if (why == NULL && acc_set != acc_one)
				why = "paths disagree";
			else if (why == NULL && acc_set != want)
				why = want ? errname(e2.code) : "verified";
			if (why == NULL)
			{
				if (want)
					valid_ok++;
				else
				{
					invalid_ok++;
					refusal[e2.code]++;
					if (!keysets && e1.detail[0] == '\0')
						why = "empty detail";
				}
			}
			if (why)
			{
				size_t		used = strlen(failed);

				if (used < sizeof(failed) - 40)
					snprintf(failed + used, sizeof(failed) - used, "%s%ld(%s)",
							 used ? " " : "", tcid, why);
			}
			for (size_t i = 0; i < nspot && i < sizeof(spot_seen); i++)
				if (spot[i].tcid == tcid)
				{
					spot_seen[i] = true;
					tap_ok(why == NULL, "%s tc%ld (%s) %s (%s)", label, tcid, spot[i].what,
						   want ? "verifies" : "is refused",
						   acc_set && acc_one ? "verified" : keysets || acc_one ? e2.detail : e1.detail);
				}
		}
		json_decref(set);
	}
	for (size_t i = 0; i < nspot && i < sizeof(spot_seen); i++)
		if (!spot_seen[i])
			tap_ok(false, "%s tc%ld (%s) is in the file", label, spot[i].tcid, spot[i].what);
	if (ndev)
		tap_ok(devs == (int) ndev && devs_ok == devs,
			   "%s: the %zu documented departures from the file behave as documented (%d/%d)",
			   label, ndev, devs_ok, devs);
	tap_ok(valid > 0 && valid_ok == valid, "%s: valid tokens verify (%d/%d)", label, valid_ok, valid);
	tap_ok(invalid > 0 && invalid_ok == invalid, "%s: invalid tokens refused (%d/%d)", label,
		   invalid_ok, invalid);
	for (int i = 0; i < JOSE_E_COUNT_; i++)
		if (refusal[i])
		{
			size_t		used = strlen(codes);

			snprintf(codes + used, sizeof(codes) - used, " %s=%d", errname((jose_errcode) i),
					 refusal[i]);
		}
	if (codes[0])
		tap_diag("%s: invalid refused as:%s", label, codes);
	if (failed[0])
		tap_diag("%s: failing tcIds: %s", label, failed);
	json_decref(root);
}

/* ---------------- RFC 7520 cookbook / RFC 8037 ---------------- */

typedef struct cb_file
{
	const char *file;
	jose_alg	alg;
	bool		reproducible;
} cb_file;

static void
run_cookbook(const cb_file *f)
{
	json_t	   *root = load_json(f->file);
	json_t	   *input = json_object_get(root, "input");
	json_t	   *jwk = json_object_get(input, "key");
	json_t	   *signing = json_object_get(root, "signing");
	const char *compact = jstr(json_object_get(root, "output"), "compact");
	const char *payload = jstr(input, "payload");
	const char *name = jose_alg_name(f->alg);
	jose_key   *pub = NULL,
			   *priv = NULL;
	jose_jws	jws;
	jose_error	err = noerr();
	bool		parsed = false;

	if (!tap_ok(root && jwk && compact && payload, "%s %s: file has key, payload, compact",
				name, f->file))
	{
		json_decref(root);
		return;
	}
	tap_ok(jose_alg_from_name(jstr(input, "alg")) == f->alg, "%s: input alg is %s", name, name);

	/* The key files include private members; they must be ignored here. */
	pub = jose_jwk_parse(jwk, f->alg, false, &err);
	if (tap_ok(pub != NULL, "%s: JWK parses with allow_private=false (%s)", name,
			   pub ? "ok" : err.detail))
	{
		tap_ok(pub->alg == f->alg && (pub->kty == JOSE_KTY_OCT || !pub->has_private),
			   "%s: key bound to %s, private part not read", name, name);
		if (pub->kty != JOSE_KTY_OCT)
		{
			uint8_t    *s = NULL;
			size_t		sl = 0;

			err = noerr();
			tap_ok(jose_sign_raw(pub, (const uint8_t *) "x", 1, &s, &sl, &err) < 0 && s == NULL,
				   "%s: public-only key refuses to sign", name);
			free(s);
		}
	}

	err = noerr();
	parsed = jose_jws_parse(compact, strlen(compact), &jws, &err) == 0;
	if (tap_ok(parsed, "%s: output.compact parses (%s)", name, parsed ? "ok" : err.detail))
	{
		tap_ok(jws.alg == f->alg, "%s: parsed alg", name);
		tap_ok(jws.payload_len == strlen(payload) &&
			   memcmp(jws.payload, payload, jws.payload_len) == 0,
			   "%s: decoded payload equals input.payload", name);
		if (pub)
		{
			int			rc;

			err = noerr();
			rc = jose_jws_verify(&jws, pub, &err);
			tap_ok(rc == 0, "%s: jose_jws_verify (%s)", name, rc == 0 ? "ok" : err.detail);
			/* flip one signature bit: must no longer verify */
			jws.sig[jws.sig_len / 2] ^= 0x01;
			err = noerr();
			rc = jose_jws_verify(&jws, pub, &err);
			tap_ok(rc < 0 && err.code == JOSE_E_SIGNATURE,
				   "%s: one flipped signature bit is refused (%s)", name, errname(err.code));
			jws.sig[jws.sig_len / 2] ^= 0x01;
		}
		jose_jws_clear(&jws);
	}

	if (f->reproducible)
	{
		const char *sigin = jstr(signing, "sig-input");
		const char *want = jstr(signing, "sig");
		uint8_t    *sig = NULL;
		size_t		siglen = 0;

		err = noerr();
		priv = jose_jwk_parse(jwk, f->alg, true, &err);
		if (tap_ok(priv != NULL && priv->has_private && sigin && want,
				   "%s: private JWK parses with allow_private=true (%s)", name,
				   priv ? "ok" : err.detail))
		{
			int			rc;

			err = noerr();
			rc = jose_sign_raw(priv, (const uint8_t *) sigin, strlen(sigin), &sig, &siglen, &err);
			if (tap_ok(rc == 0, "%s: jose_sign_raw over signing.sig-input (%s)", name,
					   rc == 0 ? "ok" : err.detail))
			{
				char	   *got = b64(sig, siglen);

				tap_ok(strcmp(got, want) == 0, "%s: signature reproduces signing.sig exactly",
					   name);
				free(got);
			}
			free(sig);
			if (pub)
				tap_ok(strcmp(priv->thumbprint, pub->thumbprint) == 0,
					   "%s: private and public parse have the same thumbprint", name);
		}
	}
	jose_key_free(pub);
	jose_key_free(priv);
	json_decref(root);
}

/* ---------------- RFC 7638 / RFC 8037 thumbprints ---------------- */

static void
run_thumbprints(void)
{
	/* RFC 7638 §3.1 example key and its SHA-256 thumbprint (transcribed). */
	static const char rfc7638_jwk[] =
		"{\"kty\":\"RSA\","
		"\"n\":\"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAt"
		"VT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn6"
		"4tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FD"
		"W2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n9"
		"1CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINH"
		"aQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw\","
		"\"e\":\"AQAB\",\"alg\":\"RS256\",\"kid\":\"2011-04-29\"}";
	static const char rfc7638_tp[] = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";
	/* RFC 8037 §A.3: thumbprint of the §A.2 Ed25519 public key. */
	static const char rfc8037_jwk[] =
		"{\"kty\":\"OKP\",\"crv\":\"Ed25519\","
		"\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}";
	static const char rfc8037_tp[] = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";
	jose_error	err = noerr();
	jose_key   *k;
	char		tp[44];

	k = jwk_from_text(rfc7638_jwk, JOSE_ALG_UNKNOWN, false, &err);
	if (tap_ok(k != NULL, "RFC 7638 §3.1 key parses (%s)", k ? "ok" : err.detail))
	{
		int			rc;

		memset(tp, 'X', sizeof(tp));
		rc = jose_jwk_thumbprint(k, tp, &err);
		tap_ok(rc == 0 && tp[43] == '\0' && strcmp(tp, rfc7638_tp) == 0,
			   "RFC 7638 §3.1 thumbprint");
		tap_ok(strcmp(k->thumbprint, rfc7638_tp) == 0 && strcmp(k->kid, "2011-04-29") == 0,
			   "RFC 7638 key: key->thumbprint set, JWK kid kept");
		jose_key_free(k);
	}
	err = noerr();
	k = jwk_from_text(rfc8037_jwk, JOSE_ALG_UNKNOWN, false, &err);
	if (tap_ok(k != NULL, "RFC 8037 Ed25519 key parses (%s)", k ? "ok" : err.detail))
	{
		int			rc = jose_jwk_thumbprint(k, tp, &err);

		tap_ok(rc == 0 && strcmp(tp, rfc8037_tp) == 0, "RFC 8037 §A.3 thumbprint");
		tap_ok(strcmp(k->kid, rfc8037_tp) == 0, "RFC 8037 key without kid: kid = thumbprint");
		jose_key_free(k);
	}
}

int
main(void)
{
	static const wp_file wp[] = {
		{"ecdsa_secp256r1_sha256_p1363_test.json", "ES256", JOSE_ALG_ES256, KEY_EC},
		{"ecdsa_secp384r1_sha384_p1363_test.json", "ES384", JOSE_ALG_ES384, KEY_EC},
		{"ed25519_test.json", "EdDSA", JOSE_ALG_EDDSA, KEY_OKP},
		{"rsa_signature_2048_sha256_test.json", "RS256", JOSE_ALG_RS256, KEY_RSA_KEYJWK},
		{"rsa_pss_2048_sha256_mgf1_32_test.json", "PS256", JOSE_ALG_PS256, KEY_RSA_JWK},
		{"hmac_sha256_test.json", "HS256", JOSE_ALG_HS256, KEY_HMAC},
	};
	static const cb_file cb[] = {
		{"jose-cookbook/jws/4_1.rsa_v15_signature.json", JOSE_ALG_RS256, true},
		{"jose-cookbook/jws/4_2.rsa-pss_signature.json", JOSE_ALG_PS384, false},
		{"jose-cookbook/jws/4_3.ecdsa_signature.json", JOSE_ALG_ES512, false},
		{"jose-cookbook/jws/4_4.hmac-sha2_integrity_protection.json", JOSE_ALG_HS256, true},
		{"jose-cookbook/curve25519/jws.json", JOSE_ALG_EDDSA, true},
	};
	struct stat st;
	char		probe[4096];

	vectors_dir = getenv("VECTORS_DIR");
	if (vectors_dir == NULL || vectors_dir[0] == '\0')
		vectors_dir = DEFAULT_VECTORS_DIR;
	snprintf(probe, sizeof(probe), "%s/wycheproof", vectors_dir);
	if (stat(probe, &st) != 0 || !S_ISDIR(st.st_mode))
	{
		snprintf(probe, sizeof(probe), "vectors not found at %s", vectors_dir);
		return tap_skip_all(probe);
	}
	tap_diag("vectors from %s", vectors_dir);

	for (size_t i = 0; i < sizeof(wp) / sizeof(wp[0]); i++)
		run_wycheproof(&wp[i]);
	run_wycheproof_jose("json_web_signature_test.json", "JWS", false,
						jws_spot, sizeof(jws_spot) / sizeof(jws_spot[0]),
						jws_dev, sizeof(jws_dev) / sizeof(jws_dev[0]));
	run_wycheproof_jose("json_web_key_test.json", "JWK set", true,
						jwk_spot, sizeof(jwk_spot) / sizeof(jwk_spot[0]), NULL, 0);
	for (size_t i = 0; i < sizeof(cb) / sizeof(cb[0]); i++)
		run_cookbook(&cb[i]);
	run_thumbprints();
	return tap_done();
}
