/*
 * common.c — errors, algorithm table, strict base64url and bounded JSON
 * parsing: the small pieces every other JOSE file leans on.
 */
#include "jose.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* json_error_code() and its codes came with jansson 2.11 */
#if JANSSON_VERSION_HEX < 0x020b00
#error "tokex needs jansson 2.11 or later"
#endif

#define ERRTEXT(name, text) [JOSE_E_##name] = text,
#define ERRNAME(name, text) [JOSE_E_##name] = #name,
static const char *const errtext[JOSE_E_COUNT_] = {
	[JOSE_OK] = "ok",
	JOSE_ERRCODES(ERRTEXT)
};
static const char *const errname[JOSE_E_COUNT_] = {
	[JOSE_OK] = "OK",
	JOSE_ERRCODES(ERRNAME)
};
#undef ERRTEXT
#undef ERRNAME

const char *
jose_strerror(jose_errcode code)
{
	if ((int) code < 0 || code >= JOSE_E_COUNT_ || errtext[code] == NULL)
		return "unknown error";
	return errtext[code];
}

const char *
jose_errcode_name(jose_errcode code)
{
	if ((int) code < 0 || code >= JOSE_E_COUNT_ || errname[code] == NULL)
		return "?";
	return errname[code];
}

static const char *const json_reason_text[] = {
	[JOSE_JSON_NONE] = "not a JSON error",
	[JOSE_JSON_SYNTAX] = "not valid JSON",
	[JOSE_JSON_DUPLICATE] = "duplicate member",
	[JOSE_JSON_RANGE] = "integer outside the 64-bit range",
	[JOSE_JSON_DEPTH] = "nested too deeply",
	[JOSE_JSON_MEMBERS] = "too many members",
};

const char *
jose_json_reason_text(jose_json_reason reason)
{
	if ((int) reason < 0 || (size_t) reason >= sizeof(json_reason_text) / sizeof(json_reason_text[0]))
		return "not valid JSON";
	return json_reason_text[reason];
}

int
jose_seterr(jose_error *err, jose_errcode code, const char *fmt,...)
{
	if (err)
	{
		err->code = code;
		err->json_reason = JOSE_JSON_NONE;
		if (fmt)
		{
			va_list		ap;

			va_start(ap, fmt);
			vsnprintf(err->detail, sizeof(err->detail), fmt, ap);
			va_end(ap);
		}
		else
			snprintf(err->detail, sizeof(err->detail), "%s", jose_strerror(code));
	}
	return -1;
}

/* ---------------- algorithms ---------------- */

static const char *const algname[JOSE_ALG_COUNT_] = {
	[JOSE_ALG_HS256] = "HS256",[JOSE_ALG_HS384] = "HS384",[JOSE_ALG_HS512] = "HS512",
	[JOSE_ALG_RS256] = "RS256",[JOSE_ALG_RS384] = "RS384",[JOSE_ALG_RS512] = "RS512",
	[JOSE_ALG_PS256] = "PS256",[JOSE_ALG_PS384] = "PS384",[JOSE_ALG_PS512] = "PS512",
	[JOSE_ALG_ES256] = "ES256",[JOSE_ALG_ES384] = "ES384",[JOSE_ALG_ES512] = "ES512",
	[JOSE_ALG_EDDSA] = "EdDSA",
};

jose_alg
jose_alg_from_name(const char *name)
{
	if (name == NULL)
		return JOSE_ALG_UNKNOWN;
	for (int a = 1; a < JOSE_ALG_COUNT_; a++)
		if (strcmp(name, algname[a]) == 0)
			return (jose_alg) a;
	return JOSE_ALG_UNKNOWN;
}

const char *
jose_alg_name(jose_alg alg)
{
	if (alg <= JOSE_ALG_UNKNOWN || alg >= JOSE_ALG_COUNT_)
		return NULL;
	return algname[alg];
}

