"""The reliability fuzz (tests/reliability.py) on a smaller draw: random observations for Policy.act/plan and
every damaged-artifact case end in a bounded finite action or a documented error; no crash, hang or silent NaN."""

from __future__ import annotations

import warnings

import pytest
import torch

from tests import reliability

torch.set_num_threads(1)


def test_random_inputs_and_damaged_artifacts_fail_cleanly():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # clipping warnings and torch's nested-tensor notice are expected here
        counts, failures = reliability.run_inputs(400, seed=1)
        art, art_failures, cases = reliability.run_artifacts(seed=1)
    assert not failures and not art_failures, (failures + art_failures)[:10]
    assert counts["ok"] > 20 and counts["clean"] > 200  # both kinds of outcome are exercised
    assert cases >= 150 and art["clean"] >= 150 and sum(art.values()) == cases


@pytest.mark.parametrize("key, value", [("num_steps", 50), ("horizon", 16), ("schedule", "linear"),
                                        ("prediction", "sample"), ("history", 2), ("obs_dim", 12), ("act_dim", 2),
                                        ("dim", 200000)])
def test_a_config_json_edited_after_saving_is_refused(tmp_path, key, value):
    import json

    from diffusion_rl import Policy
    from diffusion_rl.artifact import ArtifactError
    from tests.test_policy import make_policy

    path = make_policy().save(tmp_path / "p")
    config = json.loads((path / "config.json").read_text())
    saved = config["algo_config"][key]
    config["algo_config"][key] = value  # some are weights-compatible, but not the model that was trained
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match=rf"disagrees with the network its weights were saved with: "
                                            rf"algo_config.{key} = {value!r} \(weights: {saved!r}\)"):
        Policy.load(path)  # refused before the network is built: dim=200000 allocates nothing
