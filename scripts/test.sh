#!/usr/bin/env bash
# Runs every test: Rust unit and integration tests (rumqttc, raw bytes, egui_kittest), the
# interop suite (Python paho-mqtt, mosquitto_pub/sub, Paho JavaScript and MQTT.js in headless
# Chromium) against the built binary, and the real window under Xvfb (screenshots in
# target/gui-smoke/). Installs missing test dependencies first.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

echo "== cargo test" >&2
cargo test --locked

cargo build --locked --bin mqtt-lab
echo "== the real window under Xvfb" >&2
MQTT_LAB_BIN="$PWD/target/debug/mqtt-lab" scripts/gui-smoke.sh

echo "== interop: paho-mqtt, mosquitto clients and a browser against target/debug/mqtt-lab" >&2
MQTT_LAB_BIN="$PWD/target/debug/mqtt-lab" python3 -m pytest -q tests/interop
