"""Reads over the views: experiments, runs and metric history, bounded and paged."""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from typing import Any, Final

import orjson

from tracker.entities import DatasetInputInfo, Experiment, Metric, Page, RunData, RunInfo, RunView
from tracker.errors import InvalidInputError
from tracker.events import ACTIVE, DELETED, point_rank
from tracker.serialization import unpack_series
from tracker.stores.base import Dialect, Row, SqlSession

VIEW_TYPES: Final = {"ACTIVE_ONLY": (ACTIVE,), "DELETED_ONLY": (DELETED,), "ALL": (ACTIVE, DELETED)}
MAX_SEARCH_RESULTS: Final = 50_000
DEFAULT_HISTORY_PAGE: Final = 25_000
_IN_CHUNK: Final = 500
_RUN_COLUMNS: Final = "run_id, experiment_id, run_name, user_id, status, start_time, end_time, lifecycle_stage, artifact_uri"
_EXP_COLUMNS: Final = (
    "experiment_id, name, artifact_location, lifecycle_stage, creation_time, last_update_time"
)


def encode_token(data: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode()


def decode_token(token: str) -> Any:
    try:
        return orjson.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError, AttributeError, orjson.JSONDecodeError):
        raise InvalidInputError(
            f"Invalid page token {token[:40]!r}: pass back a token we returned"
        ) from None


def _stages(view_type: str) -> tuple[str, ...]:
    try:
        return VIEW_TYPES[view_type]
    except KeyError:
        raise InvalidInputError(
            f"view_type must be one of {', '.join(VIEW_TYPES)}, got {view_type!r}"
        ) from None


def _check_max(max_results: int) -> None:
    if not isinstance(max_results, int) or not 0 < max_results <= MAX_SEARCH_RESULTS:
        raise InvalidInputError(
            f"max_results must be between 1 and {MAX_SEARCH_RESULTS}, got {max_results!r}"
        )


