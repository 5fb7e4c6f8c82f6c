/*
 * seal.c — the audit trail proves itself: a hash per row, sealed blocks
 * (an RFC 9162 Merkle root over their rows, linked to the previous block and
 * signed with the audit key), and the background sealer.
 *
 * Per row, nothing is shared: a BEFORE INSERT trigger on audit_event and
 * token_use (in the audit writer for the rows it commits, in the inserting
 * backend otherwise) gives the row its place, seq, from tokex.audit_seq and
 * its row_hash, the RFC 9162 leaf hash SHA-256(0x00 || canonical row).  The
 * canonical row is the JSON text of its non-NULL columns but row_hash, keys
 * sorted, every value a string (see canon_value), with "@table" naming the
 * table: what RFC 8785 (JCS) gives for that object, so an outside verifier
 * rebuilds it from the exported row with a sorted JSON.stringify.
 *
 * Why a row can never land in a sealed range: the trigger takes the
 * transaction's xid before it takes seq.  The sealer reads the sequence's
 * last value L, then the next xid N: every row with seq <= L belongs to a
 * transaction whose xid is below N.  Once no xid below N is running (a
 * snapshot's xmin reaches N), every such row has committed or never will, so
 * (last sealed seq, L] is closed for good.  The wait does not touch the
 * exchange: it only delays the sealer.
 */
#include "tokex.h"

#include <openssl/evp.h>

#include "access/transam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/partition.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/procarray.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"

#define SEAL_MAX_DBS		32
#define SEAL_START_MS		10000	/* a start not seen through by then is retried */
#define SEAL_RETRY_MS		10000	/* after a sealer failed, the next starts no sooner */
#define SEAL_WAIT_MS		2000	/* how long seal_audit waits for running writers */

int			tokex_audit_seal_interval = 5;
int			tokex_audit_retention = 0;
int			tokex_audit_partition_interval = 2;
int			tokex_audit_partition_ahead = 3;

static const struct config_enum_entry partition_intervals[] = {
	{"day", 0, false},
	{"week", 1, false},
	{"month", 2, false},
	{NULL, 0, false}
};

/* ---------------------------------------------------------------------
 * The canonical row and its hash
 * ---------------------------------------------------------------------
 */

/* A JSON string as RFC 8785 writes it: only '"', '\\' and controls escaped. */
static void
canon_string(StringInfo buf, const char *s)
{
	appendStringInfoChar(buf, '"');
	for (; *s; s++)
	{
		unsigned char c = (unsigned char) *s;

		switch (c)
		{
			case '"':
				appendStringInfoString(buf, "\\\"");
				break;
			case '\\':
				appendStringInfoString(buf, "\\\\");
				break;
			case '\b':
				appendStringInfoString(buf, "\\b");
				break;
			case '\f':
				appendStringInfoString(buf, "\\f");
				break;
			case '\n':
				appendStringInfoString(buf, "\\n");
				break;
			case '\r':
				appendStringInfoString(buf, "\\r");
				break;
			case '\t':
				appendStringInfoString(buf, "\\t");
				break;
			default:
				if (c < 0x20)
					appendStringInfo(buf, "\\u%04x", c);
				else
					appendStringInfoChar(buf, (char) c);
		}
	}
	appendStringInfoChar(buf, '"');
}

/* A timestamptz as text that depends on no setting: UTC, microseconds, Z. */
static void
canon_timestamptz(StringInfo buf, TimestampTz ts)
{
	struct pg_tm tm;
	fsec_t		fsec;

	if (TIMESTAMP_NOT_FINITE(ts) || timestamp2tm(ts, NULL, &tm, &fsec, NULL, NULL) != 0)
	{
		appendStringInfoString(buf, TIMESTAMP_IS_NOBEGIN(ts) ? "\"-infinity\"" : "\"infinity\"");
		return;
	}
	appendStringInfo(buf, "\"%04d-%02d-%02dT%02d:%02d:%02d.%06dZ\"",
					 tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int) fsec);
}

/*
 * How a row of one table is written, worked out once per backend and row
 * type (the catalog lookups cost more than the hash): its columns in name
 * order, each with its output function.  Checked against the descriptor at
 * every use, so an ALTER TABLE is followed.
 */
typedef enum CanonKind
{
	CANON_TIMESTAMPTZ,
	CANON_BYTEA,
	CANON_OUTPUT				/* the type's output text */
} CanonKind;

typedef struct CanonType
{
	CanonKind	kind;
	FmgrInfo	out;
} CanonType;

typedef struct CanonColumn
{
	NameData	name;
	int			attnum;
	Oid			type;
	bool		array;
	CanonType	value;			/* the element's, for an array */
	int16		elemlen;
	bool		elembyval;
	char		elemalign;
} CanonColumn;

typedef struct CanonPlan
{
	Oid			rowtype;
	int			natts;
	char	   *table;
	int			ncols;
	CanonColumn *cols;			/* in name order */
} CanonPlan;

#define CANON_PLANS 8
static CanonPlan canon_plans[CANON_PLANS];

static void
canon_type(CanonType *t, Oid type, MemoryContext cxt)
{
	Oid			out;
	bool		varlena;

	t->kind = type == TIMESTAMPTZOID ? CANON_TIMESTAMPTZ : type == BYTEAOID ? CANON_BYTEA : CANON_OUTPUT;
	getTypeOutputInfo(type, &out, &varlena);
	fmgr_info_cxt(out, &t->out, cxt);
}

