"""The web UI in a real browser: Debian's chromium driven by Playwright, against `tracker ui`
on a free port over a seeded store. Screenshots of each page go to test-output/ui/."""

from __future__ import annotations

import asyncio
import os
import struct
import subprocess
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import requests

import tracker
from tests.server.conftest import server_env, start_tracker
from tracker import DatasetInput

sync_api = pytest.importorskip("playwright.sync_api")

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "test-output" / "ui"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
START_TIMEOUT = 60.0
WAIT_MS = 15_000

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium"
)


def png(width: int = 8, height: int = 8) -> bytes:
    """A small valid PNG (a red square), for the image preview."""
    raw = b"".join(b"\x00" + b"\xd0\x20\x20" * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


@dataclass
class Seeded:
    url: str
    proc: subprocess.Popen[str]
    sweep: str
    """The experiment of 30 runs `r00`..`r29`, acc = i/30, lr = 0.001 * (i + 1)."""
    sweep_runs: dict[str, str]
    demo: str
    trained: str
    """A finished run of 5,000 loss points with a spike of 100 at step 2500, and artifacts."""
    parent: str
    children: list[str]
    lines: list[str] = field(default_factory=list)


SPIKE_STEP = 2500
TRAINED_STEPS = 5000


async def _seed(uri: str, workdir: Path) -> dict[str, Any]:
    files = workdir / "files"
    files.mkdir()
    (files / "plot.png").write_bytes(png())
    async with tracker.Tracker(uri) as tk:
        sweep_runs = {}
        for i in range(30):
            run = await tk.start_run(
                "sweep", name=f"r{i:02d}", params={"lr": f"{0.001 * (i + 1):.3f}",
                "optimizer": "adam" if i % 2 == 0 else "sgd"},
            )  # fmt: skip
            run.log_metric_array("loss", 1.0 / (np.arange(50) + 1 + i))
            run.log_metric("acc", i / 30, step=49)
            await run.end()
            sweep_runs[f"r{i:02d}"] = run.run_id
        run = await tk.start_run(
            "demo", name="trained", params={"lr": "0.001", "batch": "64"}, tags={"team": "ui"}
        )
        loss = 1.0 / (np.arange(TRAINED_STEPS) + 1.0)
        loss[SPIKE_STEP] = 100.0
        run.log_metric_array("loss", loss)
        run.log_metric_array("acc", np.linspace(0.1, 0.95, TRAINED_STEPS))
        run.log_inputs([DatasetInput("mnist", "abc123", "local", "/data/mnist")])
        await run.log_text("# Notes\nlearning rate warm-up worked\n", "notes.md")
        await run.log_dict({"lr": 0.001, "layers": [64, 32]}, "config.json")
        await run.log_dict({"optimizer": "adam"}, "config.yaml")
        await run.log_artifact(str(files / "plot.png"), artifact_path="plots")
        run.set_tag("stage", "done")  # logged last: the replay slider's first position lacks it
        await run.end()
        trained = run.run_id
        parent = await tk.start_run("demo", name="parent")
        children = []
        for name in ("child-a", "child-b"):
            child = await tk.start_run("demo", name=name, parent_run_id=parent.run_id)
            child.log_metric("acc", 0.5)
            await child.end()
            children.append(child.run_id)
        await parent.end()
        demo = (await tk.get_run(trained)).info.experiment_id
        sweep = (await tk.get_run(sweep_runs["r00"])).info.experiment_id
    return {
        "sweep": sweep, "sweep_runs": sweep_runs, "demo": demo, "trained": trained,
        "parent": parent.run_id, "children": children,
    }  # fmt: skip


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    """`tracker ui --port 0` over a store seeded before it starts."""
    workdir = tmp_path_factory.mktemp("ui")
    store = str(workdir / "mlruns")
    ids = asyncio.run(_seed(store, workdir))
    server = start_tracker(
        workdir, "ui", "--port", "0", "--backend-store-uri", store, env=server_env()
    )
    url, proc, lines = server.url, server.proc, server.lines
    yield Seeded(url=url, proc=proc, lines=lines, **ids)
    proc.terminate()
    assert proc.wait(timeout=START_TIMEOUT) == 0, "".join(lines)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


class Page:
    """A browser page that records console errors and uncaught exceptions."""

    def __init__(self, browser: Any, base: str) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900},
                                           accept_downloads=True)  # fmt: skip
        self.page = self.context.new_page()
        self.base = base
        self.errors: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def open(self, hash_: str) -> Any:
        self.page.goto(f"{self.base}/{hash_}")
        self.ready()
        return self.page

    def ready(self) -> None:
        self.page.wait_for_function("window.__tracker && window.__tracker.ready", timeout=WAIT_MS)

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@pytest.fixture
def page(browser: Any, seeded: Seeded) -> Iterator[Page]:
    p = Page(browser, seeded.url)
    yield p
    p.context.close()


