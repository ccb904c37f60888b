#!/usr/bin/env bash
# Installs what the test suite needs beyond Rust: Mosquitto and its command-line clients, an X server
# with software OpenGL for the real-window smoke test, Chromium, certutil and npm for the browser
# test (Debian packages), the Python packages of the interop suite and the browser test's npm
# packages (tests/browser). Does nothing for what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[[ $(id -u) == 0 ]] || SUDO="sudo"

missing=()
command -v mosquitto_pub >/dev/null || missing+=(mosquitto-clients)
# The bridge tests' remote broker.
[[ -x /usr/sbin/mosquitto ]] || command -v mosquitto >/dev/null || missing+=(mosquitto)
command -v python3 >/dev/null || missing+=(python3 python3-pip)
# jemalloc (the broker's allocator) is built from C: a compiler and make.
command -v cc >/dev/null || missing+=(gcc libc6-dev)
command -v make >/dev/null || missing+=(make)
command -v Xvfb >/dev/null || missing+=(xvfb)
command -v import >/dev/null || missing+=(imagemagick)
command -v xdotool >/dev/null || missing+=(xdotool)
# The packet trace's pcap files are read back by tshark.
command -v tshark >/dev/null || missing+=(tshark)
# The mDNS tests make their own network namespace.
command -v ip >/dev/null || missing+=(iproute2)
# The browser test: Debian's Chromium, certutil for its NSS database, npm for the page's packages.
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
command -v certutil >/dev/null || missing+=(libnss3-tools)
command -v npm >/dev/null || missing+=(npm)
# What a desktop has and the window needs: X11 client libraries and Mesa's software OpenGL.
for lib in libGL.so.1 libEGL.so.1 libxkbcommon-x11.so.0 libXcursor.so.1 libXi.so.6 libXrandr.so.2 libX11-xcb.so.1; do
    if ! ldconfig -p | grep -q "$lib"; then
        missing+=(libgl1 libgl1-mesa-dri libegl1 libegl-mesa0 libxkbcommon-x11-0 libxcursor1 libxi6 libxrandr2 libx11-xcb1)
        break
    fi
done
if ((${#missing[@]})); then
    echo "installing ${missing[*]}" >&2
    $SUDO apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

if ! python3 -c 'import paho.mqtt, pytest, zeroconf, mqttsn12, sys; sys.exit(int(paho.mqtt.__version__.split(".")[0]) < 2)' 2>/dev/null; then
    echo "installing Python packages from tests/interop/requirements.txt" >&2
    python3 -m pip install -q -r tests/interop/requirements.txt 2>/dev/null ||
        python3 -m pip install -q --break-system-packages -r tests/interop/requirements.txt
fi

# npm ci when node_modules is missing or older than the lock file.
browser=tests/browser
if [[ ! -f $browser/node_modules/.package-lock.json ||
      $browser/package-lock.json -nt $browser/node_modules/.package-lock.json ]]; then
    echo "installing the browser test's npm packages (npm ci in $browser)" >&2
    (cd "$browser" && npm ci --no-audit --no-fund >&2)
fi
