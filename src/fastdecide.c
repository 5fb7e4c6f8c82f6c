/*
 * fastdecide.c — the decision's fast path: the verdict of tokex._decide
 * (src/sql/40_decide.sql) for an exchange it grants, found by a dozen index
 * probes instead of executing a ~40-node plan (whose executor start-up alone
 * cost more than the two signature checks of an exchange).
 *
 * It only ever grants.  It makes every check the query makes, in no
 * particular order; the first one that would refuse, or anything it does not
 * handle, returns false and the caller runs the query, which gives the
 * refusal and its reason.  So a refusal costs what it did, a grant a few
 * index probes.  The query stays the contract: tokex.decide explains any
 * decision, and test/t/71_fast_decide.sql compares the two on random graphs
 * (every grant of one is a grant of the other with the same delegations,
 * policies, scopes and target, and the fast path falls back only where the
 * query refuses).
 *
 * Rows are read like the query reads them: the latest committed state
 * (GetLatestSnapshot), windows judged at the time of the call.
 */
#include "issue.h"

#include "access/genam.h"
#include "access/xact.h"
#include "access/htup_details.h"
#include "access/skey.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_index.h"
#include "catalog/pg_type.h"
#include "partitioning/partbounds.h"
#include "partitioning/partdesc.h"
#include "utils/partcache.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/uuid.h"
#include "utils/varlena.h"

#define TE_GRANT "urn:ietf:params:oauth:grant-type:token-exchange"

bool		tokex_fast_decide = true;

/* What the decision is asked (tokex._decide's parameters) */
typedef struct FastIn
{
	int			n;				/* chain length: subject + actors */
	char	   *iss[MAX_CHAIN];
	char	   *sub[MAX_CHAIN];
	TimestampTz iat[MAX_CHAIN];
	bool		iat_null[MAX_CHAIN];
	char	   *audience;
	char	   *resource;
	bool		req_null;		/* no scope parameter */
	int			nreq;
	char	  **req;
	bool		tscope_null;	/* the subject token has no scope claim */
	int			ntscope;
	char	  **tscope;
	char	   *client_id;
	char	   *own_issuer;
	int			nrevkeys;
	bytea	  **revkeys;
	bool		has_sid;
	pg_uuid_t	sid;
	int			nown;
	pg_uuid_t  *own;
	int			nmay;
	char	  **may_iss;
	char	  **may_sub;
	TimestampTz at;
} FastIn;

/* ... and what it answers when it grants (tokex._decide's columns) */
typedef struct FastOut
{
	char	   *chain[MAX_CHAIN];
	char	   *kinds[MAX_CHAIN];
	int			ndeleg;
	int64		deleg[MAX_CHAIN];
	int			npol;
	int64	   *pol;
	char	   *target;
	int			nscope;
	char	  **scope;
	bool		ttl_null;
	int64		ttl;
	char	  **may_id;			/* nmay entries, NULL where no identity */
	char	   *token_format;
	bool		require_dpop;
} FastOut;

/* One identity row */
typedef struct Ident
{
	char	   *id;
	char	   *kind;
	char	   *status;
	bool		tva_null;
	TimestampTz tva;
} Ident;

/* The state of one decision: the snapshot and the tables it reads */
typedef struct Fast
{
	Oid			nsp;
	Snapshot	snap;
	TimestampTz now;			/* the clock: where audit rows written before now are */
} Fast;

/* ---- reading rows by index ---------------------------------------------- */

static Relation
open_table(Fast *f, const char *name)
{
	Oid			relid = get_relname_relid(name, f->nsp);

	if (!OidIsValid(relid))
		elog(ERROR, "tokex: table tokex.%s is missing", name);
	return table_open(relid, AccessShareLock);
}

static int
col(Relation rel, const char *name)
{
	TupleDesc	td = RelationGetDescr(rel);

	for (int i = 0; i < td->natts; i++)
	{
		Form_pg_attribute a = TupleDescAttr(td, i);

		if (!a->attisdropped && strcmp(NameStr(a->attname), name) == 0)
			return i + 1;
	}
	elog(ERROR, "tokex: table %s has no column \"%s\"", RelationGetRelationName(rel), name);
	return 0;					/* not reached */
}

/*
 * The indexes the fast path reads by, each checked before use: present,
 * valid and ready (not a CREATE INDEX CONCURRENTLY left half-built), on its
 * table, and defined as below (pg_get_indexdef after " USING ") — an index
 * rebuilt with another predicate or other columns could miss rows the
 * query sees.  Checked again after any relcache invalidation; the
 * definition only for an index (OID) not seen before.  Anything amiss: the
 * query decides.
 */
typedef struct KnownIndex
{
	const char *name;
	const char *table;
	const char *def;
	Oid			oid;
} KnownIndex;

#define JTI_INDEX_DEF "btree (jti) WHERE (jti IS NOT NULL)"

static KnownIndex known[] = {
	{"identity_pkey", "identity", "btree (id)"},
	{"identity_issuer_subject_key", "identity", "btree (issuer, subject)"},
	{"delegation_pkey", "delegation", "btree (id)"},
	{"delegation_edge", "delegation", "btree (principal, delegate) WHERE (revoked_at IS NULL)"},
	{"resource_pkey", "resource", "btree (audience)"},
	{"resource_resource_uri_key", "resource", "btree (resource_uri)"},
	{"policy_by_subject", "policy", "btree (subject)"},
	{"policy_by_actor", "policy", "btree (actor) WHERE (subject IS NULL)"},
	{"policy_by_audience", "policy", "btree (audience) WHERE ((subject IS NULL) AND (actor IS NULL))"},
	{"policy_unbound", "policy", "btree (id) WHERE ((subject IS NULL) AND (actor IS NULL) AND (audience IS NULL))"},
	{"client_pkey", "client", "btree (client_id)"},
	{"session_pkey", "session", "btree (id)"},
	{"revoked_token_pkey", "revoked_token", "btree (key)"},
	{"api_key_key_sha256_key", "api_key", "btree (key_sha256)"},
};

static uint64 inval_generation = 1;
static uint64 checked_generation = 0;
static bool callback_registered = false;
static Oid	verified[256];		/* indexes whose definition matched */
static int	nverified = 0;

static void
fast_relcache_inval(Datum arg, Oid relid)
{
	inval_generation++;
}

/* Is this index of relid valid, ready, and defined as def? */
static bool
index_usable(Oid indexid, Oid relid, const char *def)
{
	HeapTuple	t = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(indexid));
	Form_pg_index ix;
	bool		ok;
	char	   *deparsed;
	const char *using;

	if (!HeapTupleIsValid(t))
		return false;
	ix = (Form_pg_index) GETSTRUCT(t);
	ok = ix->indisvalid && ix->indisready && ix->indislive && ix->indrelid == relid;
	ReleaseSysCache(t);
	if (!ok)
		return false;
	for (int i = 0; i < nverified; i++)
		if (verified[i] == indexid)
			return true;
	deparsed = TextDatumGetCString(DirectFunctionCall1(pg_get_indexdef, ObjectIdGetDatum(indexid)));
	using = strstr(deparsed, " USING ");
	ok = using != NULL && strcmp(using + 7, def) == 0;
	if (ok && nverified < (int) lengthof(verified))
		verified[nverified++] = indexid;
	return ok;
}

