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

/* nesting depth, and members + elements at all levels into *values */
static int
measure(json_t *j, size_t *values)
{
	int			d = 0;
	size_t		i;
	const char *k;
	json_t	   *v;

	if (json_is_object(j))
	{
		json_object_foreach(j, k, v)
		{
			int			c = measure(v, values);

			(*values)++;
			d = c > d ? c : d;
		}
	}
	else if (json_is_array(j))
	{
		json_array_foreach(j, i, v)
		{
			int			c = measure(v, values);

			(*values)++;
			d = c > d ? c : d;
		}
	}
	else
		return 0;
	return d + 1;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *text = fuzz_copy(data, size);
	jose_error	err = fuzz_err();
	json_t	   *j;

	j = jose_json_parse(text, size, JOSE_E_PAYLOAD, &err);
	if (j)
	{
		char	   *dump = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
		json_t	   *again;
		size_t		values = 0;
		int			depth = measure(j, &values);

		FUZZ_ASSERT(depth <= JOSE_MAX_JSON_DEPTH, "accepted depth %d", depth);
		FUZZ_ASSERT(values <= JOSE_MAX_JSON_MEMBERS, "accepted %zu values", values);
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
