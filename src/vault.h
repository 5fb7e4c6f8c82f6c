/*
 * vault.h — the credential vault: downstream credentials (an API key, Basic
 * credentials, a static bearer token) that tokex releases through the
 * exchange to a resource whose token_format is 'credential'.  They are kept
 * in tokex.credential envelope-encrypted (AES-256-GCM) under a
 * key-encryption key that is read from a file (tokex.vault_key_file) and
 * never passes through SQL.  See src/vault.c and README "Credential vault".
 */
#ifndef TOKEX_VAULT_H
#define TOKEX_VAULT_H

#include "postgres.h"

/* _PG_init: the GUCs tokex.vault_key_file and tokex.vault_previous_key_file */
extern void tokex_vault_init(void);

/*
 * The live credential for this audience and person: the person's own
 * (principal = principal) if there is a live one, else the shared one
 * (principal IS NULL); never a revoked or expired one; the newest when
 * several qualify.  principal NULL: only a shared credential.  Decrypts it.
 *
 * Must be called with SPI connected (as the exchange is after its
 * decision); judged as of the call (the latest committed state and the
 * clock, like the decision).  Returns false when there is none.  On true,
 * *id, *secret, *kind ('api_key', 'basic' or 'bearer') and *header (the
 * stored header name, or NULL for the kind's default; see
 * vault_presentation) are palloc'd in the memory context that is current
 * at the call, which is current again on return (under SPI that is
 * usually SPI's, which SPI_finish frees: switch to a longer-lived context
 * before the call if the results must outlive SPI).
 *
 * Raises (ereport ERROR) when the key-encryption key is not configured or
 * cannot be read (55000 / 58P01 / F0000, naming the setting), when the
 * credential is under a key-encryption key the server does not have
 * (55000, wrong or replaced key file), or when its ciphertext does not
 * authenticate (XX001, altered or moved to another row).  The secret is in
 * no error message.
 */
extern bool vault_release(const char *audience, const char *principal, int64 *id,
						  char **secret, char **kind, char **header);

/*
 * How the downstream receives a released credential: the HTTP header
 * *name and its complete *value (palloc'd; the value contains the secret).
 *
 *   kind     header NULL      value
 *   basic    Authorization    "Basic " || base64(secret)   (secret = user:password)
 *   bearer   Authorization    "Bearer " || secret
 *   api_key  X-API-Key        secret
 *
 * A stored header replaces the default name; the value is the same.
 */
extern void vault_presentation(const char *kind, const char *header, const char *secret,
							   char **name, char **value);

#endif							/* TOKEX_VAULT_H */
