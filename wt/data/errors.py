"""The one exception type of the data layer.

Every problem with the data (missing or corrupt files, a bad data config, a vocabulary that
cannot be trained) is raised as `DataError` with a message that names the thing, the problem
and the fix, before anything reaches JAX.
"""


class DataError(ValueError):
  """Bad or missing data, or a data config that cannot work."""
