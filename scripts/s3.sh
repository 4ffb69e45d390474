#!/usr/bin/env bash
# A local S3-compatible server (moto, from PyPI) for tests and the S3 demo.
#
#   scripts/s3.sh start   install moto if missing, start it, create the bucket; prints S3_ENDPOINT
#   scripts/s3.sh stop    stops it (moto keeps everything in memory)
#   scripts/s3.sh status  exit 0 when it runs, 3 when not
#
# Listens on 127.0.0.1:${PIPELINE_S3_PORT:-54330}; access key and secret are `test`;
# bucket `pipeline-test` exists after start. Only the endpoint goes to stdout.
# moto and boto3 live in a virtualenv of this checkout (.s3/venv, or PIPELINE_S3_VENV),
# never in the system's python3.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
port=${PIPELINE_S3_PORT:-54330}
dir=$repo/.s3
pidfile=$dir/moto.pid
endpoint="http://127.0.0.1:$port"
bucket=pipeline-test
venv=${PIPELINE_S3_VENV:-$dir/venv}
python=$venv/bin/python

say() { echo "s3.sh: $*" >&2; }
die() { say "$*"; exit 1; }

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

start() {
    mkdir -p "$dir"
    if ! running; then
        if ! "$python" -c "import moto.server, boto3" 2>/dev/null; then
            say "installing moto[server] from PyPI into $venv (a local S3 server for the tests)"
            [ -x "$python" ] || python3 -m venv "$venv" >&2 ||
                die "cannot create a virtualenv in $venv (Debian: apt-get install python3-venv)"
            "$python" -m pip install -q 'moto[server]>=5' >&2 || die "pip install moto[server] failed"
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            die "port $port is taken; set PIPELINE_S3_PORT to a free port"
        fi
        nohup "$python" -m moto.server -H 127.0.0.1 -p "$port" >"$dir/moto.log" 2>&1 &
        echo $! >"$pidfile"
        for _ in $(seq 1 100); do
            (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
            sleep 0.1
        done
        running || { cat "$dir/moto.log" >&2; die "moto did not start"; }
        say "moto running on $endpoint (log: $dir/moto.log)"
    fi
    "$python" - "$endpoint" "$bucket" <<'PY' >&2
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id="test",
                  aws_secret_access_key="test", region_name="us-east-1")
if sys.argv[2] not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
    s3.create_bucket(Bucket=sys.argv[2])
PY
    echo "$endpoint"
}

stop() {
    if running; then
        kill "$(cat "$pidfile")" && rm -f "$pidfile" && say "stopped"
    else
        say "not running"
    fi
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) if running; then say "running on 127.0.0.1:$port"; else say "not running"; exit 3; fi ;;
*) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
