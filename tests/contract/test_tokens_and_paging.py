"""Page tokens are validated whole, and a page of history costs what the page holds."""

from __future__ import annotations

import base64
import contextlib
from collections import Counter
from typing import ClassVar

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracker import InvalidInputError, Tracker
from tracker.projections.queries import Queries


def _mutations(token: str) -> list[str]:
    raw = base64.urlsafe_b64decode(token)
    data = orjson.loads(raw)
    out = [token[:-2], token + "A", "!" * 8, "", base64.urlsafe_b64encode(b"[1,2]").decode()]
    for key in data:
        for bad in (None, "x", -1, 1.5, [1], {"a": 1}, True, "9" * 400):
            changed = {**data, key: bad}
            out.append(base64.urlsafe_b64encode(orjson.dumps(changed)).decode())
        missing = {k: v for k, v in data.items() if k != key}
        out.append(base64.urlsafe_b64encode(orjson.dumps(missing)).decode())
    return out


async def test_tampered_page_tokens_are_invalid_input(tk: Tracker) -> None:
    """Every mutation of a real token (fields changed, retyped, missing; bytes cut; another
    query's token) is an InvalidInputError, never a KeyError, TypeError or ValueError."""
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


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.one_of(
        st.text(max_size=200),
        st.binary(max_size=200).map(lambda b: base64.urlsafe_b64encode(b).decode()),
    )
)
def test_arbitrary_tokens_never_escape_the_error_tree(token: str) -> None:
    """Whatever a client sends as a token, decoding it raises InvalidInputError or succeeds."""
    from tracker.projections.queries import decode_token

    with contextlib.suppress(InvalidInputError):
        decode_token(token, "runs", {"start_time": int, "run_id": str})


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


@pytest.fixture
async def tk(store_factory):  # type: ignore[no-untyped-def]
    async with Tracker(store=store_factory()) as tracker:
        yield tracker
