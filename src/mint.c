/*
 * mint.c — token formats, and the response that carries a token.
 *
 * Every token tokex hands out is minted here, from a decided issuance:
 *
 *   exchange            by the resource's token_format:
 *     jwt               RFC 9068 access token (typ at+jwt): iss, sub, act,
 *                       aud, scope, client_id, jti, iat, nbf, exp, sid
 *     reference         an opaque tkx_at_ token; its claims are the audit
 *                       row's, which keeps only the token's SHA-256
 *     txn_token         transaction token (typ txntoken+jwt,
 *                       draft-ietf-oauth-transaction-tokens): iss, sub, act,
 *                       aud (the trust domain), txn, scope, req_wl, tctx,
 *                       rctx, jti, iat, nbf, exp
 *     credential        a vaulted downstream credential (src/vault.c), and a
 *                       transaction token beside it naming sub and act
 *   client_credentials  actor token for the client's identity (typ JWT):
 *                       aud = tokex itself, client_id
 *   session             session credential (typ JWT): may_act = the agent,
 *                       sid, scope
 *   identity_token      actor token for an agent or service (typ JWT)
 *   jwt_sign            an administrator's claims, signed as given (typ JWT)
 *
 * In all of them jti is the issuance's id, which is also its audit row's.
 */
#include "issue.h"
#include "vault.h"

#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/jsonb.h"

static char *
uuid_text(const pg_uuid_t *u)
{
	return DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(u)));
}

/*
 * How long the token lives.  An access token never outlives the
 * credentials it was exchanged for; nothing outlives tokex.max_ttl, except
 * the session credential and the identity token, whose lifetimes
 * start_session and identity_token decided (at most a day; a session never
 * past its delegation).
 */
static bool
lifetime(Issuance *x)
{
	int64		ttl = x->ttl > 0 ? x->ttl : tokex_default_ttl;

	x->iat = tokex_now();
	if (x->op == OP_SESSION)
	{
		x->exp = (int64) timestamptz_to_time_t(x->session_expires);
		return true;
	}
	if (x->op == OP_IDENTITY_TOKEN)
	{
		x->exp = x->iat + x->ttl;
		return true;
	}
	ttl = Min(ttl, tokex_max_ttl);
	/* a JWT always has exp; an API key may not expire */
	if (x->subj && json_is_number(json_object_get(x->subj->payload, "exp")))
		ttl = Min(ttl, (int64) json_number_value(json_object_get(x->subj->payload, "exp")) - x->iat);
	if (x->act && json_is_number(json_object_get(x->act->payload, "exp")))
		ttl = Min(ttl, (int64) json_number_value(json_object_get(x->act->payload, "exp")) - x->iat);
	if (ttl <= 0)
	{
		deny(x, "invalid_grant", "the presented tokens expire too soon to mint a token");
		return false;
	}
	x->exp = x->iat + ttl;
	return true;
}

/* act: the actors from the first to the current, the current one outermost (RFC 8693 §4.1) */
static json_t *
act_claim(Issuance *x)
{
	json_t	   *act = NULL;

	for (int i = 1; i < x->nchain; i++)
	{
		json_t	   *a = json_pack("{s:s}", "sub", x->chain_id[i]);

		if (a == NULL)
		{
			json_decref(act);
			ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
		}
		if (act)
			json_object_set_new(a, "act", act);
		act = a;
	}
	return act;
}

/*
 * A vaulted credential for the target and the person (src/vault.c): the
 * person's own, else the shared one.  Its value is the access_token; the
 * response also says how the downstream takes it (header and value), and
 * the audit row names its id, never its value.  false (and refused) when
 * there is none.
 */
static bool
release_credential(Issuance *x)
{
	MemoryContext old = MemoryContextSwitchTo(x->cxt);
	char	   *secret;
	char	   *kind;
	char	   *header;
	char	   *name;
	char	   *value;
	bool		found = vault_release(x->target, x->chain_id[0], &x->credential_id, &secret, &kind, &header);

	/* SPI calls end in SPI's own context, which SPI_finish frees before respond */
	MemoryContextSwitchTo(x->cxt);
	if (found)
	{
		vault_presentation(kind, header, secret, &name, &value);
		x->access_token = secret;
		x->credential = tokex_json_track(json_pack("{s:{s:s,s:s,s:s}}", "credential",
												   "kind", kind, "header", name, "value", value));
		if (x->credential == NULL)
			ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	}
	MemoryContextSwitchTo(old);
	if (!found)
		deny(x, "invalid_target", "no live credential is stored for \"%s\", for \"%s\" or shared",
			 x->target, x->chain_id[0]);
	return found;
}

/* The claims of an exchange's token, JWT or transaction token, on top of the common ones. */
static void
exchange_claims(Issuance *x, json_t *claims, bool txn)
{
	x->token_client_id = x->client_id ? x->client_id : x->chain_id[x->nchain - 1];
	json_object_set_new(claims, "aud", json_string(x->target));
	/* bound to the DPoP proof's key (RFC 9449 §6) */
	if (x->dpop.jkt[0])
		json_object_set_new(claims, "cnf", json_pack("{s:s}", "jkt", x->dpop.jkt));
	json_object_set_new(claims, "scope", json_string(scope_string(x->scope_out, x->nscope)));
	if (x->nchain > 1)
		json_object_set_new(claims, "act", act_claim(x));
	/* only a tokex session; an IdP's sid means nothing here.  Every format that
	 * carries claims names it, so that revoking the session kills the token. */
	if (x->has_sid)
		json_object_set(claims, "sid", json_object_get(x->subj->payload, "sid"));
	if (txn)
	{
		json_object_set(claims, "txn", json_object_get(claims, "jti"));
		/* the requesting workload: the client that asked, else the current actor */
		json_object_set_new(claims, "req_wl", json_string(x->token_client_id));
		if (x->request_details)
			json_object_set(claims, "tctx", x->request_details);
		if (x->request_context)
			json_object_set(claims, "rctx", x->request_context);
		return;
	}
	json_object_set_new(claims, "client_id", json_string(x->token_client_id));
}

