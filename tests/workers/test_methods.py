"""The certificate-method registry: what the service derives from it, and the checks it drives."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from service.core.config import Settings
from service.errors import InvalidRequest
from service.job_inputs import require_method_options, resolve_parameters
from service.main import create_app
from service.schemas import CertifyOptions
from tests.workers.small_models import SMALL_MODEL_ID, SmallModelSource
from workers.certification import CertificationParameters
from workers.methods import DEFAULT_METHODS, REGISTRY, CertificationMethod, method
from workers.methods.base import register_method


def _parameters(**overrides: object) -> CertificationParameters:
    values: dict[str, object] = {
        "methods": tuple(CertificationMethod),
        "sigma": 0.25,
        "alpha": 0.001,
        "n0": 10,
        "n": 90,
        "batch_size": 50,
        "ensemble": 3,
        "target_radius": 0.1,
        "seed": 1,
    }
    values.update(overrides)
    return CertificationParameters(**values)


def test_the_api_enum_and_the_defaults_come_from_the_registry():
    assert [m.value for m in CertificationMethod] == list(REGISTRY)
    assert tuple(m for m in CertificationMethod if REGISTRY[m].default) == DEFAULT_METHODS
    assert DEFAULT_METHODS[0] == "smoothing"  # the primary certificate of a default request
    schema = create_app(Settings(redis_url=None), SmallModelSource()).openapi()
    listed = schema["components"]["schemas"]["CertificationMethod"]["enum"]
    assert listed == list(REGISTRY)


def test_every_method_states_what_it_reads_and_plans_from_the_parameters():
    parameters = _parameters()
    for registered in REGISTRY.values():
        assert set(registered.reads) <= set(CertificationParameters.model_fields)
        assert set(registered.requires) <= set(registered.reads)
        classifiers = (
            ("smoothed", "frozen_ensemble") if registered.certifies else ("each_certified",)
        )
        assert registered.classifier in classifiers
        assert parameters.samples_planned(CertificationMethod(registered.name)) >= 1
    assert parameters.samples_planned(CertificationMethod.MARGIN) == 3
    # The attack's caps: g's DDN steps (100 × 16) and 12 PREDICT runs of n; F_K's 2 × 113 + 1
    # points through each of the K = 3 draws.
    attack = parameters.samples_planned(CertificationMethod.ATTACK)
    assert attack == (100 * 16 + 12 * 90) + 3 * (2 * 113 + 1)
    assert parameters.total_samples_planned == 100 + 3 + 100 + attack


def test_a_method_is_registered_once():
    with pytest.raises(ValueError, match="already registered"):
        register_method(REGISTRY["margin"])
    assert dataclasses.replace(REGISTRY["margin"], name="another").name not in REGISTRY


def test_a_missing_required_option_is_refused_by_name():
    loaded = SmallModelSource().load(SMALL_MODEL_ID, None)
    options = CertifyOptions(methods=("radius_test",))
    with pytest.raises(InvalidRequest, match=r"radius_test method needs target_radius \(L2"):
        resolve_parameters(options, loaded, Settings(redis_url=None))
    options = CertifyOptions(methods=("radius_test",), target_radius=0.2)
    resolved = resolve_parameters(options, loaded, Settings(redis_url=None))
    assert resolved.target_radius == 0.2


def test_a_method_needing_a_bound_is_refused_for_a_model_without_one():
    loaded = dataclasses.replace(
        SmallModelSource().load(SMALL_MODEL_ID, None), lipschitz_bound=None
    )
    needing = [m for m in CertificationMethod if method(m).needs_lipschitz_bound]
    assert needing == [CertificationMethod.MARGIN]
    with pytest.raises(InvalidRequest, match="no certified Lipschitz bound") as refused:
        require_method_options(needing, CertifyOptions(), loaded)
    assert refused.value.code == "no_lipschitz_bound"
    require_method_options([CertificationMethod.SMOOTHING], CertifyOptions(), loaded)


def test_reading_the_registry_imports_no_torch():
    code = "import sys, workers.methods; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
