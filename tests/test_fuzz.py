"""The listener survives any body: thousands of random ones, then a valid job runs."""

import json

import pytest
from conftest import tool, wait_for
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_listen import gone

from glowtools.errors import JobInvalid
from glowtools.job import PARSERS, parse_body

BODIES = 1500
MAX_BODY = 65535
NOWHERE = "/nonexistent/glow-fuzz"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# Objects with the real field names, so that parsing goes past the first check.
job_like = st.fixed_dictionaries(
    {"cmd": st.just(NOWHERE) | json_values, "tube": st.just("fuzz") | json_values},
    optional={name: json_values for name in PARSERS if name not in ("cmd", "tube")},
)
bodies = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(str.encode),
    json_values.map(lambda v: json.dumps(v).encode()),
    job_like.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 40_000).map(lambda n: b"[" * n),
    st.integers(4301, 20_000).map(lambda n: b'{"pri":' + b"7" * n + b"}"),
)


def never_runs(body: bytes) -> bool:
    """Tells whether a body can only be buried: it is no job, or one that cannot
    start and writes nowhere (a fuzzer must not make a listener touch the disk)."""
    try:
        job = parse_body(body)
    except JobInvalid:
        return True
    quiet = not (job.held or job.retries or job.mailto or job.user)
    return quiet and job.cmd == NOWHERE and {job.stdout, job.stderr} == {"/dev/null"}


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_listener_buries_thousands_of_random_bodies_then_runs_a_valid_job(
    listen, client, tmp_path, signed
):
    secret = tmp_path / "secret"
    secret.write_text("fuzz-secret-0123456789")
    secret.chmod(0o600)
    listener = listen(*(["--secret-file", str(secret)] if signed else []))
    client.use("fuzz")
    put_ids = []

    @settings(
        max_examples=BODIES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(bodies)
    def put_garbage(body):
        assume(len(body) <= MAX_BODY and never_runs(body))
        put_ids.append(client.put(body, ttr=60))

    put_garbage()
    valid = tool("glow-put", "-t", "fuzz", "--secret-file", str(secret), "--", "true")
    valid_id = int(valid.stdout)

    wait_for(lambda: gone(client, valid_id), timeout=120, what="the valid job")
    wait_for(
        lambda: client.stats_tube("fuzz")["current-jobs-buried"] == len(put_ids),
        timeout=30,
        what=f"{len(put_ids)} buried",
    )
    reports = client.stats_tube("GLOW_ERRORS")["current-jobs-ready"]
    assert (len(put_ids), reports) == (len(put_ids), len(put_ids))
    assert len(put_ids) > BODIES // 2
    assert "Traceback" not in listener.log
    print(f"{len(put_ids)} random bodies buried and reported")
