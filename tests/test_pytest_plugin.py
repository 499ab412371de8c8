"""The pytest plugin, run the way a client's suite runs it: in its own pytest process."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "faceid_client"


@pytest.fixture
def client_project(pytester: pytest.Pytester) -> pytest.Pytester:
    for name in ("faceid_client.py", "test_faceid_client.py"):
        shutil.copy(EXAMPLE / name, pytester.path / name)
    return pytester


def test_the_documented_example_passes(client_project: pytest.Pytester):
    result = client_project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_an_off_contract_client_fails_at_teardown(client_project: pytest.Pytester):
    source = client_project.path / "faceid_client.py"
    broken = source.read_text().replace('"cfg_scale": 3', '"cfg_scale": 3, "guidance": 3')
    source.write_text(broken)
    result = client_project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*the client sent requests off the Astria contract*",
            "*createPrompt: guidance is not a known field*",
        ]
    )


def test_the_allow_mark_and_the_in_process_fixture(pytester: pytest.Pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.astria_mock_allow_violations
        def test_sends_junk_on_purpose(astria_mock_app):
            client = astria_mock_app.client()
            response = client.post("/tunes/690204/prompts", json={"prompt": {"txt": "x"}})
            assert response.status_code == 422
            assert astria_mock_app.violations()

        def test_callbacks_are_visible(astria_mock_app):
            client = astria_mock_app.client()
            prompt = client.post("/tunes/690204/prompts", json={"prompt": {"text": "x"}}).json()
            assert astria_mock_app.complete(prompt["id"])["images"]
            assert astria_mock_app.callbacks() == []
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
