"""Shared fixtures: real files from pydicom's corpus, pydicom-data, tests/data and ../shared."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from medcam.io import Image, load_image

REPO = Path(__file__).resolve().parents[1]
RG1_DATA = REPO / "tests" / "data" / "rg1"
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
RSNA_DICOM = SHARED / "data" / "cxr" / "rsna" / "dicom"


def testdata_path(name: str) -> Path:
    """A file of pydicom's test corpus or pydicom-data, or skip the test when it is absent."""
    found = get_testdata_file(name, download=False)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install pydicom-data)")
    return Path(str(found))


@pytest.fixture
def testdata() -> Callable[[str], Path]:
    """``testdata("MR_small.dcm")``: the path of a pydicom test file."""
    return testdata_path


@pytest.fixture(scope="session")
def rg1_data() -> Path:
    """The RG1 test fixtures, ``tests/data/rg1`` (made by ``tests/data/rg1/make_samples.py``)."""
    if not (RG1_DATA / "dicom" / "RG1_UNCR.dcm").is_file():
        pytest.skip(f"{RG1_DATA} is missing; run python tests/data/rg1/make_samples.py")
    return RG1_DATA


@pytest.fixture(scope="session")
def rg1() -> Image:
    """pydicom-data's RG1_UNCR.dcm (CR chest PA, MONOCHROME1, 1955 x 1841) through load_image."""
    return load_image(testdata_path("RG1_UNCR.dcm"))


@pytest.fixture(scope="session")
def rsna_dicoms() -> list[Path]:
    """The RSNA pneumonia DICOMs in ../shared, or skip when that folder is not there."""
    files = sorted(RSNA_DICOM.glob("*.dcm")) if RSNA_DICOM.is_dir() else []
    if not files:
        pytest.skip(f"no RSNA DICOMs in {RSNA_DICOM} (../shared is not checked out here)")
    return files


# --- Seeded tiny networks, for tests/test_models.py ----------------------------------------
# This block is appended so that it never touches the fixtures above; hence the late imports.

import torch  # noqa: E402
from monai.networks import nets  # noqa: E402
from torch import nn  # noqa: E402

from medcam.config import ModelConfig, PreprocessConfig  # noqa: E402
from medcam.models import build_network, save_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained, seeded DenseNet121 checkpoint on a 64 px grid: real code paths, fast on CPU."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_checkpoint(path, build_network(ModelConfig()).eval(), ModelConfig(), PreprocessConfig(size=64),
                    trained=False)
    return path


def _seeded(seed: int = 0) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _randomise_batchnorm(network: nn.Module, generator: torch.Generator) -> nn.Module:
    """Random running statistics and affine parameters, so that activations are not trivial.

    MONAI's EfficientNetBN at initialisation gives logits of about 1e-13, which would make
    any "logits are equal" test pass vacuously.
    """
    with torch.no_grad():
        for m in network.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=generator) * 0.1)
    return network


@pytest.fixture(scope="session")
def densenet2d() -> nn.Module:
    """MONAI DenseNet121, 2D, 1 channel, 2 classes (in-place ReLUs); use 64 x 64 inputs."""
    _seeded(0)
    return nets.DenseNet121(spatial_dims=2, in_channels=1, out_channels=2).eval()


@pytest.fixture(scope="session")
def resnet18_2d() -> nn.Module:
    _seeded(1)
    return nets.resnet18(spatial_dims=2, n_input_channels=1, num_classes=2).eval()


@pytest.fixture(scope="session")
def resnet18_3d() -> nn.Module:
    """Use 32^3 inputs (a 2^3 feature grid)."""
    _seeded(2)
    return nets.resnet18(spatial_dims=3, n_input_channels=1, num_classes=2).eval()


@pytest.fixture(scope="session")
def seresnet50_2d() -> nn.Module:
    _seeded(3)
    return nets.SEResNet50(spatial_dims=2, in_channels=1, num_classes=2).eval()


@pytest.fixture(scope="session")
def efficientnet_2d() -> nn.Module:
    generator = _seeded(4)
    net = nets.EfficientNetBN("efficientnet-b0", pretrained=False, spatial_dims=2,
                              in_channels=1, num_classes=2)
    return _randomise_batchnorm(net, generator).eval()


