"""Channel sets: presets against docs/design.md's table, the T sets, the grammar, heat maps, sizes."""
import json
import pickle

import numpy as np
import pytest

from jpegfreq.channels import PRESETS, ZIGZAG, ChannelSet, channel_name, parse_channel_name


def _ks(*parts):
    """Natural indices from ints and (lo, hi) inclusive ranges, written as in docs/design.md."""
    out = set()
    for p in parts:
        out.update(range(p[0], p[1] + 1) if isinstance(p, tuple) else [p])
    return out


# Transcribed from docs/design.md, "Channel sets" (Y, Cb; Cr is always the same as Cb).
SQUARE_TABLE = {
    "6S": (_ks(0, 1, 8, 9), _ks(0)),
    "24S": (_ks((0, 3), (8, 11), (16, 19), (24, 27)), _ks(0, 1, 8, 9)),
    "32S": (_ks((0, 4), (8, 12), (16, 20), (24, 27), (32, 34)), _ks((0, 2), 8, 9)),
    "48S": (_ks((0, 5), (8, 13), (16, 21), (24, 29), (32, 35), (40, 43)), _ks((0, 2), (8, 10), 16, 17)),
    "64S": (_ks((0, 6), (8, 14), (16, 21), (24, 29), (32, 37), (40, 45), (48, 53)),
            _ks((0, 2), (8, 10), 16, 17, 24, 25)),
    "192": (_ks((0, 63)), _ks((0, 63))),
}
EXPECTED_COUNTS = {"6S": (4, 1, 1), "24S": (16, 4, 4), "32S": (22, 5, 5), "48S": (32, 8, 8),
                   "64S": (44, 10, 10), "192": (64, 64, 64),
                   "24T": (16, 4, 4), "48T": (32, 8, 8), "64T": (44, 10, 10)}


def _zigzag_by_walking():
    """Zigzag order derived independently: walk the anti-diagonals, alternating direction."""
    order = []
    for s in range(15):
        cells = [(u, s - u) for u in range(8) if 0 <= s - u < 8]  # u ascending: down-left
        if s % 2 == 0:
            cells.reverse()  # even diagonals run up-right (u descending)
        order.extend(8 * u + v for u, v in cells)
    return tuple(order)


# -- presets -------------------------------------------------------------------

@pytest.mark.parametrize("name", list(SQUARE_TABLE))
def test_square_preset_membership_matches_design_table(name):
    y, cb = SQUARE_TABLE[name]
    cs = ChannelSet.parse(name)
    assert cs.per_component == (tuple(sorted(y)), tuple(sorted(cb)), tuple(sorted(cb)))
    assert cs.name == name
    assert cs.count == len(y) + 2 * len(cb)


@pytest.mark.parametrize("name", list(EXPECTED_COUNTS))
def test_preset_counts(name):
    cs = ChannelSet.parse(name)
    assert cs.counts == EXPECTED_COUNTS[name]
    assert len(cs) == sum(EXPECTED_COUNTS[name]) == cs.count
    assert ChannelSet.parse(PRESETS[name]) == cs


def test_presets_listing():
    assert list(PRESETS) == ["6S", "24S", "32S", "48S", "64S", "192", "24T", "48T", "64T"]


def test_zigzag_table():
    assert ZIGZAG == _zigzag_by_walking()
    assert sorted(ZIGZAG) == list(range(64))
    assert ZIGZAG[:10] == (0, 1, 8, 16, 9, 2, 3, 10, 17, 24)


@pytest.mark.parametrize("name", ["24T", "48T", "64T"])
def test_triangle_sets_take_first_zigzag_positions(name):
    cs = ChannelSet.parse(name)
    zz = _zigzag_by_walking()
    for comp, n in enumerate(EXPECTED_COUNTS[name]):
        assert cs.per_component[comp] == tuple(sorted(zz[:n]))


def test_24t_explicit():
    cs = ChannelSet.parse("24T")
    assert cs.per_component[0] == (0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 16, 17, 18, 24, 25, 32)
    assert cs.per_component[1] == cs.per_component[2] == (0, 1, 8, 16)
    assert cs != ChannelSet.parse("24S")


def test_preset_names_are_case_insensitive():
    assert ChannelSet.parse("24s") == ChannelSet.parse(" 24S ") == ChannelSet.parse("24S")
    assert ChannelSet.parse("64t").name == "64T"


# -- global order and views ----------------------------------------------------

