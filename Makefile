# tokex — PGXS build.  `make && make install && make installcheck`
EXTENSION  = tokex
# The version lives in one place, tokex.control's default_version.
EXTVERSION = $(shell sed -n "s/^default_version[[:space:]]*=[[:space:]]*'\([^']*\)'.*/\1/p" $(srcdir)/tokex.control)
MODULE_big = tokex
# the current version's install script, assembled from src/sql/*.sql
DATA_built = tokex--$(EXTVERSION).sql
# shipped as they are: earlier versions' install scripts, frozen when they were
# released, and every upgrade script (see CONTRIBUTING in the README)
DATA       = $(patsubst $(srcdir)/%,%,$(wildcard $(srcdir)/sql/upgrade/tokex--*.sql))
OBJS       = src/tokex.o src/issue.o src/exchange.o src/decide.o src/fastdecide.o src/mint.o src/audit.o \
             src/session.o src/introspect.o src/revocation.o src/client.o src/translate.o \
             src/keys.o src/issuers.o src/jwt.o src/vault.o src/dpop.o src/resource.o src/standby.o src/seal.o \
             src/jose/common.o src/jose/key.o src/jose/jwk.o src/jose/jwks.o src/jose/jws.o \
             src/jose/jwt.o src/jose/opaque.o src/jose/dpop.o

PG_CPPFLAGS = -I$(srcdir)/src -DTOKEX_VERSION='"$(EXTVERSION)"'
PG_CFLAGS   = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers
SHLIB_LINK  = -lcrypto -ljansson

REGRESS      = $(patsubst $(srcdir)/sql/%.sql,%,$(sort $(wildcard $(srcdir)/sql/*.sql)))
REGRESS_OPTS = --load-extension=pgtap --dbname=tokex_regress

# The install script is assembled from src/sql/ in file-name order.
INSTALL_SQL = $(sort $(wildcard $(srcdir)/src/sql/*.sql))

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# The other test suites, PGXS-style: like installcheck, against the server
# the PG* environment names, with tokex installed (make install).
#   make unitcheck     the JOSE core without PostgreSQL, plain and ASan/UBSan
#   make tapcheck      pgTAP, each file in a fresh database (TAP_TESTS=files)
#   make upgradecheck  each earlier version, updated, equals a fresh install
#   make check-all     every suite, as CI runs them (test/run-all.sh)
.PHONY: unitcheck tapcheck upgradecheck check-all
unitcheck:
	$(MAKE) -C $(srcdir)/test/unit check asan
tapcheck:
	PG_CONFIG='$(PG_CONFIG)' bash $(srcdir)/test/pgtap.sh $(TAP_TESTS)
upgradecheck:
	PG_CONFIG='$(PG_CONFIG)' bash $(srcdir)/test/upgrade/run.sh
check-all:
	PG_CONFIG='$(PG_CONFIG)' bash $(srcdir)/test/run-all.sh

# A VPATH build (pg_buildext builds each PostgreSQL version in its own
# build-<version>/ directory) needs the object directories there.
ifdef VPATH
$(shell mkdir -p $(sort $(dir $(OBJS))))
endif

ifeq ($(EXTVERSION),)
$(error cannot read default_version from tokex.control)
endif

# The banner names the version, so the parts themselves never do.
tokex--$(EXTVERSION).sql: $(INSTALL_SQL) $(srcdir)/tokex.control
	{ echo '-- tokex $(EXTVERSION) install script, assembled by make from src/sql/*.sql.'; \
	  cat $(INSTALL_SQL); } > $@

# the library's version (TOKEX_VERSION) comes from tokex.control
src/tokex.o: $(srcdir)/tokex.control

# PGXS tracks no header dependencies: every object depends on every header
$(OBJS): $(wildcard $(srcdir)/src/*.h $(srcdir)/src/jose/*.h)
