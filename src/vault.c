/*
 * vault.c — the credential vault (vault.h): storing a downstream credential
 * (tokex.store_credential), releasing it (vault_release, for the exchange),
 * and rotating the key-encryption key (tokex.vault_rewrap).
 *
 * Envelope encryption.  Each credential has its own random 256-bit data key;
 * the secret is sealed with AES-256-GCM under the data key, and the data key
 * is sealed (wrapped) with AES-256-GCM under the key-encryption key (KEK).
 * Both seals take the row's identity (id, audience, principal, kind, header)
 * as associated data, so a ciphertext or wrapped key copied onto another row,
 * or a row whose audience or principal was changed, does not authenticate:
 * nothing can be moved to another person or downstream.  Each row names its
 * KEK by a keyed fingerprint (kek_id = HMAC-SHA256(KEK, label), 16 bytes),
 * which tells a replaced key file (a clear error, the rows intact) from an
 * altered row, and tells rotation which rows are still under the previous
 * key.  A sealed value is: version (1) || nonce (12) || ciphertext || tag (16).
 *
 * The KEK never passes through SQL.  It is read from the file that
 * tokex.vault_key_file names (and, during a rotation, the previous one from
 * tokex.vault_previous_key_file) at each use: a few system calls, little
 * beside the exchange around it, and no cache that could outlive a replaced
 * or repaired file.  Or it is printed by tokex.vault_key_command, run once
 * at server start (run_key_command).  The file is checked as PostgreSQL checks ssl_key_file
 * (owned by the server's user or root, no group or world access).  Errors
 * name the setting; the path goes to the server log only, the key nowhere.
 *
 * The secret is in no error message, and every error raised while storing
 * one hides the calling statement (and its context) from the server log,
 * since that statement's text holds the secret.
 */
#include "tokex.h"
#include "issue.h"
#include "vault.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#define KEK_LEN			32
#define KEK_ID_LEN		16
#define SEAL_VERSION	1
#define NONCE_LEN		12
#define TAG_LEN			16
#define SEAL_OVERHEAD	(1 + NONCE_LEN + TAG_LEN)
#define MAX_SECRET		8192
#define MAX_HEADER		256

static char *vault_key_file = NULL;
static char *vault_previous_key_file = NULL;
static char *vault_key_command = NULL;

#define CURRENT_SETTING		"tokex.vault_key_file"
#define PREVIOUS_SETTING	"tokex.vault_previous_key_file"
#define COMMAND_SETTING		"tokex.vault_key_command"

typedef struct Kek
{
	uint8		key[KEK_LEN];
	uint8		id[KEK_ID_LEN];
} Kek;

/* the key tokex.vault_key_command gave at server start, or why there is none */
static Kek	command_key;
static bool command_key_ok = false;
static char command_problem[256] = "";

static void run_key_command(void);

