"""The appliance's error catalogue.

Services raise these; the web layer (``web/errors.py``) turns them into OneView-style error bodies
``{errorCode, message, details, recommendedActions, nestedErrors}`` and the task runner copies them
into ``taskErrors``. Each error is a one-line subclass carrying its message format, its OneView
``errorCode`` and its HTTP status, so that adding a failure mode never touches the translators.

Messages are formatted from keyword arguments; never pass a secret as one.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ApplianceError(Exception):
    """Base of every error the appliance reports to a caller.

    :param details: longer explanation shown under the message.
    :param recommended_actions: what the caller can do about it.
    :param nested: field-level problems (validation) as ``(field, message)`` pairs.
    :param kwargs: values for ``msg_fmt``.
    """

    msg_fmt: ClassVar[str] = "An unexpected error occurred."
    error_code: ClassVar[str] = "INTERNAL_ERROR"
    http_status: ClassVar[int] = 500
    default_actions: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        message: str | None = None,
        *,
        details: str = "",
        recommended_actions: list[str] | None = None,
        nested: list[tuple[str, str]] | None = None,
        **kwargs: Any,
    ) -> None:
        self.kwargs = kwargs
        self.message = message if message is not None else self.msg_fmt.format(**kwargs)
        self.details = details
        self.recommended_actions = (
            list(recommended_actions) if recommended_actions is not None else list(self.default_actions)
        )
        self.nested = list(nested or [])
        super().__init__(self.message)


# --- 400 ---------------------------------------------------------------------------------------
class InvalidInput(ApplianceError):
    msg_fmt = "The request is not valid: {reason}"
    error_code = "INVALID_INPUT"
    http_status = 400


class MalformedJson(InvalidInput):
    msg_fmt = "The request body is not valid JSON."
    error_code = "MALFORMED_JSON"


class InvalidFilter(InvalidInput):
    msg_fmt = "The filter or sort expression is not valid: {reason}"
    error_code = "INVALID_FILTER"


class UnsupportedApiVersion(InvalidInput):
    msg_fmt = "X-API-Version {version} is not supported; use a version from {minimum} to {current}."
    error_code = "UNSUPPORTED_VERSION"


class WeakPassword(InvalidInput):
    msg_fmt = "The password does not meet the policy: {reason}"
    error_code = "PASSWORD_POLICY"


# --- 401 / 403 ---------------------------------------------------------------------------------
class AuthenticationFailed(ApplianceError):
    msg_fmt = "Invalid user name or password."
    error_code = "AUTHN_AUTH_FAIL"
    http_status = 401
    default_actions = ("Check the user name and password and try again.",)


class SessionInvalid(ApplianceError):
    msg_fmt = "The session is missing, expired or has been revoked."
    error_code = "AUTHN_SESSION_INVALID"
    http_status = 401
    default_actions = ("Log in again with POST /rest/login-sessions and send the sessionID in the auth header.",)


class Forbidden(ApplianceError):
    msg_fmt = "User {user} with role {role} may not perform this action; it needs {required}."
    error_code = "AUTHORIZATION_DENIED"
    http_status = 403
    default_actions = ("Ask an infrastructure administrator for a role with the needed rights.",)


# --- 404 / 409 / 412 / 413 ---------------------------------------------------------------------
class NotFound(ApplianceError):
    msg_fmt = "The {kind} {ident} was not found."
    error_code = "RESOURCE_NOT_FOUND"
    http_status = 404


class Conflict(ApplianceError):
    msg_fmt = "The request conflicts with the current state: {reason}"
    error_code = "RESOURCE_CONFLICT"
    http_status = 409


class AlreadyExists(Conflict):
    msg_fmt = "A {kind} named {name} already exists."
    error_code = "DUPLICATE_NAME"


class InvalidTaskState(Conflict):
    msg_fmt = "Task {task} is {state} and cannot be {action}."
    error_code = "INVALID_TASK_STATE"


class LastAdministrator(Conflict):
    msg_fmt = "The last enabled infrastructure administrator cannot be removed, disabled or demoted."
    error_code = "LAST_ADMINISTRATOR"


class AgentTokenInvalid(ApplianceError):
    """A deploy agent's call without a valid agent token for the node it names (docs/agent-api.md)."""

    msg_fmt = "The agent token is missing, expired or not this node's."
    error_code = "AGENT_TOKEN_INVALID"
    http_status = 401
    default_actions = ("Boot the server into the deploy ramdisk again: its lookup gets a new token.",)


class AgentLookupMismatch(Conflict):
    msg_fmt = "The agent's lookup does not match its boot token: {reason}"
    error_code = "AGENT_LOOKUP_MISMATCH"
    default_actions = ("Enrol the server (its BMC reports its MACs) and boot it again through Ingot.",)


class InvalidTransition(Conflict):
    """The provision state machine (``appliance/states.py``) has no edge for this event in this state."""

    msg_fmt = "The event {event} is not allowed in provision state {state}."
    error_code = "INVALID_PROVISION_STATE"
    default_actions = ("Read the server's provision state, wait for running work to finish or abort it, then "
                       "send an event that state allows.",)


