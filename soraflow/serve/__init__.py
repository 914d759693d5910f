"""``soraflow serve``: a job API in OpenAI's videos-API shape, a page, and worker processes over SoraPipeline.

- :mod:`.app`: routes, error bodies, housekeeping; :mod:`.validate`: a submission through the CLI's checks;
  :mod:`.security`: API key, rate limit, body limit;
- :mod:`.store`: the SQLite job store the processes share; :mod:`.worker`: one generation process;
  :mod:`.pool`: the server's workers, restarted when they crash;
- :mod:`.server`: settings checked, everything started (:class:`ServeConfig` in :mod:`.config`).

docs/serve.md has the API, the store's guarantees and the security model.
"""

from .config import ServeConfig

__all__ = ["ServeConfig"]
