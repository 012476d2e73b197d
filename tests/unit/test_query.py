from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.errors import InvalidFilter, InvalidInput
from appliance.query import Condition, Op, SortKey, build_query, parse_filter, parse_sort


@pytest.mark.parametrize("expression, expected", [
    ("\"name='my-name'\"", [Condition("name", Op.EQ, "my-name")]),
    ("name='my-name'", [Condition("name", Op.EQ, "my-name")]),
    ("oeBuildPlanType=capture", [Condition("oeBuildPlanType", Op.EQ, "capture")]),
    ("name matches 'back%'", [Condition("name", Op.MATCHES, "back%")]),
    ("taskState<>'Running'", [Condition("taskState", Op.NE, "Running")]),
    ("taskState != 'Running'", [Condition("taskState", Op.NE, "Running")]),
    ("percentComplete>=50", [Condition("percentComplete", Op.GE, "50")]),
    ("associatedResource.resourceUri='/rest/x/1'", [Condition("associatedResource.resourceUri", Op.EQ, "/rest/x/1")]),
    ("name='it''s'", [Condition("name", Op.EQ, "it's")]),
    ("name='a and b' AND taskState='New'", [Condition("name", Op.EQ, "a and b"), Condition("taskState", Op.EQ, "New")]),
    ("resourceUri=null", [Condition("resourceUri", Op.EQ, None)]),
    ("", []),
])
def test_filter_forms(expression: str, expected: list[Condition]) -> None:
    assert parse_filter(expression) == expected


@pytest.mark.parametrize("bad", ["name", "='x'", "name='x' OR 1=1", "name='unterminated",
                                 "x" * 3000, "1name='x'"])
def test_bad_filters(bad: str) -> None:
    with pytest.raises(InvalidFilter):
        parse_filter(bad)


def test_unquoted_values_are_plain_literals() -> None:
    # Values are bound as SQL parameters, so odd characters are just part of the value.
    assert parse_filter("name=;drop") == [Condition("name", Op.EQ, ";drop")]


def test_sort_forms() -> None:
    assert parse_sort("name:ascending,created:descending") == [SortKey("name"), SortKey("created", True)]
    assert parse_sort("name:desc") == [SortKey("name", True)]
    assert parse_sort("name") == [SortKey("name")]
    with pytest.raises(InvalidFilter):
        parse_sort("name:up")
    with pytest.raises(InvalidFilter):
        parse_sort("na me")


def test_paging_validation() -> None:
    assert build_query(None, None, [], None).count == -1
    assert build_query("2", "5", [], None).start == 2
    for start, count in (("-1", "1"), ("0", "-2"), ("x", "1")):
        with pytest.raises(InvalidInput):
            build_query(start, count, [], None)


@given(st.text(max_size=300))
def test_any_text_parses_or_fails_cleanly(text: str) -> None:
    with contextlib.suppress(InvalidFilter):
        parse_filter(text)
