#!/usr/bin/env bash
# Builds ngx_http_ollama_auth_module.so for one particular nginx binary.
#
# A dynamic module loads only into the nginx version, and the build options, it was built for.
# This script asks the binary (`nginx -V`) for both, configures that exact nginx source with
# those options, and builds the module against the result.
#
# Environment:
#   NGINX             the nginx binary (default: `nginx` on PATH)
#   NGINX_SOURCE_DIR  that version's source tree (default: download it from nginx.org)
#   OUT_DIR           where the .so goes (default: dist/)
#   WORK_DIR          scratch space (default: target/nginx-<version>)
#   DRY_RUN=1         print the version and configure arguments, build nothing
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
nginx=${NGINX:-nginx}
out_dir=${OUT_DIR:-$repo/dist}

die() { echo "build-module.sh: $*" >&2; exit 1; }
# nginx reads an environment variable of its own named NGINX (sockets passed on a binary
# upgrade), so it must not see ours.
run_nginx() { env -u NGINX "$nginx" "$@"; }

command -v "$nginx" >/dev/null 2>&1 || die "no nginx binary \"$nginx\" (set NGINX=/path/to/nginx)"
details=$(run_nginx -V 2>&1) || die "\"$nginx -V\" failed: $details"

version=$(sed -n 's#^nginx version: [^/]*/\([0-9.]*\).*#\1#p' <<<"$details")
[ -n "$version" ] || die "cannot read the version from \"$nginx -V\""
configure_line=$(sed -n 's/^configure arguments: //p' <<<"$details")

# Split the arguments as the shell that ran configure did (they contain quoted spaces), then
# keep what shapes nginx's structures and drop what only adds other modules or points at
# source trees this machine does not have.
mapfile -t all_args < <(xargs -n1 printf '%s\n' <<<"$configure_line")
args=()
for arg in "${all_args[@]}"; do
    case "$arg" in
        --add-dynamic-module=*|--with-*=dynamic) ;;      # other dynamic modules
        --add-module=*) echo "note: leaving out static module ${arg#*=}: its source is not here" >&2 ;;
        --with-openssl=*|--with-pcre=*|--with-zlib=*|--with-libatomic=*) ;;  # bundled library sources
        *) args+=("$arg") ;;
    esac
done
if [[ " ${args[*]} " != *" --with-compat "* ]]; then
    echo "warning: $nginx was built without --with-compat: the module loads only if every" \
         "option matches exactly" >&2
fi

if [ "${DRY_RUN:-}" = 1 ]; then
    echo "version: $version"
    printf 'configure: %s\n' "${args[@]}"
    exit 0
fi

work=${WORK_DIR:-$repo/target/nginx-$version}
mkdir -p "$work"
work=$(cd "$work" && pwd)
src=$work/src

# A source already configured with the same arguments is reused: configuring again would make
# cargo rebuild the bindings.
stamp=$work/configured-with
wanted=$(printf '%s\n' "${NGINX_SOURCE_DIR:-download}" "${args[@]}")
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] && [ -f "$src/objs/ngx_auto_config.h" ]; then
    echo "nginx $version source already configured in $src" >&2
else
    rm -f "$stamp"
    if [ -n "${NGINX_SOURCE_DIR:-}" ]; then
        [ -x "$NGINX_SOURCE_DIR/configure" ] || die "NGINX_SOURCE_DIR=$NGINX_SOURCE_DIR has no configure script"
        rm -rf "$src"
        cp -a "$NGINX_SOURCE_DIR" "$src"
    elif [ ! -x "$src/configure" ]; then
        url="https://nginx.org/download/nginx-$version.tar.gz"
        echo "downloading $url" >&2
        rm -rf "$src" && mkdir -p "$src"
        curl -fsSL "$url" | tar -xz -C "$src" --strip-components=1 || die "cannot download $url"
    fi

    # The source must be the binary's own version: a module built for another version will not load.
    source_version=$(sed -n 's/^#define NGINX_VERSION *"\(.*\)"/\1/p' "$src/src/core/nginx.h")
    [ "$source_version" = "$version" ] || die "source is nginx $source_version but $nginx is $version"

    echo "configuring nginx $version like $nginx" >&2
    (cd "$src" && ./configure "${args[@]}" >"$work/configure.log" 2>&1) \
        || die "configure failed; see $work/configure.log (missing -dev packages?)"
    printf '%s' "$wanted" >"$stamp"
fi

echo "building the module against $src/objs" >&2
(cd "$repo" && NGINX_BUILD_DIR="$src/objs" NGINX_SOURCE_DIR="$src" CARGO_TARGET_DIR="$work/target" \
    cargo build --release --locked -p ngx-ollama-auth-module --no-default-features) || die "cargo build failed"

mkdir -p "$out_dir"
out_dir=$(cd "$out_dir" && pwd)
cp "$work/target/release/libngx_http_ollama_auth_module.so" "$out_dir/ngx_http_ollama_auth_module.so"

# Prove it: the binary must accept the module.
check=$(mktemp -d)
trap 'rm -rf "$check"' EXIT
mkdir -p "$check/logs"
cat >"$check/nginx.conf" <<EOF
load_module $out_dir/ngx_http_ollama_auth_module.so;
error_log stderr;
pid $check/nginx.pid;
events {}
http { ollama_auth_realm check; }
EOF
run_nginx -t -q -p "$check" -c "$check/nginx.conf" -e stderr \
    || die "$nginx refuses the module it was built for"
echo "$out_dir/ngx_http_ollama_auth_module.so (nginx $version)"