class EtagMismatch(ApplianceError):
    msg_fmt = "The resource was changed by someone else (eTag {given} does not match {current})."
    error_code = "ETAG_MISMATCH"
    http_status = 412
    default_actions = ("GET the resource again, reapply your change and retry with the new eTag.",)


class PayloadTooLarge(ApplianceError):
    msg_fmt = "The request body exceeds the limit of {limit} bytes."
    error_code = "PAYLOAD_TOO_LARGE"
    http_status = 413


# --- images ------------------------------------------------------------------------------------
class InvalidImage(InvalidInput):
    msg_fmt = "The image was refused: {reason}."
    error_code = "IMAGE_REFUSED"
    default_actions = ("Upload a self-contained qcow2, raw, VMDK (monolithicSparse or streamOptimized), VHD or "
                       "VHDX image, or HPE's zip of one raw disk.",)


class StoreFull(ApplianceError):
    msg_fmt = "The image store has {free} bytes free; this needs {needed}."
    error_code = "INSUFFICIENT_STORAGE"
    http_status = 507
    default_actions = ("Delete golden images or OS volumes that are no longer needed, or grow the store's "
                       "file system.",)


class ImageCorrupt(ApplianceError):
    msg_fmt = "The golden image {name} no longer matches its SHA-256 checksum {sha256}."
    error_code = "IMAGE_CHECKSUM_MISMATCH"
    http_status = 500
    default_actions = ("Do not deploy from it: delete it and upload or capture it again, and check the store's "
                       "disk.",)


class ImageToolFailed(ApplianceError):
    msg_fmt = "The image store could not complete the operation: {reason}."
    error_code = "IMAGE_TOOL_FAILED"
    http_status = 500


class ImageSourceFailed(ApplianceError):
    msg_fmt = "The image could not be fetched from {source}: {reason}."
    error_code = "IMAGE_SOURCE_FAILED"
    http_status = 502
    default_actions = ("Check that the URL serves the image to the appliance (try it with curl from the "
                       "appliance's network), then import again.",)


class PlanScriptFailed(ApplianceError):
    """A build plan's script failed (a task error)."""

    msg_fmt = "The build plan {plan} failed: {where}{reason}"
    error_code = "PLAN_SCRIPT_FAILED"
    transient: bool = False  # set when no script ran (the appliance did not launch): trying again may work
    http_status = 500
    default_actions = ("Read the log of the run (GET /rest/os-volumes/archive/{id} for a personalization, the "
                       "golden image's archive for a capture), fix the plan script or the values, and run it again.",)



# --- tasks -------------------------------------------------------------------------------------
class TaskInterrupted(ApplianceError):
    msg_fmt = (
        "The appliance stopped while this task was running (runner {owner}); the work did not finish "
        "and was not resumed."
    )
    error_code = "TASK_INTERRUPTED"
    default_actions = ("Check the affected resource, then start the operation again.",)


class TaskCancelled(ApplianceError):
    msg_fmt = "Cancelled by {user}."
    error_code = "TASK_CANCELLED"


class UnknownTaskKind(ApplianceError):
    msg_fmt = "No handler is installed for tasks of kind {kind}."
    error_code = "TASK_KIND_UNKNOWN"


class BackupFailed(ApplianceError):
    msg_fmt = "The backup could not be written: {reason}"
    error_code = "BACKUP_FAILED"


# --- BMCs and drivers --------------------------------------------------------------------------
class BmcError(ApplianceError):
    """A BMC did not do what was asked. ``retryable`` tells the driver policy whether to try again."""

    msg_fmt = "The BMC at {bmc} failed: {reason}"
    error_code = "BMC_ERROR"
    http_status = 502
    retryable: ClassVar[bool] = True
    default_actions = ("Check that the BMC is reachable from the appliance and retry.",)


class BmcAuthError(BmcError):
    msg_fmt = "The BMC at {bmc} rejected the credentials: {reason}"
    error_code = "BMC_AUTH_FAILED"
    retryable = False
    default_actions = ("Check the BMC user name and password, then add or refresh the server again.",)


class BmcConnectionError(BmcError):
    msg_fmt = "The BMC at {bmc} did not answer: {reason}"
    error_code = "BMC_UNREACHABLE"
    default_actions = ("Check the BMC's address, port and network cabling, and that IPMI/Redfish over LAN is enabled.",)


class BmcCircuitOpen(BmcConnectionError):
    msg_fmt = "The BMC at {bmc} is not being contacted for {seconds:.0f} s after {failures} failures in a row."
    error_code = "BMC_CIRCUIT_OPEN"
    retryable = False
    default_actions = ("Fix the BMC's reachability; Ingot tries it again when the pause ends or on a refresh.",)


class BmcVerifyFailed(BmcError):
    msg_fmt = "The BMC at {bmc} accepted the command but the server did not reach {expected} (it reports {actual})."
    error_code = "BMC_VERIFY_FAILED"
    retryable = False


class BmcUnsupported(BmcError):
    msg_fmt = "The {driver} driver cannot {action} on {bmc}."
    error_code = "BMC_UNSUPPORTED"
    http_status = 400
    retryable = False
