"""medcam.models: single-pass CAM, Grad-CAM / Grad-CAM++ / occlusion, grid geometry, checkpoints."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from monai.visualize import CAM as MonaiCAM
from monai.visualize import GradCAM as MonaiGradCAM
from monai.visualize.visualizer import default_upsampler
from torch import nn

from medcam.config import ModelConfig, PreprocessConfig
from medcam.errors import CheckpointError, ConfigError, UnsupportedModelError
from medcam.io.image import Image
from medcam.models import (
    CAMMethod,
    Classifier,
    GradCAM,
    GradCAMpp,
    GridTransform,
    OcclusionCAM,
    SinglePassCAM,
    convert_to_cam,
    load_checkpoint,
    maps_to_source,
    normalise_maps,
    save_checkpoint,
)
from medcam.models.calibration import Calibration
from medcam.models.checkpoint import resave_checkpoint
from medcam.models.grid import resize_to_model
from medcam.models.networks import build_network

# MONAI's occlusion code indexes with lists, which torch warns about; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Using a non-tuple sequence:UserWarning")


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads, and OpenMP threads spinning while
    another job holds the other cores made a DenseNet121 forward ~100x slower here."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _images(shape: tuple[int, ...], batch: int = 2, seed: int = 0,
            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1, *shape, generator=generator, dtype=dtype)


def _hook_state(network: nn.Module) -> dict[tuple[str, str], int]:
    """Number of registered hooks of every kind on every module (``_*hooks*`` dicts)."""
    return {
        (name, attr): len(value)
        for name, module in network.named_modules()
        for attr, value in vars(module).items()
        if "hook" in attr and isinstance(value, dict)
    }


def _forward_backward_hooks(network: nn.Module) -> list[str]:
    """Modules carrying forward or backward hooks (``_full_backward_hooks`` on older torch)."""
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
             "_full_backward_hooks")
    return [f"{name}.{kind}" for name, module in network.named_modules()
            for kind in kinds if getattr(module, kind, None)]


def _inplace_flags(network: nn.Module) -> dict[str, bool]:
    return {name: m.inplace for name, m in network.named_modules() if hasattr(m, "inplace")}


def _plain_logits(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return network(x)  # type: ignore[no-any-return]


# --- single-pass CAM -------------------------------------------------------------------------

GAP_NETWORKS = [
    ("densenet2d", (64, 64)),
    ("resnet18_2d", (64, 64)),
    ("resnet18_3d", (32, 32, 32)),
    ("seresnet50_2d", (64, 64)),
    ("efficientnet_2d", (64, 64)),
    ("efficientnet_3d", (64, 64, 64)),
]


@pytest.mark.parametrize(("name", "shape"), GAP_NETWORKS, ids=[n for n, _ in GAP_NETWORKS])
def test_single_pass_logits_and_weights_equal_the_original(
    name: str, shape: tuple[int, ...], request: pytest.FixtureRequest
) -> None:
    network = request.getfixturevalue(name)
    x = _images(shape)
    cam = convert_to_cam(network, probe_shape=shape)
    reference = _plain_logits(network, x)
    with torch.inference_mode():
        out = cam(x)
    assert reference.abs().max() > 0.05, "logits near 0 would make the comparison vacuous"
    assert out.logits.shape == reference.shape
    assert (out.logits - reference).abs().max() <= 1e-5
    assert out.maps.shape[:2] == reference.shape and out.maps.ndim == 2 + len(shape)
    assert math.prod(out.maps.shape[2:]) > 1, "a one-position grid would make CAM trivial"
    original, converted = network.state_dict(), cam.network.state_dict()
    assert list(converted) == list(original)
    assert all(torch.equal(converted[k], v) for k, v in original.items())
    assert list(cam.state_dict()) == [f"network.{k}" for k in original]


def test_single_pass_batch_independence_under_inference_mode(densenet2d: nn.Module) -> None:
    cam = convert_to_cam(densenet2d)
    x = _images((64, 64), batch=4)
    with torch.inference_mode():
        batch = cam(x)
        alone = [cam(x[i:i + 1]) for i in range(4)]
    assert batch.maps.is_inference()
    for i, single in enumerate(alone):
        torch.testing.assert_close(single.maps, batch.maps[i:i + 1], atol=1e-5, rtol=0)
        torch.testing.assert_close(single.logits, batch.logits[i:i + 1], atol=1e-5, rtol=0)


def test_served_classifier_runs_channels_last_on_cpu_with_the_same_outputs(
    tmp_path: Path, densenet2d: nn.Module
) -> None:
    path = tmp_path / "model.pt"
    save_checkpoint(path, densenet2d, ModelConfig(), PreprocessConfig(size=64))
    classifier = Classifier(str(path))
    conv = next(m for m in classifier.cam.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 1
                and m.kernel_size != (1, 1))
    assert classifier.memory_format == torch.channels_last
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()  # really converted, not a 1x1 layout that is both
    x = _images((64, 64), batch=3)
    served = classifier.forward(x)
    with torch.inference_mode():
        plain = convert_to_cam(densenet2d)(x)
    torch.testing.assert_close(served.logits, plain.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(served.maps, plain.maps, atol=1e-5, rtol=0)


def test_single_pass_equals_monai_cam(densenet2d: nn.Module) -> None:
    """Compared: (1) MONAI ``CAM.compute_map`` (raw, feature grid, bias included) against our
    maps; (2) MONAI's bilinear upsampling to the input size with identity post-processing,
    against the same upsampler and against ``maps_to_source`` with an identity grid
    transform; (3) MONAI's default normaliser, which is ``1 - minmax`` (it flips)."""
    x = _images((96, 96))  # a 3 x 3 feature grid
    ours = convert_to_cam(densenet2d)(x)
    kwargs = {"target_layers": "class_layers.relu", "fc_layers": "class_layers.out"}
    monai_raw = MonaiCAM(copy.deepcopy(densenet2d), postprocessing=lambda m: m, **kwargs)
    monai_default = MonaiCAM(copy.deepcopy(densenet2d), **kwargs)
    identity = GridTransform.fit((96, 96), 96, "stretch")
    assert identity.scale == (1.0, 1.0) and identity.shift == (0.0, 0.0)
    with torch.no_grad():
        for k in range(2):
            idx = torch.full((2,), k)
            ours_k = ours.maps[:, k:k + 1]
            torch.testing.assert_close(ours_k, monai_raw.compute_map(x, class_idx=idx),
                                       atol=1e-5, rtol=0)
            upsampled = monai_raw(x, class_idx=idx)
            assert upsampled.shape == (2, 1, 96, 96)
            torch.testing.assert_close(default_upsampler((96, 96))(ours_k), upsampled,
                                       atol=1e-5, rtol=0)
            torch.testing.assert_close(maps_to_source(ours_k, identity), upsampled,
                                       atol=1e-5, rtol=0)
            flipped = 1 - normalise_maps(default_upsampler((96, 96))(ours_k), "minmax")
            torch.testing.assert_close(flipped, monai_default(x, class_idx=idx),
                                       atol=1e-5, rtol=0)