jose_kty
jose_alg_kty(jose_alg alg)
{
	switch (alg)
	{
		case JOSE_ALG_HS256:
		case JOSE_ALG_HS384:
		case JOSE_ALG_HS512:
			return JOSE_KTY_OCT;
		case JOSE_ALG_RS256:
		case JOSE_ALG_RS384:
		case JOSE_ALG_RS512:
		case JOSE_ALG_PS256:
		case JOSE_ALG_PS384:
		case JOSE_ALG_PS512:
			return JOSE_KTY_RSA;
		case JOSE_ALG_ES256:
		case JOSE_ALG_ES384:
		case JOSE_ALG_ES512:
			return JOSE_KTY_EC;
		case JOSE_ALG_EDDSA:
			return JOSE_KTY_OKP;
		default:
			return 0;
	}
}

bool
jose_alg_can_sign(jose_alg alg)
{
	jose_kty	k = jose_alg_kty(alg);

	return k != 0 && k != JOSE_KTY_OCT;
}

/* ---------------- base64url ---------------- */

static const char b64chars[] =
"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* 0..63 for alphabet bytes, 0xff otherwise */
static const uint8_t b64val[256] = {
#define X 0xff
	X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
	X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
	X, X, X, X, X, X, X, X, X, X, X, X, X, 62, X, X,
	52, 53, 54, 55, 56, 57, 58, 59, 60, 61, X, X, X, X, X, X,
	X, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
	15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, X, X, X, X, 63,
	X, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
	41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, X, X, X, X, X,
	X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
	X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
	X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
	X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
	X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
	X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
	X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
	X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
#undef X
};

char *
jose_b64url_encode(const uint8_t *in, size_t inlen, size_t *outlen)
{
	size_t		n = (inlen / 3) * 4 + ((inlen % 3) ? (inlen % 3) + 1 : 0);
	char	   *out = malloc(n + 1);
	char	   *p = out;
	size_t		i = 0;

	if (out == NULL)
		return NULL;
	for (; i + 3 <= inlen; i += 3)
	{
		uint32_t	v = ((uint32_t) in[i] << 16) | ((uint32_t) in[i + 1] << 8) | in[i + 2];

		*p++ = b64chars[(v >> 18) & 63];
		*p++ = b64chars[(v >> 12) & 63];
		*p++ = b64chars[(v >> 6) & 63];
		*p++ = b64chars[v & 63];
	}
	if (inlen - i == 1)
	{
		uint32_t	v = (uint32_t) in[i] << 16;

		*p++ = b64chars[(v >> 18) & 63];
		*p++ = b64chars[(v >> 12) & 63];
	}
	else if (inlen - i == 2)
	{
		uint32_t	v = ((uint32_t) in[i] << 16) | ((uint32_t) in[i + 1] << 8);

		*p++ = b64chars[(v >> 18) & 63];
		*p++ = b64chars[(v >> 12) & 63];
		*p++ = b64chars[(v >> 6) & 63];
	}
	*p = '\0';
	if (outlen)
		*outlen = (size_t) (p - out);
	return out;
}

int
jose_b64url_decode(const char *in, size_t inlen, size_t maxlen,
				   uint8_t **out, size_t *outlen, jose_error *err)
{
	size_t		rem = inlen % 4;
	size_t		n = (inlen / 4) * 3 + (rem ? rem - 1 : 0);
	uint8_t    *buf;
	uint8_t    *p;
	size_t		i = 0;

	*out = NULL;
	*outlen = 0;
	if (rem == 1)
		return jose_seterr(err, JOSE_E_BASE64, "invalid base64url length");
	if (n > maxlen)
		return jose_seterr(err, JOSE_E_TOO_LONG, "decoded value longer than %zu bytes", maxlen);
	buf = malloc(n + 1);
	if (buf == NULL)
		return jose_seterr(err, JOSE_E_INTERNAL, "out of memory");
	p = buf;
	for (; i + 4 <= inlen; i += 4)
	{
		uint8_t		a = b64val[(uint8_t) in[i]],
					b = b64val[(uint8_t) in[i + 1]],
					c = b64val[(uint8_t) in[i + 2]],
					d = b64val[(uint8_t) in[i + 3]];

		if ((a | b | c | d) == 0xff)
			goto bad;
		*p++ = (uint8_t) (a << 2 | b >> 4);
		*p++ = (uint8_t) (b << 4 | c >> 2);
		*p++ = (uint8_t) (c << 6 | d);
	}
	if (rem)
	{
		uint8_t		a = b64val[(uint8_t) in[i]],
					b = b64val[(uint8_t) in[i + 1]],
					c = rem == 3 ? b64val[(uint8_t) in[i + 2]] : 0;

		if ((a | b | c) == 0xff)
			goto bad;
		/* the bits below the last whole byte must be zero (canonical form) */
		if ((rem == 2 && (b & 0x0f)) || (rem == 3 && (c & 0x03)))
			goto bad;
		*p++ = (uint8_t) (a << 2 | b >> 4);
		if (rem == 3)
			*p++ = (uint8_t) (b << 4 | c >> 2);
	}
	*p = 0;
	*out = buf;
	*outlen = n;
	return 0;

bad:
	free(buf);
	return jose_seterr(err, JOSE_E_BASE64, "invalid base64url");
}

