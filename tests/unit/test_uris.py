"""Which tracking URI is in force, which are refused, and that credentials never print."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tracker.errors import InvalidInputError
from tracker.stores import resolve_uri, store_from_uri
from tracker.stores.uris import MaskCredentials, mask_credentials, mask_password


@pytest.mark.parametrize(
    ("tracker_env", "mlflow_env", "expected"),
    [
        (None, None, "mlruns"),
        (None, "sqlite:///mlflow-habit.db", "sqlite:///mlflow-habit.db"),
        ("./ours", "sqlite:///mlflow-habit.db", "./ours"),
        ("", "./theirs", "./theirs"),
    ],
)
def test_mlflow_tracking_uri_is_honoured_when_ours_is_unset(
    monkeypatch: pytest.MonkeyPatch, tracker_env: str | None, mlflow_env: str | None, expected: str
) -> None:
    """$TRACKER_TRACKING_URI wins, then $MLFLOW_TRACKING_URI, then ./mlruns."""
    for name, value in (("TRACKER_TRACKING_URI", tracker_env), ("MLFLOW_TRACKING_URI", mlflow_env)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert resolve_uri(None) == expected
    assert resolve_uri("explicit") == "explicit"


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        (":::///", "neither a path nor a tracking URI"),
        ("1db:x/y", "neither a path nor a tracking URI"),
        ("runs:2024", "unsupported tracking URI"),
        ("postgress://u@h/db", "unsupported tracking URI"),
        ("http://127.0.0.1:5000", "MLflow tracking server"),
        ("databricks", None),  # a plain word is a directory name
    ],
)
def test_uris_that_are_not_paths_are_refused_with_what_to_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uri: str, says: str | None
) -> None:
    """A URI with an unknown scheme (or a colon before any slash) is refused, naming the
    forms to write, and nothing is created."""
    monkeypatch.chdir(tmp_path)
    if says is None:
        assert store_from_uri(uri).uri.endswith(f"{uri}/tracker.db")
        return
    with pytest.raises(InvalidInputError, match=says) as info:
        store_from_uri(uri)
    assert "sqlite:///path.db" in str(info.value) and "postgresql://" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_a_directory_with_a_colon_is_written_with_dot_slash(tmp_path: Path) -> None:
    """./name:with:colons is an ordinary directory."""
    store = store_from_uri(f"{tmp_path}/a:b")
    assert str(store.uri).endswith("a:b/tracker.db")


@pytest.mark.parametrize(
    ("uri", "masked"),
    [
        ("postgresql://postgres:s3cretpw@db:5432/x", "postgresql://postgres:***@db:5432/x"),
        ("postgresql://u:p%40ss@h/db?sslmode=require", "postgresql://u:***@h/db?sslmode=require"),
        (
            "mysql://root@h/db?password=s3cretpw&charset=utf8",
            "mysql://root@h/db?password=***&charset=utf8",
        ),
        ("postgresql://:s3cretpw@h/db", "postgresql://:***@h/db"),
        ("postgresql://u:s3cretpw@[::1/db", "postgresql://u:***@[::1/db"),  # malformed host
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("./mlruns", "./mlruns"),
    ],
)
def test_mask_password(uri: str, masked: str) -> None:
    """Passwords in user info and secret query parameters become ***; the rest stays."""
    assert mask_password(uri) == masked


def test_mask_credentials_in_text_and_log_records(caplog: pytest.LogCaptureFixture) -> None:
    """Every URI inside a message is masked, and the logging filter masks records and
    their tracebacks before a handler prints them."""
    text = "connect to 'postgresql://postgres:s3cretpw@127.0.0.1:1/x' failed; mysql://a:b2@c/d."
    assert mask_credentials(text) == (
        "connect to 'postgresql://postgres:***@127.0.0.1:1/x' failed; mysql://a:***@c/d."
    )
    log = logging.getLogger("tests.uris")
    handler = caplog.handler
    handler.addFilter(MaskCredentials())
    try:
        try:
            raise RuntimeError("lost postgresql://postgres:s3cretpw@h/db")
        except RuntimeError:
            log.exception("append to %s failed", "postgresql://postgres:s3cretpw@h/db")
    finally:
        handler.removeFilter(handler.filters[-1])
    assert "s3cretpw" not in caplog.text
    assert "postgresql://postgres:***@h/db" in caplog.text and "RuntimeError" in caplog.text
