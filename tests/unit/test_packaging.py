"""pyproject.toml: the dev extra's bounds resolve without backtracking; README's needs are met."""

from __future__ import annotations

import tomllib
from importlib.metadata import requires, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _requirements(group: str | None = None) -> dict[str, Requirement]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    listed = project["dependencies"] if group is None else project["optional-dependencies"][group]
    return {(r := Requirement(line)).name.lower(): r for line in listed}


def test_boto3_range_is_the_botocore_pin_of_the_bounded_aiobotocore() -> None:
    """boto3 N needs botocore N: the dev extra's boto3 range must equal the botocore range
    that the aiobotocore it allows pins, or pip backtracks through both."""
    dev = _requirements("dev")
    installed = Version(version("aiobotocore"))
    assert dev["aiobotocore"].specifier.contains(installed), (
        f"aiobotocore {installed} is installed but the dev extra allows {dev['aiobotocore']}"
    )
    pins = [Requirement(r) for r in requires("aiobotocore") or []]
    botocore = next(r for r in pins if r.name == "botocore" and r.marker is None)
    assert dev["boto3"].specifier == botocore.specifier, (
        f"aiobotocore {installed} pins botocore{botocore.specifier}; set boto3 to that range"
    )


def test_the_readme_examples_need_no_extra() -> None:
    """PyYAML (log_dict to .yaml) and rich (the CLI) come with a plain install."""
    core = _requirements()
    assert {"pyyaml", "rich", "click"} <= set(core)
