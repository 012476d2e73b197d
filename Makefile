# Ingot: `make demo` runs the main job on an emulated rack (lab/demo.py); `make test` installs everything and
# runs the whole suite. Both install what they need (Debian packages, then Python into .venv).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian packages: PostgreSQL for the second database backend, Chromium for the browser tests,
# qemu-utils (qemu-img, qemu-io, qemu-nbd) for the image library; mmdebstrap, extlinux and friends
# for the emulated rack's images (lab/images.py; systemd-boot-efi, dosfstools and mtools make the
# demo disk's EFI system partition); libguestfs (with a kernel for its appliance, and
# ntfs-3g) for the plan-script executor (plans/guestfish.py); lldpd, a real LLDP speaker for the
# agent's switch-port discovery (tests/integration/test_lldp_netns.py).
DEBS_TEST := postgresql chromium fonts-dejavu-core openipmi ipmitool atftp curl \
	iproute2 isc-dhcp-client busybox dhcpcd-base kea-admin kea-dhcp4-server dnsmasq-base tftpd-hpa \
	bind9-dnsutils ipxe ipxe-qemu qemu-system-x86 cpio qemu-utils \
	mmdebstrap extlinux syslinux-common fdisk zstd e2fsprogs ovmf systemd-boot-efi dosfstools mtools \
	libguestfs-tools linux-image-amd64 ntfs-3g lldpd
# The demo's emulated rack: QEMU with iPXE ROMs and OVMF, the image builders, ipmitool.
DEBS_DEMO := iproute2 ipmitool ipxe ipxe-qemu qemu-system-x86 qemu-utils ovmf busybox cpio \
	mmdebstrap extlinux syslinux-common fdisk zstd e2fsprogs systemd-boot-efi dosfstools mtools

.PHONY: demo test lint typecheck unit deps-test deps-demo venv clean

demo: deps-demo venv
	$(BIN)/python -m lab.demo

test: deps-test venv lint typecheck
	bash tests/run-pytest.sh

lint: venv
	$(BIN)/ruff check .

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest -q tests/unit

deps-test:
	@bash tools/apt-ensure.sh $(DEBS_TEST)

deps-demo:
	@bash tools/apt-ensure.sh $(DEBS_DEMO)

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) var test-artifacts .mypy_cache .ruff_cache .pytest_cache
