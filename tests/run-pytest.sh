#!/usr/bin/env bash
# The pytest part of `make test`: unit and integration tests, both database backends, with
# screenshots and other artifacts under test-artifacts/. Two workers, each taking whole files
# (--dist loadfile), so a module's expensive fixtures (a lab, a guestfish appliance) are built once;
# most tests wait on QEMU, BMCs, sockets or subprocesses, so two workers overlap that waiting.
set -euo pipefail
cd "$(dirname "$0")/.."
export INGOT_TEST_ARTIFACTS="${INGOT_TEST_ARTIFACTS:-$PWD/test-artifacts}"
exec .venv/bin/pytest -n "${INGOT_TEST_WORKERS:-2}" --dist loadfile --durations=30 "$@" tests
