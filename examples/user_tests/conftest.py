import os

# Set before the DAG files are read: poll the stand-in every 0.1 s instead of every 15 s.
os.environ.setdefault("MY_ORDERS_POLL_SECONDS", "0.1")
