"""pfconvert through its public API, in one page: convert, save, fine-tune, evaluate, report, export, load.

    python examples/quickstart.py                         # about a minute on 2 CPU cores, writes ./quickstart-out/
    python examples/quickstart.py --checkpoint my.safetensors --data my_imagefolder/

Without --checkpoint the "existing model" has random weights, so distillation has nothing to teach (pfconvert says
so): pass the weights of a model trained on --data. Data: Debian's Fashion-MNIST (dataset-fashion-mnist), an IDX
folder or an ImageFolder with train/ and val/.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pfconvert


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--checkpoint", type=Path, default=None, help="weights of mobilenetv2_050 with 10 classes")
    parser.add_argument("--out", type=Path, default=Path("quickstart-out"))
    args = parser.parse_args()
    size = (3, 32, 32)

    # 1. Convert: every depthwise conv (with its BatchNorm and activation) becomes a max-pool of its geometry.
    model, record = pfconvert.convert("mobilenetv2_050", "maxpool", checkpoint=args.checkpoint, num_classes=10,
                                      input_size=size)
    print(f"{len(record.replacements)} layers replaced, {record.params_before:,} -> {record.params_after:,} params")
    artifact = pfconvert.save(model, record, args.out / "mnv2-maxpool", overwrite=True)

    # 2. Fine-tune by distillation from the original, which the artifact rebuilds; the best epoch is exported.
    config = pfconvert.FinetuneConfig(data=args.data, epochs=1, img_size=32, limit_train=1024, limit_val=256,
                                      batch_size=32, workers=0, augment="none", reconstruct_images=128)
    result = pfconvert.finetune(artifact, config, overwrite=True)
    print(f"best validation top-1 {result.best['val_top1']:.2f}% (epoch {result.best['epoch']})")

    # 3. Evaluate the fine-tuned model and its original on the same images.
    report = pfconvert.evaluate_artifact(artifact, args.data, img_size=32, limit=256, workers=0, original=True)
    print({name: round(m.top1, 2) for name, m in report.metrics.items()})

    # 4. Measure: params, MACs, memory and latency of both models, side by side (batch 1, eager and ONNX Runtime).
    original = pfconvert.build_original(pfconvert.load_artifact(artifact).recipe, artifact)
    measured = pfconvert.run_report(original, pfconvert.load(artifact), input_size=size, batch_sizes=(1,),
                                    backends=["cpu-eager", "ort"], runs=5)
    print(measured.to_markdown())

    # 5. Export to ONNX, checked against PyTorch with ONNX Runtime.
    onnx = pfconvert.export_onnx(pfconvert.load(artifact), artifact / "model.onnx", size, overwrite=True)
    print(f"{onnx.path}: max abs difference vs PyTorch {onnx.max_abs_diff:.1e}")


if __name__ == "__main__":
    main()