/* Are all the indexes the fast path reads by usable?  (Cached until an invalidation.) */
static bool
known_indexes(Fast *f)
{
	uint64		generation = inval_generation;

	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(fast_relcache_inval, (Datum) 0);
		callback_registered = true;
	}
	if (checked_generation == generation)
		return true;
	for (int i = 0; i < (int) lengthof(known); i++)
	{
		known[i].oid = get_relname_relid(known[i].name, f->nsp);
		if (!OidIsValid(known[i].oid) ||
			!index_usable(known[i].oid, get_relname_relid(known[i].table, f->nsp), known[i].def))
			return false;
	}
	checked_generation = generation;
	return true;
}

/*
 * Begin a scan of rel through the index indexid, whose rows have columns
 * cols[i] equal to vals[i] (equality function eq[i]).  Text keys compare
 * in the column's collation, as the index does.
 */
static SysScanDesc
probe_index(Fast *f, Relation rel, Oid indexid, int nkeys, const char **cols, const Datum *vals,
			const Oid *eq)
{
	ScanKeyData keys[2];

	Assert(nkeys <= 2);
	for (int i = 0; i < nkeys; i++)
	{
		int			attno = col(rel, cols[i]);

		ScanKeyEntryInitialize(&keys[i], 0, attno, BTEqualStrategyNumber, InvalidOid,
							   TupleDescAttr(RelationGetDescr(rel), attno - 1)->attcollation,
							   eq[i], vals[i]);
	}
	return systable_beginscan(rel, indexid, true, f->snap, nkeys, keys);
}

/* ... through one of the known indexes, by name (checked by known_indexes) */
static SysScanDesc
probe(Fast *f, Relation rel, const char *index, int nkeys, const char **cols, const Datum *vals,
	  const Oid *eq)
{
	for (int i = 0; i < (int) lengthof(known); i++)
		if (strcmp(known[i].name, index) == 0)
			return probe_index(f, rel, known[i].oid, nkeys, cols, vals, eq);
	elog(ERROR, "tokex: no index %s is known to the fast path", index);
	return NULL;				/* not reached */
}

/* A column of a fetched row */
static Datum
get(Relation rel, HeapTuple tup, const char *name, bool *isnull)
{
	return heap_getattr(tup, col(rel, name), RelationGetDescr(rel), isnull);
}

