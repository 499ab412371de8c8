"""``--seed-file``: tunes and prompts (with images) a sandbox starts with.

```yaml
tenants:
  sd_demo_key:                 # the API key whose tenant gets the objects
    tunes:
      - title: Jane
        name: woman
        model_type: faceid
        images: [faces/jane.jpg]        # paths relative to the seed file
        prompts:
          - checkpoint: 690204          # where to post it (default: the tune itself)
            text: "<faceid:$tune:1> Jane trekking in the alps"   # $tune: this tune's id
            num_images: 2
```
Every entry goes through the same rules as the API; seeded prompts are completed at
once. A tenant that already has tunes is not seeded again (restarts keep their state).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml

from .auth import tenant_for
from .bodies import UploadedFile, for_validation
from .errors import ApiError
from .prompts import create_prompt
from .services import Services
from .tunes import create_tune


class SeedError(ValueError):
    """A seed file that cannot be loaded; the message names the entry."""


def read_seed(path: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(path.read_text("utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SeedError(f"{path}: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("tenants"), dict):
        raise SeedError(f"{path}: expected 'tenants: {{API_KEY: {{tunes: [...]}}}}'")
    return document


async def load_seed(
    services: Services, path: Path, complete: Callable[[int], Awaitable[None]]
) -> int:
    """Create what the file lists for each tenant not seeded yet; returns the tunes made."""
    made = 0
    for key, content in read_seed(path)["tenants"].items():
        tenant = tenant_for(f"Bearer {key}", frozenset())
        with services.store.begin() as tx:
            if tx.has_own_tunes(tenant):
                continue
        for index, entry in enumerate((content or {}).get("tunes", [])):
            where = f"{path}: tenant {key[:6]}…, tune {index}"
            await _seed_tune(services, path.parent, tenant, entry, where, complete)
            made += 1
    return made


async def _seed_tune(
    services: Services,
    folder: Path,
    tenant: str,
    entry: Any,
    where: str,
    complete: Callable[[int], Awaitable[None]],
) -> None:
    if not isinstance(entry, dict):
        raise SeedError(f"{where}: a tune is a mapping of tune fields")
    fields = {k: v for k, v in entry.items() if k not in ("images", "prompts")}
    images = []
    for name in entry.get("images", []):
        try:
            images.append(UploadedFile(str(name), "", (folder / str(name)).read_bytes()))
        except OSError as exc:
            raise SeedError(f"{where}: image {name}: {exc.strerror}") from None
    if images:
        fields["images"] = images
    _check(services, "createTune", {"tune": fields}, where)
    try:
        tune = await create_tune(services, tenant, fields)
        for number, prompt in enumerate(entry.get("prompts", [])):
            if not isinstance(prompt, dict):
                raise SeedError(f"{where}, prompt {number}: a prompt is a mapping")
            prompt_fields = {k: v for k, v in prompt.items() if k != "checkpoint"}
            text = str(prompt_fields.get("text", ""))
            prompt_fields["text"] = text.replace("$tune", str(tune["id"]))
            _check(services, "createPrompt", {"prompt": prompt_fields}, f"{where}, prompt {number}")
            target = prompt.get("checkpoint", tune["id"])
            if not isinstance(target, int):
                raise SeedError(f"{where}, prompt {number}: checkpoint is a tune id")
            row = await create_prompt(services, tenant, target, prompt_fields)
            await complete(row["id"])
    except ApiError as error:
        raise SeedError(f"{where}: {error.message}") from None


def _check(services: Services, operation_id: str, body: dict[str, Any], where: str) -> None:
    operation = services.contract.operations[operation_id]
    problems = [v for v in operation.check_body(for_validation(body)) if not v.lenient]
    if problems:
        details = "; ".join(f"{v.field} {v.message}" for v in problems)
        raise SeedError(f"{where}: {details}")
