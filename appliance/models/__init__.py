"""SQLAlchemy models, one module per aggregate. Importing this package registers every table."""

from appliance.models.alert import Alert
from appliance.models.artifact_bundle import ArtifactBundle
from appliance.models.audit import AuditEntry
from appliance.models.backup import Backup
from appliance.models.build_plan import BuildPlan
from appliance.models.deployment_plan import DeploymentPlan
from appliance.models.golden_image import GoldenImage
from appliance.models.netboot import BootEvent, BootToken, DhcpLease, DnsRecord, Reservation, Subnet
from appliance.models.os_volume import OsVolume
from appliance.models.plan_script import PlanScript
from appliance.models.server_hardware import AgentCommand, AgentSession, InstallerSession, ServerHardware
from appliance.models.server_profile import ServerProfile
from appliance.models.task import Task, TaskProgress
from appliance.models.user import ApiToken, LoginSession, User

__all__ = [
    "AgentCommand", "AgentSession", "Alert", "ApiToken", "ArtifactBundle", "AuditEntry", "Backup",
    "BootEvent", "BootToken", "BuildPlan", "DeploymentPlan", "DhcpLease",
    "DnsRecord", "GoldenImage", "InstallerSession", "LoginSession",
    "OsVolume", "PlanScript", "Reservation", "ServerHardware", "ServerProfile", "Subnet", "Task", "TaskProgress",
    "User",
]
