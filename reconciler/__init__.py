"""The catalog core: schema, store, git source, reconcile, schedule, dispatch, write-back, CLI."""
