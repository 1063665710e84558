#!/usr/bin/env bash
# Quick start: build AtlasVault, snapshot a folder into a local vault, restore it, verify it.
#   scripts/demo.sh [FOLDER]   (default: this repository's src/)
# Everything lands in ./demo/ (vault in ./demo/vault, restore in ./demo/restored); no server needed.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
vault=target/release/vault
src=${1:-src}
export VAULT_DIR=$PWD/demo/vault
rm -rf demo && mkdir -p demo
# The vault is encrypted; a real one takes its password from your secret store (a file only you
# can read, or VAULT_PASSWORD_COMMAND). The demo makes a random one.
head -c 24 /dev/urandom | base64 > demo/password
chmod 600 demo/password
export VAULT_PASSWORD_FILE=$PWD/demo/password
$vault init
$vault snapshot "$src"
$vault snapshot "$src"    # unchanged: reads nothing, adds almost nothing
$vault snapshots
$vault restore latest --target demo/restored
diff -r "$src" "demo/restored/$(basename "$(realpath "$src")")" && echo "restored tree is byte-identical"
$vault verify --read-data
$vault status
