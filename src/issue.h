/*
 * issue.h — one issuance: what every token tokex hands out goes through.
 *
 * Each way to obtain a token (an exchange, client_credentials, a session
 * credential, an identity token) is one pipeline of named steps, called in
 * order from its SQL entry point:
 *
 *   parse -> verify -> decide -> mint(format) -> audit -> respond
 *
 * The steps share this record.  A step that refuses fills error/reason
 * (deny); later steps are skipped, but the audit row is always written, so a
 * denial is on record like a grant.
 */
#ifndef TOKEX_ISSUE_H
#define TOKEX_ISSUE_H

#include "tokex.h"

#include "executor/spi.h"
#include "utils/timestamp.h"

#define URN_TT		"urn:ietf:params:oauth:token-type:"
#define TT_JWT		URN_TT "jwt"
#define TT_ACCESS	URN_TT "access_token"
#define TT_ID		URN_TT "id_token"
#define TT_TXN		URN_TT "txn_token"
#define TT_API_KEY	"urn:tokex:token-type:api_key"
#define TT_CREDENTIAL "urn:tokex:token-type:credential"
#define MAX_CHAIN	17			/* subject + tokex.max_chain_depth (<= 16) actors */
#define MAX_SCOPES	64
#define MAX_SCOPE_TEXT	32768	/* bytes of a scope parameter or claim */

typedef enum IssueOp
{
	OP_EXCHANGE,				/* RFC 8693 token exchange */
	OP_CLIENT_CREDENTIALS,		/* RFC 6749 §4.4: an actor token for the client's identity */
	OP_SESSION,					/* a session credential for an agent */
	OP_IDENTITY_TOKEN,			/* an actor token for a registered agent or service */
	OP_JWT_SIGN					/* an administrator's claims, signed as given (jwt_sign) */
} IssueOp;

/* What an exchange hands out (tokex.resource.token_format, requested_token_type) */
typedef enum TokenFormat
{
	FMT_JWT,					/* RFC 9068 access token */
	FMT_REFERENCE,				/* opaque tkx_at_ token, resolved by introspection */
	FMT_TXN,					/* transaction token (txntoken+jwt) */
	FMT_CREDENTIAL				/* a vaulted downstream credential, with a txn token beside it */
} TokenFormat;

/* A DPoP proof that held (dpop.c) */
typedef struct DpopProof
{
	char		jkt[44];		/* the proof key's RFC 7638 thumbprint */
	char	   *jti;
	char	   *nonce;			/* or NULL */
	int64		expires;		/* when the proof can no longer be accepted (Unix seconds) */
} DpopProof;

typedef struct Issuance
{
	MemoryContext cxt;			/* the call's context: outlives SPI */
	IssueOp		op;				/* what is being issued */

	/* request */
	text	   *subject_token;
	char	   *subject_token_type;
	text	   *actor_token;
	char	   *actor_token_type;
	char	   *audience;
	char	   *resource;
	char	   *scope;
	char	   *requested_token_type;
	char	   *client_id;
	json_t	   *request_details;	/* txn token tctx */
	json_t	   *request_context;	/* txn token rctx */

	/* what we learned */
	pg_uuid_t	exchange_id;	/* the audit row's id, and the issued token's jti */
	uint8		subject_hash[32];
	uint8		actor_hash[32];
	TokexToken *subj;
	TokexToken *act;
	int			nchain;			/* subject + actors */
	char	   *chain_iss[MAX_CHAIN];
	char	   *chain_sub[MAX_CHAIN];
	TimestampTz chain_iat[MAX_CHAIN];
	char	   *chain_id[MAX_CHAIN];	/* identity ids, once resolved */
	int			nrequested;
	char	   *requested[MAX_SCOPES];
	const char *issued_type;
	bool		has_sid;		/* subject token is tokex's and names a session */
	pg_uuid_t	sid;
	bool		sql_face;		/* tokex.exchange: the client comes from the caller's role */
	int			nmay;			/* the subject token's may_act entries */
	char	  **may_iss;
	char	  **may_sub;
	char	  **may_id;			/* resolved by tokex.decide; NULL = no known identity */
	int			nrevkeys;		/* revocation keys of the presented tokens */
	bytea	   *revkeys[2];
	int			nown;			/* jtis of presented tokens tokex issued */
	pg_uuid_t	own_jti[2];
	TimestampTz at;				/* the time of the call */

	/* decision */
	char	   *verdict_error;	/* tokex.decide's verdict (steps 5-8), applied after may_act */
	char	   *verdict_reason;
	const char *error;			/* OAuth error code, NULL when granted */
	char	   *reason;
	char	   *target;
	int			nscope;
	char	  **scope_out;
	Datum		delegation_ids;	/* bigint[] or 0 */
	Datum		policy_ids;
	int64		ttl;			/* seconds, from the resource; 0 = default */
	char	   *token_format;	/* the target resource's, from tokex.decide */
	bool		require_dpop;	/* the target resource's, from tokex.decide */
	text	   *dpop_proof;		/* the DPoP proof presented, or NULL */
	DpopProof	dpop;			/* ... once it holds: dpop.jkt[0] != 0 */
	char	   *dpop_nonce;		/* a fresh server nonce for the response (tokex.dpop_nonce) */
	TokenFormat format;
	char	   *access_token;
	bool		has_issued_hash;	/* a reference token: kept only as its SHA-256 */
	uint8		issued_hash[32];
	char	   *txn_token;		/* beside a released credential */
	int64		credential_id;	/* 0: none */
	json_t	   *credential;		/* how the downstream takes it (response members) */
	const char *token_client_id;	/* client_id claim: the parameter, else the current actor */
	int64		iat;
	int64		exp;

	/* a session credential */
	TimestampTz session_expires;

	/* jwt_sign: the claims as they are signed, and the key */
	const char *sign_payload;
	const jose_key *sign_key;
} Issuance;

