"""Page tokens are validated whole, and a page of history costs what the page holds."""

from __future__ import annotations

import base64
import contextlib
from collections import Counter
from collections.abc import Sequence
from typing import Any, ClassVar

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tracker import InvalidInputError, Tracker
from tracker.entities import Page, RunView
from tracker.projections.queries import INT64_MAX, INT64_MIN, Queries, decode_token
from tracker.stores.sql import IN_CHUNK
from tracker.validation import validate_text

# Values JSON carries that no backend can take: an integer past int64 (orjson reads up to
# 2**64 - 1), and text with a NUL (PostgreSQL refuses it).
_UNSTORABLE = (2**63, 2**64 - 1, "a\x00b")


def _token(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode()


def _mutations(token: str) -> list[str]:
    raw = base64.urlsafe_b64decode(token)
    data = orjson.loads(raw)
    out = [token[:-2], token + "A", "!" * 8, "", base64.urlsafe_b64encode(b"[1,2]").decode()]
    for key in data:
        for bad in (None, "x", -1, 1.5, [1], {"a": 1}, True, "9" * 400, *_UNSTORABLE):
            out.append(_token({**data, key: bad}))
        out.append(_token({k: v for k, v in data.items() if k != key}))
    return out


async def test_tampered_page_tokens_are_invalid_input(tk: Tracker) -> None:
    """Every mutation of a real token (fields changed, retyped, missing, past int64, holding a
    NUL; bytes cut; another query's token) is an InvalidInputError, never a KeyError,
    TypeError, OverflowError or the database's StoreError."""
    exp = await tk.create_experiment("tokens")
    for i in range(3):
        run = await tk.start_run(experiment_id=exp)
        for s in range(5):
            run.log_metric("m", float(s), step=s)
        await run.end()
        await tk.create_experiment(f"more-{i}")
    runs = await tk.search_runs([exp], max_results=1)
    exps = await tk.search_experiments(max_results=1)
    hist = await tk.get_metric_history(run.run_id, "m", max_results=2)
    tokens = {
        "runs": runs.next_page_token,
        "exps": exps.next_page_token,
        "hist": hist.next_page_token,
    }
    assert all(tokens.values())
    calls = {
        "runs": lambda t: tk.search_runs([exp], max_results=1, page_token=t),
        "exps": lambda t: tk.search_experiments(max_results=1, page_token=t),
        "hist": lambda t: tk.get_metric_history(run.run_id, "m", max_results=2, page_token=t),
    }
    refused = accepted = 0
    for name, call in calls.items():
        others = [t for n, t in tokens.items() if n != name]
        for bad in _mutations(tokens[name]) + others:  # type: ignore[arg-type]
            try:
                await call(bad)
            except InvalidInputError:
                refused += 1  # anything else (KeyError, TypeError...) fails the test
            else:
                accepted += 1  # still a well-formed token of this query, e.g. a longer id
    assert refused > 60 and accepted < refused / 4, (refused, accepted)


_RUNS_FIELDS: dict[str, type | tuple[type, ...]] = {"start_time": int, "run_id": str}


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.one_of(
        st.text(max_size=200),
        st.binary(max_size=200).map(lambda b: base64.urlsafe_b64encode(b).decode()),
        st.fixed_dictionaries(
            {
                "kind": st.just("runs"),
                "start_time": st.integers(INT64_MIN, 2**64 - 1),
                "run_id": st.text(max_size=20),
            }
        ).map(_token),
    )
)
@example(_token({"kind": "runs", "start_time": 2**63, "run_id": "x"}))
@example(_token({"kind": "runs", "start_time": 1, "run_id": "a\x00b"}))
def test_arbitrary_tokens_never_escape_the_error_tree(token: str) -> None:
    """Whatever a client sends as a token, decoding it raises InvalidInputError or gives
    fields every backend can take: integers within int64, text without NUL or lone surrogate."""
    with contextlib.suppress(InvalidInputError):
        fields = decode_token(token, "runs", _RUNS_FIELDS)
        assert INT64_MIN <= fields["start_time"] <= INT64_MAX
        assert validate_text(fields["run_id"], "run_id") == fields["run_id"]


class CountingQueries(Queries):
    """The real queries, counting how many chunks of points a read unpacks."""

    unpacked: ClassVar[Counter[str]] = Counter()

    async def _chunk_points(self, s, run_id, key, index):  # type: ignore[no-untyped-def]
        CountingQueries.unpacked[key] += len(index)
        return await super()._chunk_points(s, run_id, key, index)


