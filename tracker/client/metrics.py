"""Metric histories: pages of points for MLflow's API, whole series as arrays for notebooks."""

from __future__ import annotations

from collections.abc import Sequence

from tracker.client.core import Core
from tracker.entities import Metric, Page
from tracker.projections.downsampling import DEFAULT_BUCKETS, MetricBuckets, metric_buckets
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

    async def get_metric_buckets(
        self,
        run_ids: str | Sequence[str],
        key: str,
        *,
        start_step: int | None = None,
        end_step: int | None = None,
        buckets: int = DEFAULT_BUCKETS,
    ) -> list[MetricBuckets]:
        """A metric downsampled for a chart, per run (a run id or several), in the order
        given: the steps start_step..end_step (both included; by default from the smallest to
        the largest step any of the runs has, so all share bucket bounds) split into `buckets`
        equal-width ranges, and for each non-empty one its count, NaN count, and first, last,
        min and max point (tracker.series.Buckets). Every spike survives as some bucket's min
        or max, whatever the length of the series. `buckets` is 1 to MAX_BUCKETS."""
        ids = [run_ids] if isinstance(run_ids, str) else list(run_ids)
        return await self._read(
            lambda s: metric_buckets(
                self.queries, s, ids, key, start_step=start_step, end_step=end_step,
                buckets=buckets,
            )
        )  # fmt: skip
