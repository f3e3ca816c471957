"""Reading a Hugging Face model's config and weight sizes from the Hub, for admission and planning.

``inference.preset.name: org/model[@revision]`` names any Hub model (upstream Kaito v0.12). The
webhook, the controller and the CLI size it with the same estimator as a catalog preset, from two
Hub files: ``/{repo}/resolve/{revision}/config.json`` and the file listing
``/api/models/{repo}/tree/{revision}?recursive=true`` (the weight bytes). The pure half, turning
those into a :class:`ModelPreset`, is :mod:`kaito.presets.hub`.

Admission must stay fast, so each request has a short timeout and answers are kept in a small
in-process cache (successes and definite refusals; an unreachable Hub is never cached, so the next
try asks again). A Hub that cannot be reached is a refusal naming ``HF_ENDPOINT``: admitting a
model nobody could size would only move the failure to a pod that never starts.

Synchronous (urllib): the async callers run it in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from functools import cache
from typing import Any
from urllib.parse import quote, urlsplit

from kaito.api import names
from kaito.presets import ModelPreset, find_preset, list_presets
from kaito.presets.hub import (
    HubModelError,
    HubModelRef,
    parse_model_ref,
    preset_from_hf_config,
    weight_files_bytes,
)
from kaito.runtime import SECRET, ApiError, Client

DEFAULT_ENDPOINT = "https://huggingface.co"
#: Seconds per Hub request; two requests per model, inside the webhook's 5 s lookup budget.
DEFAULT_TIMEOUT = 2.0
#: How long a resolved model (or a definite refusal: 404, unsupported) is reused.
CACHE_TTL = 600.0
ERROR_TTL = 60.0
_CACHE_MAX = 256
_MAX_PAGES = 20
_MAX_BODY = 4 << 20  # config.json and the listing are small; read no more than this

_lock = threading.Lock()
_cache: dict[tuple[str, str, str, str], tuple[float, ModelPreset | HubModelError]] = {}


def endpoint() -> str:
    """The Hub to ask: ``$HF_ENDPOINT`` (as huggingface_hub and vLLM read it) or huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def clear_cache() -> None:
    with _lock:
        _cache.clear()


