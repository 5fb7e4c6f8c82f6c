# tokex — PGXS build.  `make && make install && make installcheck`
EXTENSION  = tokex
# The version lives in one place, tokex.control's default_version.
EXTVERSION = $(shell sed -n "s/^default_version[[:space:]]*=[[:space:]]*'\([^']*\)'.*/\1/p" $(srcdir)/tokex.control)
MODULE_big = tokex
# the current version's install script, assembled from src/sql/*.sql
DATA_built = tokex--$(EXTVERSION).sql
# shipped as they are: earlier versions' install scripts, frozen when they were
# released, and every upgrade script (see CONTRIBUTING in the README)
DATA       = $(patsubst $(srcdir)/%,%,$(wildcard $(srcdir)/src/sql/upgrade/tokex--*.sql))
OBJS       = src/tokex.o src/audit.o src/keystore.o src/token.o src/exchange.o src/client.o \
             src/jose/common.o src/jose/jwk.o src/jose/jws.o src/jose/jwt.o

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

ifeq ($(EXTVERSION),)
$(error cannot read default_version from tokex.control)
endif

# The banner names the version, so the parts themselves never do.
tokex--$(EXTVERSION).sql: $(INSTALL_SQL) $(srcdir)/tokex.control
	{ echo '-- tokex $(EXTVERSION) install script, assembled by make from src/sql/*.sql.'; \
	  cat $(INSTALL_SQL); } > $@
