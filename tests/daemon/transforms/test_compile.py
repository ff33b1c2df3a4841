"""The compiled chain: unchanged records keep their very bytes, changed ones are serialised once, failures name
the step, and records a source did not parse are parsed (or fail) here."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.transforms import Chain, SourceTransforms, TransformFailed, compile_chain
from daemon.transforms.compile import serialise
from daemon.transforms.config import AddSpec, AddStep, FieldsStep, FilterStep, PartitionKeyStep, RedactSpec, RedactStep
from tests.daemon.transforms.tweets import line, tweet

ENV = {"TWEET_PRODUCER_REDACT_KEY": "a-test-key-of-enough-bytes"}


def chain(*steps: Any) -> Chain:
    return compile_chain(SourceTransforms(steps=steps), "x", ENV)


def test_a_true_filter_ships_the_identical_bytes() -> None:
    """A filter that keeps the record returns the very bytes object the source handed over."""
    event = tweet()
    data = line(event)
    result = chain(FilterStep(filter="data.lang == 'ja'")).apply(data, event)
    assert result is not None and result[0] is data and result[1] is event and result[2] is None


def test_a_false_filter_returns_none() -> None:
    """A record the filter leaves out is None: nothing to ship."""
    assert chain(FilterStep(filter="data.lang == 'en'")).apply(line(tweet()), tweet()) is None


def test_a_changed_record_is_compact_utf8_json_of_the_changed_object() -> None:
    """A projection ships compact JSON of the new object, non-Latin text as UTF-8 (no \\u escapes)."""
    event = tweet()
    result = chain(FieldsStep(fields=("data.id", "data.text"))).apply(line(event), event)
    assert result is not None
    data, changed, _ = result
    assert data == '{{"data":{{"id":"{}","text":"東京で新しいリリース 🎉 مرحبا"}}}}'.format(event["data"]["id"]).encode()
    assert changed == json.loads(data)


def test_an_add_that_sets_nothing_ships_the_same_bytes() -> None:
    """`add: {}` and an add of a value already there leave the bytes untouched."""
    event = tweet()
    data = line(event)
    result = chain(AddStep(add=AddSpec()), AddStep(add=AddSpec(fields={"data.lang": "ja"}))).apply(data, event)
    assert result is not None and result[0] is data


def test_a_failing_step_names_its_position_and_kind() -> None:
    """A step that cannot apply raises TransformFailed with `transforms[i] kind: what`."""
    steps = (FilterStep(filter="data.lang == 'ja'"), RedactStep(redact=RedactSpec(hash=("data.public_metrics.like_count",))))
    with pytest.raises(TransformFailed, match=r"^transforms\[1\] redact: data\.public_metrics\.like_count is a number"):
        chain(*steps).apply(line(tweet()), tweet())


def test_a_runtime_expression_error_is_a_step_failure() -> None:
    """A JMESPath function given the wrong type (length of a number) fails the record, naming the filter."""
    with pytest.raises(TransformFailed, match=r"^transforms\[0\] filter: .*length"):
        chain(FilterStep(filter="length(data.public_metrics.like_count) > `1`")).apply(line(tweet()), tweet())


def test_a_type_error_inside_jmespath_is_a_step_failure_not_a_crash() -> None:
    """Ordering a string against a number raises TypeError inside jmespath: the record fails, the daemon goes on."""
    with pytest.raises(TransformFailed, match=r"^transforms\[0\] filter: TypeError"):
        chain(FilterStep(filter="data.lang < `1`")).apply(line(tweet()), tweet())


def test_bytes_without_a_parsed_event_are_parsed_once() -> None:
    """A record handed over as bytes only (event None) is parsed for the steps; not JSON is a failure."""
    event = tweet()
    data = line(event)
    result = chain(FilterStep(filter="data.lang == 'ja'")).apply(data, None)
    assert result is not None and result[0] is data and result[1] == event
    with pytest.raises(TransformFailed, match="not JSON"):
        chain(FilterStep(filter="data.lang == 'ja'")).apply(b"plain text", None)


def test_partition_key_follows_the_changed_record() -> None:
    """The partition key expression reads the record as shipped: after the envelope, under payload."""
    event = tweet()
    steps = (AddStep(add=AddSpec(envelope=True)), PartitionKeyStep(partition_key="payload.data.id"))
    result = chain(*steps).apply(line(event), event)
    assert result is not None
    data, shipped, key = result
    assert key == event["data"]["id"] and json.loads(data)["payload"] == event and shipped["source"] == "x"


def test_a_float_beyond_double_range_cannot_be_rewritten() -> None:
    """A changed record holding inf (from 1e999, valid JSON) fails instead of shipping `Infinity` (not JSON)."""
    data = b'{"data":{"id":"1","x":1e999}}'
    with pytest.raises(TransformFailed, match="cannot be written as JSON"):
        chain(FieldsStep(fields=("data.x",))).apply(data, json.loads(data))


def test_a_missing_hash_key_is_a_config_problem() -> None:
    """Compiling a redact step that hashes without a key says where the key was looked for."""
    from daemon.transforms import ConfigProblem

    with pytest.raises(ConfigProblem, match=r"\$TWEET_PRODUCER_REDACT_KEY"):
        compile_chain(SourceTransforms(steps=(RedactStep(redact=RedactSpec(hash=("data.id",))),)), "x", {})


def test_models_compare_by_value() -> None:
    """Two configs with the same steps are equal (hot reload compares them), different ones are not."""
    a = SourceTransforms(steps=(FilterStep(filter="data.lang == 'ja'"), AddStep(add=AddSpec(fields={"k": [1]}))))
    b = SourceTransforms(steps=(FilterStep(filter="data.lang == 'ja'"), AddStep(add=AddSpec(fields={"k": [1]}))))
    assert a == b and a != SourceTransforms(steps=(FilterStep(filter="data.lang == 'en'"),))


TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=30)


@given(TEXT, st.sampled_from(["ja", "en", "ar"]), st.integers(0, 10**6))
def test_only_a_true_filter_returns_the_identical_bytes(text: str, lang: str, likes: int) -> None:
    """For any tweet: a filter-only chain returns the identical bytes object when true, None when false."""
    event = tweet(text=text, lang=lang, likes=likes)
    data = line(event)
    result = chain(FilterStep(filter="data.lang != 'en' && data.public_metrics.like_count >= `10`")).apply(data, event)
    if lang != "en" and likes >= 10:
        assert result is not None and result[0] is data
    else:
        assert result is None


@given(TEXT)
def test_projected_bytes_parse_back_to_the_projection(text: str) -> None:
    """For any text: the shipped bytes of a projection are UTF-8 JSON equal to the projected object."""
    event = tweet(text=text)
    result = chain(FieldsStep(fields=("data.text", "matching_rules"))).apply(line(event), event)
    assert result is not None
    assert json.loads(result[0].decode("utf-8")) == {"data": {"text": text}, "matching_rules": event["matching_rules"]}


JSON_NO_FLOATS = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)


@given(JSON_NO_FLOATS)
def test_serialise_writes_what_the_reference_encoder_writes(value: Any) -> None:
    """Without floats (whose spelling may differ), the bytes are exactly json.dumps(ensure_ascii=False, compact)
    in UTF-8 - integers beyond 64 bits and real nulls included, which orjson leaves to the reference."""
    reference = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    assert serialise(value) == reference


@given(st.floats(allow_nan=False, allow_infinity=False), TEXT)
def test_serialised_floats_read_back_as_the_same_number(number: float, text: str) -> None:
    """Any finite float survives the round trip exactly, beside any text."""
    assert json.loads(serialise({"x": number, "t": text})) == {"x": number, "t": text}
