#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs every check CI runs: formatting, clippy, all tests.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
