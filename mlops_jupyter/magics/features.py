"""Feature-store magic: `%mlops_features` lists the registered feature views (name,
version, entity, ttl, rows, freshness, created). The logic lives in mlops_jupyter.features."""

from __future__ import annotations

from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring


@magics_class
class FeatureMagics(Magics):
    @magic_arguments()
    @argument("name", nargs="?", default=None, help="only the views with this name")
    @argument("-a", "--all", action="store_true", help="every version, not only the latest")
    @line_magic
    def mlops_features(self, line: str = ""):
        """List feature views: name, version, entity, ttl, rows, freshness (the newest
        feature timestamp), created."""
        args = parse_argstring(self.mlops_features, line)
        import polars as pl

        from ..features import feature_views

        views = feature_views(all_versions=args.all or args.name is not None)
        if args.name is not None:
            views = views.filter(pl.col("name") == args.name)
        return views.select(
            "name", "version", "entity", "ttl", "features", "rows", "freshness", "created"
        )


def register(ipython) -> None:
    """Register the feature-store magics on `ipython`."""
    ipython.register_magics(FeatureMagics(ipython))