/* issue.c: shared steps and helpers */
extern Issuance *issuance_new(IssueOp op);
extern void deny(Issuance *x, const char *error, const char *fmt,...) pg_attribute_printf(3, 4);
extern SPIPlanPtr tokex_prepare(const char *sql, int nargs, Oid *types);
extern SPIPlanPtr tokex_keep_plan(SPIPlanPtr *slot, const char *sql, int nargs, Oid *types);
extern int	execute_now(SPIPlanPtr plan, Datum *values, const char *nulls, bool read_only, long tcount);
extern int	spi_column(const char *name);
extern bool split_scope(const char *s, char **out, int *n);
extern char *scope_string(char **scopes, int n);
extern Datum text_array(char **items, int n);
extern Datum tstz_array(TimestampTz *items, int n);
extern int	untext_array(Datum arr, char ***out);
extern void build_chain(Issuance *x);
extern bool note_presented(Issuance *x, TokexToken *t, const char *which);

/* fastdecide.c: the decision by index probes, for a grant */
extern bool tokex_fast_decide;
extern void tokex_uuid7(pg_uuid_t *u, TimestampTz at);
extern bool tokex_audit_direct;
extern bool decide_fast(Issuance *x);
extern bool token_active_fast(Issuance *x);

/* translate.c: credentials that are not JWTs */
extern char *tokex_opaque_new(const char *kind);
extern bool tokex_opaque_ok(const char *s, size_t len, const char *kind);
extern TokexToken *translate_api_key(Issuance *x, text *token, const char *which);
extern TokexToken *translate_registered(Issuance *x, text *token, const char *type, const char *which);
extern TokexToken *translate_reference(const char *s, size_t n);

/* dpop.c: DPoP proofs (RFC 9449) */
extern char *dpop_token_endpoint(void);
extern const char *dpop_check(const char *proof, size_t len, const char *htm, const char *htu,
							  const char *access_token, size_t at_len, DpopProof *out);
extern bool dpop_remember(const DpopProof *p);
extern void tokex_dpop_init(void);
extern const char *dpop_bound_jkt(const TokexToken *t, bool *other);
extern char *dpop_nonce_new(void);
extern bool dpop_nonce_ok(const char *nonce);

/* introspect.c: a token that verifies and is live, or NULL */
extern TokexToken *tokex_live_token(const char *s, size_t n);

/* decide.c */
extern void decide(Issuance *x);

/* mint.c: token formats, and the response that carries the token */
extern void mint(Issuance *x);
extern Datum respond(Issuance *x);

/* audit.c: the issuance's audit row, committed before the token is returned */
extern void audit(Issuance *x);

/* issue.c: mint -> audit -> respond, closing SPI */
extern Datum issue_finish(Issuance *x);

#endif							/* TOKEX_ISSUE_H */