static char *
get_text(Relation rel, HeapTuple tup, const char *name)
{
	bool		isnull;
	Datum		d = get(rel, tup, name, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

static bool
get_tstz(Relation rel, HeapTuple tup, const char *name, TimestampTz *out)
{
	bool		isnull;
	Datum		d = get(rel, tup, name, &isnull);

	if (!isnull)
		*out = DatumGetTimestampTz(d);
	return !isnull;
}

/* A text[] column as C strings; -1 when NULL or when it holds a NULL */
static int
get_texts(Relation rel, HeapTuple tup, const char *name, char ***out)
{
	bool		isnull;
	Datum		d = get(rel, tup, name, &isnull);
	int			n;

	if (isnull)
		return -1;
	n = untext_array(d, out);
	for (int i = 0; i < n; i++)
		if ((*out)[i] == NULL)
			return -1;
	return n;
}

static bool
has_item(char **items, int n, const char *s)
{
	for (int i = 0; i < n; i++)
		if (strcmp(items[i], s) == 0)
			return true;
	return false;
}

/* ---- the steps ------------------------------------------------------------ */

/*
 * An (iss, sub) pair to its identity, as tokex._resolve: tokex's own tokens
 * name the identity id, others map through identity.(issuer, subject).
 */
static bool
resolve(Fast *f, Relation ident, const char *iss, const char *sub, const char *own, Ident *out)
{
	SysScanDesc s;
	HeapTuple	tup;
	bool		found = false;

	if (iss == NULL || sub == NULL)
		return false;
	if (strcmp(iss, own) == 0)
	{
		const char *cols[] = {"id"};
		Datum		v[] = {CStringGetTextDatum(sub)};
		Oid			eq[] = {F_TEXTEQ};

		s = probe(f, ident, "identity_pkey", 1, cols, v, eq);
	}
	else
	{
		const char *cols[] = {"issuer", "subject"};
		Datum		v[] = {CStringGetTextDatum(iss), CStringGetTextDatum(sub)};
		Oid			eq[] = {F_TEXTEQ, F_TEXTEQ};

		s = probe(f, ident, "identity_issuer_subject_key", 2, cols, v, eq);
	}
	if ((tup = systable_getnext(s)) != NULL)
	{
		found = true;
		out->id = get_text(ident, tup, "id");
		out->kind = get_text(ident, tup, "kind");
		out->status = get_text(ident, tup, "status");
		out->tva_null = !get_tstz(ident, tup, "tokens_valid_after", &out->tva);
	}
	systable_endscan(s);
	return found;
}

/* Is there a row of rel whose column equals v (by index)? */
static bool
exists(Fast *f, Relation rel, const char *index, const char *column, Datum v, Oid eq)
{
	SysScanDesc s = probe(f, rel, index, 1, &column, &v, &eq);
	bool		found = systable_getnext(s) != NULL;

	systable_endscan(s);
	return found;
}

/* Was the API key with this SHA-256 revoked? */
static bool
api_key_revoked(Fast *f, Relation keys, bytea *sha)
{
	const char *column = "key_sha256";
	Datum		v = PointerGetDatum(sha);
	Oid			eq = F_BYTEAEQ;
	SysScanDesc s = probe(f, keys, "api_key_key_sha256_key", 1, &column, &v, &eq);
	HeapTuple	tup;
	bool		revoked = false;

	while ((tup = systable_getnext(s)) != NULL)
	{
		bool		isnull;

		get(keys, tup, "revoked_at", &isnull);
		revoked |= !isnull;
	}
	systable_endscan(s);
	return revoked;
}

/* An audit_event row of a token of ours, as the checks read it */
typedef struct AuditRow
{
	bool		granted;
	char	   *operation;
	bytea	   *hash[2];		/* actor_token_sha256, subject_token_sha256 (or NULL) */
	int			ndeleg;			/* -1: delegation_ids NULL */
	int64	   *deleg;
} AuditRow;

/* The rows of one table (audit_event, or one of its partitions) with this jti */
static int
audit_rows_in(Fast *f, Relation rel, Oid index, const pg_uuid_t *jti, AuditRow **out)
{
	const char *column = "jti";
	Datum		v = UUIDPGetDatum(jti);
	Oid			eq = F_UUID_EQ;
	SysScanDesc s = probe_index(f, rel, index, 1, &column, &v, &eq);
	HeapTuple	tup;
	int			n = 0;

	*out = NULL;
	while ((tup = systable_getnext(s)) != NULL)
	{
		AuditRow   *r;
		const char *hashes[] = {"actor_token_sha256", "subject_token_sha256"};
		bool		isnull;
		Datum		d;

		*out = *out ? repalloc(*out, sizeof(AuditRow) * (n + 1)) : palloc(sizeof(AuditRow));
		r = &(*out)[n++];
		r->granted = strcmp(get_text(rel, tup, "decision"), "granted") == 0;
		r->operation = get_text(rel, tup, "operation");
		for (int h = 0; h < 2; h++)
		{
			d = get(rel, tup, hashes[h], &isnull);
			r->hash[h] = isnull ? NULL : DatumGetByteaPCopy(d);
		}
		d = get(rel, tup, "delegation_ids", &isnull);
		r->ndeleg = -1;
		if (!isnull)
		{
			Datum	   *ids;
			bool	   *nulls;

			deconstruct_array(DatumGetArrayTypePCopy(d), INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
							  &ids, &nulls, &r->ndeleg);
			r->deleg = palloc(sizeof(int64) * (r->ndeleg ? r->ndeleg : 1));
			for (int i = 0; i < r->ndeleg; i++)
			{
				if (nulls[i])
				{
					systable_endscan(s);
					return -1;	/* not a delegation id: the query will say */
				}
				r->deleg[i] = DatumGetInt64(ids[i]);
			}
		}
	}
	systable_endscan(s);
	return n;
}

/*
 * The partitions of audit_event (indexes into pd) a row written before
 * now can be in, in the order to look: the one now falls in (or the
 * DEFAULT partition when none covers now), then the older ones, newest
 * first, then the DEFAULT partition, and last those made ahead for times
 * to come (a row is there only if written with an `at` ahead of the clock).
 * Newest first, as before, meant the three empty partitions made ahead
 * probed before the one of every token of ours.  A key other than one
 * timestamptz range: every partition, the last first.
 */
/* Append partition p (an index into the PartitionDesc) to order, once */
static void
add_partition(int *order, int *n, int p)
{
	for (int k = 0; k < *n; k++)
		if (order[k] == p)
			return;
	if (p >= 0)
		order[(*n)++] = p;
}

static int
partitions_by_age(Relation audit, PartitionDesc pd, TimestampTz now, int *order)
{
	PartitionKey key = RelationGetPartitionKey(audit);
	PartitionBoundInfo b = pd->boundinfo;
	int			n = 0;
	int			off = -1;		/* the last bound at or below now */

	if (key == NULL || key->strategy != PARTITION_STRATEGY_RANGE || key->partnatts != 1 ||
		key->parttypid[0] != TIMESTAMPTZOID || b == NULL || b->strategy != PARTITION_STRATEGY_RANGE ||
		b->nindexes != b->ndatums + 1)
	{
		for (int i = pd->nparts - 1; i >= 0; i--)
			order[n++] = i;
		return n;
	}
	for (int i = 0; i < b->ndatums; i++)
	{
		PartitionRangeDatumKind k = b->kind[i][0];

		if (k == PARTITION_RANGE_DATUM_MINVALUE ||
			(k == PARTITION_RANGE_DATUM_VALUE && DatumGetTimestampTz(b->datums[i][0]) <= now))
			off = i;
		else
			break;
	}
	/* the range holding now is the one above the last bound at or below it */
	add_partition(order, &n, b->indexes[off + 1]);
	/* the older ones: bound j is the upper end of partition indexes[j] */
	for (int j = off; j >= 0; j--)
		add_partition(order, &n, b->indexes[j]);
	add_partition(order, &n, b->default_index);
	/* those ahead, nearest first */
	for (int j = off + 2; j < b->nindexes; j++)
		add_partition(order, &n, b->indexes[j]);
	return n;
}

/*
 * The audit rows of the token with this jti (one, by construction): by the
 * table's jti index, or, partitioned by time, by each partition's
 * (<partition>_jti), in the order of partitions_by_age, until one has it.
 * -1: this path cannot read it (an index it does not know); the query will.
 */
static int
audit_rows(Fast *f, const pg_uuid_t *jti, AuditRow **out)
{
	Relation	audit = open_table(f, "audit_event");
	int			n = -1;

	*out = NULL;
	if (audit->rd_rel->relkind == RELKIND_RELATION)
	{
		Oid			index = get_relname_relid("audit_event_jti", f->nsp);

		if (OidIsValid(index) && index_usable(index, RelationGetRelid(audit), JTI_INDEX_DEF))
			n = audit_rows_in(f, audit, index, jti, out);
	}
	else if (audit->rd_rel->relkind == RELKIND_PARTITIONED_TABLE)
	{
		PartitionDesc pd = RelationGetPartitionDesc(audit, true);
		int		   *order = palloc(sizeof(int) * Max(pd->nparts, 1));
		int			norder = partitions_by_age(audit, pd, f->now, order);

		n = 0;
		for (int k = 0; n == 0 && k < norder; k++)
		{
			Relation	part = table_open(pd->oids[order[k]], AccessShareLock);
			Oid			index = get_relname_relid(psprintf("%s_jti", RelationGetRelationName(part)),
												  RelationGetNamespace(part));

			if (part->rd_rel->relkind != RELKIND_RELATION || !OidIsValid(index) ||
				!index_usable(index, RelationGetRelid(part), JTI_INDEX_DEF))
				n = -1;
			else
				n = audit_rows_in(f, part, index, jti, out);
			table_close(part, NoLock);
		}
	}
	table_close(audit, NoLock);
	return n;
}

/* Does the delegation with this id still stand at time at (not revoked, not expired)? */
static bool
delegation_stands(Fast *f, Relation del, int64 id, TimestampTz at, bool from_too)
{
	const char *column = "id";
	Datum		v = Int64GetDatum(id);
	Oid			eq = F_INT8EQ;
	SysScanDesc s = probe(f, del, "delegation_pkey", 1, &column, &v, &eq);
	HeapTuple	tup = systable_getnext(s);
	bool		ok = false;

	if (tup != NULL)
	{
		bool		isnull;
		TimestampTz from,
					until;

		get(del, tup, "revoked_at", &isnull);
		ok = isnull && (!from_too || (get_tstz(del, tup, "valid_from", &from) && from <= at)) &&
			(!get_tstz(del, tup, "valid_until", &until) || until > at);
	}
	systable_endscan(s);
	return ok;
}

/*
 * Is the session live at time at: not revoked, not expired, its delegation
 * standing?  *agent: its agent's identity id.
 */
static bool
session_live(Fast *f, const pg_uuid_t *sid, TimestampTz at, char **agent)
{
	Relation	sess = open_table(f, "session");
	const char *column = "id";
	Datum		v = UUIDPGetDatum(sid);
	Oid			eq = F_UUID_EQ;
	SysScanDesc s = probe(f, sess, "session_pkey", 1, &column, &v, &eq);
	HeapTuple	tup = systable_getnext(s);
	int64		delegation = 0;
	TimestampTz expires;
	bool		ok = false;

	if (tup != NULL)
	{
		bool		isnull;

		get(sess, tup, "revoked_at", &isnull);
		ok = isnull && get_tstz(sess, tup, "expires_at", &expires) && expires > at;
		delegation = DatumGetInt64(get(sess, tup, "delegation_id", &isnull));
		*agent = get_text(sess, tup, "agent");
	}
	systable_endscan(s);
	table_close(sess, NoLock);
	if (ok)
	{
		Relation	del = open_table(f, "delegation");

		ok = delegation_stands(f, del, delegation, at, true);
		table_close(del, NoLock);
	}
	return ok;
}

/*
 * The presented tokens: none revoked; each of tokex's own has its granted
 * audit row and was not obtained with an API key revoked since; the
 * session, if any, and the delegation it was started under are live.
 */
static bool
tokens_live(Fast *f, const FastIn *in)
{
	bool		ok = true;

	if (in->nrevkeys > 0)
	{
		Relation	rel = open_table(f, "revoked_token");

		for (int i = 0; ok && i < in->nrevkeys; i++)
			ok = !exists(f, rel, "revoked_token_pkey", "key", PointerGetDatum(in->revkeys[i]), F_BYTEAEQ);
		table_close(rel, NoLock);
	}
	if (ok && in->nown > 0)
	{
		Relation	keys = open_table(f, "api_key");

		for (int i = 0; ok && i < in->nown; i++)
		{
			AuditRow   *rows;
			int			n = audit_rows(f, &in->own[i], &rows);
			bool		granted = false;

			ok = n > 0;
			for (int r = 0; ok && r < n; r++)
			{
				granted |= rows[r].granted;
				for (int h = 0; ok && h < 2; h++)
					ok = rows[r].hash[h] == NULL || !api_key_revoked(f, keys, rows[r].hash[h]);
			}
			ok &= granted;
		}
		table_close(keys, NoLock);
	}
	if (ok && in->has_sid)
	{
		char	   *agent;

		ok = session_live(f, &in->sid, in->at, &agent);
	}
	return ok;
}

/* One resource row */
typedef struct Resource
{
	char	   *audience;
	char	   *resource_uri;
	int			nscopes;
	char	  **scopes;
	bool		ttl_null;
	Interval	ttl;
	char	   *token_format;
	bool		require_dpop;
} Resource;

static bool
read_resource(Fast *f, Relation rel, const char *index, const char *column, const char *value,
			  Resource *out)
{
	Datum		v = CStringGetTextDatum(value);
	Oid			eq = F_TEXTEQ;
	SysScanDesc s = probe(f, rel, index, 1, &column, &v, &eq);
	HeapTuple	tup = systable_getnext(s);

	if (tup != NULL)
	{
		bool		isnull;
		Datum		d;

		out->audience = get_text(rel, tup, "audience");
		out->resource_uri = get_text(rel, tup, "resource_uri");
		out->nscopes = get_texts(rel, tup, "scopes", &out->scopes);
		d = get(rel, tup, "token_ttl", &isnull);
		out->ttl_null = isnull;
		if (!isnull)
			out->ttl = *DatumGetIntervalP(d);
		out->token_format = get_text(rel, tup, "token_format");
		out->require_dpop = DatumGetBool(get(rel, tup, "require_dpop", &isnull)) && !isnull;
	}
	systable_endscan(s);
	return tup != NULL;
}

/*
 * The one resource the token is for: by audience, or by resource (its URI,
 * else an audience of that name).  Of two rows matching a resource, the
 * query's ORDER BY (resource_uri = resource) DESC puts a NULL resource_uri
 * first; so does this.
 */
static bool
target(Fast *f, const FastIn *in, Resource *out)
{
	Relation	rel = open_table(f, "resource");
	Resource	a,
				r,
				u;
	bool		has_a = false,
				has_r = false,
				ok = true;

	if (in->audience)
		ok = has_a = read_resource(f, rel, "resource_pkey", "audience", in->audience, &a);
	if (ok && in->resource)
	{
		bool		has_u = read_resource(f, rel, "resource_resource_uri_key", "resource_uri", in->resource, &u);
		bool		has_y = read_resource(f, rel, "resource_pkey", "audience", in->resource, &r);

		if (has_u && (!has_y || (r.resource_uri != NULL && strcmp(r.audience, u.audience) != 0)))
			r = u;
		ok = has_r = has_u || has_y;
	}
	table_close(rel, NoLock);
	if (!ok || (has_a && has_r && strcmp(a.audience, r.audience) != 0) || (!has_a && !has_r))
		return false;
	*out = has_a ? a : r;
	return out->nscopes >= 0;
}

/* One hop of the chain: the best live delegation from principal to delegate */
typedef struct Hop
{
	int64		id;
	int			nscopes;
	char	  **scopes;
} Hop;

static bool
hop(Fast *f, Relation rel, const FastIn *in, const char *principal, const char *delegate,
	int needed, const char *audience, Hop *out)
{
	const char *cols[] = {"principal", "delegate"};
	Datum		v[] = {CStringGetTextDatum(principal), CStringGetTextDatum(delegate)};
	Oid			eq[] = {F_TEXTEQ, F_TEXTEQ};
	SysScanDesc s = probe(f, rel, "delegation_edge", 2, cols, v, eq);
	HeapTuple	tup;
	bool		found = false;
	bool		best_deep = false,
				best_aud = false,
				best_null_aud = false;
	int			best_depth = 0;
	char	  **best_aud_list = NULL;
	int			best_naud = 0;

	while ((tup = systable_getnext(s)) != NULL)
	{
		bool		isnull;
		TimestampTz from,
					until;
		int64		id;
		int			depth;
		char	  **auds = NULL;
		int			naud;
		bool		deep,
					aud;

		get(rel, tup, "revoked_at", &isnull);
		if (!isnull || !get_tstz(rel, tup, "valid_from", &from) || from > in->at ||
			(get_tstz(rel, tup, "valid_until", &until) && until <= in->at))
			continue;
		id = DatumGetInt64(get(rel, tup, "id", &isnull));
		depth = DatumGetInt32(get(rel, tup, "max_depth", &isnull));
		get(rel, tup, "audiences", &isnull);
		naud = isnull ? 0 : get_texts(rel, tup, "audiences", &auds);
		if (naud < 0)
			continue;			/* cannot hold (CHECK); the query will say */
		deep = depth >= needed;
		aud = isnull || has_item(auds, naud, audience);
		/* ORDER BY deep DESC, aud DESC, id */
		if (found && (best_deep != deep ? best_deep : best_aud != aud ? best_aud : out->id < id))
			continue;
		found = true;
		out->id = id;
		best_deep = deep;
		best_aud = aud;
		best_depth = depth;
		best_null_aud = isnull;
		best_aud_list = auds;
		best_naud = naud;
		out->nscopes = get_texts(rel, tup, "scopes", &out->scopes);
	}
	systable_endscan(s);
	/* the best one must reach far enough and cover the audience */
	return found && out->nscopes >= 0 && best_depth >= needed &&
		(best_null_aud || has_item(best_aud_list, best_naud, audience));
}

/* One policy row that matches the exchange */
typedef struct Policy
{
	int64		id;
	bool		allow;
	int			nscopes;		/* -1: NULL (no bound) */
	char	  **scopes;
} Policy;

static FmgrInfo contains_fn;

/*
 * The policy rows that decide: found through the four disjoint indexes
 * (naming this subject; else this actor; else this audience; none of the
 * three), then filtered as policy_here and policy are in the query.
 */
static int
policies(Fast *f, const FastIn *in, const Ident *subject, const Ident *actor, const char *audience,
		 Policy **out)
{
	Relation	rel = open_table(f, "policy");
	int			n = 0,
				cap = 8;
	struct
	{
		const char *index;
		const char *column;
		const char *value;
	}			sets[] = {
		{"policy_by_subject", "subject", subject->id},
		{"policy_by_actor", "actor", actor ? actor->id : NULL},
		{"policy_by_audience", "audience", audience},
		{"policy_unbound", NULL, NULL},
	};

	if (contains_fn.fn_oid == InvalidOid)
		fmgr_info_cxt(F_RANGE_CONTAINS_ELEM, &contains_fn, TopMemoryContext);
	*out = palloc(sizeof(Policy) * cap);
	for (int i = 0; i < (int) lengthof(sets); i++)
	{
		SysScanDesc s;
		HeapTuple	tup;

		if (sets[i].column != NULL && sets[i].value == NULL)
			continue;
		if (sets[i].column != NULL)
		{
			Datum		v = CStringGetTextDatum(sets[i].value);
			Oid			eq = F_TEXTEQ;

			s = probe(f, rel, sets[i].index, 1, &sets[i].column, &v, &eq);
		}
		else
			s = probe(f, rel, sets[i].index, 0, NULL, NULL, NULL);
		while ((tup = systable_getnext(s)) != NULL)
		{
			char	   *p_subject = get_text(rel, tup, "subject");
			char	   *p_subject_kind = get_text(rel, tup, "subject_kind");
			char	   *p_actor = get_text(rel, tup, "actor");
			char	   *p_actor_kind = get_text(rel, tup, "actor_kind");
			char	   *p_client = get_text(rel, tup, "client_id");
			char	   *p_audience = get_text(rel, tup, "audience");
			bool		isnull;
			Datum		depth = get(rel, tup, "max_depth", &isnull);
			Datum		valid;
			Policy		p;

			/* which index found it must agree with the row (partial indexes) */
			if ((i == 0) != (p_subject != NULL) ||
				(i >= 1 && (i == 1) != (p_actor != NULL)) ||
				(i >= 2 && (i == 2) != (p_audience != NULL)))
				continue;
			if ((p_subject && strcmp(p_subject, subject->id) != 0) ||
				(p_subject_kind && strcmp(p_subject_kind, subject->kind) != 0) ||
				(p_actor && (!actor || strcmp(p_actor, actor->id) != 0)) ||
				(p_actor_kind && (!actor || strcmp(p_actor_kind, actor->kind) != 0)) ||
				(p_client && (!in->client_id || strcmp(p_client, in->client_id) != 0)) ||
				(!isnull && in->n - 1 > DatumGetInt32(depth)) ||
				(p_audience && strcmp(p_audience, audience) != 0))
				continue;
			valid = get(rel, tup, "valid", &isnull);
			if (!isnull && !DatumGetBool(FunctionCall2Coll(&contains_fn, InvalidOid, valid,
														   TimestampTzGetDatum(in->at))))
				continue;
			p.id = DatumGetInt64(get(rel, tup, "id", &isnull));
			p.allow = strcmp(get_text(rel, tup, "effect"), "allow") == 0;
			get(rel, tup, "scopes", &isnull);
			p.nscopes = isnull ? -1 : get_texts(rel, tup, "scopes", &p.scopes);
			if (!isnull && p.nscopes < 0)
				continue;		/* cannot hold (CHECK) */
			if (n == cap)
				*out = repalloc(*out, sizeof(Policy) * (cap *= 2));
			(*out)[n++] = p;
		}
		systable_endscan(s);
	}
	table_close(rel, NoLock);
	return n;
}

static int
cmp_text(const void *a, const void *b)
{
	const char *x = *(char *const *) a;
	const char *y = *(char *const *) b;

	return varstr_cmp(x, strlen(x), y, strlen(y), DEFAULT_COLLATION_OID);
}

static int
cmp_int64(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return x < y ? -1 : x > y;
}

/* ORDER BY s in the database's collation; distinct: duplicates dropped */
static int
sort_texts(char **items, int n, bool distinct)
{
	int			m = 0;

	qsort(items, n, sizeof(char *), cmp_text);
	for (int i = 0; i < n; i++)
		if (!distinct || m == 0 || strcmp(items[m - 1], items[i]) != 0)
			items[m++] = items[i];
	return m;
}

/* floor(EXTRACT(epoch FROM ttl))::int8, as the query computes it */
static int64
ttl_seconds(Interval *ttl)
{
	Datum		epoch = DirectFunctionCall2(extract_interval, CStringGetTextDatum("epoch"),
										   IntervalPGetDatum(ttl));

	return DatumGetInt64(DirectFunctionCall1(numeric_int8, DirectFunctionCall1(numeric_floor, epoch)));
}

/*
 * The decision, when it is a grant: true and *out filled.  false: the query
 * must decide (a refusal, or a case this path does not take).
 */
static bool
fast_decide(const FastIn *in, FastOut *out)
{
	Fast		f;
	Ident		chain[MAX_CHAIN];
	Resource	r;
	Hop			hops[MAX_CHAIN];
	Policy	   *pol;
	int			npol;
	bool		allow_any = false,
				allow_all = false;
	char	  **bound;
	int			nbound = 0;
	bool		ok = true;

	if (in->n < 1 || in->n > MAX_CHAIN || in->own_issuer == NULL)
		return false;
	f.nsp = get_namespace_oid("tokex", false);
	if (!known_indexes(&f))
		return false;
	f.snap = RegisterSnapshot(GetLatestSnapshot());
	f.now = GetCurrentTimestamp();

	/* the chain: known, active identities, tokens newer than their revocation, no repeats */
	{
		Relation	ident = open_table(&f, "identity");

		for (int i = 0; ok && i < in->n; i++)
		{
			ok = resolve(&f, ident, in->iss[i], in->sub[i], in->own_issuer, &chain[i]) &&
				strcmp(chain[i].status, "active") == 0 &&
				(chain[i].tva_null || in->iat_null[i] || in->iat[i] >= chain[i].tva);
			for (int j = 0; ok && j < i; j++)
				ok = strcmp(chain[i].id, chain[j].id) != 0;
		}
		out->may_id = NULL;
		if (ok && in->nmay > 0)
		{
			Ident		m;

			out->may_id = palloc(sizeof(char *) * in->nmay);
			for (int i = 0; i < in->nmay; i++)
				out->may_id[i] = resolve(&f, ident, in->may_iss[i], in->may_sub[i], in->own_issuer, &m) ? m.id : NULL;
		}
		table_close(ident, NoLock);
	}
	ok = ok && tokens_live(&f, in) && target(&f, in, &r);

	/* the client, when one is named: active, allowed token exchange and this audience */
	if (ok && in->client_id)
	{
		Relation	rel = open_table(&f, "client");
		Datum		v = CStringGetTextDatum(in->client_id);
		const char *column = "client_id";
		Oid			eq = F_TEXTEQ;
		SysScanDesc s = probe(&f, rel, "client_pkey", 1, &column, &v, &eq);
		HeapTuple	tup = systable_getnext(s);
		char	  **items;
		int			n;

		ok = tup != NULL && strcmp(get_text(rel, tup, "status"), "active") == 0;
		if (ok)
		{
			bool		isnull;

			n = get_texts(rel, tup, "grant_types", &items);
			ok = n >= 0 && has_item(items, n, TE_GRANT);
			get(rel, tup, "audiences", &isnull);
			if (ok && !isnull)
			{
				n = get_texts(rel, tup, "audiences", &items);
				ok = n >= 0 && has_item(items, n, r.audience);
			}
		}
		systable_endscan(s);
		table_close(rel, NoLock);
	}

	/* each hop: a live delegation reaching far enough and covering the audience */
	if (ok && in->n > 1)
	{
		Relation	rel = open_table(&f, "delegation");

		for (int i = 0; ok && i + 1 < in->n; i++)
			ok = hop(&f, rel, in, chain[i].id, chain[i + 1].id, in->n - (i + 1), r.audience, &hops[i]);
		table_close(rel, NoLock);
	}

	/* policy: no deny without scopes, at least one allow */
	if (ok)
	{
		npol = policies(&f, in, &chain[0], in->n > 1 ? &chain[in->n - 1] : NULL, r.audience, &pol);
		for (int i = 0; ok && i < npol; i++)
		{
			ok = pol[i].allow || pol[i].nscopes >= 0;
			allow_any |= pol[i].allow;
			allow_all |= pol[i].allow && pol[i].nscopes < 0;
		}
		ok = ok && allow_any;
	}
	UnregisterSnapshot(f.snap);
	if (!ok)
		return false;

	/*
	 * The scopes that survive every bound: the resource's, each hop's
	 * delegation, the subject token's, the allow policies', minus denied.
	 */
	bound = palloc(sizeof(char *) * (r.nscopes ? r.nscopes : 1));
	for (int i = 0; i < r.nscopes; i++)
	{
		const char *s = r.scopes[i];
		bool		keep = in->tscope_null || has_item(in->tscope, in->ntscope, s);

		for (int h = 0; keep && h + 1 < in->n; h++)
			keep = has_item(hops[h].scopes, hops[h].nscopes, s);
		if (keep && !allow_all)
		{
			keep = false;
			for (int p = 0; !keep && p < npol; p++)
				keep = pol[p].allow && has_item(pol[p].scopes, pol[p].nscopes, s);
		}
		for (int p = 0; keep && p < npol; p++)
			keep = pol[p].allow || !has_item(pol[p].scopes, pol[p].nscopes, s);
		if (keep)
			bound[nbound++] = r.scopes[i];
	}
	nbound = sort_texts(bound, nbound, false);
	if (in->req_null)
	{
		out->scope = bound;
		out->nscope = nbound;
	}
	else
	{
		out->scope = palloc(sizeof(char *) * (in->nreq ? in->nreq : 1));
		memcpy(out->scope, in->req, sizeof(char *) * in->nreq);
		out->nscope = sort_texts(out->scope, in->nreq, true);
		for (int i = 0; i < out->nscope; i++)
			if (!has_item(bound, nbound, out->scope[i]))
				return false;	/* scope not grantable */
	}
	if (out->nscope == 0)
		return false;			/* no scope can be granted */

	for (int i = 0; i < in->n; i++)
	{
		out->chain[i] = chain[i].id;
		out->kinds[i] = chain[i].kind;
	}
	out->ndeleg = in->n - 1;
	for (int i = 0; i + 1 < in->n; i++)
		out->deleg[i] = hops[i].id;
	out->npol = npol;
	out->pol = palloc(sizeof(int64) * (npol ? npol : 1));
	for (int i = 0; i < npol; i++)
		out->pol[i] = pol[i].id;
	qsort(out->pol, npol, sizeof(int64), cmp_int64);
	out->target = r.audience;
	out->ttl_null = r.ttl_null;
	out->ttl = r.ttl_null ? 0 : ttl_seconds(&r.ttl);
	out->token_format = r.token_format;
	out->require_dpop = r.require_dpop;
	return true;
}

static Datum
int8_array(int64 *items, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * (n ? n : 1));

	for (int i = 0; i < n; i++)
		d[i] = Int64GetDatum(items[i]);
	return PointerGetDatum(construct_array(d, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/*
 * decide(): the fast path for an issuance.  true: granted, its fields set
 * as decide() sets them from the query (in x->cxt); false: run the query.
 */
bool
decide_fast(Issuance *x)
{
	FastIn		in;
	FastOut		out;
	MemoryContext old;
	bool		granted;

	if (!tokex_fast_decide)
		return false;

	/*
	 * The query runs through SPI, which first makes the caller's own earlier
	 * changes of this statement visible (a CTE that revoked a delegation
	 * before the exchange in its select list); so must this.
	 */
	CommandCounterIncrement();
	old = MemoryContextSwitchTo(x->cxt);
	memset(&in, 0, sizeof(in));
	in.n = x->nchain;
	for (int i = 0; i < x->nchain && i < MAX_CHAIN; i++)
	{
		in.iss[i] = x->chain_iss[i];
		in.sub[i] = x->chain_sub[i];
		in.iat[i] = x->chain_iat[i];
	}
	in.audience = x->audience;
	in.resource = x->resource;
	in.req_null = x->scope == NULL;
	in.nreq = x->nrequested;
	in.req = x->requested;
	{
		json_t	   *s = json_object_get(x->subj->payload, "scope");

		in.tscope_null = s == NULL;
		in.tscope = palloc(sizeof(char *) * MAX_SCOPES);
		if (s != NULL && (!json_is_string(s) || !split_scope(json_string_value(s), in.tscope, &in.ntscope)))
			in.ntscope = 0;		/* malformed or empty: grants nothing */
	}
	in.client_id = x->client_id;
	in.own_issuer = tokex_issuer ? tokex_issuer : "";
	in.nrevkeys = x->nrevkeys;
	in.revkeys = x->revkeys;
	in.has_sid = x->has_sid;
	in.sid = x->sid;
	in.nown = x->nown;
	in.own = x->own_jti;
	in.nmay = x->nmay;
	in.may_iss = x->may_iss;
	in.may_sub = x->may_sub;
	in.at = x->at;

	granted = fast_decide(&in, &out);
	if (granted)
	{
		for (int i = 0; i < x->nchain; i++)
			x->chain_id[i] = out.chain[i];
		x->delegation_ids = int8_array(out.deleg, out.ndeleg);
		x->policy_ids = int8_array(out.pol, out.npol);
		x->target = out.target;
		x->token_format = out.token_format;
		x->require_dpop = out.require_dpop;
		x->nscope = out.nscope;
		x->scope_out = out.scope;
		if (!out.ttl_null)
			x->ttl = out.ttl;
		if (x->nmay > 0)
			x->may_id = out.may_id;
	}
	MemoryContextSwitchTo(old);
	return granted;
}

/* ---- tokex._decide_fast: the fast path from SQL, to compare with the query ---- */

static char **
arg_texts(FunctionCallInfo fcinfo, int arg, int *n, bool *isnull)
{
	char	  **items = NULL;

	*isnull = PG_ARGISNULL(arg);
	*n = *isnull ? 0 : untext_array(PG_GETARG_DATUM(arg), &items);
	return items;
}

PG_FUNCTION_INFO_V1(tokex_decide_fast_sql);

/*
 * tokex._decide_fast(<tokex._decide's arguments>): tokex._decide's row when
 * the fast path grants, no row when it leaves the decision to the query.
 */
Datum
tokex_decide_fast_sql(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	FastIn		in;
	FastOut		out;
	bool		isnull;
	int			n,
				m;
	char	  **sub;
	char	  **iss;

	InitMaterializedSRF(fcinfo, 0);
	memset(&in, 0, sizeof(in));
	iss = arg_texts(fcinfo, 0, &n, &isnull);
	sub = arg_texts(fcinfo, 1, &m, &isnull);
	if (n != m || PG_ARGISNULL(2) || PG_ARGISNULL(8) || PG_ARGISNULL(14) || n > MAX_CHAIN)
		return (Datum) 0;
	in.n = n;
	for (int i = 0; i < n; i++)
	{
		in.iss[i] = iss[i];
		in.sub[i] = sub[i];
		in.iat_null[i] = true;
	}
	{
		Datum	   *elems;
		bool	   *nulls;
		int			k;

		ArrayType  *a = PG_GETARG_ARRAYTYPE_P(2);
		int			lb = ARR_NDIM(a) == 1 ? ARR_LBOUND(a)[0] : 1;

		if (ARR_NDIM(a) > 1)
			return (Datum) 0;
		deconstruct_array(a, TIMESTAMPTZOID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &elems, &nulls, &k);
		/* chain_iat[n], as the query reads it, whatever the array's lower bound */
		for (int i = 0; i < n; i++)
		{
			int			e = i + 1 - lb;

			if (e >= 0 && e < k && !nulls[e])
			{
				in.iat_null[i] = false;
				in.iat[i] = DatumGetTimestampTz(elems[e]);
			}
		}
	}
	in.audience = PG_ARGISNULL(3) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(3));
	in.resource = PG_ARGISNULL(4) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(4));
	in.req = arg_texts(fcinfo, 5, &in.nreq, &in.req_null);
	in.tscope = arg_texts(fcinfo, 6, &in.ntscope, &in.tscope_null);
	for (int i = 0; i < in.nreq; i++)
		if (in.req[i] == NULL)
			return (Datum) 0;
	for (int i = 0; i < in.ntscope; i++)
		if (in.tscope[i] == NULL)
			return (Datum) 0;
	in.client_id = PG_ARGISNULL(7) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(7));
	in.own_issuer = text_to_cstring(PG_GETARG_TEXT_PP(8));
	if (!PG_ARGISNULL(9))
	{
		Datum	   *elems;
		bool	   *nulls;

		deconstruct_array(PG_GETARG_ARRAYTYPE_P(9), BYTEAOID, -1, false, TYPALIGN_INT,
						  &elems, &nulls, &in.nrevkeys);
		in.revkeys = palloc(sizeof(bytea *) * (in.nrevkeys ? in.nrevkeys : 1));
		for (int i = 0; i < in.nrevkeys; i++)
		{
			if (nulls[i])
				return (Datum) 0;
			in.revkeys[i] = DatumGetByteaPP(elems[i]);
		}
	}
	in.has_sid = !PG_ARGISNULL(10);
	if (in.has_sid)
		in.sid = *PG_GETARG_UUID_P(10);
	if (!PG_ARGISNULL(11))
	{
		Datum	   *elems;
		bool	   *nulls;

		deconstruct_array(PG_GETARG_ARRAYTYPE_P(11), UUIDOID, UUID_LEN, false, TYPALIGN_CHAR,
						  &elems, &nulls, &in.nown);
		in.own = palloc(sizeof(pg_uuid_t) * (in.nown ? in.nown : 1));
		for (int i = 0; i < in.nown; i++)
		{
			if (nulls[i])
				return (Datum) 0;
			in.own[i] = *DatumGetUUIDP(elems[i]);
		}
	}
	in.may_iss = arg_texts(fcinfo, 12, &in.nmay, &isnull);
	in.may_sub = arg_texts(fcinfo, 13, &m, &isnull);
	if (m != in.nmay)
		return (Datum) 0;
	in.at = PG_GETARG_TIMESTAMPTZ(14);

	if (fast_decide(&in, &out))
	{
		Datum		values[13];
		bool		nulls[13] = {false};

		nulls[0] = nulls[1] = nulls[2] = true;	/* identity_error, error, reason */
		values[3] = text_array(out.chain, in.n);
		values[4] = text_array(out.kinds, in.n);
		values[5] = int8_array(out.deleg, out.ndeleg);
		values[6] = int8_array(out.pol, out.npol);
		values[7] = CStringGetTextDatum(out.target);
		values[8] = text_array(out.scope, out.nscope);
		values[9] = Int64GetDatum(out.ttl);
		nulls[9] = out.ttl_null;
		if (in.nmay > 0)
		{
			Datum	   *d = palloc(sizeof(Datum) * in.nmay);
			bool	   *dn = palloc(sizeof(bool) * in.nmay);
			int			dims[1] = {in.nmay};
			int			lbs[1] = {1};

			for (int i = 0; i < in.nmay; i++)
			{
				dn[i] = out.may_id[i] == NULL;
				d[i] = dn[i] ? (Datum) 0 : CStringGetTextDatum(out.may_id[i]);
			}
			values[10] = PointerGetDatum(construct_md_array(d, dn, 1, dims, lbs, TEXTOID, -1, false, TYPALIGN_INT));
		}
		else
			nulls[10] = true;
		values[11] = CStringGetTextDatum(out.token_format);
		values[12] = BoolGetDatum(out.require_dpop);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* ---- introspection: is a token that verified still live? ------------------ */

/* tokex._token_active's parameters */
typedef struct ActiveIn
{
	int			n;
	char	   *iss[MAX_CHAIN];
	char	   *sub[MAX_CHAIN];
	bool		iat_null;
	TimestampTz iat;
	char	   *own_issuer;
	bool		own;
	bytea	   *revoked_key;	/* or NULL */
	bool		has_jti;
	pg_uuid_t	jti;
	bool		has_sid;
	pg_uuid_t	sid;
	TimestampTz at;
} ActiveIn;

/*
 * tokex._token_active, when the answer is yes: true.  false: the query
 * must answer (no, or a case this path does not take).
 */
static bool
active_fast(const ActiveIn *in)
{
	Fast		f;
	bool		ok = true;
	char	   *seen[MAX_CHAIN];

	if (in->n < 1 || in->n > MAX_CHAIN || in->own_issuer == NULL || (in->own && !in->has_jti))
		return false;
	f.nsp = get_namespace_oid("tokex", false);
	if (!known_indexes(&f))
		return false;
	f.snap = RegisterSnapshot(GetLatestSnapshot());
	f.now = GetCurrentTimestamp();

	if (in->revoked_key)
	{
		Relation	rel = open_table(&f, "revoked_token");

		ok = !exists(&f, rel, "revoked_token_pkey", "key", PointerGetDatum(in->revoked_key), F_BYTEAEQ);
		table_close(rel, NoLock);
	}

	/*
	 * A token of ours: its audit row granted, by an operation that issues
	 * access tokens, not with an API key revoked since, every delegation it
	 * records still standing.
	 */
	if (ok && in->own)
	{
		Relation	keys = open_table(&f, "api_key");
		Relation	del = open_table(&f, "delegation");
		AuditRow   *rows;
		int			n = audit_rows(&f, &in->jti, &rows);
		bool		issued = false;

		ok = n >= 0;
		for (int r = 0; ok && r < n; r++)
		{
			bool		this_one = rows[r].granted &&
				(strcmp(rows[r].operation, "exchange") == 0 ||
				 strcmp(rows[r].operation, "client_credentials") == 0 ||
				 strcmp(rows[r].operation, "jwt_sign") == 0);

			for (int h = 0; this_one && h < 2; h++)
				this_one = rows[r].hash[h] == NULL || !api_key_revoked(&f, keys, rows[r].hash[h]);
			issued |= this_one;
			for (int i = 0; ok && i < rows[r].ndeleg; i++)
				ok = delegation_stands(&f, del, rows[r].deleg[i], in->at, false);
		}
		ok = ok && (!in->own || issued);
		table_close(del, NoLock);
		table_close(keys, NoLock);
	}

	/*
	 * The chain: known identities (tokex's own tokens), active, the token
	 * issued after any tokens_valid_after, no identity twice.
	 */
	if (ok)
	{
		Relation	ident = open_table(&f, "identity");

		for (int i = 0; ok && i < in->n; i++)
		{
			Ident		id;

			if (in->iss[i] == NULL || in->sub[i] == NULL)
				ok = false;
			else if (resolve(&f, ident, in->iss[i], in->sub[i], in->own_issuer, &id))
			{
				ok = strcmp(id.status, "active") == 0 &&
					(id.tva_null || in->iat_null || in->iat >= id.tva);
				seen[i] = id.id;
			}
			else
			{
				ok = !in->own;
				seen[i] = in->sub[i];
			}
			for (int j = 0; ok && j < i; j++)
				ok = strcmp(seen[i], seen[j]) != 0;
		}
		table_close(ident, NoLock);
	}

	/* its session: live, under a live delegation, its agent active */
	if (ok && in->has_sid)
	{
		char	   *agent = NULL;

		ok = session_live(&f, &in->sid, in->at, &agent);
		if (ok)
		{
			Relation	ident = open_table(&f, "identity");
			const char *icol = "id";
			Datum		iv = CStringGetTextDatum(agent);
			Oid			ieq = F_TEXTEQ;
			SysScanDesc is = probe(&f, ident, "identity_pkey", 1, &icol, &iv, &ieq);
			HeapTuple	it = systable_getnext(is);

			ok = it != NULL && strcmp(get_text(ident, it, "status"), "active") == 0;
			systable_endscan(is);
			table_close(ident, NoLock);
		}
	}
	UnregisterSnapshot(f.snap);
	return ok;
}

/* introspect.c: the fast path for a token that verified */
bool
token_active_fast(Issuance *x)
{
	ActiveIn	in;

	if (!tokex_fast_decide)
		return false;
	memset(&in, 0, sizeof(in));
	in.n = x->nchain;
	for (int i = 0; i < x->nchain && i < MAX_CHAIN; i++)
	{
		in.iss[i] = x->chain_iss[i];
		in.sub[i] = x->chain_sub[i];
	}
	in.iat = x->chain_iat[0];
	in.own_issuer = tokex_issuer ? tokex_issuer : "";
	in.own = x->subj->own;
	in.revoked_key = x->nrevkeys > 0 ? x->revkeys[0] : NULL;
	in.has_jti = x->nown > 0;
	if (in.has_jti)
		in.jti = x->own_jti[0];
	in.has_sid = x->has_sid;
	if (in.has_sid)
		in.sid = x->sid;
	in.at = x->at;
	return active_fast(&in);
}

PG_FUNCTION_INFO_V1(tokex_token_active_fast_sql);

/*
 * tokex._token_active_fast(<tokex._token_active's arguments>): true when the
 * fast path finds the token live, false when it leaves the answer to the
 * query.
 */
Datum
tokex_token_active_fast_sql(PG_FUNCTION_ARGS)
{
	ActiveIn	in;
	bool		isnull;
	int			m;
	char	  **iss;
	char	  **sub;

	memset(&in, 0, sizeof(in));
	iss = arg_texts(fcinfo, 0, &in.n, &isnull);
	sub = arg_texts(fcinfo, 1, &m, &isnull);
	if (m != in.n || in.n > MAX_CHAIN || PG_ARGISNULL(3) || PG_ARGISNULL(4) || PG_ARGISNULL(8))
		PG_RETURN_BOOL(false);
	for (int i = 0; i < in.n; i++)
	{
		in.iss[i] = iss[i];
		in.sub[i] = sub[i];
	}
	in.iat_null = PG_ARGISNULL(2);
	if (!in.iat_null)
		in.iat = PG_GETARG_TIMESTAMPTZ(2);
	in.own_issuer = text_to_cstring(PG_GETARG_TEXT_PP(3));
	in.own = PG_GETARG_BOOL(4);
	in.revoked_key = PG_ARGISNULL(5) ? NULL : PG_GETARG_BYTEA_PP(5);
	in.has_jti = !PG_ARGISNULL(6);
	if (in.has_jti)
		in.jti = *PG_GETARG_UUID_P(6);
	in.has_sid = !PG_ARGISNULL(7);
	if (in.has_sid)
		in.sid = *PG_GETARG_UUID_P(7);
	in.at = PG_GETARG_TIMESTAMPTZ(8);
	PG_RETURN_BOOL(active_fast(&in));
}
