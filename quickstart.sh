#!/usr/bin/env bash
# Sets up .venv, installs nymtx into it, and runs the quick start: a local
# mixnet on 127.0.0.1, the clients Alice (ws 9001) and Bob (ws 9002), and a
# message from Alice to Bob. Needs only python3. Ctrl-C stops everything.
set -eu
cd "$(dirname "$0")"
# A venv whose creation was interrupted has a python but no pip: make it anew.
if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
    echo "creating a virtual environment in .venv …"
    python3 -m venv --clear .venv
    echo "installing nymtx and its dependencies into .venv from PyPI (first run: about 30 s) …"
else
    echo "updating nymtx in .venv (a few seconds) …"
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q .
echo "starting the quick start (python -m nymtx.quickstart) …"
exec .venv/bin/python -m nymtx.quickstart "$@"
