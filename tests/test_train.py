"""Training end to end on a small synthetic data set: split, resume, checkpoint metadata."""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from medcam.config import Config, DataConfig, PreprocessConfig, TrainConfig, load_config
from medcam.errors import ConfigError
from medcam.gate.served import ServedModel
from medcam.io import load_image
from medcam.models import Classifier, load_checkpoint, save_checkpoint
from medcam.scoring import ScoreOptions, read_results, score
from medcam.training.data import read_samples, split_by_patient
from medcam.training.modelcard import render_model_card
from medcam.training.train import recalibrate, sampling_weights, train


@pytest.fixture(scope="module")
def toy_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 PNGs of 20 patients; PNEUMONIA images carry a bright blob."""
    root = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(40):
        label = i % 2
        image = rng.normal(90, 20, (80, 72)).clip(0, 255)
        if label:
            yy, xx = np.mgrid[:80, :72]
            cy, cx = rng.integers(20, 60), rng.integers(20, 52)
            image[(yy - cy) ** 2 + (xx - cx) ** 2 < 150] = 230
        name = f"img{i:02d}.png"
        PILImage.fromarray(image.astype(np.uint8)).save(root / name)
        rows.append([name, label, f"p{i // 2 if label else i // 2 + 100}"])
    with open(root / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["file", "label", "patient_id"], *rows])
    return root / "labels.csv"


def _config(csv_path: Path, epochs: int) -> Config:
    return Config(
        preprocess=PreprocessConfig(size=64),
        data=DataConfig(source=str(csv_path), val_fraction=0.25, test_fraction=0.25),
        train=TrainConfig(epochs=epochs, batch_size=8, num_workers=0, patience=5),
    )


def test_split_is_patient_disjoint_and_stratified(toy_csv: Path) -> None:
    samples = read_samples(toy_csv, ("NORMAL", "PNEUMONIA"))
    parts = split_by_patient(samples, [0.5, 0.25, 0.25], seed=0)
    patients = [{s.patient_id for s in part} for part in parts]
    assert sum(len(p) for p in parts) == len(samples)
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    for part in parts:
        assert {s.label for s in part} == {0, 1}


def test_train_resumes_and_writes_a_complete_checkpoint(toy_csv: Path, tmp_path: Path) -> None:
    train(_config(toy_csv, epochs=1), tmp_path, log=lambda _: None)
    first = torch.load(tmp_path / "last.pt", weights_only=True)
    assert first["epoch"] == 0 and len(first["history"]) == 1

    train(_config(toy_csv, epochs=2), tmp_path, log=lambda _: None)  # resumes for one more epoch
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert [h["epoch"] for h in state["history"]] == [1, 2]
    history = json.loads((tmp_path / "history.json").read_text())
    assert len(history) == 2

    ckpt = load_checkpoint(tmp_path / "best.pt")
    meta = ckpt.metadata
    assert ckpt.trained and ckpt.preprocess.size == 64
    assert ckpt.temperature > 0 and 0 <= ckpt.threshold <= 1
    assert len(meta["data"]["sha256"]) == 64
    assert meta["data"]["n_train"] + meta["data"]["n_val"] + meta["data"]["n_test"] == 40
    assert meta["config"]["train"]["epochs"] == 2
    assert {"medcam", "torch", "monai", "python"} <= set(meta["versions"])
    assert meta["training"]["epochs_run"] == 2
    for name in ("train.csv", "val.csv", "test.csv"):
        assert (tmp_path / name).is_file()


def test_resume_with_another_config_is_refused(toy_csv: Path, tmp_path: Path) -> None:
    train(_config(toy_csv, epochs=1), tmp_path, log=lambda _: None)
    other = _config(toy_csv, epochs=1)
    other = dataclasses.replace(other, train=dataclasses.replace(other.train, lr=0.5))
    with pytest.raises(ConfigError, match="another config"):
        train(other, tmp_path, log=lambda _: None)


def test_config_typo_gets_a_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  architecure: densenet121\n")
    with pytest.raises(ConfigError, match="did you mean 'architecture'"):
        load_config(path)
    path.write_text("preprocess:\n  size: 100\n")
    with pytest.raises(ConfigError, match="multiple of 32"):
        load_config(path)
    path.write_text("model:\n  architecture: densenet12\n")
    with pytest.raises(ConfigError, match="Did you mean 'densenet121'"):
        load_config(path)


def test_shipped_config_loads() -> None:
    config = load_config(Path(__file__).parents[1] / "configs" / "pneumonia_densenet121.yaml")
    assert config.model.classes == ("NORMAL", "PNEUMONIA")
    assert config.data.source.endswith("labels.csv")


def _second_population(toy_csv: Path, second: Path, columns: Sequence[str],
                       row_of: Callable[[int, dict[str, str]], list[str]]) -> Path:
    """A second population of the toy set's patients ("b" + id): ``row_of(i, row)`` gives each
    row's file and its ``columns``."""
    with open(toy_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(second, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "label", "patient_id", *columns])
        for i, row in enumerate(rows):
            file, *extra = row_of(i, row)
            writer.writerow([file, row["label"], "b" + row["patient_id"], *extra])
    return second


