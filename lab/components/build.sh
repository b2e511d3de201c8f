#!/usr/bin/env bash
# Build the lab's real components from their upstream Go modules, at the versions pinned in
# versions.env, into a cache outside the git tree:
#
#   ${KUBENETDIAG_COMPONENTS:-/var/cache/kubenetdiag-lab}/<project>-<version>/<binary>
#   e.g. /var/cache/kubenetdiag-lab/kubernetes-v1.36.3/kube-apiserver
#
# A binary whose cached copy for that exact version exists is not rebuilt, so a rerun with
# unchanged versions takes seconds. Nothing is written inside the git tree (go.mod/go.sum are
# read-only here: -mod=readonly), except by `pin`.
#
#   bash lab/components/build.sh                 build every component (run as root for /var/cache)
#   bash lab/components/build.sh etcd coredns    build only these binaries
#   bash lab/components/build.sh list            print binary, version and cache path, build nothing
#   bash lab/components/build.sh pin             rewrite the wrapper go.mod/go.sum from versions.env
#                                                (needs the module proxy; commit the result)
#
# Builds run under `nice -n 19` (the machine is shared). Go's own caches (GOMODCACHE, GOCACHE)
# are used as configured; set them in the environment to build somewhere else.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$HERE/versions.env"

ROOT=${KUBENETDIAG_COMPONENTS:-/var/cache/kubenetdiag-lab}
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
# The wrappers are separate modules; a go.work further up must not merge them.
export GOWORK=off
# binary | wrapper dir | package | project | version var | go build -tags | cgo
# Tags and cgo as upstream's own build scripts use them: kube (hack/lib/golang.sh) builds these
# static with selinux,notest,grpcnotrace; etcd (scripts/build_lib.sh) and coredns (Makefile,
# tag grpcnotrace) with CGO_ENABLED=0; flannel's Makefile enables cgo on amd64, where its UDP
# backend has C code that does not compile without it, and links statically (plus osusergo,netgo
# here, so the static binary does not call glibc's NSS for users and DNS: no link warnings);
# kube-router's Makefile builds with CGO_ENABLED=0 and stamps pkg/version.Version/BuildDate;
# the CNI plugins' releases are built with CGO_ENABLED=0 and stamp buildversion.BuildVersion
# (cnitool, built beside them, at the libcni version the plugins require, has no stamp).
COMPONENTS=(
  "kube-apiserver|kubernetes|k8s.io/kubernetes/cmd/kube-apiserver|kubernetes|KUBERNETES_VERSION|selinux,notest,grpcnotrace|0"
  "kube-controller-manager|kubernetes|k8s.io/kubernetes/cmd/kube-controller-manager|kubernetes|KUBERNETES_VERSION|selinux,notest,grpcnotrace|0"
  "kube-proxy|kubernetes|k8s.io/kubernetes/cmd/kube-proxy|kubernetes|KUBERNETES_VERSION|selinux,notest,grpcnotrace|0"
  "etcd|etcd|go.etcd.io/etcd/server/v3|etcd|ETCD_VERSION||0"
  "flanneld|flannel|github.com/flannel-io/flannel|flannel|FLANNEL_VERSION|osusergo,netgo|amd64"
  "coredns|coredns|github.com/coredns/coredns|coredns|COREDNS_VERSION|grpcnotrace|0"
  "kube-router|kube-router|github.com/cloudnativelabs/kube-router/v2/cmd/kube-router|kube-router|KUBE_ROUTER_VERSION||0"
  "knd-ipvs-proxier|kubernetes|kubenetdiag.lab/components/kubernetes/ipvsproxier|knd-ipvs-proxier|IPVS_PROXIER_VERSION|selinux,notest,grpcnotrace|0"
  "bridge|cni-plugins|github.com/containernetworking/plugins/plugins/main/bridge|cni-plugins|CNI_PLUGINS_VERSION||0"
  "host-local|cni-plugins|github.com/containernetworking/plugins/plugins/ipam/host-local|cni-plugins|CNI_PLUGINS_VERSION||0"
  "portmap|cni-plugins|github.com/containernetworking/plugins/plugins/meta/portmap|cni-plugins|CNI_PLUGINS_VERSION||0"
  "cnitool|cni-plugins|github.com/containernetworking/cni/cnitool|cni-plugins|CNI_PLUGINS_VERSION||0"
  "flannel|cni-flannel|github.com/containernetworking/plugins/plugins/meta/flannel|cni-flannel|FLANNEL_CNI_PLUGIN_VERSION||0"
)
# knd-ipvs-proxier is the lab's own program around kube-proxy's IPVS proxier (kubernetes/
# ipvsproxier, see its doc comment): its version is Kubernetes' plus a digest of its source, so
# an edit rebuilds it. components.py derives the same name.
IPVS_PROXIER_VERSION="$KUBERNETES_VERSION-src$(LC_ALL=C; cat "$HERE"/kubernetes/ipvsproxier/*.go | sha256sum | cut -c1-12)"
# wrapper dir -> the upstream module it requires
declare -A UPSTREAM=(
  [kubernetes]=k8s.io/kubernetes
  [etcd]=go.etcd.io/etcd/server/v3
  [flannel]=github.com/flannel-io/flannel
  [coredns]=github.com/coredns/coredns
  [kube-router]=github.com/cloudnativelabs/kube-router/v2
  [cni-plugins]=github.com/containernetworking/plugins
  [cni-flannel]=github.com/containernetworking/plugins
)
declare -A VERSION_VAR=(
  [kubernetes]=KUBERNETES_VERSION [etcd]=ETCD_VERSION
  [flannel]=FLANNEL_VERSION [coredns]=COREDNS_VERSION
  [kube-router]=KUBE_ROUTER_VERSION
  [cni-plugins]=CNI_PLUGINS_VERSION [cni-flannel]=FLANNEL_CNI_PLUGIN_VERSION
)

