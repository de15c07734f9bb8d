import json

import pytest

from ttsvar_core.model.schedules import (ASPECT_RATIOS, PIXEL_BUDGETS, SCHEDULES_1M, get_schedule, image_size,
                                   rope_positions, snap_aspect_ratio, validate_schedule)

# (pixel size H x W, total tokens) per ratio and budget, from the official tables
EXPECTED = {
    "1.0": [(256, 256, 521), (512, 512, 2521), (768, 768, 6425), (1024, 1024, 10521)],
    "1.25": [(320, 256, 614), (560, 448, 2814), (880, 704, 6854), (1120, 896, 10774)],
    "1.333": [(320, 240, 665), (576, 432, 2657), (960, 720, 7085), (1152, 864, 10973)],
    "1.5": [(336, 224, 533), (624, 416, 2759), (1008, 672, 6941), (1248, 832, 10997)],
    "1.75": [(336, 192, 472), (672, 384, 2628), (1120, 640, 7220), (1344, 768, 11252)],
    "2.0": [(352, 176, 451), (736, 368, 2681), (1184, 592, 7219), (1440, 720, 11269)],
    "2.5": [(400, 160, 555), (800, 320, 2555), (1280, 512, 6805), (1600, 640, 10805)],
    "3.0": [(432, 144, 509), (864, 288, 2588), (1440, 480, 7016), (1776, 592, 11123)],
}
RECIPROCAL = {"1.25": "0.8", "1.333": "0.75", "1.5": "0.666", "1.75": "0.571", "2.0": "0.5", "2.5": "0.4",
              "3.0": "0.333"}


@pytest.mark.parametrize("ratio", list(EXPECTED))
def test_sizes_and_token_counts(ratio):
    for budget, (h, w, tokens) in zip(PIXEL_BUDGETS, EXPECTED[ratio]):
        for r, size in ((ratio, (h, w)), (RECIPROCAL.get(ratio), (w, h))):
            if r is None:
                continue
            schedule = get_schedule(r, budget)
            assert len(schedule) == PIXEL_BUDGETS[budget]
            assert image_size(schedule) == size
            assert sum(a * b for a, b in schedule) == tokens


def test_all_fifteen_templates():
    assert len(ASPECT_RATIOS) == len(SCHEDULES_1M) == 15


def test_snapping():
    assert snap_aspect_ratio(1.0) == "1.0"
    assert snap_aspect_ratio(0.7) == "0.666"
    assert snap_aspect_ratio(1.3) == "1.333"
    assert snap_aspect_ratio(10) == "3.0"
    assert get_schedule(0.74, "0.06M")[-1] == (15, 20)
    with pytest.raises(ValueError, match="positive"):
        snap_aspect_ratio(0)
    with pytest.raises(ValueError, match="pixel budget"):
        get_schedule(1.0, "2M")


def test_rope_positions_match_official_tables(data_dir):
    tables = json.loads((data_dir / "golden" / "rope_positions_mode2.json").read_text())["tables"]
    assert set(tables) == set(ASPECT_RATIOS)
    for ratio, table in tables.items():
        for budget in PIXEL_BUDGETS:  # prefixes of the 1M schedule reuse its positions
            schedule = get_schedule(ratio, budget)
            rows, cols = rope_positions(schedule)
            offset = 0
            for (h, w), ref in zip(schedule, table["scales"]):
                assert [h, w] == ref["hw"]
                assert rows[offset:offset + h * w].view(h, w)[:, 0].tolist() == ref["rows"]
                assert cols[offset:offset + h * w].view(h, w)[0].tolist() == ref["cols"]
                offset += h * w


def test_custom_schedule_positions_are_defined():
    schedule = [(1, 1), (2, 3), (5, 7)]
    rows, cols = rope_positions(schedule)
    assert rows.shape[0] == 1 + 6 + 35
    assert int(rows.max()) == 4 and int(cols.max()) == 6  # normalised to its own last scale
    assert rows[-7:].tolist() == [4] * 7


def test_schedule_validation():
    assert validate_schedule([(1, 1, 1), (1, 2, 2)]) == [(1, 1), (2, 2)]
    with pytest.raises(ValueError, match="at least 1x1"):
        validate_schedule([(1, 1), (0, 2)])
    with pytest.raises(ValueError, match="coarse to fine"):
        validate_schedule([(1, 1), (2, 2), (1, 1)])


def test_schedule_validation_refuses_what_the_model_cannot_run():
    """Each of these passed and then failed midway (IndexError in the scale embedding, a shape error at scale 0)."""
    with pytest.raises(ValueError, match="must be 1x1"):
        validate_schedule([(2, 2), (4, 4)])
    with pytest.raises(ValueError, match="position table covers"):
        validate_schedule([(1, 1), (64, 64), (129, 129)])
    sixteen = [(1, 1)] + [(i, i) for i in range(2, 17)]
    assert len(validate_schedule(sixteen)) == 16  # without a model only model-free rules apply
    with pytest.raises(ValueError, match="16 scales but the model has scale embeddings for 15"):
        validate_schedule(sixteen, num_levels=15)
    assert validate_schedule(sixteen[:15], num_levels=15) == sixteen[:15]


@pytest.mark.parametrize("ratio", [float("inf"), float("nan"), 0.0, -1.0])
def test_aspect_ratios_that_are_no_shape_are_refused(ratio):
    with pytest.raises(ValueError, match="positive finite number"):
        get_schedule(ratio, "1M")