def _two_populations(toy_csv: Path, tmp_path: Path) -> Config:
    """The toy set as two populations; the second has a view column confounded with the label."""
    def same_file(i: int, row: dict[str, str]) -> list[str]:
        view = "PA" if (row["label"] == "1") == (i % 5 != 0) else "AP"  # 80% confounded
        return [str(toy_csv.parent / row["file"]), view]

    second = _second_population(toy_csv, tmp_path / "second.csv", ["view"], same_file)
    raw = {
        "preprocess": {"size": 64},
        "data": {"sources": [{"name": "children", "source": str(toy_csv), "weight": 1.0},
                             {"name": "adults", "source": str(second), "weight": 3.0,
                              "balance": ["label", "view"]}],
                 "val_fraction": 0.25, "test_fraction": 0.25},
        "train": {"epochs": 1, "batch_size": 8, "num_workers": 0, "samples_per_epoch": 16,
                  "label_smoothing": 0.1, "target_sensitivity": 0.9},
    }
    return Config.from_dict(raw)


def test_sampling_balances_populations_classes_and_views(toy_csv: Path, tmp_path: Path) -> None:
    config = _two_populations(toy_csv, tmp_path)
    samples = [*read_samples(config.data.sources[0].source, config.model.classes, "children"),
               *read_samples(config.data.sources[1].source, config.model.classes, "adults")]
    weights = sampling_weights(samples, config).numpy()
    share = {name: weights[[s.population == name for s in samples]].sum() for name in ("children", "adults")}
    assert share["adults"] == pytest.approx(0.75) and share["children"] == pytest.approx(0.25)
    adult_cells: dict[tuple[int, str], float] = {}
    for s, w in zip(samples, weights, strict=True):
        if s.population == "adults":
            adult_cells[(s.label, s.view)] = adult_cells.get((s.label, s.view), 0.0) + w
    assert len(adult_cells) == 4
    assert np.allclose(list(adult_cells.values()), 0.75 / 4)


def test_multi_population_run_reports_each_population(toy_csv: Path, tmp_path: Path) -> None:
    config = _two_populations(toy_csv, tmp_path)
    train(config, tmp_path / "run", log=lambda _: None)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert {"val_auroc_children", "val_auroc_adults"} <= set(history[0])
    assert history[0]["val_auroc"] == min(history[0]["val_auroc_children"], history[0]["val_auroc_adults"])
    with open(tmp_path / "run" / "val.csv", newline="") as f:
        val = list(csv.DictReader(f))
    assert {row["population"] for row in val} == {"children", "adults"}
    ckpt = load_checkpoint(tmp_path / "run" / "best.pt")
    validation = ckpt.metadata["training"]["validation"]
    assert set(validation) == {"children", "adults"}
    for metrics in validation.values():  # one threshold meets the target in every population
        assert metrics["sensitivity"] >= 0.9
    assert ckpt.class_bias is not None and ckpt.class_bias[0] == 0.0  # Platt scaling


