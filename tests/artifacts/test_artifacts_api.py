"""The public face of tracker.artifacts: its exports and how it picks a backend."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import tracker.artifacts
from tracker.artifacts import ArtifactError, artifact_store_for_uri
from tracker.errors import InvalidInputError

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )


def test_public_api_is_pinned() -> None:
    """`__all__` lists exactly the public names, and each of them resolves."""
    assert sorted(tracker.artifacts.__all__) == [
        "ArtifactEntry",
        "ArtifactError",
        "ArtifactInfo",
        "ArtifactLocationError",
        "ArtifactNotFoundError",
        "ArtifactPermissionError",
        "ArtifactStore",
        "ArtifactURI",
        "ArtifactUnavailableError",
        "ArtifactUploadCancelledError",
        "LocalArtifactStore",
        "S3ArtifactStore",
        "artifact_store_for_uri",
        "join_artifact_uri",
        "local_artifact_uri",
        "parse_artifact_uri",
        "validate_artifact_path",
    ]
    for name in tracker.artifacts.__all__:
        assert getattr(tracker.artifacts, name) is not None


def test_importing_the_package_does_not_import_aiobotocore() -> None:
    """Local-only users never pay for (or need) the S3 driver."""
    result = run_python(
        "import sys, tracker.artifacts as a\n"
        "a.artifact_store_for_uri('/tmp/x')\n"
        "assert 'aiobotocore' not in sys.modules, 'imported'\n"
        "assert 'botocore' not in sys.modules, 'imported'\n"
    )
    assert result.returncode == 0, result.stderr


def test_missing_aiobotocore_names_the_extra_to_install() -> None:
    """Without aiobotocore, an s3:// URI fails with ArtifactError naming tracker[s3]."""
    result = run_python(
        "import sys\n"
        "sys.modules['aiobotocore'] = None  # makes `import aiobotocore` fail as if absent\n"
        "from tracker.artifacts import ArtifactError, artifact_store_for_uri\n"
        "try:\n"
        "    artifact_store_for_uri('s3://bucket/prefix')\n"
        "except ArtifactError as exc:\n"
        "    print(exc)\n"
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'tracker[s3]'" in result.stdout


def test_unsupported_scheme_is_refused() -> None:
    """A URI scheme with no backend is InvalidInputError listing what is supported."""
    with pytest.raises(InvalidInputError, match="s3://bucket/prefix"):
        artifact_store_for_uri("gs://bucket/prefix")


def test_artifact_errors_are_tracker_errors() -> None:
    """Every artifact error can be caught as tracker.errors.ArtifactError."""
    for name in tracker.artifacts.__all__:
        value = getattr(tracker.artifacts, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, ArtifactError), name


def test_proxied_uri_has_no_store_of_its_own() -> None:
    """`mlflow-artifacts:` needs a tracking server: ArtifactError says so, and how to resolve it."""
    with pytest.raises(ArtifactError, match="stored through a tracking server") as caught:
        artifact_store_for_uri("mlflow-artifacts:/1/abc/artifacts")
    assert "proxy_root" in str(caught.value)
