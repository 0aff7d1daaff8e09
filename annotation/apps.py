from django.apps import AppConfig


class AnnotationConfig(AppConfig):
    name = "annotation"
    verbose_name = "Labeling"

    def ready(self):
        from annotation import signals  # noqa: F401  (connects the receivers)
