"""Model cards: markdown generated from a checkpoint's metadata and its evaluations.

Nothing in the card is typed by hand except the free-text observations passed as ``notes``
(what a person saw when reviewing CAMs, how the run went, the image gate's measured
figures); every other figure comes from the checkpoint or from a ``metrics.json`` written by
``medcam evaluate``. Metrics are reported per population and per view within a population
(one table each), since the overall figure of a mixed test set says little about either.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medcam.models.calibration import Calibration
from medcam.models.checkpoint import Checkpoint
from medcam.models.lungs import LungSegmenter

__all__ = ["render_model_card"]

SOURCES = {
    "pediatric": "Kermany D, Zhang K, Goldbaum M. Labeled Optical Coherence Tomography (OCT) and Chest X-Ray "
                 "Images for Classification. Mendeley Data v2, 2018 (CC BY 4.0); Kermany et al., Cell 2018. Children "
                 "aged 1-5 years from one centre (Guangzhou Women and Children's Medical Center); frontal (AP) "
                 "chest radiographs; pneumonia bacterial or viral. The copy used had been resized to 224x224 8-bit "
                 "(aspect ratio not kept).",
    "adult": "NIH Clinical Center ChestX-ray14 (Wang et al., CVPR 2017), a subset of 448 frontal films of 299 "
             "adults aged 18-90, pneumonia against no finding, downsized to 512x512 8-bit. Labels were mined from "
             "reports by NLP and are noisy; view and label are confounded (normals mostly AP, pneumonia mostly "
             "PA), so results are reported within each view too.",
    "rsna": "RSNA Pneumonia Detection Challenge 2018 (Shih et al., Radiology: AI 2019), 913 frontal (PA/AP) films "
            "of 913 patients (852 adults aged 18-84, 61 children aged 3-17), NIH ChestX-ray14 films downsized to "
            "512x512 8-bit, labelled by radiologists of the RSNA and the Society of Thoracic Radiology: 231 "
            "\"Lung Opacity\" (positive; 375 opacity boxes), 273 \"Normal\" and 409 \"No Lung Opacity / Not "
            "Normal\" (negative: abnormal films that are not pneumonia-like). Research use; acknowledge the RSNA, "
            "the STR and the NIH Clinical Center.",
}


LUNG_SOURCES = ("Jaeger et al., Quant Imaging Med Surg 2014: Montgomery County, USA, and Shenzhen No. 3 People's "
                "Hospital, China, tuberculosis screening; Shenzhen masks by Stirenko et al. 2018, CC BY-NC-SA 4.0; "
                "adults and a few children, PA films, 256x256 8-bit copies")


def _ci(m: Mapping[str, Any], key: str) -> str:
    low, high = m[f"{key}_ci95"]
    return f"{m[key]:.3f} ({low:.3f}-{high:.3f})"


def _row(split: str, m: Mapping[str, Any], pointing: str) -> str:
    if m.get("auroc") is None:
        flagged = f"{m['flagged']:.0%} flagged" if m.get("flagged") is not None else ""
        return f"| {split} | {m['n']} ({m['n_positive']} pneumonia) | one class only | | | | {pointing} | {flagged} |"
    c = m["confusion"]
    return (f"| {split} | {m['n']} ({m['n_positive']} pneumonia, {m['n_groups']} patients) | {_ci(m, 'auroc')} | "
            f"{_ci(m, 'sensitivity')} | {_ci(m, 'specificity')} | {m['ece']:.3f} | {pointing} |"
            f" TP {c['tp']}, FN {c['fn']}, TN {c['tn']}, FP {c['fp']} |")


def _tables(metrics: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One table per population (and view within it), a row per evaluated split."""
    names = list(dict.fromkeys(g for m in metrics.values() for g in m.get("groups", {}))) or ["all"]
    lines: list[str] = []
    for group in names:
        lines += [f"**{group}**", "",
                  "| split | n | AUROC (95% CI) | sensitivity (95% CI) | specificity (95% CI) | ECE | pointing game "
                  "| confusion at the operating point |",
                  "|---|---|---|---|---|---|---|---|"]
        for split, m in metrics.items():
            found = m if group == "all" else m.get("groups", {}).get(group)
            if found is None:
                continue
            loc = m.get("localisation") or {}
            if group != "all":
                loc = loc.get("populations", {}).get(group) or {}
            pointing = f"{loc['pointing_game']:.2f} (n={loc['n_with_boxes']})" if loc.get("n_with_boxes") else "-"
            lines.append(_row(split, found, pointing))
        lines.append("")
    return lines