static int
canon_column_cmp(const void *a, const void *b)
{
	return strcmp(NameStr(((const CanonColumn *) a)->name), NameStr(((const CanonColumn *) b)->name));
}

/* The name of the table a row belongs to: a partition's root table. */
static char *
canon_table(Oid relid)
{
	if (get_rel_relispartition(relid))
		relid = llast_oid(get_partition_ancestors(relid));
	return get_rel_name(relid);
}

static bool
canon_column_wanted(Form_pg_attribute att)
{
	return !att->attisdropped && strcmp(NameStr(att->attname), "row_hash") != 0;
}

/* Does the plan still describe rows of this descriptor? */
static bool
canon_plan_fits(const CanonPlan *p, TupleDesc desc)
{
	int			n = 0;

	if (p->rowtype != desc->tdtypeid || p->natts != desc->natts)
		return false;
	for (int i = 0; i < desc->natts; i++)
		n += canon_column_wanted(TupleDescAttr(desc, i)) ? 1 : 0;
	if (n != p->ncols)
		return false;
	for (int i = 0; i < p->ncols; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, p->cols[i].attnum - 1);

		if (!canon_column_wanted(att) || att->atttypid != p->cols[i].type ||
			strcmp(NameStr(att->attname), NameStr(p->cols[i].name)) != 0)
			return false;
	}
	return true;
}

/* The plan for rows of desc, a row of table relid. */
static const CanonPlan *
canon_plan(TupleDesc desc, Oid relid)
{
	static int	next = 0;
	CanonPlan  *p = NULL;
	MemoryContext cxt;

	for (int i = 0; i < CANON_PLANS; i++)
		if (canon_plans[i].rowtype == desc->tdtypeid && OidIsValid(desc->tdtypeid))
		{
			if (canon_plan_fits(&canon_plans[i], desc))
				return &canon_plans[i];
			p = &canon_plans[i];
			break;
		}
	if (p == NULL)
		p = &canon_plans[next++ % CANON_PLANS];
	if (p->cols)
		pfree(p->cols);
	if (p->table)
		pfree(p->table);
	memset(p, 0, sizeof(CanonPlan));

	cxt = TopMemoryContext;
	p->cols = MemoryContextAllocZero(cxt, sizeof(CanonColumn) * Max(desc->natts, 1));
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		CanonColumn *c = &p->cols[p->ncols];
		Oid			elem;

		if (!canon_column_wanted(att))
			continue;
		namestrcpy(&c->name, NameStr(att->attname));
		c->attnum = i + 1;
		c->type = att->atttypid;
		elem = get_element_type(att->atttypid);
		c->array = OidIsValid(elem);
		if (c->array)
			get_typlenbyvalalign(elem, &c->elemlen, &c->elembyval, &c->elemalign);
		canon_type(&c->value, c->array ? elem : att->atttypid, cxt);
		p->ncols++;
	}
	qsort(p->cols, p->ncols, sizeof(CanonColumn), canon_column_cmp);
	p->table = MemoryContextStrdup(cxt, canon_table(relid));
	p->natts = desc->natts;
	p->rowtype = desc->tdtypeid;	/* last: the plan is whole */
	return p;
}

/*
 * One value.  Every scalar is a JSON string, so that no number format or
 * precision (a bigint beyond 2^53 in JavaScript) can differ between
 * verifiers: timestamptz in UTC with microseconds, bytea as lowercase hex,
 * anything else as its type's output text (the types used today print the
 * same whatever the settings).
 */
static void
canon_scalar(StringInfo buf, const CanonType *t, Datum v)
{
	switch (t->kind)
	{
		case CANON_TIMESTAMPTZ:
			canon_timestamptz(buf, DatumGetTimestampTz(v));
			return;
		case CANON_BYTEA:
			{
				bytea	   *b = DatumGetByteaPP(v);
				size_t		n = VARSIZE_ANY_EXHDR(b);
				char	   *hex = palloc(2 * n + 1);

				hex[hex_encode(VARDATA_ANY(b), n, hex)] = '\0';
				canon_string(buf, hex);
				pfree(hex);
				return;
			}
		case CANON_OUTPUT:
			canon_string(buf, OutputFunctionCall((FmgrInfo *) &t->out, v));
			return;
	}
}

/* The canonical text of a row (see the file's banner): arrays as JSON arrays, NULL elements null. */
static void
canon_row(StringInfo buf, const CanonPlan *p, HeapTuple tup, TupleDesc desc)
{
	appendStringInfoString(buf, "{\"@table\":");
	canon_string(buf, p->table);
	for (int i = 0; i < p->ncols; i++)
	{
		const CanonColumn *c = &p->cols[i];
		bool		isnull;
		Datum		v = heap_getattr(tup, c->attnum, desc, &isnull);

		if (isnull)
			continue;
		appendStringInfoChar(buf, ',');
		canon_string(buf, NameStr(c->name));
		appendStringInfoChar(buf, ':');
		if (!c->array)
			canon_scalar(buf, &c->value, v);
		else
		{
			Datum	   *elems;
			bool	   *nulls;
			int			n;

			deconstruct_array(DatumGetArrayTypeP(v), ARR_ELEMTYPE(DatumGetArrayTypeP(v)),
							  c->elemlen, c->elembyval, c->elemalign, &elems, &nulls, &n);
			appendStringInfoChar(buf, '[');
			for (int k = 0; k < n; k++)
			{
				if (k)
					appendStringInfoChar(buf, ',');
				if (nulls[k])
					appendStringInfoString(buf, "null");
				else
					canon_scalar(buf, &c->value, elems[k]);
			}
			appendStringInfoChar(buf, ']');
		}
	}
	appendStringInfoChar(buf, '}');
}

