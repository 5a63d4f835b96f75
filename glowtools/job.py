"""The job: its fields, their defaults and limits, and its body on the wire.

A job is a JSON object. Bodies written by the original Go glow are accepted as
they are: numbers given as strings, `args` as one string, `out`, `User`, `Env`.
"""

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .defaults import (
    DEFAULT_DELAY,
    DEFAULT_OUTPUT,
    DEFAULT_PRI,
    DEFAULT_TTR,
    DEFAULT_WORKDIR,
    MAX_DELAY,
    MAX_JOB_ID,
    MAX_PRI,
    MAX_TTR,
    MAX_TUBE_NAME,
    is_internal_tube,
)
from .errors import JobInvalid

_TUBE_RE = re.compile(r"[A-Za-z0-9+/;.$_()][A-Za-z0-9\-+/;.$_()]*")
# Used through re's own cache, so that a single put compiles only what it uses.
_ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_ENV_NAMES = rf"{_ENV_NAME}(?:\n{_ENV_NAME})*"
_GOOD_NAMES: set[str] = set()
_GOOD_TUBES: set[str] = set()  # a batch's jobs mostly share their tubes
_GOOD_NAMES_MAX = 10_000
_SIZE = r"(\d+)\s*([KMGT]?)i?B?"
_SIZE_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
LIMIT_NAMES = ("memory", "cpu_time", "nofile", "nproc", "nice")
# Keys the Go glow wrote with capitals (its struct had no json tags for them).
ALIASES = {"User": "user", "Env": "env"}
# A signed body's key id and signature; sign.verify checks them, parse_body drops them.
SIGNATURE_FIELDS = ("kid", "sig")


@dataclass
class Job:
    """One command to run on some listener, as put into a tube."""

    cmd: str
    tube: str
    args: list[str] = field(default_factory=list)
    pri: int = DEFAULT_PRI
    delay: int = DEFAULT_DELAY
    ttr: int = DEFAULT_TTR
    workdir: str = DEFAULT_WORKDIR
    stdout: str = DEFAULT_OUTPUT
    stderr: str = DEFAULT_OUTPUT
    mailto: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    retries: int = 0
    retry_delay: int = 0
    timeout: float | None = None
    limits: dict[str, int] = field(default_factory=dict)
    after: list[str] = field(default_factory=list)
    after_jobs: list[int] = field(default_factory=list)
    after_any: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Returns the fields that differ from their defaults, `out` where it fits."""
        data = {"cmd": self.cmd, "tube": self.tube}
        own = self.__dict__
        for name, default in _DEFAULTS.items():
            if own[name] != default:
                data[name] = own[name]
        if "stdout" in data and data.get("stdout") == data.get("stderr"):
            data["out"] = data.pop("stdout")
            del data["stderr"]
        return data

    def parsed_as_is(self, raw: Mapping[str, Any]) -> bool:
        """Tells whether `raw`, which this job was parsed from with no defaults,
        is exactly its canonical fields (`to_dict() == raw`), without making
        them: every field given holds the job's value, and none its default."""
        own = self.__dict__
        for name, value in raw.items():
            if name not in _AS_GIVEN or own[name] != value:
                return False
            if name in _DEFAULTS and value == _DEFAULTS[name]:
                return False
        return True

    def to_body(self) -> bytes:
        """Returns the canonical body: compact JSON with sorted keys."""
        return encode(self.to_dict())

    @property
    def held(self) -> bool:
        """Tells whether the job waits on upstream tubes or jobs."""
        return bool(self.after or self.after_jobs)

    def describe(self) -> str:
        """Returns the command line for logs: `cmd arg...`, quoted as a shell would."""
        import shlex  # only for --json and log lines: a single put has neither

        return shlex.join([self.cmd, *self.args])


def encode(data: Mapping[str, Any]) -> bytes:
    """Returns JSON bytes in glowtools' canonical form."""
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def _default_of(f) -> Any:
    return f.default_factory() if callable(f.default_factory) else f.default


# Each optional field's default, looked up once: a batch encodes thousands of jobs.
_DEFAULTS = {
    f.name: _default_of(f) for f in fields(Job) if f.name not in ("cmd", "tube")
}
# Fields that to_dict writes as they are (it may merge stdout and stderr into out).
_AS_GIVEN = {f.name for f in fields(Job)} - {"stdout", "stderr"}


def parse_job(
    raw: Any, where: str = "job", defaults: Mapping[str, Any] | None = None
) -> Job:
    """Validates one JSON value as a job; `defaults` fill the fields it lacks.

    Raises JobInvalid naming `where` and the field at fault.
    """
    if not isinstance(raw, dict):
        raise JobInvalid(where, f"is a JSON {_json_type(raw)}, not an object")
    if "User" in raw or "Env" in raw:
        raw = {ALIASES.get(key, key): value for key, value in raw.items()}
    data = raw
    if defaults:
        data = dict(defaults)
        if "out" in raw or "stdout" in raw or "stderr" in raw:
            for name in ("out", "stdout", "stderr"):
                data.pop(name, None)
        data.update(raw)

    values: dict[str, Any] = {}
    for name, value in data.items():
        parser = PARSERS.get(name)
        if parser is None:
            raise JobInvalid(where, f"unknown field {name!r}{_suggest(name)}")
        try:
            values[name] = parser(value)
        except (TypeError, ValueError) as exc:
            raise JobInvalid(where, f"field {name!r} {exc}") from None
    return _assemble(values, where)


