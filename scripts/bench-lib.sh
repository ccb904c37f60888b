# What the benchmark scripts (bench.sh, bench-durability.sh, bench-scale.sh) share; sourced
# by them, with BENCH_NAME set to the name their log lines carry, after `cd` to the project.

log() { echo "[$BENCH_NAME $(date +%T)] $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# Builds the headless broker and the load generator in release; sets LAB_BIN and BENCH_BIN.
build_release() {
    log "building the headless broker and the load generator (release)"
    cargo build --release --locked --no-default-features --bin mqtt-lab --example bench >&2
    local target=${CARGO_TARGET_DIR:-$PWD/target}
    LAB_BIN=$target/release/mqtt-lab
    BENCH_BIN=$target/release/examples/bench
}

# Finds Debian's mosquitto, installing it if it is missing; sets MOSQUITTO and MOSQ_VERSION.
find_mosquitto() {
    MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
    if [[ ! -x $MOSQUITTO ]]; then
        log "installing Debian's mosquitto (the package may start a system broker on 1883: unused here)"
        local sudo=
        ((EUID == 0)) || sudo=sudo
        $sudo apt-get update -q >&2
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q mosquitto >&2
        MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
    fi
    MOSQ_VERSION=$("$MOSQUITTO" -h 2>/dev/null | head -1 | sed 's/^mosquitto //' || true)
}
