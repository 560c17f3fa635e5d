"""HTTP access to the Datris REST API: settings, typed responses, errors. Imports no Airflow."""