void
tokex_vault_init(void)
{
	DefineCustomStringVariable(CURRENT_SETTING,
							   "File holding the credential vault's key-encryption key.",
							   "32 random bytes as 64 hexadecimal characters (openssl rand -hex 32), owned by "
							   "the server's user with mode 0600; a relative path is relative to the data directory.",
							   &vault_key_file, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomStringVariable(PREVIOUS_SETTING,
							   "File holding the credential vault's previous key-encryption key, during a rotation.",
							   "Credentials still wrapped under it are released until tokex.vault_rewrap() has "
							   "wrapped them under the key of tokex.vault_key_file.",
							   &vault_previous_key_file, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	/* read at server start only, so it exists only when tokex is preloaded */
	if (process_shared_preload_libraries_in_progress)
	{
		DefineCustomStringVariable(COMMAND_SETTING,
								   "Command that prints the credential vault's key-encryption key, run at server start.",
								   "Instead of tokex.vault_key_file: its output is what a key file holds (64 hexadecimal "
								   "characters); it runs once, as the server's user, when tokex is in shared_preload_libraries.",
								   &vault_key_command, "", PGC_POSTMASTER, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
		if (vault_key_command && vault_key_command[0])
			run_key_command();
	}
}

/* ---------------- the key-encryption key ---------------- */

static const char key_file_hint[] =
	"Create the file with \"openssl rand -hex 32 > FILE\", owned by the server's operating system "
	"user with mode 0600, name it in %s in postgresql.conf and reload the configuration "
	"(or, with tokex in shared_preload_libraries, name a command that prints the key in "
	"tokex.vault_key_command and restart).";

/*
 * The key in buf (a key file's content or the key command's output): 64
 * hexadecimal characters, then nothing, "\n" or "\r\n"; with its
 * fingerprint.  false when buf holds no key.
 */
static bool
kek_parse(const char *buf, ssize_t n, Kek *k)
{
	static const char label[] = "tokex vault key-encryption key id";
	char		hexkey[2 * KEK_LEN + 1];
	size_t		len = 0;
	bool		ok;
	uint8		mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;

	if (!(n == 2 * KEK_LEN || (n == 2 * KEK_LEN + 1 && buf[2 * KEK_LEN] == '\n') ||
		  (n == 2 * KEK_LEN + 2 && buf[2 * KEK_LEN] == '\r' && buf[2 * KEK_LEN + 1] == '\n')))
		return false;
	memcpy(hexkey, buf, 2 * KEK_LEN);
	hexkey[2 * KEK_LEN] = '\0';
	ok = OPENSSL_hexstr2buf_ex(k->key, KEK_LEN, &len, hexkey, '\0') == 1 && len == KEK_LEN;
	ERR_clear_error();
	explicit_bzero(hexkey, sizeof(hexkey));
	if (!ok)
		return false;
	if (HMAC(EVP_sha256(), k->key, KEK_LEN, (const uint8 *) label, sizeof(label) - 1, mac, &maclen) == NULL ||
		maclen < KEK_ID_LEN)
		return false;
	memcpy(k->id, mac, KEK_ID_LEN);
	return true;
}

/*
 * The key in the file that setting names (path), with its fingerprint.
 * false when path is empty and the key is not required.  Every problem is
 * an ERROR naming the setting.
 */
static bool
kek_load(const char *setting, const char *path, bool required, Kek *k)
{
	char		buf[2 * KEK_LEN + 3];
	struct stat st;
	int			fd;
	ssize_t		n;
	int			save_errno;
	bool		ok;

	if (path == NULL || path[0] == '\0')
	{
		if (!required)
			return false;
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the credential vault has no key: %s is not set", setting),
				 errdetail("Credentials are stored and released only under a key-encryption key read from a file."),
				 errhint(key_file_hint, setting)));
	}
	fd = OpenTransientFile(path, O_RDONLY | PG_BINARY);
	if (fd < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open the key file named by %s: %m", setting),
				 errdetail_log("The file is \"%s\".", path),
				 errhint(key_file_hint, setting)));
	if (fstat(fd, &st) < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not stat the key file named by %s: %m", setting),
				 errdetail_log("The file is \"%s\".", path)));
	if (!S_ISREG(st.st_mode))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("the key file named by %s is not a regular file", setting),
				 errdetail_log("The file is \"%s\".", path)));

	/* as PostgreSQL checks ssl_key_file (be-secure-common.c) */
#if !defined(WIN32) && !defined(__CYGWIN__)
	if (st.st_uid != geteuid() && st.st_uid != 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("the key file named by %s must be owned by the database user or root", setting),
				 errdetail_log("The file is \"%s\".", path)));
	if ((st.st_uid == geteuid() && (st.st_mode & (S_IRWXG | S_IRWXO))) ||
		(st.st_uid == 0 && (st.st_mode & (S_IWGRP | S_IXGRP | S_IRWXO))))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("the key file named by %s has group or world access", setting),
				 errdetail("It must have permissions u=rw (0600) or less if owned by the database user, "
						   "or permissions u=rw,g=r (0640) or less if owned by root."),
				 errdetail_log("The file is \"%s\".", path)));
#endif

	n = read(fd, buf, sizeof(buf));
	save_errno = errno;
	CloseTransientFile(fd);
	if (n < 0)
	{
		errno = save_errno;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read the key file named by %s: %m", setting),
				 errdetail_log("The file is \"%s\".", path)));
	}
	ok = kek_parse(buf, n, k);
	explicit_bzero(buf, sizeof(buf));
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("the key file named by %s does not hold a key", setting),
				 errdetail("It must hold 32 random bytes as 64 hexadecimal characters "
						   "(openssl rand -hex 32), optionally followed by a newline."),
				 errdetail_log("The file is \"%s\".", path)));
	return true;
}

/*
 * tokex.vault_key_command: run once, when the server starts with tokex in
 * shared_preload_libraries (like pgsodium's getkey script), so that a key
 * fetched from a key manager need never lie in a file.  Its output is the
 * key as a key file holds it; the server's processes inherit it.  A command
 * that fails leaves the vault without a key (and says why in the log and
 * at each use) rather than keeping the server from starting.
 */
