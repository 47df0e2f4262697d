"""``SynthConfig.clip_calibration_std_logit``: one logit offset per clip, shared by every class.

It must leave sets of earlier configs unchanged (0 draws nothing), move every class of a clip
together (so it is visible in the clip), and be refused when negative.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logit

from envs.errors import SedtuneInputError
from envs.synth_config import SynthConfig
from envs.synth_scores import chunk_scores, class_profiles, sample_events


def _scores(cfg: SynthConfig, n: int = 300) -> np.ndarray:
    rng = np.random.default_rng(cfg.seed)
    prof = class_profiles(cfg)
    return chunk_scores(rng, cfg, prof, sample_events(rng, cfg, prof, n))


def _silent_levels(probs: np.ndarray) -> np.ndarray:
    """Per clip and class, the lower quartile of the frames' logits (mostly silence), (n, C)."""
    return np.percentile(logit(np.clip(probs.astype(np.float64), 1e-6, 1 - 1e-6)), 25, axis=1)


def test_zero_leaves_the_scores_of_earlier_configs_unchanged() -> None:
    cfg = SynthConfig(n_clips=50, n_classes=4, seed=3)
    assert cfg.clip_calibration_std_logit == 0.0
    assert np.array_equal(_scores(cfg), _scores(SynthConfig(n_clips=50, n_classes=4, seed=3,
                                                             clip_calibration_std_logit=0.0)))


def test_offsets_move_every_class_of_a_clip_together() -> None:
    base = SynthConfig(n_clips=300, n_classes=4, seed=5, clip_offset_std_logit=0.1)
    shifted = SynthConfig(n_clips=300, n_classes=4, seed=5, clip_offset_std_logit=0.1,
                          clip_calibration_std_logit=1.5)

    def agreement(cfg: SynthConfig) -> tuple[float, float]:
        """Mean correlation of the classes' silent levels over clips, and the spread of their mean."""
        levels = _silent_levels(_scores(cfg))
        corr = np.corrcoef(levels.T)
        return float(corr[np.triu_indices(4, 1)].mean()), float(levels.mean(axis=1).std())

    # Without the option the classes' silent levels are weakly related across clips (events
    # and leaks); with it they move together, the clip's level by about the option's std.
    (corr0, spread0), (corr1, spread1) = agreement(base), agreement(shifted)
    assert corr0 < 0.3 and corr1 > 0.6, (corr0, corr1)
    assert spread0 < 1.0 < spread1 < 2.0, (spread0, spread1)


def test_a_negative_std_is_refused() -> None:
    with pytest.raises(SedtuneInputError, match="clip_calibration_std_logit"):
        SynthConfig(clip_calibration_std_logit=-0.1)