def test_mlp_head_is_refused_and_inplace_conversion_restored(mlp_cnn2d: nn.Module) -> None:
    with pytest.raises(UnsupportedModelError, match="not a per-position affine map"):
        convert_to_cam(mlp_cnn2d, probe_shape=(32, 32))
    network = copy.deepcopy(mlp_cnn2d)
    x = _images((32, 32))
    before = _plain_logits(network, x)
    with pytest.raises(UnsupportedModelError, match="not a per-position affine map"):
        convert_to_cam(network, inplace=True, probe_shape=(32, 32))
    assert isinstance(network.get_submodule("head.0"), nn.AdaptiveAvgPool2d)
    torch.testing.assert_close(_plain_logits(network, x), before, atol=0, rtol=0)


def test_network_without_gap_is_refused(maxpool_cnn2d: nn.Module) -> None:
    with pytest.raises(UnsupportedModelError, match="no global average pooling"):
        convert_to_cam(maxpool_cnn2d, probe_shape=(32, 32))


def test_convert_does_not_modify_the_original(gap_cnn2d: nn.Module) -> None:
    network = copy.deepcopy(gap_cnn2d).train()
    x = _images((32, 32))
    state = {k: v.clone() for k, v in network.state_dict().items()}
    modules = [(name, type(m)) for name, m in network.named_modules()]
    cam = convert_to_cam(network, probe_shape=(32, 32))
    assert cam.network is not network
    assert network.training and all(m.training for m in network.modules())
    assert [(name, type(m)) for name, m in network.named_modules()] == modules
    assert all(torch.equal(network.state_dict()[k], v) for k, v in state.items())
    torch.testing.assert_close(_plain_logits(network, x), _plain_logits(cam, x).logits,
                               atol=1e-6, rtol=0)
    assert convert_to_cam(network, inplace=True, probe_shape=(32, 32)).network is network


def test_every_method_is_a_cam_method(gap_cnn2d: nn.Module) -> None:
    methods = [convert_to_cam(gap_cnn2d, probe_shape=(32, 32)),
               GradCAM(gap_cnn2d, "features.3"), GradCAMpp(gap_cnn2d, "features.3"),
               OcclusionCAM(gap_cnn2d, mask_size=8)]
    assert isinstance(methods[0], SinglePassCAM)
    assert all(isinstance(m, CAMMethod) for m in methods)
    with pytest.raises(TypeError):
        CAMMethod()  # type: ignore[abstract]


# --- grid geometry ---------------------------------------------------------------------------

# source shape, mode, expected scale and shift onto a 64 x 64 grid, worked out by hand:
# letterbox 300 x 200: factor 64/300, cols round(200 * 64/300) = 43, shift (64 - 43) // 2 = 10;
# letterbox 97 x 211: factor 64/211, rows round(97 * 64/211) = 29, shift (64 - 29) // 2 = 17.
GRIDS = [
    ((300, 200), "stretch", (64 / 300, 64 / 200), (0.0, 0.0)),
    ((97, 211), "stretch", (64 / 97, 64 / 211), (0.0, 0.0)),
    ((300, 200), "letterbox", (64 / 300, 43 / 200), (0.0, 10.0)),
    ((97, 211), "letterbox", (29 / 97, 64 / 211), (17.0, 0.0)),
]
GRID_IDS = [f"{mode}-{s[0]}x{s[1]}" for s, mode, _, _ in GRIDS]


