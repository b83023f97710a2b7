#!/usr/bin/env bash
# Headless Chromium and its WebDriver for the dashboard's browser test.
#
#   scripts/browser.sh    prints the path of chromedriver. Debian's chromium and
#                         chromium-driver are installed first when either is missing (as root,
#                         through apt-get); a chromedriver on PATH with a chromium beside it is
#                         used as it is.
#
# Progress goes to stderr; it exits 1 with the reason when no browser can be had.
set -euo pipefail

say() { echo "browser: $*" >&2; }

ready() {
  command -v chromedriver >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1 &&
    chromedriver --version >/dev/null 2>&1
}

if ! ready; then
  if [[ $(id -u) -ne 0 ]]; then
    say "chromium and chromedriver are missing and installing them needs root"
    exit 1
  fi
  say "installing Debian's chromium and chromium-driver"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq chromium chromium-driver >&2 ||
    { apt-get update -qq >&2 && apt-get install -y -qq chromium chromium-driver >&2; }
  ready || { say "chromium-driver installed but chromedriver does not run"; exit 1; }
fi
say "using $(chromedriver --version | head -n1)"
command -v chromedriver
