#!/usr/bin/env bash
# What the tests need beyond Rust, installed from Debian packages when missing
# (as root; otherwise it names what to install). Run by `make test`.
#
#   openssl                     scripts/postgres.sh makes the test cluster's TLS certificates
#   python3, python3-venv       scripts/s3.sh installs moto (and boto3) from PyPI into .s3/venv
#   python3-prometheus-client   the metrics tests read back with its parser
#   prometheus-pushgateway      the metrics tests push to a real one (started by the tests)
#   chromium                    the report test opens the HTML page headless
# It says what it installs and why, and starts or enables no service: a package's
# own unit (prometheus-pushgateway ships one) is kept from starting while installing
# and disabled after.
set -euo pipefail

declare -A why=(
    [openssl]="TLS certificates of the test PostgreSQL cluster"
    [python3]="scripts/s3.sh (moto, the local S3 server)"
    [python3-venv]="the virtualenv moto is installed into (.s3/venv)"
    [python3-prometheus-client]="parsing the metrics the tests write"
    [prometheus-pushgateway]="the metrics tests push to it (they start their own, on a free port)"
    [chromium]="the report test renders the HTML page headless"
)
need=()
command -v openssl >/dev/null || need+=(openssl)
command -v python3 >/dev/null || need+=(python3)
python3 -c "import ensurepip, venv" 2>/dev/null || need+=(python3-venv)
/usr/bin/python3 -c "import prometheus_client" 2>/dev/null || need+=(python3-prometheus-client)
command -v prometheus-pushgateway >/dev/null || need+=(prometheus-pushgateway)
command -v "${CHROMIUM:-chromium}" >/dev/null || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
for p in "${need[@]}"; do
    echo "test-deps.sh: needs $p: ${why[$p]}" >&2
done
if [ "$(id -u)" -eq 0 ]; then
    echo "test-deps.sh: installing ${need[*]} (apt-get, Debian packages)" >&2
    # No service a package ships starts now (invoke-rc.d asks policy-rc.d first).
    policy=/usr/sbin/policy-rc.d
    had_policy=$([ -e "$policy" ] && echo yes || echo no)
    [ "$had_policy" = yes ] || { printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; }
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
    [ "$had_policy" = yes ] || rm -f "$policy"
    if [[ " ${need[*]} " == *" prometheus-pushgateway "* ]] && command -v systemctl >/dev/null; then
        systemctl disable --now prometheus-pushgateway >/dev/null 2>&1 &&
            echo "test-deps.sh: prometheus-pushgateway's own service disabled (the tests start theirs)" >&2 || true
    fi
else
    echo "test-deps.sh: install them: apt-get install ${need[*]}" >&2
    exit 1
fi