@pytest.mark.parametrize(("source", "mode", "scale", "shift"), GRIDS, ids=GRID_IDS)
def test_fit_and_resize_place_the_content(source: tuple[int, int], mode: str,
                                          scale: tuple[float, float],
                                          shift: tuple[float, float]) -> None:
    transform = GridTransform.fit(source, 64, mode)  # type: ignore[arg-type]
    assert transform.model_shape == (64, 64)
    assert transform.scale == pytest.approx(scale, abs=1e-12)
    assert transform.shift == shift
    resized = resize_to_model(torch.ones(1, *source), transform)
    assert resized.shape == (1, 64, 64)
    rows = slice(int(shift[0]), int(shift[0]) + round(source[0] * scale[0]))
    cols = slice(int(shift[1]), int(shift[1]) + round(source[1] * scale[1]))
    content = torch.zeros(64, 64, dtype=torch.bool)
    content[rows, cols] = True
    torch.testing.assert_close(resized[0][content], torch.ones(int(content.sum())))
    assert torch.all(resized[0][~content] == 0)


@pytest.mark.parametrize(("source", "mode", "scale", "shift"), GRIDS, ids=GRID_IDS)
@pytest.mark.parametrize("grid", [64, 8])
def test_linear_ramp_maps_back_to_source_centres_exactly(
    source: tuple[int, int], mode: str, scale: tuple[float, float],
    shift: tuple[float, float], grid: int
) -> None:
    """A map that is ``a * row + b * col + c`` at its cell centres (model coordinates), on the
    model grid or a coarser feature grid, sampled at every source pixel centre: bilinear
    interpolation of a linear function is exact, and beyond the outermost cell centres the
    edge value is kept."""
    transform = GridTransform.fit(source, 64, mode)  # type: ignore[arg-type]
    a, b, c = 0.37, -1.3, 2.0
    centres = (torch.arange(grid, dtype=torch.float64) + 0.5) * (64 / grid)
    ramp = a * centres[:, None] + b * centres[None, :] + c
    out = maps_to_source(ramp[None, None], transform)[0, 0]
    first, last = float(centres[0]), float(centres[-1])
    rows = ((torch.arange(source[0], dtype=torch.float64) + 0.5) * scale[0] + shift[0])
    cols = ((torch.arange(source[1], dtype=torch.float64) + 0.5) * scale[1] + shift[1])
    expected = a * rows.clamp(first, last)[:, None] + b * cols.clamp(first, last)[None, :] + c
    assert out.shape == source
    torch.testing.assert_close(out, expected, atol=1e-9, rtol=0)


@pytest.mark.parametrize(("source", "mode", "scale", "shift"), GRIDS, ids=GRID_IDS)
def test_source_ramp_round_trips_through_the_model_grid(
    source: tuple[int, int], mode: str, scale: tuple[float, float], shift: tuple[float, float]
) -> None:
    """resize_to_model then maps_to_source brings a source ramp back to within 0.1 source
    pixel in the interior (the antialiasing filter is not exactly linear-preserving); a
    half-pixel convention error would be off by 0.5 / scale, several source pixels."""
    transform = GridTransform.fit(source, 64, mode)  # type: ignore[arg-type]
    slope_r, slope_c = 0.01, 0.02
    r = torch.arange(source[0], dtype=torch.float32) + 0.5
    c = torch.arange(source[1], dtype=torch.float32) + 0.5
    image = slope_r * r[:, None] + slope_c * c[None, :]
    back = maps_to_source(resize_to_model(image[None], transform)[None], transform)[0, 0]
    margin = 12
    error = (back - image)[margin:-margin, margin:-margin].abs()
    assert error.max() <= 0.1 * max(slope_r, slope_c)


@pytest.mark.parametrize(("source", "mode", "scale", "shift"), GRIDS, ids=GRID_IDS)
def test_one_hot_feature_cell_lands_on_its_source_pixels(
    source: tuple[int, int], mode: str, scale: tuple[float, float], shift: tuple[float, float]
) -> None:
    transform = GridTransform.fit(source, 64, mode)  # type: ignore[arg-type]
    grid, cell = 8, (3, 4)  # cells of 8 model pixels; this one lies inside every content area
    width = 64 / grid
    maps = torch.zeros(1, 1, grid, grid, dtype=torch.float64)
    maps[0, 0, cell[0], cell[1]] = 1.0
    out = maps_to_source(maps, transform)[0, 0]
    centre_model = torch.tensor([(cell[0] + 0.5) * width, (cell[1] + 0.5) * width],
                                dtype=torch.float64)
    centre_source = transform.model_to_source(centre_model)
    peak = torch.tensor(divmod(int(out.argmax()), source[1]), dtype=torch.float64)
    assert torch.all((peak + 0.5 - centre_source).abs() <= 0.5 + 1e-9)
    # Every lit source pixel is within one cell of the cell centre, and its value is the
    # bilinear weight of the cell there.
    rows = (torch.arange(source[0], dtype=torch.float64) + 0.5) * scale[0] + shift[0]
    cols = (torch.arange(source[1], dtype=torch.float64) + 0.5) * scale[1] + shift[1]
    wr = (1 - (rows - centre_model[0]).abs() / width).clamp_min(0)
    wc = (1 - (cols - centre_model[1]).abs() / width).clamp_min(0)
    torch.testing.assert_close(out, wr[:, None] * wc[None, :], atol=1e-9, rtol=0)
    assert out.max() > 0.5