def _relative_config(config: Mapping[str, Any]) -> str:
    return Path(str(config.get("data", {}).get("parent", ""))).name


def _grid(ckpt: Checkpoint) -> str:
    cells = ckpt.preprocess.size // ckpt.model.output_stride
    return f"{cells}x{cells}"


def _left_out(ckpt: Checkpoint) -> list[str]:
    """The populations of the calibration record whose labels were left out of the fit."""
    validation = (ckpt.metadata.get("calibration") or {}).get("validation", {})
    return [name for name, figures in validation.items() if not figures.get("fitted", True)]


def _threshold_populations(ckpt: Checkpoint) -> str:
    """Whose validation split the threshold reaches its sensitivity in."""
    left_out = _left_out(ckpt)
    if not left_out:
        return "every population's validation split"
    fitted = [name for name in ckpt.metadata["calibration"]["validation"] if name not in left_out]
    return f"the validation splits of {', '.join(fitted)} (not {', '.join(left_out)})"


def _calibration(ckpt: Checkpoint) -> str:
    """How the probabilities are calibrated, and on what."""
    record = ckpt.metadata.get("calibration") or {}
    replaced = record.get("replaced", {})
    before = (f"; it replaced T = {float(replaced.get('temperature', 1)):.3f} and threshold "
              f"{float(replaced.get('threshold', 0)):.3f}" if replaced else "")
    left_out = _left_out(ckpt)
    fitted = (f"; the labels of {', '.join(left_out)} were left out of the fit (calibrated and reported only)"
              if left_out else "")
    populations = ckpt.population_calibration
    if populations is not None:
        held = record.get("groups", {})
        maps = "; ".join(f"{name} ({', '.join(held.get(name, [name]))}): {_one_map(ckpt.model.classes, c)}"
                         for name, c in zip(populations.populations, populations.calibrations, strict=True))
        shares = "; ".join(
            f"{population} {', '.join(f'{share:.1%} as {name}' for name, share in figures['calibrated_as'].items())}"
            for population, figures in record.get("validation", {}).items() if "calibrated_as" in figures)
        return (f"one map per group of populations, p = softmax(logits / T + b), the group chosen per image by a "
                f"linear discriminant of its pooled features (fitted on the training split, "
                f"{record.get('train', '?')}), not by its age tag: {maps}. Fitted on the validation split "
                f"({record.get('n')} images, every population of a group weighing the same) after training, as "
                f"served{before}{fitted}. Validation images calibrated as each group: {shares}.")
    text = f"one map for all populations, {_one_map(ckpt.model.classes, ckpt.calibration)}"
    if not record:
        return f"{text}, fitted on the validation split."
    return (f"{text}, fitted on the validation split ({record.get('n')} images, every population weighing the same) "
            f"after training, as served (float16 weights){before}{fitted}.")


def _ood_groups(ood: Mapping[str, Any]) -> str:
    groups = list(ood.get("groups", []))
    if not groups:
        return " (one mean per class)"
    named = [f"{g} (frontal films the classifier was not trained on)" if g == "reference" else g for g in groups]
    return f" ({len(groups)} means: {', '.join(named)})"


