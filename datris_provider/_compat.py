"""Names that moved between Airflow 3.0 and 3.3, imported from wherever this Airflow has them.

Everything here is already loaded by ``import airflow.sdk`` on every supported version, so importing
this module costs a DAG file nothing.
"""

from __future__ import annotations

try:  # Task SDK 1.2+ (Airflow 3.2+)
    from airflow.sdk import conf
except ImportError:  # Airflow 3.0, 3.1
    from airflow.configuration import conf  # type: ignore[assignment]

try:  # Task SDK 1.2+ (Airflow 3.2+)
    from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException
except ImportError:  # Airflow 3.0, 3.1
    from airflow.exceptions import (  # type: ignore[attr-defined,no-redef]
        AirflowFailException,
        AirflowNotFoundException,
    )

__all__ = ["AirflowFailException", "AirflowNotFoundException", "conf"]