def test_normalise_maps() -> None:
    negative = -torch.rand(4, 4, generator=torch.Generator().manual_seed(0)) - 0.1
    mixed = torch.linspace(-1, 3, 16).reshape(4, 4)
    maps = torch.stack([negative, mixed])[None]
    assert normalise_maps(maps, "raw") is maps
    positive = normalise_maps(maps, "positive")
    assert torch.all(positive[0, 0] == 0), "no positive evidence must stay 0"
    torch.testing.assert_close(positive[0, 1], mixed.clamp_min(0) / 3)
    minmax = normalise_maps(maps, "minmax")
    assert minmax[0, 0].max() == 1 and minmax[0, 0].min() == 0, "minmax inflates it"
    assert torch.all(normalise_maps(torch.full((1, 1, 3, 3), 2.0), "minmax") == 0)
    with pytest.raises(ValueError, match="'minmax'"):
        normalise_maps(maps, "max")  # type: ignore[arg-type]


# --- checkpoints -----------------------------------------------------------------------------

MODEL = ModelConfig(architecture="densenet121", classes=("NORMAL", "PNEUMONIA"))
PREPROCESS = PreprocessConfig(size=64, resize="letterbox", intensity="unit")


def test_checkpoint_round_trip_float32(tmp_path: Path, densenet2d: nn.Module) -> None:
    path = tmp_path / "model.pt"
    model_id = save_checkpoint(path, densenet2d, MODEL, PREPROCESS, temperature=1.7,
                               threshold=0.31, extra={"note": "test"})
    assert re.fullmatch(r"densenet121-[0-9a-f]{12}", model_id)
    assert model_id.endswith(hashlib.sha256(path.read_bytes()).hexdigest()[:12])
    loaded = load_checkpoint(path)
    assert loaded.model_id == model_id and loaded.path == str(path)
    assert loaded.model == MODEL and loaded.preprocess == PREPROCESS
    assert (loaded.temperature, loaded.threshold, loaded.trained) == (1.7, 0.31, True)
    assert loaded.metadata["note"] == "test"
    assert not loaded.network.training
    state = loaded.network.state_dict()
    assert list(state) == list(densenet2d.state_dict())
    for key, value in densenet2d.state_dict().items():
        assert state[key].dtype == value.dtype and torch.equal(state[key], value), key
    changed = save_checkpoint(path, densenet2d, MODEL, PREPROCESS, temperature=1.7,
                              threshold=0.5)
    assert changed != model_id and load_checkpoint(path).model_id == changed


def test_checkpoint_round_trip_float16(tmp_path: Path, densenet2d: nn.Module) -> None:
    full, half = tmp_path / "full.pt", tmp_path / "half.pt"
    save_checkpoint(full, densenet2d, MODEL, PREPROCESS)
    save_checkpoint(half, densenet2d, MODEL, PREPROCESS, half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    state = load_checkpoint(half).network.state_dict()
    for key, value in densenet2d.state_dict().items():
        if not value.is_floating_point():
            assert torch.equal(state[key], value), key
            continue
        assert state[key].dtype == torch.float32
        assert torch.equal(state[key], value.half().float()), key
        # within fp16 rounding: half an ulp (2^-11 relative), or subnormal spacing near 0
        assert torch.all((state[key] - value).abs() <= value.abs() * 2**-11 + 2**-24), key


def test_checkpoint_with_a_class_bias_is_format_2_and_calibrates_with_it(
    tmp_path: Path, densenet2d: nn.Module, rg1: Image
) -> None:
    plain, platt = tmp_path / "plain.pt", tmp_path / "platt.pt"
    save_checkpoint(plain, densenet2d, MODEL, PREPROCESS, temperature=1.5)
    save_checkpoint(platt, densenet2d, MODEL, PREPROCESS, temperature=1.5, class_bias=(0.0, 0.7))
    assert torch.load(plain, weights_only=True)["format_version"] == 1, "older medcam still reads it"
    assert torch.load(platt, weights_only=True)["format_version"] == 2, "older medcam refuses it"
    assert load_checkpoint(plain).class_bias is None
    loaded = load_checkpoint(platt)
    assert loaded.class_bias == (0.0, 0.7) and loaded.temperature == 1.5
    classifier = Classifier(loaded)
    x = _images((64, 64), batch=2)
    logits = classifier.forward(x).logits
    expected = torch.sigmoid((logits[:, 1] - logits[:, 0]) / 1.5 + 0.7)
    torch.testing.assert_close(classifier.probabilities(logits)[:, 1], expected)
    prediction = classifier.classify([rg1])[0]
    margin = float(prediction.logits[1] - prediction.logits[0])
    assert prediction.calibration == loaded.calibration
    assert prediction.positive_probability == pytest.approx(1 / (1 + math.exp(-(margin / 1.5 + 0.7))), abs=1e-6)
    with pytest.raises(ValueError, match="one value per class"):
        save_checkpoint(tmp_path / "bad.pt", densenet2d, MODEL, PREPROCESS, class_bias=(0.5,))


def test_checkpoint_refuses_a_newer_format_and_a_malformed_bias(tmp_path: Path, densenet2d: nn.Module) -> None:
    path = tmp_path / "model.pt"
    save_checkpoint(path, densenet2d, MODEL, PREPROCESS, class_bias=(0.0, 0.2))
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "format_version": 5}, tmp_path / "newer.pt")
    with pytest.raises(CheckpointError, match="format version 5 is newer"):
        load_checkpoint(tmp_path / "newer.pt")
    payload["metadata"]["class_bias"] = [0.0, 0.2, 0.4]
    torch.save(payload, tmp_path / "three.pt")
    with pytest.raises(CheckpointError, match="class_bias has 3 values for 2 classes"):
        load_checkpoint(tmp_path / "three.pt")
    payload["metadata"]["class_bias"] = [0.0, 0.2]
    populations = {"version": 1, "populations": ["a", "b"], "temperature": [1.0, 2.0],
                   "class_bias": [[0.0, 0.1], [0.0, 0.2, 0.3]], "coef": torch.zeros(2, 1024),
                   "intercept": torch.zeros(2)}
    torch.save({**payload, "metadata": {**payload["metadata"], "population_calibration": populations}},
               tmp_path / "populations.pt")
    with pytest.raises(CheckpointError, match="a population's class_bias has 3 values for 2 classes"):
        load_checkpoint(tmp_path / "populations.pt")
    populations["class_bias"] = [[0.0, 0.1], [0.0, 0.2]]
    torch.save({**payload, "format_version": 4,
                "metadata": {**payload["metadata"], "population_calibration": populations}}, tmp_path / "ok.pt")
    assert load_checkpoint(tmp_path / "ok.pt").population_calibration is not None


