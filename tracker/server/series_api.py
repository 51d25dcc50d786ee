"""The native series API the UI charts from: a metric downsampled into buckets, as JSON columns."""

from __future__ import annotations

import asyncio
from typing import Any, Final

import numpy as np
from aiohttp import web

from tracker.projections.downsampling import DEFAULT_BUCKETS, MetricBuckets
from tracker.series import Columns
from tracker.server.protocol import Field, double, json_response, parse, query_to_json
from tracker.server.services import SERVICES

PREFIX: Final = "/api/tracker/v1"
_BUCKETS_QUERY: Final = (
    Field("start_step", "int64"),
    Field("end_step", "int64"),
    Field("buckets", "int32"),
)


def _values(values: np.ndarray[Any, Any]) -> list[float | str]:
    # JSON has no NaN or Infinity: written as protobuf's JSON writes them, as strings.
    if np.isfinite(values).all():
        out: list[float | str] = values.tolist()
        return out
    return [double(v) for v in values.tolist()]


def _points(c: Columns) -> dict[str, list[Any]]:
    return {"step": c[0].tolist(), "timestamp": c[1].tolist(), "value": _values(c[2])}


def buckets_json(m: MetricBuckets) -> dict[str, Any]:
    """MetricBuckets as JSON columns: one element per non-empty bucket in each list (`index`,
    `lower`, `upper`, `count`, `nan_count`, and step/timestamp/value lists for `first`,
    `last`, `min` and `max`), beside the range and the bucket count asked for."""
    b = m.buckets
    return {
        "run_id": m.run_id,
        "key": m.key,
        "start_step": m.start_step,
        "end_step": m.end_step,
        "buckets": m.n,
        "index": b.index.tolist(),
        "lower": b.lower.tolist(),
        "upper": b.upper.tolist(),
        "count": b.count.tolist(),
        "nan_count": b.nan_count.tolist(),
        "first": _points(b.first),
        "last": _points(b.last),
        "min": _points(b.min),
        "max": _points(b.max),
    }


async def get_buckets(request: web.Request) -> web.StreamResponse:
    """GET {PREFIX}/runs/{run_id}/metrics/{key}/buckets?start_step=&end_step=&buckets=: the
    run's metric in `buckets` (default 1000) equal-width step buckets over start_step to
    end_step (each defaults to the series' own first or last step); see buckets_json. An
    unknown run or key has no buckets. A key may hold slashes; percent-encode the others."""
    services = request.app[SERVICES]
    async with asyncio.timeout(services.config.request_timeout):
        msg = parse(query_to_json(request.query, _BUCKETS_QUERY), _BUCKETS_QUERY)
        n = msg.integer("buckets", DEFAULT_BUCKETS)
        assert n is not None
        (found,) = await services.tracker.get_metric_buckets(
            request.match_info["run_id"],
            request.match_info["key"],
            start_step=msg.integer("start_step"),
            end_step=msg.integer("end_step"),
            buckets=n,
        )
        return json_response(buckets_json(found))


def add_routes(app: web.Application) -> None:
    """The series API's routes, under PREFIX."""
    app.router.add_get(PREFIX + "/runs/{run_id}/metrics/{key:.+}/buckets", get_buckets)