def test_recalibrate_refits_map_and_threshold_on_validation_and_keeps_the_weights(
    toy_csv: Path, tmp_path: Path
) -> None:
    train(_two_populations(toy_csv, tmp_path), tmp_path / "run", log=lambda _: None)
    best, out = tmp_path / "run" / "best.pt", tmp_path / "recalibrated.pt"
    lines: list[str] = []
    model_id = recalibrate(best, tmp_path / "run" / "val.csv", out=out, bias=False, log=lines.append)
    before, after = load_checkpoint(best), load_checkpoint(out)
    assert model_id == after.model_id != before.model_id
    assert after.class_bias is None and after.temperature > 0 and 0 < after.threshold < 1
    record = after.metadata["calibration"]
    assert before.class_bias is not None
    assert record["replaced"] == {"model_id": before.model_id, "temperature": before.temperature,
                                  "class_bias": list(before.class_bias), "threshold": before.threshold,
                                  "population_calibration": False}
    assert set(record["validation"]) == {"children", "adults"} and record["target_sensitivity"] == 0.9
    assert all(m["sensitivity"] >= 0.9 for m in record["validation"].values())
    assert after.metadata["training"] == before.metadata["training"]
    for key, value in before.network.state_dict().items():
        assert torch.equal(after.network.state_dict()[key], value), key
    assert "children: n=" in lines[0] and "threshold" in lines[-1]
    bare = tmp_path / "bare.pt"  # no training config, hence no target sensitivity
    save_checkpoint(bare, before.network, before.model, before.preprocess)
    with pytest.raises(ValueError, match="no target sensitivity"):
        recalibrate(bare, tmp_path / "run" / "val.csv", out=tmp_path / "x.pt")


def _inverted_population(toy_csv: Path, tmp_path: Path) -> Config:
    """The toy set as children and, inverted with a dark band, as adults: two populations that look apart."""
    def inverted(i: int, row: dict[str, str]) -> list[str]:
        pixels = 255 - np.asarray(PILImage.open(toy_csv.parent / row["file"]))
        pixels[:, :24] = 0  # and a dark band down one side
        PILImage.fromarray(pixels.astype(np.uint8)).save(tmp_path / f"inv_{row['file']}")
        return [str(tmp_path / f"inv_{row['file']}")]

    second = _second_population(toy_csv, tmp_path / "inverted.csv", [], inverted)
    raw = {"preprocess": {"size": 64},
           "data": {"sources": [{"name": "children", "source": str(toy_csv)},
                                {"name": "adults", "source": str(second)}],
                    "val_fraction": 0.25, "test_fraction": 0.25},
           "train": {"epochs": 1, "batch_size": 8, "num_workers": 0, "samples_per_epoch": 16,
                     "target_sensitivity": 0.9}}
    return Config.from_dict(raw)