def _rows(page: Any) -> list[str]:
    return page.eval_on_selector_all(
        "#runs tbody tr", "rows => rows.map(r => r.querySelector('a').textContent)"
    )


def _wait_drawn(page: Any, key: str, *, min_points: int = 1) -> None:
    page.wait_for_function(
        """([key, n]) => { const c = document.querySelector(`canvas[data-key="${key}"]`);
             return c && c.dataset.drawn === "1" && Number(c.dataset.points) >= n; }""",
        arg=[key, min_points],
        timeout=WAIT_MS,
    )


def test_every_page_loads_without_console_errors(page: Page, seeded: Seeded) -> None:
    """Experiments, runs table, run page, history and compare each render their content with
    no console error or uncaught exception; a screenshot of each is saved."""
    p = page.open("#/")
    assert p.locator("#experiments").get_by_role("link", name="sweep").is_visible()
    page.shot("experiments")
    page.open(f"#/experiments/{seeded.sweep}")
    assert len(_rows(p)) == 30  # the first page, 50 runs per page by default
    page.shot("runs")
    page.open(f"#/runs/{seeded.trained}")
    _wait_drawn(p, "loss")
    _wait_drawn(p, "acc")
    assert "mnist" in p.locator("main").inner_text()  # the dataset
    page.shot("run")
    if os.environ.get("TRACKER_UPDATE_DOCS_SCREENSHOT"):
        p.set_viewport_size({"width": 1000, "height": 640})
        p.wait_for_timeout(300)  # the charts redraw on resize
        p.screenshot(path=str(REPO / "docs" / "run-page.png"), type="png")
    page.open(f"#/runs/{seeded.trained}/history")
    page.shot("history")
    runs = ",".join([seeded.sweep_runs["r00"], seeded.sweep_runs["r01"]])
    page.open(f"#/compare?runs={runs}")
    _wait_drawn(p, "acc")
    page.shot("compare")
    page.open(f"#/experiments/{seeded.demo}")
    page.shot("runs-nested")
    assert page.errors == []


def test_nested_runs_are_shown_under_their_parent(page: Page, seeded: Seeded) -> None:
    """Child runs (mlflow.parentRunId) follow their parent, indented, and collapse with it."""
    p = page.open(f"#/experiments/{seeded.demo}")
    names = _rows(p)
    at = names.index("parent")
    assert sorted(names[at + 1 : at + 3]) == ["child-a", "child-b"]
    depth = p.eval_on_selector_all("#runs tbody tr", "rs => rs.map(r => r.dataset.depth)")
    assert depth[at : at + 3] == ["0", "1", "1"]
    p.get_by_role("button", name="Collapse 2 child runs").click()
    assert "child-a" not in _rows(p)
    assert page.errors == []


def test_filter_box_filters_and_shows_a_malformed_filters_message(
    page: Page, seeded: Seeded
) -> None:
    """A filter narrows the table through the server; a malformed one shows the server's
    own message in place."""
    p = page.open(f"#/experiments/{seeded.sweep}")
    p.fill("#filter", "metrics.acc >= 0.9")
    p.get_by_role("button", name="Search").click()
    p.wait_for_function("document.querySelectorAll('#runs tbody tr').length === 3")
    assert sorted(_rows(p)) == ["r27", "r28", "r29"]
    bad = "metrics.acc >>> 1"
    answer = requests.post(
        f"{seeded.url}/api/2.0/mlflow/runs/search",
        json={"experiment_ids": [seeded.sweep], "filter": bad},
        timeout=30,
    )
    assert answer.status_code == 400
    p.fill("#filter", bad)
    p.get_by_role("button", name="Search").click()
    error = p.locator("#filter-error [role=alert]")
    error.wait_for(timeout=WAIT_MS)
    assert error.inner_text() == answer.json()["message"]
    # The browser reports the 400 itself; nothing else may go wrong.
    assert [e for e in page.errors if "400" not in e] == []