static void
run_key_command(void)
{
	char		buf[2 * KEK_LEN + 3];
	char		rest[256];
	size_t		n;
	size_t		more = 0;
	size_t		m;
	int			rc;
	FILE	   *f;

	fflush(NULL);
	f = popen(vault_key_command, "r");
	if (f == NULL)
	{
		snprintf(command_problem, sizeof(command_problem), "It could not be run: %s.", strerror(errno));
		return;
	}
	n = fread(buf, 1, sizeof(buf), f);
	while ((m = fread(rest, 1, sizeof(rest), f)) > 0)	/* never leave it blocked on a full pipe */
		more += m;
	explicit_bzero(rest, sizeof(rest));
	rc = pclose(f);
	if (rc != 0)
		snprintf(command_problem, sizeof(command_problem), "It failed: %s.", wait_result_to_str(rc));
	else if (more > 0 || !kek_parse(buf, n, &command_key))
		snprintf(command_problem, sizeof(command_problem),
				 "Its output is not 64 hexadecimal characters (32 random bytes), optionally followed by a newline.");
	else
		command_key_ok = true;
	explicit_bzero(buf, sizeof(buf));
	if (!command_key_ok)
		ereport(WARNING,
				(errmsg("the credential vault has no key: %s gave none", COMMAND_SETTING),
				 errdetail("%s", command_problem)));
}

/*
 * The current key: tokex.vault_key_command's (read at server start) or the
 * key file's.  Returns the setting it came from.
 */
static const char *
kek_current(Kek *k)
{
	if (vault_key_command == NULL || vault_key_command[0] == '\0')
	{
		kek_load(CURRENT_SETTING, vault_key_file, true, k);
		return CURRENT_SETTING;
	}
	if (vault_key_file && vault_key_file[0])
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("both %s and %s are set", CURRENT_SETTING, COMMAND_SETTING),
				 errhint("The current key-encryption key comes from one of them: empty the other "
						 "(during a rotation the old key is named by %s).", PREVIOUS_SETTING)));
	if (!command_key_ok)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the credential vault has no key: %s gave none at server start", COMMAND_SETTING),
				 errdetail("%s", command_problem),
				 errhint("Fix the command and restart the server.")));
	*k = command_key;
	return COMMAND_SETTING;
}

static bool
kek_configured(void)
{
	return (vault_key_file && vault_key_file[0]) || (vault_key_command && vault_key_command[0]);
}

static bool
kek_is(const Kek *k, bytea *id)
{
	return VARSIZE_ANY_EXHDR(id) == KEK_ID_LEN && memcmp(VARDATA_ANY(id), k->id, KEK_ID_LEN) == 0;
}

static bytea *
to_bytea(const uint8 *p, int len)
{
	bytea	   *b = palloc(VARHDRSZ + len);

	SET_VARSIZE(b, VARHDRSZ + len);
	memcpy(VARDATA(b), p, len);
	return b;
}

static char *
hex(const uint8 *p, int len)
{
	char	   *s = palloc(2 * len + 1);

	for (int i = 0; i < len; i++)
		snprintf(s + 2 * i, 3, "%02x", p[i]);
	return s;
}

/* ---------------- sealing ---------------- */

/*
 * What a row's seals are bound to: a label, what is sealed ('k' the data
 * key, 's' the secret), the id, then audience, principal, kind and header,
 * each as absent (0) or present (1) with a 32-bit big-endian length.
 */
static StringInfo
row_ad(char what, int64 id, const char *audience, const char *principal,
	   const char *kind, const char *header)
{
	static const char label[] = "tokex vault v1";
	const char *fields[4] = {audience, principal, kind, header};
	StringInfo	ad = makeStringInfo();
	uint8		b[8];

	appendBinaryStringInfo(ad, label, sizeof(label));	/* with its NUL */
	appendBinaryStringInfo(ad, &what, 1);
	for (int i = 0; i < 8; i++)
		b[i] = (uint8) ((uint64) id >> (56 - 8 * i));
	appendBinaryStringInfo(ad, (const char *) b, 8);
	for (int f = 0; f < 4; f++)
	{
		uint32		len = fields[f] ? strlen(fields[f]) : 0;

		b[0] = fields[f] != NULL;
		b[1] = len >> 24;
		b[2] = len >> 16;
		b[3] = len >> 8;
		b[4] = len;
		appendBinaryStringInfo(ad, (const char *) b, fields[f] ? 5 : 1);
		if (fields[f])
			appendBinaryStringInfo(ad, fields[f], len);
	}
	return ad;
}