@pytest.fixture(scope="session")
def efficientnet_3d() -> nn.Module:
    """Use 64^3 inputs: at 32^3 the feature grid is a single voxel."""
    generator = _seeded(5)
    net = nets.EfficientNetBN("efficientnet-b0", pretrained=False, spatial_dims=3,
                              in_channels=1, num_classes=2)
    return _randomise_batchnorm(net, generator).eval()


def tiny_cnn(spatial_dims: int = 2, head: str = "linear", classes: int = 3) -> nn.Module:
    """Conv-ReLU-Conv(stride 2)-ReLU, then a head; features at half the input resolution.

    ``head``: ``"linear"`` (GAP -> flatten -> linear: single-pass CAM works), ``"mlp"``
    (GAP -> flatten -> linear -> ReLU -> linear: refused) or ``"maxpool"`` (global max
    pooling -> flatten -> linear: no GAP layer, refused). The layer before the head is
    ``features.3``.
    """
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    avg = nn.AdaptiveAvgPool2d if spatial_dims == 2 else nn.AdaptiveAvgPool3d
    mx = nn.AdaptiveMaxPool2d if spatial_dims == 2 else nn.AdaptiveMaxPool3d
    features = nn.Sequential(conv(1, 4, 3, padding=1), nn.ReLU(inplace=True),
                             conv(4, 8, 3, stride=2, padding=1), nn.ReLU(inplace=True))
    if head == "linear":
        tail: list[nn.Module] = [avg(1), nn.Flatten(), nn.Linear(8, classes)]
    elif head == "mlp":
        tail = [avg(1), nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, classes)]
    elif head == "maxpool":
        tail = [mx(1), nn.Flatten(), nn.Linear(8, classes)]
    else:
        raise ValueError(f"head must be 'linear', 'mlp' or 'maxpool', got {head!r}")
    net = nn.Sequential()
    net.add_module("features", features)
    net.add_module("head", nn.Sequential(*tail))
    return net.eval()


@pytest.fixture(scope="session")
def gap_cnn2d() -> nn.Module:
    """Tiny GAP -> linear CNN, 2D, 3 classes; 32 x 32 inputs give a 16 x 16 feature grid."""
    _seeded(6)
    return tiny_cnn(2, "linear")


@pytest.fixture(scope="session")
def mlp_cnn2d() -> nn.Module:
    """Tiny CNN with an MLP head (no single-pass CAM), 2D, 3 classes."""
    _seeded(7)
    return tiny_cnn(2, "mlp")


@pytest.fixture(scope="session")
def mlp_cnn3d() -> nn.Module:
    """Tiny CNN with an MLP head, 3D, 3 classes; use 16^3 inputs."""
    _seeded(8)
    return tiny_cnn(3, "mlp")


@pytest.fixture(scope="session")
def maxpool_cnn2d() -> nn.Module:
    """Tiny CNN with global MAX pooling (no GAP layer), 2D, 3 classes."""
    _seeded(9)
    return tiny_cnn(2, "maxpool")


# --- medcam's own results, to be refused when they come back as inputs -------------------------

from medcam.cli import main  # noqa: E402


@pytest.fixture(scope="session")
def own_results(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """What ``medcam export --formats sc,png`` and ``medcam predict`` write for pydicom-data's RG1
    chest CR with the tiny model: ``sc`` (the Secondary Capture), ``overlay`` and ``mask`` (the
    region PNGs) and ``cam_overlay`` (the CAM overlay PNG)."""
    rg1 = testdata_path("RG1_UNCR.dcm")
    out = tmp_path_factory.mktemp("own")
    assert main(["export", str(rg1), "--model", str(tiny_checkpoint), "--formats", "sc,png", "--threshold", "otsu",
                 "--min-area", "50", "--out", str(out / "export")]) == 0
    assert main(["predict", str(rg1), "--model", str(tiny_checkpoint), "--out", str(out / "predict")]) == 0
    found = {"sc": "export/*_sc.dcm", "overlay": "export/*_overlay.png", "mask": "export/*_mask.png",
             "cam_overlay": "predict/*_overlay.png"}
    return {kind: next(out.glob(pattern)) for kind, pattern in found.items()}
