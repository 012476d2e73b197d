from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from appliance.config import load_settings, normalise_database_url


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("INGOT_"):
            monkeypatch.delenv(key)


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.home == tmp_path / "var"
    assert s.effective_database_url == f"sqlite:///{tmp_path / 'var' / 'ingot.db'}"
    assert (s.api.https_port, s.api.http_port, s.tftp.port, s.dns.port) == (8443, 8080, 69, 53)
    assert s.dhcp.interface is None  # DHCP stays off unless an interface is named


def test_flat_contract_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key, value in {"HOME": str(tmp_path), "HTTPS_PORT": "9443", "HTTP_PORT": "9080", "TFTP_PORT": "6969",
                       "DNS_PORT": "5353", "DHCP_INTERFACE": "prov0", "ADMIN_PASSWORD": "s3cret-pass",
                       "DATABASE_URL": "postgresql://u@h/db"}.items():
        monkeypatch.setenv(f"INGOT_{key}", value)
    s = load_settings()
    assert (s.api.https_port, s.api.http_port, s.tftp.port, s.dns.port) == (9443, 9080, 6969, 5353)
    assert s.dhcp.interface == "prov0"
    assert s.admin_password is not None and s.admin_password.get_secret_value() == "s3cret-pass"
    assert "s3cret-pass" not in repr(s)
    assert s.effective_database_url == "postgresql+psycopg://u@h/db"


def test_precedence_env_over_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "ingot.toml"
    config.write_text('[api]\nhttps_port = 7443\nhttp_port = 7080\n[tasks]\nmax_concurrent = 3\n')
    monkeypatch.setenv("INGOT_HTTPS_PORT", "9443")
    monkeypatch.setenv("INGOT_TASKS__LEASE_TTL_S", "12")
    s = load_settings(config)
    assert (s.api.https_port, s.api.http_port) == (9443, 7080)
    assert (s.tasks.max_concurrent, s.tasks.lease_ttl_s) == (3, 12)


def test_bad_values_are_clear(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("INGOT_HTTPS_PORT", "70000")
    with pytest.raises(ValidationError, match="https_port"):
        load_settings()
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[api]\nhttps_prot = 1\n")
    monkeypatch.delenv("INGOT_HTTPS_PORT")
    with pytest.raises(ValidationError, match="https_prot"):
        load_settings(bad)


def test_normalise_database_url() -> None:
    assert normalise_database_url("postgres://a/b") == "postgresql+psycopg://a/b"
    assert normalise_database_url("sqlite:///x.db") == "sqlite:///x.db"