def test_recalibrate_by_population_gives_each_image_its_group_map(toy_csv: Path, tmp_path: Path) -> None:
    from medcam.models.checkpoint import read_payload

    train(_inverted_population(toy_csv, tmp_path), tmp_path / "run", log=lambda _: None)
    run, out = tmp_path / "run", tmp_path / "by_population.pt"
    lines: list[str] = []
    recalibrate(run / "best.pt", run / "val.csv", out=out, groups={"young": ["children"], "old": ["adults"]},
                train=run / "train.csv", log=lines.append)
    ckpt = load_checkpoint(out)
    assert read_payload(Path(ckpt.path), "medcam-checkpoint", 4, "checkpoint")["format_version"] == 4
    populations = ckpt.population_calibration
    assert populations is not None and set(populations.populations) == {"young", "old"}
    record = ckpt.metadata["calibration"]
    assert record["groups"] == {"young": ["children"], "old": ["adults"]} and record["train"] == str(run / "train.csv")
    assert record["validation"]["children"]["calibrated_as"]["young"] == 1.0
    assert record["validation"]["adults"]["calibrated_as"]["old"] == 1.0
    assert any("calibrated as young" in line for line in lines)

    model = ServedModel(str(out))
    samples = read_samples(run / "val.csv", ckpt.model.classes)
    predictions = model.classify([load_image(s.path) for s in samples], batch_size=8)
    by_name = dict(zip(populations.populations, populations.calibrations, strict=True))
    for sample, prediction in zip(samples, predictions, strict=True):
        group = "young" if sample.population == "children" else "old"
        assert prediction.calibration == by_name[group] and prediction.calibration_group == group
        torch.testing.assert_close(prediction.probabilities, by_name[group](prediction.logits[None])[0])
    # the results rows say whose map each image got
    score([Path(s.path) for s in samples], model, ScoreOptions(out=tmp_path / "rows.csv", progress=False, workers=0,
                                                               ignore_intended_use=True))
    groups = {row["path"]: row["calibration"] for row in read_results(tmp_path / "rows.csv") if row["status"] == "ok"}
    assert groups == {str(Path(s.path).resolve()): "young" if s.population == "children" else "old" for s in samples}
    with pytest.raises(ValueError, match="calibrates per population"):
        model.probabilities(predictions[0].logits[None])
    # Grad-CAM's pass gives no pooled features: the model runs them, so the probabilities do not change
    gradcam = model.classify([load_image(samples[0].path)], method="gradcam")[0]
    torch.testing.assert_close(gradcam.probabilities, predictions[0].probabilities, atol=1e-4, rtol=0)

    plain = tmp_path / "plain.pt"  # recalibrating with one map drops the population maps
    recalibrate(out, run / "val.csv", out=plain, log=lambda _: None)
    assert load_checkpoint(plain).population_calibration is None
    assert load_checkpoint(plain).metadata["calibration"]["replaced"]["population_calibration"] is True
    with pytest.raises(ValueError, match="needs the training images"):
        recalibrate(run / "best.pt", run / "val.csv", out=tmp_path / "x.pt", groups={"young": ["children"]})
    with pytest.raises(ValueError, match="adults in no group"):
        recalibrate(run / "best.pt", run / "val.csv", out=tmp_path / "x.pt", groups={"young": ["children"]},
                    train=run / "train.csv", log=lambda _: None)


