"""Paired comparisons of two strategies' verdicts on the same prompts and seeds."""
import pytest

from ttsvar_core.shapesworld.experiments import comparison_pairs, comparisons_table, paired_comparison


def records(strategy, n, verdicts):
    return [dict(item=i, seed=0, category=category, correct=correct, strategy=strategy, n=n)
            for i, (category, correct) in enumerate(verdicts)]


def test_difference_is_of_category_means_and_mcnemar_counts_discordant_prompts():
    # counting: A 3/4, B 1/4; colors: A 1/2, B 1/2  -> overall difference (0.5 + 0) / 2 = 0.25
    a = records("tts-var", 2, [("counting", True), ("counting", True), ("counting", True), ("counting", False),
                               ("colors", True), ("colors", False)])
    b = records("bon", 2, [("counting", True), ("counting", False), ("counting", False), ("counting", False),
                           ("colors", False), ("colors", True)])
    result = paired_comparison(a + b, ("tts-var", 2), ("bon", 2))
    assert result["pairs"] == 6 and result["diff"] == pytest.approx(0.25)
    assert (result["only_a"], result["only_b"]) == (3, 1)
    assert result["mcnemar_p"] == pytest.approx(0.625)          # exact two-sided binomial, 3 of 4 discordant
    assert result["ci"][0] <= 0.25 <= result["ci"][1]
    assert "tts-var N=2" in comparisons_table([result])


def test_identical_verdicts_differ_by_nothing():
    same = [("counting", True), ("colors", False)] * 5
    result = paired_comparison(records("tts-var", 4, same) + records("bon", 4, same), ("tts-var", 4), ("bon", 4))
    assert result["diff"] == 0 and result["ci"] == (0.0, 0.0) and result["mcnemar_p"] == 1.0


def test_the_headline_pairs_are_compared():
    keys = {("raw", 1), ("bon", 2), ("bon", 8), ("tts-var", 2), ("tts-var", 4), ("tts-var", 8)}
    pairs = comparison_pairs(keys)
    assert (("tts-var", 2), ("bon", 8)) in pairs and (("tts-var", 8), ("tts-var", 4)) in pairs
    assert (("tts-var", 2), ("bon", 2)) in pairs and (("bon", 2), ("raw", 1)) in pairs
    assert all(a in keys and b in keys for a, b in pairs)


def test_compare_runs_pairs_two_runs_item_by_item(tmp_path):
    """Two runs of the same prompts and seeds: A is right on 3 of 4 items where B is right on 1, and A's
    rewards are 0.1 higher on each; the table says so, and the time ratio."""
    import json

    from ttsvar_core.shapesworld.experiments import compare_runs

    def run(name, correct, reward, seconds):
        records = [dict(strategy="tts-var", n=2, item=i, seed=0, category="position", correct=c, reward=reward + i,
                        seconds=seconds) for i, c in enumerate(correct)]
        folder = tmp_path / name
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps(dict(config=dict(selection_decode=name), records=records)))
        return folder

    base = run("full", [True, False, False, False], 0.5, 2.0)
    other = run("grid", [True, True, True, False], 0.6, 1.0)
    table = compare_runs([base, other])
    row = next(line for line in table.splitlines() if line.startswith("| grid"))
    assert "| grid | tts-var | 2 | 4 | +0.500" in row and "| 2 | 0 |" in row
    assert "+0.1000 [+0.1000, +0.1000]" in row and row.endswith("| 0.50 | – |")  # no images saved: no PSNR


def test_compare_names_runs_by_path_when_their_folder_names_are_alike(tmp_path):
    """Two models evaluated into folders of the same name (v2/raw, v3/raw) with the same decode: the table
    names each by its path instead of dropping the second as if it were the baseline."""
    import json

    from ttsvar_core.shapesworld.experiments import compare_runs

    folders = []
    for model, correct in (("v2", [True, False]), ("v3", [True, True])):
        folder = tmp_path / model / "raw"
        folder.mkdir(parents=True)
        records = [dict(strategy="raw", n=1, item=i, seed=0, category="colors", correct=c, reward=0.5, seconds=1.0)
                   for i, c in enumerate(correct)]
        (folder / "results.json").write_text(json.dumps(dict(config=dict(selection_decode="shipped"),
                                                             records=records)))
        folders.append(folder)
    table = compare_runs(folders)
    assert f"Against `{folders[0]}`" in table
    row = next(line for line in table.splitlines() if line.startswith(f"| {folders[1]} "))
    assert "| raw | 1 | 2 | +0.500" in row


