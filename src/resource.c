/*
 * resource.c — the resource side in SQL: a PostgreSQL-backed API that
 * receives a tokex token checks it with tokex.authenticate, and its
 * row-level security policies ask on whose behalf, by which agent and with
 * what scope the transaction runs (tokex.on_behalf_of, current_actor,
 * actor_chain, has_scope, token_claims).
 *
 * The authenticated claims live in this backend's memory, set only by
 * tokex.authenticate after the token verified for this database's audience
 * (tokex.resource_audience), was found live exactly as introspection finds
 * it, and — for a DPoP-bound token — came with a proof by its key for this
 * request (htm, htu, ath).  Nothing a SQL caller can set (no GUC such as
 * request.jwt.claims, which any role can set_config) reaches them, and they
 * are dropped when the transaction ends, committed or not.
 */
#include "issue.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"

static json_t *authenticated = NULL;	/* the claims, or NULL */
static SubTransactionId authenticated_in = InvalidSubTransactionId;
static bool callback_registered = false;

static void
forget(void)
{
	if (authenticated)
		json_decref(authenticated);
	authenticated = NULL;
}

static void
at_xact_end(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			forget();
			break;
		default:
			break;
	}
}

/*
 * What was authenticated in a subtransaction that is rolled back is gone
 * (ROLLBACK TO SAVEPOINT, a caught error); committed into its parent, it
 * belongs to the parent.
 */
static void
at_subxact_end(SubXactEvent event, SubTransactionId mySubid, SubTransactionId parentSubid, void *arg)
{
	if (authenticated == NULL || mySubid != authenticated_in)
		return;
	if (event == SUBXACT_EVENT_ABORT_SUB)
		forget();
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
		authenticated_in = parentSubid;
}

static void
refuse(const char *detail) pg_attribute_noreturn();

static void
refuse(const char *detail)
{
	forget();
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
			 errmsg("invalid token"),
			 errdetail("%s", detail)));
}

/* Does this database's resource take only DPoP-bound tokens? */
static SPIPlanPtr require_dpop_plan = NULL;

static bool
requires_dpop(void)
{
	Datum		v[1] = {CStringGetTextDatum(tokex_resource_audience)};
	bool		result = false;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "tokex: SPI_connect failed");
	tokex_keep_plan(&require_dpop_plan,
					"SELECT require_dpop FROM tokex.resource WHERE audience OPERATOR(pg_catalog.=) $1",
					1, (Oid[]) {TEXTOID});
	if (execute_now(require_dpop_plan, v, NULL, true, 1) == SPI_OK_SELECT && SPI_processed == 1)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		result = !isnull && DatumGetBool(d);
	}
	SPI_finish();
	return result;
}

static char *
arg_text(FunctionCallInfo fcinfo, int n)
{
	return PG_ARGISNULL(n) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(n));
}

/*
 * tokex.authenticate(token, dpop_proof, method, url): the token's claims,
 * kept for this transaction; else 28000 invalid token (and nothing kept).
 */