def test_sorting_and_paging_go_through_the_server(page: Page, seeded: Seeded) -> None:
    """Sorting by a metric column orders the runs by it; with 25 runs a page, Next shows the
    rest and Previous goes back."""
    p = page.open(f"#/experiments/{seeded.sweep}")
    p.select_option("#page-size", "25")
    p.wait_for_function("document.querySelectorAll('#runs tbody tr').length === 25")
    p.locator("th button.sort[data-order='metrics.`acc`']").click()  # DESC first
    p.wait_for_function("document.querySelector('#runs tbody a').textContent === 'r29'")
    assert _rows(p) == [f"r{i:02d}" for i in range(29, 4, -1)]
    p.locator("#next").click()
    p.wait_for_function("document.querySelectorAll('#runs tbody tr').length === 5")
    assert _rows(p) == ["r04", "r03", "r02", "r01", "r00"]
    assert p.locator("#next").is_disabled()
    p.locator("#prev").click()
    p.wait_for_function("document.querySelectorAll('#runs tbody tr').length === 25")
    p.locator("th button.sort[data-order='metrics.`acc`']").click()  # now ASC
    p.wait_for_function("document.querySelector('#runs tbody a').textContent === 'r00'")
    assert _rows(p)[:3] == ["r00", "r01", "r02"]
    assert page.errors == []


def test_columns_chosen_are_remembered_per_experiment(page: Page, seeded: Seeded) -> None:
    """Unticking a column hides it, and it stays hidden after a reload."""
    p = page.open(f"#/experiments/{seeded.sweep}")
    assert p.locator("th button.sort[data-order='params.`lr`']").count() == 1
    p.locator("summary", has_text="Columns").click()
    p.locator("#col-params-lr").uncheck()
    assert p.locator("th button.sort[data-order='params.`lr`']").count() == 0
    p.reload()
    page.ready()
    assert p.locator("th button.sort[data-order='params.`lr`']").count() == 0
    p.evaluate("localStorage.clear()")


def test_a_live_chart_receives_points_while_the_run_logs(page: Page, seeded: Seeded) -> None:
    """A RUNNING run's chart grows as points are logged (through MLflow's REST API), over the
    event stream, without a reload."""
    api = f"{seeded.url}/api/2.0/mlflow"
    created = requests.post(
        f"{api}/runs/create",
        json={"experiment_id": seeded.demo, "run_name": "live", "start_time": int(time.time() * 1000)},
        timeout=30,
    )  # fmt: skip
    created.raise_for_status()
    run_id = created.json()["run"]["info"]["run_id"]

    def log(steps: range) -> None:
        now = int(time.time() * 1000)
        metrics = [
            {"key": "loss", "value": 1 / (s + 1), "timestamp": now, "step": s} for s in steps
        ]
        requests.post(
            f"{api}/runs/log-batch", json={"run_id": run_id, "metrics": metrics}, timeout=30
        ).raise_for_status()

    log(range(10))
    p = page.open(f"#/runs/{run_id}")
    _wait_drawn(p, "loss", min_points=10)
    for start in range(10, 60, 10):
        log(range(start, start + 10))
    p.wait_for_function(
        """() => { const c = document.querySelector('canvas[data-key="loss"]');
                   return Number(c.dataset.points) === 60 && c.dataset.lastStep === "59"; }""",
        timeout=WAIT_MS,
    )
    assert p.evaluate("window.__tracker.live") >= 1  # it came over the stream
    log(range(60, 61))
    # A metric it has not seen gets a chart of its own.
    requests.post(
        f"{api}/runs/log-metric",
        json={"run_id": run_id, "key": "lr", "value": 0.1, "timestamp": 1, "step": 0},
        timeout=30,
    ).raise_for_status()
    _wait_drawn(p, "lr")
    requests.post(f"{api}/runs/update", json={"run_id": run_id, "status": "FINISHED"}, timeout=30)
    p.wait_for_function("document.querySelector('#run-status').textContent === 'FINISHED'",
                        timeout=WAIT_MS)  # fmt: skip
    page.shot("run-live")
    assert page.errors == []