def test_global_order_names_and_arrays():
    cs = ChannelSet.parse("6S")
    assert cs.indices == (0, 1, 8, 9, 64, 128)
    assert cs.names == ("Y0", "Y1", "Y8", "Y9", "Cb0", "Cr0")
    assert list(cs) == list(cs.names)
    assert cs.component_of.dtype == np.int32 and cs.k.dtype == np.int32
    assert cs.component_of.tolist() == [0, 0, 0, 0, 1, 2]
    assert cs.k.tolist() == [0, 1, 8, 9, 0, 0]
    with pytest.raises(ValueError):
        cs.k[0] = 5  # read-only: the set is immutable
    assert "Cb0" in cs and 128 in cs and "Cb1" not in cs and "junk" not in cs


def test_full_spectrum_order():
    cs = ChannelSet.parse("192")
    assert cs.indices == tuple(range(192))
    assert cs.names[63] == "Y63" and cs.names[64] == "Cb0" and cs.names[191] == "Cr63"


def test_channel_name_helpers():
    assert channel_name(0) == "Y0"
    assert channel_name(73) == "Cb9"
    assert channel_name(191) == "Cr63"
    assert parse_channel_name("Cb9") == 73
    assert parse_channel_name("cr0") == 128
    assert all(parse_channel_name(channel_name(g)) == g for g in range(192))
    with pytest.raises(ValueError, match="out of range"):
        channel_name(192)
    with pytest.raises(ValueError, match="out of range"):
        parse_channel_name("Y64")
    with pytest.raises(ValueError, match="bad channel name"):
        parse_channel_name("K3")


# -- custom grammar ------------------------------------------------------------

def test_custom_grammar_basic():
    cs = ChannelSet.parse("Y:0-3,8-11;Cb:0,1;Cr:0,1")
    assert cs.per_component == ((0, 1, 2, 3, 8, 9, 10, 11), (0, 1), (0, 1))
    assert cs.spec == "Y:0-3,8-11;Cb:0,1;Cr:0,1"
    assert cs.name == cs.spec


def test_custom_grammar_tolerates_whitespace_case_and_order():
    a = ChannelSet.parse(" cr : 1 , 0 ; y:8-11, 0 - 3 ;CB:0,1; ")
    assert a == ChannelSet.parse("Y:0-3,8-11;Cb:0,1;Cr:0,1")
    assert a.spec == "Y:0-3,8-11;Cb:0,1;Cr:0,1"


def test_custom_grammar_omitted_components_and_overlaps():
    cs = ChannelSet.parse("Cb:5-7,6")
    assert cs.counts == (0, 3, 0)
    assert cs.names == ("Cb5", "Cb6", "Cb7")
    assert cs.spec == "Cb:5-7"


def test_spelled_out_preset_carries_the_preset_name():
    cs = ChannelSet.parse("Y:0-3,8-11,16-19,24-27;Cb:0,1,8,9;Cr:0,1,8,9")
    assert cs.name == "24S"
    assert cs == ChannelSet.parse("24S")


@pytest.mark.parametrize("name", list(PRESETS))
def test_spec_round_trip(name):
    cs = ChannelSet.parse(name)
    again = ChannelSet.parse(cs.spec)
    assert again == cs and again.spec == cs.spec and hash(again) == hash(cs)


# -- heat maps -----------------------------------------------------------------

def _heatmap(tmp_path, values, plain=False, name="heatmap.json"):
    path = tmp_path / name
    names = [channel_name(g) for g in range(192)]
    if plain:
        path.write_text(json.dumps(dict(zip(names, values))))
    else:
        path.write_text(json.dumps({"channels": names, "frequency": list(values)}))
    return path


def test_top_k_overall(tmp_path):
    values = [0.0] * 192
    for g, v in {0: 1.0, 64: 0.9, 1: 0.8, 130: 0.7}.items():
        values[g] = v
    path = _heatmap(tmp_path, values)
    cs = ChannelSet.parse(f"top 3 of {path}")
    assert cs.names == ("Y0", "Y1", "Cb0")
    assert ChannelSet.parse(f"TOP 4 OF {path}").names == ("Y0", "Y1", "Cb0", "Cr2")


def test_top_k_ties_go_to_lower_global_index(tmp_path):
    values = [0.5] * 192
    values[100] = 0.9
    cs = ChannelSet.parse(f"top 3 of {_heatmap(tmp_path, values, plain=True)}")
    assert cs.indices == (0, 1, 100)