log() { printf '%s\n' "$*"; }
die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
# Run go inside a wrapper module. 9>&- : go's own helpers (telemetry) outlive it and must not
# inherit, and so hold, the cache lock.
gow() { (cd "$HERE/$1" && shift && "$GO" "$@") 9>&-; }

# --- pin: make the wrapper go.mod/go.sum say what versions.env says -------------------------
pin() {
  local dir mod ver gomod m godebug old extra
  for dir in kubernetes etcd flannel coredns kube-router cni-plugins cni-flannel; do
    mod=${UPSTREAM[$dir]}
    ver=${!VERSION_VAR[$dir]}
    log "pin: $dir: $mod@$ver"
    gomod=$(gow "$dir" mod download -json "$mod@$ver" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
    [[ -f $gomod ]] || die "pin: cannot download $mod@$ver"
    gow "$dir" mod edit -require="$mod@$ver"
    # Keep upstream's GODEBUG defaults: copy its godebug lines, else derive them from its go line.
    gow "$dir" mod edit -dropgodebug=default
    godebug=$(awk '/^godebug default=/{print $2}' "$gomod")
    [[ -n $godebug ]] || godebug="default=go$(awk '/^go /{split($2, v, "."); print v[1] "." v[2]}' "$gomod")"
    gow "$dir" mod edit -godebug="$godebug"
    for old in $(awk '/=>/ { print ($1 == "replace" ? $2 : $1) }' "$HERE/$dir/go.mod"); do
      gow "$dir" mod edit -dropreplace="$old"
    done
    extra=${dir^^}_EXTRA_REPLACES
    extra=${extra//-/_}
    for m in ${!extra:-}; do gow "$dir" mod edit -replace="$m"; done
    if [[ $dir == kubernetes ]]; then
      # Every staging module k8s.io/kubernetes requires (at v0.0.0, replaced by ./staging/src/...)
      # is mapped to its published release. (It also replaces a few it does not require, e.g.
      # k8s.io/sample-cli-plugin; those are not needed and not mapped.)
      for m in $(awk '$2 == "=>" && $3 ~ /^\.\/staging\/src\// {print $1}' "$gomod"); do
        grep -Eq "^[[:space:]]+$m v0\.0\.0([[:space:]]|$)" "$gomod" || continue
        gow "$dir" mod edit -replace="$m=$m@$KUBERNETES_STAGING_VERSION"
      done
    fi
    gow "$dir" mod tidy
  done
  log "pin: done; review and commit lab/components/*/go.mod lab/components/*/go.sum"
}

# --- check: refuse to build when a wrapper go.mod disagrees with versions.env ---------------
checked=""
check_pins() {
  local dir=$1 mod want got bad
  [[ " $checked " == *" $dir "* ]] && return 0
  mod=${UPSTREAM[$dir]}
  want=${!VERSION_VAR[$dir]}
  got=$(gow "$dir" list -mod=readonly -m -f '{{.Version}}' "$mod") \
    || die "$dir: cannot read the wrapper module (go.mod/go.sum incomplete? run: bash $HERE/build.sh pin)"
  [[ $got == "$want" ]] || die "$dir/go.mod requires $mod $got but versions.env says $want; run: bash $HERE/build.sh pin"
  if [[ $dir == kubernetes ]]; then
    bad=$(gow "$dir" list -mod=readonly -m -f '{{if .Replace}}{{.Path}} {{.Replace.Version}}{{end}}' all \
          | awk -v v="$KUBERNETES_STAGING_VERSION" '$1 ~ /^k8s\.io\// && $2 != v')
    [[ -z $bad ]] || die "kubernetes/go.mod maps staging modules to other than $KUBERNETES_STAGING_VERSION: $bad; run: bash $HERE/build.sh pin"
  fi
  checked+=" $dir"
}

# -ldflags -X values upstream's own build scripts stamp. A module download does not tell the
# commit hash: kube's gitCommit is left empty, etcd's and coredns's say go-module-<version>.
stamp() {
  local project=$1 ver=$2 date major minor
  case $project in
    kubernetes)
      # The release's commit time (from the proxy) as build date: the binary is reproducible.
      date=$(gow kubernetes list -mod=readonly -m -f '{{if .Time}}{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' k8s.io/kubernetes)
      major=${ver#v}; major=${major%%.*}
      minor=${ver#v*.}; minor=${minor%%.*}
      local p
      for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        printf -- " -X %s.gitVersion=%s -X %s.gitMajor=%s -X %s.gitMinor=%s -X %s.gitCommit= -X %s.gitTreeState=clean -X %s.buildDate=%s" \
          "$p" "$ver" "$p" "$major" "$p" "$minor" "$p" "$p" "$p" "${date:-1970-01-01T00:00:00Z}"
      done ;;
    etcd)    printf -- " -X go.etcd.io/etcd/api/v3/version.GitSHA=go-module-%s" "$ver" ;;
    flannel) printf -- " -X github.com/flannel-io/flannel/pkg/version.Version=%s" "$ver" ;;
    coredns) printf -- " -X github.com/coredns/coredns/coremain.GitCommit=go-module-%s" "$ver" ;;
    cni-plugins|cni-flannel) printf -- " -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=%s" "$ver" ;;
    kube-router) printf -- " -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=%s -X github.com/cloudnativelabs/kube-router/v2/pkg/version.BuildDate=go-module" "$ver" ;;
  esac
}

