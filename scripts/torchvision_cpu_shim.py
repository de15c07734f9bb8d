"""Let PyPI's torchvision import beside the CPU-only torch wheel (test environments).

Installed by scripts/setup_env.sh into the virtualenv's site-packages as
``_ttsvar_torchvision_shim.py`` and activated by a ``.pth`` line that imports it.

Why: PyPI's torchvision wheel ships a ``_C.so`` linked against ``libtorch_cuda.so``.
The ``+cpu`` torch build has no such library, so the extension fails to load, its
operators are never registered, and ``import torchvision`` dies with
"operator torchvision::nms does not exist" (its Python code registers fake kernels
for operators it expects to exist). ComfyUI imports torchvision at startup.

What: just before torchvision is first imported, define the schemas (no kernels) of
torchvision's C++ operators. Transforms and models then work; the C++ operators
(nms, roi_align, deform_conv2d, io decoders) raise if actually called, which neither
ComfyUI nor this pack does.

This module runs at every interpreter start (through the .pth file), so its
top level stays cheap: torch is imported only when torchvision is requested.
"""

import importlib.abc
import sys

_SCHEMAS = (
    "_cuda_version() -> int",
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "box_iou_rotated(Tensor boxes1, Tensor boxes2) -> Tensor",
    "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height,"
    " SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor",
    "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height,"
    " SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width,"
    " int sampling_ratio, bool aligned) -> Tensor",
    "qroi_align(Tensor input, Tensor rois, float input_scale, int input_zero_point,"
    " float rois_scale, int rois_zero_point, float spatial_scale, SymInt pooled_height,"
    " SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor",
    "ps_roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height,"
    " SymInt pooled_width, int sampling_ratio) -> (Tensor, Tensor)",
    "_ps_roi_align_backward(Tensor grad, Tensor rois, Tensor channel_mapping,"
    " float spatial_scale, SymInt pooled_height, SymInt pooled_width, int sampling_ratio,"
    " SymInt batch_size, SymInt channels, SymInt height, SymInt width) -> Tensor",
    "roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height,"
    " SymInt pooled_width) -> (Tensor, Tensor)",
    "_roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale,"
    " SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels,"
    " SymInt height, SymInt width) -> Tensor",
    "ps_roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height,"
    " SymInt pooled_width) -> (Tensor, Tensor)",
    "_ps_roi_pool_backward(Tensor grad, Tensor rois, Tensor channel_mapping,"
    " float spatial_scale, SymInt pooled_height, SymInt pooled_width, SymInt batch_size,"
    " SymInt channels, SymInt height, SymInt width) -> Tensor",
    "deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias,"
    " SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h,"
    " SymInt dilation_w, SymInt groups, SymInt offset_groups, bool use_mask) -> Tensor",
    "_deform_conv2d_backward(Tensor grad, Tensor input, Tensor weight, Tensor offset,"
    " Tensor mask, Tensor bias, SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w,"
    " SymInt dilation_h, SymInt dilation_w, SymInt groups, SymInt offset_groups,"
    " bool use_mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
)

# The torch.library.Library object must stay alive, or its definitions are dropped.
_library = None


def define_torchvision_schemas():
    """Define torchvision's operator schemas if a CPU-only torch lacks them.

    Returns True when the schemas were defined by this call.
    """
    global _library
    import torch

    if _library is not None or "+cpu" not in torch.__version__:
        return False
    try:
        torch._C._dispatch_find_schema_or_throw("torchvision::nms", "")
    except RuntimeError:
        pass
    else:
        return False  # a working torchvision build already registered its operators
    library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        library.define(schema)
    _library = library
    return True


class _BeforeTorchvisionImport(importlib.abc.MetaPathFinder):
    """Meta-path hook that never finds anything; it only runs the shim once."""

    def __init__(self):
        self.done = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torchvision" and not self.done:
            self.done = True
            try:
                define_torchvision_schemas()
            except Exception as exc:  # noqa: BLE001 - a broken shim must not break every import; torchvision then reports its own error
                print(f"torchvision CPU shim failed: {exc!r}", file=sys.stderr)
        return None


if not any(isinstance(finder, _BeforeTorchvisionImport) for finder in sys.meta_path):
    sys.meta_path.insert(0, _BeforeTorchvisionImport())