static void
sha256_parts(const uint8 *a, size_t alen, const uint8 *b, size_t blen,
			 const uint8 *c, size_t clen, uint8 out[32])
{
	const EVP_MD *sha256 = tokex_sha256_md();	/* may raise: before the allocation */
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned int outlen = 32;

	if (md == NULL || EVP_DigestInit_ex(md, sha256, NULL) != 1 ||
		(alen && EVP_DigestUpdate(md, a, alen) != 1) ||
		(blen && EVP_DigestUpdate(md, b, blen) != 1) ||
		(clen && EVP_DigestUpdate(md, c, clen) != 1) ||
		EVP_DigestFinal_ex(md, out, &outlen) != 1)
	{
		EVP_MD_CTX_free(md);
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("SHA-256 failed")));
	}
	EVP_MD_CTX_free(md);
}

/* RFC 9162 §2.1.1: the leaf hash of a row's canonical text (freed). */
static bytea *
leaf_hash(StringInfo buf)
{
	static const uint8 leaf = 0x00;
	bytea	   *h = palloc(VARHDRSZ + 32);

	sha256_parts(&leaf, 1, (uint8 *) buf->data, buf->len, NULL, 0, (uint8 *) VARDATA(h));
	SET_VARSIZE(h, VARHDRSZ + 32);
	pfree(buf->data);
	return h;
}

/* A whole-row argument's canonical text, into buf. */
static void
record_canon(FunctionCallInfo fcinfo, StringInfo buf)
{
	HeapTupleHeader td = PG_GETARG_HEAPTUPLEHEADER(0);
	Oid			type = HeapTupleHeaderGetTypeId(td);
	Oid			relid = get_typ_typrelid(type);
	TupleDesc	desc;
	HeapTupleData tup;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("an audit row is a row of tokex.audit_event or tokex.token_use")));
	desc = lookup_rowtype_tupdesc(type, HeapTupleHeaderGetTypMod(td));
	tup.t_len = HeapTupleHeaderGetDatumLength(td);
	ItemPointerSetInvalid(&(tup.t_self));
	tup.t_tableOid = InvalidOid;
	tup.t_data = td;
	canon_row(buf, canon_plan(desc, relid), &tup, desc);
	ReleaseTupleDesc(desc);
}

/* tokex._audit_canonical(row): the text row_hash is the leaf hash of. */
PG_FUNCTION_INFO_V1(tokex_audit_canonical);
Datum
tokex_audit_canonical(PG_FUNCTION_ARGS)
{
	StringInfoData buf;

	initStringInfo(&buf);
	record_canon(fcinfo, &buf);
	PG_RETURN_TEXT_P(cstring_to_text_with_len(buf.data, buf.len));
}

/* tokex._audit_row_hash(row): the row's hash recomputed from its columns. */
PG_FUNCTION_INFO_V1(tokex_audit_row_hash);
Datum
tokex_audit_row_hash(PG_FUNCTION_ARGS)
{
	StringInfoData buf;

	initStringInfo(&buf);
	record_canon(fcinfo, &buf);
	PG_RETURN_BYTEA_P(leaf_hash(&buf));
}

static void poke_sealer(void);

/*
 * BEFORE INSERT FOR EACH ROW on audit_event and token_use: seq (unless the
 * row brings one, as a restore does) and row_hash.  The xid is taken first:
 * see the banner.
 */
PG_FUNCTION_INFO_V1(tokex_audit_row_trigger);
Datum
tokex_audit_row_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	Relation	rel;
	TupleDesc	desc;
	HeapTuple	tup;
	int			cols[2];
	Datum		values[1];
	bool		nulls[1] = {false};
	bool		fresh;
	StringInfoData buf;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(td->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(td->tg_event) || !TRIGGER_FIRED_BY_INSERT(td->tg_event))
		elog(ERROR, "tokex: _audit_row is a BEFORE INSERT FOR EACH ROW trigger");
	rel = td->tg_relation;
	desc = RelationGetDescr(rel);
	tup = td->tg_trigtuple;
	cols[0] = SPI_fnumber(desc, "seq");
	cols[1] = SPI_fnumber(desc, "row_hash");
	if (cols[0] <= 0 || cols[1] <= 0)
		elog(ERROR, "tokex: %s has no seq or row_hash column", RelationGetRelationName(rel));

	(void) GetTopTransactionId();
	fresh = heap_attisnull(tup, cols[0], desc);
	if (fresh)
	{
		Oid			seq = get_relname_relid("audit_seq", get_namespace_oid("tokex", false));

		if (!OidIsValid(seq))
			elog(ERROR, "tokex: sequence tokex.audit_seq is missing");
		values[0] = Int64GetDatum(nextval_internal(seq, false));
		tup = heap_modify_tuple_by_cols(tup, desc, 1, cols, values, nulls);
	}
	initStringInfo(&buf);
	canon_row(&buf, canon_plan(desc, RelationGetRelid(rel)), tup, desc);
	values[0] = PointerGetDatum(leaf_hash(&buf));
	tup = heap_modify_tuple_by_cols(tup, desc, 1, &cols[1], values, nulls);
	/*
	 * A row that brings its seq (a restore, a row moved) does not start the
	 * sealer: a restore's rows are sealed by the next new row's sealer, and
	 * no partition is made while pg_restore still loads DEFAULT partitions.
	 */
	if (fresh)
		poke_sealer();
	return PointerGetDatum(tup);
}

