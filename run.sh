#!/usr/bin/env bash
# One entry point for a fresh machine: creates or reuses .venv/, installs prodcat with
# everything it needs (pinned by constraints.txt), then runs the demo or the tests.
#   ./run.sh demo    the main job: embedded broker, worker, live classification of real products
#   ./run.sh test    the test suite (what CI runs), on the embedded broker and Apache Kafka
#                    (fetched by Maven once; installs Debian's chromium when missing)
set -euo pipefail
cd "$(dirname "$0")"

venv=.venv
stamp="$venv/.prodcat-installed"
want=$(cat pyproject.toml constraints.txt examples/encoder-plugin/pyproject.toml | sha256sum | cut -d' ' -f1)

if [ ! -x "$venv/bin/python" ]; then
    echo "==> creating virtual environment $venv/"
    python3 -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "==> installing prodcat and its dependencies into $venv/ (first run: a few minutes)"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -c constraints.txt \
        -e ".[cpu,embedded,train,multilingual,dev]" -e examples/encoder-plugin
    echo "$want" >"$stamp"
fi

# The dashboard's browser test drives Debian's Chromium (Playwright with executable_path;
# Playwright's own browser downloads are never used). Installed with apt-get when missing:
# as root directly (CI runs as root), else through sudo.
chromium=/usr/bin/chromium
ensure_chromium() {
    [ -x "$chromium" ] && return 0
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        if ! command -v sudo >/dev/null; then
            echo "==> $chromium is missing and there is no sudo: install the Debian package 'chromium'" >&2
            return 1
        fi
        sudo="sudo"
    fi
    echo "==> installing Debian's chromium for the dashboard's browser test"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
}

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
case "${1:-}" in
    demo) shift; exec "$venv/bin/prodcat" demo "$@" ;;
    test)
        shift
        # Apache Kafka for the real-broker tests: fetched by Maven into the cache once; a
        # machine without Java/Maven gets one line and those tests skip (CI fails on it).
        "$venv/bin/prodcat" broker --engine kafka --fetch || [ -z "${CI:-}" ]
        ensure_chromium
        export PRODCAT_CHROMIUM="$chromium"
        exec "$venv/bin/python" -m pytest "$@" ;;
    *) echo "usage: ./run.sh demo|test [args...]" >&2; exit 2 ;;
esac
