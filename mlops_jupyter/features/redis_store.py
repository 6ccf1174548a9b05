"""The Redis online backend (MLOPS_JUPYTER_ONLINE_STORE=redis://host:port/db): one hash per
view version and entity (`mj:features:<view>:<version>:<entity key>`), a field per feature
holding its JSON value and `__ts` the feature timestamp. Writes go through a small Lua script
so an older value never replaces a newer one (pipelined, in transactions of 2,000 entities);
a read is one round trip (a Lua script doing HMGET per entity).

The `redis` client is an optional dependency (the `features` extra), imported here only."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import InvalidInputError, MlopsJupyterError

_PREFIX = "mj:features"
_CHUNK = 2000  # entities per pipelined transaction
# KEYS[1] the entity's hash; ARGV[1] the feature ts, then field, value, field, value...
_UPSERT = """
local cur = redis.call('HGET', KEYS[1], '__ts')
if cur and tonumber(cur) > tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], '__ts', unpack(ARGV))
return 1
"""
# KEYS: the entities' hashes; ARGV: '__ts' and the feature fields. One call for the batch:
# far less client-side packing than one HMGET per entity in a pipeline, same round trip
_READ = """
local out = {}
for i, k in ipairs(KEYS) do out[i] = redis.call('HMGET', k, unpack(ARGV)) end
return out
"""


class OnlineStoreError(MlopsJupyterError):
    """The online store cannot be reached or refused a request."""


def safe_url(url: str) -> str:
    """`url` without its password (for messages and the materialization log)."""
    p = urlsplit(url)
    if p.password is None and p.username is None:
        return url
    host = p.hostname or ""
    if p.port:
        host += f":{p.port}"
    return urlunsplit((p.scheme, host, p.path, p.query, p.fragment))


class RedisOnline:
    """Online features in Redis."""

    def __init__(self, url: str) -> None:
        try:
            import redis
        except ImportError:
            raise InvalidInputError(
                "MLOPS_JUPYTER_ONLINE_STORE names Redis but the redis client is not installed:"
                " pip install 'mlops-jupyter[features]'"
            ) from None
        self._redis = redis
        self.name = safe_url(url)
        try:
            self._r = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=10)
        except ValueError as e:
            raise InvalidInputError(f"bad Redis URL {self.name!r}: {e}") from None
        self._script = self._r.register_script(_UPSERT)
        self._read = self._r.register_script(_READ)

    def _fail(self, e: Exception, doing: str) -> OnlineStoreError:
        return OnlineStoreError(f"Redis online store {self.name} could not {doing}: {e}")

    @staticmethod
    def _key(view: str, version: int, key: str) -> str:
        return f"{_PREFIX}:{view}:{version}:{key}"

    def write(self, view: str, version: int, rows: list[tuple[str, float, dict[str, Any]]]) -> int:
        """Upsert (entity key, ts, {feature: value}) rows; checks the server answers first,
        so an unreachable one writes nothing."""
        try:
            self._r.ping()
        except self._redis.RedisError as e:
            raise self._fail(e, "be reached (nothing was written)") from None
        try:
            for i in range(0, len(rows), _CHUNK):
                pipe = self._r.pipeline(transaction=True)
                for key, ts, vals in rows[i : i + _CHUNK]:
                    args: list[Any] = [repr(float(ts))]
                    for f, v in vals.items():
                        args += [f, json.dumps(v, default=str)]
                    self._script(keys=[self._key(view, version, key)], args=args, client=pipe)
                pipe.execute()
        except self._redis.RedisError as e:
            raise self._fail(
                e, "write the features (the materialization is not recorded)"
            ) from None
        return len(rows)

    def read(
        self, view: str, version: int, keys: list[str], features: list[str]
    ) -> dict[str, tuple[float, list[Any]]]:
        """{entity key: (ts, [value of each feature])} of the `keys` found (one round
        trip)."""
        uniq = list(dict.fromkeys(keys))
        if not uniq:
            return {}
        try:
            got = self._read(
                keys=[self._key(view, version, k) for k in uniq], args=["__ts", *features]
            )
        except self._redis.RedisError as e:
            raise self._fail(e, "read features") from None
        hits = [(k, v) for k, v in zip(uniq, got) if v and v[0] is not None]
        # one JSON parse for the whole batch (a missing field reads as null)
        body = b",".join(b"null" if x is None else x for _, v in hits for x in v[1:])
        flat = json.loads(b"[" + body + b"]") if hits else []
        n = len(features)
        return {k: (float(v[0]), flat[i * n : (i + 1) * n]) for i, (k, v) in enumerate(hits)}
