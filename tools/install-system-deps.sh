#!/usr/bin/env bash
# System packages the test suite needs beyond pip: Debian's chromium (the web page is tested in a real headless
# browser). Installs only what is missing, with apt-get as
# root; otherwise prints the command to run (the browser test then fails with the same advice; it never skips).
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing system packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "setup: warning: missing system packages: ${missing[*]}; the tests that need them will fail." \
         "Install them (Debian: sudo apt-get install ${missing[*]})" >&2
fi
