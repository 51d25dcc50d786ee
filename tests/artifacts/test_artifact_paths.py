"""Artifact path safety and artifact URI parsing."""

from __future__ import annotations

import posixpath
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracker.artifacts import ArtifactURI, parse_artifact_uri, validate_artifact_path
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
    ],
)
def test_bad_artifact_uris_are_refused(uri: str, complaint: str) -> None:
    """Unsupported schemes, bad buckets, queries, fragments and `..` are refused with a fix."""
    with pytest.raises(InvalidInputError) as caught:
        parse_artifact_uri(uri)
    assert complaint in str(caught.value)
