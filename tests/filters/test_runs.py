from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from distillapp.filters.config import DEFAULT_RUBRIC
from distillapp.filters.models import CompletionVerdict, FilterRun, RunStatus, VerdictState
from distillapp.filters.selectors import filter_summary
from distillapp.filters.services import (
    filter_config_update,
    filter_run_execute,
    verdict_restore,
    verdict_unrestore,
)
from distillapp.generation.models import CompletionStatus
from tests.factories import (
    CompletionFactory,
    GenerationJobFactory,
    PromptFactory,
    TeacherFactory,
)
from tests.filters.conftest import filter_job
from workers.tasks.filters import execute_filter_run

LONG = "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen inside chloroplasts of plant cells."


@pytest.fixture
def job(project):
    return GenerationJobFactory(project=project, teacher=TeacherFactory(project=project))


def _completion(
    job,
    text,
    *,
    finish_reason="stop",
    prompt_text=None,
    reference=None,
    status=CompletionStatus.OK,
    sample_index=0,
):
    prompt = PromptFactory(
        prompt_set=job.prompt_set,
        reference=reference,
        **({"text": prompt_text} if prompt_text else {}),
    )
    return CompletionFactory(
        job=job,
        prompt=prompt,
        text=text,
        finish_reason=finish_reason,
        status=status,
        sample_index=sample_index,
    )


def _verdict(completion):
    return CompletionVerdict.objects.get(completion=completion)


@pytest.mark.django_db
def test_a_job_run_writes_one_verdict_per_ok_completion_with_reasons(job):
    good = _completion(job, LONG)
    empty = _completion(job, "   ")
    cut = _completion(job, "Photosynthesis is the process by which", finish_reason="length")
    refusal = _completion(job, "I'm sorry, but I can't help with homework.")
    loop = _completion(job, "and then " * 40)
    echo = _completion(
        job,
        "Tell me about the water cycle in detail please",
        prompt_text="Tell me about the water cycle in detail please",
    )
    wrong = _completion(job, "The answer is 5.", reference="4")
    right = _completion(job, "2 + 2 = 4, so the answer is 4.", reference="4")
    failed = _completion(job, "", status=CompletionStatus.FAILED)

    run = filter_job(job)

    assert FilterRun.objects.get(pk=run).status == RunStatus.SUCCEEDED
    assert _verdict(good).state == VerdictState.PASSED and _verdict(good).flags == []
    assert _verdict(empty).flags == ["empty"] and "whitespace" in _verdict(empty).reasons["empty"]
    assert _verdict(cut).flags == ["truncated"]
    assert _verdict(refusal).flags == ["refusal"]
    assert _verdict(loop).flags == ["repetition"]
    assert _verdict(echo).flags == ["echo"]
    assert _verdict(wrong).flags == ["reference"]
    assert _verdict(right).state == VerdictState.PASSED
    assert not CompletionVerdict.objects.filter(completion=failed).exists()
    assert all(
        _verdict(c).state == VerdictState.FILTERED for c in (empty, cut, refusal, loop, echo, wrong)
    )


@pytest.mark.django_db
def test_rerunning_is_idempotent_and_follows_a_changed_config(job, project):
    a = _completion(job, LONG)
    b = _completion(job, "Short one.")
    filter_job(job)
    filter_job(job)
    assert CompletionVerdict.objects.filter(project=project).count() == 2
    assert _verdict(b).state == VerdictState.PASSED

    filter_config_update(project=project, data={"min_chars": 20})
    filter_job(job)
    assert CompletionVerdict.objects.filter(project=project).count() == 2
    assert _verdict(b).flags == ["length"] and _verdict(a).state == VerdictState.PASSED
    assert FilterRun.objects.filter(job=job).count() == 3


@pytest.mark.django_db
def test_exact_and_near_duplicates_keep_exactly_one_per_group(job, project):
    base = LONG + " It happens mostly in leaves, where chlorophyll absorbs red and blue light."
    exact = [_completion(job, base, sample_index=i) for i in range(3)]
    near = _completion(job, base.replace("mostly", "largely"))
    other = _completion(
        job, "Mitochondria are the powerhouse of the cell; they make ATP by respiration."
    )
    filter_job(job)

    group = [*exact, near]
    kept = [c for c in group if _verdict(c).state == VerdictState.PASSED]
    assert kept == [exact[0]]
    for c in exact[1:]:
        assert (
            _verdict(c).flags == ["exact_duplicate"] and _verdict(c).duplicate_of_id == exact[0].pk
        )
    assert (
        _verdict(near).flags == ["near_duplicate"] and _verdict(near).duplicate_of_id == exact[0].pk
    )
    assert "Jaccard" in _verdict(near).reasons["near_duplicate"]
    assert _verdict(other).state == VerdictState.PASSED


