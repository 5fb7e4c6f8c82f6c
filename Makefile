# tokex — PGXS build.  `make && make install && make installcheck`
EXTENSION  = tokex
MODULE_big = tokex
DATA_built = tokex--0.1.sql
OBJS       = src/tokex.o src/issue.o src/exchange.o src/decide.o src/mint.o src/audit.o \
             src/session.o src/introspect.o src/revocation.o src/client.o \
             src/keys.o src/issuers.o src/jwt.o \
             src/jose/common.o src/jose/key.o src/jose/jwk.o src/jose/jwks.o src/jose/jws.o \
             src/jose/jwt.o

PG_CPPFLAGS = -I$(srcdir)/src
PG_CFLAGS   = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers
SHLIB_LINK  = -lcrypto -ljansson

REGRESS      = $(patsubst sql/%.sql,%,$(sort $(wildcard sql/*.sql)))
REGRESS_OPTS = --load-extension=pgtap --dbname=tokex_regress

# The install script is assembled from src/sql/ in file-name order.
INSTALL_SQL = $(sort $(wildcard $(srcdir)/src/sql/*.sql))

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

tokex--0.1.sql: $(INSTALL_SQL)
	cat $^ > $@
