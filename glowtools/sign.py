"""Signed jobs: reading secret files, signing bodies and checking their signatures.

A signed body is the job's JSON object with two more fields: `kid`, the key id
(the first 8 hex digits of the SHA-256 of the secret), and `sig`, the hex
HMAC-SHA256 of the canonical JSON of the object without `kid` and `sig`
(sorted keys, no spaces, non-ASCII as \\u escapes). A secret is the content of
a file only its owner may read, less surrounding whitespace.
"""

import hashlib
import hmac
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .defaults import MIN_SECRET_LENGTH
from .errors import ConfigInvalid, JobInvalid
from .job import SIGNATURE_FIELDS, Job, encode, load_body, parse_body

_MAKE_ONE = "e.g. (umask 077; openssl rand -hex 32 > {path})"


@dataclass(frozen=True)
class Secret:
    """One shared secret and the key id that names it in signed bodies."""

    kid: str
    key: bytes
    path: str

    def mac(self, canonical: bytes) -> str:
        """Returns the hex HMAC-SHA256 of `canonical` under this secret."""
        return hmac.new(self.key, canonical, hashlib.sha256).hexdigest()


def key_id(key: bytes) -> str:
    """Returns the key id of a secret: the first 8 hex digits of its SHA-256."""
    return hashlib.sha256(key).hexdigest()[:8]


def load_secrets(paths: Iterable[str | Path]) -> list[Secret]:
    """Reads secret files; raises ConfigInvalid for the first unusable one."""
    return [load_secret(path) for path in paths]


def load_secret(path: str | Path) -> Secret:
    """Reads one secret file, refusing one that other users may read or change."""
    path = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise ConfigInvalid(_unreadable(path, exc)) from None
    try:
        _check_mode(path, os.fstat(fd))
        key = _read_all(fd).strip()
    finally:
        os.close(fd)
    if len(key) < MIN_SECRET_LENGTH:
        held = f"holds only {len(key)} characters" if key else "is empty"
        raise ConfigInvalid(
            f"secret file {path} {held}; a secret needs at least "
            f"{MIN_SECRET_LENGTH} ({_MAKE_ONE.format(path=path)})"
        )
    return Secret(key_id(key), key, path)


def _unreadable(path: str, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"secret file {path} does not exist ({_MAKE_ONE.format(path=path)})"
    problem = (exc.strerror or str(exc)).lower()
    return f"secret file {path}: {problem} (run the tool as the file's owner)"


def _check_mode(path: str, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise ConfigInvalid(f"secret file {path} is not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o044:
        can = "read it"
    elif mode & 0o033:
        can = "change it"
    else:
        return
    raise ConfigInvalid(
        f"secret file {path} has mode {mode:04o}, so other users can {can} "
        f"(run chmod 600 {path})"
    )


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def sign(body: bytes, secret: Secret) -> bytes:
    """Returns a job's body with `kid` and `sig` added, in canonical form."""
    data = _object(body)
    data = {k: v for k, v in data.items() if k not in SIGNATURE_FIELDS}
    signature = {"kid": secret.kid, "sig": secret.mac(encode(data))}
    return encode({**data, **signature})


def verify(body: bytes, secrets: Sequence[Secret]) -> bytes:
    """Returns the canonical body without its signature if one of `secrets` made it.

    Raises JobInvalid saying why: unsigned, unknown key id or tampered.
    """
    data = _object(body)
    kid, sig = data.pop("kid", None), data.pop("sig", None)
    if kid is None and sig is None:
        raise JobInvalid(
            "body", "is not signed (this listener runs only signed jobs: put them "
            "with glow-put --secret-file)"
        )  # fmt: skip
    if not isinstance(kid, str) or not isinstance(sig, str):
        problem = "has a malformed signature ('kid' and 'sig' must be strings)"
        raise JobInvalid("body", problem)
    secret = next((s for s in secrets if s.kid == kid), None)
    if secret is None:
        known = ", ".join(s.kid for s in secrets)
        raise JobInvalid(
            "body", f"is signed with key id {kid!r}, which this listener does not "
            f"hold (it holds {known})"
        )  # fmt: skip
    canonical = encode(data)
    if not hmac.compare_digest(secret.mac(canonical), sig):
        raise JobInvalid(
            "body", f"signature does not match its content (key id {kid}): the body "
            "was changed after it was signed"
        )  # fmt: skip
    return canonical


def open_body(body: bytes, secrets: Sequence[Secret] = ()) -> Job:
    """Returns the job in a body off a tube, first checking its signature if
    `secrets` are given; raises JobInvalid if it is not a job or not trusted."""
    if secrets:
        body = verify(body, secrets)
    return parse_body(body)


def _object(body: bytes) -> dict:
    data = load_body(body)
    if not isinstance(data, dict):
        raise JobInvalid("body", "is not a JSON object, so not a signed job")
    return data
