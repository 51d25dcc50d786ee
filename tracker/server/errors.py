"""MLflow's error codes and HTTP statuses, and the one mapping from tracker's errors onto them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from tracker.artifacts.base import ArtifactUnavailableError
from tracker.errors import (
    AlreadyExistsError,
    ArtifactError,
    ConcurrencyError,
    InvalidInputError,
    InvalidStateError,
    NotFoundError,
    ParamConflictError,
    QueueFullError,
    StoreUnavailableError,
    TrackerError,
    WriterError,
)

INVALID_PARAMETER_VALUE: Final = "INVALID_PARAMETER_VALUE"
BAD_REQUEST: Final = "BAD_REQUEST"
RESOURCE_ALREADY_EXISTS: Final = "RESOURCE_ALREADY_EXISTS"
RESOURCE_DOES_NOT_EXIST: Final = "RESOURCE_DOES_NOT_EXIST"
ABORTED: Final = "ABORTED"
INTERNAL_ERROR: Final = "INTERNAL_ERROR"
INVALID_STATE: Final = "INVALID_STATE"
NOT_IMPLEMENTED: Final = "NOT_IMPLEMENTED"
TEMPORARILY_UNAVAILABLE: Final = "TEMPORARILY_UNAVAILABLE"
DEADLINE_EXCEEDED: Final = "DEADLINE_EXCEEDED"

# MLflow's ERROR_CODE_TO_HTTP_STATUS (mlflow/exceptions.py), quirks included: an existing
# resource is 400, not 409, and INVALID_STATE is a 500.
HTTP_STATUS: Final[dict[str, int]] = {
    INVALID_PARAMETER_VALUE: 400,
    BAD_REQUEST: 400,
    RESOURCE_ALREADY_EXISTS: 400,
    "CUSTOMER_UNAUTHORIZED": 401,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    RESOURCE_DOES_NOT_EXIST: 404,
    "NOT_FOUND": 404,
    "ENDPOINT_NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    ABORTED: 409,
    "RESOURCE_CONFLICT": 409,
    "REQUEST_LIMIT_EXCEEDED": 429,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    INTERNAL_ERROR: 500,
    INVALID_STATE: 500,
    "DATA_LOSS": 500,
    NOT_IMPLEMENTED: 501,
    TEMPORARILY_UNAVAILABLE: 503,
    DEADLINE_EXCEEDED: 504,
}

API_DOCS_HINT: Final = " See the API docs for more information about request parameters."
INVALID_PATH: Final = "Invalid path"
MULTIPART_UNSUPPORTED: Final = (
    "Multipart upload is not supported for the current artifact repository"
)

# Where MLflow answers a refused state with something other than INVALID_PARAMETER_VALUE:
# renaming a deleted experiment is INVALID_STATE; deleting a deleted experiment, or restoring
# an active one, is "no such experiment" (its SQL store looks them up by lifecycle stage).
_STATE_CODES: Final[dict[str, str]] = {
    "updateExperiment": INVALID_STATE,
    "deleteExperiment": RESOURCE_DOES_NOT_EXIST,
    "restoreExperiment": RESOURCE_DOES_NOT_EXIST,
}


class RestError(Exception):
    """An error answered in MLflow's format: `{"error_code": ..., "message": ...}`."""

    def __init__(self, error_code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message
        self.status = status if status is not None else HTTP_STATUS.get(error_code, 500)


def invalid_parameter(message: str) -> RestError:
    return RestError(INVALID_PARAMETER_VALUE, message)


@dataclass(frozen=True, slots=True)
class Answer:
    """What to answer for an error: MLflow's code, the HTTP status and the message."""

    error_code: str
    status: int
    message: str


def answer_for(exc: BaseException, rpc: str | None = None) -> Answer | None:
    """MLflow's answer to `exc` raised while serving the RPC `rpc`, or None for an error
    that is a bug (the caller logs it and answers a bare INTERNAL_ERROR)."""
    if isinstance(exc, RestError):
        return Answer(exc.error_code, exc.status, exc.message)
    if isinstance(exc, ParamConflictError) and rpc == "logBatch":
        # MLflow words a conflict inside log-batch as a list of the conflicting params.
        conflicts = [{"key": exc.key, "old_value": exc.old_value, "new_value": exc.new_value}]
        message = (
            f"Changing param values is not allowed. Params were already logged='{conflicts}' "
            f"for run ID='{exc.run_id}'."
        )
        return _answer(INVALID_PARAMETER_VALUE, message)
    code = _code_for(exc, rpc)
    if code is None:
        return None
    return _answer(code, str(exc) or type(exc).__name__)


def _code_for(exc: BaseException, rpc: str | None) -> str | None:
    # Order matters: ArtifactNotFoundError is both an ArtifactError and a NotFoundError.
    if isinstance(exc, InvalidInputError):
        return INVALID_PARAMETER_VALUE
    if isinstance(exc, NotFoundError):
        return RESOURCE_DOES_NOT_EXIST
    if isinstance(exc, AlreadyExistsError):
        return RESOURCE_ALREADY_EXISTS
    if isinstance(exc, InvalidStateError):
        return _STATE_CODES.get(rpc or "", INVALID_PARAMETER_VALUE)
    if isinstance(exc, ConcurrencyError):
        return ABORTED
    if isinstance(exc, (StoreUnavailableError, ArtifactUnavailableError, QueueFullError)):
        return TEMPORARILY_UNAVAILABLE
    if isinstance(exc, TimeoutError):
        return DEADLINE_EXCEEDED
    if isinstance(exc, (WriterError, ArtifactError, TrackerError)):
        return INTERNAL_ERROR
    return None


def _answer(code: str, message: str) -> Answer:
    return Answer(code, HTTP_STATUS.get(code, 500), message)
