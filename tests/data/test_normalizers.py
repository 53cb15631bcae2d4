"""Normalizers: numbers, numpy/torch round trips, dtype/device, serialization, degenerate dimensions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from diffusion_rl.data import (
    NORMALIZERS,
    CDFNormalizer,
    GaussianNormalizer,
    MinMaxNormalizer,
    QuantileNormalizer,
    make_normalizer,
    normalizer_from_state,
)

torch.set_num_threads(1)


def _data(n: int = 500) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.stack(
        [rng.normal(3.0, 2.0, n), rng.exponential(1.0, n), rng.uniform(-5, 5, n), np.full(n, 7.0)], axis=1
    )  # the last dimension is constant


def test_gaussian_statistics() -> None:
    x = _data()
    norm = GaussianNormalizer().fit(x)
    z = norm.normalize(x)
    np.testing.assert_allclose(z[:, :3].mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(z[:, :3].std(0), 1, atol=1e-12)
    np.testing.assert_allclose(z[:, 3], 0)  # constant dimension: std guarded to 1, maps to 0


def test_minmax_range_and_custom_target() -> None:
    x = _data()
    z = MinMaxNormalizer().fit(x).normalize(x)
    np.testing.assert_allclose(z[:, :3].min(0), -1)
    np.testing.assert_allclose(z[:, :3].max(0), 1)
    np.testing.assert_allclose(z[:, 3], 0)
    r = MinMaxNormalizer(0.0, 1.0).fit(np.array([[2.0], [4.0], [10.0]]))
    np.testing.assert_allclose(r.normalize(np.array([[2.0], [4.0], [10.0]]))[:, 0], [0, 0.25, 1])


def test_cdf_matches_diffusers_formula_by_hand() -> None:
    # Column [0, 1, 1, 2, 5]: distinct values [0, 1, 2, 5], empirical CDF [0.2, 0.6, 0.8, 1.0].
    norm = CDFNormalizer(max_knots=None).fit(np.array([0.0, 1.0, 1.0, 2.0, 5.0]))
    x = np.array([[1.5], [-3.0], [5.0], [3.5]])
    np.testing.assert_allclose(norm.normalize(x)[:, 0], [2 * 0.7 - 1, 2 * 0.2 - 1, 1.0, 2 * 0.9 - 1])
    np.testing.assert_allclose(norm.unnormalize(np.array([[0.4], [-1.0], [1.0]]))[:, 0], [1.5, 0.0, 5.0])
    t = norm.normalize(torch.tensor([[1.5], [-3.0], [5.0], [3.5]], dtype=torch.float64))
    np.testing.assert_allclose(t[:, 0].numpy(), [0.4, -0.6, 1.0, 0.8])


def test_cdf_knot_thinning_keeps_the_cdf_close() -> None:
    x = _data(5000)
    exact, thin = CDFNormalizer(max_knots=None).fit(x), CDFNormalizer(max_knots=64).fit(x)
    assert thin.state_dict()["quantiles"].shape == (4, 64)
    assert np.abs(exact.normalize(x) - thin.normalize(x)).max() < 0.05
    z = thin.normalize(x)
    assert z[:, :3].min() >= -1 and z[:, :3].max() <= 1
    assert abs(np.median(z[:, 0])) < 0.05  # the CDF maps the median to 0


def test_quantile_is_the_fraction_of_the_data_below() -> None:
    # Column [0, 1, 1, 2, 5]: the fraction below each value, its own points counted half (mid-rank), is
    # [0.1, 0.4, 0.7, 0.9] at [0, 1, 2, 5], linear in between.
    norm = QuantileNormalizer(max_knots=None).fit(np.array([0.0, 1.0, 1.0, 2.0, 5.0]))
    np.testing.assert_allclose(norm.normalize(np.array([[1.5], [-3.0], [5.0], [3.5]]))[:, 0], [0.55, 0.1, 0.9, 0.8])
    np.testing.assert_allclose(norm.unnormalize(np.array([[0.55], [0.1], [0.9]]))[:, 0], [1.5, 0.0, 5.0])
    # ties: a value shared by half the data sits in the middle of its share, thinned to few knots or not
    rng = np.random.default_rng(1)
    tied = np.concatenate([-rng.uniform(0.01, 1, 3000), np.zeros(6000), rng.uniform(0.01, 1, 3000)])[:, None]
    for knots in (None, 1024, 16):
        np.testing.assert_allclose(QuantileNormalizer(max_knots=knots).fit(tied).normalize(np.zeros((1, 1))), 0.5)
        np.testing.assert_allclose(CDFNormalizer(max_knots=knots).fit(tied).normalize(np.zeros((1, 1))), 0.5)
    # on any scale, the label of the data's q-quantile is q (returns of 1e4 or 1e-2 get the same labels)
    x = np.random.default_rng(0).exponential(1.0, size=(20001, 1))
    for scale in (1e-2, 1e4):
        z = QuantileNormalizer().fit(scale * x).normalize(scale * np.quantile(x, [0.1, 0.5, 0.9])[:, None])
        np.testing.assert_allclose(z[:, 0], [0.1, 0.5, 0.9], atol=2e-3)
    assert make_normalizer("quantile").name == "quantile"


@pytest.mark.parametrize("name", sorted(NORMALIZERS))
def test_round_trip_numpy_and_torch(name: str) -> None:
    x = _data()
    norm = make_normalizer(name).fit(x)
    back = norm.unnormalize(norm.normalize(x))
    np.testing.assert_allclose(back, x, atol=1e-9)
    for dtype in (torch.float32, torch.float64):
        t = torch.as_tensor(x, dtype=dtype).reshape(10, 50, 4)  # any leading shape, features last
        z = norm.normalize(t)
        assert z.dtype == dtype and z.device == t.device and z.shape == t.shape
        np.testing.assert_allclose(
            z.double().numpy().reshape(-1, 4),
            norm.normalize(x),
            atol=1e-5 if dtype == torch.float32 else 1e-9,
        )
        np.testing.assert_allclose(
            norm.unnormalize(z).double().numpy(),
            t.double().numpy(),
            atol=1e-3 if dtype == torch.float32 else 1e-9,
        )
    assert norm.normalize(x.astype(np.float32)).dtype == np.float32


@pytest.mark.parametrize("name", sorted(NORMALIZERS))
def test_state_dict_serializes_and_restores(name: str) -> None:
    x = _data()
    norm = make_normalizer(name).fit(x)
    state = norm.state_dict()
    assert state["name"] == name
    assert all(isinstance(v, np.ndarray) for k, v in state.items() if k != "name")
    # json round trip (what an artifact's config.json can carry) and tensors (what safetensors stores)
    as_json = json.loads(json.dumps({k: v if isinstance(v, str) else v.tolist() for k, v in state.items()}))
    restored = normalizer_from_state({k: v if k == "name" else np.asarray(v) for k, v in as_json.items()})
    np.testing.assert_allclose(restored.normalize(x), norm.normalize(x), atol=1e-12)
    from_tensors = normalizer_from_state(
        {k: v if k == "name" else torch.as_tensor(v) for k, v in state.items()}
    )
    np.testing.assert_allclose(from_tensors.unnormalize(norm.normalize(x)), x, atol=1e-9)


def test_minmax_target_range_survives_serialization() -> None:
    norm = MinMaxNormalizer(0.0, 1.0).fit(np.array([[0.0], [10.0]]))
    restored = normalizer_from_state(norm.state_dict())
    np.testing.assert_allclose(restored.normalize(np.array([[5.0]])), [[0.5]])


def test_errors_name_what_was_expected() -> None:
    with pytest.raises(ValueError, match="expected one of"):
        make_normalizer("zscore")
    norm = GaussianNormalizer().fit(np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"\[\.\.\., 3\]"):
        norm.normalize(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="not fitted"):
        GaussianNormalizer().normalize(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="lacks"):
        normalizer_from_state({"name": "gaussian", "mean": np.zeros(3)})
    with pytest.raises(ValueError, match="NaN"):
        GaussianNormalizer().fit(np.array([[np.nan]]))


def test_clip_range_bounds_the_normalized_data() -> None:
    x = np.random.default_rng(0).normal(size=(2000, 3)) * 5 + 2
    for norm in (MinMaxNormalizer(), CDFNormalizer(), MinMaxNormalizer(low=-2.0, high=3.0)):
        y = norm.fit(x).normalize(x)
        c = norm.clip_range
        assert c is not None and np.abs(y).max() <= c + 1e-6
        assert normalizer_from_state(norm.state_dict()).clip_range == c
    gauss = GaussianNormalizer().fit(x)
    assert gauss.clip_range is None and np.abs(gauss.normalize(x)).max() > 2.0  # clipping would cut real states


@pytest.mark.parametrize("name", ["cdf", "quantile"])
def test_cdf_dimension_constant_up_to_float64_noise_is_constant_in_every_dtype(name: str) -> None:
    # a unit quaternion's w stored in float64: 1.0 up to rounding noise, two knots that float32 cannot tell apart
    rng = np.random.default_rng(0)
    w = np.where(rng.random(5000) < 0.3, 1.0 - 1e-12, 1.0)
    x = np.c_[rng.normal(size=5000), w]
    norm = make_normalizer(name).fit(x)
    assert norm.stats["counts"][1] == 1  # treated as constant: the noise carries no signal
    centre = 0.5 if name == "quantile" else 0.0
    expected = norm.normalize(x[:50])
    np.testing.assert_allclose(expected[:, 1], centre, atol=1e-9)
    for out in (
        norm.normalize(torch.tensor(x[:50], dtype=torch.float32)).numpy(),
        norm.normalize(torch.tensor(x[:50], dtype=torch.float64)).numpy(),
        norm.normalize(x[:50].astype(np.float32)),
    ):
        assert np.isfinite(out).all()
        np.testing.assert_allclose(out, expected, atol=1e-5)
    back = norm.unnormalize(torch.tensor(expected, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(back[:, 1], 1.0, atol=1e-6)


@pytest.mark.parametrize("name", ["cdf", "quantile"])
def test_cdf_torch_float32_is_finite_where_top_knots_coincide_in_float32(name: str) -> None:
    # a real spread, but the two highest distinct values differ by 1e-12: one value in float32
    x = np.r_[np.random.default_rng(1).normal(size=998), 10.0, 10.0, 10.0 + 1e-12, 10.0 + 1e-12][:, None]
    norm = make_normalizer(name).fit(x)
    assert norm.stats["counts"][0] == 1000
    probe = np.array([[10.0], [10.0 + 1e-12], [20.0], [0.0]])
    expected = norm.normalize(probe)
    for got in (norm.normalize(torch.tensor(probe, dtype=torch.float32)).numpy(),
                norm.normalize(probe.astype(np.float32))):
        assert np.isfinite(got).all(), got
        # 10.0 and 10.0 + 1e-12 are one float32 value: it takes the upper knot's level, as np.interp does
        np.testing.assert_allclose(got, expected[[1, 1, 2, 3]], atol=1e-6)
    back = norm.unnormalize(torch.tensor(expected, dtype=torch.float32)).numpy()
    assert np.isfinite(back).all(), back
    np.testing.assert_allclose(back[:3, 0], 10.0, atol=1e-3)  # float32 levels, a steep top of the CDF


def test_normalizer_fit_error_names_the_key_row_and_dimension() -> None:
    x = np.zeros((10, 3))
    x[4, 2] = np.inf
    with pytest.raises(ValueError, match=r"'observations'.*inf at row 4, dimension 2"):
        GaussianNormalizer().fit(x, key="observations")
    with pytest.raises(ValueError, match=r"'actions': expected \[N, D\] with N > 0, got shape \(0, 2\)"):
        CDFNormalizer().fit(np.zeros((0, 2)), key="actions")


@pytest.mark.parametrize("name", ["gaussian", "minmax", "cdf", "quantile"])
def test_a_state_whose_statistics_disagree_in_width_is_refused(name: str) -> None:
    """A hand-edited or damaged state (2 numbers where 4 belong) loaded, then failed at the first use with a numpy
    broadcast error naming nothing."""
    state = make_normalizer(name).fit(np.random.default_rng(0).normal(size=(50, 4))).state_dict()
    key = {"gaussian": "std", "minmax": "half_range", "cdf": "counts", "quantile": "cumprob"}[name]
    state[key] = state[key][:2]
    with pytest.raises(ValueError, match=rf"{name} normalizer state: expected .*got shapes"):
        normalizer_from_state(state)
    if name == "cdf":
        good = make_normalizer(name).fit(np.random.default_rng(0).normal(size=(50, 4))).state_dict()
        good["counts"] = good["counts"] + good["quantiles"].shape[1]  # more knots used than the state holds
        with pytest.raises(ValueError, match=r"counts \[D\] in \[1, K\]"):
            normalizer_from_state(good)
