from django.core.management.base import BaseCommand

from annotation.services.labeling import leases_expire


class Command(BaseCommand):
    help = (
        "Mark leases past their time as expired (housekeeping for the admin and stats; serving "
        "never waits for it). Safe to run from cron at any interval."
    )

    def handle(self, *args, **opts):
        expired = leases_expire()
        self.stdout.write(self.style.SUCCESS(f"expired {expired} leases"))
