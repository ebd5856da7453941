"""factory_boy factories for the whole domain. Add a factory here for every new model."""

from __future__ import annotations

import hashlib

import factory
from django.contrib.auth import get_user_model

from distillapp.accounts.models import Membership, Organization, Role
from distillapp.generation.models import Completion, GenerationJob, Teacher, TeacherKind
from distillapp.projects.models import Project
from distillapp.prompts.models import Prompt, PromptSet, Split


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.PostGenerationMethodCall("set_password", "password")

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):  # noqa: N805
        if create:
            obj.save()


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization

    name = factory.Sequence(lambda n: f"Org {n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    org = factory.SubFactory(OrganizationFactory)
    role = Role.ADMIN


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    org = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"Project {n}")
    guidelines_md = "Be **helpful**."


class PromptSetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PromptSet

    project = factory.SubFactory(ProjectFactory)
    name = factory.Sequence(lambda n: f"Prompt set {n}")


class PromptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prompt

    prompt_set = factory.SubFactory(PromptSetFactory)
    project = factory.SelfAttribute("prompt_set.project")
    position = factory.Sequence(lambda n: n)
    text = factory.Sequence(lambda n: f"What is {n} + {n}?")
    messages = factory.LazyAttribute(lambda o: [{"role": "user", "content": o.text}])
    split = Split.TRAIN
    text_hash = factory.LazyAttribute(lambda o: hashlib.sha256(o.text.encode()).hexdigest()[:32])


class TeacherFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Teacher

    project = factory.SubFactory(ProjectFactory)
    name = factory.Sequence(lambda n: f"Teacher {n}")
    kind = TeacherKind.OPENAI
    base_url = "http://127.0.0.1:9/v1"
    model = "teacher-model"
    decoding = factory.LazyFunction(lambda: {"temperature": 0.7, "max_tokens": 64})


class GenerationJobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = GenerationJob

    teacher = factory.SubFactory(TeacherFactory)
    project = factory.SelfAttribute("teacher.project")
    prompt_set = factory.SubFactory(PromptSetFactory, project=factory.SelfAttribute("..project"))
    teacher_snapshot = factory.LazyAttribute(
        lambda o: {"name": o.teacher.name, "model": o.teacher.model}
    )


class CompletionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Completion

    job = factory.SubFactory(GenerationJobFactory)
    prompt = factory.SubFactory(PromptFactory, prompt_set=factory.SelfAttribute("..job.prompt_set"))
    sample_index = 0
    text = factory.Sequence(lambda n: f"The answer is {n}.")
    finish_reason = "stop"


# ---- filters ---------------------------------------------------------------------------------


class CompletionVerdictFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "filters.CompletionVerdict"

    completion = factory.SubFactory(CompletionFactory)
    project = factory.SelfAttribute("completion.job.project")
    state = "filtered"
    flags = factory.LazyFunction(lambda: ["refusal"])
    reasons = factory.LazyFunction(
        lambda: {"refusal": "Contains the refusal phrase “I'm sorry, but I can't”."}
    )


class FilterRunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "filters.FilterRun"

    project = factory.SubFactory(ProjectFactory)
    status = "succeeded"


# ---- review ----------------------------------------------------------------------------------


class ReviewItemFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "review.ReviewItem"

    completion = factory.SubFactory(CompletionFactory)
    project = factory.SelfAttribute("completion.job.project")
    job = factory.SelfAttribute("completion.job")
    prompt = factory.SelfAttribute("completion.prompt")
    state = "open"


class ReviewFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "review.Review"

    completion = factory.SubFactory(CompletionFactory)
    project = factory.SelfAttribute("completion.job.project")
    reviewer = factory.SubFactory(UserFactory)
    decision = "approve"
    original_text = factory.SelfAttribute("completion.text")