@pytest.mark.django_db
def test_the_kept_duplicate_is_one_that_passed_the_other_filters(job):
    truncated = _completion(job, LONG, finish_reason="length")
    clean = _completion(job, LONG, sample_index=1)
    filter_job(job)
    assert _verdict(clean).state == VerdictState.PASSED
    assert set(_verdict(truncated).flags) == {"truncated", "exact_duplicate"}


@pytest.mark.django_db
def test_a_later_job_duplicating_an_earlier_one_loses_to_the_earlier(project, job):
    first = _completion(job, LONG)
    filter_job(job)
    job2 = GenerationJobFactory(project=project, teacher=job.teacher, prompt_set=job.prompt_set)
    second = _completion(job2, LONG)
    filter_job(job2)
    assert _verdict(first).state == VerdictState.PASSED
    assert (
        _verdict(second).flags == ["exact_duplicate"]
        and _verdict(second).duplicate_of_id == first.pk
    )


@pytest.mark.django_db
def test_restore_keeps_reasons_and_survives_a_rerun_and_can_be_undone(job, bob):
    c = _completion(job, "I'm sorry, but I can't do that.")
    filter_job(job)
    verdict = verdict_restore(completion=c, user=bob)
    assert (
        verdict.state == VerdictState.RESTORED
        and verdict.restored_by == bob
        and verdict.restored_at
    )
    assert "refusal" in verdict.reasons
    filter_job(job)
    again = _verdict(c)
    assert again.state == VerdictState.RESTORED and again.flags == ["refusal"]
    back = verdict_unrestore(completion=c, user=bob)
    assert back.state == VerdictState.FILTERED and back.restored_by is None


@pytest.mark.django_db
def test_only_filtered_completions_can_be_restored(job, bob):
    c = _completion(job, LONG)
    with pytest.raises(ValidationError):
        verdict_restore(completion=c, user=bob)  # no verdict yet
    filter_job(job)
    with pytest.raises(ValidationError):
        verdict_restore(completion=c, user=bob)  # passed


@pytest.mark.django_db
def test_disabled_filters_do_not_run(job, project):
    c = _completion(job, "I'm sorry, but I can't.", finish_reason="length")
    filter_config_update(project=project, data={"enabled": ["empty"]})
    filter_job(job)
    assert _verdict(c).state == VerdictState.PASSED


@pytest.mark.django_db
def test_a_prompt_can_choose_its_reference_mode(job, project):
    c = _completion(job, "  4 ", reference="4")
    c.prompt.metadata = {"reference_mode": "exact"}
    c.prompt.save()
    filter_config_update(project=project, data={"reference_mode": "numeric"})
    filter_job(job)
    assert _verdict(c).state == VerdictState.PASSED
    c.text = "The answer is 4"
    c.save()
    filter_job(job)
    assert _verdict(c).flags == ["reference"]


@pytest.mark.django_db
def test_an_on_demand_run_is_claimed_once(project, job, alice):
    _completion(job, LONG)
    run = FilterRun.objects.create(project=project, created_by=alice)
    execute_filter_run.run(run.pk)
    assert FilterRun.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED
    assert filter_run_execute(run_id=run.pk) is None  # a second delivery does nothing
    assert FilterRun.objects.get(pk=run.pk).counts["total"] == 1


@pytest.mark.django_db
def test_a_missing_run_is_ignored(db):
    assert execute_filter_run.run(987654) is None


@pytest.mark.django_db
def test_summary_counts_states_and_flags(job, project):
    _completion(job, LONG)
    _completion(job, "")
    _completion(job, "I'm sorry, but I can't.")
    _completion(job, "pending")
    filter_job(job)
    _completion(job, "not checked yet")
    summary = filter_summary(project=project)
    assert summary["completions"] == 5
    assert summary["unfiltered"] == 1
    assert summary["by_state"]["filtered"] == 2
    counts = {f["name"]: f["count"] for f in summary["by_filter"]}
    assert counts["empty"] == 1 and counts["refusal"] == 1 and counts["judge"] == 0


