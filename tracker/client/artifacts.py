"""A run's artifacts, read back: list and download (uploads are Run methods)."""

from __future__ import annotations

import os
from pathlib import Path

from tracker.artifacts.base import ArtifactEntry
from tracker.client.runs import Runs


class Artifacts(Runs):
    async def list_artifacts(self, run_id: str, path: str | None = None) -> list[ArtifactEntry]:
        """One level of a run's artifacts under `path` (path, is_dir, size)."""
        run = await self.get_run(run_id)
        return await self._artifacts.list(run.info.artifact_uri, path)

    async def download_artifacts(self, run_id: str, path: str, dst: str | os.PathLike[str]) -> Path:
        """Download a run's artifact file or directory into the local directory `dst`."""
        run = await self.get_run(run_id)
        return await self._artifacts.download(run.info.artifact_uri, path, dst)
