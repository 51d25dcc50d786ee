"""Artifact stores: put, open, list and delete files under a local directory or an S3 prefix."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tracker.artifacts.base import (
    ArtifactEntry,
    ArtifactInfo,
    ArtifactLocationError,
    ArtifactNotFoundError,
    ArtifactPermissionError,
    ArtifactStore,
    ArtifactUnavailableError,
    ArtifactUploadCancelledError,
)
from tracker.artifacts.local import LocalArtifactStore
from tracker.artifacts.paths import (
    PROXIED_SCHEME,
    ArtifactURI,
    join_artifact_uri,
    local_artifact_uri,
    parse_artifact_uri,
    validate_artifact_path,
)
from tracker.errors import ArtifactError

if TYPE_CHECKING:
    from tracker.artifacts.s3 import S3ArtifactStore

__all__ = [
    "ArtifactEntry",
    "ArtifactError",
    "ArtifactInfo",
    "ArtifactLocationError",
    "ArtifactNotFoundError",
    "ArtifactPermissionError",
    "ArtifactStore",
    "ArtifactURI",
    "ArtifactUnavailableError",
    "ArtifactUploadCancelledError",
    "LocalArtifactStore",
    "S3ArtifactStore",
    "artifact_store_for_uri",
    "join_artifact_uri",
    "local_artifact_uri",
    "parse_artifact_uri",
    "validate_artifact_path",
]


def artifact_store_for_uri(uri: str, **options: Any) -> ArtifactStore:
    """The store for an artifact root URI: a local path, `file:` URI or `s3://bucket/prefix`.

    `options` go to the store's constructor. The S3 driver is imported only for
    `s3://` URIs; if it is not installed, `ArtifactError` says which extra to install.
    A `mlflow-artifacts:` URI has no store of its own: it raises `ArtifactError` (see
    `RunArtifacts`, which resolves such URIs against a destination). Nothing is opened
    or created until the store is first used.
    """
    parsed = parse_artifact_uri(uri)
    if parsed.scheme == "file":
        return LocalArtifactStore(parsed.path, **options)
    if parsed.scheme == PROXIED_SCHEME:
        raise ArtifactError(
            f"{uri!r} is a proxied artifact URI: proxied artifacts are stored through a "
            "tracking server, which keeps them under its artifacts destination; log them "
            "through that server, or give RunArtifacts that destination as proxy_root"
        )
    return _s3_store_class()(uri, **options)


def _s3_store_class() -> type[S3ArtifactStore]:
    try:
        from tracker.artifacts.s3 import S3ArtifactStore
    except ImportError as exc:
        raise ArtifactError(
            f"s3:// artifact URIs need aiobotocore and stamina, and {exc.name or 'one'} could "
            f"not be imported ({exc}); install them with: pip install 'tracker[s3]'"
        ) from exc
    return S3ArtifactStore


def __getattr__(name: str) -> Any:
    # `from tracker.artifacts import S3ArtifactStore` works without importing aiobotocore
    # for everyone who never asks for it.
    if name == "S3ArtifactStore":
        return _s3_store_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