def test_the_recalibrate_command(toy_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from medcam.cli import main

    train(_two_populations(toy_csv, tmp_path), tmp_path / "run", log=lambda _: None)
    out = tmp_path / "recalibrated.pt"
    val = str(tmp_path / "run" / "val.csv")
    assert main(["recalibrate", "--model", str(tmp_path / "run" / "best.pt"), "--data", val, "--out", str(out)]) == 0
    assert load_checkpoint(out).model_id in capsys.readouterr().out
    bare = tmp_path / "bare.pt"
    before = load_checkpoint(out)
    save_checkpoint(bare, before.network, before.model, before.preprocess)
    assert main(["recalibrate", "--model", str(bare), "--data", val, "--out", str(tmp_path / "x.pt")]) == 1
    assert "no target sensitivity" in capsys.readouterr().err

    children = tmp_path / "children.pt"  # the adults' labels left out of the fit: calibrated and reported
    assert main(["recalibrate", "--model", str(out), "--data", val, "--out", str(children),
                 "--fit-on", "children"]) == 0
    assert "adults (reported, not fitted)" in capsys.readouterr().out
    record = load_checkpoint(children).metadata["calibration"]
    assert record["fitted_on"] == ["children"]
    assert record["validation"]["children"]["fitted"] and not record["validation"]["adults"]["fitted"]
    card = render_model_card(load_checkpoint(children), {}, notes="")
    assert "the labels of adults were left out of the fit" in card
    assert "sensitivity >= 0.9 in the validation splits of children (not adults)" in card
    assert main(["recalibrate", "--model", str(out), "--data", val, "--out", str(tmp_path / "x.pt"),
                 "--fit-on", "elderly"]) == 1
    assert "elderly to fit on are not in the data" in capsys.readouterr().err


def test_init_from_checks_the_model_id(toy_csv: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="init_model_id"):
        TrainConfig(init_from="some.pt")
    config = _config(toy_csv, epochs=1)
    train(config, tmp_path / "first", log=lambda _: None)
    wrong = dataclasses.replace(config, train=dataclasses.replace(
        config.train, init_from=str(tmp_path / "first" / "best.pt"), init_model_id="densenet121-000000000000"))
    with pytest.raises(ConfigError, match=r"not train\.init_model_id"):
        train(wrong, tmp_path / "second", log=lambda _: None)


def test_adult_pediatric_config_loads() -> None:
    config = load_config(Path(__file__).parents[1] / "configs" / "pneumonia_adult_pediatric.yaml")
    assert [d.name for d in config.data.datasets] == ["pediatric", "adult"]
    assert config.data.datasets[1].balance == ("label", "view")
    with pytest.raises(ConfigError, match="either source or sources"):
        DataConfig(source="a.csv", sources=config.data.sources)


def test_moving_average_is_what_is_validated_saved_and_resumed(toy_csv: Path, tmp_path: Path) -> None:
    config = _config(toy_csv, epochs=1)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, ema=0.9, erase=1.0))
    train(config, tmp_path, log=lambda _: None)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    averaged = {k.removeprefix("module."): v for k, v in state["averaged"].items() if k.startswith("module.")}
    kept = torch.load(tmp_path / "best_weights.pt", weights_only=True)["model"]
    # the saved best is the average, not the last step's weights
    assert all(torch.equal(kept[k], averaged[k]) for k in kept)
    assert any(not torch.equal(kept[k], state["model"][k]) for k in kept if kept[k].is_floating_point())
    assert int(state["averaged"]["n_averaged"]) == 2  # 20 training images, batches of 8, drop_last

    config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=2))
    train(config, tmp_path, log=lambda _: None)
    assert int(torch.load(tmp_path / "last.pt", weights_only=True)["averaged"]["n_averaged"]) == 4
    card = render_model_card(load_checkpoint(tmp_path / "best.pt"), {}, notes="")
    assert "random rectangles erased (probability 1.0)" in card
    assert "moving average of the weights (decay 0.9 per step)" in card


def test_a_run_started_before_new_options_resumes(toy_csv: Path, tmp_path: Path) -> None:
    train(_config(toy_csv, epochs=1), tmp_path, log=lambda _: None)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    for key in ("ema", "erase"):  # as a run from before these options existed wrote it
        del state["config"]["train"][key]
    del state["config"]["model"]["output_stride"]
    torch.save(state, tmp_path / "last.pt")
    train(_config(toy_csv, epochs=2), tmp_path, log=lambda _: None)
    assert len(torch.load(tmp_path / "last.pt", weights_only=True)["history"]) == 2


def test_output_stride_16_trains_from_a_stride_32_checkpoint(toy_csv: Path, tmp_path: Path) -> None:
    config = _config(toy_csv, epochs=1)
    train(config, tmp_path / "first", log=lambda _: None)
    start = load_checkpoint(tmp_path / "first" / "best.pt")
    finer = dataclasses.replace(config, model=dataclasses.replace(config.model, output_stride=16),
                                train=dataclasses.replace(config.train, init_from=start.path,
                                                          init_model_id=start.model_id))
    train(finer, tmp_path / "second", log=lambda _: None)
    trained = load_checkpoint(tmp_path / "second" / "best.pt")
    assert trained.model.output_stride == 16
    with torch.inference_mode():
        maps = Classifier(trained).forward(torch.zeros(1, 1, 64, 64)).maps
    assert tuple(maps.shape[-2:]) == (4, 4)  # 64 / 16
    assert "on a 4x4 grid from the same forward pass (output stride 16" in render_model_card(trained, {}, notes="")
    assert "on a 2x2 grid from the same forward pass." in render_model_card(start, {}, notes="")


@pytest.mark.parametrize("field, value", [("ema", 1.0), ("ema", -0.1), ("erase", 1.5)])
def test_out_of_range_averaging_and_erasing_are_refused(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"train.{field}"):
        TrainConfig(**{field: value})
