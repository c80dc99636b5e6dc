#!/usr/bin/env bash
# The app's inference core on linux-aarch64 (a 64-bit Raspberry Pi) without a Pi: `make pi-check`.
#
# 1. qemu-user-static (Debian's; installed with apt-get when missing) runs aarch64 binaries directly. binfmt_misc
#    is not needed: every aarch64 program is started as `qemu-aarch64-static -cpu CPU -L PREFIX ...`.
# 2. An aarch64 sysroot of Debian bookworm (= Raspberry Pi OS Bookworm: Python 3.11.2, glibc 2.36), made without
#    touching the host's dpkg: a private apt configuration for arm64 under .pi-sysroot/apt, `apt-get download`
#    of python3.11, libpython3.11 and libstdc++6 with their dependencies (less perl, dpkg and tar), each .deb
#    unpacked with `dpkg-deb -x` into .pi-sysroot/root.
# 3. requirements-edge.txt's aarch64 wheels (`pip download --platform manylinux..._aarch64 --only-binary=:all:`
#    on the host), installed with `pip install --target` into the sysroot's /usr/lib/python3/dist-packages.
# 4. Under emulation, for each CPU (PI_CPUS; default cortex-a72 = Raspberry Pi 4, cortex-a76 = Raspberry Pi 5):
#    `python -m edge_app.launcher --selftest`, then `build/pi_check.py screen` over the test split of
#    runs/default/manifest.csv (images read from ../shared/datasets/all-4class, never copied).
# 5. The same screen with the x86 edge environment (.venv-edge), and `build/pi_check.py compare`: outcome, class
#    and refer reasons of every image, the largest probability difference. Exit 0 when every prediction is identical.
# 6. Only with PI_BUILD=1: the PyInstaller build (build/smearscope.spec) run by the emulated Python, and the built
#    aarch64 executable's --selftest under emulation (docs/desktop.md says what that needs).
#
# Steps 2-3 are cached in .pi-sysroot/ (ignored by git), keyed on the package lists and requirements-edge.txt:
# `rm -rf .pi-sysroot` for a cold run. Results: .pi-sysroot/results/{x86_64,aarch64-CPU}.json and summary.json.
# Environment: PI_CPUS, PI_LIMIT (screen only the first N test images; 0: all), PI_BUILD, PI_SYSROOT (cache
# folder), PI_RESULTS (results folder), PI_DATASET (images), EDGE_PYTHON (x86 Python, default .venv-edge/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=${PI_SYSROOT:-$ROOT/.pi-sysroot}
SYSROOT=$CACHE/root
SITE=$SYSROOT/usr/lib/python3/dist-packages  # on Debian's sys.path and site.getsitepackages() (PyInstaller)
RESULTS=${PI_RESULTS:-$CACHE/results}
CPUS=${PI_CPUS:-cortex-a72 cortex-a76}
EDGE_PYTHON=${EDGE_PYTHON:-$ROOT/.venv-edge/bin/python}
LIMIT=${PI_LIMIT:-0}
BUILD=${PI_BUILD:-0}
DATASET=${PI_DATASET:-$ROOT/../shared/datasets/all-4class}
# Debian bookworm arm64 packages of the sysroot: these and their dependencies (Depends and Pre-Depends only).
# libpython3.11: the shared library a PyInstaller bundle needs (Debian's python3.11 is linked statically).
PACKAGES=(python3.11 libpython3.11 libstdc++6)
# Dependencies the interpreter never loads (package tools and their perl), left out.
SKIP='^(dpkg|install-info|tar|perl|perl-base|perl-modules-.*|libperl.*|mailcap|mime-support|libgdbm-compat4)$'
# Every manylinux tag glibc 2.36 accepts (pip does not widen manylinux_2_N to older tags by itself).
PLATFORMS=(--platform manylinux2014_aarch64)
for n in $(seq 17 36); do PLATFORMS+=(--platform "manylinux_2_${n}_aarch64"); done
PIP_TARGET=(--disable-pip-version-check --quiet --only-binary=:all: "${PLATFORMS[@]}" --python-version 3.11
    --implementation cp --abi cp311)

