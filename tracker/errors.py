"""The exception tree: every error tracker raises derives from TrackerError.

TrackerError
├── InvalidInputError            bad input at the call site; says what to fix
│   └── ParamConflictError       a param re-logged with a different value
├── NotFoundError                an experiment, run or artifact that does not exist
├── AlreadyExistsError           a name or id that is taken
├── InvalidStateError            the entity exists but is not in a state that allows this
│   └── RunNotActiveError        a write to a deleted run (or to a deleted experiment's)
├── QueueFullError               the client queue is full and the policy is "raise"
├── StoreError                   the backend failed; backends translate driver errors to these
│   ├── ConcurrencyError         a per-stream sequence number is already taken
│   ├── StoreUnavailableError    the backend cannot be reached, is busy or full (retried)
│   └── SchemaVersionError       the database schema is newer or older than this code
├── WriterError                  the writer could not store something; flush() raises it
├── DeadlineExceededError        a wait passed its deadline (also a builtin TimeoutError)
└── ArtifactError                an artifact store failed (see tracker.artifacts)

Each class carries `code`, the MLflow error code a server answers with (its HTTP status follows
from the code, as in MLflow).
"""

from __future__ import annotations

from typing import ClassVar


class TrackerError(Exception):
    """Base of every error tracker raises."""

    code: ClassVar[str] = "INTERNAL_ERROR"


class InvalidInputError(TrackerError, ValueError):
    """Input was refused before anything was queued or stored."""

    code = "INVALID_PARAMETER_VALUE"


class ParamConflictError(InvalidInputError):
    """A param was logged again with a different value; params are write-once."""

    def __init__(self, run_id: str, key: str, old_value: str, new_value: str) -> None:
        self.run_id, self.key, self.old_value, self.new_value = run_id, key, old_value, new_value
        super().__init__(
            f"Changing param values is not allowed. Param with key={key!r} was already "
            f"logged with value={old_value!r} for run ID={run_id!r}. "
            f"Attempted logging new value {new_value!r}."
        )

    def __reduce__(self) -> tuple[type[ParamConflictError], tuple[str, str, str, str]]:
        return type(self), (self.run_id, self.key, self.old_value, self.new_value)


class NotFoundError(TrackerError, LookupError):
    """The entity does not exist."""

    code = "RESOURCE_DOES_NOT_EXIST"


class AlreadyExistsError(TrackerError):
    """The name or id is already taken."""

    code = "RESOURCE_ALREADY_EXISTS"


class InvalidStateError(TrackerError):
    """The entity exists but its state forbids the operation."""

    code = "INVALID_STATE"


class RunNotActiveError(InvalidStateError):
    """A write to a run that is deleted (itself, or with its experiment)."""

    code = "INVALID_PARAMETER_VALUE"  # what MLflow answers for a write to a deleted run


class QueueFullError(TrackerError):
    """The client queue is at capacity and its full-queue policy is "raise"."""

    code = "RESOURCE_EXHAUSTED"


class StoreError(TrackerError):
    """The event store failed."""


class ConcurrencyError(StoreError):
    """Another writer already appended an event at this stream sequence number."""

    code = "ABORTED"


class StoreUnavailableError(StoreError):
    """The backend could not be reached, or is busy or full; retrying may succeed."""

    code = "TEMPORARILY_UNAVAILABLE"


class SchemaVersionError(StoreError):
    """The database schema version does not match what this code expects."""


class WriterError(TrackerError):
    """The writer could not store something; raised by flush() with the cause chained."""


class DeadlineExceededError(TrackerError, TimeoutError):
    """A wait (for the views to reach a position, say) did not finish within its timeout.
    Also a builtin TimeoutError, so `except TimeoutError` keeps catching it."""

    code = "DEADLINE_EXCEEDED"


class ArtifactError(TrackerError):
    """An artifact store operation failed."""
