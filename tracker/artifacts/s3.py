"""S3ArtifactStore: artifacts as objects under an S3 bucket and key prefix, via aiobotocore."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import io
import logging
import math
import os
from collections.abc import AsyncGenerator, Iterator
from typing import Any, Final

import aiohttp
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
)
from tracker.artifacts.files import UploadSource
from tracker.artifacts.paths import parse_artifact_uri
from tracker.errors import ArtifactError, InvalidInputError

log = logging.getLogger(__name__)

MiB: Final = 1 << 20
# S3's own limits: parts of 5 MiB to 5 GiB (the last may be smaller), at most 10,000 parts.
MIN_PART_SIZE: Final = 5 * MiB
MAX_PART_SIZE: Final = 5 * 1024 * MiB
MAX_PARTS: Final = 10_000
DEFAULT_PART_SIZE: Final = 8 * MiB
DEFAULT_CONCURRENCY: Final = 4

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
    `concurrency * part_size` bytes at most. A failed or cancelled multipart upload is
    aborted. `max_attempts` counts tries per request, retries included.
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
        self.bucket = parsed.bucket
        self.prefix = parsed.path
        self.part_size = part_size
        self.concurrency = concurrency
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
        self._profile_name = profile_name
        self._client: Any = None
        self._client_lock = asyncio.Lock()
        self._exit_stack = contextlib.AsyncExitStack()

    def __repr__(self) -> str:
        where = f", endpoint_url={self.endpoint_url!r}" if self.endpoint_url else ""
        return f"{type(self).__name__}({self._root_uri!r}{where})"

    @property
    def _root_uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix and path else self.prefix or path

    async def aclose(self) -> None:
        await super().aclose()
        async with self._client_lock:
            self._client = None
            await self._exit_stack.aclose()

    async def _s3(self) -> Any:
        async with self._client_lock:
            self._check_open()
            if self._client is None:
                session = AioSession(profile=self._profile_name)
                session.register_component("data_loader", _data_loader())
                with self._errors("connect to", ""):
                    self._client = await self._exit_stack.enter_async_context(
                        session.create_client("s3", **self._client_args)
                    )
            return self._client

    # -- put ---------------------------------------------------------------------------------

    async def _put(self, path: str, source: UploadSource, content_type: str) -> None:
        s3 = await self._s3()
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
        # Parts travel as BytesIO objects holding the only reference to their bytes: aiohttp
        # then sends from that buffer, where a shared `bytes` would be copied first. For the
        # same reason no variable keeps a part alive after it is handed over.
        body = await source.read(part_size)
        if len(body) < part_size:
            whole = io.BytesIO(body)
            del body
            with self._errors("put", path):
                await s3.put_object(
                    Bucket=self.bucket, Key=key, Body=whole, ContentType=content_type
                )
            return

        with self._errors("start a multipart upload of", path):
            created = await s3.create_multipart_upload(
                Bucket=self.bucket, Key=key, ContentType=content_type, ChecksumAlgorithm="CRC32"
            )
        upload_id: str = created["UploadId"]
        parts: dict[int, dict[str, Any]] = {}
        # A slot is taken before a part is read and given back once its request is done: at
        # most `concurrency` parts are in memory, in flight or being read.
        slots = asyncio.Semaphore(self.concurrency)

        async def send(number: int, part: io.BytesIO) -> None:
            with self._errors(f"upload part {number} of", path):
                sent = await s3.upload_part(
                    Bucket=self.bucket,
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
            with self._errors("complete the multipart upload of", path):
                await s3.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": [parts[n] for n in sorted(parts)]},
                )
        except BaseException as exc:
            error = _first_error(exc)
            await self._abort(s3, path, upload_id, error)
            if error is exc:
                raise
            raise error from None

    async def _abort(self, s3: Any, path: str, upload_id: str, error: BaseException) -> None:
        try:
            # Shielded: a cancelled upload must still be aborted, or its parts stay billed.
            await asyncio.shield(
                s3.abort_multipart_upload(
                    Bucket=self.bucket, Key=self._key(path), UploadId=upload_id
                )
            )
        except Exception as abort_error:
            note = (
                f"The multipart upload {upload_id!r} of {path!r} could not be aborted "
                f"({abort_error!r}); its parts stay in the bucket until it is aborted or a "
                "lifecycle rule removes them"
            )
            log.warning(note)
            error.add_note(note)

    # -- open, list, delete ------------------------------------------------------------------

    async def _open(self, path: str, chunk_size: int) -> AsyncGenerator[bytes, None]:
        s3 = await self._s3()
        with self._errors("open", path):
            response = await s3.get_object(Bucket=self.bucket, Key=self._key(path))
        body = response["Body"]
        try:
            pending = bytearray()
            while True:
                # The body hands out whatever has arrived; gather full chunks for the caller.
                with self._errors("read", path):
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

    async def _list(self, path: str) -> builtins.list[ArtifactEntry]:
        s3 = await self._s3()
        root = f"{self.prefix}/" if self.prefix else ""
        listed = f"{self._key(path)}/" if path else root
        entries = []
        with self._errors("list", path):
            pages = s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=listed, Delimiter="/"
            )
            async for page in pages:
                for common in page.get("CommonPrefixes", ()):
                    name = common["Prefix"][len(root) :].rstrip("/")
                    if name and name != path:
                        entries.append(ArtifactEntry(name, is_dir=True))
                for item in page.get("Contents", ()):
                    if item["Key"] != listed:  # a "directory marker" made by other tools
                        entries.append(ArtifactEntry(item["Key"][len(root) :], False, item["Size"]))
        return entries

    async def _delete(self, path: str) -> None:
        s3 = await self._s3()
        key = self._key(path)
        deleted = 0
        with self._errors("delete", path):
            # The object itself sorts first among keys starting with its name.
            first = await s3.list_objects_v2(Bucket=self.bucket, Prefix=key, MaxKeys=1)
            if any(item["Key"] == key for item in first.get("Contents", ())):
                deleted += await self._delete_keys(s3, path, [key])
            # A listing page holds at most 1000 keys, as many as one DeleteObjects takes.
            pages = s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=f"{key}/"
            )
            async for page in pages:
                keys = [item["Key"] for item in page.get("Contents", ())]
                if keys:
                    deleted += await self._delete_keys(s3, path, keys)
        if not deleted:
            raise ArtifactNotFoundError(f"No artifact at {path!r} in {self._root_uri}")

    async def _delete_keys(self, s3: Any, path: str, keys: builtins.list[str]) -> int:
        response = await s3.delete_objects(
            Bucket=self.bucket,
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

    @contextlib.contextmanager
    def _errors(self, action: str, path: str) -> Iterator[None]:
        """Translate botocore and aiohttp errors raised inside into ArtifactErrors."""
        try:
            yield
        except (ArtifactError, InvalidInputError):
            raise
        except (ClientError, BotoCoreError, *_CONNECTION_ERRORS) as exc:
            raise self._translate(exc, action, path) from exc

    def _translate(self, exc: BaseException, action: str, path: str) -> ArtifactError:
        where = self.endpoint_url or "AWS S3"
        target = f"s3://{self.bucket}/{self._key(path)}" if path else self._root_uri
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
            if code in ("NoSuchKey", "404", "NotFound"):
                return ArtifactNotFoundError(f"No artifact at {path!r} in {self._root_uri}")
            if code in _DENIED_CODES or status in (401, 403):
                return ArtifactPermissionError(
                    f"S3 at {where} refused to {action} {target} ({detail}); check the "
                    "credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE) "
                    "and that they are allowed to use this bucket"
                )
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
