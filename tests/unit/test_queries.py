"""Read-side queries at sizes where bound-parameter limits matter."""

from __future__ import annotations

from pathlib import Path

from tracker import Tracker
from tracker.events import NewEvent, ParamsLogged, RunCreated


async def test_search_runs_returns_params_for_pages_larger_than_one_in_list(tmp_path: Path) -> None:
    """A page of 1,200 runs (more than one IN-list chunk) comes back whole, params and all."""
    async with Tracker(str(tmp_path)) as tk:
        events = []
        for i in range(1200):
            run_id = f"{i:032x}"
            created = RunCreated(run_id, "0", f"r{i}", 1000 + i, "u", f"file:///a/{run_id}", {})
            events.append(NewEvent(NewEvent.new_id(), created.stream_id, 1, 1, created))
            logged = ParamsLogged(run_id, {"i": str(i)})
            events.append(NewEvent(NewEvent.new_id(), logged.stream_id, 2, 1, logged))
        await tk.store.append(events)
        page = await tk.search_runs(["0"], max_results=5000)
        assert len(page) == 1200 and page.next_page_token is None
        assert all(r.data.params == {"i": r.info.run_name[1:]} for r in page)
        assert [r.info.start_time for r in page] == sorted(
            (r.info.start_time for r in page), reverse=True
        )
