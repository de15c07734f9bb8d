"""Rebuilds the shipped workflows and their template-browser thumbnails from workflow_specs.py.

Runs only when asked (it writes into the repository):

    TTSVAR_BUILD_WORKFLOWS=1 .venv/bin/python -m pytest tests/e2e/test_build_workflows.py

Each workflow is built in the real ComfyUI page, serialised by the frontend itself (the JSON it saves),
written to example_workflows/<name>.json, loaded back the way the template browser loads it, fitted to the view
and photographed for example_workflows/<name>.jpg.
"""
import io
import json
import os

import pytest

THUMBNAIL_WIDTH = 960
pytestmark = pytest.mark.skipif(os.environ.get("TTSVAR_BUILD_WORKFLOWS") != "1",
                                reason="writes example_workflows/ from tests/e2e/workflow_specs.py; set "
                                       "TTSVAR_BUILD_WORKFLOWS=1 to run it")


def _jpeg(png: bytes) -> bytes:
    """The graph cropped to its nodes (plus a margin), on a 16:10 canvas of the background colour."""
    from PIL import Image, ImageChops

    picture = Image.open(io.BytesIO(png)).convert("RGB")
    background = picture.getpixel((2, 2))
    left, top, right, bottom = ImageChops.difference(picture, Image.new("RGB", picture.size, background)) \
        .convert("L").point(lambda v: 255 if v > 24 else 0).getbbox()
    margin = 24
    box = (max(left - margin, 0), max(top - margin, 0), min(right + margin, picture.width),
           min(bottom + margin, picture.height))
    graph = picture.crop(box)
    width = max(graph.width, round(graph.height * 1.6))
    canvas = Image.new("RGB", (width, max(graph.height, round(width / 1.6))), background)
    canvas.paste(graph, ((canvas.width - graph.width) // 2, (canvas.height - graph.height) // 2))
    height = round(canvas.height * THUMBNAIL_WIDTH / canvas.width)
    out = io.BytesIO()
    canvas.resize((THUMBNAIL_WIDTH, height), Image.LANCZOS).save(out, format="JPEG", quality=88)
    return out.getvalue()


def test_build_workflows_and_thumbnails(comfy_page, workflows, tiny_models, artifacts):
    page = comfy_page.page
    page.set_viewport_size({"width": 1600, "height": 1000})
    for name, build in workflows.specs.WORKFLOWS.items():
        data = json.loads(page.evaluate(workflows.BUILD_JS, build()))
        (workflows.WORKFLOWS_DIR / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
        page.evaluate("(data) => window.app.loadGraphData(data, true, true, null)", data)
        page.evaluate("() => window.app.extensionManager.command.execute('Comfy.Canvas.FitView')")
        page.wait_for_timeout(800)
        png = comfy_page.clean_screenshot(f"thumbnail_{name}").read_bytes()
        (workflows.WORKFLOWS_DIR / f"{name}.jpg").write_bytes(_jpeg(png))
