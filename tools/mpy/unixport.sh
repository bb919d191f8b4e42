#!/usr/bin/env bash
# Builds a real MicroPython: the unix port with TLS (mbedTLS), from Debian's
# source package of MicroPython 1.25.0, into tools/mpy/unix-port/micropython.
# The device suite runs the device client on it over real sockets and real
# TLS (tests/device/test_device_unix_port.py), next to the WebAssembly VM.
#
# Why this build: it is the MicroPython project's own code for sockets
# (ports/unix/modsocket.c) and TLS (extmod/modtls_mbedtls.c), and the TLS
# socket it makes has the >= 1.25 shape (recv/send beside read/write, no
# settimeout), because Debian's mbedTLS is built with DTLS. Debian's source
# is used because it is reachable from here and pinned by checksum; its
# patches make the port build against the system's mbedTLS (libmbedtls-dev)
# instead of a git submodule. (Debian 12's mbedTLS, 2.28, matches the host
# name against a certificate's DNS names only: the tests' server certificate
# also names 127.0.0.1 as a DNS name, see tests/device/tlspeers.py.)
#
#   bash tools/mpy/unixport.sh          build if missing (idempotent, ~30 s)
#   bash tools/mpy/unixport.sh --force  rebuild
#
# Needs: curl, xz, patch, make, a C compiler and libmbedtls-dev
# (tools/setup_test_env.sh installs them).
set -euo pipefail
cd "$(dirname "$0")"
HERE=$(pwd)
OUT="$HERE/unix-port"
BIN="$OUT/micropython"
VERSION=1.25.0
DEB_VERSION=1.25.0+ds-1
POOL=http://deb.debian.org/debian/pool/main/m/micropython
ORIG=micropython_${VERSION}+ds.orig.tar.xz
DEBIAN=micropython_${DEB_VERSION}.debian.tar.xz
# From Debian 13 (trixie) main/source/Sources.
SUMS="7b25be99a502f070b2de81dafc08da7051d992325d6e67daa9045a918fffdbea  $ORIG
87cd89f7900c86b963885dabe25acf3e5348815993f1500278ad8f6464465af4  $DEBIAN"

fail() {
    echo "unixport: ERROR: $*" >&2
    exit 1
}

if [ "${1:-}" != "--force" ] && [ -x "$BIN" ] && [ -f "$OUT/perf_bench/misc_pystone.py" ] &&
    "$BIN" -c "import sys, tls; assert sys.implementation.version[:3] == ($(echo $VERSION | tr . ,))" 2>/dev/null; then
    echo "unixport: MicroPython $VERSION unix port already built ($BIN)"
    exit 0
fi

for tool in curl xz patch make cc; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool is missing (tools/setup_test_env.sh installs it)"
done
[ -f /usr/include/mbedtls/ssl.h ] || fail "the mbedTLS headers are missing (Debian package libmbedtls-dev)"

rm -rf "$OUT"
mkdir -p "$OUT/dl"
for f in $ORIG $DEBIAN; do
    curl -fsS --retry 3 -m 300 -o "$OUT/dl/$f" "$POOL/$f" ||
        fail "cannot download $POOL/$f (is deb.debian.org reachable?)"
done
(cd "$OUT/dl" && echo "$SUMS" | sha256sum -c --quiet) || fail "checksum mismatch for Debian's MicroPython $DEB_VERSION sources"

SRC="$OUT/src"
mkdir -p "$SRC"
tar -xJf "$OUT/dl/$ORIG" -C "$SRC" --strip-components=1
tar -xJf "$OUT/dl/$DEBIAN" -C "$SRC"
while read -r p; do
    [ -n "$p" ] || continue
    patch -d "$SRC" -p1 -s <"$SRC/debian/patches/$p" || fail "Debian patch $p does not apply"
done <"$SRC/debian/patches/series"

echo "unixport: building MicroPython $VERSION (unix port, mbedTLS) in $SRC"
log="$OUT/build.log"
make -C "$SRC/mpy-cross" -j2 >"$log" 2>&1 || fail "mpy-cross did not build; see $log"
make -C "$SRC/ports/unix" -j2 FROZEN_MANIFEST="$SRC/debian/config/manifest.py" \
    MICROPY_SSL_AXTLS=0 MICROPY_SSL_MBEDTLS=1 MICROPY_PY_BTREE=0 MICROPY_PY_FFI=0 MICROPY_PY_JNI=0 \
    >>"$log" 2>&1 || fail "the unix port did not build; see $log"
cp "$SRC/ports/unix/build-standard/micropython" "$BIN"
# MicroPython's own pystone (tests/perf_bench/misc_pystone.py, from the same
# checksummed sources): `crumb bench device` runs it in the VM as the baseline
# for its board estimates (docs/device.md). Used from here, not copied into crumb.
mkdir -p "$OUT/perf_bench"
cp "$SRC/tests/perf_bench/misc_pystone.py" "$OUT/perf_bench/"
rm -rf "$OUT/dl" "$SRC"  # only the binary is kept (the sources and objects are ~110 MB)
"$BIN" -c "import tls, socket" || fail "the built MicroPython has no tls module"
echo "unixport: built $("$BIN" -c 'import sys; print(sys.implementation.name, "%d.%d.%d" % sys.implementation.version[:3])') at $BIN"