def test_psnr_pairs_picked_images_and_counts_identical_ones_apart():
    import math

    import numpy as np

    from ttsvar_core.shapesworld.experiments import paired_psnr

    base = {(i, 0): np.full((4, 4, 3), 100, np.uint8) for i in range(3)}
    other = dict(base)
    other[(1, 0)] = base[(1, 0)] + 10          # MSE 100: 10 log10(255^2 / 100) = 28.13 dB
    other[(2, 0)] = base[(2, 0)] + 1           # MSE 1: 48.13 dB
    result = paired_psnr(other, base)
    assert (result["pairs"], result["identical"]) == (3, 1)
    assert result["mean"] == pytest.approx((28.131 + 48.131) / 2, abs=1e-3)
    assert result["pooled"] == pytest.approx(10 * math.log10(255 ** 2 / (101 / 3)), abs=1e-6)
    assert paired_psnr(base, base)["mean"] == math.inf


def test_compare_names_runs_by_weight_storage_and_reports_the_psnr_of_saved_picks(tmp_path):
    """Runs that differ in --weight-storage are named by it; picks saved by evaluate --save-images (save_picks)
    are paired item by item."""
    import json
    from types import SimpleNamespace

    import numpy as np
    import torch

    from ttsvar_core.shapesworld.experiments import Item, compare_runs, save_picks

    chunk = [Item(index=i, prompt=None, seed=0) for i in (7, 9)]

    def run(storage, images):
        folder = tmp_path / str(storage)
        folder.mkdir()
        records = [dict(strategy="raw", n=1, item=item.index, seed=0, category="counting", correct=True, reward=0.5,
                        seconds=1.0) for item in chunk]
        config = dict(selection_decode="shipped", weight_storage=storage)
        (folder / "results.json").write_text(json.dumps(dict(config=config, records=records)))
        result = SimpleNamespace(images=torch.tensor(np.stack(images)))
        save_picks(folder / "images", chunk, 3, result, [0, 1], "raw", 1, 0)
        return folder

    grey = np.full((8, 8, 3), 128, np.uint8)
    base = run(None, [grey, grey])
    fp8 = run("fp8", [grey, grey + 10])
    row = next(line for line in compare_runs([base, fp8]).splitlines() if line.startswith("| fp8"))
    assert "against `as computed`" in compare_runs([base, fp8]).lower()
    assert row.endswith("| 28.1 (31.1) [1/2] |")


def test_merge_joins_runs_of_other_strategies_and_refuses_mixed_settings(tmp_path):
    """A plain run and a later TTS-VAR run of the same prompts become one evaluation with their paired
    comparison; runs of another decode or weight storage, unfinished runs and overlapping runs are refused with
    the reason."""
    import json

    import pytest

    from ttsvar_core.shapesworld.experiments import merge_runs

    def run(name, strategy, n, correct, decode="shipped", done=1, storage=None):
        records = [dict(strategy=strategy, n=n, item=i, seed=0, category="colors", correct=c, reward=0.5, oracle=c,
                        diversity=float("nan"), token_passes=10, seconds=1.0) for i, c in enumerate(correct)]
        config = dict(command=f"evaluate {name}", prompts="test", limit=None, chunk=8, assets="A",
                      selection_decode=decode, weight_storage=storage, chunks_done=done, chunks_total=1)
        folder = tmp_path / name
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps(dict(config=config, records=records)))
        return folder

    raw = run("raw", "raw", 1, [False, False, True, False])
    search = run("search", "tts-var", 2, [True, True, True, False])
    merged = merge_runs([raw, search], tmp_path / "all")
    assert [(row["strategy"], row["n"]) for row in merged["rows"]] == [("raw", 1), ("tts-var", 2)]
    assert "| raw | 1 | 0.250 " in merged["table"] and "| 1/4 |" in merged["table"] and "| 3/4 |" in merged["table"]
    data = json.loads((tmp_path / "all" / "results.json").read_text())
    pair = next(c for c in data["comparisons"] if c["a"] == ["tts-var", 2] and c["b"] == ["raw", 1])
    assert (pair["only_a"], pair["only_b"], pair["pairs"]) == (2, 0, 4)
    assert data["config"]["merged"] == ["evaluate raw", "evaluate search"]
    with pytest.raises(SystemExit, match="differ in selection_decode"):
        merge_runs([raw, run("grid", "bon", 2, [True] * 4, decode="grid")], tmp_path / "x")
    with pytest.raises(SystemExit, match="differ in weight_storage"):
        merge_runs([raw, run("fp8", "bon", 2, [True] * 4, storage="fp8")], tmp_path / "w")
    with pytest.raises(SystemExit, match="unfinished"):
        merge_runs([raw, run("half", "bon", 4, [True] * 4, done=0)], tmp_path / "y")
    with pytest.raises(SystemExit, match="again"):
        merge_runs([raw, run("again", "raw", 1, [True] * 4)], tmp_path / "z")
