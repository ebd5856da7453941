from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from workers.engine.__main__ import main

ROOT = Path(__file__).resolve().parents[2]


def _train_cli(base: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train", "--data", str(data), "--base", str(base), "--out", str(out),
        "--batch-size", "4", "--lr", "5e-3", "--max-length", "64", "--lora-r", "4",
        "--logging-steps", "1", *extra,
    ]  # fmt: skip


@pytest.fixture
def trained(base_dir: Path, sft_data: Callable[..., Path], tmp_path: Path) -> Path:
    out = tmp_path / "run"
    assert main(_train_cli(base_dir, sft_data(), out, "--max-steps", "6", "--save-steps", "3")) == 0
    return out


def test_merged_folder_loads_without_peft_and_matches_the_adapter(
    trained: Path, tmp_path: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from workers.engine.merge import base_model_of

    merged_dir = tmp_path / "merged"
    assert main(["merge", "--adapter", str(trained), "--out", str(merged_dir)]) == 0
    assert not (merged_dir / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    assert not any("lora" in name for name, _ in merged.named_parameters())
    base = AutoModelForCausalLM.from_pretrained(base_model_of(str(trained)))
    adapted = PeftModel.from_pretrained(base, str(trained)).eval()
    ids = torch.randint(4, 100, (2, 12))
    with torch.no_grad():
        want = adapted(ids).logits
        got = merged(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(base_model_of(str(trained)))(ids).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert (got - plain).abs().max() > 1e-3  # the adapter changed something


def test_generate_cli_writes_one_completion_per_prompt(trained: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        "\n".join(
            json.dumps({"messages": [{"role": "user", "content": f"q{i}"}]}) for i in range(5)
        )
    )
    out = tmp_path / "gen.jsonl"
    argv = ["generate", "--model", str(trained), "--data", str(prompts), "--out", str(out)]
    assert main([*argv, "--batch-size", "2", "--max-new-tokens", "5"]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["messages"][0]["content"] for r in rows] == [f"q{i}" for i in range(5)]
    assert all(isinstance(r["completion"], str) and len(r["completion"]) <= 5 for r in rows)


def test_cli_reports_bad_data_with_line_numbers(
    base_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"messages": [], "completion": "x"}\nnope\n')
    assert main(_train_cli(base_dir, data, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "line 1:" in err and "line 2: not valid JSON" in err


@pytest.mark.slow
def test_resume_after_sigkill_continues_the_step_count(
    base_dir: Path, sft_data: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    data = sft_data(repeat=20)
    argv = _train_cli(base_dir, data, out, "--max-steps", "60", "--save-steps", "10")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    # A slow-down hook would be nicer, but a real process killed at a real point is the test.
    proc = subprocess.Popen([sys.executable, "-m", "workers.engine", *argv], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 90
    ckpt = out / "checkpoints" / "checkpoint-20"
    while time.time() < deadline and not (ckpt / "trainer_state.json").exists():
        assert proc.poll() is None, "training ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "summary.json").exists()
    logged = [
        json.loads(x)["step"]
        for x in (out / "metrics.jsonl").read_text().splitlines()
        if x.strip().endswith("}")
    ]
    assert 20 <= max(logged) < 60

    assert main([*argv, "--resume"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["global_step"] == 60
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 61))  # the curve carries on: no gap, no repeat
    run = json.loads((out / "run.json").read_text())
    resumed_at = int(Path(run["resumed_from"]).name.split("-")[-1])
    assert 20 <= resumed_at < 60 and resumed_at % 10 == 0
