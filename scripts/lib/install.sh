# shellcheck shell=bash
# Installing and building (sourced by common.sh, not run): Debian packages, pinned Python tools
# in a venv, node_modules, and the release build of the services. The one installer: every
# script asks for what it needs here, and nothing else runs apt-get, pip or npm ci.

# apt_install package...: installs Debian packages when root (or sudo) and apt-get are there;
# otherwise dies saying what to install. Debian starts some daemons on install; the scripts
# here run their own instances and leave those alone (monitoring.sh disables its two).
apt_install() {
  [ $# -gt 0 ] || return 0
  if can_be_root && command -v apt-get >/dev/null 2>&1; then
    say "installing $* with apt-get"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || die "apt-get update failed"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null ||
      die "could not install $*"
    return 0
  fi
  die "missing: $*. Install them, e.g. on Debian/Ubuntu: sudo apt-get install $*"
}

# missing_packages what=package...: prints (one a line, once each) the package of every `what`
# that is missing. `what` is a command (on PATH or in /usr/sbin), several alternatives (a|b:
# any one will do), or an absolute path (an executable file).
missing_packages() {
  local pair what alternatives found packages=() seen=" "
  for pair in "$@"; do
    what="${pair%%=*}" found=no
    IFS='|' read -ra alternatives <<<"$what"
    for what in "${alternatives[@]}"; do
      if [[ "$what" == /* ]]; then [ -x "$what" ] && found=yes
      else has_command "$what" && found=yes
      fi
    done
    [ "$found" = no ] || continue
    case "$seen" in *" ${pair#*=} "*) ;; *) packages+=("${pair#*=}"); seen+="${pair#*=} " ;; esac
  done
  [ ${#packages[@]} -eq 0 ] || printf '%s\n' "${packages[@]}"
}

# ensure_commands what=package...: installs the packages missing_packages names, if any.
ensure_commands() {
  local packages
  mapfile -t packages < <(missing_packages "$@")
  apt_install "${packages[@]}"
}

# pinned_venv dir package==version...: a venv at dir holding exactly these pins; rebuilt when
# the pins change (they are recorded in dir/.pinned).
pinned_venv() {
  local venv="$1" wanted
  shift
  wanted="$*"
  [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.pinned" 2>/dev/null)" = "$wanted" ] && return 0
  command -v python3 >/dev/null 2>&1 || die "python3 is missing (Debian: apt-get install python3 python3-venv)"
  say "installing $wanted into $venv"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    rm -rf "$venv"
    apt_install python3-venv # Debian's python3 comes without venv
    python3 -m venv "$venv" || die "python3 cannot create a venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$@" || die "pip install $wanted failed"
  echo "$wanted" >"$venv/.pinned"
}

# ensure_node_modules: the devDependencies (dclint, yaml) as package-lock.json pins them;
# `npm ci` when node_modules is missing or older than the lock file. Run from the checkout.
ensure_node_modules() {
  command -v npm >/dev/null 2>&1 || die "npm is missing (Node.js >= 20 is needed)"
  local stamp=node_modules/.package-lock.json
  if [ ! -f "$stamp" ] || [ ! -x node_modules/.bin/dclint ] || [ ! -f node_modules/yaml/package.json ] ||
     [ package-lock.json -nt "$stamp" ] || [ package.json -nt "$stamp" ]; then
    say "installing node_modules (npm ci)"
    npm ci --no-audit --no-fund --loglevel=error || die "npm ci failed"
  fi
}

# --- the services' release build ---------------------------------------------------------------

# Where `cargo build --release` puts writer and reader.
release_dir() { echo "${CARGO_TARGET_DIR:-$ROOT/target}/release"; }

# build_services: cargo build --release of writer and reader (rustup's cargo when none is on
# PATH). The one build of the binaries every native stack runs.
build_services() {
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] ||
      die "cargo is missing. Install Rust with rustup: https://rustup.rs (curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh)"
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  say "building writer and reader (release)"
  (cd "$ROOT" && cargo build --release --locked -p writer -p reader)
}

# require_built: dies unless writer and reader are built (for scripts that build nothing).
require_built() {
  local binary
  for binary in writer reader; do
    [ -x "$(release_dir)/$binary" ] ||
      die "$(release_dir)/$binary is missing: build it first (npm start, or cargo build --release -p writer -p reader)"
  done
}