/* ---------------------------------------------------------------------
 * Merkle tree (RFC 9162 §2.1.1)
 * ---------------------------------------------------------------------
 */
static void
merkle(const uint8 *leaves, int n, uint8 out[32])
{
	static const uint8 node = 0x01;
	uint8		l[32],
				r[32];
	int			k = 1;

	if (n == 0)
	{
		sha256_parts(NULL, 0, NULL, 0, NULL, 0, out);
		return;
	}
	if (n == 1)
	{
		memcpy(out, leaves, 32);
		return;
	}
	while (k * 2 < n)			/* the largest power of two below n */
		k *= 2;
	merkle(leaves, k, l);
	merkle(leaves + 32 * k, n - k, r);
	sha256_parts(&node, 1, l, 32, r, 32, out);
}

/* tokex._merkle_root(leaf hashes in order): MTH over leaves already hashed. */
PG_FUNCTION_INFO_V1(tokex_merkle_root);
Datum
tokex_merkle_root(PG_FUNCTION_ARGS)
{
	ArrayType  *a = PG_GETARG_ARRAYTYPE_P(0);
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	uint8	   *leaves;
	bytea	   *out = palloc(VARHDRSZ + 32);

	deconstruct_array(a, BYTEAOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	leaves = palloc(32 * (Size) Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		bytea	   *b = nulls[i] ? NULL : DatumGetByteaPP(elems[i]);

		if (b == NULL || VARSIZE_ANY_EXHDR(b) != 32)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("a leaf hash is 32 bytes"),
					 errdetail("Leaf %d is %s.", i + 1, b ? "of another length" : "NULL")));
		memcpy(leaves + 32 * i, VARDATA_ANY(b), 32);
	}
	merkle(leaves, n, (uint8 *) VARDATA(out));
	SET_VARSIZE(out, VARHDRSZ + 32);
	PG_RETURN_BYTEA_P(out);
}

/* ---------------------------------------------------------------------
 * The audit key: signing a block header, verifying one
 * ---------------------------------------------------------------------
 */

/*
 * tokex._audit_sign(kid, header) -> jws: the header as the payload of a
 * compact JWS signed with the active audit key kid, read here so that the
 * private key never passes through SQL.
 */
PG_FUNCTION_INFO_V1(tokex_audit_sign);
Datum
tokex_audit_sign(PG_FUNCTION_ARGS)
{
	char	   *kid = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *header = text_to_cstring(PG_GETARG_TEXT_PP(1));
	MemoryContext cxt = CurrentMemoryContext;
	jose_key   *key;
	jose_error	err;
	bytea	   *der;
	char	   *alg;
	bool		isnull;
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1];

	args[0] = PG_GETARG_DATUM(0);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "tokex: SPI_connect failed");
	if (SPI_execute_with_args("SELECT alg, private_key FROM tokex.audit_key "
							  "WHERE kid OPERATOR(pg_catalog.=) $1 AND status OPERATOR(pg_catalog.=) 'active'",
							  1, argtypes, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "tokex: cannot read the audit key");
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("audit key \"%s\" is not the active audit key", kid)));
	alg = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	der = DatumGetByteaPP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	key = tokex_track_in(cxt, jose_key_from_der(jose_alg_from_name(alg), (uint8_t *) VARDATA_ANY(der),
												VARSIZE_ANY_EXHDR(der), &err),
						 0, tokex_release_key);
	SPI_finish();
	if (key == NULL || strcmp(key->kid, kid) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("audit key \"%s\" cannot be loaded", kid),
				 errdetail("%s", key ? "its kid is not its thumbprint" : err.detail)));
	PG_RETURN_TEXT_P(cstring_to_text(tokex_sign_text(key, header, strlen(header), "tokex-audit-block")));
}

/*
 * tokex._audit_jws_payload(jws, public_jwk): the payload of a compact JWS
 * whose signature that key verifies (and whose header names the key), else
 * NULL.  NULL too for anything that is not a JWS: a verifier reports, it
 * does not stop at the first bad block.
 */