def test_output_stride_16_halves_the_cam_cells_with_the_same_weights(tmp_path: Path, densenet2d: nn.Module) -> None:
    finer = dataclasses.replace(MODEL, output_stride=16)
    network = build_network(finer)
    network.load_state_dict(densenet2d.state_dict())  # no weight added or reshaped
    x = _images((128, 128))
    coarse, fine = convert_to_cam(densenet2d), convert_to_cam(network)  # each checked against its network
    with torch.inference_mode():
        assert tuple(coarse(x).maps.shape) == (2, 2, 4, 4)
        assert tuple(fine(x).maps.shape) == (2, 2, 8, 8)
    plain, strided = tmp_path / "plain.pt", tmp_path / "strided.pt"
    save_checkpoint(plain, densenet2d, MODEL, PREPROCESS)
    save_checkpoint(strided, network, finer, PREPROCESS)
    payload = torch.load(plain, weights_only=True)
    assert payload["format_version"] == 1 and "output_stride" not in payload["metadata"]["model"], \
        "a medcam without output_stride still reads stride-32 files"
    assert torch.load(strided, weights_only=True)["format_version"] == 3, "and refuses stride-16 ones"
    loaded = load_checkpoint(strided)
    assert loaded.model.output_stride == 16 and load_checkpoint(plain).model.output_stride == 32
    resave_checkpoint(strided, out=tmp_path / "platt.pt", calibration=Calibration(1.2, (0.0, 0.3)))
    assert torch.load(tmp_path / "platt.pt", weights_only=True)["format_version"] == 3
    assert load_checkpoint(tmp_path / "platt.pt").model.output_stride == 16
    with torch.inference_mode():
        torch.testing.assert_close(loaded.network(x), network.eval()(x))


@pytest.mark.parametrize("dims", [2, 3])
def test_the_dilated_last_block_sees_what_the_pooled_one_saw(dims: int) -> None:
    """On a grid twice as fine, the dilated block of a stride-16 network computes exactly what
    the stride-32 block computes, cell for cell: block16(upsampled x) == upsampled block32(x)."""
    torch.manual_seed(dims)
    coarse = build_network(dataclasses.replace(MODEL, spatial_dims=dims))
    for module in coarse.modules():  # non-trivial normalisation, so that every step matters
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    fine = build_network(dataclasses.replace(MODEL, spatial_dims=dims, output_stride=16))
    fine.load_state_dict(coarse.state_dict())
    coarse.eval(), fine.eval()
    assert isinstance(fine.features.transition3.pool, nn.Identity)
    x = torch.randn(1, 512, *([5] * dims))
    up = nn.Upsample(scale_factor=2, mode="nearest")
    with torch.inference_mode():
        expected = up(coarse.features.denseblock4(x))
        torch.testing.assert_close(fine.features.denseblock4(up(x)), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("fields", "message"), [
    ({"output_stride": 8}, "must be one of"),
    ({"architecture": "resnet18", "output_stride": 16}, "densenet121 only"),
])
def test_unsupported_output_strides_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**fields)  # type: ignore[arg-type]


def test_resave_checkpoint_changes_the_calibration_and_keeps_the_rest(tmp_path: Path, densenet2d: nn.Module) -> None:
    path, out = tmp_path / "model.pt", tmp_path / "recalibrated.pt"
    first = save_checkpoint(path, densenet2d, MODEL, PREPROCESS, temperature=0.6, threshold=0.27, half=True,
                            extra={"training": {"best_epoch": 3}})
    second = resave_checkpoint(path, out=out, calibration=Calibration(0.8, (0.0, 0.5)), threshold=0.45,
                               updates={"calibration": {"n": 10}})
    assert second != first and load_checkpoint(path).model_id == first, "the source is left alone"
    old, new = load_checkpoint(path), load_checkpoint(out)
    assert (new.temperature, new.class_bias, new.threshold) == (0.8, (0.0, 0.5), 0.45)
    assert new.metadata["training"] == {"best_epoch": 3} and new.metadata["calibration"] == {"n": 10}
    stored = torch.load(out, weights_only=True)["state_dict"]
    assert all(v.dtype == torch.float16 for v in stored.values() if v.is_floating_point()), "float16 stays"
    for key, value in old.network.state_dict().items():
        assert torch.equal(new.network.state_dict()[key], value), key
    kept = resave_checkpoint(out, out=tmp_path / "kept.pt", updates={"note": 1})
    assert load_checkpoint(tmp_path / "kept.pt").calibration == Calibration(0.8, (0.0, 0.5)) and kept
    with pytest.raises(CheckpointError, match="does not change class_bias"):
        resave_checkpoint(out, out=tmp_path / "x.pt", updates={"class_bias": [0.0, 1.0]})
    with pytest.raises(CheckpointError, match="give out="):
        resave_checkpoint("bundled", calibration=Calibration(1.0))


