"""Experiments: create, read, rename, delete and restore them, and their tags."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tracker.client.core import Core
from tracker.commands import (
    CreateExperiment,
    DeleteExperiment,
    DeleteExperimentTag,
    RenameExperiment,
    RestoreExperiment,
    SetExperimentTag,
)
from tracker.entities import Experiment, Page
from tracker.errors import NotFoundError
from tracker.events import ExperimentCreated
from tracker.validation import validate_experiment_id


class Experiments(Core):
    async def create_experiment(
        self, name: str, artifact_location: str | None = None, tags: Mapping[str, Any] | None = None
    ) -> str:
        """Create an experiment; returns its id (a decimal string). A name already used, by an
        active or a deleted experiment, raises AlreadyExistsError, whichever process took it."""
        accepted = await self._submit(
            CreateExperiment(name=name, artifact_location=artifact_location, tags=tags or {})
        )
        for rec in accepted.events:
            if isinstance(rec.event, ExperimentCreated):
                return rec.event.experiment_id
        found = await self.get_experiment_by_name(name)  # stored by an earlier attempt
        if found is None:
            raise NotFoundError(f"experiment {name!r} was created but cannot be read back")
        return found.experiment_id

    async def get_experiment(self, experiment_id: str) -> Experiment:
        experiment_id = validate_experiment_id(str(experiment_id))
        found = await self._read(lambda s: self.queries.get_experiment(s, experiment_id))
        if found is None:
            raise NotFoundError(f"No Experiment with id={experiment_id} exists")
        return found

    async def get_experiment_by_name(self, name: str) -> Experiment | None:
        """The experiment with that name, preferring an active one; None if there is none."""
        return await self._read(lambda s: self.queries.get_experiment_by_name(s, name))

    async def search_experiments(
        self,
        view_type: str = "ACTIVE_ONLY",
        max_results: int = 1000,
        page_token: str | None = None,
        *,
        filter_string: str | None = None,
        order_by: Sequence[str] | None = None,
    ) -> Page[Experiment]:
        """Experiments matching `filter_string` (MLflow's grammar: `name LIKE 'prod-%'`,
        `tags.team = 'ml'`, `creation_time > 1700000000000`), ordered by `order_by` (name,
        experiment_id, creation_time, last_update_time; default creation_time DESC)."""
        return await self._read(
            lambda s: self.queries.search_experiments(
                s, view_type, max_results, page_token, filter_string=filter_string,
                order_by=order_by,
            )
        )  # fmt: skip

    async def rename_experiment(self, experiment_id: str, new_name: str) -> None:
        await self._submit(RenameExperiment(experiment_id=str(experiment_id), new_name=new_name))

    async def delete_experiment(self, experiment_id: str) -> None:
        """Soft-delete an experiment and its runs."""
        await self._submit(DeleteExperiment(experiment_id=str(experiment_id)))

    async def restore_experiment(self, experiment_id: str) -> None:
        await self._submit(RestoreExperiment(experiment_id=str(experiment_id)))

    async def set_experiment_tag(self, experiment_id: str, key: str, value: Any) -> None:
        await self._submit(
            SetExperimentTag(experiment_id=str(experiment_id), key=key, value=str(value))
        )

    async def delete_experiment_tag(self, experiment_id: str, key: str) -> None:
        """Raises NotFoundError when the experiment has no such tag, as MLflow does."""
        await self._submit(DeleteExperimentTag(experiment_id=str(experiment_id), key=key))
