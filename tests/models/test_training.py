"""Training: the loss goes down, Ω is fresh per sample and fixed by the seed, runs replay
exactly, ``hycas train`` packages."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import shlex

import pytest
import torch
import torch.nn.functional as F

import models
from models.architectures import build_model
from models.card import IntendedInput
from models.data import load_digits_split
from models.evaluation import EvaluationReport, EvaluationSettings
from models.training import (
    TrainingRequest,
    TrainingSettings,
    margin_cross_entropy,
    margin_offset,
    train_and_package,
    train_classifier,
)
from service.cli import build_parser, main
from service.model_commands import training_request_from
from tests.models.test_datasets import write_image_folder


@pytest.fixture(scope="module")
def digits_subset():
    return load_digits_split("train").head(256)


def small_model(architecture: str = "hycas", seed: int = 0):
    torch.manual_seed(seed)
    return build_model(architecture, (1, 8, 8), 10, {"width": 8}, trainable=True)


def test_margin_cross_entropy_subtracts_the_certifying_margin_from_the_true_logit():
    logits = torch.tensor([[1.0, 0.2, -0.5], [0.0, 0.3, 0.1]])
    labels = torch.tensor([0, 1])
    offset = margin_offset(0.5, 2.0)
    assert offset == pytest.approx(math.sqrt(2.0))
    shifted = logits.clone()
    shifted[0, 0] -= offset
    shifted[1, 1] -= offset
    expected = F.cross_entropy(4.0 * shifted, labels)
    got = margin_cross_entropy(logits, labels, offset=offset, logit_scale=4.0)
    assert torch.allclose(got, expected)
    plain = margin_cross_entropy(logits, labels, offset=0.0, logit_scale=4.0)
    assert plain < got


@pytest.mark.parametrize(
    ("architecture", "margin_weight"),
    [pytest.param("hycas", 0.0, marks=pytest.mark.slow), ("hycas", 0.5), ("cnn", 0.0)],
)
def test_training_reduces_the_loss(architecture, margin_weight):
    digits = load_digits_split("train")
    settings = TrainingSettings(epochs=3, learning_rate=3e-2, margin_weight=margin_weight)
    run = train_classifier(small_model(architecture), digits, settings, progress=False)
    assert len(run.epoch_losses) == 3 and run.steps == 3 * 22
    assert run.epoch_losses[-1] < 0.6 * run.epoch_losses[0]


def test_training_replays_exactly_from_its_seed(digits_subset):
    settings = TrainingSettings(epochs=2, margin_weight=0.3)
    states = []
    for seed in (0, 0, 1):
        model = small_model(seed=seed)
        run = train_classifier(
            model,
            digits_subset,
            TrainingSettings(**{**settings.to_dict(), "seed": seed}),
            progress=False,
        )
        states.append((model.state_dict(), run.epoch_losses))
    (first, losses0), (again, losses1), (other, _) = states
    assert losses0 == losses1
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def first_step_logits(model, dataset, settings: TrainingSettings) -> list[torch.Tensor]:
    """The logits of every forward pass of one training step (one epoch of one batch)."""
    seen: list[torch.Tensor] = []
    hook = model.register_forward_hook(lambda _m, _i, output: seen.append(output.detach()))
    try:
        train_classifier(model, dataset, settings, progress=False)
    finally:
        hook.remove()
    return seen


def copies_of_one_image(dataset, count: int):
    """``count`` copies of the first image: with σ = 0, only Ω can tell their logits apart
    (and neither the data order nor the input noise can change them)."""
    return dataclasses.replace(
        dataset,
        images=dataset.images[:1].repeat(count, 1, 1, 1),
        labels=dataset.labels[:1].repeat(count),
    )


def test_training_draws_a_fresh_omega_for_every_sample(digits_subset):
    settings = TrainingSettings(sigma=0.0, epochs=1, batch_size=2, margin_weight=0.5)
    passes = first_step_logits(small_model(), copies_of_one_image(digits_subset, 2), settings)
    # One pass: the noisy inputs and the margin term's clean inputs in one batch.
    assert len(passes) == 1 and passes[0].shape == (4, 10)
    for first, second in itertools.combinations(passes[0], 2):
        assert not torch.allclose(first, second)


def test_margin_on_noisy_inputs_takes_one_forward_pass_and_both_terms_from_it(digits_subset):
    settings = TrainingSettings(
        sigma=0.25, epochs=1, batch_size=3, margin_weight=0.4, margin_inputs="noisy"
    )
    model, subset = small_model(), copies_of_one_image(digits_subset, 3)
    passes = first_step_logits(copy.deepcopy(model), subset, settings)
    assert len(passes) == 1 and passes[0].shape == (3, 10)
    # The loss of that step: both terms from the same noisy logits, the margin's offset from
    # the certified bound.
    logits, labels = passes[0], subset.labels[:3]
    offset = margin_offset(settings.margin_radius, float(model.lipschitz_bound()))
    noise_term = margin_cross_entropy(logits, labels, offset=0.0, logit_scale=10.0)
    margin_term = margin_cross_entropy(logits, labels, offset=offset, logit_scale=10.0)
    run = train_classifier(copy.deepcopy(model), subset, settings, progress=False)
    expected = 0.6 * noise_term + 0.4 * margin_term
    assert run.epoch_losses[0] == pytest.approx(float(expected), rel=1e-5)
    assert "s(x + ε; Ω) − √2·L" in settings.loss_formula()


def test_margin_samples_takes_the_margin_term_on_that_many_clean_inputs(digits_subset):
    settings = TrainingSettings(sigma=0.25, epochs=1, batch_size=4, margin_weight=0.4)
    model, subset = small_model(), copies_of_one_image(digits_subset, 4)
    passes = first_step_logits(copy.deepcopy(model), subset, settings)
    assert passes[0].shape == (8, 10)
    subset_settings = dataclasses.replace(settings, margin_samples=2)
    passes = first_step_logits(copy.deepcopy(model), subset, subset_settings)
    assert len(passes) == 1 and passes[0].shape == (6, 10)
    logits, labels = passes[0], subset.labels
    offset = margin_offset(settings.margin_radius, float(model.lipschitz_bound()))
    noise_term = margin_cross_entropy(logits[:4], labels, offset=0.0, logit_scale=10.0)
    margin_term = margin_cross_entropy(logits[4:], labels[:2], offset=offset, logit_scale=10.0)
    run = train_classifier(copy.deepcopy(model), subset, subset_settings, progress=False)
    assert run.epoch_losses[0] == pytest.approx(float(0.6 * noise_term + 0.4 * margin_term))
    assert "margin term on 2 images" in subset_settings.loss_formula()
    with pytest.raises(ValueError, match="margin_samples"):
        TrainingSettings(margin_samples=0)
    with pytest.raises(ValueError, match="clean inputs only"):
        TrainingSettings(margin_samples=16, margin_inputs="noisy")


def split_settings(batch_size: int, margin_samples: int) -> TrainingSettings:
    """One epoch of the split objective (λ = 0.4, σ = 0.25)."""
    return TrainingSettings(
        sigma=0.25,
        epochs=1,
        batch_size=batch_size,
        margin_weight=0.4,
        margin_inputs="split",
        margin_samples=margin_samples,
    )


def test_split_margin_inputs_take_one_pass_of_the_batch_and_split_its_images(digits_subset):
    """``split``: the first ``margin_samples`` images go in clean for the margin term, the
    others noisy for the noise term, in one forward pass the size of the batch."""
    settings = split_settings(batch_size=6, margin_samples=2)
    model, subset = small_model(), copies_of_one_image(digits_subset, 6)
    passes = first_step_logits(copy.deepcopy(model), subset, settings)
    assert len(passes) == 1 and passes[0].shape == (6, 10)
    logits, labels = passes[0], subset.labels
    offset = margin_offset(settings.margin_radius, float(model.lipschitz_bound()))
    noise_term = margin_cross_entropy(logits[:4], labels[2:], offset=0.0, logit_scale=10.0)
    margin_term = margin_cross_entropy(logits[4:], labels[:2], offset=offset, logit_scale=10.0)
    run = train_classifier(copy.deepcopy(model), subset, settings, progress=False)
    assert run.epoch_losses[0] == pytest.approx(float(0.6 * noise_term + 0.4 * margin_term))
    assert 0.0 <= run.final_noisy_accuracy <= 1.0
    assert "noise term on the others, one forward pass" in settings.loss_formula()
    inputs: list[torch.Tensor] = []
    traced = copy.deepcopy(model)
    traced.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].detach()))
    train_classifier(traced, subset, settings, progress=False)
    image = subset.images[0]
    assert all(torch.equal(clean, image) for clean in inputs[0][4:])
    assert not any(torch.equal(noisy, image) for noisy in inputs[0][:4])
    with pytest.raises(ValueError, match="needs margin_samples"):
        TrainingSettings(margin_inputs="split")


def test_split_margin_inputs_leave_half_of_a_short_batch_to_the_noise_term(digits_subset):
    """A last batch shorter than ``2 × margin_samples`` keeps half its images noisy, and a
    batch of one image takes the noise term only."""
    settings = split_settings(batch_size=8, margin_samples=6)
    passes = first_step_logits(small_model(), copies_of_one_image(digits_subset, 4), settings)
    assert [p.shape for p in passes] == [(4, 10)]
    passes = first_step_logits(small_model(), copies_of_one_image(digits_subset, 1), settings)
    assert [p.shape for p in passes] == [(1, 10)]
    options = "--model-id m --margin-weight 0.1 --margin-inputs split --margin-samples 16"
    training = training_request_from(build_parser().parse_args(["train", *options.split()]))
    assert (training.training.margin_inputs, training.training.margin_samples) == ("split", 16)


def test_margin_inputs_must_be_clean_or_noisy():
    with pytest.raises(ValueError, match="margin_inputs"):
        TrainingSettings(margin_inputs="both")
    options = "--model-id m --margin-weight 0.1 --margin-inputs noisy --precision bfloat16"
    args = build_parser().parse_args(["train", *options.split()])
    training = training_request_from(args).training
    assert (training.margin_inputs, training.precision) == ("noisy", "bfloat16")


def test_bfloat16_precision_runs_the_forward_passes_in_bfloat16_and_keeps_float32_weights(
    digits_subset,
):
    settings = TrainingSettings(epochs=1, batch_size=4, margin_weight=0.3, precision="bfloat16")
    model = small_model()
    passes = first_step_logits(model, copies_of_one_image(digits_subset, 4), settings)
    assert passes and all(p.dtype == torch.bfloat16 for p in passes)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert math.isfinite(model.lipschitz_bound())
    with pytest.raises(ValueError, match="precision"):
        TrainingSettings(precision="float16")


def test_training_omega_is_fixed_by_the_seed_not_the_global_generator(digits_subset):
    model, twins = small_model(), copies_of_one_image(digits_subset, 4)
    draws = []
    for global_seed, seed in ((1, 0), (2, 0), (1, 1)):
        torch.manual_seed(global_seed)
        settings = TrainingSettings(sigma=0.0, epochs=1, batch_size=4, seed=seed)
        draws.append(first_step_logits(copy.deepcopy(model), twins, settings)[0])
    same_seed, other_global, other_seed = draws
    assert torch.equal(same_seed, other_global)
    assert not torch.allclose(same_seed, other_seed)


def test_margin_term_needs_a_lipschitz_bound(digits_subset):
    with pytest.raises(ValueError, match="Lipschitz bound"):
        train_classifier(
            small_model("cnn"), digits_subset, TrainingSettings(margin_weight=0.5), progress=False
        )


def test_recorded_command_parses_back_into_the_same_request():
    request = TrainingRequest(
        model_id="digits-x",
        architecture="lipschitz",
        config={"width": 16, "stage_depths": [1, 2]},
        training=TrainingSettings(
            sigma=0.5, margin_weight=0.25, epochs=7, beta_floor=0.2, gate_floor=0.1
        ),
        evaluation=EvaluationSettings(n=123, ensemble=3),
        eval_limit=7,
        threads=3,
    )
    words = shlex.split(request.command_line())
    assert words[:2] == ["hycas", "train"]
    assert "--margin-samples" not in words  # unset: its default
    assert training_request_from(build_parser().parse_args(words[1:])) == request
    cheaper = dataclasses.replace(
        request,
        training=dataclasses.replace(
            request.training, margin_samples=16, margin_inputs="clean", precision="bfloat16"
        ),
    )
    words = shlex.split(cheaper.command_line())
    assert training_request_from(build_parser().parse_args(words[1:])) == cheaper
    assert request.evaluation_settings() == EvaluationSettings(sigma=0.5, n=123, ensemble=3)


def test_a_request_refuses_evaluation_settings_the_command_cannot_carry():
    with pytest.raises(ValueError, match=r"\['radii'\]"):
        TrainingRequest(model_id="x", evaluation=EvaluationSettings(radii=(2.0,)))


def test_hycas_train_writes_a_loadable_package(tmp_path, capsys):
    argv = ["train", "--model-id", "digits-tiny", "--config", "width=8", "--epochs", "2"]
    argv += [
        "--margin-weight",
        "0.5",
        "--eval-n",
        "30",
        "--eval-limit",
        "6",
        "--eval-ensemble",
        "2",
    ]
    argv += ["--repository", str(tmp_path), "--device", "cpu", "--no-progress"]
    argv += ["--report", str(tmp_path / "report")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "wrote digits-tiny version 1" in printed and "clean accuracy" in printed
    model, card = models.load("digits-tiny", repository=tmp_path)
    assert card.training.command.startswith("hycas train --model-id digits-tiny")
    assert "--margin-weight 0.5" in card.training.command
    assert f"--threads {torch.get_num_threads()}" in card.training.command
    assert card.sigma == 0.25 and card.class_names == tuple("0123456789")
    assert card.metrics["images"] == 6 and card.metrics["settings"]["n"] == 30
    assert set(card.metrics["certificates"]) == {"smoothing", "margin", "either"}
    assert card.dataset.train_size == 1347 and "random_state=0" in card.dataset.test_split
    assert card.intended_input == IntendedInput("handwritten digit", 1, (8, 8), "grey", ())
    assert model.lipschitz_bound() <= card.lipschitz_bound <= 2.0
    report = EvaluationReport.read_json(tmp_path / "report.json")
    assert (report.model_id, report.version, report.sha256) == ("digits-tiny", "1", card.sha256)
    assert report.to_dict()["summary"] == card.metrics
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"


def image_folder_request(tmp_path, splits: dict[str, str]) -> TrainingRequest:
    """A one-epoch request on an image folder whose splits hold the given class letters."""
    write_image_folder(tmp_path / "data", splits)
    return TrainingRequest(
        model_id="abc",
        dataset="image-folder",
        data_path=str(tmp_path / "data"),
        config={"width": 4},
        training=TrainingSettings(epochs=1),
        evaluation=EvaluationSettings(n0=10, n=20, ensemble=2),
    )


def test_hycas_train_labels_the_test_split_by_the_train_classes(tmp_path):
    request = image_folder_request(tmp_path, {"train": "abc", "test": "ac"})
    outcome = train_and_package(request, repository=tmp_path, device="cpu", progress=False)
    assert outcome.card.class_names == ("a", "b", "c")
    intended = outcome.card.intended_input
    assert intended == IntendedInput("'data' image-folder", 1, (8, 8), "grey", ())
    assert [image.label for image in outcome.report.images] == [0, 0, 2, 2]


def test_hycas_train_refuses_a_test_folder_that_is_not_a_train_class(tmp_path):
    request = image_folder_request(tmp_path, {"train": "abc", "test": "acd"})
    with pytest.raises(ValueError, match=r"\['d'\].*\['a', 'b', 'c'\]"):
        train_and_package(request, repository=tmp_path, device="cpu", progress=False)
    assert not (tmp_path / "abc").exists()


@pytest.mark.parametrize(
    "change",
    [
        {"sigma": math.inf},
        {"learning_rate": math.inf},
        {"logit_scale": math.inf},
        {"margin_radius": math.inf},
        {"learning_rate": math.nan},
    ],
)
def test_settings_that_are_not_finite_are_refused(change):
    with pytest.raises(ValueError, match="finite"):
        TrainingSettings(**change)


@pytest.mark.parametrize("architecture", ["hycas", "cnn"])
def test_a_diverging_run_stops_with_what_to_change(architecture, digits_subset):
    """A learning rate of 1e30 makes the loss NaN in the first epoch: the run stops there and
    says so, instead of packaging NaN weights."""
    settings = TrainingSettings(epochs=2, learning_rate=1e30)
    with pytest.raises(ValueError, match=r"training diverged: the loss of epoch 1 is nan"):
        train_classifier(small_model(architecture), digits_subset, settings, progress=False)
