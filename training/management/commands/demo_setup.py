import io

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from annotation.models import Project
from annotation.services.imports import prompt_record, prompts_import
from annotation.services.projects import labeler_create, project_create
from training.management.commands.build_demo_policy import demo_policy_dir

GUIDELINES = """\
# Rank the answers

Put the **best** answer first. A good answer is:

1. **Correct**: right numbers and facts.
2. **Follows the instruction**: the format asked for (uppercase, one word, a list, ...).
3. **Brief**: no rambling.
4. **Polite**: no rudeness.

Press a number key to give a card the next rank, `=` to tie it with the previous rank,
`Backspace` to undo. Flag answers that are harmful or untruthful.
"""


class Command(BaseCommand):
    help = "Set up the demo: accounts, the demo project, its prompts, candidates from the demo policy, comparisons."

    def add_arguments(self, parser):
        parser.add_argument("--prompts", type=int, default=60, help="how many demo prompts to load")
        parser.add_argument(
            "--policy-steps", type=int, help="demo policy steps (default: full build)"
        )
        parser.add_argument(
            "--no-generate", action="store_true", help="skip the policy and candidates"
        )
        parser.add_argument("--password", default="demo-pass", help="password of the demo accounts")

    def handle(self, *args, **opts):
        from training.demo_world import load_prompts

        User = get_user_model()
        if not User.objects.filter(username="admin").exists():
            User.objects.create_superuser("admin", "admin@example.com", opts["password"])
        project = Project.objects.filter(slug="demo").first() or project_create(
            slug="demo",
            name="Demo: helpful, correct, brief, polite",
            num_candidates=4,
            overlap=2,
            guidelines=GUIDELINES,
        )
        labeler, token = labeler_create(
            username="labeler", projects=[project], password=opts["password"]
        )
        labeler_create(username="admin", projects=[project])
        records = [
            prompt_record(r, line=i) for i, r in enumerate(load_prompts(opts["prompts"]), start=1)
        ]
        imported = prompts_import(project=project, records=records, source="demo_world")
        self.stdout.write(
            f"demo prompts: created {imported.created}, unchanged {imported.unchanged}"
        )

        if not opts["no_generate"]:
            out = io.StringIO()
            steps = ["--steps", str(opts["policy_steps"])] if opts["policy_steps"] else []
            call_command("build_demo_policy", *steps, stdout=self.stdout)
            call_command(
                "generate_candidates",
                "demo",
                "--model",
                # No --name: the version the build registered for this folder (demo-policy,
                # or demo-policy-2 after a rebuild), so candidates point at the weights used.
                str(demo_policy_dir()),
                "--max-new-tokens",
                "48",
                "--temperature",
                "1.0",
                "--seed",
                "0",
                stdout=self.stdout,
            )
            call_command("build_comparisons", "demo", stdout=out)
            self.stdout.write(out.getvalue().strip())

        self.stdout.write(self.style.SUCCESS("\nThe demo is ready."))
        self.stdout.write(
            "  Label at   http://127.0.0.1:8000/        user 'labeler'  password '{}'".format(
                opts["password"]
            )
        )
        self.stdout.write(
            "  Admin at   http://127.0.0.1:8000/admin/  user 'admin'    password '{}'".format(
                opts["password"]
            )
        )
        self.stdout.write(f"  API token of 'labeler' (shown once): {token}")