async def test_a_page_of_history_reads_only_the_chunks_it_needs(tk: Tracker) -> None:
    """A 200,000-point series in many chunks: each page of 1,000 unpacks a handful of chunks,
    not the whole history, and paging through returns every point once, in order."""
    run = await tk.start_run("long")
    for block in range(40):
        for i in range(5000):
            step = block * 5000 + i
            run.log_metric("loss", float(step), step=step)
        await tk.flush()  # one chunk (or a few) per block
    tk.queries = CountingQueries(tk.database, tk.log, tk.queries.joined)
    CountingQueries.unpacked.clear()
    page = await tk.get_metric_history(run.run_id, "loss", max_results=1000)
    assert [m.step for m in page] == list(range(1000))
    assert CountingQueries.unpacked["loss"] <= 3
    steps, token, pages = [], page.next_page_token, 1
    steps += [m.step for m in page]
    while token:
        page = await tk.get_metric_history(run.run_id, "loss", max_results=20_000, page_token=token)
        steps += [m.step for m in page]
        token, pages = page.next_page_token, pages + 1
    assert steps == list(range(200_000))
    assert CountingQueries.unpacked["loss"] <= 3 * pages + 40  # each chunk read about once


async def test_a_page_of_history_at_one_step_reads_only_the_chunks_it_needs(tk: Tracker) -> None:
    """MLflow's default step 0 for every point: 100,000 points in 20 flushes. Chunks are told
    apart by timestamp, so a page still unpacks a handful of chunks, not all of them, and paging
    through returns every point once, in (timestamp, value) order."""
    run = await tk.start_run("flat")
    n, blocks = 100_000, 20
    for block in range(blocks):
        for i in range(block * (n // blocks), (block + 1) * (n // blocks)):
            # Three points a millisecond: neighbouring chunks share a timestamp at the seam.
            run.log_metric("loss", float(i), timestamp=1_700_000_000_000 + i // 3)
        await tk.flush()
    tk.queries = CountingQueries(tk.database, tk.log, tk.queries.joined)
    CountingQueries.unpacked.clear()
    page = await tk.get_metric_history(run.run_id, "loss", max_results=1000)
    assert [m.value for m in page] == [float(i) for i in range(1000)]
    assert CountingQueries.unpacked["loss"] <= 3
    values, token, pages = [m.value for m in page], page.next_page_token, 1
    while token:
        before = CountingQueries.unpacked["loss"]
        page = await tk.get_metric_history(run.run_id, "loss", max_results=5000, page_token=token)
        assert CountingQueries.unpacked["loss"] - before <= 4  # not every chunk of the series
        values += [m.value for m in page]
        token, pages = page.next_page_token, pages + 1
    assert values == [float(i) for i in range(n)]
    assert {m.step for m in page} == {0}
    assert CountingQueries.unpacked["loss"] <= 3 * pages + blocks


class BindCountingQueries(Queries):
    """The real queries, remembering how many values each statement of search_runs binds."""

    binds: ClassVar[list[int]] = []

    async def search_runs(self, s, experiment_ids, **kw):  # type: ignore[no-untyped-def]
        return await super().search_runs(_BindCounting(s), experiment_ids, **kw)


class _BindCounting:
    def __init__(self, session: Any) -> None:
        self.session = session

    async def fetchall(self, statement: Any, params: Any = None) -> Any:
        BindCountingQueries.binds.append(len(params or {}))
        return await self.session.fetchall(statement, params)


async def test_search_runs_over_more_experiments_than_one_in_list(tk: Tracker) -> None:
    """search_runs over 1,000 experiment ids binds at most one IN-list chunk per statement (the
    limit every driver takes), and merges the chunks' runs in the search order, ties in
    start_time broken by run id, across pages."""
    real = [await tk.create_experiment(f"wide-{i}") for i in range(4)]
    ids = [f"absent-{i}" for i in range(1000)]
    for at, eid in zip((0, IN_CHUNK - 1, IN_CHUNK, 999), real, strict=True):
        ids[at] = eid  # two experiments in each chunk
    expected = []
    for i in range(12):
        # Each start time in both chunks; run ids whose case order differs from their
        # alphabetical one.
        run_id = f"{'Ab'[i % 2]}{i:031x}"
        await tk.create_run(real[i % 4], run_id=run_id, start_time=i // 4)
        expected.append((-(i // 4), run_id))
    expected.sort()
    tk.queries = BindCountingQueries(tk.database, tk.log, tk.queries.joined)
    BindCountingQueries.binds.clear()
    seen: list[RunView] = []
    page: Page[RunView] = await tk.search_runs(ids, max_results=5)
    seen += page
    while page.next_page_token:
        page = await tk.search_runs(ids, max_results=5, page_token=page.next_page_token)
        seen += page
    assert [r.info.run_id for r in seen] == [rid for _, rid in expected]
    assert max(BindCountingQueries.binds) <= IN_CHUNK + 8, BindCountingQueries.binds
    everything: Sequence[RunView] = await tk.search_runs(ids, max_results=100)
    assert [r.info.run_id for r in everything] == [rid for _, rid in expected]


@pytest.fixture
async def tk(store_factory):  # type: ignore[no-untyped-def]
    async with Tracker(store=store_factory()) as tracker:
        yield tracker
