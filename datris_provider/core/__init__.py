"""The run-tracking core: the tap-run state machine and its rules. Imports no Airflow."""
