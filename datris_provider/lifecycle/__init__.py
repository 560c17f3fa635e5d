"""The task-side lifecycle shared by every Datris operator, the sensor and the decorator.

It sits between the Airflow-facing classes (which read as declarations) and the run-tracking core:
it turns an operator's arguments into a run spec, drives the core in the worker or defers it to a
trigger, keeps the attempt record in the task state, prints every Datris line once, pushes XComs and
returns the result. Nothing here is imported at DAG-parse time.
"""