def _one_map(classes: Sequence[str], calibration: Calibration) -> str:
    if calibration.bias is None:
        return f"temperature T = {calibration.temperature:.3f}"
    shifts = ", ".join(f"{name} {b:+.3f}" for name, b in zip(classes, calibration.bias, strict=True))
    return f"T = {calibration.temperature:.3f}, b: {shifts}"


def render_model_card(ckpt: Checkpoint, evaluations: Mapping[str, str | Path], *, notes: str = "",
                      segmenter: LungSegmenter | None = None) -> str:
    """The model card of ``ckpt`` as markdown.

    Args:
        evaluations: split name -> folder holding the ``metrics.json`` of ``medcam evaluate``.
        notes: reviewer observations (markdown), included verbatim.
        segmenter: the lung segmenter served with it, described in a section of its own.
    """
    meta = ckpt.metadata
    data = meta.get("data", {})
    training = meta.get("training", {})
    config = meta.get("config", {})
    train_cfg = config.get("train", {})
    versions = meta.get("versions", {})
    sensitivity = (meta.get("calibration") or {}).get("target_sensitivity", train_cfg.get("target_sensitivity", "n/a"))
    use = meta.get("intended_use") or {}
    ood = meta.get("ood") or {}
    config_path = meta.get("config_path") or "<config.yaml>"
    populations = data.get("populations") or ["pediatric"]
    metrics = {name: json.loads((Path(folder) / "metrics.json").read_text()) for name, folder in evaluations.items()}
    lines = [
        f"# Model card: {ckpt.model_id}",
        "",
        f"> **Not for clinical use.** A research model trained on public data ({', '.join(populations)}). It has "
        "not been validated on other hospitals' images or prospectively, and it is not a medical device.",
        "",
        "## Model",
        "",
        f"- Architecture: MONAI `{ckpt.model.architecture}`, {ckpt.model.spatial_dims}D, "
        f"{ckpt.model.in_channels} input channel, no ImageNet weights"
        + (f"; started from the project's own model {train_cfg['init_model_id']}" if train_cfg.get("init_model_id")
           else ", trained from scratch") + ".",
        f"- Classes: {', '.join(ckpt.model.classes)}; positive class {ckpt.model.positive_class}.",
        f"- Input: {ckpt.preprocess.size}x{ckpt.preprocess.size}, resize `{ckpt.preprocess.resize}`, "
        f"intensity `{ckpt.preprocess.intensity}` after the medcam display pipeline; class activation maps on a "
        f"{_grid(ckpt)} grid from the same forward pass"
        + (f" (output stride {ckpt.model.output_stride}: no pooling before the last dense block, its 3x3 "
           "convolutions dilated by 2)" if ckpt.model.output_stride != 32 else "") + ".",
        f"- Calibration: {_calibration(ckpt)}",
        f"- Operating point: PNEUMONIA flagged at calibrated p >= {ckpt.threshold:.3f}, the highest threshold with "
        f"sensitivity >= {sensitivity} in {_threshold_populations(ckpt)}.",
        f"- Weights stored as float16; medcam {versions.get('medcam', '?')}, torch {versions.get('torch', '?')}, "
        f"MONAI {versions.get('monai', '?')}.",
        "",
        "## Intended use",
        "",
    ]
    if use:
        ages = f"{use.get('min_age', '?')}-{use.get('max_age', '?')} years"
        lines += [
            f"- Frontal ({', '.join(use.get('views', []))}) {', '.join(use.get('body_parts', []))} radiographs "
            f"({', '.join(use.get('modalities', []))}), greyscale, at least {use.get('min_size')} pixels a side; "
            f"patients aged {ages} (the training data's range).",
            "- The intended-use gate refuses DICOM whose tags contradict this (an absent tag never refuses), "
            "and any image whose pooled features are far from the training images (Mahalanobis distance to the "
            "nearest group mean, Ledoit-Wolf covariance, from the same forward pass)"
            + (f": fitted on {ood.get('n_train')} images{_ood_groups(ood)}, threshold "
               f"{float(ood.get('threshold', 0)):.1f} = the highest {float(ood.get('quantile', 0.99)):.1%} quantile "
               f"of any population's validation images ({ood.get('n_val')} in all)."
               if ood else "; this checkpoint has no image-gate statistics."),
        ]
    else:
        lines.append("- Not recorded in this checkpoint (the gate uses its defaults: CR/DX frontal chest films).")
    lines += ["", "## Training data", ""]
    for population in populations:
        lines.append(f"- **{population}**: {SOURCES.get(population, 'see the training config')}")
    lines += [
        f"- {data.get('n_train', 0) + data.get('n_val', 0) + data.get('n_test', 0)} images of "
        f"{data.get('n_patients', '?')} patients, each population split by patient on its own (no patient in two "
        f"splits), stratified by label: train {data.get('n_train', '?')}, validation {data.get('n_val', '?')}, "
        f"test {data.get('n_test', '?')}"
        + (f"; every patient of the parent model's splits kept in his part (`{_relative_config(config)}`)"
           if config.get("data", {}).get("parent") else "")
        + (f"; the {config['data']['dedupe'][0]} films that are also {config['data']['dedupe'][1]} films (by their "
           f"pixels) dropped, their copies split with their patients" if config.get("data", {}).get("dedupe")
           else "") + ".",
        f"- Data hash (SHA-256 over files and labels): `{data.get('sha256', '?')}`.",
        "",
        "## Training",
        "",
        f"- `medcam train --config {config_path}`: {train_cfg.get('epochs', '?')} epochs at most of "
        f"{train_cfg.get('samples_per_epoch') or 'all'} images drawn by population weight with classes (and "
        f"views, where confounded) balanced, batch {train_cfg.get('batch_size', '?')}, AdamW lr "
        f"{train_cfg.get('lr', '?')}, weight decay {train_cfg.get('weight_decay', '?')}, cosine schedule, label "
        f"smoothing {train_cfg.get('label_smoothing', 0)}, early stopping on the lowest per-population validation "
        f"AUROC (patience {train_cfg.get('patience', '?')}), seed {train_cfg.get('seed', '?')}.",
        "- Augmentation: gamma 0.7-1.5, rotation +-10 degrees, scale +-10%, shift +-6%, Gaussian noise"
        + (f", one to four random rectangles erased (probability {train_cfg['erase']})" if train_cfg.get("erase")
           else "") + "; no flips.",
        *([f"- Maps supervised during training only (nothing added to the network, whose maps still average to "
           f"its logits): positive evidence of the pneumonia map outside the bundled segmenter's lungs penalised on "
           f"every film (weight {train_cfg.get('lung_loss', 0)}), and the map's spatial-softmax mass drawn into the "
           f"radiologists' opacity boxes on RSNA opacity films (weight {train_cfg.get('box_loss', 0)})."]
          if train_cfg.get("lung_loss") or train_cfg.get("box_loss") else []),
        *([f"- Validated and kept: the exponential moving average of the weights (decay {train_cfg['ema']} per "
           "step), not the last step's weights."] if train_cfg.get("ema") else []),
        f"- {training.get('epochs_run', '?')} epochs run, best epoch {training.get('best_epoch', '?')}, "
        f"{training.get('seconds', 0) / 60:.0f} min on {training.get('device', '?')} "
        f"({training.get('threads', '?')} torch thread(s)). Validation AUROC per epoch is in the checkpoint's "
        "`training.history`.",
        "",
        "## Evaluation",
        "",
        *_tables(metrics),
        "AUROC CIs: percentile bootstrap over patients (2,000 resamples); sensitivity/specificity CIs: Wilson.",
        "The validation split also chose the best epoch, the calibration and the threshold, so its figures are",
        "optimistic; the test split was used for nothing but these tables. Pointing game: the pneumonia map's",
        "maximum inside a reference box (5% tolerance), on the images of the split that have boxes.",
        "",
    ]
    commands = [m["command"] for m in metrics.values() if m.get("command")]
    if commands:
        lines += ["Produced by:", "", "```bash", *commands, "```", ""]
    lines += [
        "## Limits",
        "",
        f"- Public sources ({', '.join(populations)}), each from one centre; few patients aged 6-17; performance "
        "on other hospitals, portable/ICU films, other devices and other populations is unknown and likely lower.",
        "- Trained on resized 8-bit PNG/JPEG copies, not on original DICOM: the display pipeline and resizing of a "
        "new site's images differ from training.",
        "- Labels are image-level readings (graders for the children, report mining for the NIH adults, "
        "radiologists for RSNA), not confirmed outcomes"
        + ("; region labels (boxes) exist only for the RSNA opacity films." if "rsna" in populations
           else "; no region labels were used in training."),
        "- Not for clinical use.",
        "",
    ]
    if segmenter is not None:
        lines += _segmenter_section(segmenter, ckpt)
    if notes:
        lines += [notes.strip(), ""]
    return "\n".join(lines)


