"""HTTP to a tracking server: one aiohttp session, a deadline on every request, its errors as tracker's."""

from __future__ import annotations

import ast
import asyncio
import re
from collections.abc import Mapping
from typing import Any, Final

import orjson

from tracker.errors import (
    AlreadyExistsError,
    InvalidInputError,
    InvalidStateError,
    NotFoundError,
    ParamConflictError,
    RunNotActiveError,
    StoreUnavailableError,
    TrackerError,
    WriterError,
)
from tracker.server.errors import (
    ABORTED,
    BAD_REQUEST,
    DEADLINE_EXCEEDED,
    INVALID_PARAMETER_VALUE,
    INVALID_STATE,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    TEMPORARILY_UNAVAILABLE,
)
from tracker.stores.uris import mask_password

DEFAULT_HTTP_TIMEOUT: Final = 90.0
"""Seconds one request may take, body included (the server gives up on its own after 60)."""
CONNECT_TIMEOUT: Final = 10.0

RETRYABLE: Final = frozenset({ABORTED, TEMPORARILY_UNAVAILABLE, DEADLINE_EXCEEDED})
"""Error codes that say "try again": resending is safe, the server stores a command once."""

# The server's mapping (tracker.server.errors.answer_for) read backwards.
_ERRORS: Final[dict[str, type[TrackerError]]] = {
    INVALID_PARAMETER_VALUE: InvalidInputError,
    BAD_REQUEST: InvalidInputError,
    RESOURCE_DOES_NOT_EXIST: NotFoundError,
    "NOT_FOUND": NotFoundError,
    "ENDPOINT_NOT_FOUND": NotFoundError,
    RESOURCE_ALREADY_EXISTS: AlreadyExistsError,
    "ALREADY_EXISTS": AlreadyExistsError,
    INVALID_STATE: InvalidStateError,
}
_PARAM_CONFLICT: Final = re.compile(
    r"Changing param values is not allowed\. Param with key=(.+?) was already logged with "
    r"value=(.+?) for run ID=(.+?)\. Attempted logging new value (.+)\.",
    re.DOTALL,
)
_NOT_ACTIVE: Final = re.compile(r"The (run|experiment) \S+ must be in the 'active' state\.")


def error_for(code: str, message: str) -> TrackerError:
    """The tracker error a server's `{"error_code", "message"}` stands for: what the same
    refusal raises in an embedded tracker (ParamConflictError with its fields, say), as
    closely as the code and message tell. Codes that mean "try again" are
    StoreUnavailableError; anything else unknown is WriterError."""
    if code == INVALID_PARAMETER_VALUE:
        conflict = _PARAM_CONFLICT.fullmatch(message)
        if conflict is not None:
            try:
                key, old, run_id, new = (ast.literal_eval(g) for g in conflict.groups())
            except (ValueError, SyntaxError):
                pass
            else:
                return ParamConflictError(str(run_id), str(key), str(old), str(new))
        if _NOT_ACTIVE.match(message):
            return RunNotActiveError(message)
    if code in RETRYABLE:
        return StoreUnavailableError(f"the tracking server answered {code}: {message}")
    cls = _ERRORS.get(code)
    if cls is None:
        return WriterError(f"the tracking server answered {code}: {message}")
    return cls(message)


def _aiohttp() -> Any:
    try:
        import aiohttp
    except ImportError as exc:
        raise InvalidInputError(
            f"{exc.name or 'aiohttp'} is not installed, and a tracking server is reached over "
            "HTTP with it: pip install 'tracker[remote]'"
        ) from exc
    return aiohttp


class RemoteClient:
    """Requests to one tracking server (`url`, http:// or https://, without a trailing
    slash). Every request has a deadline of `timeout` seconds. A server that cannot be
    reached, answers 5xx (but a refusal MLflow answers with 500, INVALID_STATE), 429, or
    passes the deadline raises StoreUnavailableError, which callers retry; an error it
    answers raises the tracker error it stands for (see `error_for`)."""

    def __init__(self, url: str, *, timeout: float = DEFAULT_HTTP_TIMEOUT) -> None:
        self.url = url.rstrip("/")
        self.display_url = mask_password(self.url)
        self.timeout = timeout
        self._aiohttp = _aiohttp()
        self._session: Any = None

    async def open(self) -> None:
        if self._session is None:
            aiohttp = self._aiohttp
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout, connect=CONNECT_TIMEOUT),
                headers={"User-Agent": "tracker-remote"},
            )

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET `path` (from the server's root) with query `params` (lists repeat the name)."""
        query: list[tuple[str, str]] = []
        for k, v in (params or {}).items():
            if v is None:
                continue
            for item in v if isinstance(v, list | tuple) else [v]:
                query.append((k, str(item).lower() if isinstance(item, bool) else str(item)))
        return await self._request("GET", path, params=query)

    async def post(self, path: str, body: Mapping[str, Any] | bytes) -> Any:
        """POST a JSON body (a dict, or bytes already encoded) to `path`."""
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        return await self._request("POST", path, data=data)

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        if self._session is None:
            raise InvalidStateError("the tracking server client is not open")
        aiohttp = self._aiohttp
        where = f"{method} {self.display_url}{path}"
        try:
            async with self._session.request(
                method, self.url + path, headers={"Content-Type": "application/json"}, **kwargs
            ) as response:
                status = response.status
                raw = await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            reason = "no answer within the deadline" if isinstance(exc, TimeoutError) else exc
            raise StoreUnavailableError(f"{where}: {type(exc).__name__}: {reason}") from exc
        try:
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            body = None
        if status == 200 and body is not None:
            return body
        code = body.get("error_code") if isinstance(body, dict) else None
        message = body.get("message", "") if isinstance(body, dict) else ""
        # A refusal in MLflow's format; MLflow answers INVALID_STATE with a 500.
        if isinstance(code, str) and status != 429 and (status < 500 or code == INVALID_STATE):
            raise error_for(code, str(message))
        shown = message or raw[:200].decode("utf-8", "replace")
        if 400 <= status < 500 and status != 429:
            raise WriterError(f"{where}: HTTP {status}: {shown}")
        raise StoreUnavailableError(f"{where}: HTTP {status}: {shown}")


async def cancel_quietly(task: asyncio.Task[Any] | None) -> None:
    """Cancel a task and wait until it has ended."""
    if task is None or task.done():
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