static bytea *
seal(const uint8 *key, const uint8 *plain, int len, StringInfo ad)
{
	bytea	   *out = palloc(VARHDRSZ + SEAL_OVERHEAD + len);
	uint8	   *p = (uint8 *) VARDATA(out);
	uint8	   *ct = p + 1 + NONCE_LEN;
	EVP_CIPHER_CTX *ctx;
	int			n = 0;
	int			m = 0;
	bool		ok;

	SET_VARSIZE(out, VARHDRSZ + SEAL_OVERHEAD + len);
	p[0] = SEAL_VERSION;
	if (!pg_strong_random(p + 1, NONCE_LEN))
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("no random bytes for a nonce")));
	ctx = EVP_CIPHER_CTX_new();
	ok = ctx != NULL &&
		EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, p + 1) == 1 &&
		EVP_EncryptUpdate(ctx, NULL, &n, (const uint8 *) ad->data, ad->len) == 1 &&
		EVP_EncryptUpdate(ctx, ct, &n, plain, len) == 1 &&
		EVP_EncryptFinal_ex(ctx, ct + n, &m) == 1 && n + m == len &&
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, ct + len) == 1;
	EVP_CIPHER_CTX_free(ctx);
	if (!ok)
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("AES-256-GCM encryption failed")));
	return out;
}

/* The plaintext of a seal (palloc'd, NUL-terminated), or NULL when it does not authenticate. */
static uint8 *
unseal(const uint8 *key, bytea *sealed, StringInfo ad, int *len)
{
	const uint8 *p = (const uint8 *) VARDATA_ANY(sealed);
	int			clen = (int) VARSIZE_ANY_EXHDR(sealed) - SEAL_OVERHEAD;
	const uint8 *ct = p + 1 + NONCE_LEN;
	uint8	   *out;
	EVP_CIPHER_CTX *ctx;
	int			n = 0;
	int			m = 0;
	bool		ok;

	if (clen < 0 || p[0] != SEAL_VERSION)
		return NULL;
	out = palloc(clen + 1);
	ctx = EVP_CIPHER_CTX_new();
	ok = ctx != NULL &&
		EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, p + 1) == 1 &&
		EVP_DecryptUpdate(ctx, NULL, &n, (const uint8 *) ad->data, ad->len) == 1 &&
		EVP_DecryptUpdate(ctx, out, &n, ct, clen) == 1 &&
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, unconstify(uint8 *, ct + clen)) == 1 &&
		EVP_DecryptFinal_ex(ctx, out + n, &m) == 1 && n + m == clen;
	EVP_CIPHER_CTX_free(ctx);
	if (!ok)
	{
		explicit_bzero(out, clen + 1);
		pfree(out);
		return NULL;
	}
	out[clen] = '\0';
	*len = clen;
	return out;
}

/* ---------------- rows ---------------- */

typedef struct VaultRow
{
	int64		id;
	char	   *audience;
	char	   *principal;
	char	   *kind;
	char	   *header;
	bytea	   *kek_id;
	bytea	   *wrapped_key;
	bytea	   *ciphertext;		/* NULL when not read */
} VaultRow;

#define ROW_COLUMNS "id, audience, principal, kind, header, kek_id, wrapped_key"

static bytea *
row_bytea(HeapTuple tup, TupleDesc td, const char *column)
{
	bool		isnull;
	Datum		d = tokex_row_datum(tup, td, column, &isnull);

	return isnull ? NULL : DatumGetByteaPP(d);
}

/* One row of tokex.credential (td: its own result's, which later SPI calls do not replace). */
static void
read_row(HeapTuple tup, TupleDesc td, VaultRow *r)
{
	bool		isnull;

	r->id = DatumGetInt64(tokex_row_datum(tup, td, "id", &isnull));
	r->audience = tokex_row_text(tup, td, "audience");
	r->principal = tokex_row_text(tup, td, "principal");
	r->kind = tokex_row_text(tup, td, "kind");
	r->header = tokex_row_text(tup, td, "header");
	r->kek_id = row_bytea(tup, td, "kek_id");
	r->wrapped_key = row_bytea(tup, td, "wrapped_key");
	r->ciphertext = SPI_fnumber(td, "ciphertext") > 0 ? row_bytea(tup, td, "ciphertext") : NULL;
}

static void
damaged(const VaultRow *r)
{
	ereport(ERROR,
			(errcode(ERRCODE_DATA_CORRUPTED),
			 errmsg("credential " INT64_FORMAT " cannot be decrypted", r->id),
			 errdetail("Its sealed data key or secret does not authenticate under its key-encryption key: "
					   "it was altered, or copied from another row."),
			 errhint("Store the credential again with tokex.store_credential.")));
}

/* The row's data key, unwrapped with kek (whose id the row names) into dk; false if it does not authenticate. */
static bool
unwrap(const VaultRow *r, const Kek *kek, uint8 *dk)
{
	int			len = 0;
	uint8	   *key = unseal(kek->key, r->wrapped_key,
							 row_ad('k', r->id, r->audience, r->principal, r->kind, r->header), &len);

	if (key == NULL)
		return false;
	if (len != KEK_LEN)
	{
		explicit_bzero(key, len);
		return false;
	}
	memcpy(dk, key, KEK_LEN);
	explicit_bzero(key, KEK_LEN);
	pfree(key);
	return true;
}

