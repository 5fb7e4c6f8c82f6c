#!/usr/bin/env bash
# End to end through the reverse-proxy recipe (contrib/nginx): a real OAuth
# client library (npm openid-client, on oauth4webapi, and jose) discovers
# tokex at https://127.0.0.1:PORT/.well-known/oauth-authorization-server and
# exchanges, introspects and revokes tokens through nginx, which forwards to
# standin.mjs, a stand-in for PostgREST that replays its per-request SQL
# (PostgREST cannot be installed here).  nginx runs the recipe's files
# verbatim, from a throwaway prefix, on 127.0.0.1 only, with a throwaway
# certificate; nginx and the stand-in are stopped on exit and in any case
# stop themselves after $NGINX_LIFETIME seconds (default 300).
#
# Uses the server the standard PG* environment names (as a superuser);
# creates and finally drops its own database ($NGINX_DB, default
# tokex_nginx).  Needs tokex installed (make install), nginx, openssl, node
# >= 20 and npm.
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)
db=${NGINX_DB:-tokex_nginx}
lifetime=${NGINX_LIFETIME:-300}
nginx_bin=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}

tmp=$(mktemp -d)
chmod 755 "$tmp"                    # nginx's worker (nobody) uses its temp paths
pids=()
cleanup() {
  local rc=$?
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "$rc" -ne 0 ] && [ -s "$tmp/error.log" ]; then echo "--- nginx error log" >&2; cat "$tmp/error.log" >&2; fi
  PGOPTIONS="-c client_min_messages=warning" dropdb --if-exists "$db" || true
  rm -rf "$tmp"
}
trap cleanup EXIT

npm ci --no-audit --no-fund --loglevel=error >/dev/null

freeport() {
  node -e 'const s = require("net").createServer(); s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })'
}
nport=$(freeport)
issuer="https://127.0.0.1:$nport"

# the database: the HTTP suite's fixtures, with the issuer nginx serves and
# the endpoint paths it serves (tokex.endpoint_style = plain)
PGOPTIONS="-c client_min_messages=warning" dropdb --if-exists "$db"
createdb "$db"
export PGDATABASE=$db
psql -X -q -v ON_ERROR_STOP=1 -c 'CREATE EXTENSION tokex'
psql -X -q -At -v ON_ERROR_STOP=1 -f "$root/test/http/fixtures.sql" >/dev/null
psql -X -q -v ON_ERROR_STOP=1 -v issuer="$issuer" <<'SQL'
SELECT format('ALTER DATABASE %I SET tokex.issuer = %L', current_database(), :'issuer') \gexec
SELECT format('ALTER DATABASE %I RESET tokex.base_url', current_database()) \gexec
SELECT format('ALTER DATABASE %I SET tokex.endpoint_style = plain', current_database()) \gexec
SQL
node "$root/test/http/setup.mjs" "$tmp/fixtures.json"

# a throwaway certificate for 127.0.0.1
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
  -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null

# the PostgREST stand-in
timeout "$lifetime" node standin.mjs "$tmp/standin.port" "$lifetime" &
pids+=($!)
for _ in $(seq 100); do [ -s "$tmp/standin.port" ] && break; sleep 0.1; done
[ -s "$tmp/standin.port" ] || { echo "the stand-in did not start" >&2; exit 1; }
sport=$(cat "$tmp/standin.port")

# nginx: the recipe's conf.d and snippets as they are, the site around them
mkdir -p "$tmp/conf"
ln -s "$root/contrib/nginx/conf.d" "$tmp/conf/conf.d"
ln -s "$root/contrib/nginx/snippets" "$tmp/conf/snippets"
cat > "$tmp/conf/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $tmp/nginx.pid;
error_log $tmp/error.log warn;
events { worker_connections 64; }
http {
    access_log $tmp/access.log;
    client_body_temp_path $tmp/client_body;
    proxy_temp_path $tmp/proxy;
    fastcgi_temp_path $tmp/fastcgi;
    uwsgi_temp_path $tmp/uwsgi;
    scgi_temp_path $tmp/scgi;
    include conf.d/tokex.conf;
    upstream tokex_postgrest {
        server 127.0.0.1:$sport;
    }
    server {
        listen 127.0.0.1:$nport ssl;
        server_name 127.0.0.1;
        ssl_certificate $tmp/cert.pem;
        ssl_certificate_key $tmp/key.pem;
        include snippets/tokex-endpoints.conf;
        location / {
            return 404;
        }
    }
}
CONF
"$nginx_bin" -t -q -p "$tmp" -c "$tmp/conf/nginx.conf" -e "$tmp/error.log"
timeout "$lifetime" "$nginx_bin" -p "$tmp" -c "$tmp/conf/nginx.conf" -e "$tmp/error.log" &
pids+=($!)
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$nport") 2>/dev/null && break; sleep 0.1; done

TOKEX_ISSUER=$issuer NODE_EXTRA_CA_CERTS=$tmp/cert.pem TOKEX_HTTP_FIXTURES=$tmp/fixtures.json \
  node --test --test-reporter=spec --test-concurrency=1 e2e.test.mjs
