"""Label selectors evaluated client-side, so lists served from the cache honour them exactly as
the apiserver would."""

from __future__ import annotations

_SelectorReq = tuple[str, str, tuple[str, ...]]
_selector_cache: dict[str, list[_SelectorReq]] = {}


def match_labels(labels: dict[str, str] | None, selector: str | dict[str, str] | None) -> bool:
    """Supports the string syntax (``a=b,c!=d,e in (x,y),f notin (z),g,!h``) and equality dicts."""
    if not selector:
        return True
    labels = labels or {}
    if isinstance(selector, dict):
        return all(labels.get(k) == v for k, v in selector.items())
    return all(_match_requirement(labels, req) for req in _parse_selector(selector))


def _parse_selector(selector: str) -> list[_SelectorReq]:
    cached = _selector_cache.get(selector)
    if cached is not None:
        return cached
    reqs: list[_SelectorReq] = []
    parts: list[str] = []
    depth, cur = 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    for raw in parts:
        p = raw.strip()
        if not p:
            continue
        lowered = f" {p} "
        if " notin " in lowered or " in " in lowered:
            op = "notin" if " notin " in lowered else "in"
            key, _, rest = p.partition(f" {op} ")
            values = tuple(v.strip() for v in rest.strip().strip("()").split(",") if v.strip())
            reqs.append((key.strip(), op, values))
        elif "!=" in p:
            k, _, v = p.partition("!=")
            reqs.append((k.strip(), "!=", (v.strip(),)))
        elif "==" in p:
            k, _, v = p.partition("==")
            reqs.append((k.strip(), "=", (v.strip(),)))
        elif "=" in p:
            k, _, v = p.partition("=")
            reqs.append((k.strip(), "=", (v.strip(),)))
        elif p.startswith("!"):
            reqs.append((p[1:].strip(), "!exists", ()))
        else:
            reqs.append((p, "exists", ()))
    if len(_selector_cache) < 1024:
        _selector_cache[selector] = reqs
    return reqs


def _match_requirement(labels: dict[str, str], req: _SelectorReq) -> bool:
    key, op, values = req
    if op == "=":
        return labels.get(key) == values[0]
    if op == "!=":
        return labels.get(key) != values[0]
    if op == "in":
        return key in labels and labels[key] in values
    if op == "notin":
        return labels.get(key) not in values
    if op == "exists":
        return key in labels
    return key not in labels
