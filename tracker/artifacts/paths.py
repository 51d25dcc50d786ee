"""Artifact path and artifact URI checks, done before any I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import unquote, urlsplit

from tracker.errors import InvalidInputError

# MLflow stops at 10 rounds too; a path still changing after that is hostile, not a file name.
MAX_DECODE_ROUNDS: Final = 10

_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE_RE: Final = re.compile(r"^[A-Za-z]:")
_SCHEME_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:/")
# Bucket names per AWS's rules, loosened to what S3-compatible servers (MinIO, moto) accept.
_BUCKET_RE: Final = re.compile(r"^[a-z0-9][a-z0-9.\-_]{1,61}[a-z0-9]$")


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


@dataclass(frozen=True, slots=True)
class ArtifactURI:
    """A parsed artifact root: a local directory or an S3 bucket and key prefix.

    `path` is an absolute or relative local path for `file`, and the key prefix
    without leading or trailing `/` (possibly empty) for `s3`; `bucket` is `None`
    for `file`.
    """

    scheme: Literal["file", "s3"]
    path: str
    bucket: str | None = None


def parse_artifact_uri(uri: str) -> ArtifactURI:
    """Parse an artifact root as MLflow users write it, or raise `InvalidInputError`.

    Accepted: `s3://bucket/prefix`, `file:/abs/path`, `file:///abs/path`,
    `file://localhost/abs/path` and plain local paths. Refused: other schemes, a
    `file:` URI naming another host, query strings and `#` fragments (both were
    used to smuggle `..` past MLflow's checks), `..` segments, NUL and control
    characters. `file:` paths are percent-decoded once, as URIs are; plain paths are
    taken as they are.
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
    scheme = urlsplit(uri).scheme.lower() if _SCHEME_RE.match(uri) else ""
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
        prefix = parts.path.strip("/")
        if prefix:
            try:
                prefix = validate_artifact_path(prefix)
            except InvalidInputError as exc:
                raise InvalidInputError(
                    f"Invalid artifact URI {uri!r}: bad key prefix: {exc}"
                ) from None
        return ArtifactURI("s3", prefix, bucket)
    raise InvalidInputError(
        f"Unsupported artifact URI {uri!r}: scheme {scheme!r} is not supported; "
        "use a local path, 'file:///path' or 's3://bucket/prefix'"
    )


def _check_local_root(uri: str, path: str) -> str:
    if not path:
        raise InvalidInputError(f"Invalid artifact URI {uri!r}: it names no directory")
    if ".." in re.split(r"[/\\]", path):
        raise InvalidInputError(
            f"Invalid artifact URI {uri!r}: '..' segments are not allowed in an artifact "
            "root; give the directory without them (an absolute path is clearest)"
        )
    return path
