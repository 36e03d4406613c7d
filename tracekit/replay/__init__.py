"""The timing model: machine descriptions, dependency graph, discrete-event replay."""

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    """`tracekit.replay(trace, ...)` is the API call (`tracekit.api.replay`) while
    `tracekit.replay` stays this package, so that every form of importing its modules works."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from tracekit.api import replay

        return replay(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
