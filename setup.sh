#!/usr/bin/env bash
# setup.sh — install the Debian 12 packages mailkeep builds and runs with, then
# build build/mailkeep. Idempotent: re-running only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")"

# Building and running only: a machine that runs the gateway gets no test peers
# (no Postfix, Dovecot, Chromium or clang); ./test.sh installs those itself.
BUILD_PACKAGES=(build-essential cmake ninja-build pkg-config libboost1.81-dev libssl-dev
  libc-ares-dev libsqlite3-dev libcli11-dev libfmt-dev libspdlog-dev
  libgtest-dev libgmock-dev zlib1g-dev libxapian-dev libgmime-3.0-dev libgumbo-dev libargon2-dev libsystemd-dev libpq-dev)
. cmake/apt-ensure.sh
apt_ensure "${BUILD_PACKAGES[@]}"

# The unprivileged user the server runs as after binding port 25 ([general] user).
if ! getent passwd mailkeep >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin mailkeep
fi

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j 2