# ---- the judge ---------------------------------------------------------------------------


@pytest.fixture
def judge(project, judge_server):
    teacher = TeacherFactory(
        project=project,
        name="Judge",
        base_url=judge_server.base_url,
        model="judge-model",
        concurrency=4,
    )
    filter_config_update(
        project=project,
        data={
            "enabled": ["empty", "refusal", "exact_duplicate", "near_duplicate", "judge"],
            "judge_teacher_id": teacher.pk,
            "judge_threshold": 6,
        },
    )
    return teacher


@pytest.mark.django_db
def test_the_judge_scores_passing_completions_and_filters_low_scores(job, judge, judge_server):
    good = _completion(job, "GOOD answer about photosynthesis and light.")
    bad = _completion(job, "BAD answer that is wrong about everything here.")
    prose = _completion(job, "PROSE answer that the judge grades in words.")
    garbage = _completion(job, "GARBAGE that the judge cannot score at all.")
    echo = _completion(job, "ECHO of a rubric that says from 1 to 10, not a score.")
    broken = _completion(job, "BROKEN request the judge server rejects outright.")
    refused = _completion(job, "I'm sorry, but I can't answer that one.")

    run = filter_job(job)

    assert _verdict(good).judge_score == 9 and _verdict(good).state == VerdictState.PASSED
    assert _verdict(good).judge_rationale == "Rubric says 9." and not _verdict(good).judge_error
    assert _verdict(bad).judge_score == 2 and _verdict(bad).flags == ["judge"]
    assert "below the threshold 6" in _verdict(bad).reasons["judge"]
    # Replies that are not the JSON asked for are errors with the reply kept, never a score
    # (the old fallback read 7 out of "7/10" and 1 out of the echoed rubric).
    for unreadable in (prose, garbage, echo):
        v = _verdict(unreadable)
        assert v.judge_score is None and v.state == VerdictState.PASSED and v.flags == []
        assert v.reasons["judge"].startswith("The judge failed")
        assert "not the JSON object asked for" in v.judge_error
        assert v.judge_reply and v.judge_reply == unreadable_reply(judge_server, unreadable.text)
    assert "Rubric:" in _verdict(echo).judge_reply
    v = _verdict(broken)
    assert v.judge_score is None and v.state == VerdictState.PASSED
    assert "BadRequestError" in v.judge_error and v.judge_reply == ""
    assert _verdict(refused).judge_score is None  # filtered before the judge: no call paid
    # The review queue's bulk filter ("judge >= 8 and no flags") is a plain query on both databases.
    confident = CompletionVerdict.objects.filter(project=job.project, judge_score__gte=8, flags=[])
    assert list(confident.values_list("completion_id", flat=True)) == [good.pk]
    counts = FilterRun.objects.get(pk=run).counts
    assert counts["judge_errors"] == 4 and counts["filtered"] == 2
    asked = {_answer(r) for r in judge_server.requests}
    assert asked == {c.text for c in (good, bad, prose, garbage, echo, broken)}
    request = judge_server.requests[0]
    assert request["model"] == "judge-model" and request["temperature"] == 0
    assert DEFAULT_RUBRIC.splitlines()[0] in request["messages"][-1]["content"]
    # Structured output is asked for on every call (this endpoint takes it).
    assert all(
        r["response_format"]["type"] == "json_schema"
        for r in judge_server.requests
        if "BROKEN" not in _answer(r)
    )


def _answer(request):
    user = request["messages"][-1]["content"]
    return user.split("<answer>\n", 1)[1].split("\n</answer>", 1)[0]


def unreadable_reply(server, text):
    """What the loopback judge answered for `text` (a non-JSON reply)."""
    for r in server.requests:
        if _answer(r) == text:
            user = r["messages"][-1]["content"]
            if "GARBAGE" in text:
                return "I cannot decide."
            if "ECHO" in text:
                return user
            return "Solid work overall. I'd give it 7/10 because it is mostly right."
    raise AssertionError(text)