def _assemble(values: dict[str, Any], where: str) -> Job:
    out = values.pop("out", None)
    if out is not None:
        if "stdout" in values or "stderr" in values:
            raise JobInvalid(where, "give either 'out' or 'stdout'/'stderr', not both")
        values["stdout"] = values["stderr"] = out
    for name in ("cmd", "tube"):
        if not values.get(name):
            hint = " (or pass --tube)" if name == "tube" else ""
            raise JobInvalid(where, f"field {name!r} is missing{hint}")
    upstream = values.get("after") or values.get("after_jobs")
    if values.get("after_any") and not upstream:
        raise JobInvalid(where, "'after_any' needs 'after' or 'after_jobs'")
    return Job(**values)


def parse_body(body: bytes) -> Job:
    """Validates a body taken off a tube; raises JobInvalid if it is not a job.

    A signature (`kid`, `sig`) is left out unchecked: sign.verify checks it.
    """
    raw = load_body(body)
    if isinstance(raw, dict) and ("kid" in raw or "sig" in raw):
        raw = {k: v for k, v in raw.items() if k not in SIGNATURE_FIELDS}
    return parse_job(raw, "body")


def load_body(body: bytes | str, where: str = "body") -> Any:
    """Decodes JSON from any bytes; raises JobInvalid naming `where` if it is not."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise JobInvalid(where, f"is not JSON ({json_problem(exc)})") from None


def json_problem(exc: Exception) -> str:
    """Words for why json.loads failed: syntax, encoding, depth or a long number."""
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg.removesuffix(' at')} at character {exc.pos}"
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return "a number has too many digits"


def _json_type(value: Any) -> str:
    names = {list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "object" if isinstance(value, dict) else "number")


def _a_json(value: Any) -> str:
    kind = _json_type(value)
    return {"array": "an array", "object": "an object", "null": "null"}.get(
        kind, f"a {kind}"
    )


def _suggest(name: str) -> str:
    import difflib

    close = difflib.get_close_matches(name, [*PARSERS, *ALIASES], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# Parsers: each takes a JSON value and returns the field's value or raises
# ValueError with the problem, worded to follow "field 'x' ".


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {_a_json(value)}")
    if "\0" in value:
        raise ValueError("contains a NUL byte")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise ValueError("is not valid Unicode (a lone surrogate)") from None
    return value


def _nonempty(value: Any) -> str:
    text = _text(value)
    if not text.strip():
        raise ValueError("is empty")
    return text


def _path(value: Any) -> str:
    text = _nonempty(value)
    if not text.startswith("/"):
        raise ValueError(f"must be an absolute path, not {text!r}")
    if ".." in text.split("/"):
        raise ValueError(f"must not go up with '..' ({text!r}); name the folder")
    return text


def _integer(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int | str | float):
            raise ValueError(f"must be a whole number, not {_a_json(value)}")
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"must be a whole number, not {value}")
        text = str(value).strip()
        if isinstance(value, str) and not re.fullmatch(r"[-+]?\d{1,20}", text):
            raise ValueError(f"must be a whole number, not {value!r}")
        number = int(float(text)) if isinstance(value, float) else int(text)
        if not low <= number <= high:
            raise ValueError(f"is {number}, outside {low}..{high}")
        return number

    return parse


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"must be a number of seconds, not {_a_json(value)}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"must be a number of seconds, not {value!r}") from None
    if not 0 < number <= MAX_TTR:
        raise ValueError(f"is {value}, outside 0..{MAX_TTR} seconds")
    return number


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "1", 1):
        return True
    if value in ("false", "0", 0):
        return False
    raise ValueError(f"must be true or false, not {value!r}")


def _args(value: Any) -> list[str]:
    if isinstance(value, str):
        try:
            import shlex

            return shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot be split into words ({exc})") from None
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"must be a list of strings, not {_a_json(value)}")
    return [_text(item) if isinstance(item, str) else _scalar(item) for item in value]


def _scalar(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must hold strings, not {_a_json(value)}")
    return str(value)


def tube_name(value: Any) -> str:
    """Validates a tube name as beanstalkd and glowtools accept it."""
    name = _text(value)
    if not _TUBE_RE.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a tube name (letters, digits and -+/;.$_() only, "
            "not starting with -)"
        )
    if len(name.encode()) > MAX_TUBE_NAME:
        raise ValueError(f"is {len(name)} characters; the limit is {MAX_TUBE_NAME}")
    return name


def _user_tube(value: Any) -> str:
    if isinstance(value, str) and value in _GOOD_TUBES:
        return value
    name = tube_name(value)
    if is_internal_tube(name):
        raise ValueError(f"names {name!r}; GLOW_ tubes are glowtools' own")
    if len(_GOOD_TUBES) < _GOOD_NAMES_MAX:
        _GOOD_TUBES.add(name)
    return name


def _tubes(value: Any) -> list[str]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ValueError(f"must be a list of tubes, not {_a_json(value)}")
    return [tube_name(_strip(item)) for item in items]


def _strip(item: Any) -> Any:
    return item.strip() if isinstance(item, str) else item


def _job_ids(value: Any) -> list[int]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ValueError(f"must be a list of job ids, not {_a_json(value)}")
    return [_integer(1, MAX_JOB_ID)(_strip(item)) for item in items]


def _mailto(value: Any) -> list[str]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ValueError(f"must be addresses, not {_a_json(value)}")
    addresses = [_text(item).strip() for item in items]
    addresses = [address for address in addresses if address]
    for address in addresses:
        if any(c in address for c in "\r\n<>,; ") or address.count("@") != 1:
            raise ValueError(f"holds {address!r}, which is not an address")
    return addresses


def _env(value: Any) -> dict[str, str]:
    if isinstance(value, list):
        pairs = []
        for item in value:
            name, sep, text = _text(item).partition("=")
            if not sep:
                raise ValueError(f"holds {item!r}; write NAME=value")
            pairs.append((name, text))
    elif isinstance(value, dict):
        if _plain_env(value):
            return value  # a job's env is never changed in place
        pairs = list(value.items())
    elif value is None:
        return {}
    else:
        raise ValueError(f"must be an object of strings, not {_a_json(value)}")
    env = {}
    for name, text in pairs:
        if not re.fullmatch(_ENV_NAME, name):
            raise ValueError(f"has {name!r}, which is not a variable name")
        env[name] = _text(text) if isinstance(text, str) else _scalar(text)
    return env


def _plain_env(env: dict) -> bool:
    """Tells at C speed whether every name is a variable name and every value
    ASCII text without NUL; anything else takes the checks that explain why."""
    if not _GOOD_NAMES.issuperset(env) and not _good_names(env):
        return False
    try:
        text = "".join(env.values())
    except TypeError:
        return False
    return "\0" not in text and text.isascii()


def _good_names(env: dict) -> bool:
    # A batch's jobs mostly share their variables' names: each is checked once.
    names = "\n".join(env)
    if names.count("\n") != len(env) - 1 or not re.fullmatch(_ENV_NAMES, names):
        return False
    if len(_GOOD_NAMES) < _GOOD_NAMES_MAX:
        _GOOD_NAMES.update(env)
    return True


def _user(value: Any) -> str | None:
    if value in (None, ""):
        return None
    name = _text(value)
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\$?", name) or len(name) > 32:
        raise ValueError(f"{name!r} is not a user name")
    return name


def parse_size(value: Any) -> int:
    """Reads a memory size such as 512M, 2G or a number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = re.fullmatch(_SIZE, str(value).strip(), re.IGNORECASE)
    if not match or isinstance(value, bool) or int(match[1]) == 0:
        raise ValueError(f"must be a size such as 512M or 2G, not {value!r}")
    return int(match[1]) * _SIZE_UNITS[match[2].upper()]


