#!/bin/sh
# The browser the web app's tests drive (tests/integration/test_web_app.py): Debian's chromium and
# chromium-driver, installed with apt-get when they are missing and this runs as root or with
# passwordless sudo. Where they cannot be installed this says why and exits 0: `make test` goes on,
# and the browser tests skip with that reason (PAI_CHROMIUM and PAI_CHROMEDRIVER can name others).
set -u

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
if [ -n "${PAI_CHROMIUM:-}" ] && [ -n "${PAI_CHROMEDRIVER:-}" ]; then
    exit 0
fi
# A Chrome and its driver already on PATH (a CI runner's image) are what the tests find next.
if command -v chromedriver >/dev/null 2>&1 && \
    { command -v google-chrome >/dev/null 2>&1 || command -v chromium >/dev/null 2>&1; }; then
    exit 0
fi
# Ubuntu's chromium package is only a wrapper around a snap, which does not run in containers.
if grep -qs '^ID=ubuntu' /etc/os-release; then
    echo "install_browser: Ubuntu packages chromium as a snap; install google-chrome and chromedriver, or set" >&2
    echo "  PAI_CHROMIUM and PAI_CHROMEDRIVER; until then the web app's browser tests skip" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser: no apt-get here; the web app's browser tests will skip (set PAI_CHROMIUM and PAI_CHROMEDRIVER)" >&2
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    as_root=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root="sudo -n"
else
    echo "install_browser: not root and no passwordless sudo; the web app's browser tests will skip" >&2
    echo "  (install them with: sudo apt-get install chromium chromium-driver)" >&2
    exit 0
fi

echo "installing chromium and chromium-driver for the web app's browser tests ..." >&2
export DEBIAN_FRONTEND=noninteractive
# A fresh image has no package lists yet: update once, then try again.
if ! $as_root apt-get install -y chromium chromium-driver >/dev/null; then
    $as_root apt-get update >/dev/null && \
        $as_root apt-get install -y chromium chromium-driver >/dev/null
fi
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
echo "install_browser: chromium could not be installed; the web app's browser tests will skip" >&2
exit 0
