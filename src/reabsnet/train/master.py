"""The master network, trained with defensive distillation (Papernot et al. 2016; paper section 3.3).

Distillation as in Carlini & Wagner's train_models.py `train_distillation`:
  1. a shared starting point: one epoch at temperature 1 on the hard labels;
  2. the teacher, from that start, trained with softmax(logits / T) on the hard labels;
  3. soft labels: the teacher's softmax(logits / T) on every training image;
  4. the student, same architecture and same start, trained at T on the soft labels;
  5. deployment: the student's raw logits, i.e. temperature 1. Its logits are about T times larger than an
     undistilled network's, so its softmax saturates; that is what masks the gradient of FGSM (paper Table 2).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from pathlib import Path

import torch
import torch.nn as nn

from reabsnet.artifacts import stage_key
from reabsnet.data import Splits
from reabsnet.models import create_model, place
from reabsnet.profiles import Profile, keyed
from reabsnet.runtime import seed_everything
from reabsnet.stages import SHIPPED_MODELS, cached_model, run_dir, shipped_dir
from reabsnet.train.loop import History, accuracy, cross_entropy_at, fit, predict_logits

log = logging.getLogger(__name__)


def _record(history: History, seconds: float) -> dict:
    return {"val_accuracy": history.val_accuracy, "train_loss": history.train_loss,
            "best_epoch": history.best_epoch, "best_val_accuracy": history.best_val_accuracy,
            "seconds": seconds}


def _train(model: nn.Module, splits: Splits, targets: torch.Tensor, cfg, temperature: float,
           gen: torch.Generator, desc: str) -> dict:
    start = time.perf_counter()
    x, _ = splits.split("train")
    history = fit(model, (x, targets), splits.split("val", cfg.check_size), cfg,
                  loss_fn=cross_entropy_at(temperature), generator=gen, desc=desc)
    return _record(history, time.perf_counter() - start)


def train_master(profile: Profile, splits: Splits, device: torch.device, home: str | Path | None = None,
                 shipped: Path | None = SHIPPED_MODELS) -> tuple[nn.Module, dict]:
    """Train (or reuse, or take from the `shipped` models; None = never) the profile's master network; returns the
    deployed model and its sidecar.

    Artifacts under runs/<dataset>/<profile>/: init, teacher and master (distilled), or master-plain.
    """
    out = run_dir(splits.name, profile.name, home)
    ship = shipped_dir(splits.name, profile.trained_as, shipped)
    common = {"profile": profile.trained_as, "seed": profile.seed, "data_sha256": splits.sha256,
              "config": keyed(profile.master)}
    test_x, test_y = splits.split("test", profile.master.check_size)

    def finish(model: nn.Module, record: dict, **extra) -> tuple[nn.Module, dict]:
        return model, {**common, **extra, "training": record,
                       "metrics": {"test_accuracy": accuracy(model, test_x, test_y), "test_images": len(test_y)}}

    def build_init() -> tuple[nn.Module, dict]:
        # train_models.py: one epoch at T = 1 on the hard labels, the start both teacher and student share.
        gen = seed_everything(profile.seed)
        model = place(create_model("master"), device)
        cfg = dataclasses.replace(profile.master, epochs=profile.init_epochs, schedule="constant")
        return finish(model, _train(model, splits, splits.train_y, cfg, 1.0, gen, "init"), temperature=1.0)

    init_key = stage_key("init", common, profile.init_epochs)
    init, init_meta = cached_model(out / "init.safetensors", init_key, build_init, device, ship)

    def from_init() -> nn.Module:
        return copy.deepcopy(init).train()

    if not profile.distill:
        def build_plain() -> tuple[nn.Module, dict]:
            gen = seed_everything(profile.seed + 1)
            model = from_init()
            record = _train(model, splits, splits.train_y, profile.master, 1.0, gen, "master")
            return finish(model, record, distilled=False, temperature=1.0, init_sha256=init_meta["sha256"])
        key = stage_key("master-plain", common, init_meta["sha256"])
        return cached_model(out / "master-plain.safetensors", key, build_plain, device, ship)

    T = profile.temperature

    def build_teacher() -> tuple[nn.Module, dict]:
        gen = seed_everything(profile.seed + 1)
        model = from_init()
        record = _train(model, splits, splits.train_y, profile.master, T, gen, "teacher")
        return finish(model, record, temperature=T, init_sha256=init_meta["sha256"])

    teacher_key = stage_key("teacher", common, T, init_meta["sha256"])
    teacher, teacher_meta = cached_model(out / "teacher.safetensors", teacher_key, build_teacher, device, ship)

    def build_student() -> tuple[nn.Module, dict]:
        gen = seed_everything(profile.seed + 2)
        model = from_init()
        x_train = splits.split("train", profile.master.train_size)[0]
        soft = torch.softmax(predict_logits(teacher, x_train) / T, dim=1)
        record = _train(model, splits, soft, profile.master, T, gen, "student")
        return finish(model, record, distilled=True, temperature=T, init_sha256=init_meta["sha256"],
                      teacher_sha256=teacher_meta["sha256"],
                      teacher_test_accuracy=teacher_meta["metrics"]["test_accuracy"])

    student_key = stage_key("master", common, T, teacher_meta["sha256"])
    return cached_model(out / "master.safetensors", student_key, build_student, device, ship)