def test_zooming_requests_a_finer_range_and_the_spike_survives(page: Page, seeded: Seeded) -> None:
    """The whole series keeps the spike as a bucket's max; dragging over the chart asks the
    server for the chosen steps only, in as many buckets."""
    p = page.open(f"#/runs/{seeded.trained}")
    _wait_drawn(p, "loss", min_points=TRAINED_STEPS)
    top = p.evaluate(
        "Math.max(...window.__tracker.charts[Object.keys(window.__tracker.charts)"
        ".find(k => k.endsWith(':loss'))].data.values().next().value.max.value)"
    )
    assert top == 100.0
    canvas = p.locator('canvas[data-key="loss"]')
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    y = box["y"] + box["height"] / 2
    with p.expect_request(lambda r: "/metrics/loss/buckets" in r.url and "start_step" in r.url,
                          timeout=WAIT_MS) as asked:  # fmt: skip
        p.mouse.move(box["x"] + box["width"] * 0.4, y)
        p.mouse.down()
        p.mouse.move(box["x"] + box["width"] * 0.5, y, steps=5)
        p.mouse.up()
    q = parse_qs(urlsplit(asked.value.url).query)
    start, end = int(q["start_step"][0]), int(q["end_step"][0])
    assert 0 < start < end < TRAINED_STEPS - 1
    assert end - start < TRAINED_STEPS / 4
    p.wait_for_function(
        "document.querySelector('canvas[data-key=\"loss\"]').dataset.range !== ''",
        timeout=WAIT_MS,
    )
    points = int(canvas.get_attribute("data-points") or 0)
    assert points == end - start + 1  # only the zoomed steps, each in its own bucket
    # The keyboard zooms out again: the whole series is asked for once more.
    canvas.focus()
    with p.expect_request(lambda r: "/metrics/loss/buckets" in r.url and "start_step" not in r.url,
                          timeout=WAIT_MS):  # fmt: skip
        p.keyboard.press("0")
    assert page.errors == []


def test_the_replay_slider_shows_the_run_as_it_was(page: Page, seeded: Seeded) -> None:
    """At the last event the run has its params, late tag and metrics; moved (by keyboard) to
    the first event it shows the run as created, without them; and back again."""
    p = page.open(f"#/runs/{seeded.trained}/history")
    assert "stage" in p.locator("#replay-tags").inner_text()
    assert p.locator("#replay-metrics tbody tr").count() == 2
    last = p.locator("#replay-state").get_attribute("data-position")
    p.locator("#replay").focus()
    p.keyboard.press("Home")
    p.wait_for_function(
        f"document.querySelector('#replay-state').dataset.position !== '{last}'",
        timeout=WAIT_MS,
    )
    page.ready()
    assert "stage" not in p.locator("#replay-tags").inner_text()
    assert "No metrics yet" in p.locator("#replay-metrics").inner_text()
    assert "No parameters" in p.locator("#replay-params").inner_text()
    page.shot("history-start")
    p.keyboard.press("End")
    p.wait_for_function(
        f"document.querySelector('#replay-state').dataset.position === '{last}'",
        timeout=WAIT_MS,
    )
    page.ready()
    assert "batch" in p.locator("#replay-params").inner_text()
    _wait_drawn(p, "loss", min_points=TRAINED_STEPS)  # the charts up to the position
    assert page.errors == []


