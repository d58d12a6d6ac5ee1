#!/usr/bin/env bash
# Builds the packages this host can build, into target/package/out with SHA256SUMS:
#   Linux: the .deb (app + `keyferry` CLI + completions + man pages), the AppImage when
#          linuxdeploy can be downloaded, and a CLI tarball;
#   macOS: Keyferry.app and the .dmg, and a CLI tarball; universal (arm64 + x86_64, lipo)
#          when both Rust targets are installed, else the host's architecture.
#
#   scripts/package.sh [--debug] [--deb-only]
#
# --debug: the debug profile (faster to build; what scripts/package-test.sh installs).
# --deb-only: Linux, only the .deb (no AppImage, no tarball).
# The Tauri CLI comes prebuilt from npm (@tauri-apps/cli@2, kept in target/npm).
# macOS signing/notarization: Tauri's own variables (APPLE_SIGNING_IDENTITY, APPLE_CERTIFICATE,
# APPLE_API_KEY/APPLE_API_ISSUER/APPLE_API_KEY_PATH or APPLE_ID/APPLE_PASSWORD/APPLE_TEAM_ID);
# without them the app is left unsigned.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

profile=release deb_only=0
for a in "$@"; do
  case $a in
    --debug) profile=debug ;;
    --deb-only) deb_only=1 ;;
    *) echo "usage: $0 [--debug] [--deb-only]" >&2; exit 2 ;;
  esac
done
cargo_profile=(); tauri_profile=()
[ "$profile" = release ] && cargo_profile=(--release)
[ "$profile" = debug ] && tauri_profile=(--debug)

target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target=$root/$target ;; esac
export CARGO_TARGET_DIR=$target
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
# Paths named in src-tauri/tauri.conf.json (bundle.linux.deb.files) and the results.
stage=$root/target/package/stage
out=$root/target/package/out
rm -rf "$stage" "$out"
mkdir -p "$stage/completions" "$stage/man1" "$out"

tauri=$root/target/npm/node_modules/.bin/tauri
if [ ! -x "$tauri" ]; then
  echo "== npm install @tauri-apps/cli@2 (into target/npm)"
  mkdir -p target/npm
  npm install --silent --no-audit --no-fund --prefix target/npm @tauri-apps/cli@2
fi

# The CLI and what is generated from it: completions and man pages come from the very binary
# that ships, so they cannot drift from its parser.
stage_cli() { # $1: the keyferry binary to ship (runnable on this host)
  install -m 0755 "$1" "$stage/keyferry"
  "$stage/keyferry" completions bash >"$stage/completions/keyferry.bash"
  "$stage/keyferry" completions zsh >"$stage/completions/_keyferry"
  "$stage/keyferry" completions fish >"$stage/completions/keyferry.fish"
  "$stage/keyferry" man "$stage/man1"
  gzip -9n "$stage"/man1/*.1
}

cli_tarball() { # $1: platform suffix
  local name=keyferry-$version-$1 dir
  dir=$(mktemp -d)
  mkdir -p "$dir/$name"
  cp -R "$stage/keyferry" "$stage/completions" "$stage/man1" "$dir/$name/"
  cp README.md "$dir/$name/"
  tar -C "$dir" -czf "$out/$name.tar.gz" "$name"
  rm -rf "$dir"
}

case $(uname -s) in
Linux)
  echo "== CLI ($profile)"
  cargo build ${cargo_profile[@]+"${cargo_profile[@]}"} --locked --bin keyferry
  stage_cli "$target/$profile/keyferry"
  bundles=$target/$profile/bundle
  rm -rf "$bundles"
  echo "== app: .deb ($profile)"
  (cd src-tauri && "$tauri" build ${tauri_profile[@]+"${tauri_profile[@]}"} --bundles deb -- --locked)
  cp "$bundles"/deb/*.deb "$out/"
  if [ "$deb_only" = 0 ]; then
    echo "== app: AppImage ($profile)"
    # Tauri downloads linuxdeploy and its plugins from GitHub at bundling time.
    if (cd src-tauri && "$tauri" build ${tauri_profile[@]+"${tauri_profile[@]}"} --bundles appimage -- --locked) \
        >"$target/appimage.log" 2>&1; then
      cp "$bundles"/appimage/*.AppImage "$out/"
    else
      echo "!! AppImage SKIPPED: Tauri's AppImage bundler downloads linuxdeploy from GitHub," >&2
      echo "!! which this host cannot reach (or it failed otherwise). The last lines of its log" >&2
      echo "!! ($target/appimage.log):" >&2
      tail -n 5 "$target/appimage.log" | sed 's/^/!!   /' >&2
    fi
    cli_tarball "linux-$(uname -m)"
  fi
  ;;
Darwin)
  arches=(aarch64-apple-darwin x86_64-apple-darwin)
  installed=$(rustup target list --installed 2>/dev/null || true)
  if grep -q aarch64-apple-darwin <<<"$installed" && grep -q x86_64-apple-darwin <<<"$installed"; then
    echo "== CLI ($profile, universal)"
    for t in "${arches[@]}"; do cargo build ${cargo_profile[@]+"${cargo_profile[@]}"} --locked --bin keyferry --target "$t"; done
    lipo -create -output "$target/keyferry-universal" \
      "$target/aarch64-apple-darwin/$profile/keyferry" "$target/x86_64-apple-darwin/$profile/keyferry"
    stage_cli "$target/keyferry-universal"
    app_target=(--target universal-apple-darwin)
    bundles=$target/universal-apple-darwin/$profile/bundle
    suffix=macos-universal
  else
    echo "== CLI ($profile, $(uname -m) only: rustup target add ${arches[*]} for universal)"
    cargo build ${cargo_profile[@]+"${cargo_profile[@]}"} --locked --bin keyferry
    stage_cli "$target/$profile/keyferry"
    app_target=()
    bundles=$target/$profile/bundle
    suffix=macos-$(uname -m)
  fi
  if [ -n "${APPLE_SIGNING_IDENTITY:-}" ]; then
    codesign --force --options runtime --timestamp --sign "$APPLE_SIGNING_IDENTITY" "$stage/keyferry"
  fi
  echo "== app: .app and .dmg ($profile)"
  rm -rf "$bundles"
  (cd src-tauri && "$tauri" build ${tauri_profile[@]+"${tauri_profile[@]}"} ${app_target[@]+"${app_target[@]}"} --bundles app,dmg -- --locked)
  cp "$bundles"/dmg/*.dmg "$out/"
  tar -C "$bundles/macos" -czf "$out/Keyferry-$version-$suffix.app.tar.gz" Keyferry.app
  cli_tarball "$suffix"
  ;;
*)
  echo "keyferry: no packages for $(uname -s)" >&2
  exit 1
  ;;
esac

sum=(sha256sum); command -v sha256sum >/dev/null || sum=(shasum -a 256)
(cd "$out" && files=(*) && "${sum[@]}" -- "${files[@]}" >SHA256SUMS)
echo "== packages in $out:"
ls -l "$out"
