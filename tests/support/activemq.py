"""Debian's ActiveMQ on loopback for tests: a private broker (own config, own KahaDB store in a
temporary folder, STOMP on a free port), started with Debian's Java, restartable with its
persistent messages kept. `make broker` (part of `make test`) installs the package."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

ACTIVEMQ_JAR = Path("/usr/share/activemq/bin/activemq.jar")

_CONFIG = """<beans xmlns="http://www.springframework.org/schema/beans"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.springframework.org/schema/beans
  http://www.springframework.org/schema/beans/spring-beans-2.0.xsd
  http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <broker xmlns="http://activemq.apache.org/schema/core" useJmx="false" brokerName="face-dedup-test"
          dataDirectory="{data}" persistent="true">
    <persistenceAdapter><kahaDB directory="{data}/kahadb"/></persistenceAdapter>
    <transportConnectors>
      <transportConnector name="stomp" uri="stomp://127.0.0.1:{port}?transport.closeAsync=false"/>
    </transportConnectors>
  </broker>
</beans>
"""


def available() -> str | None:
    """None when the broker can run here, else why not (the tests skip with that reason)."""
    if not ACTIVEMQ_JAR.is_file():
        return "Debian's activemq is not installed (make broker installs it)"
    if shutil.which("java") is None:
        return "no java on PATH (Debian's activemq package depends on it)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ActiveMQ:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = _free_port()
        (base / "conf").mkdir(parents=True, exist_ok=True)
        (base / "tmp").mkdir(exist_ok=True)
        self.config = base / "conf" / "activemq.xml"
        self.config.write_text(_CONFIG.format(data=base / "data", port=self.port), encoding="utf-8")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"stomp://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> None:
        log = (self.base / "broker.log").open("ab")
        self.process = subprocess.Popen(
            [
                "java",
                "-Xms64m",
                "-Xmx256m",
                "-Djava.awt.headless=true",
                f"-Djava.io.tmpdir={self.base / 'tmp'}",
                "-Dactivemq.home=/usr/share/activemq",
                f"-Dactivemq.base={self.base}",
                f"-Dactivemq.conf={self.base / 'conf'}",
                f"-Dactivemq.data={self.base / 'data'}",
                "-jar",
                str(ACTIVEMQ_JAR),
                "start",
                f"xbean:file:{self.config}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ActiveMQ exited: see {self.base / 'broker.log'}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"ActiveMQ did not listen within {timeout_s}s: see {self.base / 'broker.log'}")

    def stop(self) -> None:
        """A hard stop (SIGKILL): persistent messages must survive it, as after a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()