def test_an_artifact_previews_and_downloads(page: Page, seeded: Seeded) -> None:
    """JSON is previewed pretty-printed, YAML and text as text, an image as an image, and the
    download link saves the file's bytes."""
    p = page.open(f"#/runs/{seeded.trained}")
    p.locator("#artifacts button[data-path='config.json']").click()
    pre = p.locator("#artifact-preview pre")
    pre.wait_for(timeout=WAIT_MS)
    assert '"layers": [\n    64,' in pre.inner_text()
    p.locator("#artifacts button[data-path='config.yaml']").click()
    p.wait_for_function(
        "document.querySelector('#artifact-preview pre')?.dataset.path === 'config.yaml'"
    )
    assert "optimizer: adam" in pre.inner_text()
    p.locator("#artifacts button[data-path='notes.md']").click()
    p.wait_for_function(
        "document.querySelector('#artifact-preview pre')?.dataset.path === 'notes.md'"
    )
    assert "warm-up" in pre.inner_text()
    p.get_by_role("button", name="▸ plots/").click()
    p.locator("#artifacts button[data-path='plots/plot.png']").click()
    p.wait_for_function("document.querySelector('#artifact-preview img')?.naturalWidth === 8",
                        timeout=WAIT_MS)  # fmt: skip
    page.shot("artifact")
    with p.expect_download(timeout=WAIT_MS) as download:
        p.locator("#artifact-download").click()
    assert download.value.suggested_filename == "plot.png"
    assert Path(download.value.path()).read_bytes() == png()
    assert page.errors == []


def test_compare_overlays_runs_and_highlights_differences(page: Page, seeded: Seeded) -> None:
    """Two runs ticked in the table and compared: their metric on one chart, each run in its own colour in the legend; params that
    differ are highlighted, equal ones are not."""
    p = page.open(f"#/experiments/{seeded.sweep}")
    p.get_by_label("Select r00").check()
    p.get_by_label("Select r02").check()
    p.get_by_role("button", name="Compare selected (2)").click()
    page.ready()
    p.select_option("#compare-metric", "loss")
    _wait_drawn(p, "loss", min_points=100)  # 50 points of each run
    assert p.locator("#legend li").count() == 2
    colours = p.eval_on_selector_all("#legend .swatch", "s => s.map(x => x.style.background)")
    assert len(set(colours)) == 2
    assert p.locator("tr[data-key='params.lr']").get_attribute("class") == "diff"
    assert p.locator("tr[data-key='params.optimizer']").get_attribute("class") == ""
    assert page.errors == []


def test_experiments_are_created_renamed_deleted_and_restored(page: Page) -> None:
    """The experiments page's forms and buttons do what they say, through the REST API."""
    p = page.open("#/")
    p.fill("#new-exp", "made-in-ui")
    p.get_by_role("button", name="Create").click()
    link = p.locator("#experiments").get_by_role("link", name="made-in-ui")
    link.wait_for(timeout=WAIT_MS)
    p.get_by_role("button", name="Rename made-in-ui").click()
    p.get_by_label("New name for made-in-ui").fill("renamed-in-ui")
    p.get_by_role("button", name="Save").click()
    p.locator("#experiments").get_by_role("link", name="renamed-in-ui").wait_for(timeout=WAIT_MS)
    p.get_by_role("button", name="Delete renamed-in-ui").click()
    p.locator("#experiments").get_by_role("link", name="renamed-in-ui").wait_for(
        state="detached", timeout=WAIT_MS
    )
    p.locator("#show-deleted").check()
    p.get_by_role("button", name="Restore renamed-in-ui").click()
    p.locator("#show-deleted").uncheck()
    p.locator("#experiments").get_by_role("link", name="renamed-in-ui").wait_for(timeout=WAIT_MS)
    assert page.errors == []


def test_static_files_stay_inside_their_folder(seeded: Seeded) -> None:
    """The shell and its assets are served; a path that climbs out of the folder is not."""
    assert "app.js" in requests.get(f"{seeded.url}/", timeout=30).text
    assert requests.get(f"{seeded.url}/static/app.js", timeout=30).status_code == 200
    for path in ("/static/%2e%2e/__init__.py", "/static/..%2f__init__.py"):
        answer = requests.get(seeded.url + path, timeout=30)
        assert answer.status_code in (403, 404), path
        assert "add_routes" not in answer.text
