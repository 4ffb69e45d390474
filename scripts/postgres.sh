#!/usr/bin/env bash
# A private PostgreSQL 15 cluster for development and tests.
#
#   scripts/postgres.sh start    install if missing, init once, start; prints DATABASE_URL
#   scripts/postgres.sh url      prints DATABASE_URL of the running cluster
#   scripts/postgres.sh status   says whether it runs
#   scripts/postgres.sh stop     stops it (the data stays)
#   scripts/postgres.sh destroy  stops it and deletes its data
#   scripts/postgres.sh ca       prints the path of the CA certificate its TLS uses
#
# The cluster lives in .pg/ at the repository root (git-ignored), listens only on
# 127.0.0.1:${PIPELINE_PG_PORT:-54329}, and has one superuser `pipeline` with password
# `pipeline`. Only the URL goes to stdout, so `export DATABASE_URL=$(scripts/postgres.sh start)`
# works. As root, the server runs as the `postgres` user (PostgreSQL refuses root).
#
# TLS is on (PIPELINE_PG_TLS=off leaves it off): a self-signed CA and a server
# certificate for localhost and 127.0.0.1 are generated with openssl into tls/, and
# the role `tls_only` may connect over TLS only, so tests can prove TLS was used.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
port=${PIPELINE_PG_PORT:-54329}
user=pipeline
password=pipeline
database=pipeline
url="postgres://$user:$password@127.0.0.1:$port/$database"

say() { echo "postgres.sh: $*" >&2; }
die() { say "$*"; exit 1; }

find_bindir() {
    local d
    for d in /usr/lib/postgresql/15/bin $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [ -x "$d/initdb" ] && { echo "$d"; return 0; }
    done
    return 1
}

install_postgres() {
    if [ "$(id -u)" -ne 0 ]; then
        die "PostgreSQL server binaries are missing; install them with: sudo apt-get install -y postgresql-15"
    fi
    say "installing PostgreSQL 15 from Debian packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    # Debian's package creates and starts its own cluster on 5432; ours is separate.
    apt-get install -y -qq postgresql-15 postgresql-client-15 >&2 ||
        apt-get install -y -qq postgresql postgresql-client >&2
}

bindir=$(find_bindir || true)

# Where the cluster lives. As root, the postgres user must be able to reach it; a
# repository under /root usually is not reachable, so fall back to /var/tmp.
pgdir=${PIPELINE_PG_DIR:-$repo/.pg}
as_server() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}
if [ "$(id -u)" -eq 0 ] && [ -z "${PIPELINE_PG_DIR:-}" ] && id postgres >/dev/null 2>&1; then
    mkdir -p "$pgdir"
    if ! runuser -u postgres -- test -x "$pgdir" 2>/dev/null; then
        pgdir=/var/tmp/pipeline-pg-$(printf '%s' "$repo" | cksum | cut -d' ' -f1)
    fi
fi
data=$pgdir/data
logfile=$pgdir/postgres.log
tlsdir=$pgdir/tls

running() {
    [ -n "$bindir" ] && [ -f "$data/PG_VERSION" ] && as_server "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1
}

init_cluster() {
    say "initialising a cluster in $data"
    mkdir -p "$pgdir"
    local pwfile
    pwfile=$(mktemp)
    echo "$password" >"$pwfile"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres "$pgdir" "$pwfile"
    fi
    as_server "$bindir/initdb" -D "$data" -U "$user" --pwfile="$pwfile" \
        --auth=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >"$pgdir/initdb.log" 2>&1 ||
        { rm -f "$pwfile"; cat "$pgdir/initdb.log" >&2; die "initdb failed"; }
    rm -f "$pwfile"
    # Loopback only, no Unix socket (paths can be too long), tuned for tests: this
    # cluster holds throw-away data, so durability is traded for speed.
    cat >>"$data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = ''
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 256MB
CONF
}

