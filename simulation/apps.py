from django.apps import AppConfig


class SimulationConfig(AppConfig):
    """Simulated labelers (no models): the `simulate_labelers` command and its loop."""

    name = "simulation"
    verbose_name = "Simulated labelers"
