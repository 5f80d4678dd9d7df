"""The Litestar HTTP API and pages: a thin face over `reconciler`."""