PG_FUNCTION_INFO_V1(tokex_authenticate);
Datum
tokex_authenticate(PG_FUNCTION_ARGS)
{
	text	   *token;
	TokexToken *t;
	json_t	   *aud;
	bool		other;
	const char *jkt;
	size_t		i;
	bool		for_us = false;
	json_t	   *v;

	tokex_check_version();
	forget();
	if (!callback_registered)
	{
		RegisterXactCallback(at_xact_end, NULL);
		RegisterSubXactCallback(at_subxact_end, NULL);
		callback_registered = true;
	}
	if (tokex_resource_audience == NULL || tokex_resource_audience[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("tokex.resource_audience is not set"),
				 errhint("Set it to the audience this database serves: ALTER DATABASE ... SET tokex.resource_audience = '...'.")));
	if (PG_ARGISNULL(0))
		refuse("no token");
	token = PG_GETARG_TEXT_PP(0);
	t = tokex_live_token(VARDATA_ANY(token), VARSIZE_ANY_EXHDR(token));
	if (t == NULL)
		refuse("the token does not verify, or is expired, revoked or no longer backed by its delegation");
	/*
	 * An access token tokex minted for a resource (an exchange's: its chain
	 * and person were decided by tokex): not a session credential, an
	 * identity token or a transaction token, and not another issuer's token,
	 * whose sub and act tokex never checked (exchange it at tokex first).
	 */
	if (!t->own || t->typ == NULL || strcmp(t->typ, "at+jwt") != 0)
		refuse("not an access token tokex minted (another issuer's token is exchanged at tokex first)");
	aud = json_object_get(t->payload, "aud");
	if (json_is_string(aud))
		for_us = strcmp(json_string_value(aud), tokex_resource_audience) == 0;
	json_array_foreach(aud, i, v)
		if (json_is_string(v) && strcmp(json_string_value(v), tokex_resource_audience) == 0)
		for_us = true;
	if (!for_us)
		refuse("the token is not for this resource (tokex.resource_audience)");

	jkt = dpop_bound_jkt(t, &other);
	if (other)
		refuse("the token is bound by a confirmation method tokex does not verify");
	if (jkt == NULL && requires_dpop())
		refuse("this resource takes only DPoP-bound tokens (tokex.resource.require_dpop)");
	if (jkt)
	{
		char	   *method = arg_text(fcinfo, 2);
		char	   *url = arg_text(fcinfo, 3);
		DpopProof	p;
		const char *why;

		if (PG_ARGISNULL(1) || method == NULL || url == NULL)
			refuse("a DPoP-bound token needs its proof, the request's method and its URL");
		why = dpop_check(VARDATA_ANY(PG_GETARG_TEXT_PP(1)), VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(1)),
						 method, url, VARDATA_ANY(token), VARSIZE_ANY_EXHDR(token), &p);
		if (why)
			refuse(why);
		if (strcmp(p.jkt, jkt) != 0)
			refuse("the DPoP proof is signed by another key than the token is bound to");
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "tokex: SPI_connect failed");
		if (!dpop_remember(&p))
		{
			SPI_finish();
			refuse("the DPoP proof's jti was already used");
		}
		SPI_finish();
	}
	authenticated = json_deep_copy(t->payload);
	authenticated_in = GetCurrentSubTransactionId();
	if (authenticated == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	PG_RETURN_DATUM(tokex_jsonb_in(t->payload_text ? t->payload_text
								   : tokex_adopt(json_dumps(t->payload, JSON_COMPACT))));
}

/* the actors, first to current (the current one is outermost in act) */
static int
actors(char ***out)
{
	json_t	   *a;
	int			n = 0;

	for (a = json_object_get(authenticated, "act"); json_is_object(a); a = json_object_get(a, "act"))
		n++;
	*out = palloc(sizeof(char *) * (n ? n : 1));
	a = json_object_get(authenticated, "act");
	for (int i = n - 1; i >= 0; i--, a = json_object_get(a, "act"))
	{
		json_t	   *sub = json_object_get(a, "sub");

		(*out)[i] = json_is_string(sub) ? pstrdup(json_string_value(sub)) : NULL;
	}
	return n;
}

PG_FUNCTION_INFO_V1(tokex_on_behalf_of);
Datum
tokex_on_behalf_of(PG_FUNCTION_ARGS)
{
	json_t	   *sub = json_object_get(authenticated, "sub");

	if (!json_is_string(sub))
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(json_string_value(sub)));
}

PG_FUNCTION_INFO_V1(tokex_current_actor);
Datum
tokex_current_actor(PG_FUNCTION_ARGS)
{
	json_t	   *sub = json_object_get(json_object_get(authenticated, "act"), "sub");

	if (!json_is_string(sub))
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(json_string_value(sub)));
}

PG_FUNCTION_INFO_V1(tokex_actor_chain);
Datum
tokex_actor_chain(PG_FUNCTION_ARGS)
{
	char	  **chain;
	int			n;

	if (authenticated == NULL)
		PG_RETURN_NULL();
	n = actors(&chain);
	PG_RETURN_DATUM(text_array(chain, n));
}

PG_FUNCTION_INFO_V1(tokex_has_scope);
Datum
tokex_has_scope(PG_FUNCTION_ARGS)
{
	json_t	   *scope = json_object_get(authenticated, "scope");
	char	   *want;
	char	   *tokens[MAX_SCOPES];
	int			n;

	if (PG_ARGISNULL(0) || !json_is_string(scope) || !split_scope(json_string_value(scope), tokens, &n))
		PG_RETURN_BOOL(false);
	want = text_to_cstring(PG_GETARG_TEXT_PP(0));
	for (int i = 0; i < n; i++)
		if (strcmp(tokens[i], want) == 0)
			PG_RETURN_BOOL(true);
	PG_RETURN_BOOL(false);
}

PG_FUNCTION_INFO_V1(tokex_token_claims);
Datum
tokex_token_claims(PG_FUNCTION_ARGS)
{
	if (authenticated == NULL)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(tokex_jsonb_in(tokex_adopt(json_dumps(authenticated, JSON_COMPACT))));
}
