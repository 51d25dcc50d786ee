"""Metric histories: pages of points for MLflow's API, whole series as arrays for notebooks."""

from __future__ import annotations

from tracker.client.core import Core
from tracker.entities import Metric, Page
from tracker.projections.queries import DEFAULT_HISTORY_PAGE, Points


class Metrics(Core):
    async def get_metric_history(
        self,
        run_id: str,
        key: str,
        *,
        max_results: int = DEFAULT_HISTORY_PAGE,
        page_token: str | None = None,
        start_step: int | None = None,
        end_step: int | None = None,
    ) -> Page[Metric]:
        """One page of a metric's points ordered by step (then timestamp, value), optionally
        within [start_step, end_step]; pass `next_page_token` back for the next page."""
        return await self._read(
            lambda s: self.queries.get_metric_history(
                s, run_id, key, max_results=max_results, page_token=page_token,
                start_step=start_step, end_step=end_step,
            )
        )  # fmt: skip

    async def get_metric_series(
        self, run_id: str, key: str, *, start_step: int | None = None, end_step: int | None = None
    ) -> Points:
        """Every point of a metric as numpy arrays (`steps`, `timestamps`, `values`), ordered
        as get_metric_history orders them: for plots and notebooks."""
        return await self._read(
            lambda s: self.queries.get_metric_series(
                s, run_id, key, start_step=start_step, end_step=end_step
            )
        )
