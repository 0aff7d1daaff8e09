"""`make demo`'s setup: accounts, the demo project and real work to label; re-runnable."""

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from annotation.models import Comparison, Project

pytestmark = [pytest.mark.django_db, pytest.mark.ml]


def test_demo_setup_leaves_comparisons_to_label(settings, tmp_path):
    import torch

    torch.set_num_threads(2)
    settings.DATA_DIR = tmp_path
    out = io.StringIO()
    call_command("demo_setup", "--prompts", "8", "--policy-steps", "20", stdout=out)
    text = out.getvalue()
    assert "user 'labeler'" in text and "user 'admin'" in text
    project = Project.objects.get(slug="demo")
    labeler = get_user_model().objects.get(username="labeler")
    assert labeler.check_password("demo-pass") and project.members.filter(pk=labeler.pk).exists()
    assert get_user_model().objects.get(username="admin").is_superuser
    assert Comparison.objects.filter(project=project).count() == 8
    call_command("demo_setup", "--prompts", "8", "--policy-steps", "20", stdout=io.StringIO())
    assert Comparison.objects.filter(project=project).count() == 8  # nothing duplicated