/* Step: mint the token of this issuance's format. */
void
mint(Issuance *x)
{
	json_t	   *claims;
	const char *typ = "JWT";
	char	   *jti = uuid_text(&x->exchange_id);

	/* jwt_sign: the administrator's claims, signed as they were given */
	if (x->op == OP_JWT_SIGN)
	{
		x->access_token = MemoryContextStrdup(x->cxt, tokex_sign_text(x->sign_key, x->sign_payload,
																	  strlen(x->sign_payload), "JWT"));
		return;
	}
	if (!lifetime(x))
		return;
	claims = tokex_json_track(json_pack("{s:s,s:s,s:s,s:I,s:I,s:I}",
										"iss", tokex_issuer,
										"sub", x->chain_id[0],
										"jti", jti,
										"iat", (json_int_t) x->iat,
										"nbf", (json_int_t) x->iat,
										"exp", (json_int_t) x->exp));
	if (claims == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	switch (x->op)
	{
		case OP_EXCHANGE:
			exchange_claims(x, claims, x->format != FMT_JWT && x->format != FMT_REFERENCE);
			switch (x->format)
			{
				case FMT_JWT:
					typ = "at+jwt";
					break;
				case FMT_REFERENCE:
					/* nothing is signed: the audit row is the token's only record */
					x->access_token = MemoryContextStrdup(x->cxt, tokex_opaque_new("at"));
					tokex_sha256(x->access_token, strlen(x->access_token), x->issued_hash);
					x->has_issued_hash = true;
					return;
				case FMT_TXN:
					typ = "txntoken+jwt";
					break;
				case FMT_CREDENTIAL:
					if (!release_credential(x))
						return;
					x->txn_token = MemoryContextStrdup(x->cxt, tokex_sign(claims, "txntoken+jwt", NULL));
					return;
			}
			break;
		case OP_CLIENT_CREDENTIALS:
			x->token_client_id = x->client_id;
			json_object_set_new(claims, "aud", json_string(tokex_issuer));
			json_object_set_new(claims, "client_id", json_string(x->client_id));
			break;
		case OP_SESSION:
			json_object_set_new(claims, "may_act",
								json_pack("{s:s,s:s}", "sub", x->chain_id[1], "iss", tokex_issuer));
			json_object_set_new(claims, "sid", json_string(uuid_text(&x->sid)));
			json_object_set_new(claims, "scope", json_string(scope_string(x->scope_out, x->nscope)));
			break;
		case OP_IDENTITY_TOKEN:
		case OP_JWT_SIGN:
			break;
	}
	x->access_token = MemoryContextStrdup(x->cxt, tokex_sign(claims, typ, NULL));
}

static Datum
json_to_jsonb(json_t *j)
{
	/* released with the call's memory, raise or not */
	return tokex_json_to_jsonb(tokex_json_track(j));
}

/*
 * Step: the response that carries the token, or the refusal: RFC 8693
 * §2.2.1 / §2.2.2 for an exchange, RFC 6749 §5.1 for client_credentials,
 * {session_token, session_id, expires_at} for a session.
 */
Datum
respond(Issuance *x)
{
	if (x->error)
	{
		json_t	   *r = json_pack("{s:s,s:s}", "error", x->error, "error_description", x->reason);

		if (r && x->dpop_nonce)
			json_object_set_new(r, "dpop_nonce", json_string(x->dpop_nonce));
		return json_to_jsonb(r);
	}
	switch (x->op)
	{
		case OP_EXCHANGE:
			{
				/* RFC 8693 §2.2.1: N_A for what is not an OAuth access token */
				json_t	   *r = json_pack("{s:s,s:s,s:s,s:I,s:s}",
										  "access_token", x->access_token,
										  "issued_token_type", x->issued_type,
										  "token_type", x->format != FMT_JWT && x->format != FMT_REFERENCE
										  ? "N_A" : x->dpop.jkt[0] ? "DPoP" : "Bearer",
										  "expires_in", (json_int_t) (x->exp - x->iat),
										  "scope", scope_string(x->scope_out, x->nscope));

				if (r && x->txn_token)
					json_object_set_new(r, "txn_token", json_string(x->txn_token));
				if (r && x->dpop_nonce)
					json_object_set_new(r, "dpop_nonce", json_string(x->dpop_nonce));
				if (r && x->credential)
					json_object_update(r, x->credential);
				return json_to_jsonb(r);
			}
		case OP_CLIENT_CREDENTIALS:
			return json_to_jsonb(json_pack("{s:s,s:s,s:I}",
										   "access_token", x->access_token,
										   "token_type", "Bearer",
										   "expires_in", (json_int_t) (x->exp - x->iat)));
		case OP_SESSION:
			{
				char		buf[MAXDATELEN + 1];

				JsonEncodeDateTime(buf, TimestampTzGetDatum(x->session_expires), TIMESTAMPTZOID, NULL);
				return json_to_jsonb(json_pack("{s:s,s:s,s:s}",
											   "session_token", x->access_token,
											   "session_id", uuid_text(&x->sid),
											   "expires_at", buf));
			}
		case OP_IDENTITY_TOKEN:
		case OP_JWT_SIGN:
			break;
	}
	return CStringGetTextDatum(x->access_token);
}
