"""The one signal: labelers leaving a project give back the slots their leases held.

A signal rather than a service because the membership changes through Django's own
many-to-many API from both sides (the project's admin form, a user's `labeling_projects`,
the shell); every path sends `m2m_changed`.
"""

from __future__ import annotations

from django.db.models.signals import m2m_changed
from django.dispatch import receiver

from annotation.models import Project
from annotation.services.labeling import leases_release


@receiver(m2m_changed, sender=Project.members.through)
def _release_leases_of_leaving_members(sender, instance, action, reverse, pk_set, **kwargs):
    if action == "post_remove":
        others = pk_set
    elif action == "pre_clear":  # pk_set is None: read who is about to leave
        others = set(
            (instance.labeling_projects if reverse else instance.members).values_list(
                "pk", flat=True
            )
        )
    else:
        return
    if not others:
        return
    if reverse:  # instance is the user, pk_set the projects they leave
        leases_release(project_ids=others, labeler_ids=[instance.pk])
    else:
        leases_release(project_ids=[instance.pk], labeler_ids=others)
