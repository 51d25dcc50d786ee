"""Artifact path safety and artifact URI parsing."""

from __future__ import annotations

import os
import posixpath
import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracker.artifacts import (
    ArtifactURI,
    join_artifact_uri,
    local_artifact_uri,
    parse_artifact_uri,
    validate_artifact_path,
)
from tracker.errors import InvalidInputError


def refused(path: str) -> str:
    with pytest.raises(InvalidInputError) as caught:
        validate_artifact_path(path)
    return str(caught.value)


# -- refused paths: one test per hole MLflow had ----------------------------------------------


def test_dot_dot_segment_is_refused() -> None:
    """A `..` segment anywhere is refused, and the message says to remove it."""
    assert "'..' segments are not allowed" in refused("a/../../etc/passwd")
    refused("..")
    refused("a/..")


def test_percent_encoded_dot_dot_is_refused() -> None:
    """`%2e%2e` (either case) decodes to `..` and is refused, naming the decoded form."""
    message = refused("%2e%2e/%2E%2E/etc/passwd")
    assert "decodes to '../../etc/passwd'" in message


def test_double_encoded_dot_dot_is_refused() -> None:
    """`%252e%252e` is refused: decoding runs until the path stops changing."""
    refused("%252e%252e/secret")
    refused("a%252f%252e%252e%252fb")  # "a/../b" once fully decoded


def test_encoding_that_never_settles_is_refused() -> None:
    """A path still percent-encoded after ten rounds of decoding is refused."""
    path = "x"
    for _ in range(12):
        path = path.replace("%", "%25") if "%" in path else "%78"
    assert "rounds of decoding" in refused(path)


def test_encoded_slash_hiding_dot_dot_is_refused() -> None:
    """`..%2f` hides a `..` segment behind an encoded slash and is refused."""
    refused("..%2fsecret")
    refused("a%2F..%2F..%2Fb")


def test_absolute_posix_path_is_refused() -> None:
    """A leading `/` is refused with a hint to give a relative path."""
    assert "relative" in refused("/etc/passwd")
    refused("%2Fetc%2Fpasswd")


def test_windows_drive_letter_is_refused() -> None:
    """`C:\\...`, `C:/...` and drive-relative `C:x` are refused."""
    refused("C:\\Windows\\win.ini")
    assert "drive letters" in refused("C:/Windows/win.ini")
    assert "drive letters" in refused("c:win.ini")


def test_unc_path_is_refused() -> None:
    """UNC paths (`\\\\server\\share`, `//server/share`) are refused."""
    refused("\\\\server\\share\\x")
    refused("//server/share/x")


def test_backslash_is_refused() -> None:
    """A backslash anywhere (`\\..\\..\\`) is refused with a hint to use `/`."""
    assert "separate segments with '/'" in refused("..\\..\\etc\\passwd")
    refused("a\\b")
    refused("a%5cb")


def test_fragment_is_refused() -> None:
    """`#` (raw or `%23`) is refused: fragments bypassed MLflow's checks."""
    assert "'#' is not allowed" in refused("a#/../../etc")
    refused("a%23b")


def test_nul_byte_is_refused() -> None:
    """A NUL byte, raw or `%00`, is refused and its position is named."""
    assert "U+0000 at position 1" in refused("a\x00.txt")
    refused("a%00.txt")


def test_control_characters_are_refused() -> None:
    """Newlines, tabs and DEL are refused."""
    for char in "\n\r\t\x1b\x7f":
        refused(f"a{char}b")


def test_uri_instead_of_path_is_refused() -> None:
    """`file:///etc/passwd` or `s3://x/y` passed as a path is refused."""
    assert "looks like a URI" in refused("file:///etc/passwd")
    refused("s3://bucket/key")


def test_path_naming_nothing_is_refused() -> None:
    """Empty, `.` and `./` name no file and are refused."""
    for path in ("", ".", "./", "./."):
        assert "names no file" in refused(path)


def test_non_string_is_refused() -> None:
    """Bytes or None instead of a string is refused, not crashed on."""
    for value in (b"a.txt", None, 3):
        with pytest.raises(InvalidInputError, match="expected a string"):
            validate_artifact_path(value)  # type: ignore[arg-type]


# -- accepted paths -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("model.pkl", "model.pkl"),
        ("model/MLmodel", "model/MLmodel"),
        ("a/b/c/d.txt", "a/b/c/d.txt"),
        ("a//b///c", "a/b/c"),
        ("./a/./b", "a/b"),
        ("dir/", "dir"),
        ("..hidden", "..hidden"),
        ("file..txt", "file..txt"),
        ("a/...", "a/..."),
        (".mlflow", ".mlflow"),
        ("spaces and :colons: (1).png", "spaces and :colons: (1).png"),
        ("100%.txt", "100%.txt"),
        ("a%20b.txt", "a%20b.txt"),
        ("données/é.csv", "données/é.csv"),
        ("what?.txt", "what?.txt"),
    ],
)
def test_normal_paths_are_accepted(path: str, expected: str) -> None:
    """Ordinary names, dotted names and unicode pass, normalised but never decoded."""
    assert validate_artifact_path(path) == expected


