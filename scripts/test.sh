#!/usr/bin/env bash
# Runs every test: Rust unit and integration tests (rumqttc and raw bytes), then the interop
# suite (Python paho-mqtt, mosquitto_pub/sub) against the built binary. Installs missing test
# dependencies first.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

echo "== cargo test" >&2
cargo test --locked

echo "== interop: paho-mqtt and mosquitto clients against target/debug/mqtt-lab" >&2
cargo build --locked --bin mqtt-lab
MQTT_LAB_BIN="$PWD/target/debug/mqtt-lab" python3 -m pytest -q tests/interop
