"""Which daemon failures the Docker backend retries, and ``--gpus`` parsing."""

from __future__ import annotations

import docker.errors as docker_errors
import pytest
import requests

from jupyter_exec.backends.container.engine import RetryPolicy, retry
from jupyter_exec.errors import SpecError
from jupyter_exec.spec import Limits


def _api_error(status: int) -> Exception:
    response = requests.Response()
    response.status_code = status
    return docker_errors.APIError(f"daemon said {status}", response=response)


def _flaky(failures: list[Exception]):
    calls = []

    def call() -> str:
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return "done"

    return call, calls


@pytest.mark.parametrize("error", [_api_error(500), _api_error(503), requests.exceptions.ConnectionError("reset")])
def test_transient_failures_are_retried_with_backoff(error):
    call, calls = _flaky([error, error])
    assert retry(call, policy=RetryPolicy(attempts=3, wait=0.001)) == "done"
    assert len(calls) == 3


@pytest.mark.parametrize("error", [_api_error(400), _api_error(404), _api_error(409), ValueError("not docker")])
def test_client_errors_are_not_retried(error):
    call, calls = _flaky([error])
    with pytest.raises(type(error)):
        retry(call, policy=RetryPolicy(attempts=5, wait=0.001))
    assert len(calls) == 1


def test_retries_stop_after_the_configured_attempts():
    call, calls = _flaky([_api_error(500)] * 5)
    with pytest.raises(docker_errors.APIError):
        retry(call, policy=RetryPolicy(attempts=2, wait=0.001))
    assert len(calls) == 2


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("all", "all"), ("1", "1"), ("0,1", "device=0,1"), ("device=2", "device=2"), ("GPU-abcd", "device=gpu-abcd")],
)
def test_gpus_are_parsed(text, parsed):
    assert str(Limits.parse(gpus=text).gpus) == parsed


@pytest.mark.parametrize("text", ["0", "two", "", "1,x"])
def test_bad_gpus_are_refused(text):
    with pytest.raises(SpecError, match="--gpus"):
        Limits.parse(gpus=text)
