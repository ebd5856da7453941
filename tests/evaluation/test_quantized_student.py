"""A quantised student (torchao int8, the `quantized-int8` artefact of a training run) is loaded
with its quantised weights and evaluated like any other model."""

from __future__ import annotations

from pathlib import Path

import pytest

from distillapp.core.runs.models import RunStatus
from distillapp.evaluation import run_services
from distillapp.evaluation.models import EvalAnswer
from distillapp.evaluation.run_services import ModelChoice
from distillapp.training.models import TrainingArtifact

pytestmark = pytest.mark.slow


@pytest.fixture
def quantized(student, media) -> Path:
    pytest.importorskip("torchao")
    from workers.engine.quantize import quantize

    merged = TrainingArtifact.objects.get(run=student, name="merged")
    rel = Path(merged.path).parent / "quantized-int8"
    quantize(str(media / merged.path), str(media / rel), scheme="int8")
    TrainingArtifact.objects.create(run=student, name="quantized-int8", path=str(rel))
    return media / rel


def test_the_quantised_folder_loads_with_int8_weights_close_to_the_merged_model(
    quantized, student, media
):
    import torch

    from workers.engine import generate_local as gl

    merged = gl.load(str(media / TrainingArtifact.objects.get(run=student, name="merged").path))
    loaded = gl.load(str(quantized), device="cpu")
    weight = loaded.model.model.layers[0].self_attn.q_proj.weight
    assert "Int8" in type(weight).__name__, type(weight)
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    with torch.no_grad():
        gap = (loaded.model(ids).logits - merged.model(ids).logits).abs().max().item()
    assert 0 < gap < 0.05  # rounded weights, so not identical, yet the same model


@pytest.mark.django_db(transaction=True)
def test_an_eval_run_answers_with_the_quantised_student(
    quantized, project, alice, student, eval_sets, sent_tasks
):
    from workers.tasks.evaluation import run_eval

    run = run_services.eval_run_create(
        project=project,
        models=[
            ModelChoice(kind="student", id=student.pk, artifact="merged"),
            ModelChoice(kind="student", id=student.pk, artifact="quantized-int8"),
        ],
        eval_set_ids=[s.pk for s in eval_sets],
        decoding={"max_tokens": 5},
        user=alice,
    )
    assert run_eval.apply(args=(run.pk,)).get() == "succeeded"
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.message
    key = f"student-{student.pk}-quantized-int8"
    answers = EvalAnswer.objects.filter(run=run, model_key=key)
    assert answers.count() == 7 and all(a.ok for a in answers)
    assert run.results["perf"][key]["tokens_per_s_batch1"] > 0
    assert "exact_match" in run.results["subsets"]["all"][key]["overall"]
