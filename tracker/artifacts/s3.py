"""S3ArtifactStore: artifacts as objects under an S3 bucket and key prefix, via aiobotocore."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import copy
import functools
import io
import logging
import math
import os
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import stamina
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from tracker.artifacts.base import (
    ArtifactEntry,
    ArtifactLocationError,
    ArtifactNotFoundError,
    ArtifactPermissionError,
    ArtifactStore,
    ArtifactUnavailableError,
    guess_content_type,
    run_to_completion,
)
from tracker.artifacts.files import UploadSource
from tracker.artifacts.paths import parse_artifact_uri, validate_artifact_path
from tracker.errors import ArtifactError, InvalidInputError

log = logging.getLogger(__name__)

MiB: Final = 1 << 20
# S3's own limits: parts of 5 MiB to 5 GiB (the last may be smaller), at most 10,000 parts.
MIN_PART_SIZE: Final = 5 * MiB
MAX_PART_SIZE: Final = 5 * 1024 * MiB
MAX_PARTS: Final = 10_000
DEFAULT_PART_SIZE: Final = 8 * MiB
DEFAULT_CONCURRENCY: Final = 4
# Long enough to send a default part over a slow uplink (8 MiB at 1 Mbit/s takes 67 s).
DEFAULT_REQUEST_TIMEOUT: Final = 120.0
DEFAULT_ABORT_ATTEMPTS: Final = 3
# Cleanups left by failures, kept for a later try; past this many the oldest is forgotten.
MAX_PENDING_CLEANUPS: Final = 1000

_DENIED_CODES: Final = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "AccountProblem",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidToken",
        "SignatureDoesNotMatch",
        "TokenRefreshRequired",
    }
)
_UNAVAILABLE_CODES: Final = frozenset(
    {"InternalError", "RequestTimeout", "ServiceUnavailable", "SlowDown", "503", "500"}
)
# What S3 answers a CompleteMultipartUpload whose list of parts is wrong.
_BAD_PARTS_CODES: Final = frozenset(
    {"InvalidPart", "InvalidPartOrder", "EntityTooSmall", "MalformedXML", "InvalidRequest"}
)
_CREDENTIAL_ERRORS: Final = (
    NoCredentialsError,
    PartialCredentialsError,
    CredentialRetrievalError,
    ProfileNotFound,
)
_CONNECTION_ERRORS: Final = (
    BotoConnectionError,
    HTTPClientError,
    aiohttp.ClientError,
    OSError,
    TimeoutError,
)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


class S3ArtifactStore(ArtifactStore):
    """Artifacts stored as objects under `s3://bucket/prefix`.

    `endpoint_url` defaults to `MLFLOW_S3_ENDPOINT_URL`, then `AWS_ENDPOINT_URL`,
    then AWS itself; credentials and region come from the standard AWS chain
    (environment, `profile_name` or `AWS_PROFILE`, config files, instance roles).
    `MLFLOW_S3_IGNORE_TLS=true` turns off certificate checks unless `verify` is given.

    A put smaller than `part_size` is one request; a larger one is a multipart
    upload with up to `concurrency` parts in flight, so each put buffers about
    `concurrency * part_size` bytes at most. `max_attempts` counts tries per request,
    retries included.

    Every request (each part, each listing page, each read of a download's body, the
    retries botocore makes of it included) has a deadline of `request_timeout` seconds
    (default 120), after which it is given up with `ArtifactUnavailableError` naming the
    request and the object: a stalled endpoint never hangs a call. A failed or
    cancelled multipart upload is aborted, the abort retried `abort_attempts` times
    with jittered backoff, and the error's notes say whether it was aborted (and its
    upload id if not). A multipart upload is preceded by a listing of those already in
    progress for its key, so that after a start request that got no answer, the upload
    it may have started all the same is found and aborted. What could not be cleaned
    up at once (the endpoint unreachable) is tried again before the next request and
    when the store is closed.
    """

    def __init__(
        self,
        uri: str,
        *,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        profile_name: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        concurrency: int = DEFAULT_CONCURRENCY,
        max_attempts: int = 3,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        verify: bool | str | None = None,
        addressing_style: str | None = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        abort_attempts: int = DEFAULT_ABORT_ATTEMPTS,
    ) -> None:
        parsed = parse_artifact_uri(uri)
        if parsed.scheme != "s3" or parsed.bucket is None:
            raise InvalidInputError(
                f"S3ArtifactStore needs an 's3://bucket/prefix' URI, got {uri!r}"
            )
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise InvalidInputError(
                f"part_size must be between {MIN_PART_SIZE} (5 MiB) and {MAX_PART_SIZE} "
                f"(5 GiB) bytes, as S3 requires; got {part_size}"
            )
        if concurrency < 1:
            raise InvalidInputError(f"concurrency must be at least 1, got {concurrency}")
        if max_attempts < 1:
            raise InvalidInputError(f"max_attempts must be at least 1, got {max_attempts}")
        if not request_timeout > 0:
            raise InvalidInputError(
                f"request_timeout must be a positive number of seconds, got {request_timeout}"
            )
        if abort_attempts < 1:
            raise InvalidInputError(f"abort_attempts must be at least 1, got {abort_attempts}")
        self.bucket = parsed.bucket
        self.prefix = parsed.path
        self.part_size = part_size
        self.concurrency = concurrency
        self.request_timeout = request_timeout
        self.abort_attempts = abort_attempts
        self.endpoint_url = (
            endpoint_url
            or os.environ.get("MLFLOW_S3_ENDPOINT_URL")
            or os.environ.get("AWS_ENDPOINT_URL")
            or None
        )
        if verify is None and _env_flag("MLFLOW_S3_IGNORE_TLS"):
            verify = False
        self._client_args: dict[str, Any] = {
            "endpoint_url": self.endpoint_url,
            "region_name": region_name,
            "verify": verify,
            "config": AioConfig(
                retries={"total_max_attempts": max_attempts, "mode": "standard"},
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                # Every part in flight needs its own connection, plus room for a listing.
                max_pool_connections=max(10, concurrency + 2),
                # S3-compatible servers on custom endpoints rarely do virtual hosts.
                s3={
                    "addressing_style": addressing_style
                    or ("path" if self.endpoint_url else "auto")
                },
            ),
        }
        self._region_name = region_name
        self._profile_name = profile_name
        self._access_key_id = os.environ.get("AWS_ACCESS_KEY_ID")
        self._shared = _SharedClient()
        self._owner = True

    def __repr__(self) -> str:
        where = f", endpoint_url={self.endpoint_url!r}" if self.endpoint_url else ""
        return f"{type(self).__name__}({self._root_uri!r}{where})"

    @property
    def _root_uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    @property
    def _where(self) -> str:
        return self.endpoint_url or "AWS S3"

    def _key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix and path else self.prefix or path

    @property
    def client_key(self) -> tuple[str | None, ...]:
        """Stores with equal keys can share one client: endpoint, bucket, region, profile
        and the access key id in the environment when the store was made."""
        return (
            self.endpoint_url,
            self.bucket,
            self._region_name,
            self._profile_name,
            self._access_key_id,
        )

    def at(self, prefix: str) -> S3ArtifactStore:
        """A store for the keys under `prefix` (a path relative to this store's root).

        It shares this store's client, connections and pending cleanups, so any number
        of them cost one client. Closing it ends only its own use: the client is closed
        with this store.
        """
        child = copy.copy(self)
        child.prefix = self._key(validate_artifact_path(prefix))
        child._owner = False
        child._closed = False
        return child

    async def aclose(self) -> None:
        if self._closed:
            return
        if self._owner:
            await self._clean_up()  # bounded: it stops at the first request that fails
        await super().aclose()
        if not self._owner:
            return
        shared = self._shared
        async with shared.lock:
            shared.closed = True
            shared.client = None
            await shared.exit_stack.aclose()
        for cleanup in shared.cleanups:
            log.warning(
                "Closing %r with the multipart %s of s3://%s/%s still to abort; a lifecycle rule "
                "with AbortIncompleteMultipartUpload removes such uploads",
                self,
                f"upload {cleanup.upload_id!r}" if cleanup.upload_id else "uploads started",
                self.bucket,
                cleanup.key,
            )

    async def _s3(self) -> Any:
        self._check_open()
        shared = self._shared
        async with shared.lock:
            if shared.closed:
                raise ArtifactError(
                    f"{self!r} was made from a store that is closed; create a new store to "
                    "keep using it"
                )
            if shared.client is None:
                session = AioSession(profile=self._profile_name)
                session.register_component("data_loader", _data_loader())
                with self._errors("connect to", ""):
                    shared.client = await shared.exit_stack.enter_async_context(
                        session.create_client("s3", **self._client_args)
                    )
            return shared.client

    @contextlib.asynccontextmanager
    async def _deadline(
        self, request: str, action: str, path: str, target: str | None = None
    ) -> AsyncIterator[None]:
        """Give up what runs inside after `request_timeout`, with ArtifactUnavailableError."""
        scope = asyncio.timeout(self.request_timeout)
        try:
            async with scope:
                yield
        except TimeoutError:
            if not scope.expired():
                raise  # a timeout of the driver's own: `_errors` translates it
            raise ArtifactUnavailableError(
                f"S3 at {self._where} did not answer {request} (to {action} "
                f"{target or self._target(path)}) within {self.request_timeout:g} s, so the "
                "request was given up; check that the endpoint is up and reachable, or raise "
                "request_timeout for a slow link"
            ) from None

    async def _call(
        self, request: str, action: str, path: str, *, target: str | None = None, **params: Any
    ) -> Any:
        """One S3 request on this store's bucket, under its deadline, errors translated."""
        s3 = await self._s3()
        with self._errors(action, path, target):
            async with self._deadline(request, action, path, target):
                return await getattr(s3, request)(Bucket=self.bucket, **params)

    # -- put ---------------------------------------------------------------------------------

    async def _put(
        self, path: str, source: UploadSource, content_type: str, committed: Callable[[], None]
    ) -> None:
        await self._clean_up()
        key = self._key(path)
        part_size = self.part_size
        if source.size_hint is not None and source.size_hint > part_size * MAX_PARTS:
            # Known size: grow the parts (whole MiB) so the file fits S3's part limit.
            part_size = math.ceil(source.size_hint / MAX_PARTS / MiB) * MiB
            if part_size > MAX_PART_SIZE:
                raise InvalidInputError(
                    f"Cannot put {path!r}: {source.size_hint} bytes is more than S3 stores in "
                    "one object"
                )
        known: set[str] | None = None
        if source.size_hint is None or source.size_hint >= part_size:
            # Before reading, as a pipe may take its time: see _create.
            known = await self._uploads_of(key, path)
        # Parts travel as BytesIO objects holding the only reference to their bytes: aiohttp
        # then sends from that buffer, where a shared `bytes` would be copied first. For the
        # same reason no variable keeps a part alive after it is handed over.
        body = await source.read(part_size)
        if len(body) < part_size:
            whole = io.BytesIO(body)
            del body
            # To the end: once the body is sent, S3 may store it whether or not we wait.
            await run_to_completion(
                self._call(
                    "put_object", "put", path, Key=key, Body=whole, ContentType=content_type
                ),
                then=lambda _: committed(),
            )
            return

        upload_id = await self._create(path, key, content_type, known)
        self._shared.in_progress.add(upload_id)
        parts: dict[int, dict[str, Any]] = {}
        complete = False

        def completed() -> None:
            nonlocal complete
            complete = True
            committed()

        # A slot is taken before a part is read and given back once its request is done: at
        # most `concurrency` parts are in memory, in flight or being read.
        slots = asyncio.Semaphore(self.concurrency)

        async def send(number: int, part: io.BytesIO) -> None:
            sent = await self._call(
                "upload_part",
                f"upload part {number} of",
                path,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=part,
                ChecksumAlgorithm="CRC32",
            )
            # The upload was created with a checksum, so completing it needs each part's.
            parts[number] = {
                "PartNumber": number,
                "ETag": sent["ETag"],
                **{
                    name: value
                    for name, value in sent.items()
                    if name.startswith("Checksum") and name != "ChecksumType"
                },
            }

        try:
            await slots.acquire()  # the slot of the part already read
            async with asyncio.TaskGroup() as group:
                number = 1
                while body:
                    if number > MAX_PARTS:
                        raise InvalidInputError(
                            f"Cannot put {path!r}: it needs more than {MAX_PARTS} parts of "
                            f"{part_size} bytes; raise part_size"
                        )
                    task = group.create_task(send(number, io.BytesIO(body)))
                    # Released once the task is over and its frame, holding the part, is gone.
                    task.add_done_callback(lambda _: slots.release())
                    body = b""
                    await slots.acquire()
                    body = await source.read(part_size)
                    number += 1
                slots.release()  # the slot of the empty read at the end
            await run_to_completion(
                self._call(
                    "complete_multipart_upload",
                    "complete the multipart upload of",
                    path,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": [parts[n] for n in sorted(parts)]},
                ),
                then=lambda _: completed(),
            )
        except BaseException as exc:
            if complete:
                raise  # cancelled once the object was in place: there is nothing to abort
            error = _first_error(exc)
            # To the end even if cancelled again: a cancelled upload must still be aborted,
            # or its parts stay billed. Every request in it has a deadline.
            await run_to_completion(self._abort_noting(path, key, upload_id, error))
            if error is exc:
                raise
            raise error from None
        finally:
            self._shared.in_progress.discard(upload_id)

    async def _create(self, path: str, key: str, content_type: str, known: set[str] | None) -> str:
        """Start a multipart upload of `key`; returns its upload id.

        `known` holds the uploads of `key` in progress before (`None` if they could not be
        listed): if the request gets no answer, any others are those it made after all.
        """
        try:
            created = await self._call(
                "create_multipart_upload",
                "start a multipart upload of",
                path,
                Key=key,
                ContentType=content_type,
                ChecksumAlgorithm="CRC32",
            )
        except (ArtifactUnavailableError, asyncio.CancelledError) as exc:
            # Unanswered is not undone: a stalled server works through its backlog when it
            # resumes, and may start the upload after we gave up on it.
            await run_to_completion(self._abort_strays(path, key, known, exc))
            raise
        upload_id: str = created["UploadId"]
        return upload_id

    async def _uploads_of(self, key: str, path: str, target: str | None = None) -> set[str] | None:
        """The ids of the multipart uploads in progress for exactly `key`, or `None` if
        listing them is refused (IAM policies and some S3-compatible servers do)."""
        ids: set[str] = set()
        params: dict[str, Any] = {"Prefix": key}
        while True:
            try:
                page = await self._call(
                    "list_multipart_uploads",
                    "list the multipart uploads of",
                    path,
                    target=target,
                    **params,
                )
            except (ArtifactUnavailableError, ArtifactLocationError):
                raise
            except ArtifactError:
                return None
            ids.update(u["UploadId"] for u in page.get("Uploads", ()) if u["Key"] == key)
            if not page.get("IsTruncated"):
                return ids
            params = {
                "Prefix": key,
                "KeyMarker": page["NextKeyMarker"],
                "UploadIdMarker": page["NextUploadIdMarker"],
            }

    async def _strays(
        self, key: str, path: str, known: frozenset[str], target: str | None = None
    ) -> builtins.list[str]:
        """Uploads of `key` in progress now that were not before, and that no put of ours is
        running: those a start request that got no answer made after all."""
        ids = await self._uploads_of(key, path, target)
        return sorted((ids or set()) - known - self._shared.in_progress)

    async def _abort_strays(
        self, path: str, key: str, known: set[str] | None, error: BaseException
    ) -> None:
        if known is None:
            error.add_note(
                f"A multipart upload of {path!r} that this request may have started cannot be "
                "looked for, since listing multipart uploads is not allowed; a lifecycle rule "
                "with AbortIncompleteMultipartUpload removes such uploads"
            )
            return
        try:
            strays = await self._strays(key, path, frozenset(known))
        except ArtifactError as exc:
            self._remember(_Cleanup(key, None, frozenset(known)))
            error.add_note(
                f"A multipart upload of {path!r} that this request may have started could not "
                f"be looked for ({exc}); the store looks again before its next request and "
                "when it is closed"
            )
            return
        if not strays:
            error.add_note(f"No multipart upload of {path!r} was left in progress")
        for upload_id in strays:
            await self._abort_noting(path, key, upload_id, error)

    async def _abort_noting(
        self, path: str, key: str, upload_id: str, error: BaseException
    ) -> None:
        """Abort the upload, retrying; say on `error` how it went. Never raises ArtifactError."""
        try:
            gone = await self._abort(path, key, upload_id, self.abort_attempts)
        except ArtifactError as abort_error:
            self._remember(_Cleanup(key, upload_id))
            note = (
                f"The multipart upload {upload_id!r} of {path!r} could not be aborted "
                f"({abort_error}); the store tries again before its next request and when it "
                "is closed, and until then its parts stay in the bucket (a lifecycle rule with "
                "AbortIncompleteMultipartUpload removes them)"
            )
            log.warning(note)
        else:
            if gone:
                note = (
                    f"The multipart upload {upload_id!r} of {path!r} was no longer in progress "
                    "(aborted already, or completed by a request that got no answer)"
                )
            else:
                note = f"The multipart upload {upload_id!r} of {path!r} was aborted"
        error.add_note(note)

    async def _abort(
        self, path: str, key: str, upload_id: str, attempts: int, target: str | None = None
    ) -> bool:
        """Abort the upload, retrying unavailability with jittered backoff; `True` if it was
        gone already. Raises the last ArtifactError if every attempt failed."""
        gone = False
        async for attempt in stamina.retry_context(
            on=ArtifactUnavailableError,
            attempts=attempts,
            timeout=None,  # each attempt has its deadline already
            wait_initial=0.1,
            wait_max=1.0,
            wait_jitter=0.5,
        ):
            with attempt:
                try:
                    await self._call(
                        "abort_multipart_upload",
                        "abort the multipart upload of",
                        path,
                        target=target,
                        Key=key,
                        UploadId=upload_id,
                    )
                except ArtifactNotFoundError:
                    gone = True
        return gone

    def _remember(self, cleanup: _Cleanup) -> None:
        cleanups = self._shared.cleanups
        if cleanup in cleanups:
            return
        if len(cleanups) >= MAX_PENDING_CLEANUPS:
            forgotten = cleanups.popleft()
            log.warning(
                "Forgetting to abort the multipart upload(s) of s3://%s/%s (%s): more than %d "
                "cleanups are pending",
                self.bucket,
                forgotten.key,
                forgotten.upload_id or "started by a request that got no answer",
                MAX_PENDING_CLEANUPS,
            )
        cleanups.append(cleanup)

    async def _clean_up(self) -> None:
        """Try again, once each, the aborts earlier failures left pending.

        Stops at the first sign that the endpoint is still unreachable, so it costs at most
        one deadline; never raises ArtifactError: the request that follows speaks for
        itself.
        """
        shared = self._shared
        if not shared.cleanups or shared.sweeping:
            return
        shared.sweeping = True
        try:
            while shared.cleanups:
                cleanup = shared.cleanups[0]
                target = f"s3://{self.bucket}/{cleanup.key}"
                try:
                    if cleanup.upload_id is not None:
                        await self._abort(target, cleanup.key, cleanup.upload_id, 1, target)
                    else:
                        strays = await self._strays(cleanup.key, target, cleanup.known, target)
                        shared.cleanups.extend(_Cleanup(cleanup.key, u) for u in strays)
                except ArtifactUnavailableError:
                    return
                except ArtifactError as exc:
                    log.warning("Gave up cleaning up after an upload to %s: %s", target, exc)
                shared.cleanups.popleft()
        finally:
            shared.sweeping = False

    # -- multipart uploads whose parts others send -------------------------------------------

    async def create_multipart(self, path: str) -> str:
        """Start a multipart upload of `path` whose parts are sent by someone else, to the URLs
        of `presign_part`; returns its upload id.

        Unlike a put's, the upload asks for no part checksums, since whoever sends the parts
        is not asked for any. It stays in progress, its parts billed, until
        `complete_multipart` or `abort_multipart` ends it (or a lifecycle rule with
        AbortIncompleteMultipartUpload): the store does not track it. Should the start request
        get no answer, the upload it may have made all the same is left to that rule too, as
        the store cannot tell it from one another client started for the same path.
        """
        checked = self._check(path)
        await self._clean_up()
        created = await self._call(
            "create_multipart_upload",
            "start a multipart upload of",
            checked,
            Key=self._key(checked),
            ContentType=guess_content_type(checked),
        )
        upload_id: str = created["UploadId"]
        return upload_id

    async def presign_part(
        self, path: str, upload_id: str, part_number: int, expires: int = 3600
    ) -> str:
        """A URL to which an HTTP PUT of its body sends part `part_number` (1 to 10,000) of
        the multipart upload `upload_id` of `path`, valid for `expires` seconds. Made
        locally (no request), with the store's credentials; S3 answers the PUT with the
        part's ETag, which `complete_multipart` needs."""
        checked = self._check(path)
        self._check_upload_id(upload_id)
        if not 1 <= part_number <= MAX_PARTS:
            raise InvalidInputError(
                f"part_number must be between 1 and {MAX_PARTS}, as S3 requires; got {part_number}"
            )
        if expires < 1:
            raise InvalidInputError(f"expires must be at least 1 second, got {expires}")
        s3 = await self._s3()
        action = f"presign part {part_number} of"
        # Credentials may have to be fetched (a profile, an instance role): hence the deadline.
        with self._errors(action, checked):
            async with self._deadline("generate_presigned_url", action, checked):
                url: str = await s3.generate_presigned_url(
                    "upload_part",
                    Params={
                        "Bucket": self.bucket,
                        "Key": self._key(checked),
                        "UploadId": upload_id,
                        "PartNumber": part_number,
                    },
                    ExpiresIn=expires,
                )
        return url

    async def complete_multipart(
        self, path: str, upload_id: str, parts: Sequence[tuple[int, str]]
    ) -> None:
        """Join the parts sent to the multipart upload `upload_id` of `path`, each given as
        `(part_number, etag)`, into the object at `path`, replacing any before it.

        A part missing, too small (all but the last need 5 MiB) or with the wrong ETag
        raises InvalidInputError and leaves the upload in progress, to be completed again or
        aborted; an upload no longer in progress raises ArtifactNotFoundError.
        """
        checked = self._check(path)
        self._check_upload_id(upload_id)
        if not parts:
            raise InvalidInputError(
                f"Cannot complete the multipart upload {upload_id!r} of {checked!r} without "
                "parts; give each part sent as its part number and the ETag S3 answered"
            )
        await self._clean_up()
        s3 = await self._s3()
        action = "complete the multipart upload of"
        with self._errors(action, checked):
            async with self._deadline("complete_multipart_upload", action, checked):
                try:
                    await s3.complete_multipart_upload(
                        Bucket=self.bucket,
                        Key=self._key(checked),
                        UploadId=upload_id,
                        MultipartUpload={
                            "Parts": [{"PartNumber": n, "ETag": etag} for n, etag in parts]
                        },
                    )
                except ClientError as exc:
                    code = str(exc.response.get("Error", {}).get("Code", ""))
                    if code not in _BAD_PARTS_CODES:
                        raise
                    message = exc.response.get("Error", {}).get("Message") or code
                    raise InvalidInputError(
                        f"S3 at {self._where} refused the parts given to complete the multipart "
                        f"upload {upload_id!r} of {self._target(checked)} ({code}: {message}); "
                        "give every part sent, in ascending part number order, each with the "
                        "ETag S3 answered to its PUT (parts but the last need 5 MiB)"
                    ) from exc

    async def abort_multipart(self, path: str, upload_id: str) -> bool:
        """Abort the multipart upload `upload_id` of `path`, dropping the parts sent, with the
        retries of a failed put's abort; `True` if it was no longer in progress."""
        checked = self._check(path)
        self._check_upload_id(upload_id)
        await self._clean_up()
        return await self._abort(checked, self._key(checked), upload_id, self.abort_attempts)

    @staticmethod
    def _check_upload_id(upload_id: str) -> None:
        if not upload_id:
            raise InvalidInputError(
                "upload_id is empty; give the id create_multipart returned for the upload"
            )

    # -- open, list, delete ------------------------------------------------------------------

    async def _open(self, path: str, chunk_size: int) -> AsyncGenerator[bytes, None]:
        await self._clean_up()
        response = await self._call("get_object", "open", path, Key=self._key(path))
        body = response["Body"]
        try:
            pending = bytearray()
            while True:
                # The body hands out whatever has arrived; gather full chunks for the caller.
                with self._errors("read", path):
                    async with self._deadline("a read of the get_object body", "read", path):
                        piece = await body.read(chunk_size - len(pending))
                if piece:
                    pending += piece
                if pending and (not piece or len(pending) >= chunk_size):
                    chunk = bytes(pending)
                    pending.clear()
                    yield chunk
                if not piece:
                    return
        finally:
            # close(), not `async with`: what the body's context manager yields has changed
            # between aiobotocore versions.
            body.close()

    async def _pages(self, action: str, path: str, **params: Any) -> AsyncIterator[Any]:
        """The pages of a `list_objects_v2` listing, each fetched under its own deadline."""
        while True:
            page = await self._call("list_objects_v2", action, path, **params)
            yield page
            if not page.get("IsTruncated"):
                return
            params["ContinuationToken"] = page["NextContinuationToken"]

    async def _list(self, path: str) -> builtins.list[ArtifactEntry]:
        await self._clean_up()
        root = f"{self.prefix}/" if self.prefix else ""
        listed = f"{self._key(path)}/" if path else root
        entries = []
        async for page in self._pages("list", path, Prefix=listed, Delimiter="/"):
            for common in page.get("CommonPrefixes", ()):
                name = common["Prefix"][len(root) :].rstrip("/")
                if name and name != path:
                    entries.append(ArtifactEntry(name, is_dir=True))
            for item in page.get("Contents", ()):
                if item["Key"] != listed:  # a "directory marker" made by other tools
                    entries.append(ArtifactEntry(item["Key"][len(root) :], False, item["Size"]))
        return entries

    async def _delete(self, path: str) -> None:
        await self._clean_up()
        key = self._key(path)
        deleted = 0
        # The object itself sorts first among keys starting with its name.
        first = await self._call("list_objects_v2", "delete", path, Prefix=key, MaxKeys=1)
        if any(item["Key"] == key for item in first.get("Contents", ())):
            deleted += await self._delete_keys(path, [key])
        # A listing page holds at most 1000 keys, as many as one DeleteObjects takes.
        async for page in self._pages("delete", path, Prefix=f"{key}/"):
            keys = [item["Key"] for item in page.get("Contents", ())]
            if keys:
                deleted += await self._delete_keys(path, keys)
        if not deleted:
            raise ArtifactNotFoundError(f"No artifact at {path!r} in {self._root_uri}")

    async def _delete_keys(self, path: str, keys: builtins.list[str]) -> int:
        response = await self._call(
            "delete_objects",
            "delete",
            path,
            Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True},
        )
        failures = response.get("Errors", ())
        if failures:
            # DeleteObjects answers 200 and lists per-key failures: report the first one.
            first = failures[0]
            root = f"{self.prefix}/" if self.prefix else ""
            error = self._translate(
                ClientError({"Error": first}, "DeleteObjects"), "delete", first["Key"][len(root) :]
            )
            error.add_note(f"{len(failures)} of {len(keys)} objects under {path!r} not deleted")
            raise error
        return len(keys)

    # -- errors ------------------------------------------------------------------------------

    def _target(self, path: str) -> str:
        return f"s3://{self.bucket}/{self._key(path)}" if path else self._root_uri

    @contextlib.contextmanager
    def _errors(self, action: str, path: str, target: str | None = None) -> Iterator[None]:
        """Translate botocore and aiohttp errors raised inside into ArtifactErrors."""
        try:
            yield
        except (ArtifactError, InvalidInputError):
            raise
        except (ClientError, BotoCoreError, *_CONNECTION_ERRORS) as exc:
            raise self._translate(exc, action, path, target) from exc

    def _translate(
        self, exc: BaseException, action: str, path: str, target: str | None = None
    ) -> ArtifactError:
        where = self._where
        target = target or self._target(path)
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            message = error.get("Message") or ""
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            detail = f"{code}: {message}" if message else code
            if code == "NoSuchBucket":
                return ArtifactLocationError(
                    f"The S3 bucket {self.bucket!r} does not exist at {where}; create it or "
                    f"fix the artifact URI {self._root_uri!r}"
                )
            if code == "NoSuchUpload":
                return ArtifactNotFoundError(
                    f"S3 at {where} has no such multipart upload of {target} in progress"
                )
            if code in ("NoSuchKey", "404", "NotFound"):
                return ArtifactNotFoundError(f"No artifact at {path!r} in {self._root_uri}")
            if code in _DENIED_CODES or status in (401, 403):
                return ArtifactPermissionError(
                    f"S3 at {where} refused to {action} {target} ({detail}); check the "
                    "credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE) "
                    "and that they are allowed to use this bucket"
                )
            if code == "NotImplemented" or status == 501:
                return ArtifactError(f"S3 at {where} cannot {action} {target} ({detail})")
            if code in _UNAVAILABLE_CODES or (isinstance(status, int) and status >= 500):
                return ArtifactUnavailableError(
                    f"S3 at {where} failed to {action} {target} ({detail}); retry later"
                )
            return ArtifactError(f"S3 at {where} failed to {action} {target} ({detail})")
        if isinstance(exc, _CREDENTIAL_ERRORS):
            return ArtifactPermissionError(
                f"No usable AWS credentials to {action} {target} ({exc}); set "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
            )
        if isinstance(exc, _CONNECTION_ERRORS):
            return ArtifactUnavailableError(
                f"Lost or could not open the connection to S3 at {where} while trying to "
                f"{action} {target} ({exc}); check the endpoint URL and the network, then retry"
            )
        return ArtifactError(f"S3 at {where} failed to {action} {target}: {exc}")


@dataclass(frozen=True, slots=True)
class _Cleanup:
    """An abort still to make: of `upload_id`, or, if `None`, of the uploads of `key` that a
    start request with no answer may have made (any not in `known`)."""

    key: str
    upload_id: str | None
    known: frozenset[str] = frozenset()


class _SharedClient:
    """The aiobotocore client of a store, shared with every store made from it by `at()`."""

    def __init__(self) -> None:
        self.client: Any = None
        self.lock = asyncio.Lock()
        self.exit_stack = contextlib.AsyncExitStack()
        self.closed = False
        self.cleanups: deque[_Cleanup] = deque()
        self.in_progress: set[str] = set()  # ids of the multipart uploads being sent now
        self.sweeping = False


@functools.cache
def _data_loader() -> Any:
    # Reading botocore's service models takes most of a client's creation time; the loader
    # caches them read-only, so every store shares one. Credentials stay per session.
    return AioSession().get_component("data_loader")


def _first_error(exc: BaseException) -> BaseException:
    """The error to report from a task group's exception group: the first real failure."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves = [leaf for leaf in _leaves(exc) if not isinstance(leaf, asyncio.CancelledError)]
    return leaves[0] if leaves else exc


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc
