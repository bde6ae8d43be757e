"""qhd_lib.metrics: FID/KID/IS against TorchMetrics, offline weights, clear errors, no network.

Inception at 299x299 is the expensive part (about 6 GFLOP an image), so the whole file runs it on
about 60 MNIST test images: 20 real ones whose features every test shares (scope="module"), three
noisy sets of 10 and 6 images for the check against TorchMetrics' own classes. Every other test
works on those features or on synthetic arrays. The tests use the weights that ``make setup``
installed (``python -m qhd_lib.metrics fetch``) through a private weights and cache directory.
"""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

from qhd_lib import data, io
from qhd_lib import metrics as M

N_REAL = 20
N_FAKE = 10
NOISE_LEVELS = (0.1, 0.4, 1.0)


class FirstFeatures(torch.nn.Module):
    """The first ``num_features`` outputs of a feature extractor."""

    def __init__(self, extractor: torch.nn.Module, num_features: int) -> None:
        super().__init__()
        self.extractor = extractor
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.extractor(x)[:, : self.num_features]


class Identity(torch.nn.Module):
    """A 'feature extractor' for TorchMetrics that passes precomputed features through."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.fixture(scope="module", autouse=True)
def private_dirs(tmp_path_factory: pytest.TempPathFactory):
    """Installed weights seen through a private weights dir (no IS file) and an empty cache."""
    installed = M.features_weights_path()
    weights = tmp_path_factory.mktemp("weights")
    (weights / M.FEATURES_FILE).symlink_to(installed)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QHD_WEIGHTS_DIR", str(weights))
        patch.setenv("QHD_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def mnist() -> np.ndarray:
    return data.load("mnist", "test")[0]


@pytest.fixture(scope="module")
def real(mnist: np.ndarray) -> np.ndarray:
    return M.real_features("mnist", "test", N_REAL, progress=False)


@pytest.fixture(scope="module")
def noisy(mnist: np.ndarray) -> list[np.ndarray]:
    """The first real images in the model's range plus Gaussian noise of growing strength."""
    clean = data.to_model_range(mnist[:N_FAKE])
    noise = np.random.default_rng(0).standard_normal(clean.shape).astype(np.float32)
    return [np.clip(clean + sigma * noise, -1.0, 1.0) for sigma in NOISE_LEVELS]


@pytest.fixture(scope="module")
def evaluations(real: np.ndarray, noisy: list[np.ndarray]) -> tuple[list[dict], list[tuple]]:
    """``evaluate`` of each noisy set with every socket connection refused (and recorded)."""
    attempts: list[tuple] = []

    def refuse(sock: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError("network access during evaluation")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket.socket, "connect_ex", refuse)
        results = [
            M.evaluate(
                images,
                "mnist",
                n_real=N_REAL,
                real_split="test",
                kid_subset_size=N_FAKE,
                kid_subsets=20,
                progress=False,
            )
            for images in noisy
        ]
    return results, attempts


def test_fid_of_a_set_with_itself_is_zero(real: np.ndarray) -> None:
    assert abs(M.fid_from_features(real, real)) < 1e-3


def test_fid_grows_with_noise(evaluations: tuple[list[dict], list[tuple]]) -> None:
    fids = [result["fid"] for result in evaluations[0]]
    assert fids[0] < fids[1] < fids[2], fids


def test_evaluate_opens_no_network_socket(evaluations: tuple[list[dict], list[tuple]]) -> None:
    results, attempts = evaluations
    assert attempts == []
    assert all(np.isfinite(r["fid"]) and np.isfinite(r["kid_mean"]) for r in results)


def test_evaluate_reports_its_settings(evaluations: tuple[list[dict], list[tuple]]) -> None:
    result = evaluations[0][0]
    assert result["resize"] == M.DEFAULT_RESIZE == "tf1"
    assert result["weights_sha256"] == M.FEATURES_SHA256
    assert (result["weights"], result["device"]) == ("f32 (exact)", "cpu")
    assert (result["n_real"], result["n_fake"], result["kid_subset_size"]) == (
        N_REAL,
        N_FAKE,
        N_FAKE,
    )


def test_inception_score_is_unavailable_without_1008_class_weights(
    evaluations: tuple[list[dict], list[tuple]],
) -> None:
    result = evaluations[0][0]
    assert result["is_mean"] is None and result["is_std"] is None
    assert M.IS_FILE in result["is_unavailable"]
    assert "python -m qhd_lib.metrics fetch --with-is" in result["is_unavailable"]


def test_fid_and_kid_match_torchmetrics_classes_with_the_same_feature_module(
    mnist: np.ndarray,
    real: np.ndarray,
) -> None:
    # TorchMetrics' FID takes general eigenvalues of a d x d matrix (minutes at d = 2048 on a busy
    # 2-core CPU), so its FID sees the first 64 features; the formula does not depend on d.
    module = M.inception()
    fid = FrechetInceptionDistance(feature=FirstFeatures(module, 64))
    kid = KernelInceptionDistance(feature=module, subset_size=3, subsets=10)
    first, second = (
        torch.from_numpy(mnist[:3]).unsqueeze(1),
        torch.from_numpy(mnist[3:6]).unsqueeze(1),
    )
    with torch.inference_mode():
        for metric in (fid, kid):
            metric.update(first, real=True)
            metric.update(second, real=False)
        expected_fid = fid.compute().item()
        torch.manual_seed(7)
        expected_kid = [value.item() for value in kid.compute()]
    assert M.fid_from_features(real[:3, :64], real[3:6, :64]) == pytest.approx(
        expected_fid, rel=1e-5
    )
    assert M.kid_from_features(
        real[:3], real[3:6], subset_size=3, subsets=10, seed=7
    ) == pytest.approx(expected_kid, rel=1e-4, abs=1e-7)


def synthetic_features(n: int, d: int, seed: int, dead: int = 0) -> np.ndarray:
    """Non-negative correlated features like pool3's; the last ``dead`` ones are always 0."""
    rng = np.random.default_rng(seed)
    feats = np.maximum(rng.standard_normal((n, 8)) @ rng.standard_normal((8, d)) + 0.5, 0)
    feats[:, d - dead :] = 0
    return feats.astype(np.float32)


@pytest.mark.parametrize(
    ("n_real", "n_fake", "dead"),
    [(10, 12, 0), (300, 20, 0), (300, 200, 0), (300, 200, 3)],
    ids=["few-samples", "mixed", "many-samples", "singular-covariance"],
)
def test_fid_from_features_equals_torchmetrics_fid(n_real: int, n_fake: int, dead: int) -> None:
    real, fake = synthetic_features(n_real, 32, 0, dead), synthetic_features(n_fake, 32, 1, dead)
    fid = FrechetInceptionDistance(feature=Identity(32))
    fid.update(torch.from_numpy(real), real=True)
    fid.update(torch.from_numpy(fake), real=False)
    assert M.fid_from_features(real, fake) == pytest.approx(fid.compute().item(), rel=1e-5)


def test_kid_from_features_equals_torchmetrics_kid_for_the_same_seed(real: np.ndarray) -> None:
    kid = KernelInceptionDistance(feature=Identity(M.NUM_FEATURES), subset_size=5, subsets=50)
    kid.update(torch.from_numpy(real[:10]), real=True)
    kid.update(torch.from_numpy(real[10:]), real=False)
    torch.manual_seed(3)
    expected = [value.item() for value in kid.compute()]
    assert M.kid_from_features(
        real[:10], real[10:], subset_size=5, subsets=50, seed=3
    ) == pytest.approx(expected, rel=1e-6)


def test_inception_score_equals_torchmetrics_for_the_same_seed() -> None:
    logits = (3 * np.random.default_rng(1).standard_normal((200, 1008))).astype(np.float32)
    score = InceptionScore(feature=Identity(1008), splits=10)
    score.update(torch.from_numpy(logits))
    torch.manual_seed(5)
    expected = [value.item() for value in score.compute()]
    assert M.inception_score_from_logits(logits, splits=10, seed=5) == pytest.approx(
        expected, rel=1e-6
    )