class _SameHostAuth(urllib.request.HTTPRedirectHandler):
    """Follow the Hub's redirects (renamed repos, CDN files) without carrying the token to
    another host: urllib would copy the Authorization header to wherever a redirect points."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urlsplit(newurl).netloc != urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


_opener = urllib.request.build_opener(_SameHostAuth)


def _get(url: str, token: str | None, timeout: float) -> tuple[int, bytes, Mapping[str, str]]:
    request = urllib.request.Request(url, headers={"User-Agent": "kaito"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with _opener.open(request, timeout=timeout) as resp:
            return int(resp.status), resp.read(_MAX_BODY), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, b"", dict(exc.headers or {})


def _refusal(
    status: int, headers: Mapping[str, str], ref: HubModelRef, token: str | None, base: str
) -> HubModelError:
    code = next((v for k, v in headers.items() if k.lower() == "x-error-code"), "")
    if code == "GatedRepo":
        return _gated(ref, token)
    if code in ("RevisionNotFound", "EntryNotFound"):
        return HubModelError(
            "RevisionNotFound",
            f"{ref.repo} has no revision {ref.revision!r} (or no config.json in it) on {base}; "
            "fix the part after '@', or drop it to use main",
        )
    if status == 404 or code == "RepoNotFound":
        # The Hub answers a private repo exactly as one that does not exist.
        return HubModelError(
            "ModelNotFound",
            f"no Hugging Face model {ref.repo!r} on {base} (or it is private and "
            f"{'the token cannot see it' if token else 'no token was given'}); check the org/model "
            "spelling (it is case-sensitive), or use a preset from `kaito presets list`",
        )
    if status in (401, 403):
        return _gated(ref, token)
    return HubModelError(
        "HubUnavailable",
        f"the Hugging Face Hub at {base} (HF_ENDPOINT) answered HTTP {status} for {ref.repo}; "
        "try again later",
    )


def _gated(ref: HubModelRef, token: str | None) -> HubModelError:
    if token is None:
        return HubModelError(
            "GatedModel",
            f"{ref.repo} is gated on Hugging Face: set presetOptions.modelAccessSecret to a Secret with key "
            "HF_TOKEN holding a token whose account accepted the model's licence",
        )
    return HubModelError(
        "GatedModel",
        f"the token in presetOptions.modelAccessSecret may not read {ref.repo}: accept the model's licence "
        "on its Hugging Face page with that token's account, or use a token that has",
    )


def _next_page(headers: Mapping[str, str]) -> str | None:
    """The ``rel="next"`` URL of a paginated Hub listing (its ``Link`` header), if any."""
    link = next((v for k, v in headers.items() if k.lower() == "link"), "")
    for part in link.split(","):
        url, _, params = part.partition(";")
        if 'rel="next"' in params:
            return url.strip().strip("<>")
    return None


def _fetch(ref: HubModelRef, token: str | None, base: str, timeout: float) -> ModelPreset:
    rev = quote(ref.revision, safe="")
    files: list[Any] = []
    try:
        status, body, headers = _get(f"{base}/{ref.repo}/resolve/{rev}/config.json", token, timeout)
        if status != 200:
            raise _refusal(status, headers, ref, token, base)
        page: str | None = f"{base}/api/models/{ref.repo}/tree/{rev}?recursive=true"
        for _ in range(_MAX_PAGES):  # the Hub pages long listings (huggingface_hub follows Link)
            if page is None:
                break
            status, listing, headers = _get(page, token, timeout)
            if status != 200:
                raise _refusal(status, headers, ref, token, base)
            try:
                entries = json.loads(listing)
            except ValueError:
                entries = None
            if not isinstance(entries, list):
                raise HubModelError(
                    "IncompleteConfig", f"{ref.repo}: the Hub at {base} sent a file listing that is not JSON"
                )
            files += entries
            page = _next_page(headers)
            if page is not None and urlsplit(page).netloc != urlsplit(base).netloc:
                page = None  # the token goes to the Hub only
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise HubModelError(
            "HubUnreachable",
            f"cannot reach the Hugging Face Hub at {base} (HF_ENDPOINT) to read {ref.repo}'s config.json "
            f"({reason or type(exc).__name__}); try again, or set HF_ENDPOINT on the operator to a Hub "
            "mirror it can reach",
        ) from None
    try:
        # transformers reads config.json with json.loads, which takes NaN and Infinity too
        config = json.loads(body)
    except ValueError:
        config = None
    if not isinstance(config, dict):
        raise HubModelError("IncompleteConfig", f"{ref.repo}: config.json on {base} is not a JSON object")
    sizes = [
        (str(f.get("path", "")), int(f.get("size") or 0))
        for f in files
        if isinstance(f, dict) and f.get("type", "file") == "file"
    ]
    return preset_from_hf_config(ref, config, weight_files_bytes(sizes), requires_token=token is not None)


def resolve_hub_model(
    name: str,
    token: str | None = None,
    *,
    base: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> ModelPreset:
    """The preset for Hub model ``name`` (``org/model[@revision]``), sized from the Hub.

    Raises :class:`HubModelError` (a ``PresetError``) whose message says what is wrong and how to
    fix it; ``reason`` tells the kinds apart (GatedModel, ModelNotFound, UnsupportedArchitecture,
    HubUnreachable, ...).
    """
    ref = parse_model_ref(name)
    if ref is None:
        raise HubModelError("InvalidName", f"{name!r} is not a Hugging Face model id (org/model[@revision])")
    base = (base or endpoint()).rstrip("/")
    token = token or None
    secret = hashlib.sha256(token.encode()).hexdigest() if token else ""
    key = (base, ref.repo, ref.revision, secret)
    now = time.monotonic()
    with _lock:
        hit = _cache.get(key)
    if hit is not None and hit[0] > now:
        if isinstance(hit[1], HubModelError):
            raise HubModelError(hit[1].reason, str(hit[1]))
        return hit[1]
    answer: ModelPreset | HubModelError
    try:
        answer = _fetch(ref, token, base, timeout)
    except HubModelError as exc:
        answer = exc
    if not (isinstance(answer, HubModelError) and answer.reason in ("HubUnreachable", "HubUnavailable")):
        ttl = ERROR_TTL if isinstance(answer, HubModelError) else CACHE_TTL
        with _lock:
            if len(_cache) >= _CACHE_MAX:
                _cache.pop(next(iter(_cache)))
            _cache[key] = (now + ttl, answer)
    if isinstance(answer, HubModelError):
        raise answer
    return answer


#: The Secret key holding the Hub token (the key the inference pod's HF_TOKEN env reads too).
TOKEN_KEY = "HF_TOKEN"


@cache
def _catalog_repos() -> frozenset[str]:
    return frozenset(p.hf_repo.lower() for p in list_presets(include_deprecated=True))


def hub_preset_of(obj: Any) -> tuple[str, str | None] | None:
    """``(preset name, modelAccessSecret)`` when a Workspace manifest's preset is to be resolved on
    the Hub: an ``org/model[@revision]`` that is no catalog preset nor a catalog preset's repo (those
    validation points at the preset), without kaito.sh/model-parameters (explicit numbers win)."""
    inference = obj.get("inference") if isinstance(obj, Mapping) else None
    preset = inference.get("preset") if isinstance(inference, Mapping) else None
    name = preset.get("name") if isinstance(preset, Mapping) else None
    if not isinstance(name, str) or find_preset(name) is not None or parse_model_ref(name) is None:
        return None
    if name.lower() in _catalog_repos():
        return None
    meta = obj.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, Mapping) else None
    if isinstance(annotations, Mapping) and names.ANNOTATION_MODEL_PARAMETERS in annotations:
        return None
    options = preset.get("presetOptions") if isinstance(preset, Mapping) else None
    secret = options.get("modelAccessSecret") if isinstance(options, Mapping) else None
    return name, secret if isinstance(secret, str) and secret else None


def resolve_answer(name: str, token: str | None, *, note: str = "") -> ModelPreset | str:
    """:func:`resolve_hub_model` as validation's ``hub_models`` value: the preset or the refusal."""
    try:
        return resolve_hub_model(name, token)
    except HubModelError as exc:
        return f"{exc}{note if exc.reason == 'GatedModel' else ''}"


