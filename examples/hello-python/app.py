"""The example Ember deploys with `ember server --example`."""

import os
import time

# Module-level state lives as long as the environment: it survives warm invocations.
STARTED = time.time()
INVOCATIONS = 0


def handler(event, context):
    global INVOCATIONS
    INVOCATIONS += 1
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    print(f"saying hello to {name}")
    return {
        "message": f"Hello, {name}!",
        "invocations_in_this_environment": INVOCATIONS,
        "request_id": context.aws_request_id,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "python_pid": os.getpid(),
    }
