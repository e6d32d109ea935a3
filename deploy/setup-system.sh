#!/bin/sh
# Installs the Debian packages the suite needs (real Mosquitto, real PostgreSQL, openssl).
# As root it installs what is missing; otherwise it prints the exact command. Idempotent.
set -e
missing=""
for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = "0" ]; then
    echo "setup: installing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
    # Tests start their own brokers and databases on free ports; the packaged services stay off.
    for svc in mosquitto postgresql; do
        (systemctl disable --now "$svc" || service "$svc" stop) >/dev/null 2>&1 || true
    done
else
    echo "setup: missing Debian packages:$missing"
    echo "setup: run: sudo apt-get update && sudo apt-get install -y$missing"
    exit 1
fi