class Queries:
    """Read-side SQL shared by every backend; each method takes a session from the store."""

    def __init__(self, dialect: Dialect) -> None:
        self.d = dialect

    async def _experiment_tags(
        self, s: SqlSession, ids: Sequence[str]
    ) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {i: {} for i in ids}
        select = "SELECT experiment_id, tag_key, tag_value FROM experiment_tags WHERE experiment_id IN ({marks})"
        for eid, k, v in await self._in(s, select, ids):
            out[eid][k] = v
        return out

    async def _experiments(self, s: SqlSession, rows: Sequence[Sequence[Any]]) -> list[Experiment]:
        tags = await self._experiment_tags(s, [r[0] for r in rows])
        return [Experiment(r[0], r[1], r[2], r[3], int(r[4]), int(r[5]), tags[r[0]]) for r in rows]

    async def get_experiment(self, s: SqlSession, experiment_id: str) -> Experiment | None:
        rows = await s.fetchall(
            self.d.sql(f"SELECT {_EXP_COLUMNS} FROM experiments WHERE experiment_id = ?"),
            (experiment_id,),
        )
        found = await self._experiments(s, rows)
        return found[0] if found else None

    async def get_experiment_by_name(self, s: SqlSession, name: str) -> Experiment | None:
        """Prefers an active experiment over a deleted one of the same name."""
        rows = await s.fetchall(
            self.d.sql(
                f"SELECT {_EXP_COLUMNS} FROM experiments WHERE name = ? ORDER BY lifecycle_stage"
            ),
            (name,),
        )
        found = await self._experiments(s, rows[:1])
        return found[0] if found else None

    async def search_experiments(
        self, s: SqlSession, view_type: str = "ACTIVE_ONLY", max_results: int = 1000,
        page_token: str | None = None,
    ) -> Page[Experiment]:  # fmt: skip
        """Newest first (creation_time DESC, experiment_id ASC), offset-paged."""
        _check_max(max_results)
        stages = _stages(view_type)
        offset = int(decode_token(page_token)["offset"]) if page_token else 0
        marks = ", ".join("?" * len(stages))
        rows = await s.fetchall(
            self.d.sql(
                f"SELECT {_EXP_COLUMNS} FROM experiments WHERE lifecycle_stage IN ({marks}) "
                "ORDER BY creation_time DESC, experiment_id ASC LIMIT ? OFFSET ?"
            ),
            (*stages, max_results + 1, offset),
        )
        token = encode_token({"offset": offset + max_results}) if len(rows) > max_results else None
        return Page(await self._experiments(s, rows[:max_results]), token)

    async def next_experiment_id(self, s: SqlSession) -> int:
        rows = await s.fetchall("SELECT experiment_id FROM experiments")
        return 1 + max((int(r[0]) for r in rows if str(r[0]).isdigit()), default=0)

    async def _in(self, s: SqlSession, select: str, ids: Sequence[str]) -> list[Row]:
        """`select` (ending in `IN ({marks})`) over `ids`, in chunks that stay below every
        driver's bound-parameter limit (SQLite and asyncpg stop near 32k)."""
        out: list[Row] = []
        for i in range(0, len(ids), _IN_CHUNK):
            chunk = ids[i : i + _IN_CHUNK]
            out += await s.fetchall(
                self.d.sql(select.format(marks=", ".join("?" * len(chunk)))), chunk
            )
        return out

    async def _runs(self, s: SqlSession, rows: Sequence[Sequence[Any]]) -> list[RunView]:
        if not rows:
            return []
        ids = [r[0] for r in rows]
        params: dict[str, dict[str, str]] = {i: {} for i in ids}
        tags: dict[str, dict[str, str]] = {i: {} for i in ids}
        metrics: dict[str, dict[str, float]] = {i: {} for i in ids}
        inputs: dict[str, list[DatasetInputInfo]] = {i: [] for i in ids}
        where = "WHERE run_id IN ({marks})"
        for rid, k, v in await self._in(
            s, f"SELECT run_id, param_key, param_value FROM run_params {where}", ids
        ):
            params[rid][k] = v
        for rid, k, v in await self._in(
            s, f"SELECT run_id, tag_key, tag_value FROM run_tags {where}", ids
        ):
            tags[rid][k] = v
        for rid, k, v, nan in await self._in(
            s, f"SELECT run_id, metric_key, metric_value, is_nan FROM latest_metrics {where}", ids
        ):
            metrics[rid][k] = math.nan if nan else self.d.decode_float(float(v))
        for rid, name, digest, data in sorted(
            await self._in(
                s, f"SELECT run_id, dataset_name, dataset_digest, data FROM run_inputs {where}", ids
            ),
            key=lambda r: (r[1], r[2]),
        ):
            d = orjson.loads(data)
            inputs[rid].append(
                DatasetInputInfo(
                    name,
                    digest,
                    d["source_type"],
                    d["source"],
                    d["schema"],
                    d["profile"],
                    d["tags"],
                )
            )
        out = []
        for r in rows:
            rid = r[0]
            end = None if r[6] is None else int(r[6])
            info = RunInfo(rid, r[1], r[2], r[3], r[4], int(r[5]), end, r[7], r[8])
            out.append(
                RunView(info, RunData(metrics[rid], params[rid], tags[rid]), tuple(inputs[rid]))
            )
        return out

    async def get_run(self, s: SqlSession, run_id: str) -> RunView | None:
        rows = await s.fetchall(
            self.d.sql(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?"), (run_id,)
        )
        runs = await self._runs(s, rows)
        return runs[0] if runs else None

    async def search_runs(
        self, s: SqlSession, experiment_ids: Sequence[str], *, status: str | None = None,
        view_type: str = "ACTIVE_ONLY", max_results: int = 1000, page_token: str | None = None,
    ) -> Page[RunView]:  # fmt: skip
        """Runs of the given experiments, newest first (start_time DESC, run_id ASC), keyset-paged."""
        _check_max(max_results)
        stages = _stages(view_type)
        if not experiment_ids:
            return Page([])
        where = [f"experiment_id IN ({', '.join('?' * len(experiment_ids))})",
                 f"lifecycle_stage IN ({', '.join('?' * len(stages))})"]  # fmt: skip
        params: list[Any] = [*experiment_ids, *stages]
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if page_token:
            tok = decode_token(page_token)
            where.append("(start_time < ? OR (start_time = ? AND run_id > ?))")
            params += [tok["start_time"], tok["start_time"], tok["run_id"]]
        rows = await s.fetchall(
            self.d.sql(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE {' AND '.join(where)} "
                "ORDER BY start_time DESC, run_id ASC LIMIT ?"
            ),
            (*params, max_results + 1),
        )
        token = None
        if len(rows) > max_results:
            last = rows[max_results - 1]
            token = encode_token({"start_time": int(last[5]), "run_id": last[0]})
        return Page(await self._runs(s, rows[:max_results]), token)

    async def metric_keys(self, s: SqlSession, run_id: str) -> list[str]:
        rows = await s.fetchall(
            self.d.sql(
                "SELECT metric_key FROM latest_metrics WHERE run_id = ? ORDER BY metric_key"
            ),
            (run_id,),
        )
        return [r[0] for r in rows]

    async def get_metric_history(
        self, s: SqlSession, run_id: str, key: str, *, max_results: int = DEFAULT_HISTORY_PAGE,
        page_token: str | None = None,
    ) -> Page[Metric]:  # fmt: skip
        """Points ordered by (step, timestamp, value), exact duplicates dropped, keyset-paged.
        Reads only the chunks that can hold the page, so a page costs O(page), not O(history)."""
        if not isinstance(max_results, int) or max_results <= 0:
            raise InvalidInputError(f"max_results must be a positive integer, got {max_results!r}")
        after: tuple[int, int, int, float] | None = None
        if page_token:
            t = decode_token(page_token)
            try:
                after = (int(t["step"]), int(t["ts"]), int(t["nan"]), float(t["v"]))
            except (KeyError, TypeError, ValueError):
                raise InvalidInputError(
                    "Invalid page token: pass back a token we returned"
                ) from None
        min_step = after[0] if after else -(1 << 63)
        rows = await s.fetchall(
            self.d.sql(
                "SELECT min_step, n, data FROM metric_chunks WHERE run_id = ? AND metric_key = ? "
                "AND max_step >= ? ORDER BY min_step, position"
            ),
            (run_id, key, min_step),
        )
        found: dict[tuple[int, int, int, float], tuple[int, int, float]] = {}  # deduplicated
        more = False
        for chunk_min, n, data in rows:
            if len(found) >= max_results:
                kth = sorted(found)[max_results - 1]
                if chunk_min > kth[0]:
                    more = True  # no later chunk can hold a point that sorts into this page
                    break
            for point in unpack_series(key, bytes(data), int(n)).points():
                rank = point_rank(point)
                if after is None or rank > after:
                    found[rank] = point
        ranks = sorted(found)
        page = [Metric(key, v, ts, step) for step, ts, v in (found[r] for r in ranks[:max_results])]
        token = None
        if page and (more or len(ranks) > max_results):
            last = ranks[len(page) - 1]
            # The value as text: JSON has no NaN or Infinity, and float() reads repr() back.
            token = encode_token(
                {"step": last[0], "ts": last[1], "nan": last[2], "v": repr(last[3])}
            )
        return Page(page, token)
