import math

import pytest
import torch

from geninv import metrics


def test_relative_error_and_psnr_hand_cases():
    truth = torch.tensor([[3.0, 4.0], [1.0, 0.0]], dtype=torch.float64)
    est = torch.tensor([[3.0, 4.0], [1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(metrics.relative_error(est, truth), torch.tensor([0.0, 1.0], dtype=torch.float64))
    p = metrics.psnr(torch.tensor([[0.0, 0.5]]), torch.tensor([[0.0, 1.0]]), data_range=1.0)
    assert math.isclose(p.item(), 10 * math.log10(1 / 0.125), rel_tol=1e-6)


def test_support_scores_hand_case():
    est = torch.tensor([[True, True, False, False]])
    tru = torch.tensor([[True, False, True, False]])
    s = metrics.support_scores(est, tru)
    assert s["precision"].item() == 0.5 and s["recall"].item() == 0.5 and s["f1"].item() == 0.5
    empty = metrics.support_scores(torch.zeros(1, 3, dtype=torch.bool), torch.zeros(1, 3, dtype=torch.bool))
    assert empty["precision"].item() == 1.0 and empty["recall"].item() == 1.0


def test_success_rate():
    assert metrics.success_rate([1e-9, 1e-2, 5e-4, 2e-3]) == 0.5
    assert metrics.success_rate([1e-9, 1e-2], threshold=0.1) == 1.0
    assert metrics.success_rate([1e-3]) == 1.0  # at the threshold counts, in float64
    with pytest.raises(ValueError, match="'threshold'"):
        metrics.success_rate([0.1], threshold=-1)
