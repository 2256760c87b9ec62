"""Resource attributes: which service, version and instance a span comes from, and on what platform.

``base_resource`` is computed in the app at ``start()`` from the environment
only (no network). ``ecs_attributes`` asks the AWS ECS task metadata endpoint
(v4) and runs in the exporter, off the app's startup path, with a short
timeout; an unreachable endpoint costs nothing but the attributes.

Platform attributes let a before/after comparison of a migration (Heroku to
AWS, say) split spans by where they ran: ``cloud.provider``, ``cloud.platform``
and the platform's own identifiers.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import socket
import sys
import urllib.request
from typing import Mapping

from takealook import __version__

log = logging.getLogger("takealook.agent")

ECS_ENV = "ECS_CONTAINER_METADATA_URI_V4"


def base_resource(service_name: str, extra: Mapping[str, str], environ: Mapping[str, str] | None = None) -> dict:
    env = os.environ if environ is None else environ
    try:
        from opentelemetry.version import __version__ as otel_version
    except ImportError:  # pragma: no cover
        otel_version = "unknown"
    resource = {
        "service.name": service_name,
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.language": "python",
        "telemetry.sdk.version": otel_version,
        "telemetry.distro.name": "takealook",
        "telemetry.distro.version": __version__,
        "host.name": socket.gethostname(),
        "process.runtime.name": sys.implementation.name,
        "process.runtime.version": platform.python_version(),
    }
    resource.update(heroku_attributes(env))
    if env.get(ECS_ENV):
        resource.update({"cloud.provider": "aws", "cloud.platform": "aws_ecs"})
    resource.update(extra)
    resource["service.name"] = service_name
    return resource


def heroku_attributes(env: Mapping[str, str]) -> dict:
    """From Heroku's dyno metadata (labs:runtime-dyno-metadata) and the DYNO variable."""
    if not (env.get("DYNO") or env.get("HEROKU_APP_NAME") or env.get("HEROKU_APP_ID")):
        return {}
    attributes = {"cloud.provider": "heroku"}
    pairs = {
        "DYNO": "heroku.dyno",
        "HEROKU_APP_NAME": "heroku.app.name",
        "HEROKU_APP_ID": "heroku.app.id",
        "HEROKU_RELEASE_VERSION": "heroku.release.version",
        "HEROKU_SLUG_COMMIT": "heroku.release.commit",
        "HEROKU_RELEASE_CREATED_AT": "heroku.release.creation_timestamp",
        "HEROKU_DYNO_ID": "service.instance.id",
    }
    for variable, key in pairs.items():
        if env.get(variable):
            attributes[key] = env[variable]
    if env.get("HEROKU_RELEASE_VERSION"):
        attributes["service.version"] = env["HEROKU_RELEASE_VERSION"]
    return attributes


def ecs_attributes(environ: Mapping[str, str] | None = None, timeout: float = 0.5) -> dict:
    """Task and container identity from the ECS task metadata endpoint v4; {} when unavailable."""
    env = os.environ if environ is None else environ
    base = env.get(ECS_ENV, "").rstrip("/")
    if not base.startswith(("http://", "https://")):
        return {}
    attributes = {"cloud.provider": "aws", "cloud.platform": "aws_ecs"}
    try:
        task = _get_json(base + "/task", timeout)
        container = _get_json(base, timeout)
    except (OSError, ValueError) as error:
        log.info("takealook: ECS task metadata unavailable at %s: %s", base, error)
        return attributes
    cluster = task.get("Cluster", "")
    task_arn = task.get("TaskARN", "")
    attributes.update({
        "aws.ecs.task.arn": task_arn,
        "aws.ecs.task.family": task.get("Family", ""),
        "aws.ecs.task.revision": task.get("Revision", ""),
        "aws.ecs.launchtype": (task.get("LaunchType") or "").lower(),
        "cloud.availability_zone": task.get("AvailabilityZone", ""),
        "container.id": container.get("DockerId", ""),
        "container.name": container.get("Name", ""),
        "aws.ecs.container.arn": container.get("ContainerARN", ""),
    })
    if cluster:
        # The cluster is a name or an ARN; the ARN is arn:aws:ecs:REGION:ACCOUNT:cluster/NAME.
        if not cluster.startswith("arn:") and task_arn.startswith("arn:"):
            prefix = task_arn.split(":task/")[0]
            cluster = f"{prefix}:cluster/{cluster}"
        attributes["aws.ecs.cluster.arn"] = cluster
    parts = task_arn.split(":")
    if len(parts) > 4:
        attributes["cloud.region"], attributes["cloud.account.id"] = parts[3], parts[4]
    return {k: v for k, v in attributes.items() if v}


def _get_json(url: str, timeout: float) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - an http(s) URL checked above
        data = json.loads(response.read(1 << 20))
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data