class _Arbitrary:
    """A custom object; loading it needs an unpickler that runs arbitrary code."""


EXECUTED: list[str] = []


def _record(message: str) -> None:
    EXECUTED.append(message)


class _RunsCodeWhenUnpickled:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return _record, ("unpickling ran code",)


def test_checkpoint_refuses_files_that_are_not_medcam_checkpoints(tmp_path: Path) -> None:
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, other)
    with pytest.raises(CheckpointError, match="not a medcam checkpoint"):
        load_checkpoint(other)
    noise = tmp_path / "noise.pt"
    noise.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8,
                                    generator=torch.Generator().manual_seed(0)).numpy().tobytes())
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(noise)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize("payload", [_Arbitrary(), _RunsCodeWhenUnpickled()],
                         ids=["custom-class", "reduce-runs-code"])
def test_checkpoint_load_is_weights_only(tmp_path: Path, payload: object) -> None:
    path = tmp_path / "unsafe.pt"
    torch.save({"format": "medcam-checkpoint", "format_version": 1, "state_dict": {},
                "metadata": {"model": {}, "preprocess": {}, "x": payload}}, path)
    EXECUTED.clear()
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)
    assert EXECUTED == []


# --- Grad-CAM, Grad-CAM++, occlusion ---------------------------------------------------------

GRADIENT_METHODS = [GradCAM, GradCAMpp]
# fixture, target layer, input shape, expected map shape (per image and class)
GRADIENT_CASES = [
    ("densenet2d", "class_layers.relu", (64, 64), (2, 2)),
    ("mlp_cnn2d", "features.3", (32, 32), (16, 16)),
    ("mlp_cnn3d", "features.3", (16, 16, 16), (8, 8, 8)),
]


@pytest.mark.parametrize("method", GRADIENT_METHODS, ids=lambda m: m.__name__)
@pytest.mark.parametrize(("name", "layer", "shape", "grid"), GRADIENT_CASES,
                         ids=[c[0] for c in GRADIENT_CASES])
def test_gradient_cam_shapes_logits_and_finite_maps(
    method: type[GradCAM], name: str, layer: str, shape: tuple[int, ...],
    grid: tuple[int, ...], request: pytest.FixtureRequest
) -> None:
    network = request.getfixturevalue(name)
    x = _images(shape, batch=2)
    out = method(network, layer)(x)
    reference = _plain_logits(network, x)
    k = reference.shape[1]
    assert out.logits.shape == (2, k) and out.maps.shape == (2, k, *grid)
    torch.testing.assert_close(out.logits, reference, atol=1e-5, rtol=0)
    assert torch.isfinite(out.maps).all() and (out.maps >= 0).all()
    assert not out.maps.requires_grad and out.maps.grad_fn is None
    if name != "densenet2d":  # the untrained DenseNet has no positive evidence at 64 x 64
        assert (out.maps.flatten(2).amax(-1) > 0).any()


@pytest.mark.parametrize("method", GRADIENT_METHODS, ids=lambda m: m.__name__)
def test_gradient_cam_batch_independence_and_inference_mode(
    method: type[GradCAM], mlp_cnn2d: nn.Module
) -> None:
    """Batch of 4 on a 4 x 4 grid: MONAI's own GradCAMpp broadcasts the class score along the
    last spatial axis there, so image i's map would depend on the others."""
    explain = method(mlp_cnn2d, "features.3")
    x = _images((8, 8), batch=4)
    batch = explain(x)
    assert batch.maps.shape == (4, 3, 4, 4) and batch.maps.amax() > 0
    for i in range(4):
        torch.testing.assert_close(explain(x[i:i + 1]).maps, batch.maps[i:i + 1],
                                   atol=1e-6, rtol=1e-5)
    with torch.inference_mode():
        inside = explain(x)
    torch.testing.assert_close(inside.maps, batch.maps, atol=0, rtol=0)
    torch.testing.assert_close(inside.logits, batch.logits, atol=0, rtol=0)


def test_monai_gradcam_leaks_hooks_and_inplace_which_the_check_detects(
    densenet2d: nn.Module
) -> None:
    """The known MONAI behaviour the wrappers guard against, and proof the checks can fail."""
    victim = copy.deepcopy(densenet2d)
    assert _forward_backward_hooks(victim) == [] and victim.class_layers.relu.inplace
    MonaiGradCAM(victim, target_layers="class_layers.relu")(_images((64, 64), batch=1))
    assert _forward_backward_hooks(victim) != []
    assert not victim.class_layers.relu.inplace


