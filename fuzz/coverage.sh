#!/bin/bash
# Coverage of each fuzz target's corpus (seeds, regressions and what the runs grew), for the
# station files the target is about: `fuzz/coverage.sh [TARGET...]` (default: every target).
# Needs the nightly toolchain and an LLVM whose major version matches nightly's
# (LLVM_BIN, default /usr/lib/llvm-22/bin: Debian's llvm-22). Writes fuzz/logs/coverage-summary.txt
# and fuzz/logs/coverage-TARGET-functions.txt.
set -u
cd "$(dirname "$0")/.."
LLVM_BIN=${LLVM_BIN:-/usr/lib/llvm-22/bin}
REG=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/mcumgr-toolkit-0.20.* 2>/dev/null | head -1)
B=target/x86_64-unknown-linux-gnu/coverage/x86_64-unknown-linux-gnu/release
declare -A FILES=(
  [frames]="src/device/v1/frame.rs"
  [responses]="src/device/v1/protocol.rs src/device/v1/link.rs"
  [csr]="src/attestation/x509/mint.rs"
  [ek]="src/device/tpm.rs src/attestation/tpm.rs"
  [dps_answers]="src/dps/upload/client.rs src/dps/upload/mod.rs src/dps/upload/compare.rs src/dps/upload/verify.rs"
  [smp]="src/device/smp/layout.rs $REG/src/transport/serial.rs"
  [config]="src/config/load.rs src/config/model.rs src/config/label.rs src/config/fixtures.rs src/domain/registration_id.rs src/domain/label.rs"
)
targets=("$@"); [ ${#targets[@]} -eq 0 ] && targets=(frames responses csr ek dps_answers smp config)
mkdir -p fuzz/logs
for t in "${targets[@]}"; do
  mkdir -p fuzz/corpus-run/$t fuzz/regressions/$t
  cargo +nightly fuzz coverage $t fuzz/corpus-run/$t fuzz/corpus/$t fuzz/regressions/$t \
    --llvm-path "$LLVM_BIN" > fuzz/logs/coverage-$t.log 2>&1 || { echo "$t: coverage failed (fuzz/logs/coverage-$t.log)"; continue; }
  # llvm-cov prints the paths absolute, or without their common leading "/".
  strip="s#/\?${PWD#/}/##; s#/\?${REG#/}#${REG##*/}#"
  {
    echo "== $t"
    "$LLVM_BIN/llvm-cov" report $B/$t -instr-profile=fuzz/coverage/$t/coverage.profdata ${FILES[$t]} 2>&1 | sed "$strip"
  } >> fuzz/logs/coverage-summary.txt
  "$LLVM_BIN/llvm-cov" report $B/$t -instr-profile=fuzz/coverage/$t/coverage.profdata --show-functions ${FILES[$t]} 2>&1 \
    | sed "$strip" > fuzz/logs/coverage-$t-functions.txt
done
