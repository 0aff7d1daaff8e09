"""Projects and labeler accounts."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction

from annotation.errors import ServiceValidationError
from annotation.models import Project, TaskType
from annotation.services.tokens import api_token_issue

LABELERS_GROUP = "labelers"
# Staff made by `create_labeler --staff`: the admin's and the staff API's permissions over
# the labeling, lineage and training records (view, add, change; deleting stays with
# superusers, as the records are the history a model version traces back to).
PROJECT_ADMINS_GROUP = "project admins"
PROJECT_ADMIN_APPS = ("annotation", "lineage", "training")
PROJECT_ADMIN_ACTIONS = ("view", "add", "change")
# Deleting stays with superusers, except revoking an API token (a leaked key must be stopped
# by whoever manages the labelers).
PROJECT_ADMIN_EXTRA = ("annotation.delete_apitoken",)


def _validation_errors(exc: ValidationError) -> dict:
    return exc.message_dict if hasattr(exc, "error_dict") else {"__all__": exc.messages}


@transaction.atomic
def project_create(
    *,
    slug: str,
    name: str | None = None,
    task_type: str = TaskType.RANKING,
    num_candidates: int | None = None,
    overlap: int = 1,
    allow_ties: bool = True,
    guidelines: str = "",
    **extra,
) -> Project:
    """Create a project; pairwise projects get K=2 unless told otherwise (and then fail)."""
    if Project.objects.filter(slug=slug).exists():
        raise ServiceValidationError(f"Project {slug!r} already exists.", {"slug": ["exists"]})
    if num_candidates is None:
        num_candidates = 2 if task_type == TaskType.PAIRWISE else 4
    project = Project(
        slug=slug,
        name=name or slug,
        task_type=task_type,
        num_candidates=num_candidates,
        overlap=overlap,
        allow_ties=allow_ties,
        guidelines=guidelines,
        **extra,
    )
    try:
        project.full_clean()
    except ValidationError as exc:
        errors = _validation_errors(exc)
        first = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in errors.items())
        raise ServiceValidationError(f"Invalid project: {first}", errors) from exc
    project.save()
    return project


@transaction.atomic
def project_update(*, project: Project, **changes) -> Project:
    """Change a project's settings, validated like the admin does.

    Settings that shape stored rankings (`task_type`, `num_candidates`, `allow_ties`,
    `rating_scale`, flag codes in use) are refused once the project has comparisons
    (SPEC section 11); nothing is written then.
    """
    project = Project.objects.select_for_update().get(pk=project.pk)
    unknown = sorted(set(changes) - {f.name for f in Project._meta.concrete_fields})
    if unknown:
        raise ServiceValidationError(
            f"Unknown project settings: {', '.join(unknown)}.",
            {name: ["unknown"] for name in unknown},
        )
    for name, value in changes.items():
        setattr(project, name, value)
    try:
        project.full_clean()
    except ValidationError as exc:
        errors = _validation_errors(exc)
        first = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in errors.items())
        raise ServiceValidationError(f"Project {project.slug}: {first}", errors) from exc
    project.save()
    return project


def labelers_group() -> Group:
    group, _ = Group.objects.get_or_create(name=LABELERS_GROUP)
    return group


def project_admins_group() -> Group:
    """The "project admins" group, its permissions brought up to date with the models."""
    group, _ = Group.objects.get_or_create(name=PROJECT_ADMINS_GROUP)
    wanted = Permission.objects.filter(content_type__app_label__in=PROJECT_ADMIN_APPS).filter(
        codename__regex=rf"^({'|'.join(PROJECT_ADMIN_ACTIONS)})_"
    )
    extra = Permission.objects.none()
    for name in PROJECT_ADMIN_EXTRA:
        app_label, codename = name.split(".")
        extra |= Permission.objects.filter(content_type__app_label=app_label, codename=codename)
    group.permissions.add(*wanted, *extra)
    return group


@transaction.atomic
def labeler_create(
    *,
    username: str,
    projects: list[Project] = (),
    staff: bool = False,
    password: str | None = None,
    email: str = "",
    new_token: bool = False,
) -> tuple[object, str]:
    """Create (or update) a labeler, add them to projects; returns (user, a new API key).

    Every call issues a key and returns it: the only time it is shown, since keys are stored
    hashed. Running it again for an existing user adds memberships and an additional key
    (earlier ones stay valid) unless `new_token`, which revokes the others. Onboarding
    scripts can be re-run safely.
    """
    User = get_user_model()
    if not username or len(username) > 150:
        raise ServiceValidationError(
            "A username of 1-150 characters is required.", {"username": ["invalid"]}
        )
    try:
        User.username_validator(username)
    except ValidationError as exc:
        raise ServiceValidationError(
            f"username {username!r}: {' '.join(exc.messages)}", {"username": exc.messages}
        ) from None
    existing = User.objects.filter(username=username).first()
    if password:
        # Django's AUTH_PASSWORD_VALIDATORS, as the admin and password forms apply them.
        candidate = existing or User(username=username, email=email)
        try:
            validate_password(password, user=candidate)
        except ValidationError as exc:
            raise ServiceValidationError(
                f"password: {' '.join(exc.messages)}", {"password": exc.messages}
            ) from None
    user, created = User.objects.get_or_create(username=username, defaults={"email": email})
    if password:
        user.set_password(password)
    elif created:
        user.set_unusable_password()
    if staff:
        user.is_staff = True
    user.save()
    user.groups.add(labelers_group())
    if staff:
        user.groups.add(project_admins_group())
    for project in projects:
        project.members.add(user)
    # Keys are stored hashed, so an existing key cannot be shown again: a re-run issues an
    # additional one (SPEC section 4: the last line printed is always a usable token), and
    # `new_token` revokes the others.
    key = api_token_issue(user, replace=new_token or created)
    return user, key
