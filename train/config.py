"""Training settings and the named recipes. A recipe is a set of defaults; any flag overrides it."""
from __future__ import annotations

from dataclasses import dataclass, field, fields

# The original tutorial's recipe, kept exactly for comparison.
REFERENCE = dict(arch="seed", arch_config={}, epochs=10, batch_size=100, lr=3e-4, weight_decay=1e-3,
                 optimizer="adam", schedule="constant", augment=False, label_smoothing=0.0)

RECIPES = {
    "reference": REFERENCE,
    # Default: reach 99% test accuracy as soon as possible on a CPU.
    "fast": dict(arch="edge", arch_config={"widths": [16, 32, 64]}, epochs=1, batch_size=64, lr=1e-2,
                 weight_decay=5e-4, optimizer="adamw", schedule="onecycle", augment=False,
                 label_smoothing=0.0),
    # Best single model: two convs in stages 2 and 3, jittered inputs, long one-cycle schedule,
    # validated once an epoch (430 steps of 128).
    "best": dict(arch="edge", arch_config={"widths": [32, 48, 96], "depth": 2}, epochs=25, batch_size=128,
                 lr=5e-3, weight_decay=5e-4, optimizer="adamw", schedule="onecycle", augment=True,
                 label_smoothing=0.1, eval_interval=430),
}
# The accurate model (shipped as `--model accurate`, the small default's teacher): the best recipe, also shown what
# the runtime's number reader cut out of photos (train/pieces.py), then fine-tuned on photo crops (docs/EXPERIMENTS.md).
RECIPES["photo"] = dict(RECIPES["best"], outliers=0.25, cut_pieces=0.2)
RECIPES["accurate"] = RECIPES["photo"]
# The shipped default classifier (issue 15): a fifth of the accurate model's multiply-accumulates, taught by it. The
# teacher's soft targets come from its INT8 file on every augmented batch (as good a teacher as the FP32 file, 99.99%
# the same answers, and 2.5x cheaper to run beside a small student on one core). No cut pieces: the row reader, not
# the cut search, reads numbers now. Photo crops (python -m train.photo_crops, seeds 100 and 101) are given on the
# command line with --photo-share 0.3 (the command is in runtime/models/MODEL_CARD.md).
RECIPES["small"] = dict(RECIPES["best"], arch_config={"widths": [16, 32, 64], "head": 128}, epochs=15,
                        outliers=0.2, teacher="runtime/models/digits-accurate-int8.onnx", distill=0.7,
                        temperature=2.0)
# The row reader (train/reader.py): a whole row of digits read at once with CTC, on synthetic rows.
# An epoch is as many rows as show each training digit about once (about 187 steps of 64 rows).
RECIPES["reader"] = dict(arch="reader", arch_config={"widths": [16, 32, 64, 96], "stride": 2}, epochs=20, batch_size=64,
                         lr=3e-3, weight_decay=5e-4, optimizer="adamw", schedule="onecycle", eval_interval=250)
DEFAULT_RECIPE = "fast"


@dataclass
class TrainConfig:
    recipe: str = DEFAULT_RECIPE
    arch: str = "edge"
    arch_config: dict = field(default_factory=dict)
    epochs: int = 1
    batch_size: int = 128
    lr: float = 4e-3
    weight_decay: float = 5e-4
    optimizer: str = "adamw"           # adam (L2 penalty, as the tutorial) | adamw
    schedule: str = "onecycle"         # constant | onecycle
    augment: bool = False
    label_smoothing: float = 0.0
    outliers: float = 0.0              # outliers (train/pieces.py) per digit in a batch, trained toward uniform
    outlier_weight: float = 0.5        # weight of their loss
    cut_pieces: float = 0.0            # digits cut from touching pairs (train/pieces.py) per digit in a batch
    photo_crops: list | None = None    # .npz files of labelled model inputs cut from photos (docs/FORMATS.md)
    photo_share: float = 0.0           # of those per digit in a batch
    photo_rows: list | None = None     # reader: .npz files of rows the runtime cut from photos (docs/FORMATS.md)
    bend: float = 0.0                  # reader: share of training digits bent elastically (train/rows.py)
    styles: float = 0.0                # share of training 1s and 7s redrawn as crossed 7s, flagged 1s (train/styles.py)
    init: str | None = None            # start from this checkpoint's weights (fine-tuning)
    teacher: str | None = None         # ONNX classifier whose soft targets the model learns (train/distill.py)
    distill: float = 0.0               # weight of the distillation loss; the label loss gets 1 - distill
    temperature: float = 2.0           # softens teacher and student outputs in the distillation loss
    mean: float = 0.5                  # input normalisation, pixels in [0, 1]
    std: float = 0.5
    seed: int = 0
    device: str = "auto"               # auto | cpu | cuda
    sync_bn: bool = False              # several CUDA processes: BatchNorm statistics over the global batch
    dataset: str = "mnist"
    data_dir: str | None = None
    download: bool = True
    val_size: int = 5000
    train_subset: int = 0              # >0: train on this many images only (tests, quick looks)
    eval_interval: int = 100           # iterations between validation evaluations
    patience: int = 0                  # evaluations without improvement before stopping; 0 = never
    log_test: bool = False             # also record test accuracy at each evaluation (reporting only)
    out_dir: str = "runs/latest"

    @classmethod
    def from_recipe(cls, recipe: str, **overrides) -> TrainConfig:
        if recipe not in RECIPES:
            raise ValueError(f"unknown recipe {recipe!r} (known: {', '.join(RECIPES)})")
        known = {f.name for f in fields(cls)}
        settings = {**RECIPES[recipe], **{k: v for k, v in overrides.items() if v is not None and k in known}}
        return cls(recipe=recipe, **settings)
