"""Source plugins: each module reads one kind of input and hands records to the daemon.

A source registers its class under the `type:` name used in config.yaml. Sources never import the daemon
or a sink: the daemon hands each one its config and a `SourceContext`.
"""

from __future__ import annotations

from sources.base import SOURCE_TYPES, Source, SourceConfig, SourceContext, register_source

__all__ = ["SOURCE_TYPES", "Source", "SourceConfig", "SourceContext", "load_builtin_sources", "register_source"]


def load_builtin_sources() -> None:
    """Import the bundled source modules so that they register themselves."""
    import sources.file
    import sources.jetstream
    import sources.mastodon
    import sources.synthetic
    import sources.x  # noqa: F401