def test_top_k_per_component(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.uniform(size=192).tolist()
    path = _heatmap(tmp_path, values)
    cs = ChannelSet.parse(f"top 16, 4, 4 of {path}")
    assert cs.counts == (16, 4, 4)
    for comp, n in enumerate((16, 4, 4)):
        block = values[64 * comp:64 * comp + 64]
        expected = sorted(np.argsort(block)[::-1][:n].tolist())
        assert list(cs.per_component[comp]) == expected


def test_top_k_path_with_spaces_and_partial_map(tmp_path):
    path = tmp_path / "gate heat map.json"
    path.write_text(json.dumps({"Y3": 0.2, "Cr7": 0.9, "Cb1": 0.5}))
    assert ChannelSet.parse(f"top 2 of {path}").names == ("Cb1", "Cr7")
    with pytest.raises(ValueError, match="only 3"):
        ChannelSet.parse(f"top 4 of {path}")


def test_top_k_errors(tmp_path):
    with pytest.raises(ValueError, match="cannot read heat map"):
        ChannelSet.parse(f"top 3 of {tmp_path / 'missing.json'}")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not a heat map: not valid JSON|malformed|JSON"):
        ChannelSet.parse(f"top 3 of {bad}")
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"Q1": 0.5}))
    with pytest.raises(ValueError, match="bad channel name"):
        ChannelSet.parse(f"top 1 of {wrong}")
    with pytest.raises(ValueError, match="empty"):
        ChannelSet.parse(f"top 0 of {bad}")


# -- sizes ---------------------------------------------------------------------

def test_input_size_ratio():
    assert ChannelSet.parse("24S").input_size_ratio() == pytest.approx(0.5)
    assert ChannelSet.parse("24S").input_size_ratio(448) == pytest.approx(0.5)
    assert ChannelSet.parse("64S").input_size_ratio(448) == pytest.approx(4 / 3)
    assert ChannelSet.parse("192").input_size_ratio(448) == pytest.approx(4.0)
    # MobileNetV2 geometry: 896 crop -> 112x112 cube.
    assert ChannelSet.parse("6S").input_size_ratio(896) == pytest.approx(0.5)


def test_bytes_ratio():
    cs = ChannelSet.parse("24S")
    assert cs.bytes_ratio("float32") == pytest.approx(2.0)
    assert cs.bytes_ratio(np.float16) == pytest.approx(1.0)
    assert cs.bytes_ratio() == pytest.approx(2.0)


# -- identity, serialisation ---------------------------------------------------

def test_immutable_hashable_equal_by_indices():
    a = ChannelSet.parse("24S")
    b = ChannelSet([g for g in reversed(a.indices)])
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert ChannelSet.parse(a) is a
    with pytest.raises(AttributeError, match="immutable"):
        a.foo = 1
    with pytest.raises(AttributeError):
        a.spec = "6S"
    assert a != "24S"


def test_pickle_and_repr():
    cs = ChannelSet.parse("Y:0,5;Cr:63")
    assert pickle.loads(pickle.dumps(cs)) == cs
    assert repr(cs) == "ChannelSet.parse('Y:0,5;Cr:63')"
    assert eval(repr(ChannelSet.parse("48T")), {"ChannelSet": ChannelSet}) == ChannelSet.parse("48T")


def test_json_round_trip():
    for spec in ("64T", "Y:0-3;Cb:9"):
        cs = ChannelSet.parse(spec)
        text = cs.to_json()
        data = json.loads(text)
        assert data["name"] == cs.name and data["count"] == cs.count
        assert ChannelSet.from_json(text) == cs
        assert ChannelSet.from_json(data) == cs
        assert ChannelSet.from_json(text.encode()) == cs
    assert ChannelSet.from_json({"spec": "24S"}) == ChannelSet.parse("24S")


def test_json_inconsistent():
    data = ChannelSet.parse("24S").to_dict()
    data["spec"] = "24T"
    with pytest.raises(ValueError, match="inconsistent"):
        ChannelSet.from_json(data)
    with pytest.raises(ValueError, match="neither"):
        ChannelSet.from_json({})


# -- errors --------------------------------------------------------------------

@pytest.mark.parametrize("spec, message", [
    ("25S", "unknown channel set preset '25S'"),
    ("6T", "unknown channel set preset"),
    ("", "empty spec"),
    ("Y:0-64", "index 64 in component Y is out of range 0..63"),
    ("Cb:70", "out of range"),
    ("Y:5-3", "bad range '5-3'"),
    ("Y:0-", "not an index or a range"),
    ("Y:x", "not an index or a range"),
    ("Y:0;y:1", "component Y appears twice"),
    ("K:0", "unknown component 'K'"),
    ("Y:", "lists no indices"),
    ("Y:0,,1", "empty item"),
    ("Y:0;Cb", "lacks 'component:'"),
    (";", "empty"),
])
def test_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        ChannelSet.parse(spec)


def test_bare_count_is_a_type_error():
    with pytest.raises(TypeError, match="ambiguous.*'24S' or '24T'"):
        ChannelSet.parse(24)
    with pytest.raises(TypeError, match="str or ChannelSet"):
        ChannelSet.parse(["Y0"])


def test_constructor_validation():
    with pytest.raises(ValueError, match="cannot be empty"):
        ChannelSet([])
    with pytest.raises(ValueError, match="out of range"):
        ChannelSet([192])
    with pytest.raises(TypeError, match="parse"):
        ChannelSet("24S")