@pytest.mark.django_db
def test_a_rerun_reuses_scores_from_the_same_judge_and_rescoring_follows_the_rubric(
    job, judge, judge_server, project
):
    c = _completion(job, "MEH answer of middling quality, honestly.")
    filter_job(job)
    assert _verdict(c).judge_score == 5 and _verdict(c).flags == ["judge"]
    filter_job(job)
    assert len(judge_server.requests) == 1
    filter_config_update(
        project=project, data={**project.settings["filters"], "judge_threshold": 4}
    )
    filter_job(job)
    assert len(judge_server.requests) == 1  # threshold only: no new calls
    assert _verdict(c).state == VerdictState.PASSED
    filter_config_update(
        project=project, data={**project.settings["filters"], "judge_rubric": "Be harsh."}
    )
    filter_job(job)
    assert len(judge_server.requests) == 2
    assert "Be harsh." in judge_server.requests[-1]["messages"][-1]["content"]


@pytest.mark.django_db
def test_the_judge_key_is_decrypted_and_sent(job, judge, judge_server):
    from distillapp.core.crypto import encrypt_secret

    judge.api_key_encrypted = encrypt_secret("sk-judge-secret")
    judge.save()
    seen = []
    _completion(job, "GOOD enough answer for the key check.")
    from tests.filters import conftest

    orig = conftest.JudgeHandler.do_POST

    def spy(self):
        seen.append(self.headers.get("Authorization"))
        return orig(self)

    conftest.JudgeHandler.do_POST = spy
    try:
        filter_job(job)
    finally:
        conftest.JudgeHandler.do_POST = orig
    assert seen == ["Bearer sk-judge-secret"]


def test_judge_config_validation_requires_a_usable_teacher_of_the_project(project, other_org):
    from tests.factories import ProjectFactory

    foreign = TeacherFactory(project=ProjectFactory(org=other_org))
    with pytest.raises(ValidationError) as exc:
        filter_config_update(project=project, data={"judge_teacher_id": foreign.pk})
    assert "judge_teacher_id" in exc.value.message_dict
    folderless = TeacherFactory(project=project, name="No folder", kind="hf_local", model_path="")
    with pytest.raises(ValidationError) as exc:
        filter_config_update(project=project, data={"judge_teacher_id": folderless.pk})
    assert "model folder" in exc.value.message_dict["judge_teacher_id"][0]
    local = TeacherFactory(project=project, name="Local", kind="hf_local", model_path="/models/x")
    assert filter_config_update(project=project, data={"judge_teacher_id": local.pk})
    with pytest.raises(ValidationError) as exc:
        filter_config_update(project=project, data={"enabled": ["judge"]})
    assert "judge_teacher_id" in exc.value.message_dict


def test_config_validation_reports_every_bad_field(project):
    with pytest.raises(ValidationError) as exc:
        filter_config_update(
            project=project,
            data={
                "min_chars": 50,
                "max_chars": 10,
                "repetition_threshold": "lots",
                "reference_mode": "fuzzy",
                "dedup_threshold": 1.5,
                "enabled": ["nope"],
                "judge_rubric": " ",
                "surprise": 1,
            },
        )
    errors = exc.value.message_dict
    assert set(errors) >= {
        "max_chars",
        "repetition_threshold",
        "reference_mode",
        "dedup_threshold",
        "enabled",
        "judge_rubric",
        "surprise",
    }


@pytest.mark.django_db
def test_two_jobs_filtered_in_either_order_keep_the_same_one_of_a_shared_answer(project, job):
    job2 = GenerationJobFactory(project=project, teacher=job.teacher, prompt_set=job.prompt_set)
    first = _completion(job, LONG)
    second = _completion(job2, LONG)
    filter_job(job2)  # job 1 has no verdicts yet, as if its run were still going
    filter_job(job)
    assert _verdict(first).state == VerdictState.PASSED
    assert _verdict(second).flags == ["exact_duplicate"]


@pytest.mark.django_db
def test_a_filter_run_refreshes_the_review_queue(job):
    from distillapp.review.models import ItemState, ReviewItem

    good = _completion(job, LONG)
    empty = _completion(job, "   ")

    filter_job(job)

    states = dict(ReviewItem.objects.values_list("completion_id", "state"))
    assert states.get(good.pk) == ItemState.OPEN
    assert states.get(empty.pk) in (None, ItemState.EXCLUDED)