def _segmenter_section(segmenter: LungSegmenter, ckpt: Checkpoint) -> list[str]:
    """The lung segmenter: data, training, Dice per source, and the lung gate set with it."""
    meta = segmenter.metadata
    data, training, scores = meta.get("data", {}), meta.get("training", {}), meta.get("dice", {})
    net = segmenter.config
    lines = [
        f"## Lung segmenter: {segmenter.segmenter_id}",
        "",
        f"- MONAI `UNet`, channels {'-'.join(map(str, net.channels))}, {net.num_res_units} residual unit(s) per "
        f"level, {net.size}x{net.size} input (the classifier's input resampled and standardised again), one "
        "sigmoid output per pixel; thresholded at 0.5. Runs on the classifier's batch in the same call, and its "
        "mask goes back to the source pixels with the classifier's grid transform.",
        f"- Data: {', '.join(data.get('sources', []))} films with manual lung-field masks ({LUNG_SOURCES}), one "
        f"film per patient, split 70/15/15 by patient within each source: train {data.get('n_train', '?')}, "
        f"validation {data.get('n_val', '?')}, test {data.get('n_test', '?')}.",
        f"- `medcam train-lungs --config configs/lungs.yaml`: {training.get('epochs', '?')} epochs, batch "
        f"{training.get('batch_size', '?')}, AdamW with a one-cycle schedule to lr {training.get('lr', '?')}, "
        "loss binary cross-entropy + soft Dice; augmentation: rotation +-12 degrees, zoom 0.75-1.3 (black "
        "borders), aspect 0.85-1.18, mirror images, gamma, contrast, noise; the epoch with the best validation "
        f"Dice kept (epoch {meta.get('best_epoch', '?')}).",
        "",
        "| split | source | n | mean Dice | median | 5th percentile | lowest |",
        "|---|---|---|---|---|---|---|",
    ]
    for split, by_source in scores.items():
        for source, m in by_source.items():
            lines.append(f"| {split} | {source} | {m['n']} | {m['mean']:.3f} | {m['median']:.3f} | {m['p05']:.3f} | "
                         f"{m['min']:.3f} |")
    lines += ["", "Dice at the masks' 256 px (`python -m pytest tests/test_lungs.py -k dice` checks the test split).",
              ""]
    view, evidence = ckpt.metadata.get("view_check"), ckpt.metadata.get("lung_evidence")
    if view:
        lines += [f"- Frontal-view check (images whose tags do not name the view): the measures "
                  f"{', '.join(view['measures'])} against each frontal population's, set on "
                  f"{view.get('fitted_on', '?')}."]
    if evidence:
        lines += [f"- `quality` caution below lung_evidence {float(evidence['threshold']):.3f}: "
                  f"{evidence.get('rule', '')}."]
    return [*lines, ""]