class _FailsOnSecondCall(nn.Module):
    """Wraps a network; its second forward raises, i.e. while explaining the second class."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("failure while explaining class 1")
        return self.network(x)  # type: ignore[no-any-return]


@pytest.mark.parametrize("method", GRADIENT_METHODS, ids=lambda m: m.__name__)
def test_gradient_cam_leaves_the_network_untouched(
    method: type[GradCAM], densenet2d: nn.Module
) -> None:
    network = copy.deepcopy(densenet2d)
    hooks, inplace = _hook_state(network), _inplace_flags(network)
    assert any(inplace.values()), "DenseNet121's in-place ReLUs make this test meaningful"
    explain = method(network, "class_layers.relu")
    explain(_images((64, 64), batch=1))
    with pytest.raises(RuntimeError, match="channels"):  # raised inside MONAI's forward pass
        explain(torch.rand(1, 3, 64, 64))
    assert _hook_state(network) == hooks and _forward_backward_hooks(network) == []
    assert _inplace_flags(network) == inplace
    assert not explain._hooks.activations and not explain._hooks.gradients  # nothing kept

    failing = _FailsOnSecondCall(network)
    explain = method(failing, "network.class_layers.relu")
    with pytest.raises(RuntimeError, match="class 1"):
        explain(_images((64, 64), batch=1))
    assert failing.calls == 0, "the wrapper must run its own copy"
    assert _hook_state(network) == hooks and _inplace_flags(network) == inplace
    assert not explain._hooks.activations and explain._hooks.logits is None


def test_gradcam_on_a_gap_head_is_the_bias_free_cam(gap_cnn2d: nn.Module) -> None:
    """Grad-CAM weights on a GAP -> linear head are w_k / P (P positions), so
    Grad-CAM_k = ReLU(CAM_k - b_k) / P: proportional to the CAM where positive."""
    x = _images((32, 32), batch=2)
    cam = convert_to_cam(gap_cnn2d, probe_shape=(32, 32))(x)
    grad = GradCAM(gap_cnn2d, "features.3")(x)
    bias = gap_cnn2d.get_submodule("head.2").bias.detach()
    positions = 16 * 16
    expected = torch.relu(cam.maps - bias[None, :, None, None]) / positions
    torch.testing.assert_close(grad.maps, expected, atol=1e-6, rtol=1e-5)
    compared = 0
    for i in range(2):
        for k in range(3):
            g, c = grad.maps[i, k].flatten(), cam.maps[i, k].flatten()
            both = (g > 0) & (c > 0)
            if both.sum() < 10:
                continue
            compared += 1
            assert torch.corrcoef(torch.stack([g[both], c[both]]))[0, 1] > 0.999
            ratio = g[both] / (c[both] - bias[k])  # one positive constant per map
            torch.testing.assert_close(ratio, torch.full_like(ratio, 1 / positions), rtol=1e-3,
                                       atol=0)
    assert compared >= 2, "too few positive positions for the comparison to mean anything"


def test_gradient_cam_argument_errors(densenet2d: nn.Module, gap_cnn2d: nn.Module) -> None:
    with pytest.raises(TypeError, match=r"network must be a torch\.nn\.Module, got str"):
        GradCAM("densenet", "class_layers.relu")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="target_layer must be a layer name"):
        GradCAM(densenet2d, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"'class_layers\.rleu'.*did you mean 'class_layers\.relu'"):
        GradCAMpp(densenet2d, "class_layers.rleu")
    with pytest.raises(ValueError, match="'zzz' is not a layer of DenseNet121"):
        GradCAM(densenet2d, "zzz")
    explain = GradCAM(gap_cnn2d, "head.1")  # flatten: (B, C), not a feature map
    with pytest.raises(UnsupportedModelError, match="feature map"):
        explain(_images((32, 32), batch=1))
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor"):
        explain([[0.0]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"shape \(32, 32\)"):
        explain(torch.rand(32, 32))


class _WithIdleLayers(nn.Module):
    """A network with a layer that never runs and one whose output is thrown away."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network, self.unused, self.discarded = network, nn.Conv2d(8, 8, 1), nn.Conv2d(1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.discarded(x)
        return self.network(x)  # type: ignore[no-any-return]


def test_gradient_cam_refuses_layers_that_do_not_explain(gap_cnn2d: nn.Module) -> None:
    network, x = _WithIdleLayers(gap_cnn2d), _images((32, 32), batch=1)
    with pytest.raises(UnsupportedModelError, match="'unused' did not run"):
        GradCAM(network, "unused")(x)
    with (pytest.warns(UserWarning, match="not triggered"),  # MONAI's own warning
          pytest.raises(UnsupportedModelError, match="no gradient reached target_layer")):
        GradCAM(network, "discarded")(x)


OCCLUSION_CASES = [("mlp_cnn2d", (32, 32), 8), ("mlp_cnn3d", (16, 16, 16), 8)]


@pytest.mark.parametrize(("name", "shape", "mask"), OCCLUSION_CASES,
                         ids=[c[0] for c in OCCLUSION_CASES])
def test_occlusion_shapes_logits_and_batch_independence(
    name: str, shape: tuple[int, ...], mask: int, request: pytest.FixtureRequest
) -> None:
    network = copy.deepcopy(request.getfixturevalue(name)).train()
    hooks = _hook_state(network)
    explain = OcclusionCAM(network, mask_size=mask, n_batch=32, overlap=0.5)
    x = _images(shape, batch=2)
    out = explain(x)
    reference = _plain_logits(network.eval(), x)
    network.train()
    assert out.logits.shape == (2, 3) and out.maps.shape == (2, 3, *shape)
    torch.testing.assert_close(out.logits, reference, atol=1e-5, rtol=0)
    assert torch.isfinite(out.maps).all() and out.maps.abs().amax() > 0
    torch.testing.assert_close(explain(x[1:]).maps, out.maps[1:], atol=1e-5, rtol=0)
    assert network.training and _hook_state(network) == hooks


