"""Browser views (placeholder until the labeling UI lands)."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from annotation.selectors import projects_for_user


@login_required
def home(request):
    return render(request, "annotation/home.html", {"projects": projects_for_user(request.user)})
