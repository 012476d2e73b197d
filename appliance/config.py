"""Typed appliance settings.

Built once by the entry point (``ingot serve``) from, in order of precedence: explicit keyword
arguments, the documented flat ``INGOT_*`` variables of the deployment contract (``INGOT_HOME``,
``INGOT_HTTPS_PORT`` ...), nested ``INGOT_<GROUP>__<FIELD>`` variables for everything else, an
optional TOML file, and the defaults below. Components receive the group they need through their
constructor; nothing imports a global settings object.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "INGOT_"

# The flat variable names promised in DESIGN.md "Contracts", mapped onto their nested home.
FLAT_ENV: dict[str, tuple[str, ...]] = {
    "HTTPS_PORT": ("api", "https_port"),
    "HTTP_PORT": ("api", "http_port"),
    "BIND_ADDRESS": ("api", "bind_address"),
    "TLS_CERT": ("api", "tls_cert"),
    "TLS_KEY": ("api", "tls_key"),
    "TFTP_PORT": ("tftp", "port"),
    "DNS_PORT": ("dns", "port"),
    "DHCP_INTERFACE": ("dhcp", "interface"),
    "DHCP_RANGE": ("dhcp", "range"),
    "DHCP_ROUTER": ("dhcp", "router"),
    "DHCP_DNS": ("dhcp", "dns"),
    "DHCP_MODE": ("dhcp", "mode"),
    "LOG_FORMAT": ("logging", "format"),
    "LOG_LEVEL": ("logging", "level"),
}


class Group(BaseModel):
    """A settings group: a misspelt key is an error, not a silently ignored default."""

    model_config = ConfigDict(extra="forbid")


class ApiSettings(Group):
    """The HTTPS API/UI listener and the plain-HTTP boot listener."""

    bind_address: str = Field("0.0.0.0", description="Address both HTTP listeners bind to.")  # noqa: S104
    https_port: int = Field(8443, ge=0, le=65535, description="HTTPS port for the REST API and web UI.")
    http_port: int = Field(8080, ge=0, le=65535, description="Plain-HTTP port reserved for boot traffic.")
    tls_cert: Path | None = Field(None, description="PEM certificate; a self-signed one is generated if unset.")
    tls_key: Path | None = Field(None, description="PEM private key matching tls_cert.")
    max_body_bytes: int = Field(
        1024 * 1024, ge=1024, description="Largest JSON request body accepted; larger bodies get 413."
    )
    current_version: int = Field(4600, description="X-API-Version reported as currentVersion (OneView 8.00).")
    minimum_version: int = Field(120, description="Oldest X-API-Version accepted (lets old scripts log in).")


class SessionSettings(Group):
    """Login sessions (OneView ``auth`` header) and the UI cookie."""

    idle_timeout_s: int = Field(24 * 3600, ge=60, description="A session unused this long expires.")
    touch_interval_s: int = Field(
        60, ge=1, description="last-used is written at most this often per session (saves a write per call)."
    )


class TaskSettings(Group):
    """The task runner: concurrency and the database lease that lets another runner take over."""

    max_concurrent: int = Field(8, ge=1, description="Tasks one runner executes at once.")
    lease_ttl_s: float = Field(30.0, gt=0, description="A task lease not renewed for this long is abandoned.")
    poll_interval_s: float = Field(1.0, gt=0, description="How often the runner looks for work from other nodes.")
    max_attempts: int = Field(3, ge=1, description="A resumable task interrupted this often is failed instead.")


class LoggingSettings(Group):
    format: Literal["json", "text"] = Field("json", description="Structured JSON lines or plain text.")
    level: str = Field("INFO", description="Root log level.")


class TftpSettings(Group):
    port: int = Field(69, ge=0, le=65535, description="TFTP port; 0 picks a free one (tests).")
    root: Path | None = Field(None, description="TFTP root; INGOT_HOME/tftp when unset.")
    bootloader_dir: Path = Field(
        Path("/usr/lib/ipxe"),
        description="Where the iPXE boot loaders (undionly.kpxe, ipxe.efi, snponly.efi) are installed.",
    )
    max_transfers: int = Field(512, ge=1, description="Concurrent transfers; more get ERROR 0 'server busy'.")
    max_blksize: int = Field(1468, ge=512, le=65464, description="Largest block size negotiated (RFC 2348).")
    max_windowsize: int = Field(64, ge=1, le=65535, description="Largest window negotiated (RFC 7440).")
    busy_poll_us: int = Field(
        200, ge=0, le=5000,
        description="While one transfer runs alone, poll its socket this long after each send instead "
        "of sleeping (lock-step transfers wait for each ACK; 0 = never poll).",
    )


class DnsSettings(Group):
    port: int = Field(53, ge=0, le=65535, description="DNS port (UDP and TCP); 0 picks a free one (tests).")
    enabled: bool = Field(True, description="Serve DNS at all.")
    domain: str = Field("ingot.internal", description="Domain Ingot is authoritative for.")
    upstreams: list[str] = Field(
        default_factory=list, description="Resolvers (host or host:port) for names outside the domain."
    )


class DhcpSettings(Group):
    """The provisioning subnet on ``interface``. Fields set explicitly (environment or file) are
    applied to that subnet at every start and win over the API; fields left at their defaults are
    used only when the subnet is first created, so they never undo a change made through the API."""

    interface: str | None = Field(None, description="DHCP stays off unless an interface is named.")
    mode: Literal["server", "proxy"] = Field(
        "server", description="'server' hands out addresses; 'proxy' only boot options (site DHCP stays)."
    )
    range: str | None = Field(None, description="Pool as 'first-last', e.g. 10.0.0.100-10.0.0.200.")
    router: str | None = Field(None, description="Option 3 (default gateway).")
    dns: list[str] | None = Field(None, description="Option 6; the appliance itself when unset and DNS is on.")
    lease_time_s: int = Field(3600, ge=60, description="Lease time (option 51).")
    unknown_mac: Literal["ignore", "discovery", "address-only"] = Field(
        "discovery",
        description="What a MAC Ingot does not know gets: nothing, the discovery ramdisk, or an address only.",
    )
    port: int = Field(67, ge=1, le=65535, description="Server port; clients are always answered on 68.")
    proxy_port: int = Field(4011, ge=1, le=65535, description="PXE boot-server port used in proxy mode.")

    @field_validator("dns", mode="before")
    @classmethod
    def _split_dns(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


class ImageSettings(Group):
    """The golden image library and OS volumes (golden_images/)."""

    root: Path | None = Field(None, description="Image store; INGOT_HOME/images when unset.")
    max_virtual_size: int = Field(
        4 << 40, ge=1 << 20, description="Largest virtual disk size an image may have, in bytes (4 TiB)."
    )
    max_upload_bytes: int = Field(
        512 << 30, ge=1 << 20, description="Largest image file accepted by upload, in bytes (512 GiB)."
    )
    low_space_percent: float = Field(
        10.0, ge=0, le=100, description="Raise the low-space alert when less of the store's file system is free."
    )
    import_dirs: list[Path] = Field(
        default_factory=list, description="Directories on the appliance images may be imported from by path "
        "(none: path imports are off)."
    )
    fetch_timeout_s: float = Field(
        60.0, gt=0, description="An import from a URL gives up after this long without data."
    )
    fetch_verify_tls: bool = Field(True, description="Check the certificate of an https URL an image is imported from.")
    nbd_address: str = Field(
        "127.0.0.1", description="Address OS volumes are exported on over NBD (the provisioning network's, "
        "for network-booted servers)."
    )
    nbd_port_first: int = Field(10809, ge=1, le=65535, description="First TCP port for NBD exports.")
    nbd_port_count: int = Field(64, ge=1, le=4096, description="NBD exports at once (one port each).")
    plan_shell_escapes: bool = Field(
        False, description="Let build plan scripts run shell commands on the appliance (guestfish '!cmd' and "
        "'<!cmd', as HPE's ESXi bundles do), confined to a per-run directory; off: such scripts are refused."
    )
    plan_timeout_s: float = Field(
        900.0, gt=0, description="A build plan run (personalize or capture) is killed after this long, the "
        "guestfish appliance launch included."
    )


class BootSettings(Group):
    """What netbooting machines are given over HTTP."""

    ramdisk_dir: Path | None = Field(
        None, description="Discovery/deploy ramdisk (vmlinuz, initrd.img); INGOT_HOME/boot/ramdisk when unset."
    )
    kernel_args: str = Field("console=ttyS0,115200 console=tty0", description="Kernel arguments for the ramdisk.")
    token_ttl_s: int = Field(3600, ge=60, description="Lifetime of a node's one-time boot token.")
    http_base: str | None = Field(
        None, description="Boot URL base given to clients; http://<DHCP server address>:<http_port> when unset."
    )
    events_kept: int = Field(20000, ge=100, description="Boot events kept; older ones are pruned.")
    agent_heartbeat_s: float = Field(5.0, gt=0, le=300, description="How often a deploy agent reports in.")
    lldp_wait_s: float = Field(
        0.0, ge=0, le=300, description="How long the deploy agent listens for each NIC's LLDP neighbour (the "
        "switch port) before it sends the inventory; 0 turns listening off. Switches send every 30 s by default.")


class BmcSettings(Group):
    """How Ingot talks to BMCs: patience, pacing and when to stop trying (issue: power control)."""

    timeout_s: float = Field(10.0, gt=0, description="One BMC command (including login) gives up after this long.")
    retries: int = Field(2, ge=0, description="Retries of a retryable failure (timeout, dropped session).")
    backoff_s: float = Field(0.5, ge=0, description="First retry delay; doubles each retry, with jitter.")
    min_interval_s: float = Field(
        0.0, ge=0, description="Least time between two commands to the same BMC (slow firmware)."
    )
    per_bmc_concurrency: int = Field(1, ge=1, description="Commands in flight to one BMC at once.")
    circuit_failures: int = Field(3, ge=1, description="Failures in a row after which a BMC is left alone.")
    circuit_reset_s: float = Field(60.0, gt=0, description="How long a BMC is left alone before one trial call.")
    verify_timeout_s: float = Field(
        120.0, gt=0, description="How long a power or boot change may take to show on the BMC."
    )
    verify_poll_s: float = Field(1.0, gt=0, description="Interval between verification reads.")
    sync_interval_s: float = Field(
        300.0, ge=0, description="Fleet power-state sync period; 0 turns the periodic sync off."
    )
    sync_parallelism: int = Field(64, ge=1, description="BMCs queried at once by a sweep.")
    worker_threads: int = Field(
        128, ge=4, description="Threads that run blocking BMC library calls (never the event loop)."
    )
    discovery_timeout_s: float = Field(1.0, gt=0, description="How long discovery waits for each address.")
    discovery_max_addresses: int = Field(
        4096, ge=1, description="Largest CIDR (in addresses) a discovery scan accepts."
    )


class ProvisioningSettings(Group):
    """The provision state machine: how long each wait state may last before it times out, and how
    many deploys build their images at once."""

    inspect_wait_s: int = Field(1800, ge=1, description="Booting the agent and reading the inventory.")
    deploy_wait_s: int = Field(3600, ge=1, description="The agent writing the image, or an installer running.")
    capture_wait_s: int = Field(7200, ge=1, description="The agent streaming a disk back.")
    clean_wait_s: int = Field(3600, ge=1, description="The agent erasing the disks.")
    parallel_builds: int = Field(
        2, ge=1, description="Deploys that build their image at once (clone, personalize with a guestfish "
                             "appliance, export): the CPU- and disk-heavy part. More deploys wait for a slot; "
                             "the agent's part of each runs in parallel without bound.")
    phase_retries: int = Field(
        2, ge=0, le=10, description="Retries of a deploy step that failed transiently and is safe to repeat (the "
                                    "BMC did not answer, an image tool failed, the guestfish appliance did not "
                                    "launch); 0 fails at the first failure.")
    phase_retry_backoff_s: float = Field(10.0, ge=0, le=600, description="Pause before the first such retry; "
                                                                        "it doubles for each further one.")


class Settings(BaseSettings):
    """All of the appliance's settings. See docs/configuration.md for every field."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    home: Path = Field(Path("var"), description="State directory: database, certificates, backups, images.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; SQLite under home when unset.")
    admin_password: SecretStr | None = Field(
        None, description="Password for the Administrator created on first start."
    )
    node_name: str | None = Field(None, description="This appliance's name in task leases; from home if unset.")
    api: ApiSettings = ApiSettings()
    sessions: SessionSettings = SessionSettings()
    tasks: TaskSettings = TaskSettings()
    logging: LoggingSettings = LoggingSettings()
    tftp: TftpSettings = TftpSettings()
    dns: DnsSettings = DnsSettings()
    dhcp: DhcpSettings = DhcpSettings()
    boot: BootSettings = BootSettings()
    bmc: BmcSettings = BmcSettings()
    images: ImageSettings = ImageSettings()
    provisioning: ProvisioningSettings = ProvisioningSettings()

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return normalise_database_url(self.database_url)
        return f"sqlite:///{self.home / 'ingot.db'}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, FlatContractSource(settings_cls), env_settings)


class FlatContractSource(PydanticBaseSettingsSource):
    """Reads the flat ``INGOT_HTTPS_PORT``-style names of the deployment contract."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str] | None = None) -> None:
        super().__init__(settings_cls)
        self._environ = os.environ if environ is None else environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything happens in __call__

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for flat, path in FLAT_ENV.items():
            raw = self._environ.get(ENV_PREFIX + flat)
            if raw is None or raw == "":
                continue
            group = out.setdefault(path[0], {})
            group[path[1]] = raw
        return out


def normalise_database_url(url: str) -> str:
    """Use the psycopg 3 driver for plain ``postgresql://`` URLs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings once: overrides > flat env > nested env > TOML file > defaults."""
    if config_file is None:
        return Settings(**overrides)
    if not config_file.is_file():
        raise FileNotFoundError(f"configuration file not found: {config_file}")

    class _FromFile(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (
                init_settings,
                FlatContractSource(settings_cls),
                env_settings,
                TomlConfigSettingsSource(settings_cls, toml_file=config_file),
            )

    return _FromFile(**overrides)
