"""The end-to-end chain (demo, pipeline, ablations) as resumable stages over the CLI commands."""
