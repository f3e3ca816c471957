"""Command-line flags made from options dataclasses, so a setting is described once.

Two helpers. :func:`doc` hands a field's docstring (:func:`kaito.runtime.field_docs`) to a
hand-written ``typer.Option`` as its help text: ``kaito controller`` and ``kaito node-provisioner``
spell out their flags (names and defaults the Helm chart passes stay fixed) but never retype what
a flag means. :func:`with_cloud_flags` goes further for the clouds: it adds one flag per field of
every registered cloud's options (:mod:`kaito.provisioners.cloud.registry`), so adding a cloud adds
its flags without touching the CLI.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any

import typer

from kaito.provisioners.cloud import CLOUDS, CloudOptions, CloudSpec
from kaito.runtime import field_docs


def doc(cls: type, name: str) -> str:
    """The docstring of field ``name`` of ``cls``, as help text; KeyError when it has none (so a
    flag without a documented field fails at import, not in front of a user)."""
    return field_docs(cls)[name]


def flag_name(field_name: str) -> str:
    """``local_nodes`` -> ``--local-nodes``."""
    return "--" + field_name.replace("_", "-")


def _cloud_fields(spec: CloudSpec) -> list[tuple[dataclasses.Field[Any], Any]]:
    """Each field of a cloud's options with its resolved type."""
    hints = typing.get_type_hints(spec.options)
    return [(f, hints[f.name]) for f in dataclasses.fields(spec.options)]  # type: ignore[arg-type]


def cloud_flag_parameters(clouds: dict[str, CloudSpec]) -> list[inspect.Parameter]:
    """One keyword parameter (a typer option) per field of each cloud's options. Two clouds may
    not name a field alike: one flag cannot mean two settings (ValueError at import)."""
    params: list[inspect.Parameter] = []
    seen: dict[str, str] = {}
    for cloud, spec in clouds.items():
        docs = field_docs(spec.options)
        for f, hint in _cloud_fields(spec):
            if f.name in seen:
                raise ValueError(f"clouds {seen[f.name]} and {cloud} both have an option {f.name}")
            seen[f.name] = cloud
            option = typer.Option(flag_name(f.name), envvar=f.metadata.get("envvar"), help=docs[f.name])
            params.append(
                inspect.Parameter(
                    f.name,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=f.default,
                    annotation=Annotated[hint, option],
                )
            )
    return params


def with_cloud_flags(
    chosen_by: str, *, in_process_only: bool = False
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command one flag per registered cloud option and call it with ``cloud_options``
    (cloud name -> that cloud's options) instead.

    ``chosen_by`` names the command's parameter that selects the cloud: the chosen cloud's options
    take every flag's value (given, from the environment, or the default); any other cloud's take
    only values given on the command line, so that validation can refuse a flag meant for another
    cloud while a variable the environment happens to hold (``$AZURE_SUBSCRIPTION_ID`` next to
    ``--cloud kwok``) is ignored. ``in_process_only``: only clouds that may run inside ``kaito
    controller``.
    """
    clouds = {n: s for n, s in CLOUDS.items() if s.in_process or not in_process_only}
    extra = cloud_flag_parameters(clouds)

    def decorate(func: Callable[..., None]) -> Callable[..., None]:
        hints = typing.get_type_hints(func, include_extras=True)
        own = [
            p.replace(annotation=hints.get(p.name, p.annotation))
            for p in inspect.signature(func).parameters.values()
            if p.name != "cloud_options"
        ]

        @functools.wraps(func)
        def command(_cloud_flags_context: typer.Context, **kwargs: Any) -> None:
            ctx = _cloud_flags_context
            chosen = kwargs.get(chosen_by)
            options: dict[str, CloudOptions] = {}
            for name, spec in clouds.items():
                values: dict[str, Any] = {}
                for f, _ in _cloud_fields(spec):
                    value = kwargs.pop(f.name)
                    source = ctx.get_parameter_source(f.name)
                    given = source is not None and source.name == "COMMANDLINE"
                    if name == chosen or given:
                        values[f.name] = value
                options[name] = spec.options(**values)
            func(**kwargs, cloud_options=options)

        # typer hands the command's context to a parameter annotated typer.Context: the source of
        # each flag's value (command line, environment, default) is read from it.
        context = inspect.Parameter(
            "_cloud_flags_context", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context
        )
        params = [context, *own, *extra]
        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate


__all__ = ["cloud_flag_parameters", "doc", "flag_name", "with_cloud_flags"]
