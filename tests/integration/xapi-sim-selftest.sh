#!/usr/bin/env bash
# The XAPI simulator's own self-test: its wire format, CBT semantics, NBD
# faults and HTTP handlers, checked with independent clients.
source "$(dirname "$0")/../functions.sh"
requires python3 nbdkit openssl
bash "$CBT_SOURCE_DIR/scripts/xapi-sim/selftest.sh"