class _TopLeft(nn.Module):
    """logit_0 = 10 * mean of the top-left 8 x 8 pixels, logit_1 = -logit_0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = 10 * x[:, 0, :8, :8].mean((-2, -1))
        return torch.stack([score, -score], dim=1)


@pytest.mark.parametrize("mode", ["gaussian", 0.0])
def test_occlusion_evidence_is_positive_where_occluding_lowers_the_logit(
    mode: str | float
) -> None:
    out = OcclusionCAM(_TopLeft(), mask_size=8, overlap=0.5, mode=mode)(torch.ones(1, 1, 32, 32))
    torch.testing.assert_close(out.logits, torch.tensor([[10.0, -10.0]]))
    evidence_for, evidence_against = out.maps[0, 0], out.maps[0, 1]
    assert evidence_for[:8, :8].min() > 0 and evidence_against[:8, :8].max() < 0
    # windows around pixels of the bottom-right quadrant never reach the top-left 8 x 8
    assert evidence_for[16:, 16:].abs().max() < 1e-6
    peak = divmod(int(evidence_for.argmax()), 32)
    assert peak[0] < 8 and peak[1] < 8


def test_occlusion_argument_errors(mlp_cnn2d: nn.Module) -> None:
    with pytest.raises(ValueError, match="mask_size must be at least 1, got 0"):
        OcclusionCAM(mlp_cnn2d, mask_size=0)
    with pytest.raises(TypeError, match="mask_size must be an int, got float"):
        OcclusionCAM(mlp_cnn2d, mask_size=2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="mask_size must be an int, got bool"):
        OcclusionCAM(mlp_cnn2d, mask_size=True)
    with pytest.raises(ValueError, match="n_batch must be at least 1, got 0"):
        OcclusionCAM(mlp_cnn2d, n_batch=0)
    with pytest.raises(ValueError, match=r"overlap must be in \[0, 1\), got 1.0"):
        OcclusionCAM(mlp_cnn2d, overlap=1.0)
    with pytest.raises(ValueError, match="got 'gausian'; did you mean 'gaussian'"):
        OcclusionCAM(mlp_cnn2d, mode="gausian")
    with pytest.raises(TypeError, match="mode must be a string or a number, got NoneType"):
        OcclusionCAM(mlp_cnn2d, mode=None)  # type: ignore[arg-type]
    explain = OcclusionCAM(mlp_cnn2d, mask_size=(8, 8, 8))
    with pytest.raises(ValueError, match=r"mask_size \(8, 8, 8\) does not fit"):
        explain(_images((32, 32), batch=1))
    with pytest.raises(ValueError, match=r"mask_size \(40,\) does not fit .* \(32, 32\)"):
        OcclusionCAM(mlp_cnn2d, mask_size=40)(_images((32, 32), batch=1))


# --- Pooled features from the single pass; restoring the pooling layer on any failure ------


class _ProbeFailure(BaseException):
    """Stands for KeyboardInterrupt/SystemExit: not an Exception, so only BaseException catches it."""


class _FailsOnPositions(nn.Module):
    """Passes the pooled ``(2, C, 1, 1)`` probe through, raises once positions enter the batch."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != 2:
            raise self.error
        return x


@pytest.mark.parametrize("error", [ValueError("odd batch"), _ProbeFailure("interrupted")],
                         ids=["ValueError", "BaseException"])
def test_inplace_conversion_is_undone_on_any_exception(gap_cnn2d: nn.Module, error: BaseException) -> None:
    network = copy.deepcopy(gap_cnn2d)
    network.head.insert(1, _FailsOnPositions(error))  # GAP -> failing module -> flatten -> linear
    pool = network.get_submodule("head.0")
    x = _images((32, 32))
    before = _plain_logits(network, x)
    with pytest.raises(type(error), match=str(error)):
        convert_to_cam(network, inplace=True, probe_shape=(32, 32))
    assert network.get_submodule("head.0") is pool
    torch.testing.assert_close(_plain_logits(network, x), before, atol=0, rtol=0)


def test_single_pass_features_are_the_pooled_features_of_the_same_pass(densenet2d: nn.Module) -> None:
    x = _images((64, 64), batch=3)
    pooled: list[torch.Tensor] = []
    original = copy.deepcopy(densenet2d)
    handle = original.class_layers.pool.register_forward_hook(lambda m, i, o: pooled.append(o.flatten(1)))
    try:
        _plain_logits(original, x)
    finally:
        handle.remove()
    cam = convert_to_cam(densenet2d)
    with torch.inference_mode():
        out = cam(x)
    assert out.features is not None and out.features.shape == (3, 1024)
    assert out.features.abs().max() > 0.05
    torch.testing.assert_close(out.features, pooled[0], atol=1e-5, rtol=0)
    with torch.inference_mode():
        from_features = cam.network.class_layers.out(out.features)
    torch.testing.assert_close(from_features, out.logits, atol=1e-4, rtol=0)
    assert cam._reshape.take_features() is None, "the batch's features must not outlive the call"
    assert GradCAM(densenet2d, "class_layers.relu")(x).features is None
