"""Cancel takes effect inside the decodes nodes make for their own outputs and grids (the Decode node, a Step
node's grid), between chunks: not only between scales."""
from dataclasses import replace

import pytest


class Cancelled(Exception):
    pass


@pytest.fixture
def cancel_after_first_chunk(pack, pipeline, monkeypatch, tmp_path):
    """Cancel is pressed while the VAE decodes its first chunk; returns the list of decoded chunk sizes."""
    vae, glue = pipeline[0].vae, pack.nodes.comfy_glue
    decoded, decode = [], vae.decode

    def decode_and_press_cancel(z):
        decoded.append(z.shape[0])
        return decode(z)

    def check_interrupt():
        if decoded:
            raise Cancelled

    monkeypatch.setattr(vae, "decode", decode_and_press_cancel)
    monkeypatch.setattr(glue, "check_interrupt", check_interrupt)
    monkeypatch.setattr(glue, "send_event", lambda *args: None)
    monkeypatch.setattr(pack.folder_paths, "temp_directory", str(tmp_path))
    return decoded


def candidates(pack, pipeline, count, scales):
    pipe, prompts = pipeline
    start = pack.nodes.candidates.TTSVARStart
    return start.execute(pipe, prompts, "1:1", "1M", 5, 3.0, 0.5, 900, 0.97, count, custom_scales=scales).result[0]


def test_the_decode_node_stops_between_chunks(pack, pipeline, cancel_after_first_chunk):
    stepped = candidates(pack, pipeline, 20, "1x1,2x2")
    stepped = replace(stepped, state=stepped.state.step())
    with pytest.raises(Cancelled):
        pack.nodes.candidates.TTSVARDecode.execute(stepped)
    assert cancel_after_first_chunk == [8]  # 20 candidates are 3 chunks of 8: one ran


def test_a_step_nodes_grid_stops_between_chunks(pack, pipeline, cancel_after_first_chunk, monkeypatch):
    step = pack.nodes.candidates.TTSVARStep
    monkeypatch.setattr(step, "hidden", type("Hidden", (), {"unique_id": "4"}), raising=False)
    with pytest.raises(Cancelled):
        step.execute(candidates(pack, pipeline, 20, "1x1,2x2"), -1)
    assert cancel_after_first_chunk == [8]