cache_path() {  # binary -> path of its cached copy
  local c bin dir pkg project vvar tags cgo
  for c in "${COMPONENTS[@]}"; do
    IFS='|' read -r bin dir pkg project vvar tags cgo <<<"$c"
    [[ $bin == "$1" ]] && { printf '%s/%s-%s/%s\n' "$ROOT" "$project" "${!vvar}" "$bin"; return; }
  done
  return 1
}

build_all() {
  local want=("$@") c bin dir pkg project vvar tags cgo ver out tmp t0 t1 fetched="" total0 built=0 goarch static
  if ((${#want[@]})); then
    for bin in "${want[@]}"; do cache_path "$bin" >/dev/null || die "unknown component: $bin"; done
  fi
  "$GO" version >/dev/null 2>&1 || die "no usable go at $GO (set GO=/path/to/go)"
  mkdir -p "$ROOT" || die "cannot create $ROOT (run as root, or set KUBENETDIAG_COMPONENTS)"
  # One build at a time per cache: a second run waits, then finds the binaries cached.
  if command -v flock >/dev/null; then
    exec 9>"$ROOT/.lock"
    flock -n 9 || { log "waiting for another build.sh using $ROOT ..."; flock 9; }
  fi
  goarch=$("$GO" env GOARCH)
  log "using $("$GO" version)  GOMODCACHE=$("$GO" env GOMODCACHE)  GOCACHE=$("$GO" env GOCACHE)"
  total0=$(now)
  for c in "${COMPONENTS[@]}"; do
    IFS='|' read -r bin dir pkg project vvar tags cgo <<<"$c"
    [[ $cgo == "$goarch" ]] && cgo=1
    [[ $cgo == 1 ]] || cgo=0
    static=""; [[ $cgo == 1 ]] && static=" -extldflags -static"
    if ((${#want[@]})) && [[ " ${want[*]} " != *" $bin "* ]]; then continue; fi
    ver=${!vvar}
    out=$(cache_path "$bin")
    check_pins "$dir"
    if [[ -x $out ]]; then
      log "cached  $bin $ver  $out"
      continue
    fi
    if [[ " $fetched " != *" $dir "* ]]; then
      # Download (only) the modules these packages need, timed apart from compiling.
      t0=$(now)
      CGO_ENABLED=$cgo gow "$dir" list -mod=readonly -deps -f '' "$pkg" >/dev/null
      t1=$(now)
      log "fetch   $dir modules: $(secs "$t0" "$t1")s"
      fetched+=" $dir"
    fi
    if [[ $cgo == 1 ]] && ! command -v "${CC:-gcc}" >/dev/null; then
      die "$bin is built with cgo (as upstream does on $goarch): install gcc and libc6-dev (static libc.a)"
    fi
    log "build   $bin $ver ($pkg, CGO_ENABLED=$cgo) -> $out"
    mkdir -p "${out%/*}"
    tmp="${out%/*}/.$bin.tmp.$$"
    t0=$(now)
    # shellcheck disable=SC2046
    if ! (cd "$HERE/$dir" && CGO_ENABLED=$cgo nice -n 19 "$GO" build -mod=readonly -trimpath -buildvcs=false \
            ${tags:+-tags=$tags} -ldflags="-s -w$static$(stamp "$project" "$ver")" -o "$tmp" "$pkg") 9>&-; then
      rm -f "$tmp"
      die "building $bin failed"
    fi
    mv -f "$tmp" "$out"   # atomic: an interrupted build never leaves a "cached" half binary
    t1=$(now)
    log "built   $bin in $(secs "$t0" "$t1")s, $(du -h "$out" | cut -f1)"
    built=$((built + 1))
  done
  log "done: $built built, total $(secs "$total0" "$(now)")s; binaries under $ROOT"
}

case ${1:-} in
  pin)  pin ;;
  list) for c in "${COMPONENTS[@]}"; do
          IFS='|' read -r bin dir pkg project vvar tags cgo <<<"$c"
          out=$(cache_path "$bin"); printf '%-24s %-9s %s%s\n' "$bin" "${!vvar}" "$out" "$([[ -x $out ]] || echo '  (not built)')"
        done ;;
  -h|--help|help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' ;;
  *)    build_all "$@" ;;
esac
