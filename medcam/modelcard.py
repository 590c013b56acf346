"""Model cards: markdown generated from a checkpoint's metadata and its evaluations.

Nothing in the card is typed by hand except the free-text observations passed as ``notes``
(what a person saw when reviewing CAMs); every figure comes from the checkpoint or from a
``metrics.json`` written by ``medcam evaluate``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medcam.models.checkpoint import Checkpoint

__all__ = ["render_model_card"]


def _ci(m: Mapping[str, Any], key: str) -> str:
    low, high = m[f"{key}_ci95"]
    return f"{m[key]:.3f} (95% CI {low:.3f}-{high:.3f})"


def _metrics_rows(name: str, m: Mapping[str, Any]) -> str:
    c = m["confusion"]
    return (f"| {name} | {m['n']} ({m['n_positive']} pneumonia, {m['n_groups']} patients) | {_ci(m, 'auroc')} | "
            f"{_ci(m, 'sensitivity')} | {_ci(m, 'specificity')} | {m['ece']:.3f} | "
            f"TP {c['tp']}, FN {c['fn']}, TN {c['tn']}, FP {c['fp']} |")


def render_model_card(ckpt: Checkpoint, evaluations: Mapping[str, str | Path], *, notes: str = "") -> str:
    """The model card of ``ckpt`` as markdown.

    Args:
        evaluations: split name -> folder holding the ``metrics.json`` of ``medcam evaluate``.
        notes: reviewer observations (markdown), included verbatim.
    """
    meta = ckpt.metadata
    data = meta.get("data", {})
    training = meta.get("training", {})
    config = meta.get("config", {})
    train_cfg = config.get("train", {})
    versions = meta.get("versions", {})
    config_path = meta.get("config_path") or "<config.yaml>"
    metrics = {name: json.loads((Path(folder) / "metrics.json").read_text()) for name, folder in evaluations.items()}
    lines = [
        f"# Model card: {ckpt.model_id}",
        "",
        "> **Not for clinical use.** A research model trained on one public pediatric data set. It has not",
        "> been validated on adults, on other hospitals' images or prospectively, and it is not a medical device.",
        "",
        "## Model",
        "",
        f"- Architecture: MONAI `{ckpt.model.architecture}`, {ckpt.model.spatial_dims}D, "
        f"{ckpt.model.in_channels} input channel, trained from scratch (no pretrained weights).",
        f"- Classes: {', '.join(ckpt.model.classes)}; positive class {ckpt.model.positive_class}.",
        f"- Input: {ckpt.preprocess.size}x{ckpt.preprocess.size}, resize `{ckpt.preprocess.resize}`, "
        f"intensity `{ckpt.preprocess.intensity}` after the medcam display pipeline.",
        "- Class activation maps from the same forward pass (global-average-pooling head replaced by a reshape).",
        f"- Calibration: temperature scaling on the validation split, T = {ckpt.temperature:.3f}.",
        f"- Operating point: PNEUMONIA flagged at calibrated p >= {ckpt.threshold:.3f}, the highest threshold with "
        f"sensitivity >= {train_cfg.get('target_sensitivity', 'n/a')} on the validation split (a screening point).",
        f"- Weights stored as float16; medcam {versions.get('medcam', '?')}, torch {versions.get('torch', '?')}, "
        f"MONAI {versions.get('monai', '?')}.",
        "",
        "## Training data",
        "",
        "- Kermany D, Zhang K, Goldbaum M. Labeled Optical Coherence Tomography (OCT) and Chest X-Ray Images for "
        "Classification. Mendeley Data v2, 2018 (CC BY 4.0); Kermany et al., Cell 2018. Pediatric patients aged "
        "1-5 years from one centre (Guangzhou Women and Children's Medical Center); anterior-posterior chest "
        "radiographs; pneumonia bacterial or viral. The copy used had been resized to 224x224 8-bit (aspect "
        "ratio not kept).",
        f"- {data.get('n_train', '?') + data.get('n_val', 0) + data.get('n_test', 0) if data else '?'} images of "
        f"{data.get('n_patients', '?')} patients, split by patient (no patient in two splits), stratified by label: "
        f"train {data.get('n_train', '?')}, validation {data.get('n_val', '?')}, test {data.get('n_test', '?')}.",
        f"- Data hash (SHA-256 over files and labels): `{data.get('sha256', '?')}`.",
        "",
        "## Training",
        "",
        f"- `medcam train`, config recorded in the checkpoint: {train_cfg.get('epochs', '?')} epochs at most, batch "
        f"{train_cfg.get('batch_size', '?')}, AdamW lr {train_cfg.get('lr', '?')}, weight decay "
        f"{train_cfg.get('weight_decay', '?')}, cosine schedule, class-weighted cross-entropy, early stopping on "
        f"validation AUROC (patience {train_cfg.get('patience', '?')}), seed {train_cfg.get('seed', '?')}.",
        "- Augmentation: gamma 0.7-1.5, rotation +-10 degrees, scale +-10%, shift +-6%, Gaussian noise; no flips.",
        f"- CPU: bfloat16 autocast = {train_cfg.get('bf16', '?')}, "
        f"channels_last = {train_cfg.get('channels_last', '?')}; "
        f"{training.get('epochs_run', '?')} epochs run, best epoch {training.get('best_epoch', '?')}, "
        f"{training.get('seconds', 0) / 60:.0f} min on {training.get('device', '?')} "
        f"({training.get('threads', '?')} torch thread(s) when the run finished).",
        f"- Reproduce: `medcam train --config {config_path} --out runs/pneumonia` (writes the split CSVs "
        "`train.csv`, `val.csv`, `test.csv` used below).",
        "",
        "## Evaluation",
        "",
        "| split | n | AUROC | sensitivity | specificity | ECE | confusion at the operating point |",
        "|---|---|---|---|---|---|---|",
        *(_metrics_rows(name, m) for name, m in metrics.items()),
        "",
        "AUROC CIs: percentile bootstrap over patients (2,000 resamples); sensitivity/specificity CIs: Wilson.",
        "The validation split also chose the best epoch, the temperature and the threshold, so its figures are",
        "optimistic; the test split was used for nothing but this table.",
        "",
    ]
    commands = [m["command"] for m in metrics.values() if m.get("command")]
    if commands:
        lines += ["Produced by:", "", "```bash", *commands, "```", ""]
    lines += [
        "## Limits",
        "",
        "- Pediatric (1-5 years), single centre, one vendor population: performance on adults, other hospitals, "
        "portable/ICU films or other devices is unknown and likely lower.",
        "- Trained on resized 8-bit images (224x224, aspect ratio squashed), not on original DICOM: the display "
        "pipeline and resizing of a new site's images differ from training.",
        "- Labels are image-level diagnoses from the data set's graders, not confirmed outcomes; no region labels.",
        "- Known shortcut risk: in this data set normal and pneumonia originals differ in size and aspect ratio.",
        "- Not for clinical use.",
        "",
    ]
    if notes:
        lines += ["## What the CAMs show", "", notes.strip(), ""]
    return "\n".join(lines)
