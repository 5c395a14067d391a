"""Hot reload: watch the config file and apply a new, valid config without a restart.

Kubernetes updates a mounted ConfigMap by writing a new directory and atomically renaming the
`..data` symlink to point at it; the file we read is a symlink through `..data`. Watching the
resolved content (not the path's mtime) follows that swap. A `subPath` mount never updates.
A bad config is logged with the key at fault, counted, and the last good one stays. So is a
change the running pod cannot take (Envoy's bootstrap, the server's sockets): it would leave the
server and Envoy disagreeing until the next restart.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path
from typing import Any, Callable

import yaml

from cascade_extproc.config import Config, ConfigError
from cascade_extproc.deploy.envoy_config import keys_needing_restart
from cascade_extproc.metering.metrics import Metrics

log = logging.getLogger("cascade_extproc.reload")


class ConfigWatcher:
    def __init__(self, path: str | Path, parse: Callable[[Any], Config], apply: Callable[[Config], None],
                 metrics: Metrics, interval_s: float = 2.0, current: Callable[[], Config] | None = None):
        self.path = Path(path)
        self.parse = parse  # the file's data → a Config, or ConfigError (app.parse_config builds a runtime)
        self.apply = apply
        self.current = current  # the config in use, to refuse what a reload cannot change
        self.metrics = metrics
        self.interval_s = interval_s
        self._digest = self._read_digest()

    def _read_digest(self) -> str | None:
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return None

    def check(self) -> bool | None:
        """Reload if the content changed: True applied, False rejected or refused, None unchanged."""
        digest = self._read_digest()
        if digest is None or digest == self._digest:
            return None  # unchanged, or mid-swap: try again next time
        self._digest = digest
        try:
            cfg = self.parse(yaml.safe_load(self.path.read_text()))
        except (ConfigError, yaml.YAMLError, OSError) as exc:
            self.metrics.config_reloads.labels("error").inc()
            log.error("config reload rejected, keeping the last good config: %s", exc)
            return False
        restart = keys_needing_restart(self.current(), cfg) if self.current else []
        if restart:
            self.metrics.config_reloads.labels("needs_restart").inc()
            log.error("config reload refused, keeping the running config: %s cannot change without a restart "
                      "(Envoy's bootstrap or the server's sockets; regenerate the bootstrap and roll the pods, "
                      "docs/kubernetes.md)", ", ".join(restart))
            return False
        self.apply(cfg)
        self.metrics.config_reloads.labels("ok").inc()
        log.info("config reloaded from %s", self.path)
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.check()
