"""Which model versions serve: the champion (or a pinned version) and, while one is in shadow, the shadow.

Aliases are resolved on every call, so a promotion or a rollback takes effect from the next batch;
loaded versions are kept, so a day's batches do not reload them.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from pipeline.inference.service import InferenceService
from pipeline.registry import (
    CHAMPION,
    SHADOW,
    VALIDATION_THRESHOLD,
    LoadedModel,
    ModelNotFound,
    load_model,
    version_for,
)

log = logging.getLogger(__name__)


def load_shadow(model_name: str) -> LoadedModel | None:
    """Return the version under the ``shadow`` alias, deciding at the threshold its validation chose; None if none.

    A candidate's ``threshold`` tag is its training-time one until promotion; in shadow it answers at the
    operating point it would serve with.
    """
    if version_for(model_name, SHADOW) is None:
        return None
    loaded = load_model(model_name, SHADOW)
    from mlflow import MlflowClient

    tags = MlflowClient().get_model_version(model_name, loaded.version).tags
    threshold = tags.get(VALIDATION_THRESHOLD)
    return loaded if threshold is None else dataclasses.replace(loaded, threshold=float(threshold))


def registry_services(
    model_name: str, *, key: str, default: str = CHAMPION, shadow: bool = True, mc_samples: int = 8
) -> Callable[[str], InferenceService]:
    """Return a function giving the inference service for a model alias or version, with the shadow attached.

    Args:
        model_name: the registered model.
        key: the pseudonymisation key of study ids.
        default: what ``"champion"`` stands for (a pinned version, or the alias itself).
        shadow: attach the version under the ``shadow`` alias, if any, to every service.
        mc_samples: MC-dropout passes of the serving model (see ``InferenceService``).

    Raises (from the returned function):
        ModelNotFound: nothing answers to the alias or version.
    """
    loaded: dict[str, LoadedModel] = {}
    services: dict[tuple[str, str | None], InferenceService] = {}

    def load(number: str) -> LoadedModel:
        if number not in loaded:
            loaded[number] = load_model(model_name, number)
        return loaded[number]

    def service_for(alias_or_version: str) -> InferenceService:
        wanted = default if alias_or_version == CHAMPION else alias_or_version
        number = version_for(model_name, wanted)
        if number is None:
            raise ModelNotFound(f"no version of model {model_name!r} answers to {wanted!r}")
        in_shadow = load_shadow(model_name) if shadow else None
        if in_shadow is not None and in_shadow.version == number:
            in_shadow = None
        cache_key = (number, None if in_shadow is None else f"{in_shadow.version}@{in_shadow.threshold}")
        if cache_key not in services:
            if in_shadow is not None:
                log.info("version %s serves; version %s scores beside it in shadow", number, in_shadow.version)
            services[cache_key] = InferenceService(load(number), key=key, shadow=in_shadow, mc_samples=mc_samples)
        return services[cache_key]

    return service_for
