"""An installed contrib instrumentor that fails, as one built for another version of its library can."""

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor


class BrokenInstrumentor(BaseInstrumentor):
    def instrumentation_dependencies(self):
        return []

    def _instrument(self, **kwargs):
        raise RuntimeError("built for another version of its library")

    def _uninstrument(self, **kwargs):
        pass
