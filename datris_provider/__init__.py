"""Apache Airflow provider for Datris: trigger taps, follow their pipelines, stream their logs."""

from __future__ import annotations

from typing import Any

from datris_provider.version import __version__

__all__ = ["__version__", "get_provider_info"]


def get_provider_info() -> dict[str, Any]:
    """Describe the provider to Airflow's providers manager (entry point ``apache_airflow_provider``)."""
    return {
        "package-name": "airflow-provider-datris",
        "name": "Datris",
        "description": "Trigger Datris taps from Airflow, follow their pipelines and stream their logs.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Datris",
                "external-doc-url": "https://github.com/datris/datris-platform-oss",
                "tags": ["service"],
            }
        ],
        "hooks": [{"integration-name": "Datris", "python-modules": ["datris_provider.hooks.datris"]}],
        "operators": [
            {
                "integration-name": "Datris",
                "python-modules": ["datris_provider.operators.tap", "datris_provider.operators.upload"],
            }
        ],
        "task-decorators": [
            {"name": "datris_tap", "class-name": "datris_provider.decorators.datris_tap.datris_tap_task"}
        ],
        "triggers": [
            {
                "integration-name": "Datris",
                "python-modules": ["datris_provider.triggers.datris", "datris_provider.triggers.watcher"],
            }
        ],
        "sensors": [{"integration-name": "Datris", "python-modules": ["datris_provider.sensors.pipeline"]}],
        "asset-uris": [{"schemes": ["datris"], "handler": "datris_provider.assets.sanitize_uri"}],
        "extra-links": [
            "datris_provider.links.DatrisTapRunLink",
            "datris_provider.links.DatrisPipelineJobLink",
        ],
        "connection-types": [
            {
                "connection-type": "datris",
                "hook-class-name": "datris_provider.hooks.datris.DatrisHook",
                "hook-name": "Datris",
                "ui-field-behaviour": {
                    # Port stays visible: the hook puts it into the base URL, and Airflow 3.3's Test
                    # button refuses ("Bad Request") a connection whose Port is empty.
                    "hidden-fields": ["login", "schema"],
                    "relabeling": {"host": "Datris base URL", "password": "API key"},
                    "placeholders": {
                        "host": "https://datris.example.com",
                        "port": "e.g. 8080, or 443 for https",
                        "password": "leave blank when the Datris install does not use API keys",
                        "extra": '{"verify": true, "timeout": 30}',
                    },
                },
                "conn-fields": {
                    "verify": {
                        "label": "Verify TLS",
                        "description": "Check the server's TLS certificate (turn off only for a test install).",
                        "schema": {"type": ["boolean", "null"], "default": True},
                    },
                    "ca_bundle": {
                        "label": "CA bundle",
                        "description": "Path of a CA bundle to check the server with, if not in the system store.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "retries": {
                        "label": "Retries",
                        "description": "Repeats of a failed call that is safe to repeat (never the tap run itself).",
                        "schema": {"type": ["integer", "null"], "default": 3},
                    },
                    "retry_delay": {
                        "label": "Retry delay (s)",
                        "description": "First wait before a repeat; doubled each time, with jitter.",
                        "schema": {"type": ["number", "null"], "default": 1},
                    },
                    "ui_url": {
                        "label": "Datris UI URL",
                        "description": "Base URL of the Datris UI for task links, when it differs from Host.",
                        "schema": {"type": ["string", "null"], "format": "url"},
                    },
                    "timeout": {
                        "label": "Request timeout (s)",
                        "description": "Timeout of every call except the blocking tap run.",
                        "schema": {"type": ["number", "null"], "default": 30},
                    },
                },
            }
        ],
    }
