from django.apps import AppConfig


class KnowledgeConfig(AppConfig):
    name = "knowledge"
    verbose_name = "Knowledge base"

    def ready(self) -> None:
        from knowledge import blas, signals  # noqa: F401  (signals: connects the revision signals)

        blas.limit_threads()
