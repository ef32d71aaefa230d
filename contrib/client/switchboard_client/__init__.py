"""A client for Switchboard's event API (standard library only).

    from switchboard_client import Client
    client = Client("https://switchboard.example.com", "sb_...")
    client.enqueue(event)        # background batching, gzip, retries
    client.send(events)          # or synchronously: -> batch ids

See README.md beside this package.
"""

__version__ = "1.0.0"

from switchboard_client.client import Client, QueueFull, ShutdownDeadline  # noqa: E402
from switchboard_client.transport import Redirected, Rejected, RetriesExhausted  # noqa: E402

__all__ = ["Client", "QueueFull", "Redirected", "Rejected", "RetriesExhausted", "ShutdownDeadline", "__version__"]
