"""The fixes in agents/compat patch private code of faust-streaming and aiokafka: PSO refuses
to run on versions they were not written and tested against, with one clear line."""

from __future__ import annotations

import pytest

from agents.compat import TESTED, UnsupportedVersion, check_versions


def test_the_installed_versions_are_the_tested_ones() -> None:
    check_versions()  # what `make setup` installs from pyproject's pins


def test_another_minor_version_is_refused_with_one_line() -> None:
    with pytest.raises(UnsupportedVersion) as refused:
        check_versions({"faust-streaming": "0.16.0", "aiokafka": TESTED["aiokafka"] + ".0"})
    message = str(refused.value)
    assert "\n" not in message and "faust-streaming 0.16.0" in message and "0.15.x" in message
    assert refused.value.exit_code == 2
    with pytest.raises(UnsupportedVersion):
        check_versions({"faust-streaming": "0.15.3", "aiokafka": "0.13.1"})
    check_versions({"faust-streaming": "0.15.9", "aiokafka": "0.14.2"})  # patch releases pass
