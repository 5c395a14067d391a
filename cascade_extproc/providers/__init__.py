"""LLM providers: the Protocol the paths use (base.py), the aiohttp client (http.py), the errors
it maps foreign failures onto (errors.py), and an in-memory fake for tests (mock.py)."""
from cascade_extproc.providers.base import Provider
from cascade_extproc.providers.errors import (ProviderDeadline, ProviderError, ProviderMalformed, ProviderStalled,
                                              ProviderStatus, ProviderTimeout, ProviderTransport)
from cascade_extproc.providers.http import HttpProvider, Upstream

__all__ = ["HttpProvider", "Provider", "ProviderDeadline", "ProviderError", "ProviderMalformed", "ProviderStalled", "ProviderStatus",
           "ProviderTimeout", "ProviderTransport", "Upstream"]