PG_FUNCTION_INFO_V1(tokex_audit_jws_payload);
Datum
tokex_audit_jws_payload(PG_FUNCTION_ARGS)
{
	char	   *tok = text_to_cstring(PG_GETARG_TEXT_PP(0));
	json_t	   *jwk = tokex_jsonb_to_json(PG_GETARG_JSONB_P(1), "public_jwk");
	jose_error	err;
	jose_key   *key = tokex_track(jose_jwk_parse(jwk, JOSE_ALG_UNKNOWN, false, &err), 0, tokex_release_key);
	jose_jws	jws;
	text	   *payload = NULL;

	if (key == NULL)
		PG_RETURN_NULL();
	if (jose_jws_parse(tok, strlen(tok), &jws, &err) < 0)
		PG_RETURN_NULL();
	if (jws.kid != NULL && strcmp(jws.kid, key->kid) == 0 && jose_jws_verify(&jws, key, &err) == 0)
		payload = cstring_to_text_with_len((char *) jws.payload, jws.payload_len);
	jose_jws_clear(&jws);
	if (payload == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(payload);
}

/* tokex._audit_jws_parts(jws) -> (header, payload): unverified; NULLs if it is no JWS. */
PG_FUNCTION_INFO_V1(tokex_audit_jws_parts);
Datum
tokex_audit_jws_parts(PG_FUNCTION_ARGS)
{
	char	   *tok = text_to_cstring(PG_GETARG_TEXT_PP(0));
	jose_error	err;
	jose_jws	jws;
	TupleDesc	td;
	Datum		values[2] = {0, 0};
	bool		nulls[2] = {true, true};

	if (get_call_result_type(fcinfo, NULL, &td) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "tokex._audit_jws_parts must return a record");
	if (jose_jws_parse(tok, strlen(tok), &jws, &err) == 0)
	{
		char	   *h = json_dumps(jws.header, JSON_COMPACT);
		text	   *payload = cstring_to_text_with_len((char *) jws.payload, jws.payload_len);

		jose_jws_clear(&jws);
		values[0] = tokex_jsonb_in(tokex_adopt(h));
		values[1] = PointerGetDatum(payload);
		nulls[0] = nulls[1] = false;
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(td), values, nulls)));
}

/* ---------------------------------------------------------------------
 * Where it is safe to seal up to
 * ---------------------------------------------------------------------
 */

/*
 * tokex._audit_safe_seq(): the highest seq below which no row can still
 * commit (see the banner), or NULL when running transactions did not end
 * within SEAL_WAIT_MS.  Called from a transaction that has written
 * nothing: its own rows would be sealed before they commit.
 */
PG_FUNCTION_INFO_V1(tokex_audit_safe_seq);
Datum
tokex_audit_safe_seq(PG_FUNCTION_ARGS)
{
	Oid			seq = get_relname_relid("audit_seq", get_namespace_oid("tokex", false));
	int64		last;
	FullTransactionId next;
	TransactionId horizon;
	TimestampTz start = GetCurrentTimestamp();

	if (TransactionIdIsValid(GetTopTransactionIdIfAny()))
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("tokex.seal_audit() must run in a transaction that has written nothing"),
				 errdetail("Its own rows, not yet committed, would be sealed.")));
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("tokex.seal_audit() runs at READ COMMITTED"),
				 errdetail("A transaction snapshot taken earlier would not see every row it seals.")));
	if (!OidIsValid(seq))
		elog(ERROR, "tokex: sequence tokex.audit_seq is missing");

	/* the sequence's last value, as every backend sees it (not our session's) */
	{
		bool		isnull;

		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "tokex: SPI_connect failed");
		if (SPI_execute("SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END "
						"FROM tokex.audit_seq", true, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "tokex: cannot read tokex.audit_seq");
		last = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		SPI_finish();
	}
	next = ReadNextFullTransactionId();
	horizon = XidFromFullTransactionId(next);
	for (;;)
	{
		Snapshot	snap = GetLatestSnapshot();

		if (TransactionIdFollowsOrEquals(snap->xmin, horizon))
			PG_RETURN_INT64(last);
		if (TimestampDifferenceExceeds(start, GetCurrentTimestamp(), SEAL_WAIT_MS))
			PG_RETURN_NULL();
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 10, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/* ---------------------------------------------------------------------
 * The background sealer: one short-lived worker per database
 * ---------------------------------------------------------------------
 *
 * An inserted audit row (the trigger) starts this database's sealer when
 * none runs, or flags the running one (at most once a second per backend).
 * The sealer seals every tokex.audit_seal_interval while rows keep coming.
 * It leaves after SEAL_LINGER_MS in which nothing was sealed, nothing was
 * pending and nobody flagged it (so a row that came without a flag, within
 * a second of its backend's last one, is still seen), or as soon as no
 * client is connected to its database and nothing is pending (or three
 * rounds could seal nothing: a long transaction elsewhere holds the
 * horizon, and a later row starts it again), so that DROP DATABASE is not
 * kept waiting.
 */
#define SEAL_LINGER_MS		2000
#define SEAL_TICK_MS		250

typedef struct SealerSlot
{
	Oid			dboid;			/* InvalidOid: free */
	pid_t		pid;			/* 0 while starting */
	bool		flagged;		/* a row came since the last round began */
	TimestampTz since;
	bool		launched;		/* false: resting after a failure (pid 0) */
	TimestampTz retry_at;		/* resting: the next one's first round not before */
} SealerSlot;

typedef struct SealShmem
{
	LWLock	   *lock;
	SealerSlot	sealers[SEAL_MAX_DBS];
} SealShmem;

static SealShmem *seal_shmem = NULL;

PGDLLEXPORT void tokex_audit_sealer_main(Datum arg);

/* From the audit writer's shmem_request hook (audit.c): the sealers' share. */
void
tokex_seal_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(SealShmem)));
	RequestNamedLWLockTranche("tokex_seal", 1);
}

/* From the audit writer's shmem_startup hook, which holds AddinShmemInitLock. */
void
tokex_seal_shmem_startup(void)
{
	bool		found;

	seal_shmem = ShmemInitStruct("tokex audit sealer", sizeof(SealShmem), &found);
	if (!found)
	{
		memset(seal_shmem, 0, sizeof(SealShmem));
		seal_shmem->lock = &(GetNamedLWLockTranche("tokex_seal"))->lock;
	}
}

