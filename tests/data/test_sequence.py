"""SequenceDataset: windows within episodes, masked padding, returns/values targets, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusion_rl.data import EpisodeStore, SequenceDataset, returns_to_go
from tests.data.conftest import make_store

torch.set_num_threads(1)
LENGTHS = [6, 2, 9, 4]


def _raw(ds: SequenceDataset, batch: dict[str, torch.Tensor]) -> np.ndarray:
    return ds.normalizers["observations"].unnormalize(batch["observations"].double().numpy())


def test_every_window_stays_in_its_episode_and_padding_is_masked() -> None:
    store = make_store(LENGTHS)
    ds = SequenceDataset(store, horizon=5)
    assert len(ds) == sum(LENGTHS)  # one window per step
    batch = ds.gather(torch.arange(len(ds)))
    obs = np.round(_raw(ds, batch)[..., :2]).astype(int)  # (episode, step) of every row
    mask = batch["mask"].numpy()
    for w in range(len(ds)):
        episode, step0 = obs[w, 0]
        real = mask[w] == 1
        assert real[0] and np.all(np.diff(real.astype(int)) <= 0)  # real steps first, then padding
        n_real = min(5, LENGTHS[episode] - step0)
        assert real.sum() == n_real
        np.testing.assert_array_equal(obs[w, :, 0], episode)  # never another episode's data
        np.testing.assert_array_equal(obs[w, :n_real, 1], step0 + np.arange(n_real))
        # padding repeats the last real step
        np.testing.assert_array_equal(obs[w, n_real:, 1], LENGTHS[episode] - 1)
    assert batch["timestep"].tolist() == [s for n in LENGTHS for s in range(n)]


def test_pad_before_repeats_the_first_step_and_masks_it() -> None:
    # Diffusion Policy's windows: To - 1 = 2 steps of history before an episode's first step
    store = make_store(LENGTHS)
    ds = SequenceDataset(store, horizon=5, pad_before=2, returns=True)
    assert len(ds) == sum(LENGTHS) + 2 * len(LENGTHS)
    batch = ds.gather(torch.arange(len(ds)))
    obs = np.round(_raw(ds, batch)[..., :2]).astype(int)
    mask = batch["mask"].numpy()
    expected_t = [s for n in LENGTHS for s in range(-2, n)]
    assert batch["timestep"].tolist() == expected_t
    for w, t0 in enumerate(expected_t):
        episode = obs[w, -1, 0] if t0 < 0 else obs[w, 0, 0]
        np.testing.assert_array_equal(obs[w, :, 0], episode)  # never another episode's data
        steps = t0 + np.arange(5)
        real = (steps >= 0) & (steps < LENGTHS[episode])
        np.testing.assert_array_equal(mask[w] == 1, real)
        np.testing.assert_array_equal(obs[w, :, 1], np.clip(steps, 0, LENGTHS[episode] - 1))
    # a window's return label is its current step's (after the 2 history rows): the return from now on, labelled
    # over every step once (the windows that start in the padding do not count an episode's first step 3 times)
    plain = SequenceDataset(store, horizon=5)
    episode_starts = np.repeat(np.cumsum([0, *LENGTHS[:-1]]), np.asarray(LENGTHS) + 2)
    ends = np.repeat(np.cumsum(LENGTHS), np.asarray(LENGTHS) + 2)
    now = torch.as_tensor(np.minimum(episode_starts + np.asarray(expected_t) + 2, ends - 1))
    np.testing.assert_allclose(batch["returns"], plain.gather(now)["returns"])
    assert len(set(np.round(batch["returns"][:, 0].numpy(), 6))) > len(LENGTHS)  # not one label per episode
    full = SequenceDataset(store, horizon=5, pad_before=2, pad_to_horizon=False)
    assert len(full) == (6 - 4 + 2) + (2 - 4 + 2) + (9 - 4 + 2) + (4 - 4 + 2)
    with pytest.raises(ValueError, match=r"pad_before must be an integer in \[0, horizon=5\)"):
        SequenceDataset(store, horizon=5, pad_before=5)


def test_no_padding_mode_uses_only_full_windows() -> None:
    ds = SequenceDataset(make_store(LENGTHS), horizon=5, pad_to_horizon=False)
    assert len(ds) == (6 - 4) + 0 + (9 - 4) + 0
    batch = ds.gather(torch.arange(len(ds)))
    assert batch["mask"].min() == 1
    with pytest.raises(ValueError, match="no windows"):
        SequenceDataset(make_store([2, 3]), horizon=5, pad_to_horizon=False)
    # an empty store (a fresh zarr replay buffer) is named as such, not blamed on pad_to_horizon
    empty = EpisodeStore({"observations": np.zeros((0, 2)), "actions": np.zeros((0, 1)), "rewards": np.zeros(0),
                          "terminals": np.zeros(0, bool)}, np.zeros(0, np.int64))
    with pytest.raises(ValueError, match=r"no windows: the store holds no episodes \(0 steps\)"):
        SequenceDataset(empty, horizon=5)


def test_returns_are_discounted_rtg_min_max_normalized_over_window_starts() -> None:
    store = make_store(LENGTHS)
    ds = SequenceDataset(store, horizon=3, discount=0.9)
    batch = ds.gather(torch.arange(len(ds)))
    rtg = returns_to_go(store["rewards"], store.episode_ends, 0.9)
    expected = (rtg - rtg.min()) / (rtg.max() - rtg.min())
    np.testing.assert_allclose(batch["returns"][:, 0].numpy(), expected, atol=1e-6)
    assert batch["returns"].shape == (len(ds), 1)
    raw = ds.normalizers["returns"].unnormalize(batch["returns"].double().numpy())[:, 0]
    np.testing.assert_allclose(raw, rtg, rtol=1e-5)


def _fall_and_timeout_store() -> EpisodeStore:
    """Two episodes of constant reward 1: the first (2 steps) ends in a terminal (a fall), the second in a
    timeout."""
    return EpisodeStore(
        {
            "observations": np.zeros((5, 1)),
            "actions": np.zeros((5, 1)),
            "rewards": np.ones(5),
            "terminals": np.array([0, 1, 0, 0, 0], bool),
            "timeouts": np.array([0, 0, 0, 0, 1], bool),
        },
        [2, 5],
    )


def test_return_labels_take_the_penalty_and_quantile_labels_are_quantile_levels() -> None:
    store = _fall_and_timeout_store()
    ds = SequenceDataset(store, horizon=2, discount=0.5, terminal_penalty=-10.0)
    raw = np.array([1 + 0.5 * (1 - 10), 1 - 10, 1 + 0.5 + 0.25, 1 + 0.5, 1])  # the fall costs -10
    labels = ds.gather(torch.arange(5))["returns"][:, 0].double().numpy()
    np.testing.assert_allclose(ds.normalizers["returns"].unnormalize(labels[:, None])[:, 0], raw, rtol=1e-6)
    no_penalty = SequenceDataset(store, horizon=2, discount=0.5, terminal_penalty=0)
    plain = np.array([1.5, 1.0, 1.75, 1.5, 1.0])  # 0 turns the penalty off: the plain discounted returns
    np.testing.assert_allclose(no_penalty.gather(torch.arange(5))["returns"][:, 0].numpy(),
                               (plain - 1.0) / 0.75, atol=1e-6)
    # quantile labels: each window start's mid-rank among the five, on a [0, 1] scale ([0.1, 0.3, ..., 0.9])
    q = SequenceDataset(store, horizon=2, discount=0.5, terminal_penalty=-10.0, return_label="quantile")
    got = q.gather(torch.arange(5))["returns"][:, 0].numpy()
    ranks = np.argsort(np.argsort(raw))
    np.testing.assert_allclose(got, (ranks + 0.5) / 5, atol=1e-6)
    assert q.normalizers["returns"].name == "quantile"
    with pytest.raises(ValueError, match="return_label must be one of"):
        SequenceDataset(store, horizon=2, return_label="percent")
    with pytest.raises(ValueError, match="terminal_penalty must be a finite"):
        SequenceDataset(store, horizon=2, terminal_penalty=float("nan"))


def test_demonstrations_that_end_in_success_are_not_penalized_as_falls() -> None:
    """A robot task terminates its episode on success: with the store's per-step ``success`` the first episode
    (terminal and successful) keeps its plain return, and both labels (returns and values) agree."""
    store = _fall_and_timeout_store()
    success = EpisodeStore({**{k: store[k] for k in store.keys()}, "success": np.array([0, 1, 0, 0, 0], bool)},
                           [2, 5])
    ds = SequenceDataset(success, horizon=2, discount=0.5, terminal_penalty=-10.0, values=True, value_discount=0.5)
    plain = np.array([1.5, 1.0, 1.75, 1.5, 1.0])
    labels = ds.gather(torch.arange(5))
    np.testing.assert_allclose(ds.normalizers["returns"].unnormalize(labels["returns"].reshape(-1, 1).double().numpy())[:, 0],
                               plain, rtol=1e-6)
    np.testing.assert_allclose(ds.normalizers["values"].unnormalize(labels["values"].reshape(-1, 1).double().numpy())[:, 0],
                               plain, rtol=1e-6)

def test_values_include_the_terminal_penalty() -> None:
    store = _fall_and_timeout_store()
    ds = SequenceDataset(
        store, horizon=2, returns=False, values=True, value_discount=0.5, terminal_penalty=-10.0
    )
    raw = np.array([1 + 0.5 * (1 - 10), 1 - 10, 1 + 0.5 + 0.25, 1 + 0.5, 1])
    batch = ds.gather(torch.arange(5))
    assert "returns" not in batch
    np.testing.assert_allclose(
        ds.normalizers["values"].unnormalize(batch["values"].double().numpy()[:, None])[:, 0], raw, rtol=1e-6
    )
    assert batch["values"].min() == -1 and batch["values"].max() == 1  # min-max over window starts


def test_sample_batch_is_seeded_and_indexing_matches_gather() -> None:
    ds = SequenceDataset(
        make_store(LENGTHS), horizon=4, keys=("observations", "actions"), normalizer="minmax"
    )
    a = ds.sample_batch(16, generator=torch.Generator().manual_seed(3))
    b = ds.sample_batch(16, generator=torch.Generator().manual_seed(3))
    for key in ("observations", "actions", "mask", "returns", "timestep"):
        torch.testing.assert_close(a[key], b[key])
    assert a["observations"].shape == (16, 4, 4) and a["actions"].shape == (16, 4, 2)
    assert a["observations"].dtype == torch.float32 and a["mask"].dtype == torch.float32
    assert a["observations"].abs().max() <= 1.0 + 1e-6  # minmax-normalized
    single = ds[7]
    batch = ds.gather(torch.tensor([7]))
    for key, value in single.items():
        torch.testing.assert_close(value, batch[key][0])
    assert ds.dims == {"observations": 4, "actions": 2}


def test_reusing_normalizers_keeps_statistics() -> None:
    train = SequenceDataset(make_store(LENGTHS, seed=0), horizon=4)
    other = SequenceDataset(make_store(LENGTHS, seed=1), horizon=4, normalizers=train.normalizers)
    assert other.normalizers["observations"] is train.normalizers["observations"]
    raw = make_store(LENGTHS, seed=1)["observations"]
    expected = train.normalizers["observations"].normalize(raw.astype(np.float64))
    np.testing.assert_allclose(
        other.gather(torch.arange(len(other)))["observations"][:, 0].numpy(), expected, atol=1e-6
    )


def test_bad_arguments() -> None:
    store = make_store(LENGTHS)
    with pytest.raises(ValueError, match="available keys"):
        SequenceDataset(store, 4, keys=("obs",))
    with pytest.raises(ValueError, match="horizon"):
        SequenceDataset(store, 0)
    no_rewards = EpisodeStore({"observations": np.zeros((3, 1)), "actions": np.zeros((3, 1))}, [3])
    with pytest.raises(ValueError, match="rewards"):
        SequenceDataset(no_rewards, 2)
    assert len(SequenceDataset(no_rewards, 2, returns=False)) == 3
    with pytest.raises(IndexError):
        SequenceDataset(store, 4)[len(store)]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batches_are_built_on_the_gpu() -> None:
    store = make_store(LENGTHS)
    cpu = SequenceDataset(store, horizon=4, values=True)
    gpu = SequenceDataset(store, horizon=4, values=True, device="cuda")
    index = torch.arange(len(cpu))
    on_gpu = gpu.gather(index.cuda())
    for key, value in cpu.gather(index).items():
        assert on_gpu[key].device.type == "cuda"
        torch.testing.assert_close(on_gpu[key].cpu(), value)
    batch = gpu.sample_batch(8, generator=torch.Generator(device="cuda").manual_seed(0))
    assert batch["observations"].device.type == "cuda"
    norm = gpu.normalizers["observations"]
    x = batch["observations"]
    torch.testing.assert_close(norm.normalize(norm.unnormalize(x)), x, atol=1e-4, rtol=1e-4)


@pytest.mark.gpu
def test_windows_on_cuda_from_a_cpu_generator_equal_the_cpu_windows() -> None:
    # the trainer draws indices with a CPU generator; on CUDA they travel pinned and asynchronously
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    store = make_store([12, 9, 15])
    cpu = SequenceDataset(store, 4, returns=True)
    cuda = SequenceDataset(store, 4, returns=True, device=torch.device("cuda"))
    a = cpu.sample_batch(64, torch.Generator().manual_seed(3))
    b = cuda.sample_batch(64, torch.Generator().manual_seed(3))
    assert all(b[k].is_cuda for k in b)
    for key in a:
        torch.testing.assert_close(a[key], b[key].cpu())
