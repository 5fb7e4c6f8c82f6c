#!/usr/bin/env bash
# The Debian package, postgresql-<version>-tokex: built from a temporary copy
# of this tree with dpkg-buildpackage -b (debian/rules: dh's pgxs sequence and
# pg_buildext, whose build also runs pg_regress against the packaged files in
# a throwaway cluster that preloads tokex), then checked: name, version
# (tokex.control's, as are debian/changelog's and META.json's), dependencies,
# and files (the library, the control file and every install and upgrade
# script of the tree, byte for byte, and nothing outside PostgreSQL's and
# the package's documentation directories).
#
# Then a smoke test (smoke.sh) in a cluster of its own that preloads the
# packaged library: CREATE EXTENSION, a token signed and introspected, ALTER
# EXTENSION tokex UPDATE from 0.1, and which tokex.so the postmaster loaded.
#   - With CI=true or TOKEX_PACKAGE_INSTALL=1 the package is installed into
#     the system PostgreSQL (apt-get install ./postgresql-15-tokex_*.deb),
#     tested there, purged, and the tree's own build put back (make install),
#     since the other suites use it.
#   - Otherwise nothing is installed: the .deb is unpacked and the cluster
#     finds it through extension_destdir and dynamic_library_path
#     (pg_virtualenv -p, as pg_buildext tests a package before installing it).
#
# Needs dpkg-dev, debhelper and postgresql-server-dev-all (.ci/setup) and, to
# install, root.  Leaves nothing in the tree.  TAP output.
set -uo pipefail
cd "$(dirname "$0")/../.."
src=$PWD
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# the throwaway clusters run as postgres and read the packaged files here
chmod a+rx "$tmp"
# the system PostgreSQL and its pg_virtualenv, not the caller's server
clean_env=(env -u PGHOST -u PGPORT -u PGDATABASE -u PGUSER -u PGPASSWORD -u PG_CONFIG
           PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
install=0
[ "${CI:-}" = true ] || [ "${TOKEX_PACKAGE_INSTALL:-}" = 1 ] && install=1

. test/tap.sh

version=$(sed -n "s/^default_version[[:space:]]*=[[:space:]]*'\([^']*\)'.*/\1/p" tokex.control)

# Versions said elsewhere: the Debian upstream version and PGXN's SemVer.
is "$(dpkg-parsechangelog -l debian/changelog -S Version | sed 's/-[^-]*$//')" "$version" \
  "debian/changelog's upstream version is tokex.control's ($version)"
semver=$version; [[ $semver =~ ^[0-9]+\.[0-9]+$ ]] && semver=$semver.0
is "$(perl -MJSON::PP -e 'local $/; my $m = decode_json(<STDIN>);
        print join(" ", $m->{version}, $m->{provides}{tokex}{version}, $m->{"meta-spec"}{version})' < META.json)" \
  "$semver $semver 1.0.0" "META.json: version and provides.tokex.version are $semver, meta-spec 1.0.0"

# A copy of the tree as git sees it (tracked and new, not ignored files).
mkdir "$tmp/tokex"
if git rev-parse --git-dir >/dev/null 2>&1; then
  git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$tmp/tokex"
else
  tar --exclude=.git -cf - . | tar -xf - -C "$tmp/tokex"
fi
(cd "$tmp/tokex" && "${clean_env[@]}" dpkg-buildpackage -us -uc -b) > "$tmp/build.log" 2>&1
rc=$?
ok $rc "dpkg-buildpackage -us -uc -b builds the package"
if [ $rc -ne 0 ]; then
  echo "# build log (last 60 lines):"; tail -60 "$tmp/build.log" | sed 's/^/#   /'
  finish; exit 1
fi
ran=$(sed -n 's/^ *All \([0-9]*\) tests passed\. *$/\1/p' "$tmp/build.log" | head -1)
ok $([ "${ran:-0}" -gt 0 ] && echo 0 || echo 1) \
  "the build ran pg_regress against the packaged files and it passed (${ran:-no} tests)"

debs=("$tmp"/postgresql-*-tokex_*.deb)
[ -f "${debs[0]}" ] || { ok 1 "a postgresql-<version>-tokex .deb was built"; finish; exit 1; }
for deb in "${debs[@]}"; do
  pkg=$(dpkg-deb -f "$deb" Package)
  v=${pkg#postgresql-}; v=${v%-tokex}
  echo "# $(basename "$deb")"
  is "$(dpkg-deb -f "$deb" Version | sed 's/-[^-]*$//')" "$version" "$pkg: version $version"
  deps=$(dpkg-deb -f "$deb" Depends)
  for d in "postgresql-$v" libssl3 libjansson4; do
    ok $(echo "$deps" | grep -qE "(^|, )$d( |,|$)" && echo 0 || echo 1) "$pkg depends on $d"
  done

  dpkg -c "$deb" | awk '{print $6}' | sed 's|^\./|/|' | grep -v '/$' | sort > "$tmp/files"
  want=$( { echo "/usr/lib/postgresql/$v/lib/tokex.so"
            echo "/usr/share/postgresql/$v/extension/tokex.control"
            echo "/usr/share/postgresql/$v/extension/tokex--$version.sql"
            for f in sql/upgrade/tokex--*.sql; do echo "/usr/share/postgresql/$v/extension/${f##*/}"; done
          } | sort)
  is "$(grep -E '^/usr/(lib/postgresql/[0-9]+/lib/tokex\.so|share/postgresql/[0-9]+/extension/tokex)' "$tmp/files")" \
     "$want" "$pkg: the library, the control file and every install and upgrade script"
  is "$(grep -vE "^/usr/(lib/postgresql/$v/lib/|share/postgresql/$v/extension/|share/doc/$pkg/)" "$tmp/files")" "" \
     "$pkg: nothing outside PostgreSQL's $v directories and its documentation"

  root=$tmp/unpacked/debian/$pkg
  mkdir -p "$root"; dpkg-deb -x "$deb" "$root"
  ext=$root/usr/share/postgresql/$v/extension
  same=0
  cmp -s tokex.control "$ext/tokex.control" || same=1
  for f in sql/upgrade/tokex--*.sql; do cmp -s "$f" "$ext/${f##*/}" || same=1; done
  # the install script is the banner and src/sql/*.sql in name order
  tail -n +2 "$ext/tokex--$version.sql" | cmp -s - <(cat src/sql/*.sql) || same=1
  ok $same "$pkg: its control file and SQL scripts are this tree's"
done

# The smoke test (smoke.sh), in a throwaway cluster that preloads tokex.
smoke() {  # smoke <pg_virtualenv options...>
  "${clean_env[@]}" pg_virtualenv "$@" -t -v "$v" -o shared_preload_libraries=tokex \
    bash "$src/test/package/smoke.sh" 2>&1 | grep -E '^(version|active|updated|library)=|ERROR' || true
}
check_smoke() {  # check_smoke <output> <library path> <how>
  is "$(echo "$1" | sed -n 's/^version=//p')" "$version" "$3: CREATE EXTENSION tokex installs $version"
  is "$(echo "$1" | sed -n 's/^active=//p')" "true" "$3: a token signed by a key made in the database introspects active"
  is "$(echo "$1" | sed -n 's/^updated=//p')" "$version" "$3: CREATE EXTENSION tokex VERSION '0.1' then ALTER EXTENSION UPDATE reaches $version"
  is "$(echo "$1" | sed -n 's/^library=//p')" "$2 " "$3: the postmaster preloaded the packaged tokex.so"
  echo "$1" | grep ERROR | sed 's/^/# /' || true
}

deb=$(ls "$tmp"/postgresql-*-tokex_*.deb | head -1)
pkg=$(dpkg-deb -f "$deb" Package); v=${pkg#postgresql-}; v=${v%-tokex}
if [ $install -eq 1 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$deb" > "$tmp/apt.log" 2>&1
  rc=$?
  ok $rc "apt-get install ./$(basename "$deb") (CI=${CI:-}, TOKEX_PACKAGE_INSTALL=${TOKEX_PACKAGE_INSTALL:-})"
  [ $rc -eq 0 ] || sed 's/^/#   /' "$tmp/apt.log"
  is "$(dpkg-query -W -f='${Status} ${Version}' "$pkg" 2>/dev/null)" "install ok installed $(dpkg-deb -f "$deb" Version)" \
     "dpkg knows $pkg as installed"
  check_smoke "$(smoke)" "/usr/lib/postgresql/$v/lib/tokex.so" "installed"
  # the other suites test the tree's build: put it back
  DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq "$pkg" > "$tmp/apt.log" 2>&1
  ok $? "apt-get purge $pkg"
  make -s install PG_CONFIG="/usr/lib/postgresql/$v/bin/pg_config" > "$tmp/make.log" 2>&1
  ok $? "the tree's build is installed again (make install)"
else
  echo "# not installing (set CI=true or TOKEX_PACKAGE_INSTALL=1 to install into the system PostgreSQL)"
  check_smoke "$(cd "$tmp/unpacked" && smoke -p "$pkg")" \
    "$tmp/unpacked/debian/$pkg/usr/lib/postgresql/$v/lib/tokex.so" "unpacked"
fi
finish
