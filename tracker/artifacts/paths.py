"""Artifact path and artifact URI checks, done before any I/O."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from tracker.errors import InvalidInputError

# MLflow stops at 10 rounds too; a path still changing after that is hostile, not a file name.
MAX_DECODE_ROUNDS: Final = 10

_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE_RE: Final = re.compile(r"^[A-Za-z]:")
_SCHEME_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:/")
# Bucket names per AWS's rules, loosened to what S3-compatible servers (MinIO, moto) accept.
_BUCKET_RE: Final = re.compile(r"^[a-z0-9][a-z0-9.\-_]{1,61}[a-z0-9]$")
# Runs whose artifacts the tracking server stores for them (MLflow's proxied artifact access).
PROXIED_SCHEME: Final = "mlflow-artifacts"


def _decoded_forms(path: str) -> list[str]:
    """`path` and each of its percent-decodings, until decoding stops changing it."""
    forms = [path]
    for _ in range(MAX_DECODE_ROUNDS):
        decoded = unquote(forms[-1])
        if decoded == forms[-1]:
            return forms
        forms.append(decoded)
    raise InvalidInputError(
        f"Invalid artifact path {path!r}: it is still percent-encoded after "
        f"{MAX_DECODE_ROUNDS} rounds of decoding; send the path decoded (at most once encoded)"
    )


def _refuse(path: str, form: str, why: str) -> InvalidInputError:
    shown = repr(path) if form == path else f"{path!r} (decodes to {form!r})"
    return InvalidInputError(f"Invalid artifact path {shown}: {why}")


def validate_artifact_path(path: str) -> str:
    """Return `path` as a normalised relative POSIX path, or raise `InvalidInputError`.

    The path and every percent-decoding of it (decoded until stable, at most
    `MAX_DECODE_ROUNDS` rounds) must be free of NUL and control characters, `#`,
    backslashes, `..` segments, a leading `/`, a Windows drive letter and a URI scheme.
    Redundant `.` and empty segments are dropped (`a//./b/` becomes `a/b`), so that
    every backend names the same artifact the same way; a path with nothing left is
    refused. Percent escapes are *not* decoded in the result: the transport has decoded
    once already, and decoding again would rename files such as `100%25.txt`.
    """
    if not isinstance(path, str):
        raise InvalidInputError(
            f"Invalid artifact path {path!r}: expected a string, got {type(path).__name__}"
        )
    for form in _decoded_forms(path):
        control = _CONTROL_RE.search(form)
        if control:
            raise _refuse(
                path,
                form,
                f"it contains the control character U+{ord(control.group()):04X} at "
                f"position {control.start()}; remove it",
            )
        if "#" in form:
            raise _refuse(path, form, "'#' is not allowed; rename the artifact without it")
        if "\\" in form:
            raise _refuse(path, form, "backslashes are not allowed; separate segments with '/'")
        if form.startswith("/"):
            raise _refuse(
                path, form, "absolute paths are not allowed; give a path relative to the root"
            )
        if _DRIVE_RE.match(form):
            raise _refuse(path, form, "Windows drive letters are not allowed; give a relative path")
        if _SCHEME_RE.match(form):
            raise _refuse(
                path, form, "it looks like a URI; give a path relative to the artifact root"
            )
        if ".." in form.split("/"):
            raise _refuse(
                path, form, "'..' segments are not allowed; name the artifact without them"
            )
    segments = [segment for segment in path.split("/") if segment not in ("", ".")]
    if not segments:
        raise InvalidInputError(
            f"Invalid artifact path {path!r}: it names no file; give a relative path such "
            "as 'model/weights.bin'"
        )
    return "/".join(segments)


ArtifactScheme = Literal["file", "s3", "mlflow-artifacts"]


@dataclass(frozen=True, slots=True)
class ArtifactURI:
    """A parsed artifact root: a local directory, an S3 bucket and key prefix, or a proxied path.

    `path` is an absolute or relative local path for `file`; the key prefix without
    leading or trailing `/` (possibly empty) for `s3`; and for `mlflow-artifacts` the
    path, also without leading or trailing `/`, under the tracking server's artifact
    destination. `bucket` is `None` except for `s3`.
    """

    scheme: ArtifactScheme
    path: str
    bucket: str | None = None


def parse_artifact_uri(uri: str) -> ArtifactURI:
    """Parse an artifact root as MLflow users write it, or raise `InvalidInputError`.

    Accepted: `s3://bucket/prefix`, `file:/abs/path`, `file:///abs/path`,
    `file://localhost/abs/path`, plain local paths and `mlflow-artifacts:/path` (a run
    whose artifacts the tracking server stores). Refused: other schemes, a `file:` or
    `mlflow-artifacts:` URI naming a host, query strings and `#` fragments (both were
    used to smuggle `..` past MLflow's checks), `..` segments, NUL and control
    characters. `file:` and `mlflow-artifacts:` paths are percent-decoded once, as URIs
    are; plain paths and S3 keys are taken as they are.
    """
    if not isinstance(uri, str) or not uri:
        raise InvalidInputError(
            f"Invalid artifact URI {uri!r}: give a local path, 'file:///path' or "
            "'s3://bucket/prefix'"
        )
    if _CONTROL_RE.search(uri):
        raise InvalidInputError(
            f"Invalid artifact URI {uri!r}: it contains a control character; remove it"
        )
    if _SCHEME_RE.match(uri) or uri.lower() == f"{PROXIED_SCHEME}:":
        scheme = urlsplit(uri).scheme.lower()
    else:
        scheme = ""
    if scheme == "":
        return ArtifactURI("file", _check_local_root(uri, uri))
    parts = urlsplit(uri)
    if parts.query or parts.fragment or "#" in uri or "?" in uri:
        raise InvalidInputError(
            f"Invalid artifact URI {uri!r}: query strings and '#' fragments are not allowed; "
            "remove everything from the first '?' or '#'"
        )
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidInputError(
                f"Invalid artifact URI {uri!r}: file URIs must name this machine; write "
                f"'file:///{parts.netloc}{parts.path}' if you meant a local path"
            )
        return ArtifactURI("file", _check_local_root(uri, unquote(parts.path)))
    if scheme == "s3":
        bucket = parts.netloc
        if not _BUCKET_RE.match(bucket) or ".." in bucket:
            raise InvalidInputError(
                f"Invalid artifact URI {uri!r}: {bucket!r} is not a valid S3 bucket name "
                "(3-63 lowercase letters, digits, '.', '-'); write 's3://bucket/prefix'"
            )
        return ArtifactURI("s3", _check_relative(uri, "key prefix", parts.path), bucket)
    if scheme == PROXIED_SCHEME:
        if parts.netloc:
            raise InvalidInputError(
                f"Invalid artifact URI {uri!r}: a proxied artifact URI names a path on the "
                f"tracking server, not a host; write '{PROXIED_SCHEME}:{parts.path or '/'}'"
            )
        path = _check_relative(uri, "path", unquote(parts.path))
        return ArtifactURI(PROXIED_SCHEME, path)
    raise InvalidInputError(
        f"Unsupported artifact URI {uri!r}: scheme {scheme!r} is not supported; "
        "use a local path, 'file:///path', 's3://bucket/prefix' or 'mlflow-artifacts:/path'"
    )


def local_artifact_uri(directory: str | os.PathLike[str]) -> str:
    """The `file:` URI of a local directory, made absolute and percent-encoded.

    `parse_artifact_uri` gives the absolute path back unchanged, whatever the directory's
    name holds (spaces, `#`, `%`, `?`, non-ASCII letters).
    """
    return Path(os.path.abspath(os.fspath(directory))).as_uri()


def join_artifact_uri(base: str, *segments: str) -> str:
    """`base` (an artifact URI or local path) with `segments` appended, one path segment each.

    Segments are percent-encoded in `file:` and `mlflow-artifacts:` URIs and appended
    as they are to S3 keys and plain local paths, so that `parse_artifact_uri` of the
    result is the parsed `base` with the segments joined on. `base` is checked as
    `parse_artifact_uri` checks it; a segment must be one non-empty path segment that
    `validate_artifact_path` accepts (no `/`, `..`, `#`, control characters), or
    `InvalidInputError` says which one is wrong.
    """
    parsed = parse_artifact_uri(base)
    for segment in segments:
        _check_segment(base, segment)
    if not segments:
        return base
    if parsed.scheme == "s3":
        prefix = "/".join(part for part in (parsed.path, *segments) if part)
        return f"s3://{parsed.bucket}/{prefix}"
    if not _SCHEME_RE.match(base) and parsed.scheme == "file":
        # A plain path stays a plain path: it is taken literally, never percent-decoded.
        return os.path.join(base, *segments)
    parts = urlsplit(base)
    encoded = "/".join(quote(segment, safe="") for segment in segments)
    return urlunsplit((parsed.scheme, parts.netloc, f"{parts.path.rstrip('/')}/{encoded}", "", ""))


def _check_segment(base: str, segment: str) -> None:
    if not isinstance(segment, str) or not segment or "/" in segment:
        raise InvalidInputError(
            f"Cannot join {segment!r} onto the artifact URI {base!r}: give one non-empty "
            "path segment, without '/'"
        )
    try:
        checked = validate_artifact_path(segment)
    except InvalidInputError as exc:
        raise InvalidInputError(f"Cannot join onto the artifact URI {base!r}: {exc}") from None
    if checked != segment:
        raise InvalidInputError(
            f"Cannot join {segment!r} onto the artifact URI {base!r}: it does not name a "
            "path segment"
        )


def _check_relative(uri: str, what: str, path: str) -> str:
    path = path.strip("/")
    if not path:
        return ""
    try:
        return validate_artifact_path(path)
    except InvalidInputError as exc:
        raise InvalidInputError(f"Invalid artifact URI {uri!r}: bad {what}: {exc}") from None


def _check_local_root(uri: str, path: str) -> str:
    if not path:
        raise InvalidInputError(f"Invalid artifact URI {uri!r}: it names no directory")
    if ".." in re.split(r"[/\\]", path):
        raise InvalidInputError(
            f"Invalid artifact URI {uri!r}: '..' segments are not allowed in an artifact "
            "root; give the directory without them (an absolute path is clearest)"
        )
    return path
