#!/usr/bin/env bash
# Builds the browser page into web/www/ (index.html, app.js, pkg/ with the wasm and its JS glue).
# Installs nothing: when a tool is missing it stops with the line that installs it.
#   web/build.sh            then serve web/www/ on http://127.0.0.1 (see README, "In the browser")
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd .. && pwd)
# The JS glue must come from the wasm-bindgen-cli of the exact wasm-bindgen in Cargo.lock.
bindgen_version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3 }' "$root/Cargo.lock")
rustc_web=${RUSTC_WEB:-/usr/bin/rustc}
cargo_web=${CARGO_WEB:-/usr/bin/cargo}
missing() { echo "web/build.sh: $1; install it with:" >&2; echo "  $2" >&2; exit 2; }
# rustup cannot fetch the wasm32 standard library here; Debian's rustc-web (1.96) builds it from
# its own source (rust-web-src) with -Zbuild-std.
[ -x "$rustc_web" ] && "$rustc_web" --version | grep -q '^rustc 1\.\(9[0-9]\|[1-9][0-9][0-9]\)' \
  || missing "Debian's rustc-web (rustc 1.90 or newer at $rustc_web) not found" \
             "apt-get install -y rustc-web cargo-web rust-web-src lld-22"
[ -x "$cargo_web" ] || missing "cargo-web's cargo not found at $cargo_web" "apt-get install -y cargo-web"
sysroot=$("$rustc_web" --print sysroot)
[ -f "$sysroot/lib/rustlib/src/rust/library/Cargo.lock" ] \
  || missing "the standard library's source for $rustc_web is missing" "apt-get install -y rust-web-src"
# rustc-web links wasm with rust-lld, a link to lld-22 that the packages do not pull in.
[ -x "$(readlink -f /usr/bin/rust-lld)" ] \
  || missing "rust-lld (/usr/bin/rust-lld -> lld-22) not found" "apt-get install -y lld-22"
command -v wasm-bindgen >/dev/null \
  || missing "wasm-bindgen (the CLI) not found" "cargo install wasm-bindgen-cli --version $bindgen_version"
have=$(wasm-bindgen --version | awk '{print $2}')
[ "$have" = "$bindgen_version" ] \
  || missing "wasm-bindgen $have does not match wasm-bindgen $bindgen_version in Cargo.lock" \
             "cargo install wasm-bindgen-cli --version $bindgen_version --force"
target_dir=${WEB_TARGET_DIR:-$root/target/web}
RUSTC="$rustc_web" RUSTC_BOOTSTRAP=1 "$cargo_web" build --release --locked -p fmnist-web \
  --target wasm32-unknown-unknown -Zbuild-std=std,panic_abort --target-dir "$target_dir"
rm -rf www && mkdir -p www
wasm-bindgen --target web --no-typescript --out-dir www/pkg \
  "$target_dir/wasm32-unknown-unknown/release/fmnist_web.wasm"
cp index.html app.js www/
echo "web/build.sh: built $(du -sh www | cut -f1) in web/www ($(du -h www/pkg/fmnist_web_bg.wasm | cut -f1) of wasm)"
