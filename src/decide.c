/*
 * decide.c — the decision: tokex._decide, one prepared SQL query over the
 * identity graph, policy and revocations (src/sql/40_decide.sql), bound
 * from an issuance and read back into it.
 *
 * The query is an inlined SQL function: planning it costs more than running
 * it, so it uses one generic plan, made once per backend (its parameters
 * only ever select rows by key).  It reads the latest committed state and
 * judges validity windows at the time of the call (execute_now).
 */
#include "issue.h"

#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"

static SPIPlanPtr decide_plan = NULL;

/* The scope claim of the subject token bounds the grant; absent = no bound. */
static Datum
token_scope(Issuance *x, bool *isnull)
{
	json_t	   *s = json_object_get(x->subj->payload, "scope");
	char	   *items[MAX_SCOPES];
	int			n = 0;

	*isnull = true;
	if (s == NULL)
		return (Datum) 0;
	*isnull = false;
	if (!json_is_string(s) || !split_scope(json_string_value(s), items, &n))
		return text_array(items, 0);	/* malformed or empty: grants nothing */
	return text_array(items, n);
}

static Datum
bytea_array(bytea **items, int n)
{
	return PointerGetDatum(construct_array((Datum *) items, n, BYTEAOID, -1, false, TYPALIGN_INT));
}

static Datum
uuid_array(pg_uuid_t *items, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * (n ? n : 1));

	for (int i = 0; i < n; i++)
		d[i] = UUIDPGetDatum(&items[i]);
	return PointerGetDatum(construct_array(d, n, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
}


/*
 * Steps 3 and 5-8 of the decision: one query, tokex.decide, over the graph
 * (identities, delegations, resources, policy, clients, revocations).  Its
 * columns are read by name, so a column added to it cannot shift another.
 * A problem with the identities is the first refusal; the verdict of the
 * later steps is kept for after may_act (step 4), which needs the
 * identities the query resolved.  Runs inside SPI.
 */
void
decide(Issuance *x)
{
	Datum		values[15];
	char		nulls[15];
	bool		isnull;
	HeapTuple	tup;
	TupleDesc	td;
	MemoryContext old;
	int			rc;
	char	  **ids;
	char	   *identity_error;
	int			col;

	/* a grant found by index probes; anything else is the query's to say */
	if (decide_fast(x))
		return;
	if (decide_plan == NULL)
	{
		Oid			types[15] = {TEXTARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID, TEXTOID, TEXTOID,
			TEXTARRAYOID, TEXTARRAYOID, TEXTOID, TEXTOID, BYTEAARRAYOID, UUIDOID, UUIDARRAYOID,
		TEXTARRAYOID, TEXTARRAYOID, TIMESTAMPTZOID};
		SPIPlanPtr	p = tokex_prepare("SELECT * FROM tokex._decide($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, "
								"$11, $12, $13, $14, $15)", 15, types);

		if (p == NULL || SPI_keepplan(p) != 0)
			elog(ERROR, "tokex: cannot prepare the decision query: %s", SPI_result_code_string(SPI_result));
		decide_plan = p;
	}
	memset(nulls, ' ', sizeof(nulls));
	values[0] = text_array(x->chain_iss, x->nchain);
	values[1] = text_array(x->chain_sub, x->nchain);
	values[2] = tstz_array(x->chain_iat, x->nchain);
	values[3] = x->audience ? CStringGetTextDatum(x->audience) : (nulls[3] = 'n', (Datum) 0);
	values[4] = x->resource ? CStringGetTextDatum(x->resource) : (nulls[4] = 'n', (Datum) 0);
	values[5] = x->scope ? text_array(x->requested, x->nrequested) : (nulls[5] = 'n', (Datum) 0);
	values[6] = token_scope(x, &isnull);
	nulls[6] = isnull ? 'n' : ' ';
	values[7] = x->client_id ? CStringGetTextDatum(x->client_id) : (nulls[7] = 'n', (Datum) 0);
	values[8] = CStringGetTextDatum(tokex_issuer ? tokex_issuer : "");
	values[9] = bytea_array(x->revkeys, x->nrevkeys);
	if (x->has_sid)
		values[10] = UUIDPGetDatum(&x->sid);
	else
		nulls[10] = 'n';
	values[11] = uuid_array(x->own_jti, x->nown);
	if (x->nmay > 0)
	{
		values[12] = text_array(x->may_iss, x->nmay);
		values[13] = text_array(x->may_sub, x->nmay);
	}
	else
		nulls[12] = nulls[13] = 'n';
	values[14] = TimestampTzGetDatum(x->at);

	rc = execute_now(decide_plan, values, nulls, false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "tokex: decision query failed: %s", SPI_result_code_string(rc));
	tup = SPI_tuptable->vals[0];
	td = SPI_tuptable->tupdesc;

	old = MemoryContextSwitchTo(x->cxt);
	identity_error = SPI_getvalue(tup, td, spi_column("identity_error"));
	col = spi_column("chain");
	if (!heap_attisnull(tup, col, td))
	{
		untext_array(SPI_getbinval(tup, td, col, &isnull), &ids);
		for (int i = 0; i < x->nchain; i++)
			x->chain_id[i] = ids[i];
	}
	x->delegation_ids = datumCopy(SPI_getbinval(tup, td, spi_column("delegation_ids"), &isnull), false, -1);
	x->policy_ids = datumCopy(SPI_getbinval(tup, td, spi_column("policy_ids"), &isnull), false, -1);
	x->target = SPI_getvalue(tup, td, spi_column("target"));
	x->token_format = SPI_getvalue(tup, td, spi_column("token_format"));
	col = spi_column("require_dpop");
	x->require_dpop = !heap_attisnull(tup, col, td) && DatumGetBool(SPI_getbinval(tup, td, col, &isnull));
	col = spi_column("scope");
	if (!heap_attisnull(tup, col, td))
		x->nscope = untext_array(SPI_getbinval(tup, td, col, &isnull), &x->scope_out);
	col = spi_column("ttl_seconds");
	if (!heap_attisnull(tup, col, td))
		x->ttl = DatumGetInt64(SPI_getbinval(tup, td, col, &isnull));
	col = spi_column("may_act_ids");
	if (x->nmay > 0 && !heap_attisnull(tup, col, td) &&
		untext_array(SPI_getbinval(tup, td, col, &isnull), &x->may_id) != x->nmay)
		x->may_id = NULL;
	if (identity_error)
		deny(x, "invalid_grant", "%s", identity_error);
	else
	{
		col = spi_column("error");
		if (!heap_attisnull(tup, col, td))
		{
			x->verdict_error = SPI_getvalue(tup, td, col);
			x->verdict_reason = SPI_getvalue(tup, td, spi_column("reason"));
		}
	}
	MemoryContextSwitchTo(old);
}

