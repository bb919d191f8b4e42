"""Building and deploying device firmware bundles: `crumb firmware build|deploy`."""