/* From _PG_init: the settings (the shared memory comes with the audit writer's). */
void
tokex_seal_init(void)
{
	DefineCustomIntVariable("tokex.audit_seal_interval",
							"Seconds between two seals of the audit trail by the background sealer.",
							"0 turns the background sealer off; tokex.seal_audit() still seals by hand.",
							&tokex_audit_seal_interval, 5, 0, 3600,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("tokex.audit_retention",
							"How long sealed audit rows are kept; 0 keeps them for ever.",
							"tokex.apply_audit_retention() drops older ones, whole blocks at a time; the background sealer runs it.",
							&tokex_audit_retention, 0, 0, INT_MAX,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomEnumVariable("tokex.audit_partition_interval",
							 "The time each partition of audit_event and token_use covers: day, week or month (UTC).",
							 "tokex.audit_partition_ahead() makes partitions of this size; existing ones stay as they are.",
							 &tokex_audit_partition_interval, 2, partition_intervals,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("tokex.audit_partition_ahead",
							"How many partitions of audit_event and token_use are made ahead of the current one.",
							"The background sealer makes them (tokex.audit_partition_ahead()) once a minute.",
							&tokex_audit_partition_ahead, 3, 1, 120,
							PGC_SUSET, 0, NULL, NULL, NULL);
}

/*
 * Start this database's sealer, or flag the running one.  Called for every
 * audit row, so it costs a clock read unless a second has passed; it never
 * raises: a sealer that cannot start now starts at a later row, and
 * seal_audit() can always be called by hand.
 */
static void launch_sealer(int index);

static void
poke_sealer(void)
{
	static TimestampTz last = 0;
	TimestampTz now;
	SealerSlot *s = NULL;
	int			index = -1;

	if (seal_shmem == NULL || tokex_audit_seal_interval <= 0 || IsBinaryUpgrade)
		return;
	now = GetCurrentTimestamp();

	LWLockAcquire(seal_shmem->lock, LW_EXCLUSIVE);
	for (int i = 0; i < SEAL_MAX_DBS; i++)
		if (seal_shmem->sealers[i].dboid == MyDatabaseId)
			s = &seal_shmem->sealers[i];
	if (s && s->pid == 0 && !s->launched)
	{
		/*
		 * Resting: the last sealer stopped on an error (logged).  The next
		 * starts now and waits until retry_at before its first round, so
		 * this row is sealed without waiting for another one; rows meanwhile
		 * only flag it.  (Started by every row, a sealer that failed every
		 * round once forked hundreds of processes a second.)
		 */
		s->launched = true;
		s->since = now;
		s->flagged = true;
		index = s - seal_shmem->sealers;
		LWLockRelease(seal_shmem->lock);
		launch_sealer(index);
		return;
	}
	if (s && s->pid == 0 && TimestampDifferenceExceeds(s->since, now, SEAL_START_MS))
		s->dboid = InvalidOid, s = NULL;	/* a start that never came through */
	/*
	 * A running sealer is flagged at most once a second per backend; when
	 * none runs (it may have left a moment ago), one is started whatever the
	 * last flag, or this row could wait for the next one to be sealed.
	 */
	if (s && last != 0 && !TimestampDifferenceExceeds(last, now, 1000))
	{
		LWLockRelease(seal_shmem->lock);
		return;
	}
	last = now;
	if (s)
		s->flagged = true;
	else
		for (int i = 0; i < SEAL_MAX_DBS; i++)
			if (seal_shmem->sealers[i].dboid == InvalidOid ||
				(seal_shmem->sealers[i].pid == 0 && !seal_shmem->sealers[i].launched &&
				 now >= seal_shmem->sealers[i].retry_at))	/* another database's, rested */
			{
				s = &seal_shmem->sealers[i];
				s->dboid = MyDatabaseId;
				s->pid = 0;
				s->flagged = true;
				s->since = now;
				s->retry_at = 0;
				s->launched = true;
				index = i;
				break;
			}
	LWLockRelease(seal_shmem->lock);
	if (index >= 0)
		launch_sealer(index);
}

/* Register the sealer of slot index (this database); on failure free the slot */
static void
launch_sealer(int index)
{
	BackgroundWorker w;

	memset(&w, 0, sizeof(w));
	w.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	w.bgw_start_time = BgWorkerStart_RecoveryFinished;
	w.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(w.bgw_library_name, BGW_MAXLEN, "tokex");
	snprintf(w.bgw_function_name, BGW_MAXLEN, "tokex_audit_sealer_main");
	snprintf(w.bgw_name, BGW_MAXLEN, "tokex audit sealer for database %u", MyDatabaseId);
	snprintf(w.bgw_type, BGW_MAXLEN, "tokex audit sealer");
	w.bgw_main_arg = Int32GetDatum(index);
	memcpy(w.bgw_extra, &MyDatabaseId, sizeof(Oid));
	w.bgw_notify_pid = 0;
	if (!RegisterDynamicBackgroundWorker(&w, NULL))
	{
		LWLockAcquire(seal_shmem->lock, LW_EXCLUSIVE);
		if (seal_shmem->sealers[index].dboid == MyDatabaseId && seal_shmem->sealers[index].pid == 0)
			seal_shmem->sealers[index].dboid = InvalidOid;
		LWLockRelease(seal_shmem->lock);
	}
}

static int	sealer_index = -1;
static bool sealer_failed = false;	/* set while it runs: see sealer_exit */

static void
sealer_exit(int code, Datum arg)
{
	if (seal_shmem == NULL || sealer_index < 0)
		return;
	LWLockAcquire(seal_shmem->lock, LW_EXCLUSIVE);
	if (seal_shmem->sealers[sealer_index].pid == MyProcPid)
	{
		SealerSlot *s = &seal_shmem->sealers[sealer_index];

		s->pid = 0;
		if (sealer_failed)
		{
			s->launched = false;
			s->retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), SEAL_RETRY_MS);
		}
		else
			s->dboid = InvalidOid;
	}
	LWLockRelease(seal_shmem->lock);
}

typedef struct SealRound
{
	bool		sealed;			/* a block was made */
	bool		pending;		/* rows are left unsealed */
} SealRound;

static void
seal_round_xact(void *arg)
{
	SealRound  *r = (SealRound *) arg;
	bool		isnull;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "tokex: SPI_connect failed");
	/* only where this library's version of tokex is installed */
	if (SPI_execute("SELECT 1 FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'tokex' "
					"AND extversion OPERATOR(pg_catalog.=) '" TOKEX_VERSION "'", false, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		static TimestampTz retained = 0;
		static TimestampTz partitioned = 0;

		if (TimestampDifferenceExceeds(partitioned, GetCurrentTimestamp(), 60000))
		{
			/* partitions ahead of time, in a transaction of its own like the retention's */
			partitioned = GetCurrentTimestamp();
			if (SPI_execute("SELECT tokex.audit_partition_ahead()", false, 1) != SPI_OK_SELECT)
				elog(ERROR, "tokex: audit_partition_ahead failed");
			SPI_finish();
			PopActiveSnapshot();
			CommitTransactionCommand();
			StartTransactionCommand();
			PushActiveSnapshot(GetTransactionSnapshot());
			if (SPI_connect() != SPI_OK_CONNECT)
				elog(ERROR, "tokex: SPI_connect failed");
		}
		if (tokex_audit_retention > 0 &&
			TimestampDifferenceExceeds(retained, GetCurrentTimestamp(), 60000))
		{
			/* in a transaction of its own: sealing needs one that has written nothing */
			retained = GetCurrentTimestamp();
			if (SPI_execute("SELECT tokex.apply_audit_retention()", false, 1) != SPI_OK_SELECT)
				elog(ERROR, "tokex: apply_audit_retention failed");
			SPI_finish();
			PopActiveSnapshot();
			CommitTransactionCommand();
			StartTransactionCommand();
			tokex_worker_hold_extension();
			PushActiveSnapshot(GetTransactionSnapshot());
			if (SPI_connect() != SPI_OK_CONNECT)
				elog(ERROR, "tokex: SPI_connect failed");
		}
		/* seal_audit's statements each take a fresh snapshot */
		if (SPI_execute("SELECT tokex.seal_audit() IS NOT NULL", false, 1) != SPI_OK_SELECT)
			elog(ERROR, "tokex: seal_audit failed");
		r->sealed = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		if (SPI_execute("SELECT COALESCE((SELECT pg_catalog.max(b.to_seq) FROM tokex.audit_block b), 0) "
						"OPERATOR(pg_catalog.<) (SELECT CASE WHEN is_called THEN last_value ELSE 0 END "
						"FROM tokex.audit_seq)", false, 1) != SPI_OK_SELECT)
			elog(ERROR, "tokex: cannot read the sealed range");
		r->pending = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	SPI_finish();
}

/*
 * One round: seal what is safe.  Returns false on error (logged, not
 * raised: the worker then stops, and a later row starts it again); sets
 * whether a block was made and whether rows are left unsealed.
 */
static bool
seal_round(bool *sealed, bool *pending)
{
	SealRound	r = {false, false};
	char		why[256];
	bool		ok;

	LWLockAcquire(seal_shmem->lock, LW_EXCLUSIVE);
	seal_shmem->sealers[sealer_index].flagged = false;
	LWLockRelease(seal_shmem->lock);
	ok = tokex_worker_xact("tokex audit seal", seal_round_xact, &r, why, sizeof(why));
	if (!ok)
		ereport(WARNING, (errmsg("tokex audit sealer: %s", why)));
	*sealed = r.sealed;
	*pending = r.pending;
	return ok;
}

/* Leave unless a row flagged us since the last round began. */
static bool
sealer_leave(void)
{
	bool		leave;

	LWLockAcquire(seal_shmem->lock, LW_EXCLUSIVE);
	leave = !seal_shmem->sealers[sealer_index].flagged;
	if (leave)
	{
		seal_shmem->sealers[sealer_index].dboid = InvalidOid;
		seal_shmem->sealers[sealer_index].pid = 0;
	}
	LWLockRelease(seal_shmem->lock);
	return leave;
}

void
tokex_audit_sealer_main(Datum arg)
{
	Oid			db;
	int			stuck = 0;
	TimestampTz idle_since = 0;
	TimestampTz next = 0;
	TimestampTz not_before;
	TimestampTz nobody_since = 0;

	sealer_index = DatumGetInt32(arg);
	memcpy(&db, MyBgworkerEntry->bgw_extra, sizeof(Oid));
	pqsignal(SIGTERM, die);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();

	LWLockAcquire(seal_shmem->lock, LW_EXCLUSIVE);
	if (seal_shmem->sealers[sealer_index].dboid != db || seal_shmem->sealers[sealer_index].pid != 0)
	{
		LWLockRelease(seal_shmem->lock);
		proc_exit(0);
	}
	seal_shmem->sealers[sealer_index].pid = MyProcPid;
	not_before = seal_shmem->sealers[sealer_index].retry_at;
	seal_shmem->sealers[sealer_index].retry_at = 0;
	LWLockRelease(seal_shmem->lock);
	before_shmem_exit(sealer_exit, (Datum) 0);
	/* until it leaves of its own accord, whatever ends it counts as a failure */
	sealer_failed = true;

	BackgroundWorkerInitializeConnectionByOid(db, InvalidOid, 0);
	pgstat_report_appname("tokex audit sealer");
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
	/*
	 * Never wait long for a lock: the next round comes soon.  Less than
	 * deadlock_timeout (1 s by default), so that when the sealer's locks
	 * cross another's (a DROP EXTENSION locks a partition before its parent,
	 * a read of the parent the other way round), the sealer gives way
	 * rather than the other being cancelled as the deadlock's victim.
	 */
	SetConfigOption("lock_timeout", "500ms", PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * ... and be the one a deadlock aborts: a DROP EXTENSION (or other DDL)
	 * that locked one table the sealer reads and waits for another it holds
	 * would otherwise, after its own deadlock_timeout, fail instead.
	 */
	SetConfigOption("deadlock_timeout", "50ms", PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * After a failed sealer, the first round waits out its rest, unless for
	 * two seconds no client was connected and no row came (a row's flag
	 * comes at most once a second from each process that writes rows, the
	 * audit writer too): then a round now, and leaving after it, does not
	 * keep DROP DATABASE waiting its five seconds.  (Not at the first moment
	 * nobody is: clients that connect for each call would then start a
	 * failing round each.)
	 */
	while (GetCurrentTimestamp() < not_before)
	{
		bool		rows;

		/* a row since the last look (clients that come and go between looks write rows) */
		LWLockAcquire(seal_shmem->lock, LW_EXCLUSIVE);
		rows = seal_shmem->sealers[sealer_index].flagged;
		seal_shmem->sealers[sealer_index].flagged = false;
		LWLockRelease(seal_shmem->lock);
		if (rows || CountDBConnections(db) > 0)
			nobody_since = 0;
		else if (nobody_since == 0)
			nobody_since = GetCurrentTimestamp();
		else if (TimestampDifferenceExceeds(nobody_since, GetCurrentTimestamp(), 2000))
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 SEAL_TICK_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	for (;;)
	{
		TimestampTz now = GetCurrentTimestamp();
		bool		nobody = CountDBConnections(db) == 0;

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (tokex_audit_seal_interval <= 0)
		{
			sealer_failed = false;
			break;
		}
		if (nobody || now >= next)
		{
			bool		sealed,
						pending;

			if (!seal_round(&sealed, &pending))
				break;			/* sealer_failed stays: the next waits SEAL_RETRY_MS */
			next = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
											   pending ? tokex_audit_seal_interval * 1000 : SEAL_TICK_MS);
			stuck = (pending && !sealed) ? stuck + 1 : 0;
			if (sealed || pending)
				idle_since = 0;
			else if (idle_since == 0)
				idle_since = GetCurrentTimestamp();
			if ((nobody && (!pending || stuck >= 3)) ||
				(idle_since != 0 && TimestampDifferenceExceeds(idle_since, GetCurrentTimestamp(), SEAL_LINGER_MS)))
			{
				if (sealer_leave())
					break;
				idle_since = 0;
				stuck = 0;
			}
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 SEAL_TICK_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	proc_exit(0);
}

/* ---------------------------------------------------------------------
 * Retention
 * ---------------------------------------------------------------------
 */
static bool pruning = false;

/* tokex._audit_pruning(): is _audit_prune deleting (the append-only trigger lets it) */
PG_FUNCTION_INFO_V1(tokex_audit_pruning);
Datum
tokex_audit_pruning(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(pruning);
}

/*
 * tokex._audit_prune(through_seq): delete the rows with seq <= through_seq
 * (uses before the exchanges they refer to).  Only apply_audit_retention
 * calls it, after sealing the block that records the cut; granted to no one.
 */
PG_FUNCTION_INFO_V1(tokex_audit_prune);
Datum
tokex_audit_prune(PG_FUNCTION_ARGS)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1];
	uint64		n = 0;

	args[0] = PG_GETARG_DATUM(0);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "tokex: SPI_connect failed");
	pruning = true;
	PG_TRY();
	{
		if (SPI_execute_with_args("DELETE FROM tokex.token_use WHERE seq OPERATOR(pg_catalog.<=) $1",
								  1, argtypes, args, NULL, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "tokex: cannot prune token_use");
		n += SPI_processed;
		if (SPI_execute_with_args("DELETE FROM tokex.audit_event WHERE seq OPERATOR(pg_catalog.<=) $1",
								  1, argtypes, args, NULL, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "tokex: cannot prune audit_event");
		n += SPI_processed;
	}
	PG_FINALLY();
	{
		pruning = false;
	}
	PG_END_TRY();
	SPI_finish();
	PG_RETURN_INT64((int64) n);
}

/* tokex._audit_retention(): the setting, as the library holds it (never a placeholder) */
PG_FUNCTION_INFO_V1(tokex_audit_retention_setting);
Datum
tokex_audit_retention_setting(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(tokex_audit_retention);
}