@given(st.text(alphabet=string.printable + "é%/.\\#\x00", max_size=40))
def test_accepted_paths_are_normalised_and_safe(path: str) -> None:
    """Whatever is accepted stays under any root, has no `..`/`.`/empty segment, and is stable."""
    try:
        result = validate_artifact_path(path)
    except InvalidInputError:
        return
    segments = result.split("/")
    assert "" not in segments and "." not in segments and ".." not in segments
    assert not result.startswith("/") and "\\" not in result and "\x00" not in result
    assert posixpath.normpath(result) == result
    assert posixpath.normpath(posixpath.join("/root", result)).startswith("/root/")
    assert validate_artifact_path(result) == result


# -- artifact URIs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket/prefix", ArtifactURI("s3", "prefix", "bucket")),
        ("s3://my.bucket-1/1/abc/artifacts/", ArtifactURI("s3", "1/abc/artifacts", "my.bucket-1")),
        ("s3://bucket", ArtifactURI("s3", "", "bucket")),
        ("s3://bucket/", ArtifactURI("s3", "", "bucket")),
        ("S3://bucket/p", ArtifactURI("s3", "p", "bucket")),
        ("file:/srv/mlruns", ArtifactURI("file", "/srv/mlruns")),
        ("file:///srv/mlruns", ArtifactURI("file", "/srv/mlruns")),
        ("file://localhost/srv/mlruns", ArtifactURI("file", "/srv/mlruns")),
        ("file:///srv/with%20space", ArtifactURI("file", "/srv/with space")),
        ("/srv/mlruns", ArtifactURI("file", "/srv/mlruns")),
        ("./mlruns", ArtifactURI("file", "./mlruns")),
        ("mlartifacts", ArtifactURI("file", "mlartifacts")),
        ("/srv/100%25", ArtifactURI("file", "/srv/100%25")),
        ("mlflow-artifacts:/1/abc/artifacts", ArtifactURI("mlflow-artifacts", "1/abc/artifacts")),
        ("mlflow-artifacts:///1/abc/", ArtifactURI("mlflow-artifacts", "1/abc")),
        ("mlflow-artifacts:/a%20b", ArtifactURI("mlflow-artifacts", "a b")),
        ("mlflow-artifacts:/", ArtifactURI("mlflow-artifacts", "")),
        ("mlflow-artifacts:", ArtifactURI("mlflow-artifacts", "")),
    ],
)
def test_artifact_uris_parse_as_mlflow_users_write_them(uri: str, expected: ArtifactURI) -> None:
    """S3, `file:` in its three spellings and plain paths parse to scheme, bucket and path."""
    assert parse_artifact_uri(uri) == expected


@pytest.mark.parametrize(
    ("uri", "complaint"),
    [
        ("gs://bucket/x", "'gs' is not supported"),
        ("http://host/api/2.0/mlflow-artifacts", "'http' is not supported"),
        ("s3://bucket/a/../b", "bad key prefix"),
        ("s3://bucket/%2e%2e/b", "bad key prefix"),
        ("s3://Bucket_Upper/x", "not a valid S3 bucket name"),
        ("s3:///x", "not a valid S3 bucket name"),
        ("s3://bucket/x?versionId=1", "query strings"),
        ("s3://bucket/x#../../y", "fragments"),
        ("file:///srv/x#/../../etc", "fragments"),
        ("file://otherhost/srv/x", "must name this machine"),
        ("file:///srv/%2e%2e/etc", "'..' segments"),
        ("/srv/../etc", "'..' segments"),
        ("/srv/x\x00", "control character"),
        ("", "give a local path"),
        ("mlflow-artifacts:/1/../../etc", "bad path"),
        ("mlflow-artifacts:/1/%2e%2e/x", "bad path"),
        ("mlflow-artifacts:/1/%252e%252e/x", "bad path"),
        ("mlflow-artifacts:/1/%23x", "bad path"),
        ("mlflow-artifacts:/1/x#../../y", "fragments"),
        ("mlflow-artifacts:/1/x?a=b", "query strings"),
        ("mlflow-artifacts://otherhost:5000/1/x", "not a host"),
    ],
)
def test_bad_artifact_uris_are_refused(uri: str, complaint: str) -> None:
    """Unsupported schemes, bad buckets, queries, fragments and `..` are refused with a fix."""
    with pytest.raises(InvalidInputError) as caught:
        parse_artifact_uri(uri)
    assert complaint in str(caught.value)


# -- building artifact URIs -----------------------------------------------------------------

# Directory names that string-formatted URIs broke: '#' ends the path, '%25' decodes to '%'.
AWKWARD_NAMES = ["run #1", "100%25 done", "100% done", "what?", "a b", "données", "日本語", "%"]


