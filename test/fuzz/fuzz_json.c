/*
 * fuzz_json.c — the bounded JSON reader (jose_json_parse) every header,
 * payload, JWK and JWKS text goes through: a depth check over the raw
 * text before jansson recurses, duplicates refused, integer overflow told
 * apart from syntax.
 *
 * Oracles: what it accepts is nested at most JOSE_MAX_JSON_DEPTH deep, has
 * at most JOSE_MAX_JSON_MEMBERS members and elements, and dumps to a text
 * it accepts again, equal; a refusal carries the caller's code (or
 * JSON_DEPTH, JSON_MEMBERS) with a json_reason that is not NONE.
 */
#include "fuzz.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* members and elements, all levels together */
static size_t
values_of(json_t *j)
{
	size_t		n = 0;

	if (json_is_object(j))
	{
		const char *k;
		json_t	   *v;

		json_object_foreach(j, k, v)
			n += 1 + values_of(v);
	}
	else if (json_is_array(j))
	{
		size_t		i;
		json_t	   *v;

		json_array_foreach(j, i, v)
			n += 1 + values_of(v);
	}
	return n;
}

static int
depth_of(json_t *j)
{
	int			d = 0;

	if (json_is_object(j))
	{
		const char *k;
		json_t	   *v;

		json_object_foreach(j, k, v)
		{
			int			c = depth_of(v);

			d = c > d ? c : d;
		}
		return d + 1;
	}
	if (json_is_array(j))
	{
		size_t		i;
		json_t	   *v;

		json_array_foreach(j, i, v)
		{
			int			c = depth_of(v);

			d = c > d ? c : d;
		}
		return d + 1;
	}
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *text = malloc(size ? size : 1);
	jose_error	err = fuzz_err();
	json_t	   *j;

	if (text == NULL)
		abort();
	memcpy(text, data, size);
	j = jose_json_parse(text, size, JOSE_E_PAYLOAD, &err);
	if (j)
	{
		char	   *dump = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
		json_t	   *again;

		FUZZ_ASSERT(depth_of(j) <= JOSE_MAX_JSON_DEPTH, "accepted depth %d", depth_of(j));
		FUZZ_ASSERT(values_of(j) <= JOSE_MAX_JSON_MEMBERS, "accepted %zu values", values_of(j));
		FUZZ_ASSERT(dump != NULL, "cannot dump what was parsed");
		err = fuzz_err();
		again = jose_json_parse(dump, strlen(dump), JOSE_E_PAYLOAD, &err);
		FUZZ_ASSERT(again != NULL, "own dump refused: %s", err.detail);
		FUZZ_ASSERT(json_equal(j, again), "dump/parse changed the value");
		json_decref(again);
		free(dump);
		json_decref(j);
	}
	else
	{
		fuzz_check_refusal(&err, "json_parse");
		FUZZ_ASSERT(err.code == JOSE_E_PAYLOAD || err.code == JOSE_E_JSON_DEPTH ||
					err.code == JOSE_E_JSON_MEMBERS,
					"unexpected code %s", jose_errcode_name(err.code));
		FUZZ_ASSERT(err.json_reason != JOSE_JSON_NONE, "refusal without a JSON reason");
		FUZZ_ASSERT((err.code == JOSE_E_JSON_DEPTH) == (err.json_reason == JOSE_JSON_DEPTH),
					"depth code and reason disagree");
		FUZZ_ASSERT((err.code == JOSE_E_JSON_MEMBERS) == (err.json_reason == JOSE_JSON_MEMBERS),
					"members code and reason disagree");
	}
	free(text);
	return 0;
}