say() { printf '[pi-check %4ss] %s\n' "$SECONDS" "$*" >&2; }
apt_install() {  # PACKAGE...: Debian packages on the host, when missing
    say "installing $* (apt-get)"
    { DEBIAN_FRONTEND=noninteractive timeout 900 apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends "$@"; } \
        >"$CACHE/apt-get.log" 2>&1 || { tail -n 20 "$CACHE/apt-get.log" >&2; echo "error: could not install $*" >&2; exit 2; }
}
wheels() {  # TARGET REQUIREMENTS-FILE: its aarch64 wheels, dependencies included, installed into TARGET
    rm -rf "$1" "$CACHE/wheels"
    # (sed: pip warns once per package about a pip configuration's find-links folders that do not exist here)
    "$EDGE_PYTHON" -m pip download "${PIP_TARGET[@]}" --dest "$CACHE/wheels" -r "$2" 2>&1 |
        sed '/is ignored: it is neither a file nor a directory/d' >&2
    "$EDGE_PYTHON" -m pip install "${PIP_TARGET[@]}" --no-index --find-links "$CACHE/wheels" --no-deps \
        --target "$1" "$CACHE/wheels"/*.whl 2>&1 | sed '/is ignored: it is neither a file nor a directory/d' >&2
    rm -rf "$CACHE/wheels"
}
mkdir -p "$CACHE"

# --- 1. qemu ---------------------------------------------------------------------------------------------------
command -v qemu-aarch64-static >/dev/null 2>&1 || apt_install qemu-user-static
QEMU=$(command -v qemu-aarch64-static)
say "$("$QEMU" --version | head -n 1)"

# --- 2. the sysroot -------------------------------------------------------------------------------------------
APT=$CACHE/apt
apt_arm64() { APT_CONFIG=$APT/apt.conf "$@"; }
sysroot_stamp=$(echo "${PACKAGES[*]} $SKIP" | sha256sum | cut -c1-16)
if [ ! -f "$SYSROOT/.complete-$sysroot_stamp" ]; then
    say "making the aarch64 sysroot (Debian bookworm arm64) in $SYSROOT"
    rm -rf "$APT" "$SYSROOT" "$CACHE/debs" "$CACHE/cpu" "$CACHE/pycache"
    mkdir -p "$APT/state/lists/partial" "$APT/cache/archives/partial" "$APT/sources" "$APT/preferences" "$CACHE/debs"
    touch "$APT/state/status"  # nothing installed: every dependency is resolved
    # The host's Debian sources (bookworm, -updates, -security), asked for arm64 only.
    cp /etc/apt/sources.list.d/debian.sources "$APT/sources/" 2>/dev/null ||
        grep -h '^deb ' /etc/apt/sources.list >"$APT/sources/debian.list"
    cat >"$APT/apt.conf" <<EOF
APT::Architecture "arm64";
APT::Architectures { "arm64"; };
Dir::State "$APT/state";
Dir::State::status "$APT/state/status";
Dir::Cache "$APT/cache";
Dir::Etc::SourceList "/dev/null";
Dir::Etc::SourceParts "$APT/sources";
Dir::Etc::Preferences "/dev/null";
Dir::Etc::PreferencesParts "$APT/preferences";
Acquire::Languages "none";
APT::Sandbox::User "root";
EOF
    apt_arm64 timeout 900 apt-get update -qq
    mapfile -t debs < <(apt_arm64 apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
        --no-breaks --no-replaces --no-enhances "${PACKAGES[@]}" | grep -v '^ ' | grep -v '^<' | sort -u | grep -Ev "$SKIP")
    say "downloading ${#debs[@]} arm64 packages"
    (cd "$CACHE/debs" && apt_arm64 timeout 900 apt-get download -qq "${debs[@]}")
    mkdir -p "$SYSROOT"
    for deb in "$CACHE/debs"/*.deb; do dpkg-deb -x "$deb" "$SYSROOT"; done
    (cd "$CACHE/debs" && ls -1 ./*.deb) >"$SYSROOT/.packages"
    rm -rf "$CACHE/debs" "$APT/cache/archives"
    touch "$SYSROOT/.complete-$sysroot_stamp"
fi
PYTHON_AARCH64=$SYSROOT/usr/bin/python3.11

# --- 3. the aarch64 wheels ------------------------------------------------------------------------------------
stamp=$(sha256sum requirements-edge.txt | cut -c1-16)
if [ ! -f "$SITE/.complete-$stamp" ]; then
    say "installing requirements-edge.txt's aarch64 wheels into $SITE"
    wheels "$SITE" requirements-edge.txt
    touch "$SITE/.complete-$stamp"
fi

# --- per-CPU prefixes -----------------------------------------------------------------------------------------
# A Raspberry Pi's /proc/cpuinfo for each CPU. qemu-user passes the host's (x86) /proc/cpuinfo through, and
# XNNPACK's cpuinfo library, which reads it on arm64 Linux for the cores' microarchitecture, then crashes
# (segmentation fault in the first Interpreter(), seen with ai-edge-litert 2.3.0 and qemu 7.2). qemu-user opens
# PREFIX/path instead of /path where that exists, so each CPU gets a prefix folder: the sysroot's top folders
# (links) plus proc/cpuinfo of that Pi's cores, one entry per host CPU (/sys/devices/system/cpu is the host's).
# The instruction set (HWCAP: which kernels XNNPACK may pick) comes from qemu's -cpu model itself.
cpuinfo() {  # CPU -> one core's /proc/cpuinfo lines after "processor"
    case $1 in
        cortex-a72) printf 'BogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n' ;;
        cortex-a76) printf 'BogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0b\nCPU revision\t: 1\n' ;;
        *) echo "error: no /proc/cpuinfo known for $1 (PI_CPUS: cortex-a72, cortex-a76)" >&2; return 1 ;;
    esac
}
make_prefix() {  # CPU: $CACHE/cpu/CPU, made again only when it would differ (another run may be using it)
    local dir=$CACHE/cpu/$1 entry n text
    text=$(for ((n = 0; n < $(getconf _NPROCESSORS_CONF); n++)); do printf 'processor\t: %s\n' "$n"; cpuinfo "$1"; echo; done)
    [ -f "$dir/.made-$sysroot_stamp" ] && [ "$(cat "$dir/proc/cpuinfo")" = "$text" ] && return 0
    rm -rf "$dir"
    mkdir -p "$dir/proc"
    for entry in "$SYSROOT"/*; do ln -s "$entry" "$dir/${entry##*/}"; done
    printf '%s\n' "$text" >"$dir/proc/cpuinfo"
    touch "$dir/.made-$sysroot_stamp"
}
for cpu in $CPUS; do cpuinfo "$cpu" >/dev/null || exit 2; done
for cpu in $CPUS; do make_prefix "$cpu"; done
aarch64() {  # CPU ARGS...: python3.11 ARGS under qemu on that CPU, in a clean environment
    local cpu=$1
    shift
    env -i PATH=/usr/bin:/bin HOME="$CACHE" LANG=C.UTF-8 PYTHONNOUSERSITE=1 PYTHONPATH="$ROOT" \
        PYTHONPYCACHEPREFIX="$CACHE/pycache" "$QEMU" -cpu "$cpu" -L "$CACHE/cpu/$cpu" "$PYTHON_AARCH64" "$@"
}

