"""Artifacts through a run: stored first, then recorded as events; on disk and on S3."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from tracker import InvalidInputError, Tracker
from tracker.errors import ArtifactError
from tracker.events import ArtifactLogged
from tracker.stores import schema


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def tk_exp(
    backend: str, tmp_path: Path, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Tracker, str]]:
    """A tracker and an experiment whose artifacts go to local disk or to moto's S3."""
    options = {"part_size": 5 << 20, "concurrency": 3}  # S3-only options: local ignores them
    async with Tracker(str(tmp_path / "store"), artifact_options=options) as tk:
        if backend == "local":
            yield tk, await tk.create_experiment("art")
            return
        from aiobotocore.session import get_session

        bucket = f"runs-{uuid.uuid4().hex[:16]}"
        async with get_session().create_client("s3", endpoint_url=moto_endpoint) as s3:
            await s3.create_bucket(Bucket=bucket)
        monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", moto_endpoint)
        yield tk, await tk.create_experiment("art", artifact_location=f"s3://{bucket}/exp")


def _tree(root: Path) -> None:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.txt").write_text("alpha")
    (root / "sub" / "b.bin").write_bytes(os.urandom(300_000))
    (root / "sub" / "deeper" / "c.json").write_text('{"c": 1}')


async def _artifact_events(tk: Tracker, run_id: str) -> list[ArtifactLogged]:
    return [r.event async for r in tk.replay(run_id) if isinstance(r.event, ArtifactLogged)]


async def test_log_list_download_round_trip(tk_exp: tuple[Tracker, str], tmp_path: Path) -> None:
    """Files, trees, text and dicts round-trip; each is recorded with its size and sha256."""
    tk, exp = tk_exp
    src = tmp_path / "src"
    _tree(src)
    run = await tk.start_run(experiment_id=exp)
    single = await run.log_artifact(src / "a.txt", "single")
    assert (single.path, single.size) == ("single/a.txt", 5)
    infos = await run.log_artifacts(src, "tree")
    assert sorted(i.path for i in infos) == [
        "tree/a.txt",
        "tree/sub/b.bin",
        "tree/sub/deeper/c.json",
    ]
    await run.log_text("hello", "notes/readme.md")
    await run.log_dict({"lr": 0.1, "layers": [1, 2]}, "config.json")
    await run.end()

    top = await tk.list_artifacts(run.run_id)
    assert [(e.path, e.is_dir) for e in top] == [
        ("config.json", False), ("notes", True), ("single", True), ("tree", True),
    ]  # fmt: skip
    sub = await tk.list_artifacts(run.run_id, "tree/sub")
    assert [(e.path, e.is_dir, e.size) for e in sub] == [
        ("tree/sub/b.bin", False, 300_000), ("tree/sub/deeper", True, None),
    ]  # fmt: skip

    out = tmp_path / "out"
    got = await tk.download_artifacts(run.run_id, "tree", out)
    for rel in ("a.txt", "sub/b.bin", "sub/deeper/c.json"):
        assert (got / rel).read_bytes() == (src / rel).read_bytes()
    cfg = await tk.download_artifacts(run.run_id, "config.json", out)
    assert orjson.loads(cfg.read_bytes()) == {"lr": 0.1, "layers": [1, 2]}

    events = {e.path: e for e in await _artifact_events(tk, run.run_id)}
    assert set(events) == {"single/a.txt", "tree/a.txt", "tree/sub/b.bin", "tree/sub/deeper/c.json",
                           "notes/readme.md", "config.json"}  # fmt: skip
    blob = (src / "sub" / "b.bin").read_bytes()
    assert events["tree/sub/b.bin"].sha256 == hashlib.sha256(blob).hexdigest()
    assert events["tree/sub/b.bin"].size == 300_000
    assert events["config.json"].content_type == "application/json"
    async with tk.store.snapshot() as s:
        table = schema.run_artifacts
        rows = await s.fetchall(
            sa.select(table.c.path, table.c.size).where(table.c.run_id == run.run_id)
        )
    assert dict(rows)["tree/sub/b.bin"] == 300_000 and len(rows) == 6


async def test_refused_paths_touch_nothing(tk_exp: tuple[Tracker, str], tmp_path: Path) -> None:
    """Traversal and symlink escapes are refused before any upload, and nothing is recorded."""
    tk, exp = tk_exp
    run = await tk.start_run(experiment_id=exp)
    for bad in ("../x.txt", "/abs.txt", "a/%2e%2e/b", "a\\b", "x#y", "nul\x00"):
        with pytest.raises(InvalidInputError):
            await run.log_text("x", bad)
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.txt").write_text("ok")
    secret = tmp_path / "secret.txt"
    secret.write_text("do not upload")
    (src / "link.txt").symlink_to(secret)
    with pytest.raises(InvalidInputError, match="outside"):
        await run.log_artifacts(src)
    with pytest.raises(InvalidInputError, match="log_dict writes"):
        await run.log_dict({}, "x.txt")
    assert await tk.list_artifacts(run.run_id) == []
    assert await _artifact_events(tk, run.run_id) == []


async def test_failed_upload_records_no_event(
    tmp_path: Path, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upload to a bucket that does not exist raises ArtifactError and logs no event."""
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", moto_endpoint)
    async with Tracker(str(tmp_path / "store")) as tk:
        exp = await tk.create_experiment("gone", artifact_location="s3://no-such-bucket-xyz/exp")
        run = await tk.start_run(experiment_id=exp)
        with pytest.raises(ArtifactError, match=r"(?i)bucket"):
            await run.log_text("x", "x.txt")
        await tk.flush()
        assert await _artifact_events(tk, run.run_id) == []


async def test_uploads_run_alongside_metric_logging(
    tk_exp: tuple[Tracker, str], tmp_path: Path
) -> None:
    """A training loop keeps logging while an upload is in flight; both complete."""
    tk, exp = tk_exp
    big = tmp_path / "ckpt.bin"
    big.write_bytes(os.urandom(8 << 20))
    run = await tk.start_run(experiment_id=exp)
    upload = asyncio.create_task(run.log_artifact(big, "checkpoints"))
    step = 0
    while not upload.done():
        run.log_metric("loss", 1 / (step + 1), step=step)
        step += 1
        await asyncio.sleep(0)
    info = await upload
    assert info.size == 8 << 20 and step > 0
    await tk.flush()
    assert len(await tk.get_metric_history(run.run_id, "loss", max_results=10**6)) == step
