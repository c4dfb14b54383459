"""The entry flow: the run a user or a deployment started, not a sub-flow of another.

Only the entry flow records the workspace's config (``config.yaml``): a sub-flow
runs with the config its parent passed and already saved.
"""

from prefect.context import FlowRunContext


def is_entry_flow() -> bool:
    """True inside a flow run that no other flow started (and outside any flow run)."""
    context = FlowRunContext.get()
    return (
        context is None or context.flow_run is None or context.flow_run.parent_task_run_id is None
    )
