"""The model protocol: HyCAS, the Lipschitz baseline and the plain CNN offer the same members;
Ω can be drawn per segment of a batch; importing ``models`` loads no dataset library."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from models import build_hycas
from models.baselines import build_lipschitz_baseline, build_plain_cnn
from models.card import Normalization
from models.protocol import CertifiableModel

SHAPE = (1, 8, 8)


def networks() -> dict[str, CertifiableModel]:
    torch.manual_seed(0)
    return {
        "hycas": build_hycas(SHAPE, 3, width=4),
        "lipschitz": build_lipschitz_baseline(SHAPE, 3, width=4),
        "cnn": build_plain_cnn(SHAPE, 3, width=4, hidden=8),
    }


@pytest.mark.parametrize("name", ["hycas", "lipschitz", "cnn"])
def test_every_network_implements_the_protocol(name):
    model = networks()[name].eval()
    assert CertifiableModel in type(model).__mro__  # implemented explicitly, not by accident
    assert model.input_shape == SHAPE and model.num_classes == 3
    assert isinstance(model.normalization(), Normalization)
    summary = model.describe()
    assert summary["input_shape"] == list(SHAPE) and summary["num_classes"] == 3
    assert summary["lipschitz_bound"] == model.lipschitz_bound()
    x = torch.rand(4, *SHAPE)
    with torch.no_grad():
        fresh = model(x, generator=torch.Generator().manual_seed(1))
        again = model(x, generator=torch.Generator().manual_seed(1))
        frozen = model(x, omega_seed=5)
        with model.frozen(5):
            in_context = model(x)
    assert fresh.shape == (4, 3) and torch.equal(fresh, again) and torch.equal(frozen, in_context)
    with pytest.raises(ValueError, match="not both"):
        model(x, generator=torch.Generator(), omega_seed=1)


def test_the_cnn_is_deterministic_and_has_no_bound():
    cnn = networks()["cnn"].eval()
    assert cnn.stochastic is False and cnn.lipschitz_bound() is None
    x = torch.rand(3, *SHAPE)
    with torch.no_grad():
        assert torch.equal(cnn(x, generator=torch.Generator().manual_seed(0)), cnn(x))


@pytest.mark.parametrize("name", ["hycas", "lipschitz"])
def test_the_lipschitz_networks_state_a_bound_and_draw_omega(name):
    model = networks()[name]
    assert model.stochastic is True
    assert 0 < model.lipschitz_bound() <= 2


BATCH_ROUNDING = {"rtol": 1e-5, "atol": 1e-6}
"""How far float32 kernels may round differently when the same rows sit in a larger batch."""


def test_each_omega_segment_gets_the_logits_of_its_generator_alone():
    model = networks()["hycas"].eval()
    first, second = torch.rand(3, *SHAPE), torch.rand(5, *SHAPE)
    with torch.no_grad():
        alone_first = model(first, generator=torch.Generator().manual_seed(11))
        alone_second = model(second, generator=torch.Generator().manual_seed(22))
        merged = model(
            torch.cat([first, second]),
            generator=[
                (torch.Generator().manual_seed(11), 3),
                (torch.Generator().manual_seed(22), 5),
            ],
        )
        one_segment = model(first, generator=[(torch.Generator().manual_seed(11), 3)])
    # Equal up to float32 kernels that round differently at another batch size (1e-8 here)...
    torch.testing.assert_close(merged[:3], alone_first, **BATCH_ROUNDING)
    torch.testing.assert_close(merged[3:], alone_second, **BATCH_ROUNDING)
    assert torch.equal(one_segment, alone_first)
    # ...while another draw of Ω moves the logits by orders of magnitude more.
    other = model(first, generator=torch.Generator().manual_seed(12)).detach()
    assert (merged[:3] - other).abs().max() > 1e3 * BATCH_ROUNDING["atol"]


def test_each_frozen_omega_segment_gets_the_logits_of_its_seed_alone():
    model = networks()["hycas"].eval()
    first, second = torch.rand(2, *SHAPE), torch.rand(3, *SHAPE)
    with torch.no_grad():
        merged = model(torch.cat([first, second]), omega_seed=[(7, 2), (8, 3)])
        torch.testing.assert_close(merged[:2], model(first, omega_seed=7), **BATCH_ROUNDING)
        torch.testing.assert_close(merged[2:], model(second, omega_seed=8), **BATCH_ROUNDING)
        other = model(first, omega_seed=8)
        assert (merged[:2] - other).abs().max() > 1e3 * BATCH_ROUNDING["atol"]


def test_segments_that_do_not_cover_the_batch_are_refused():
    model = networks()["hycas"]
    with pytest.raises(ValueError, match="do not cover a batch of 4"):
        model(torch.rand(4, *SHAPE), generator=[(torch.Generator(), 3)])
    with pytest.raises(ValueError, match="do not cover a batch of 4"):
        model(torch.rand(4, *SHAPE), omega_seed=[(1, 2), (2, 1)])


def test_importing_models_loads_no_dataset_library():
    code = "import sys, models; print([m for m in ('sklearn', 'PIL') if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
