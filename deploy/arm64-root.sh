#!/bin/sh
# The arm64 (Raspberry Pi) Debian root in which the tests run the gateway under QEMU user
# emulation (docs/GATEWAY.md, "Verified on arm64").
#
#   sh deploy/arm64-root.sh                  prepares the root if needed; prints its path last
#   sh deploy/arm64-root.sh enter ROOT WORK SRC [--cwd DIR] -- CMD...
#                                            runs CMD (an arm64 program) inside ROOT
#
# The root is built once per machine and kept outside the checkout, because CI starts from a
# fresh clone each time: $ECOIN_ARM64_CACHE (default /var/cache/ecoin)/arm64-<hash>, where the
# hash covers the Debian packages and the pip requirements below (read from pyproject.toml).
# A change to either builds a new root; otherwise nothing is downloaded. It holds Debian
# bookworm arm64 (minbase) with python3, python3-venv and mosquitto, and /opt/ecoin/.venv with
# the gateway's dependencies as aarch64 wheels: the README's Raspberry Pi recipe up to the
# step that installs ecoin's own wheel, which each test run does itself.
#
# `enter` never changes the root: in a private mount namespace (gone with the process) the
# root is mounted read-only, with WORK at /ecoin/work, SRC (read-only) at /ecoin/src, a copy
# of the root's venv from WORK/opt at /opt/ecoin, WORK/tmp at /tmp, and the host's /dev and a
# /proc. CMD keeps the caller's process id, so signals reach it. Needs root (chroot, mount).
set -eu
cd "$(dirname "$0")/.."

FORMAT=1  # bump when the recipe below changes in a way the package lists do not show
DEB_PKGS="python3,python3-venv,ca-certificates,mosquitto"
HOST_PKGS="qemu-user-static binfmt-support debootstrap systemd"  # systemd: systemd-analyze
CACHE="${ECOIN_ARM64_CACHE:-/var/cache/ecoin}"

# The arm64 binfmt handler must be registered once per boot; without it nothing arm64 runs.
enable_qemu() {
    if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    fi
    if ! grep -qs '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64; then
        update-binfmts --enable qemu-aarch64
    fi
    grep -qs '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 || {
        echo "arm64-root: qemu-aarch64 is not registered with binfmt_misc" >&2
        exit 1
    }
}

enter() {
    root=$1 work=$2 src=$3
    shift 3
    cwd=/
    if [ "${1:-}" = "--cwd" ]; then cwd=$2; shift 2; fi
    [ "${1:-}" = "--" ] && shift
    mkdir -p "$work/tmp" "$work/opt"
    exec unshare --mount --propagation private sh -c '
        set -e
        root=$1 work=$2 src=$3 cwd=$4
        shift 4
        mount --bind "$root" "$root"
        mount -o remount,bind,ro "$root"
        mount --rbind /dev "$root/dev"
        mount -t proc proc "$root/proc"
        mount --bind "$work" "$root/ecoin/work"
        mount --bind "$work/tmp" "$root/tmp"
        mount --bind "$work/opt" "$root/opt/ecoin"
        mount --bind "$src" "$root/ecoin/src"
        mount -o remount,bind,ro "$root/ecoin/src"
        exec chroot "$root" /usr/bin/env -i PATH=/opt/ecoin/.venv/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            HOME=/tmp LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
            /bin/sh -c "cd \"\$0\" && exec \"\$@\"" "$cwd" "$@"
    ' sh "$root" "$work" "$src" "$cwd" "$@"
}

# What pip installs in the root: the base dependencies, the gateway extra, and pytest with its
# timeout plugin from the dev extra (the gateway's tests run in there too).
requirements() {
    python3 - <<'EOF'
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project["optional-dependencies"]
test = [r for r in extras["dev"] if r.split(">")[0].split("=")[0].strip() in ("pytest", "pytest-timeout")]
for req in [*project["dependencies"], *extras["gateway"], *test]:
    print(req)
EOF
}

# The Debian mirror the host itself uses (its sources), so the root comes from the same place.
mirror() {
    sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1
}

build() {
    root=$1 tmp=$1.part-$$
    reqs=$(requirements)
    started=$(date +%s)
    echo "arm64-root: building $root (debootstrap bookworm arm64, then aarch64 wheels; several minutes)" >&2
    rm -rf "$tmp"
    # In a mount namespace of its own: whatever it mounts in the new root goes with it.
    # shellcheck disable=SC2046 # an empty mirror means debootstrap's own default
    unshare --mount --propagation private debootstrap --arch=arm64 --variant=minbase --include="$DEB_PKGS" bookworm "$tmp" $(mirror) >"$tmp.log" 2>&1 || {
        tail -30 "$tmp.log" >&2
        exit 1
    }
    # The registries' TLS may be signed by CAs only the host knows about.
    cp /etc/ssl/certs/ca-certificates.crt "$tmp/etc/ssl/certs/ca-certificates.crt"
    cp /etc/hosts "$tmp/etc/hosts"
    rm -rf "$tmp/var/cache/apt/archives/"*.deb "$tmp/var/lib/apt/lists/"*
    mkdir -p "$tmp/ecoin/work" "$tmp/ecoin/src" "$tmp/opt/ecoin"
    printf '%s\n' "$reqs" >"$tmp/ecoin/requirements.txt"
    # The README's recipe: a venv in /opt/ecoin, dependencies as aarch64 wheels only.
    work=$(mktemp -d)
    mkdir -p "$work/opt"
    (enter "$tmp" "$work" "$PWD" -- sh -c '
        python3 -m venv /opt/ecoin/.venv &&
        PIP_CERT=/etc/ssl/certs/ca-certificates.crt /opt/ecoin/.venv/bin/pip install \
            --quiet --only-binary=:all: -r /ecoin/requirements.txt') || {
        rm -rf "$work"
        exit 1
    }
    cp -a "$work/opt/." "$tmp/opt/ecoin/"
    rm -rf "$work"
    echo "built $(date -u +%FT%TZ) in $(($(date +%s) - started)) s" >"$tmp/ecoin/ready"
    mv "$tmp" "$root"
    rm -f "$tmp.log"
    echo "arm64-root: ready in $(($(date +%s) - started)) s, $(du -sm "$root" | cut -f1) MB" >&2
}

if [ "${1:-}" = "enter" ]; then
    shift
    enter "$@"
fi
if [ $# -gt 0 ]; then
    echo "usage: sh deploy/arm64-root.sh [enter ROOT WORK SRC [--cwd DIR] -- CMD...]" >&2
    exit 2
fi

if [ "$(id -u)" != "0" ]; then
    echo "arm64-root: needs root (debootstrap, chroot, mount): run it as root, e.g. sudo make test-arm64" >&2
    exit 1
fi
sh deploy/setup-system.sh $HOST_PKGS
enable_qemu
key=$(printf '%s\n%s\n%s\n' "$FORMAT" "$DEB_PKGS" "$(requirements)" | sha256sum | cut -c1-16)
root="$CACHE/arm64-$key"
mkdir -p "$CACHE"
if [ ! -f "$root/ecoin/ready" ]; then
    # One build at a time per machine; whoever waited finds the root ready.
    exec 9>"$CACHE/arm64.lock"
    flock 9
    # Under the lock no build runs, so a part-built root is what a failed build left behind.
    for stale in "$CACHE"/arm64-*.part-*; do
        [ -e "$stale" ] || continue
        grep -qs " $stale/" /proc/mounts && continue # never delete through a mount
        rm -rf "$stale"
    done
    [ -f "$root/ecoin/ready" ] || build "$root"
fi
echo "$root"
