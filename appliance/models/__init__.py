"""SQLAlchemy models, one module per aggregate. Importing this package registers every table."""

from appliance.models.alert import Alert
from appliance.models.audit import AuditEntry
from appliance.models.backup import Backup
from appliance.models.golden_image import GoldenImage
from appliance.models.netboot import BootEvent, BootToken, DhcpLease, DnsRecord, Reservation, Subnet
from appliance.models.os_volume import OsVolume
from appliance.models.server_hardware import ServerHardware
from appliance.models.task import Task, TaskProgress
from appliance.models.user import ApiToken, LoginSession, User

__all__ = [
    "Alert", "ApiToken", "AuditEntry", "Backup", "BootEvent", "BootToken", "DhcpLease", "DnsRecord", "GoldenImage",
    "LoginSession",
    "OsVolume", "Reservation", "ServerHardware", "Subnet", "Task", "TaskProgress", "User",
]
