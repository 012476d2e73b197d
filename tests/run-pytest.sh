#!/usr/bin/env bash
# The pytest part of `make test`: unit and integration tests, both database backends, with
# screenshots and other artifacts under test-artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
export INGOT_TEST_ARTIFACTS="${INGOT_TEST_ARTIFACTS:-$PWD/test-artifacts}"
exec .venv/bin/pytest --durations=30 "$@" tests
