"""Local model paths: only configured roots and the organisation's own artefacts, same answer for
paths that exist and paths that do not, and only admins and owners may set one."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from distillapp.core.paths import REFUSED, ModelPathRefused, check_model_path, org_artifacts_dir
from distillapp.generation import services
from distillapp.generation.probe import teacher_test
from tests.factories import TeacherFactory


@pytest.fixture
def roots(settings, tmp_path):
    """One model root, a media folder, and a secret folder outside both."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "good").mkdir()
    (models / "good" / "config.json").write_text("{}")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "config.json").write_text("{}")
    settings.MODEL_ROOTS = [models]
    settings.MEDIA_ROOT = tmp_path / "media"
    return {"models": models, "secret": secret, "tmp": tmp_path}


def test_a_folder_under_a_root_is_allowed(roots) -> None:
    assert (
        check_model_path(str(roots["models"] / "good"), org_id=1)
        == (roots["models"] / "good").resolve()
    )


def test_dot_dot_out_of_a_root_is_refused(roots) -> None:
    with pytest.raises(ModelPathRefused):
        check_model_path(str(roots["models"] / ".." / "secret"), org_id=1)


def test_a_symlink_out_of_a_root_is_refused(roots) -> None:
    link = roots["models"] / "innocent"
    link.symlink_to(roots["secret"], target_is_directory=True)
    with pytest.raises(ModelPathRefused):
        check_model_path(str(link), org_id=1)


def test_the_own_organisations_artefacts_are_allowed_and_another_ones_are_not(
    roots, settings
) -> None:
    mine = org_artifacts_dir(1) / "checkpoints" / "step-10"
    theirs = org_artifacts_dir(2) / "checkpoints" / "step-10"
    for folder in (mine, theirs):
        folder.mkdir(parents=True)
    assert check_model_path(str(mine), org_id=1) == mine.resolve()
    with pytest.raises(ModelPathRefused):
        check_model_path(str(theirs), org_id=1)
    # Even when an operator's model root contains the media folder.
    settings.MODEL_ROOTS = [roots["tmp"]]
    with pytest.raises(ModelPathRefused):
        check_model_path(str(theirs), org_id=1)
    with pytest.raises(ModelPathRefused):
        check_model_path(str(org_artifacts_dir(1) / ".." / "2" / "checkpoints"), org_id=1)


def test_the_refusal_is_the_same_whether_the_path_exists_or_not(roots) -> None:
    messages = set()
    for path in ("/etc", "/no/such/folder/anywhere", str(roots["secret"])):
        with pytest.raises(ModelPathRefused) as exc:
            check_model_path(path, org_id=1)
        messages.add(str(exc.value))
    assert messages == {REFUSED}


@pytest.mark.django_db
@pytest.mark.parametrize("where", ["secret", "etc", "missing"])
def test_saving_a_teacher_outside_the_roots_names_model_path(roots, project, where) -> None:
    path = {
        "secret": str(roots["secret"]),
        "etc": "/etc",
        "missing": str(roots["tmp"] / "missing"),
    }[where]
    with pytest.raises(ValidationError) as exc:
        services.teacher_create(project=project, name="Local", kind="hf_local", model_path=path)
    assert exc.value.message_dict["model_path"] == [REFUSED]


@pytest.mark.django_db
def test_test_teacher_does_not_tell_which_paths_exist(roots, project) -> None:
    """A path saved before the rules (or under a root an operator later removed)."""
    results = [
        teacher_test(teacher=TeacherFactory(project=project, kind="hf_local", model_path=path))
        for path in ("/etc", "/no/such/folder")
    ]
    assert [r.error for r in results] == [REFUSED, REFUSED]
    assert not any(r.ok for r in results)


@pytest.mark.django_db
def test_only_admins_and_owners_may_set_a_model_path(roots, api_client, project, bob, adam) -> None:
    teacher = TeacherFactory(project=project, kind="hf_local", model_path=str(roots["models"]))
    url = f"/api/v1/teachers/{teacher.pk}"
    good = str(roots["models"] / "good")
    response = api_client(bob).patch(url, {"model_path": good}, content_type="application/json")
    assert response.status_code == 403
    response = api_client(adam).patch(url, {"model_path": good}, content_type="application/json")
    assert response.status_code == 200 and response.json()["model_path"] == good
    response = api_client(adam).patch(
        url, {"model_path": str(roots["secret"])}, content_type="application/json"
    )
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": "model_path", "message": REFUSED}]
