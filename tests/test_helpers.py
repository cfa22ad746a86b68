"""The test helpers that decide whether a run can pass: a missing data package skips here, fails in CI."""

from __future__ import annotations

import pytest

from helpers import REQUIRE_TEST_DATA, package_folder, require_asset


def test_a_missing_asset_skips_on_a_developers_machine_and_fails_where_ci_requires_it(monkeypatch):
    monkeypatch.delenv(REQUIRE_TEST_DATA, raising=False)
    require_asset(True, "anything")
    with pytest.raises(pytest.skip.Exception, match="no-such-wheel==1.0 .* is not installed"):
        package_folder("no_such_wheel_module", "no-such-wheel==1.0")
    monkeypatch.setenv(REQUIRE_TEST_DATA, "1")
    with pytest.raises(pytest.fail.Exception, match="SYNTHMED_REQUIRE_TEST_DATA=1 turns this skip into a failure"):
        package_folder("no_such_wheel_module", "no-such-wheel==1.0")
    assert (package_folder("pydicom", "pydicom") / "__init__.py").is_file()  # an installed package: its folder
