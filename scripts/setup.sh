#!/usr/bin/env bash
# Installs what building and testing sluice needs on a Debian 12 machine
# that already has a Rust toolchain. Safe to run again: each step checks
# first and does nothing when its tool is already there.
#
#   scripts/setup.sh           build and test system packages, then the test
#                              brokers (tansu, and nisshi 0.7 for the Kafka
#                              transaction tests): what `make test` needs
#   scripts/setup.sh --system  the build's system packages only: what
#                              compiling and `make run` need
set -euo pipefail

# librocksdb-sys runs bindgen, which needs libclang; tansu's sqlite storage
# (libsql-ffi) builds with cmake and bindgen. The Kafka client (librdkafka)
# links the system's OpenSSL for TLS and SASL SCRAM, and libcurl for
# OAUTHBEARER/OIDC token requests, both found through pkg-config; libsasl2
# serves Kerberos (GSSAPI), built only with the `gssapi` cargo feature.
BUILD_PACKAGES=(
    libclang-dev cmake
    pkg-config libssl-dev libcurl4-openssl-dev
    libsasl2-dev
)
# Only the tests need these: a headless browser for the web UI test
# (tests/http.rs).
TEST_PACKAGES=(
    chromium
)

# The real Kafka-protocol broker the integration tests start (see
# docs/ARCHITECTURE.md, "Brokers for tests and examples").
TANSU_VERSION=0.6.0
TANSU_FEATURES=dynostore,libsql

# The broker of the Kafka sink's transaction tests (tests/sink.rs): nisshi
# 0.7 commits transactions, keeps offsets committed in them and holds
# read_committed fetches at the last stable offset (tansu 0.6 has no
# EndTxn; nisshi 0.8 refuses transactional producers). It goes into its own
# root so it never replaces another nisshi. Its `rama` dependencies declare
# Rust 1.96 but build with 1.95, hence --ignore-rust-version.
NISSHI_VERSION=0.7.0
NISSHI_FEATURES=dynostore,libsql
NISSHI_ROOT="$HOME/.cache/sluice-nisshi-$NISSHI_VERSION"

log() { printf 'setup: %s\n' "$*"; }

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        log "need root to run: $*" >&2
        exit 1
    fi
}

# Installs the packages given that are missing.
ensure_apt_packages() {
    local missing=() pkg
    for pkg in "$@"; do
        if ! dpkg -s "$pkg" >/dev/null 2>&1; then
            missing+=("$pkg")
        fi
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        log "system packages present: $*"
        return
    fi
    log "installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

ensure_rust_components() {
    # `make lint` needs both; rustup cannot fetch them here, so say so early.
    local tool
    for tool in rustfmt clippy; do
        if ! cargo "${tool/rustfmt/fmt}" --version >/dev/null 2>&1; then
            log "warning: cargo $tool is not available (rustup component add $tool)" >&2
        fi
    done
}

tansu_bin() {
    if [[ -n ${TANSU_BIN:-} ]]; then
        echo "$TANSU_BIN"
    elif command -v tansu >/dev/null 2>&1; then
        command -v tansu
    else
        echo "${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
    fi
}

ensure_tansu() {
    local bin
    bin=$(tansu_bin)
    if [[ -x $bin ]] && "$bin" --version 2>/dev/null | grep -qw "$TANSU_VERSION"; then
        log "tansu $TANSU_VERSION present: $bin"
        return
    fi
    log "installing tansu $TANSU_VERSION with cargo (10 to 30 minutes on 2 cores the first time)"
    # A kept target dir makes a re-run after an interruption incremental.
    CARGO_TARGET_DIR="$HOME/.cache/tansu-target" \
        cargo install tansu --version "$TANSU_VERSION" --locked \
        --features "$TANSU_FEATURES"
    bin="${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
    log "installed $("$bin" --version) at $bin"
}

ensure_nisshi() {
    local bin="$NISSHI_ROOT/bin/nisshi"
    if [[ -x $bin ]] && "$bin" --version 2>/dev/null | grep -qw "$NISSHI_VERSION"; then
        log "nisshi $NISSHI_VERSION present: $bin"
        return
    fi
    log "installing nisshi $NISSHI_VERSION with cargo (15 to 25 minutes on 2 cores the first time)"
    CARGO_TARGET_DIR="$HOME/.cache/nisshi-target" \
        cargo install nisshi --version "$NISSHI_VERSION" --locked --ignore-rust-version \
        --features "$NISSHI_FEATURES" --root "$NISSHI_ROOT"
    log "installed $("$bin" --version) at $bin"
}

main() {
    if ! command -v cargo >/dev/null 2>&1; then
        log "cargo not found: install a Rust toolchain (rustup) first" >&2
        exit 1
    fi
    case "${1:-}" in
        --system)
            ensure_apt_packages "${BUILD_PACKAGES[@]}"
            ;;
        "")
            ensure_apt_packages "${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}"
            ensure_rust_components
            ensure_tansu
            ensure_nisshi
            ;;
        *)
            log "usage: $0 [--system]" >&2
            exit 2
            ;;
    esac
}

main "$@"