def test_inception_logits_use_the_classifier_weight_without_bias(
    tmp_path,
    monkeypatch: pytest.MonkeyPatch,
    real: np.ndarray,
) -> None:
    weight = torch.randn(1008, M.NUM_FEATURES)
    path = tmp_path / M.IS_FILE
    torch.save({"fc.weight": weight, "fc.bias": torch.ones(1008)}, path)
    monkeypatch.setenv("QHD_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setattr(M, "IS_SHA256_PREFIX", io.sha256(path)[:8])
    logits = M.inception_logits(real)
    np.testing.assert_allclose(logits, real @ weight.numpy().T, rtol=1e-5, atol=1e-4)


def test_corrupt_is_weights_are_refused_with_the_fetch_command(tmp_path, monkeypatch) -> None:
    (tmp_path / M.IS_FILE).write_bytes(b"not the weights")
    monkeypatch.setenv("QHD_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="python -m qhd_lib.metrics fetch --with-is"):
        M.is_weights_path()


def test_missing_weights_error_names_the_fetch_command(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("QHD_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="python -m qhd_lib.metrics fetch"):
        M.features(np.zeros((1, 28, 28), np.uint8), progress=False)


def test_corrupt_weights_error_names_the_fetch_command(tmp_path, monkeypatch) -> None:
    (tmp_path / M.FEATURES_FILE).write_bytes(b"truncated download")
    monkeypatch.setenv("QHD_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="python -m qhd_lib.metrics fetch"):
        M.inception()


def test_real_features_are_cached_per_dataset_split_count_and_resize(
    real: np.ndarray,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cached = list((M.cache_dir() / "features").glob("*.npz"))
    assert [p.name for p in cached] == [f"mnist-test-n{N_REAL}-tf1-{M.FEATURES_SHA256[:12]}.npz"]

    def no_recompute(*args: object, **kwargs: object) -> np.ndarray:
        raise AssertionError("features recomputed despite the cache")

    monkeypatch.setattr(M, "features", no_recompute)
    np.testing.assert_array_equal(M.real_features("mnist", "test", N_REAL), real)


def test_model_range_images_convert_back_to_the_same_uint8(mnist: np.ndarray) -> None:
    np.testing.assert_array_equal(M.to_uint8(data.to_model_range(mnist[:50])), mnist[:50])
    np.testing.assert_array_equal(M.to_uint8(mnist[:50, :, :, None]), mnist[:50])


def test_images_outside_the_model_range_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        M.to_uint8(np.full((2, 28, 28, 1), 255.0, np.float32))


def test_tf1_resize_samples_at_i_times_in_over_out_without_half_pixel_offset() -> None:
    ramp = torch.linspace(0.0, 27.0 * 9, 28).view(1, 1, 1, 28).expand(1, 1, 28, 28)
    out = M.resize_tf1(ramp)[0, 0, 0].double().numpy()
    position = np.minimum(np.arange(299) * 28 / 299, 27)  # linear ramp: value = 9 * position
    np.testing.assert_allclose(out, 9 * position, rtol=1e-5, atol=1e-4)
    assert out[0] == 0.0 and out[-1] == pytest.approx(9 * 27.0)


def test_antialias_resize_uses_half_pixel_centres_and_differs_from_tf1() -> None:
    image = torch.from_numpy(
        np.random.default_rng(2).integers(0, 256, (1, 1, 28, 28)).astype(np.float32)
    )
    reference = torch.nn.functional.interpolate(
        image, size=(299, 299), mode="bilinear", align_corners=False, antialias=True
    )
    assert torch.equal(M.resize_antialias(image), reference)
    assert not torch.allclose(M.resize_antialias(image), M.resize_tf1(image), atol=1.0)


def test_unknown_resize_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="tf1, antialias"):
        M.inception(resize="bicubic")


def test_kid_subset_larger_than_the_sets_is_rejected(real: np.ndarray) -> None:
    with pytest.raises(ValueError, match="smaller subset_size"):
        M.kid_from_features(real, real[:5], subset_size=10)


@pytest.fixture(scope="module")
def f16_file() -> dict:
    """The float16 copy written into the private weights dir, as `write_f16_weights` reports it."""
    return M.write_f16_weights()


def test_f16_weights_are_the_f32_weights_rounded_and_load_upcast(f16_file: dict) -> None:
    assert f16_file["sha256"] == M.F16_SHA256  # the same bytes as the file the GPU verifies
    assert f16_file["bytes"] < 0.55 * M.features_weights_path().stat().st_size
    exact = M._load_network(str(M.features_weights_path()))
    upcast = M._load_network(str(M.f16_weights_path()))
    pairs = list(zip(exact.state_dict().items(), upcast.state_dict().items(), strict=True))
    assert pairs
    for (name, a), (other, b) in pairs:
        assert name == other and b.dtype == a.dtype
        if a.is_floating_point():
            assert torch.equal(b, a.half().float()), name


def test_evaluate_with_f16_weights_says_so_and_stays_close(
    f16_file: dict, noisy: list[np.ndarray], evaluations: tuple[list[dict], list[tuple]]
) -> None:
    kwargs = dict(n_real=N_REAL, real_split="test", kid_subset_size=N_FAKE, kid_subsets=20)
    result = M.evaluate(noisy[0], "mnist", progress=False, weights="f16", **kwargs)
    assert (result["weights"], result["weights_sha256"]) == (
        "f16 stored, upcast to f32",
        M.F16_SHA256,
    )
    exact = evaluations[0][0]["fid"]
    assert result["fid"] != exact and abs(result["fid"] - exact) < 1e-3 * exact


def test_missing_f16_weights_error_names_the_command(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("QHD_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="python -m qhd_lib.metrics f16"):
        M.inception(weights="f16")
    with pytest.raises(ValueError, match="use one of f32, f16"):
        M.inception(weights="bf16")


def test_corrupt_f16_weights_error_names_the_command(tmp_path, monkeypatch) -> None:
    (tmp_path / M.F16_FILE).write_bytes(b"not the float16 copy")
    monkeypatch.setenv("QHD_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(
        ValueError, match="corrupt or not the right one.*python -m qhd_lib.metrics f16"
    ):
        M.inception(weights="f16")
