from __future__ import annotations

import pytest

from mizzen.consulapi.bexpr import FilterError, compile_filter

ENTRY = {"Node": {"Node": "n1"}, "Checks": [{"Status": "passing"}, {"Status": "warning"}],
         "Service": {"Service": "web", "Tags": ["v1", "primary"], "Port": 8080,
                     "Meta": {"version": "v2", "a.b": "x", "empty": ""}}}


@pytest.mark.parametrize("expr, expected", [
    ('Service.Tags contains "v1"', True),
    ('Service.Tags contains v3', False),
    ('"primary" in Service.Tags', True),
    ('"v3" not in Service.Tags', True),
    ("Service.Meta.version == v2", True),
    ('Service.Meta.version != "v2"', False),
    ('Service.Meta["a.b"] == "x"', True),
    ("Service.Port == 8080", True),
    ("Checks.Status == warning", True),  # a path through a list matches when any element does
    ('not (Service.Meta.version == v1) and Node.Node matches "^n[0-9]$"', True),
    ('Node.Node not matches "^n"', False),
    ("Service.Tags is not empty", True),
    ("Service.Meta.empty is empty and Service.Meta.missing is empty", True),
    ("Service.Tags not contains v1 or Service.Port != 8080", False),
    ("Service.Tags contains v9 or (Service.Service == web and `primary` in Service.Tags)", True),
])
def test_expressions(expr, expected):
    assert compile_filter(expr)(ENTRY) is expected


@pytest.mark.parametrize("expr", ["Service.Port >= 1", "Service.Port ==", "(Service.Port == 1", 'x matches "("'])
def test_bad_filters_are_named(expr):
    with pytest.raises(FilterError, match="filter"):
        compile_filter(expr)
