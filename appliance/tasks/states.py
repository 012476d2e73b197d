"""OneView ``taskState`` values and how the HPE SDK reads them.

The SDK's TaskMonitor keeps polling while a task is in ``ACTIVE_STATES``, raises for
``FAILED_STATES`` and treats anything else (Completed, Warning) as success. An interrupted task is
therefore reported as ``Error`` — never as OneView's ``Interrupted``, which the SDK would take for
success.
"""

from enum import StrEnum


class TaskState(StrEnum):
    NEW = "New"
    STARTING = "Starting"
    PENDING = "Pending"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    STOPPING = "Stopping"
    COMPLETED = "Completed"
    WARNING = "Warning"
    ERROR = "Error"
    TERMINATED = "Terminated"
    KILLED = "Killed"


ACTIVE_STATES = frozenset(
    {TaskState.NEW, TaskState.STARTING, TaskState.PENDING, TaskState.RUNNING, TaskState.SUSPENDED,
     TaskState.STOPPING}
)
FAILED_STATES = frozenset({TaskState.ERROR, TaskState.TERMINATED, TaskState.KILLED})
FINISHED_STATES = frozenset(TaskState) - ACTIVE_STATES
