import pytest

from mockserver.errors import BadRequest
from mockserver.forms import decode_pairs, split_name


def test_split_name():
    assert split_name("tune[prompts_attributes][][text]") == [
        "tune",
        "prompts_attributes",
        "",
        "text",
    ]
    assert split_name("plain") == ["plain"]


@pytest.mark.parametrize("name", ["tune[title", "tune]x[", "[x]", "tune[a]b"])
def test_malformed_names_are_400(name):
    with pytest.raises(BadRequest):
        split_name(name)


def test_seed_multipart_names_nest_like_json():
    pairs = [
        ("tune[title]", "John Doe"),
        ("tune[name]", "man"),
        ("tune[model_type]", "faceid"),
        ("tune[images][]", "a.jpg"),
        ("tune[images][]", "b.jpg"),
    ]
    assert decode_pairs(pairs) == {
        "tune": {
            "title": "John Doe",
            "name": "man",
            "model_type": "faceid",
            "images": ["a.jpg", "b.jpg"],
        }
    }


def test_indexed_arrays_follow_index_order():
    pairs = [("tune[image_urls][1]", "u1"), ("tune[image_urls][0]", "u0")]
    assert decode_pairs(pairs) == {"tune": {"image_urls": ["u0", "u1"]}}


def test_nested_attribute_arrays_group_like_rack():
    pairs = [
        ("tune[prompts_attributes][][text]", "first"),
        ("tune[prompts_attributes][][num_images]", "2"),
        ("tune[prompts_attributes][][text]", "second"),
    ]
    assert decode_pairs(pairs)["tune"]["prompts_attributes"] == [
        {"text": "first", "num_images": "2"},
        {"text": "second"},
    ]


def test_indexed_nested_attributes():
    pairs = [
        ("tune[prompts_attributes][0][text]", "a"),
        ("tune[prompts_attributes][1][text]", "b"),
        ("tune[prompts_attributes][0][seed]", "7"),
    ]
    assert decode_pairs(pairs)["tune"]["prompts_attributes"] == [
        {"text": "a", "seed": "7"},
        {"text": "b"},
    ]


@pytest.mark.parametrize(
    "pairs",
    [
        [("tune", "x"), ("tune[title]", "y")],
        [("tune[title]", "y"), ("tune", "x")],
        [("tune[images]", "x"), ("tune[images][]", "y")],
    ],
)
def test_conflicting_names_are_400(pairs):
    with pytest.raises(BadRequest):
        decode_pairs(pairs)