static bytea *
wrap(const VaultRow *r, const Kek *kek, const uint8 *dk)
{
	return seal(kek->key, dk, KEK_LEN, row_ad('k', r->id, r->audience, r->principal, r->kind, r->header));
}

/* ---------------- release ---------------- */

#define RELEASE_QUERY \
	"SELECT " ROW_COLUMNS ", ciphertext FROM tokex.credential" \
	" WHERE audience OPERATOR(pg_catalog.=) $1" \
	"   AND (principal OPERATOR(pg_catalog.=) $2 OR principal IS NULL)" \
	"   AND revoked_at IS NULL" \
	"   AND (expires_at IS NULL OR expires_at OPERATOR(pg_catalog.>) pg_catalog.clock_timestamp())" \
	" ORDER BY principal IS NULL, id DESC LIMIT 1"

bool
vault_release(const char *audience, const char *principal, int64 *id,
			  char **secret, char **kind, char **header)
{
	static SPIPlanPtr plan = NULL;
	MemoryContext caller = CurrentMemoryContext;
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2];
	char		nulls[2] = {' ', principal ? ' ' : 'n'};
	VaultRow	r;
	Kek			current;
	Kek			previous;
	const Kek  *kek;
	const char *source;
	uint8		dk[KEK_LEN];
	uint8	   *plain;
	int			len = 0;

	/* without a key nothing is released, whether or not a row matches */
	source = kek_current(&current);

	if (plan == NULL)
	{
		SPIPlanPtr	p = tokex_prepare(RELEASE_QUERY, 2, types);

		if (p == NULL || SPI_keepplan(p) != 0)
			elog(ERROR, "tokex: cannot prepare the vault query: %s", SPI_result_code_string(SPI_result));
		plan = p;
	}
	values[0] = CStringGetTextDatum(audience);
	values[1] = principal ? CStringGetTextDatum(principal) : (Datum) 0;
	if (execute_now(plan, values, nulls, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "tokex: cannot read tokex.credential");
	if (SPI_processed == 0)
	{
		explicit_bzero(&current, sizeof(current));
		MemoryContextSwitchTo(caller);	/* SPI left us in its own */
		return false;
	}
	read_row(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, &r);

	if (kek_is(&current, r.kek_id))
		kek = &current;
	else if (kek_load(PREVIOUS_SETTING, vault_previous_key_file, false, &previous) &&
			 kek_is(&previous, r.kek_id))
		kek = &previous;
	else
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("credential " INT64_FORMAT " is encrypted under a key-encryption key the server does not have", r.id),
				 errdetail("The credential names key %s; the key of %s is %s%s.",
						   hex((uint8 *) VARDATA_ANY(r.kek_id), VARSIZE_ANY_EXHDR(r.kek_id)),
						   source, hex(current.id, KEK_ID_LEN),
						   vault_previous_key_file && vault_previous_key_file[0]
						   ? psprintf(", the key of %s is %s", PREVIOUS_SETTING, hex(previous.id, KEK_ID_LEN))
						   : ", " PREVIOUS_SETTING " is not set"),
				 errhint("The key was replaced: configure the key the credential was stored under again, "
						 "as the current key or, during a rotation, in %s.  Nothing was lost.", PREVIOUS_SETTING)));

	if (!unwrap(&r, kek, dk))
		damaged(&r);
	plain = unseal(dk, r.ciphertext, row_ad('s', r.id, r.audience, r.principal, r.kind, r.header), &len);
	explicit_bzero(dk, sizeof(dk));
	explicit_bzero(&current, sizeof(current));
	explicit_bzero(&previous, sizeof(previous));
	if (plain == NULL)
		damaged(&r);

	*id = r.id;
	*secret = MemoryContextStrdup(caller, (char *) plain);
	explicit_bzero(plain, len);
	*kind = MemoryContextStrdup(caller, r.kind);
	*header = r.header ? MemoryContextStrdup(caller, r.header) : NULL;
	MemoryContextSwitchTo(caller);
	return true;
}

void
vault_presentation(const char *kind, const char *header, const char *secret,
				   char **name, char **value)
{
	if (strcmp(kind, "basic") == 0)
	{
		int			len = strlen(secret);
		char	   *b64 = palloc(4 * ((len + 2) / 3) + 1);

		EVP_EncodeBlock((unsigned char *) b64, (const unsigned char *) secret, len);
		*value = psprintf("Basic %s", b64);
		explicit_bzero(b64, strlen(b64));
	}
	else if (strcmp(kind, "bearer") == 0)
		*value = psprintf("Bearer %s", secret);
	else if (strcmp(kind, "api_key") == 0)
		*value = pstrdup(secret);
	else
		elog(ERROR, "tokex: unknown credential kind \"%s\"", kind);
	*name = pstrdup(header ? header : strcmp(kind, "api_key") == 0 ? "X-API-Key" : "Authorization");
}

