"""`deploy/`: the compose file, the nginx config and the Dockerfile agree with each other."""

from __future__ import annotations

import re
from typing import Any

import pytest

from scalesupport import DEPLOY

yaml = pytest.importorskip("yaml")  # PyYAML comes with uvicorn[standard]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return loaded


def test_every_app_service_is_an_nginx_upstream(compose: dict[str, Any]) -> None:
    apps = {name for name, service in compose["services"].items() if "build" in service}
    assert len(apps) >= 2
    upstreams = set(
        re.findall(r"^\s*server\s+(\S+?):8000\b", (DEPLOY / "nginx.conf").read_text(), re.M)
    )
    assert upstreams == apps
    for name in apps:
        service = compose["services"][name]
        assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).exists()
        assert service["environment"]["STORE_URL"] == "redis://redis:6379/0"


def test_redis_persists_with_aof_every_second(compose: dict[str, Any]) -> None:
    command = " ".join(compose["services"]["redis"]["command"])
    assert "--appendonly yes" in command
    assert "--appendfsync everysec" in command
    assert "--maxmemory-policy noeviction" in command


def test_nginx_runs_the_deployed_config(compose: dict[str, Any]) -> None:
    nginx = compose["services"]["nginx"]
    assert "./nginx.conf:/etc/nginx/conf.d/default.conf:ro" in nginx["volumes"]
