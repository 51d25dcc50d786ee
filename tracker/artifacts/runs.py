"""A run's artifacts: upload files and trees under the run's artifact URI, list, download."""

from __future__ import annotations

import asyncio
import os
import posixpath
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import orjson

from tracker.artifacts import artifact_store_for_uri
from tracker.artifacts.base import ArtifactEntry, ArtifactInfo, ArtifactNotFoundError, ArtifactStore
from tracker.artifacts.paths import parse_artifact_uri, validate_artifact_path
from tracker.errors import InvalidInputError

DEFAULT_CONCURRENCY: Final = 8

Recorder = Callable[[ArtifactInfo], None]
"""Called once an artifact's bytes are stored: appends its ArtifactLogged event."""


def _join(artifact_path: str | None, name: str) -> str:
    return validate_artifact_path(posixpath.join(artifact_path, name) if artifact_path else name)


def _tree(local_dir: Path) -> list[tuple[Path, str]]:
    """(file, relative POSIX path) for every file under `local_dir`, refusing any symlink
    that leads outside it; symlinked directories are not followed."""
    root = local_dir.resolve()
    out = []
    for dirpath, _dirs, files in os.walk(local_dir, followlinks=False):
        for name in sorted(files):
            path = Path(dirpath) / name
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(root):
                    raise InvalidInputError(
                        f"{path} is a symlink to {target}, outside {local_dir}; copy the file "
                        "in, or log it with log_artifact"
                    )
            out.append((path, path.relative_to(local_dir).as_posix()))
    return sorted(out, key=lambda p: p[1])


def encode_dict(obj: Any, path: str) -> bytes:
    """A dict as JSON or YAML, chosen by the artifact path's extension."""
    ext = posixpath.splitext(path)[1].lower()
    if ext == ".json":
        return orjson.dumps(obj, option=orjson.OPT_INDENT_2)
    if ext in (".yaml", ".yml"):
        try:
            import yaml  # type: ignore[import-untyped]
        except ImportError as exc:
            raise InvalidInputError("YAML artifacts need PyYAML: pip install pyyaml") from exc
        return str(yaml.safe_dump(obj, sort_keys=False)).encode()
    raise InvalidInputError(f"log_dict writes .json, .yaml or .yml files, not {path!r}")


class RunArtifacts:
    """Artifact stores by run artifact URI, opened on first use and closed together."""

    def __init__(self, concurrency: int = DEFAULT_CONCURRENCY, **store_options: Any) -> None:
        self._stores: dict[str, ArtifactStore] = {}
        self._limit = asyncio.Semaphore(concurrency)
        self._options = store_options

    def store(self, artifact_uri: str) -> ArtifactStore:
        """The store for a run's artifact URI; `store_options` apply to S3 stores only."""
        found = self._stores.get(artifact_uri)
        if found is None:
            s3 = parse_artifact_uri(artifact_uri).scheme == "s3"
            options = self._options if s3 else {}
            found = self._stores[artifact_uri] = artifact_store_for_uri(artifact_uri, **options)
        return found

    async def aclose(self) -> None:
        stores, self._stores = list(self._stores.values()), {}
        for s in stores:
            await s.aclose()

    async def _bounded(self, work: Awaitable[ArtifactInfo]) -> ArtifactInfo:
        async with self._limit:
            return await work

    async def log_file(
        self,
        uri: str,
        local_path: str | os.PathLike[str],
        artifact_path: str | None,
        record: Recorder,
    ) -> ArtifactInfo:
        dest = _join(artifact_path, Path(local_path).name)
        if not await asyncio.to_thread(Path(local_path).is_file):
            raise InvalidInputError(
                f"{local_path} is not a file; use log_artifacts for a directory"
            )
        info = await self._bounded(self.store(uri).put_file(local_path, dest))
        record(info)
        return info

    async def log_dir(
        self,
        uri: str,
        local_dir: str | os.PathLike[str],
        artifact_path: str | None,
        record: Recorder,
    ) -> list[ArtifactInfo]:
        root = Path(local_dir)
        if not await asyncio.to_thread(root.is_dir):
            raise InvalidInputError(f"{local_dir} is not a directory")
        tree = await asyncio.to_thread(_tree, root)
        files = [(path, _join(artifact_path, rel)) for path, rel in tree]  # all checked first
        store = self.store(uri)

        async def one(path: Path, dest: str) -> ArtifactInfo:
            info = await self._bounded(store.put_file(path, dest))
            record(info)
            return info

        return list(await asyncio.gather(*(one(p, d) for p, d in files)))

    async def log_bytes(self, uri: str, data: bytes, path: str, record: Recorder) -> ArtifactInfo:
        info = await self._bounded(self.store(uri).put_bytes(data, validate_artifact_path(path)))
        record(info)
        return info

    async def list(self, uri: str, path: str | None) -> list[ArtifactEntry]:
        return await self.store(uri).list(validate_artifact_path(path) if path else None)

    async def download(self, uri: str, path: str, dst: str | os.PathLike[str]) -> Path:
        """Download the file or tree at `path` into the directory `dst`; returns the local
        path of what was downloaded (`dst/<basename of path>`)."""
        store = self.store(uri)
        path = validate_artifact_path(path)
        target = Path(dst) / posixpath.basename(path)
        siblings = {e.path: e for e in await store.list(posixpath.dirname(path) or None)}
        entry = siblings.get(path)
        if entry is None:
            raise ArtifactNotFoundError(f"no artifact at {path!r} in {uri}")
        if not entry.is_dir:
            await store.get_file(path, target)
            return target
        files: list[str] = []
        stack = [path]
        while stack:  # one listing per directory level
            for e in await store.list(stack.pop()):
                (stack if e.is_dir else files).append(e.path)
        await asyncio.gather(
            *(self._bounded(store.get_file(f, target / posixpath.relpath(f, path))) for f in files)
        )
        return target