/*
 * tokex._vault_release(audience, principal): what the exchange would
 * release, with the header the downstream receives.  Owner only (tests).
 */
PG_FUNCTION_INFO_V1(tokex_vault_release);
Datum
tokex_vault_release(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext cxt;
	int64		id;
	char	   *secret;
	char	   *kind;
	char	   *header;
	Datum		values[6];
	bool		nulls[6] = {false};

	if (PG_ARGISNULL(0))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("audience is required")));
	InitMaterializedSRF(fcinfo, 0);
	tokex_check_version();
	cxt = CurrentMemoryContext;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "tokex: SPI_connect failed");
	MemoryContextSwitchTo(cxt);
	if (vault_release(text_to_cstring(PG_GETARG_TEXT_PP(0)),
					  PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1)),
					  &id, &secret, &kind, &header))
	{
		char	   *name;
		char	   *value;

		MemoryContextSwitchTo(cxt);
		vault_presentation(kind, header, secret, &name, &value);
		values[0] = Int64GetDatum(id);
		values[1] = CStringGetTextDatum(kind);
		values[2] = header ? CStringGetTextDatum(header) : (Datum) 0;
		nulls[2] = header == NULL;
		values[3] = CStringGetTextDatum(secret);
		values[4] = CStringGetTextDatum(name);
		values[5] = CStringGetTextDatum(value);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	SPI_finish();
	return (Datum) 0;
}

/* ---------------- store ---------------- */

static void
check_secret(const char *secret, const char *kind)
{
	size_t		len = strlen(secret);

	if (len == 0)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("the secret is empty")));
	if (len > MAX_SECRET)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the secret is longer than %d bytes", MAX_SECRET)));
	for (const unsigned char *p = (const unsigned char *) secret; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("the secret contains a control character"),
					 errdetail("A credential is sent in an HTTP header, where control characters "
							   "such as a line break are not allowed.")));
	if (strcmp(kind, "basic") == 0 && strchr(secret, ':') == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a basic credential must be user:password"),
				 errdetail("The secret has no colon; the downstream receives Authorization: Basic base64(secret).")));
}

/* An HTTP field name (RFC 9110 token). */
static void
check_header(const char *header)
{
	size_t		len = strlen(header);

	if (len == 0 || len > MAX_HEADER ||
		strspn(header, "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") != len)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the header is not an HTTP field name"),
				 errdetail("A field name is 1 to %d letters, digits and !#$%%&'*+-.^_`|~.", MAX_HEADER)));
}

static char *
required_arg(FunctionCallInfo fcinfo, int n, const char *name)
{
	if (PG_ARGISNULL(n))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("%s is required", name)));
	return text_to_cstring(PG_GETARG_TEXT_PP(n));
}

/*
 * With log_statement = all the calling statement, secret included, was
 * written to the server log before this function ran (and with
 * log_min_duration_statement = 0 it will be when it ends): nothing here can
 * take it back, so say so rather than refuse.
 */
static void
warn_if_logged(void)
{
	if (log_statement == LOGSTMT_ALL || log_min_duration_statement == 0)
		ereport(WARNING,
				(errcode(ERRCODE_WARNING),
				 errmsg("the statement that stores this credential is written to the server log"),
				 errdetail("%s, so the server log holds the secret in clear text.",
						   log_statement == LOGSTMT_ALL ? "log_statement is all" : "log_min_duration_statement is 0"),
				 errhint("Store credentials in a session that logs no statements (a superuser sets log_statement = none "
						 "and log_min_duration_statement = -1), and replace this secret at the downstream "
						 "unless the server log is guarded like the key file."),
				 errhidestmt(true), errhidecontext(true)));
}

#define CHECK_QUERY \
	"SELECT EXISTS (SELECT 1 FROM tokex.resource WHERE audience OPERATOR(pg_catalog.=) $1) AS resource," \
	"       $2::text IS NULL OR EXISTS (SELECT 1 FROM tokex.identity WHERE id OPERATOR(pg_catalog.=) $2) AS identity"

#define INSERT_QUERY \
	"INSERT INTO tokex.credential (id, audience, principal, kind, header, expires_at, kek_id, wrapped_key, ciphertext)" \
	" OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"

