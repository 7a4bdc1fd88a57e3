"""Tests for reading dataset descriptions (pipeline/dataset.py)."""

from pipeline.dataset import description_from_dict, load_description, parse_description

MINIMAL = {
    "name": "minimal",
    "columns": {
        "user": {"type": "string", "role": "user_id"},
        "item": {"type": "string", "role": "item_id"},
    },
}


def test_string_na_tokens_default():
    description = parse_description(MINIMAL)
    assert description.string_na_tokens == ("nan", "NaN")


def test_string_na_tokens_can_be_empty():
    description = parse_description({**MINIMAL, "string_na_tokens": []})
    assert description.string_na_tokens == ()


def test_string_na_tokens_survive_to_dict():
    description = parse_description({**MINIMAL, "string_na_tokens": ["<NA>"]})
    assert description.to_dict()["string_na_tokens"] == ["<NA>"]
    assert description_from_dict(description.to_dict()).string_na_tokens == ("<NA>",)


def test_bundled_description_string_na_tokens():
    description = load_description()
    assert description.string_na_tokens == ("nan", "NaN")
    # Numeric columns must keep reading "nan" as NaN, so the texts are no
    # general NA tokens.
    assert "nan" not in description.na_tokens
    assert "NaN" not in description.na_tokens
