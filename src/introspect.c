/*
 * introspect.c — tokex.introspect (RFC 7662): is a token live, and what
 * does it say.  {"active":false} for anything invalid, expired, revoked,
 * unknown or not an access token, with nothing more said; else its claims.
 * The liveness query is tokex._token_active (src/sql/55_introspect.sql),
 * after its fast path for a live token (src/fastdecide.c).
 * Read-only and judged as of the call, like the exchange.
 */
#include "issue.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

static SPIPlanPtr active_plan = NULL;

static bool
token_active(Issuance *x)
{
	Datum		v[9];
	char		n[9];
	bool		isnull;
	bool		active;
	int			rc;

	/* a live token found by index probes; a "no" is the query's to say */
	if (token_active_fast(x))
		return true;
	if (active_plan == NULL)
	{
		Oid			types[9] = {TEXTARRAYOID, TEXTARRAYOID, TIMESTAMPTZOID, TEXTOID, BOOLOID,
		BYTEAOID, UUIDOID, UUIDOID, TIMESTAMPTZOID};
		SPIPlanPtr	p = tokex_prepare("SELECT active FROM tokex._token_active($1, $2, $3, $4, $5, $6, $7, $8, $9)",
								9, types);

		if (p == NULL || SPI_keepplan(p) != 0)
			elog(ERROR, "tokex: cannot prepare the token state query: %s",
				 SPI_result_code_string(SPI_result));
		active_plan = p;
	}
	memset(n, ' ', sizeof(n));
	v[0] = text_array(x->chain_iss, x->nchain);
	v[1] = text_array(x->chain_sub, x->nchain);
	v[2] = TimestampTzGetDatum(x->chain_iat[0]);
	v[3] = CStringGetTextDatum(tokex_issuer ? tokex_issuer : "");
	v[4] = BoolGetDatum(x->subj->own);
	if (x->nrevkeys > 0)
		v[5] = PointerGetDatum(x->revkeys[0]);
	else
		n[5] = 'n';
	if (x->nown > 0)
		v[6] = UUIDPGetDatum(&x->own_jti[0]);
	else
		n[6] = 'n';
	if (x->has_sid)
		v[7] = UUIDPGetDatum(&x->sid);
	else
		n[7] = 'n';
	v[8] = TimestampTzGetDatum(x->at);
	rc = execute_now(active_plan, v, n, true, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "tokex: token state query failed: %s", SPI_result_code_string(rc));
	active = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
										spi_column("active"), &isnull));
	return !isnull && active;
}

static Datum
inactive(void)
{
	return DirectFunctionCall1(jsonb_in, CStringGetDatum("{\"active\":false}"));
}

/*
 * The token (a JWT tokex or a trusted issuer signed, or a tokex reference
 * token), if it verifies and is live: what introspection answers active for,
 * and what a resource accepts (tokex.authenticate).  NULL otherwise.
 */
TokexToken *
tokex_live_token(const char *s, size_t n)
{
	Issuance   *x = palloc0(sizeof(Issuance));
	jose_error	err;
	bool		active;

	x->cxt = CurrentMemoryContext;
	x->at = GetCurrentTimestamp();
	/* a standby that fell behind cannot tell a live token from a revoked one */
	if (tokex_replica_behind())
		return NULL;
	/* a reference token's claims are its audit row's (src/translate.c) */
	if (n > 7 && strncmp(s, "tkx_at_", 7) == 0)
		x->subj = translate_reference(s, n);
	else
		x->subj = tokex_verify(s, n, NULL, &err);
	if (x->subj == NULL)
		return NULL;
	build_chain(x);
	if (!x->error)
		note_presented(x, x->subj, "token");
	if (x->error)
		return NULL;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "tokex: SPI_connect failed");
	active = token_active(x);
	SPI_finish();
	return active ? x->subj : NULL;
}

PG_FUNCTION_INFO_V1(tokex_introspect);
Datum
tokex_introspect(PG_FUNCTION_ARGS)
{
	static const char *const members[] = {
		"iss", "sub", "act", "may_act", "aud", "scope", "client_id",
		"exp", "iat", "nbf", "jti", "sid", "cnf"
	};
	text	   *token;
	TokexToken *t;
	json_t	   *out;

	if (PG_ARGISNULL(0))
		PG_RETURN_DATUM(inactive());
	token = PG_GETARG_TEXT_PP(0);
	t = tokex_live_token(VARDATA_ANY(token), VARSIZE_ANY_EXHDR(token));
	if (t == NULL)
		PG_RETURN_DATUM(inactive());

	/*
	 * A token bound to a key says so (RFC 7800 cnf, RFC 8705 §3.2, RFC 9449
	 * §6.2): a resource server must not take it for a bearer token.
	 */
	out = tokex_json_track(json_pack("{s:b,s:s}", "active", 1, "token_type",
									 t->typ && strcmp(t->typ, "txntoken+jwt") == 0 ? "N_A" :
									 json_object_get(json_object_get(t->payload, "cnf"), "jkt")
									 ? "DPoP" : "Bearer"));
	if (out == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	for (size_t i = 0; i < lengthof(members); i++)
	{
		json_t	   *v = json_object_get(t->payload, members[i]);

		if (v)
			json_object_set(out, members[i], v);
	}
	PG_RETURN_DATUM(tokex_json_to_jsonb(out));
}