# --- 4. under emulation ---------------------------------------------------------------------------------------
mkdir -p "$RESULTS"
rm -f "$RESULTS"/*.json
screen_args=(--dataset "$DATASET" --limit "$LIMIT")
status=0
for cpu in $CPUS; do
    say "aarch64 ($cpu): $(aarch64 "$cpu" -c 'import platform, sys; print(platform.machine(), " ".join(platform.libc_ver()), "Python", sys.version.split()[0])')"
    say "aarch64 ($cpu): python -m edge_app.launcher --selftest"
    aarch64 "$cpu" -m edge_app.launcher --selftest | tee "$RESULTS/selftest-aarch64-$cpu.json" >&2
    grep -q '"selftest": "ok"' "$RESULTS/selftest-aarch64-$cpu.json" || { echo "error: selftest failed on $cpu" >&2; status=1; }
    say "aarch64 ($cpu): screening the test split"
    aarch64 "$cpu" build/pi_check.py screen "${screen_args[@]}" --out "$RESULTS/aarch64-$cpu.json"
done

# --- 5. x86 and the comparison --------------------------------------------------------------------------------
say "x86_64: screening the test split with $EDGE_PYTHON"
"$EDGE_PYTHON" build/pi_check.py screen "${screen_args[@]}" --out "$RESULTS/x86_64.json"
say "comparing"
compare=("$EDGE_PYTHON" build/pi_check.py compare "$RESULTS/x86_64.json")
for cpu in $CPUS; do compare+=("$RESULTS/aarch64-$cpu.json"); done
"${compare[@]}" --out "$RESULTS/summary.json" || status=1

# --- 6. PI_BUILD=1: the desktop executable for aarch64 ---------------------------------------------------------
if [ "$BUILD" = 1 ]; then
    cpu=${CPUS##* }  # the last CPU (default: cortex-a76)
    BUILD_SITE=$CACHE/build-site  # PyInstaller and its hooks: on PYTHONPATH for the build only
    stamp=$(cat requirements-build.txt requirements-edge.txt | sha256sum | cut -c1-16)
    if [ ! -f "$BUILD_SITE/.complete-$stamp" ]; then
        say "installing requirements-build.txt's aarch64 wheels into $BUILD_SITE"
        wheels "$BUILD_SITE" requirements-build.txt
        touch "$BUILD_SITE/.complete-$stamp"
    fi
    command -v aarch64-linux-gnu-objcopy >/dev/null 2>&1 || apt_install binutils-aarch64-linux-gnu
    # PyInstaller runs programs, and a program started from inside qemu-user runs natively (no binfmt_misc): an
    # aarch64 one fails with "Exec format error", the host's x86 one answers for the wrong machine. So the build's
    # PATH starts with host scripts that answer for the sysroot: ldd (the aarch64 loader's --list under qemu),
    # ldconfig -p (the sysroot's libraries; the host's cache lists x86 ones), objcopy and strip (cross binutils),
    # and sys.executable is a host script that starts the emulated Python again (PyInstaller's isolated hooks).
    HOSTBIN=$CACHE/hostbin
    PREFIX=$CACHE/cpu/$cpu
    rm -rf "$HOSTBIN"
    mkdir -p "$HOSTBIN"
    ln -s "$(command -v aarch64-linux-gnu-objcopy)" "$HOSTBIN/objcopy"
    ln -s "$(command -v aarch64-linux-gnu-strip)" "$HOSTBIN/strip"
    printf '#!/bin/sh\n"%s" -L "%s" "%s/lib/ld-linux-aarch64.so.1" --list "$@" | grep -v "^[[:space:]]*(0x"\n' \
        "$QEMU" "$PREFIX" "$PREFIX" >"$HOSTBIN/ldd"
    printf '#!/bin/sh\necho "libs found in cache"\nfor dir in /lib/aarch64-linux-gnu /usr/lib/aarch64-linux-gnu; do\n  for lib in "%s$dir"/*.so*; do echo "\t${lib##*/} (libc6,AArch64) => $dir/${lib##*/}"; done\ndone\n' \
        "$SYSROOT" >"$HOSTBIN/ldconfig"
    printf '#!/bin/sh\nexec "%s" -cpu %s -L "%s" -0 "$0" "%s" "$@"\n' "$QEMU" "$cpu" "$PREFIX" "$PYTHON_AARCH64" \
        >"$SYSROOT/usr/bin/python3.11-qemu"
    chmod +x "$HOSTBIN/ldd" "$HOSTBIN/ldconfig" "$SYSROOT/usr/bin/python3.11-qemu"
    DIST=$CACHE/dist
    say "aarch64 ($cpu): PyInstaller build/smearscope.spec -> $DIST/smearscope"
    started=$SECONDS
    env -i PATH="$HOSTBIN:/usr/bin:/bin" HOME="$CACHE" LANG=C.UTF-8 PYTHONNOUSERSITE=1 \
        PYTHONPATH="$BUILD_SITE" PYTHONPYCACHEPREFIX="$CACHE/pycache" \
        "$SYSROOT/usr/bin/python3.11-qemu" -m PyInstaller build/smearscope.spec --noconfirm --log-level WARN \
        --distpath "$DIST" --workpath "$CACHE/build-work" 2>&1 | sed "/could not resolve ''/d; /python3.11-qemu/d" >&2
    build_seconds=$((SECONDS - started))
    say "built in $build_seconds s: $(du -sm "$DIST/smearscope" | cut -f1) MB unpacked"
    # Every ELF file of the bundle must be aarch64 (a host library slipping in would be x86-64).
    foreign=$(find "$DIST/smearscope" -type f -exec sh -c 'head -c 4 "$1" | grep -q ELF && { od -An -tx2 -j18 -N2 "$1" | grep -qw 00b7 || echo "$1"; }' _ {} \;)
    [ -z "$foreign" ] || { echo "error: non-aarch64 ELF files in the bundle: $foreign" >&2; status=1; }
    # The onedir bootloader restarts itself with LD_LIBRARY_PATH set; that exec cannot re-enter qemu, so the
    # executable is started as that restarted process (PyInstaller 6: _PYI_PARENT_PROCESS_LEVEL=-1).
    say "aarch64 ($cpu): the built executable's --selftest"
    env -i PATH=/usr/bin:/bin HOME="$CACHE" LANG=C.UTF-8 _PYI_ARCHIVE_FILE="$DIST/smearscope/smearscope" \
        _PYI_PARENT_PROCESS_LEVEL=-1 LD_LIBRARY_PATH="$DIST/smearscope/_internal" \
        "$QEMU" -cpu "$cpu" -L "$PREFIX" "$DIST/smearscope/smearscope" --selftest | tee "$RESULTS/selftest-frozen-aarch64-$cpu.json" >&2
    grep -q '"selftest": "ok"' "$RESULTS/selftest-frozen-aarch64-$cpu.json" || { echo "error: frozen selftest failed" >&2; status=1; }
    # The rest of build/build.py, by the emulated Python: no training side in the bundle, the .tar.gz
    # (named linux-aarch64 there), the size by package (size-<date>.json/.md in the results folder).
    say "aarch64 ($cpu): build/build.py's checks, archive and size report"
    env -i PATH=/usr/bin:/bin HOME="$CACHE" LANG=C.UTF-8 PYTHONNOUSERSITE=1 PYTHONPATH="$ROOT/build:$BUILD_SITE" \
        PYTHONPYCACHEPREFIX="$CACHE/pycache" "$QEMU" -cpu "$cpu" -L "$PREFIX" "$PYTHON_AARCH64" -c '
import json, sys
from pathlib import Path
import build, size_report
folder, selftest, results = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text()), Path(sys.argv[3])
build.check_no_training_code(folder)
packed = build.archive(folder, selftest["app_version"])
data = size_report.report(folder, packed, {"build_seconds": float(sys.argv[4]), "selftest": selftest})
print(size_report.markdown(data), file=sys.stderr)
print(f"archive {packed}; written: {size_report.write_results(data, results)}", file=sys.stderr)
' "$DIST/smearscope" "$RESULTS/selftest-frozen-aarch64-$cpu.json" "$RESULTS" "$build_seconds" || status=1
fi
say "done (exit $status)"
exit $status
