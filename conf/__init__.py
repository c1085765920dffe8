"""The default configs and recipes, shipped as package data (``leanscore.conf``).

Read them with :func:`leanscore.jobs.config.packaged_config`, which works from a source
checkout and from an installed wheel alike.
"""