# A CA and a server certificate signed by it, once; ssl = on and the TLS-only role.
enable_tls() {
    [ "${PIPELINE_PG_TLS:-on}" = off ] && return 0
    grep -q "^ssl = on" "$data/postgresql.conf" && return 0
    command -v openssl >/dev/null || die "openssl is needed for the cluster's TLS (apt-get install openssl), or set PIPELINE_PG_TLS=off"
    say "generating a test CA and server certificate in $tlsdir"
    mkdir -p "$tlsdir"
    (
        cd "$tlsdir"
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=pipeline test CA" \
            -keyout ca.key -out ca.crt >/dev/null 2>&1
        openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
            -keyout server.key -out server.csr >/dev/null 2>&1
        printf 'subjectAltName = DNS:localhost, IP:127.0.0.1\nextendedKeyUsage = serverAuth\n' >server.ext
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
            -extfile server.ext -out server.crt >/dev/null 2>&1
    ) || die "openssl could not create the test certificates"
    cp "$tlsdir/server.crt" "$tlsdir/server.key" "$data/"
    chmod 600 "$data/server.key"
    chmod 644 "$tlsdir/ca.crt"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres "$data/server.crt" "$data/server.key"
    fi
    cat >>"$data/postgresql.conf" <<CONF
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
CONF
    # First match wins: tls_only is refused without TLS, before the general rule.
    local hba
    hba=$(mktemp)
    { echo "hostnossl all tls_only 127.0.0.1/32 reject"; cat "$data/pg_hba.conf"; } >"$hba"
    cat "$hba" >"$data/pg_hba.conf"
    rm -f "$hba"
}

start() {
    if [ -z "$bindir" ]; then
        install_postgres
        bindir=$(find_bindir) || die "PostgreSQL installed but initdb was not found"
    fi
    if running; then
        say "already running on 127.0.0.1:$port ($data)"
        echo "$url"
        return 0
    fi
    [ -f "$data/PG_VERSION" ] || init_cluster
    enable_tls
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port is taken by another server; set PIPELINE_PG_PORT to a free port"
    fi
    if [ "$(id -u)" -eq 0 ]; then
        touch "$logfile" && chown postgres "$logfile"
    fi
    as_server "$bindir/pg_ctl" -D "$data" -l "$logfile" -w -t 60 start >/dev/null ||
        { tail -n 20 "$logfile" >&2; die "PostgreSQL did not start (log: $logfile)"; }
    if ! PGPASSWORD=$password "$bindir/psql" -h 127.0.0.1 -p "$port" -U "$user" -d postgres -Atqc \
        "SELECT 1 FROM pg_database WHERE datname = '$database'" | grep -q 1; then
        PGPASSWORD=$password "$bindir/psql" -h 127.0.0.1 -p "$port" -U "$user" -d postgres -qc \
            "CREATE DATABASE $database" >&2
    fi
    if [ "${PIPELINE_PG_TLS:-on}" != off ]; then
        PGPASSWORD=$password "$bindir/psql" -h 127.0.0.1 -p "$port" -U "$user" -d postgres -qc \
            "DO \$\$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tls_only') THEN
               CREATE ROLE tls_only LOGIN SUPERUSER PASSWORD 'tls_only'; END IF; END \$\$" >&2
    fi
    say "running on 127.0.0.1:$port (data: $data, log: $logfile)"
    echo "$url"
}

stop() {
    if running; then
        as_server "$bindir/pg_ctl" -D "$data" -m fast -w stop >/dev/null
        say "stopped"
    else
        say "not running"
    fi
}

case "${1:-}" in
start) start ;;
url) running || die "not running; start it with scripts/postgres.sh start"; echo "$url" ;;
status) if running; then say "running on 127.0.0.1:$port ($data)"; else say "not running"; exit 3; fi ;;
stop) stop ;;
destroy) stop; rm -rf "$data" "$logfile" "$pgdir/initdb.log" "$tlsdir"; say "deleted $data" ;;
ca) [ -f "$tlsdir/ca.crt" ] || die "no TLS CA yet; run scripts/postgres.sh start"; echo "$tlsdir/ca.crt" ;;
*) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
