"""The feature store: versioned feature views and point-in-time correct training sets.
Pure Python: no Jupyter imports.

    @mj.feature_view(entity="user_id", timestamp="event_ts", ttl="30d")
    def user_stats(events): ...                      # calling it registers the features
    mj.register_features("user_stats", frame, entity="user_id", timestamp="event_ts")
    mj.training_set(labels, features=["user_stats:clicks_7d", "user_stats:*"])
    mj.feature_views()                               # or %mlops_features
    mj.materialize("user_stats")                     # latest values -> online store
    mj.online_features([1, 2], ["user_stats:clicks_7d"])

See docs/features.md.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "FeatureView": "views",
    "FeatureViewInfo": "views",
    "FeatureViewNotFoundError": "..store.features",
    "ViewJoin": "join",
    "FeatureVersionConflictError": "..store.features",
    "feature_view": "views",
    "feature_view_usage": "join",
    "feature_views": "views",
    "get_feature_view": "views",
    "materialize": "online",
    "online_features": "online",
    "online_materializations": "online",
    "point_in_time": "join",
    "point_in_time_many": "join",
    "register_features": "views",
    "training_set": "join",
    "training_set_sources": "join",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