_LIMIT_PARSERS = {
    "memory": parse_size,
    "cpu_time": _integer(1, MAX_TTR),
    "nofile": _integer(1, 2**20),
    "nproc": _integer(1, 2**22),
    "nice": _integer(-20, 19),
}


def _limits(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        raise ValueError(f"must be an object, not {_a_json(value)}")
    limits = {}
    for name, item in value.items():
        if name not in _LIMIT_PARSERS:
            known = ", ".join(LIMIT_NAMES)
            raise ValueError(f"has unknown limit {name!r} (known: {known})")
        try:
            limits[name] = _LIMIT_PARSERS[name](item)
        except ValueError as exc:
            raise ValueError(f"limit {name!r} {exc}") from None
    return limits


PARSERS: dict[str, Callable[[Any], Any]] = {
    "cmd": _nonempty,
    "tube": _user_tube,
    "args": _args,
    "pri": _integer(0, MAX_PRI),
    "delay": _integer(0, MAX_DELAY),
    "ttr": _integer(1, MAX_TTR),
    "workdir": _path,
    "out": _path,
    "stdout": _path,
    "stderr": _path,
    "mailto": _mailto,
    "env": _env,
    "user": _user,
    "retries": _integer(0, 1000),
    "retry_delay": _integer(0, MAX_DELAY),
    "timeout": _seconds,
    "limits": _limits,
    "after": _tubes,
    "after_jobs": _job_ids,
    "after_any": _boolean,
}
