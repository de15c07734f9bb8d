"""The harness follows everything node tests need: progress, previews, custom events,
interrupts and node exceptions. Driven by the test-only nodes in support_nodes/."""

import uuid

STEP_EVENT = "ttsvar.e2e.step"


def steps_graph(steps, delay):
    text = f"steps {uuid.uuid4().hex}"  # new input each time: no cache hit
    return {"1": {"class_type": "TTSVARTest_Steps",
                  "inputs": {"text": text, "steps": steps, "delay": delay}}}


def test_progress_previews_and_custom_events(comfy):
    run = comfy.run_prompt(steps_graph(steps=4, delay=0.02))
    assert run.succeeded, run.error
    assert [p["value"] for p in run.of_type("progress")] == [1, 2, 3, 4]
    assert {p["max"] for p in run.of_type("progress")} == {4}
    assert [e["step"] for e in run.of_type(STEP_EVENT)] == [1, 2, 3, 4]
    assert len(run.previews) == 4
    for preview in run.previews:
        assert preview.image_type == "image/png"
        assert preview.image.startswith(b"\x89PNG")
        assert preview.data["node_id"] == "1"
        assert preview.data["prompt_id"] == run.prompt_id
    assert run.executed_output("1")["text"][0].startswith("steps ")


def test_legacy_previews_without_metadata(comfy):
    run = comfy.run_prompt(steps_graph(steps=2, delay=0.0), preview_metadata=False)
    assert run.succeeded, run.error
    assert [p.image_type for p in run.previews] == ["image/png", "image/png"]
    assert all(p.data == {} for p in run.previews)


def test_interrupt_stops_a_running_prompt(comfy):
    def interrupt_after_second_step(message, run):
        if message.type == "progress" and message.data["value"] == 2:
            comfy.interrupt(run.prompt_id)

    run = comfy.run_prompt(steps_graph(steps=200, delay=0.05), on_message=interrupt_after_second_step)
    assert run.interrupted
    assert run.types[-1] == "execution_interrupted"
    assert run.status == "error"
    assert len(run.of_type("progress")) < 200
    comfy.wait_until_idle()


def test_node_exception_reported(comfy):
    run = comfy.run_prompt({"1": {"class_type": "TTSVARTest_Fail",
                                  "inputs": {"message": uuid.uuid4().hex}}})
    assert not run.succeeded
    assert run.error["node_type"] == "TTSVARTest_Fail"
    assert run.error["exception_type"] == "RuntimeError"
    assert "e2e failure" in run.error["exception_message"]
    assert run.status == "error"


def test_saved_image_listed_in_history_and_viewable(comfy):
    color = uuid.uuid4().int & 0xFFFFFF  # new input each time: no cache hit
    run = comfy.run_prompt({
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": 16, "height": 8, "batch_size": 1, "color": color}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "e2e"}},
    })
    assert run.succeeded, run.error
    (image,) = run.outputs["2"]["images"]
    assert image["type"] == "output"
    png = comfy.view(image["filename"], subfolder=image["subfolder"], folder_type=image["type"])
    assert png.startswith(b"\x89PNG")
    assert (comfy.server.output_dir / image["subfolder"] / image["filename"]).is_file()
