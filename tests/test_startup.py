"""The entry points' shared start-up: user errors become one line and exit status 2, everything else propagates."""
from __future__ import annotations

import pytest

from yolojax.data.errors import DatasetError
from yolojax.startup import exit_code


class _Mine(Exception):
    pass


def test_exit_code_ok_and_user_errors(capsys):
    assert exit_code(lambda: 123) == 0

    def bad_data():
        raise DatasetError("data=x.yaml: missing 'val'")

    assert exit_code(bad_data) == 2
    assert capsys.readouterr().err == "ERROR: data=x.yaml: missing 'val'\n"


def test_exit_code_extra_user_errors_and_other_errors(capsys):
    def mine():
        raise _Mine("bad word")

    with pytest.raises(_Mine):  # not a user error unless named
        exit_code(mine)
    assert exit_code(mine, extra_user_errors=(_Mine,)) == 2
    assert capsys.readouterr().err == "ERROR: bad word\n"
    with pytest.raises(KeyError):
        exit_code(lambda: {}["boxes"])
