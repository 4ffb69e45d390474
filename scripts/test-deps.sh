#!/usr/bin/env bash
# What the tests need beyond Rust, installed from Debian packages when missing
# (as root; otherwise it names what to install). Run by `make test`.
#
#   openssl                     scripts/postgres.sh makes the test cluster's TLS certificates
#   python3, python3-pip        scripts/s3.sh installs moto (and boto3) from PyPI
#   python3-prometheus-client   the metrics tests read back with its parser
#   prometheus-pushgateway      the metrics tests push to a real one
#   chromium                    the report test opens the HTML page headless
set -euo pipefail

need=()
command -v openssl >/dev/null || need+=(openssl)
command -v python3 >/dev/null || need+=(python3 python3-pip)
/usr/bin/python3 -c "import prometheus_client" 2>/dev/null || need+=(python3-prometheus-client)
command -v prometheus-pushgateway >/dev/null || need+=(prometheus-pushgateway)
command -v "${CHROMIUM:-chromium}" >/dev/null || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
    echo "test-deps.sh: installing ${need[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
else
    echo "test-deps.sh: the tests need ${need[*]}; install them (apt-get install ${need[*]})" >&2
    exit 1
fi