@pytest.mark.parametrize("name", AWKWARD_NAMES)
def test_local_uri_round_trips_any_directory_name(name: str) -> None:
    """`local_artifact_uri` percent-encodes; parsing gives the absolute directory back."""
    directory = f"/srv/{name}/mlruns"
    uri = local_artifact_uri(directory)
    assert uri.startswith("file:///srv/") and "#" not in uri and "?" not in uri
    assert parse_artifact_uri(uri) == ArtifactURI("file", directory)


def test_local_uri_of_a_relative_directory_is_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative directory is made absolute against the working directory."""
    monkeypatch.chdir(tmp_path)
    assert parse_artifact_uri(local_artifact_uri("mlruns")).path == str(tmp_path / "mlruns")


@pytest.mark.parametrize("name", AWKWARD_NAMES)
def test_joined_file_uri_names_the_subdirectory(name: str) -> None:
    """Run id and 'artifacts' joined onto a file URI parse to the directory below it."""
    uri = join_artifact_uri(local_artifact_uri(f"/srv/{name}"), "abc123", "artifacts")
    assert parse_artifact_uri(uri) == ArtifactURI("file", f"/srv/{name}/abc123/artifacts")


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("s3://bucket", "s3://bucket/1/abc/artifacts"),
        ("s3://bucket/", "s3://bucket/1/abc/artifacts"),
        ("s3://bucket/exp%20x/", "s3://bucket/exp%20x/1/abc/artifacts"),
        ("file:///srv/a%20b", "file:///srv/a%20b/1/abc/artifacts"),
        ("file:/srv/x", "file:///srv/x/1/abc/artifacts"),
        ("file://localhost/srv/x/", "file://localhost/srv/x/1/abc/artifacts"),
        ("file:///", "file:///1/abc/artifacts"),
        ("/srv/100%25 done", "/srv/100%25 done/1/abc/artifacts"),
        ("mlflow-artifacts:/", "mlflow-artifacts:/1/abc/artifacts"),
        ("mlflow-artifacts:", "mlflow-artifacts:/1/abc/artifacts"),
        ("mlflow-artifacts:/exp", "mlflow-artifacts:/exp/1/abc/artifacts"),
    ],
)
def test_join_appends_segments_per_scheme(base: str, expected: str) -> None:
    """Joining encodes for file: and mlflow-artifacts:, keeps S3 keys and plain paths raw."""
    joined = join_artifact_uri(base, "1", "abc", "artifacts")
    assert joined == expected
    parsed, parsed_base = parse_artifact_uri(joined), parse_artifact_uri(base)
    assert parsed.scheme == parsed_base.scheme and parsed.bucket == parsed_base.bucket
    assert parsed.path == posixpath.join(parsed_base.path, "1/abc/artifacts")


def test_segments_with_awkward_characters_are_encoded_in_file_uris() -> None:
    """A segment holding a space, '%' or unicode comes back as it was given."""
    uri = join_artifact_uri("file:///srv", "100% é x")
    assert uri == "file:///srv/100%25%20%C3%A9%20x"
    assert parse_artifact_uri(uri).path == "/srv/100% é x"


@pytest.mark.parametrize(
    ("segment", "complaint"),
    [
        ("a/b", "one non-empty path segment"),
        ("", "one non-empty path segment"),
        ("..", "'..' segments are not allowed"),
        ("%2e%2e", "'..' segments are not allowed"),
        (".", "names no file"),
        ("x#y", "'#' is not allowed"),
        ("a\x00b", "control character"),
    ],
)
def test_bad_segments_are_refused(segment: str, complaint: str) -> None:
    """A segment that is not one safe path segment is refused, saying why."""
    with pytest.raises(InvalidInputError, match="Cannot join") as caught:
        join_artifact_uri("s3://bucket/p", segment)
    assert complaint in str(caught.value)


def test_join_refuses_a_bad_base() -> None:
    """The base is checked as parse_artifact_uri checks it."""
    with pytest.raises(InvalidInputError, match="fragments"):
        join_artifact_uri("file:///srv/run #1", "abc")


_NAME_CHARS = st.characters(blacklist_categories=["Cc", "Cs"], blacklist_characters="/\\")


def test_any_directory_round_trips_through_local_uri_and_join() -> None:
    """Whatever a directory is called, its URI joined with a run id parses back to it."""
    checked: list[str] = []

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.text(_NAME_CHARS, min_size=1, max_size=12), min_size=1, max_size=3))
    def round_trip(names: list[str]) -> None:
        if any(name in (".", "..") for name in names):
            return
        directory = os.path.join("/data", *names)
        uri = join_artifact_uri(local_artifact_uri(directory), "run", "artifacts")
        assert parse_artifact_uri(uri) == ArtifactURI("file", f"{directory}/run/artifacts")
        checked.append(directory)

    round_trip()
    assert len(checked) >= 150  # "." and ".." are rare: nearly every case did real work