static int64
store(FunctionCallInfo fcinfo)
{
	char	   *audience = required_arg(fcinfo, 0, "audience");
	char	   *secret = required_arg(fcinfo, 1, "secret");
	char	   *principal = PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2));
	char	   *kind = required_arg(fcinfo, 3, "kind");
	char	   *header = PG_ARGISNULL(4) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(4));
	VaultRow	r = {0};
	Kek			kek;
	uint8		dk[KEK_LEN];
	Oid			check_types[2] = {TEXTOID, TEXTOID};
	Datum		check_values[2];
	char		check_nulls[2] = {' ', principal ? ' ' : 'n'};
	Oid			types[9] = {INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID, BYTEAOID, BYTEAOID, BYTEAOID};
	Datum		values[9];
	char		nulls[9] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	bool		isnull;

	if (strcmp(kind, "api_key") != 0 && strcmp(kind, "basic") != 0 && strcmp(kind, "bearer") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown credential kind"),
				 errhint("The kind is api_key, basic or bearer.")));
	if (header)
		check_header(header);
	check_secret(secret, kind);
	if (!PG_ARGISNULL(5) && PG_GETARG_TIMESTAMPTZ(5) <= GetCurrentTimestamp())
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("expires_at is in the past")));
	warn_if_logged();
	tokex_check_version();
	kek_current(&kek);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "tokex: SPI_connect failed");
	check_values[0] = CStringGetTextDatum(audience);
	check_values[1] = principal ? CStringGetTextDatum(principal) : (Datum) 0;
	if (SPI_execute_with_args(CHECK_QUERY, 2, check_types, check_values, check_nulls, true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "tokex: cannot check the credential's audience and principal");
	if (!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, spi_column("resource"), &isnull)))
		ereport(ERROR,
				(errcode(ERRCODE_FOREIGN_KEY_VIOLATION),
				 errmsg("the audience is not a registered resource"),
				 errhint("Register it in tokex.resource first.")));
	if (!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, spi_column("identity"), &isnull)))
		ereport(ERROR,
				(errcode(ERRCODE_FOREIGN_KEY_VIOLATION),
				 errmsg("the principal is not an identity"),
				 errhint("A person's credential names its tokex.identity id; a shared credential has principal NULL.")));
	if (SPI_execute("SELECT pg_catalog.nextval('tokex.credential_id_seq'::pg_catalog.regclass) AS id", false, 1) != SPI_OK_SELECT)
		elog(ERROR, "tokex: cannot draw a credential id");
	r.id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, spi_column("id"), &isnull));
	r.audience = audience;
	r.principal = principal;
	r.kind = kind;
	r.header = header;

	if (!pg_strong_random(dk, KEK_LEN))
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("no random bytes for a data key")));
	values[0] = Int64GetDatum(r.id);
	values[1] = CStringGetTextDatum(audience);
	values[2] = principal ? CStringGetTextDatum(principal) : (Datum) 0;
	nulls[2] = principal ? ' ' : 'n';
	values[3] = CStringGetTextDatum(kind);
	values[4] = header ? CStringGetTextDatum(header) : (Datum) 0;
	nulls[4] = header ? ' ' : 'n';
	values[5] = PG_ARGISNULL(5) ? (Datum) 0 : PG_GETARG_DATUM(5);
	nulls[5] = PG_ARGISNULL(5) ? 'n' : ' ';
	values[6] = PointerGetDatum(to_bytea(kek.id, KEK_ID_LEN));
	values[7] = PointerGetDatum(wrap(&r, &kek, dk));
	values[8] = PointerGetDatum(seal(dk, (const uint8 *) secret, strlen(secret),
									 row_ad('s', r.id, audience, principal, kind, header)));
	explicit_bzero(dk, sizeof(dk));
	explicit_bzero(&kek, sizeof(kek));
	explicit_bzero(secret, strlen(secret));
	if (SPI_execute_with_args(INSERT_QUERY, 9, types, values, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "tokex: cannot insert the credential");
	SPI_finish();
	return r.id;
}

/*
 * tokex.store_credential(audience, secret, principal, kind, header,
 * expires_at) -> id.  The statement that called it holds the secret, so
 * every error on the way hides that statement and its context from the
 * server log (the client, who sent the secret, still sees them).
 */
PG_FUNCTION_INFO_V1(tokex_store_credential);
Datum
tokex_store_credential(PG_FUNCTION_ARGS)
{
	MemoryContext cxt = CurrentMemoryContext;
	int64		id = 0;

	PG_TRY();
	{
		id = store(fcinfo);
	}
	PG_CATCH();
	{
		ErrorData  *e;

		MemoryContextSwitchTo(cxt);
		e = CopyErrorData();
		FlushErrorState();
		e->hide_stmt = true;
		e->hide_ctx = true;
		ReThrowError(e);
	}
	PG_END_TRY();
	PG_RETURN_INT64(id);
}

