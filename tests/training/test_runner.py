"""The worker side with real child processes: inspection (and its exact errors), a run trained,
stopped mid-way, resumed to the end (each step once), merged, downloaded, loaded with peft, and
quantised. Tiny models on the CPU."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from distillapp.core.runs.models import RunStatus
from distillapp.core.runs.services import run_cancel
from distillapp.generation.models import TeacherKind
from distillapp.training import runner, selectors, services
from distillapp.training.artifacts import artifact_download
from distillapp.training.models import (
    BaseModel,
    TrainingArtifact,
    TrainingMetric,
    TrainingRun,
)
from tests.factories import TeacherFactory
from tests.training.conftest import FAST

pytestmark = [pytest.mark.slow, pytest.mark.django_db]


def _inspect(project, alice, sent_tasks, **location) -> BaseModel:
    b = services.base_model_create(project=project, user=alice, name="student", **location)
    result = runner.base_model_inspect_execute(base_model_id=b.pk)
    assert result is not None
    return result


def test_inspection_reports_the_model_and_kd_per_local_teacher(
    project, alice, tiny_base, tiny_other_vocab, sent_tasks, media
):
    same = TeacherFactory(project=project, kind=TeacherKind.HF_LOCAL, model_path=str(tiny_base))
    other = TeacherFactory(
        project=project, kind=TeacherKind.HF_LOCAL, model_path=str(tiny_other_vocab)
    )
    b = _inspect(project, alice, sent_tasks, path=str(tiny_base))
    assert b.status == RunStatus.SUCCEEDED, b.message
    i = b.inspection
    assert i["architecture"] == "LlamaForCausalLM"
    assert (
        i["parameters"] > 1000
        and i["vocab_size"] == i["model_vocab_rows"] > 90
        and i["dtype"] == "float32"
    )
    assert i["chat_template"] is False and i["context_length"] == 512 and i["size_bytes"] > 0
    assert b.resolved_path == str(tiny_base)
    rows = {r["teacher_id"]: r for r in selectors.base_model_teachers(base_model=b)}
    assert rows[same.pk]["kd"] is True and rows[same.pk]["sft"] is True
    assert rows[other.pk]["kd"] is False and "SFT still works" in rows[other.pk]["reason"]


def test_a_corrupt_folder_fails_with_an_exact_sentence(project, alice, tmp_path, sent_tasks):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.json").write_text("{not json")
    b = _inspect(project, alice, sent_tasks, path=str(folder))
    assert b.status == RunStatus.FAILED
    assert b.message == (
        f"config.json ({folder}/config.json) is not valid JSON: Expecting property name "
        "enclosed in double quotes at line 1."
    )
    assert "Traceback" not in b.message


def test_a_hub_id_missing_from_the_cache_gets_a_clear_error(project, alice, sent_tasks, media):
    b = _inspect(project, alice, sent_tasks, hub_id="someone/not-cached-model")
    assert b.status == RunStatus.FAILED
    assert b.message.startswith("someone/not-cached-model is not in the model cache (")
    assert str(media / "hf-cache") in b.message and "workers do not download" in b.message


def test_a_hub_id_in_the_cache_resolves_and_inspects(project, alice, tiny_base, sent_tasks, media):
    """A cache laid out as huggingface_hub writes it (refs/main → snapshots/<rev>)."""
    repo = media / "hf-cache" / "models--acme--tiny"
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    for f in tiny_base.iterdir():
        (snap / f.name).symlink_to(f)
    b = _inspect(project, alice, sent_tasks, hub_id="acme/tiny")
    assert b.status == RunStatus.SUCCEEDED, b.message
    assert b.resolved_path == str(snap) and b.inspection["vocab_size"] > 90


def test_train_stop_resume_merge_download_and_quantise(
    project, alice, version, base_model, sent_tasks, monkeypatch
):
    run = services.training_run_launch(
        project=project, user=alice, dataset_version_id=version.pk,
        base_model_id=base_model.pk, config=FAST,
    )  # fmt: skip
    # Someone presses Stop while step 3 is logged; the worker sees it at its next heartbeat.
    monkeypatch.setattr(runner, "HEARTBEAT_SECONDS", 0.0)
    original = runner._Supervisor.on_row

    def on_row(self, row):
        original(self, row)
        if row["step"] == 3:
            run_cancel(TrainingRun.objects.get(pk=self.run.pk))

    monkeypatch.setattr(runner._Supervisor, "on_row", on_row)
    run = runner.training_run_execute(run_id=run.pk)
    assert run.status == RunStatus.CANCELLED, (run.message, run.log_tail[-2000:])
    stopped_at = run.result["global_step"]
    assert 3 <= stopped_at < 8 and "resuming continues" in run.message
    assert run.metrics["device"] == "cpu" and run.metrics["peak_memory_mb"] > 0
    assert list(TrainingMetric.objects.filter(run=run).values_list("step", flat=True)) == list(
        range(1, stopped_at + 1)
    )

    monkeypatch.setattr(runner._Supervisor, "on_row", original)
    run = services.training_run_resume(run=run)
    run = runner.training_run_execute(run_id=run.pk)
    assert run.status == RunStatus.SUCCEEDED, (run.message, run.log_tail[-3000:])
    steps = list(TrainingMetric.objects.filter(run=run).values_list("step", flat=True))
    assert steps == list(range(1, 9))
    assert all(
        m.train_loss is not None and m.learning_rate is not None and m.grad_norm is not None
        for m in TrainingMetric.objects.filter(run=run)
    )
    assert TrainingMetric.objects.filter(run=run, eval_loss__isnull=False).exists()
    summary = selectors.training_run_summary(run=run)
    assert summary["train_loss"] == run.result["train_loss"] and summary["eval_loss"] is not None
    assert any(f"resuming from step {stopped_at}" in line for line in summary["log_tail"])
    assert [m.step for m in selectors.training_metrics(run=run, since_step=6)] == [7, 8]

    names = {a.name: a for a in TrainingArtifact.objects.filter(run=run)}
    assert set(names) == {"adapter", "merged"}
    response = artifact_download(artifact=names["adapter"])
    body = b"".join(response.streaming_content)
    archive = zipfile.ZipFile(io.BytesIO(body))
    listed = {n.split("/", 1)[1] for n in archive.namelist()}
    assert {"adapter_model.safetensors", "adapter_config.json", "metrics.jsonl", "README.md",
            "training_config.json", "run.json"} <= listed  # fmt: skip
    assert not any(n.startswith(("checkpoints", "merged")) for n in listed)
    card = archive.read(f"run-{run.pk}-adapter/README.md").decode()
    assert "ab" * 32 in card and "Method: sft" in card and "Final train loss" in card
    metrics_lines = archive.read(f"run-{run.pk}-adapter/metrics.jsonl").decode().splitlines()
    assert [json.loads(x)["step"] for x in metrics_lines if '"loss"' in x][-1] == 8

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    folder = services.run_folder(run)
    base = AutoModelForCausalLM.from_pretrained(base_model.resolved_path)
    student = PeftModel.from_pretrained(base, str(folder))
    merged = AutoModelForCausalLM.from_pretrained(str(folder / "merged"))
    ids = torch.tensor([[5, 6, 7, 8]])
    torch.testing.assert_close(student(ids).logits, merged(ids).logits, atol=1e-4, rtol=1e-4)

    pytest.importorskip("torchao")
    with pytest.raises(Exception, match="cuda|CUDA"):
        from workers.engine.quantize import int4_supported

        raise RuntimeError(int4_supported())
    q = services.training_run_quantize(run=run, user=alice)
    q = runner.quantization_execute(quantization_id=q.pk)
    assert q.status == RunStatus.SUCCEEDED, q.message
    artefact = TrainingArtifact.objects.get(run=run, name="quantized-int8")
    m = artefact.metrics
    assert m["eval_loss"] is not None and m["source_eval_loss"] is not None
    assert abs(m["eval_loss"] - m["source_eval_loss"]) < 0.5
    assert artefact.size_bytes > 0 and m["source_size_bytes"] > 0
    assert (
        TrainingArtifact.objects.get(run=run, name="merged").metrics["validation_loss"]
        == (m["source_eval_loss"])
    )
