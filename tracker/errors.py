"""The exception tree: every error tracker raises derives from TrackerError.

TrackerError
├── InvalidInputError            bad input at the call site; says what to fix
│   └── ParamConflictError       a param re-logged with a different value
├── NotFoundError                an experiment, run or artifact that does not exist
├── AlreadyExistsError           a name or id that is taken
├── InvalidStateError            the entity exists but is not in a state that allows this
├── QueueFullError               the client queue is full and the policy is "raise"
├── StoreError                   the backend failed; backends translate driver errors to these
│   ├── ConcurrencyError         a per-stream sequence number is already taken
│   ├── StoreUnavailableError    the backend cannot be reached (retried by the writer)
│   └── SchemaVersionError       the database schema is newer or older than this code
├── WriterError                  the writer gave up on a batch; flush() raises it
└── ArtifactError                an artifact store failed (see tracker.artifacts)
"""

from __future__ import annotations


class TrackerError(Exception):
    """Base of every error tracker raises."""


class InvalidInputError(TrackerError, ValueError):
    """Input was refused before anything was queued or stored."""


class ParamConflictError(InvalidInputError):
    """A param was logged again with a different value; params are write-once."""

    def __init__(self, run_id: str, key: str, old_value: str, new_value: str) -> None:
        self.run_id, self.key, self.old_value, self.new_value = run_id, key, old_value, new_value
        super().__init__(
            f"Changing param values is not allowed. Param with key={key!r} was already "
            f"logged with value={old_value!r} for run ID={run_id!r}. "
            f"Attempted logging new value {new_value!r}."
        )


class NotFoundError(TrackerError, LookupError):
    """The entity does not exist."""


class AlreadyExistsError(TrackerError):
    """The name or id is already taken."""


class InvalidStateError(TrackerError):
    """The entity exists but its state forbids the operation (e.g. a deleted run)."""


class QueueFullError(TrackerError):
    """The client queue is at capacity and its full-queue policy is "raise"."""


class StoreError(TrackerError):
    """The event store failed."""


class ConcurrencyError(StoreError):
    """Another writer already appended an event at this stream sequence number."""


class StoreUnavailableError(StoreError):
    """The backend could not be reached; the writer retries these with backoff."""


class SchemaVersionError(StoreError):
    """The database schema version does not match what this code expects."""


class WriterError(TrackerError):
    """The writer could not store a batch; raised by flush() with the cause chained."""


class ArtifactError(TrackerError):
    """An artifact store operation failed."""
