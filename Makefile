# tokex — PGXS build.  `make && make install && make installcheck`
EXTENSION  = tokex
MODULE_big = tokex
DATA       = src/tokex--0.1.sql
OBJS       = src/tokex.o src/keystore.o src/token.o \
             src/jose/common.o src/jose/jwk.o src/jose/jws.o src/jose/jwt.o

PG_CPPFLAGS = -I$(srcdir)/src
PG_CFLAGS   = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers
SHLIB_LINK  = -lcrypto -ljansson

REGRESS      = $(patsubst sql/%.sql,%,$(sort $(wildcard sql/*.sql)))
REGRESS_OPTS = --load-extension=pgtap --dbname=tokex_regress

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)
