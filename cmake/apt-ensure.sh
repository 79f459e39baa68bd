# apt-ensure.sh — sourced by setup.sh and test.sh: apt_ensure PKG... installs
# the Debian packages of the list that are not installed yet (one apt-get call,
# non-interactive; sudo when not root). Nothing happens when all are there.
apt_ensure() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  local sudo=
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  # postfix asks a debconf question; answer it so the install never blocks.
  if printf '%s\n' "${missing[@]}" | grep -qx postfix; then
    echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
  fi
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}
