"""`vdeploy bench --serve`: argument checks and URL parsing (the sweep itself runs against a real
Triton in test_serve_triton_server.py)."""
import pytest

from conftest import run_cli


def test_split_url():
    from vdeploy.bench.serve_sweep import split_url
    from vdeploy.errors import UserError

    assert split_url("http://127.0.0.1:8000") == ("127.0.0.1:8000", None)
    assert split_url("127.0.0.1:8000/v2/models/det") == ("127.0.0.1:8000", "det")
    with pytest.raises(UserError):
        split_url("https://127.0.0.1:8000")


@pytest.mark.parametrize("args, message", [
    (["--serve", "http://127.0.0.1:9", "--concurrency", "0"], "--concurrency"),
    (["--serve", "http://127.0.0.1:9", "--concurrency", "a"], "--concurrency"),
    (["bundle", "--serve", "http://127.0.0.1:9"], "give no bundle"),
    ([], "--serve URL"),
])
def test_bad_arguments_are_user_errors(args, message):
    r = run_cli("bench", *args)
    assert r.returncode == 2 and message in r.stderr


def test_a_server_that_is_not_there_is_a_user_error():
    # port 9 (discard) on loopback: nothing listens there
    r = run_cli("bench", "--serve", "http://127.0.0.1:9/v2/models/m", "--duration", "1")
    assert r.returncode == 2 and "no model 'm'" in r.stderr
