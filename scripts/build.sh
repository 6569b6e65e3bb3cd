#!/usr/bin/env bash
# Builds every Lambda of the workspace for AWS (provided.al2023, arm64) with
# `cargo lambda build --release --arm64`, zips each bootstrap and prints its size.
# cargo-lambda and zig come from PyPI into .venv when missing; the arm64 Rust target is added
# with rustup when absent. Output: target/lambda/<function>/bootstrap and bootstrap.zip.
set -euo pipefail
# shellcheck source=lib/stack.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/stack.sh"

ensure_cargo
ensure_venv
export PATH="$VENV/bin:$PATH"
rustup target list --installed 2>/dev/null | grep -q '^aarch64-unknown-linux-gnu$' ||
  rustup target add aarch64-unknown-linux-gnu

cd "$ROOT"
# The Lambda binaries: every [[bin]] of the crates under functions/.
mapfile -t functions < <(sed -n '/^\[\[bin\]\]/,/^name/ s/^name = "\(.*\)"/\1/p' functions/*/Cargo.toml)
[[ ${#functions[@]} -gt 0 ]] || die "no functions found under functions/"
packages=()
for f in "${functions[@]}"; do packages+=(--package "$f"); done
log "cargo lambda build --release --arm64 ${functions[*]}"
cargo lambda build --release --arm64 "${packages[@]}"

printf '\n%-26s %12s %12s\n' function bootstrap zipped
for f in "${functions[@]}"; do
  dir="target/lambda/$f"
  [[ -f "$dir/bootstrap" ]] || die "no bootstrap for $f in $dir"
  rm -f "$dir/bootstrap.zip"
  (cd "$dir" && python3 -c 'import zipfile,sys; z=zipfile.ZipFile(sys.argv[1],"w",zipfile.ZIP_DEFLATED,compresslevel=9); z.write("bootstrap"); z.close()' bootstrap.zip)
  printf '%-26s %10.2f MB %10.2f MB\n' "$f" \
    "$(stat -c %s "$dir/bootstrap" | awk '{print $1/1048576}')" \
    "$(stat -c %s "$dir/bootstrap.zip" | awk '{print $1/1048576}')"
done