def token_from_secret(secret: Mapping[str, Any]) -> str | None:
    data = secret.get("data") or {}
    raw = data.get(TOKEN_KEY) if isinstance(data, Mapping) else None
    if not isinstance(raw, str):
        return None
    try:
        return base64.b64decode(raw).decode().strip() or None
    except (binascii.Error, UnicodeDecodeError):
        return None


async def read_token(client: Client, namespace: str, secret: str) -> tuple[str | None, str]:
    """The Hub token in ``secret`` and, when there is none, a note saying why (for the refusal)."""
    try:
        obj = await client.get(SECRET, secret, namespace, cached=False)
    except ApiError as exc:
        if exc.status == 404:
            return None, (
                f"; Secret {secret!r} (presetOptions.modelAccessSecret) does not exist in namespace "
                f"{namespace!r}: create it with key {TOKEN_KEY}"
            )
        return None, f"; kaito could not read Secret {secret!r} ({exc.status}): let the operator get Secrets"
    token = token_from_secret(obj)
    return token, "" if token else f"; Secret {secret!r} has no key {TOKEN_KEY}"


async def lookup_hub_models(
    client: Client | None, namespace: str | None, obj: Any, old: Any = None, *, budget: float = 5.0
) -> dict[str, ModelPreset | str] | None:
    """What the Hub says of a Workspace's ``org/model`` preset, for validation's ``hub_models``;
    None when there is nothing to look up, or on UPDATE when the name did not change (a status or
    finalizer write must not depend on the Hub)."""
    found = hub_preset_of(obj)
    if found is None:
        return None
    name, secret = found
    before = hub_preset_of(old) if old is not None else None
    if before is not None and before[0] == name:
        return None
    token, note = None, ""
    if secret and client is not None and namespace:
        token, note = await read_token(client, namespace, secret)
    try:
        answer = await asyncio.wait_for(asyncio.to_thread(resolve_answer, name, token, note=note), budget)
    except TimeoutError:
        answer = (
            f"the Hugging Face Hub at {endpoint()} (HF_ENDPOINT) did not answer within {budget:g}s for "
            f"{name}; try again"
        )
    return {name: answer}