/* ---------------- rotation ---------------- */

/*
 * tokex.vault_rewrap() -> how many credentials it re-wrapped: every data
 * key wrapped under the previous KEK is wrapped again under the current
 * one (the secrets' ciphertexts stay as they are).  Releases go on
 * meanwhile: a row is released under whichever of the two keys it names.
 * Rows under neither key, or whose wrapped key does not authenticate, are
 * left as they are and counted in a WARNING.
 */
PG_FUNCTION_INFO_V1(tokex_vault_rewrap);
Datum
tokex_vault_rewrap(PG_FUNCTION_ARGS)
{
	Kek			current;
	Kek			previous;
	bool		have_previous;
	Oid			types[3] = {INT8OID, BYTEAOID, BYTEAOID};
	Datum		values[3];
	SPITupleTable *rows;
	uint64		nrows;
	SPIPlanPtr	update;
	int64		done = 0;
	int64		unknown = 0;
	int64		bad = 0;

	tokex_check_version();
	kek_current(&current);
	have_previous = kek_load(PREVIOUS_SETTING, vault_previous_key_file, false, &previous);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "tokex: SPI_connect failed");
	values[0] = PointerGetDatum(to_bytea(current.id, KEK_ID_LEN));
	if (SPI_execute_with_args("SELECT " ROW_COLUMNS " FROM tokex.credential"
							  " WHERE kek_id OPERATOR(pg_catalog.<>) $1 ORDER BY id FOR UPDATE",
							  1, &types[1], values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "tokex: cannot read tokex.credential");
	rows = SPI_tuptable;
	nrows = SPI_processed;
	update = SPI_prepare("UPDATE tokex.credential SET kek_id = $2, wrapped_key = $3"
						 " WHERE id OPERATOR(pg_catalog.=) $1", 3, types);
	if (update == NULL)
		elog(ERROR, "tokex: cannot prepare the re-wrap: %s", SPI_result_code_string(SPI_result));
	values[1] = values[0];
	for (uint64 i = 0; i < nrows; i++)
	{
		VaultRow	r;
		uint8		dk[KEK_LEN];

		read_row(rows->vals[i], rows->tupdesc, &r);
		if (!have_previous || !kek_is(&previous, r.kek_id))
		{
			unknown++;
			continue;
		}
		if (!unwrap(&r, &previous, dk))
		{
			bad++;
			continue;
		}
		values[0] = Int64GetDatum(r.id);
		values[2] = PointerGetDatum(wrap(&r, &current, dk));
		explicit_bzero(dk, sizeof(dk));
		if (SPI_execute_plan(update, values, NULL, false, 0) != SPI_OK_UPDATE || SPI_processed != 1)
			elog(ERROR, "tokex: cannot re-wrap credential " INT64_FORMAT, r.id);
		done++;
	}
	SPI_finish();
	explicit_bzero(&current, sizeof(current));
	explicit_bzero(&previous, sizeof(previous));
	if (unknown > 0 || bad > 0)
		ereport(WARNING,
				(errcode(ERRCODE_WARNING),
				 errmsg("%lld credentials were not re-wrapped", (long long) (unknown + bad)),
				 errdetail("%lld are under a key-encryption key that is neither the current one nor %s's; "
						   "%lld have a wrapped data key that does not authenticate.",
						   (long long) unknown, PREVIOUS_SETTING, (long long) bad),
				 errhint("They cannot be released.  tokex.vault_status() lists the keys the credentials are under.")));
	PG_RETURN_INT64(done);
}

/*
 * tokex._vault_key_ids() -> (current_key, previous_key): the fingerprints
 * of the configured keys (NULL when a setting is empty); ERROR when a key
 * file cannot be used.
 */
PG_FUNCTION_INFO_V1(tokex_vault_key_ids);
Datum
tokex_vault_key_ids(PG_FUNCTION_ARGS)
{
	TupleDesc	td;
	Datum		values[2];
	bool		nulls[2] = {true, true};
	Kek			k;

	if (get_call_result_type(fcinfo, NULL, &td) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "tokex: _vault_key_ids must return a record");
	if (kek_configured())
	{
		kek_current(&k);
		values[0] = PointerGetDatum(to_bytea(k.id, KEK_ID_LEN));
		nulls[0] = false;
	}
	if (kek_load(PREVIOUS_SETTING, vault_previous_key_file, false, &k))
	{
		values[1] = PointerGetDatum(to_bytea(k.id, KEK_ID_LEN));
		nulls[1] = false;
	}
	explicit_bzero(&k, sizeof(k));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(td), values, nulls)));
}