/* ---------------- JSON ---------------- */

/*
 * Refuse deep nesting before jansson recurses into it, and texts of more
 * values than any header, claim set or key set needs before jansson
 * allocates a node for each: count bracket depth and separators outside
 * strings.  Exact for valid JSON (n values in a container are n - 1 commas
 * apart, so the values are the commas plus the non-empty containers, at
 * most commas + containers); invalid JSON fails in jansson.
 */
static jose_json_reason
text_shape_ok(const char *buf, size_t len)
{
	int			depth = 0;
	size_t		values = 0;
	bool		instr = false;

	for (size_t i = 0; i < len; i++)
	{
		char		c = buf[i];

		if (instr)
		{
			if (c == '\\')
				i++;
			else if (c == '"')
				instr = false;
		}
		else if (c == '"')
			instr = true;
		else if (c == '{' || c == '[')
		{
			if (++depth > JOSE_MAX_JSON_DEPTH)
				return JOSE_JSON_DEPTH;
			values++;
		}
		else if (c == '}' || c == ']')
			depth--;
		else if (c == ',')
			values++;
		if (values > JOSE_MAX_JSON_MEMBERS)
			return JOSE_JSON_MEMBERS;
	}
	return JOSE_JSON_NONE;
}

/*
 * jansson has one code for an integer beyond 64 bits and for a real beyond
 * a double; only the first is JOSE_JSON_RANGE (a real that overflows has
 * always been refused as invalid JSON).  jansson reports the position just
 * after the number: read back over the number's characters for a fraction
 * or an exponent.
 */
static bool
overflow_is_integer(const char *buf, size_t len, int position)
{
	size_t		i = position > 0 && (size_t) position <= len ? (size_t) position : 0;

	while (i > 0 && buf[i - 1] != '\0' && strchr("0123456789+-.eE", buf[i - 1]) != NULL)
	{
		if (buf[i - 1] == '.' || buf[i - 1] == 'e' || buf[i - 1] == 'E')
			return false;
		i--;
	}
	return true;
}

json_t *
jose_json_parse(const char *buf, size_t len, jose_errcode code, jose_error *err)
{
	json_error_t jerr;
	json_t	   *j;
	jose_json_reason why;

	why = text_shape_ok(buf, len);
	if (why != JOSE_JSON_NONE)
	{
		if (why == JOSE_JSON_DEPTH)
			jose_seterr(err, JOSE_E_JSON_DEPTH, "JSON nested deeper than %d levels", JOSE_MAX_JSON_DEPTH);
		else
			jose_seterr(err, JOSE_E_JSON_MEMBERS, "JSON has too many members (more than %d members and elements)",
						JOSE_MAX_JSON_MEMBERS);
		if (err)
			err->json_reason = why;
		return NULL;
	}
	j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (j == NULL)
	{
		/* jansson's code, not its text: the text may quote the input */
		switch (json_error_code(&jerr))
		{
			case json_error_duplicate_key:
				why = JOSE_JSON_DUPLICATE;
				break;
			case json_error_numeric_overflow:
				why = overflow_is_integer(buf, len, jerr.position) ?
					JOSE_JSON_RANGE : JOSE_JSON_SYNTAX;
				break;
			default:
				why = JOSE_JSON_SYNTAX;
				break;
		}
		jose_seterr(err, code, "%s: %s", jose_strerror(code), jose_json_reason_text(why));
		if (err)
			err->json_reason = why;
		return NULL;
	}
	return j;
}
