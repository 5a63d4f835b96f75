"""Retries: a failed attempt with retries left is released with a doubling
delay; the last failure is buried and reported once."""

import json

import greenstalk
from conftest import error_reports, wait_for
from support import gone, put


def reports_waiting(client) -> int:
    try:
        return client.stats_tube("GLOW_ERRORS")["current-jobs-ready"]
    except greenstalk.NotFoundError:
        return 0


def test_failing_job_runs_retries_plus_one_times_then_is_buried_once(
    listen, client, tmp_path
):
    listener = listen()
    runs = tmp_path / "runs"
    script = f"echo run >> {runs}; echo broken >&2; exit 4"
    job_id = put("-t", "t", "--retries", "2", "--retry-delay", "1", "--",
                 "sh", "-c", script)  # fmt: skip

    (report,) = error_reports(client, 1, timeout=30)

    assert runs.read_text() == "run\n" * 3
    assert client.stats_job(job_id)["state"] == "buried"
    assert (report["id"], report["attempt"], report["attempts"]) == (job_id, 3, 3)
    assert (report["error"], report["stderr_tail"]) == ("exit 4", "broken")
    name = f"job {job_id} (tube t)"
    assert f"{name} running (attempt 1 of 3)" in listener.log
    assert f"{name} failed: exit 4 after" in listener.log
    assert "s (attempt 1 of 3); released to run again in 1 s" in listener.log
    assert "s (attempt 2 of 3); released to run again in 2 s" in listener.log
    assert "s (attempt 3 of 3); buried" in listener.log
    assert reports_waiting(client) == 0


def test_job_that_succeeds_on_a_retry_is_deleted_and_not_reported(
    listen, client, tmp_path
):
    listen()
    mark = tmp_path / "tried"
    script = f"[ -e {mark} ] || {{ touch {mark}; exit 1; }}"

    job_id = put("-t", "t", "--retries", "3", "--", "sh", "-c", script)

    wait_for(lambda: gone(client, job_id), what="the second attempt to succeed")
    assert reports_waiting(client) == 0


def test_job_without_retries_is_buried_at_the_first_failure(listen, client):
    listen()

    job_id = put("-t", "t", "--", "false")

    (report,) = error_reports(client, 1)
    assert (report["id"], report["attempt"], report["attempts"]) == (job_id, 1, 1)
    assert client.stats_job(job_id)["releases"] == 0


def test_a_timed_out_attempt_is_retried_too(listen, client, tmp_path):
    listen()
    runs = tmp_path / "runs"
    job_id = put("-t", "t", "--retries", "1", "--timeout", "0.5", "--",
                 "sh", "-c", f"echo run >> {runs}; exec sleep 30")  # fmt: skip

    (report,) = error_reports(client, 1, timeout=30)

    assert report["id"] == job_id
    assert (report["reason"], report["attempt"]) == ("timeout", 2)
    assert runs.read_text() == "run\n" * 2


def test_retry_fields_from_glow_put_reach_the_body(beanstalkd, client):
    job_id = put("-t", "t", "--retries", "5", "--retry-delay", "30", "--", "true")

    body = json.loads(client.peek(job_id).body)
    assert (body["retries"], body["retry_delay"]) == (5, 30)
