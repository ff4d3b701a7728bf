"""Price catalogue and cost arithmetic: pure functions, no database.

The catalogue (`backend/data/prices.toml`, or the file named by `NSBI_PRICES`) lists machine
prices per region (GPUs bundled into g2/a2/a3 machine types included) and per-GPU prices for
GPUs attached to N1 machines. `price_per_hour()` is what the controller records on an attempt
at launch; `accrued_cost()` turns that price and the attempt's duration into money.
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from backend.settings import get_settings

DEFAULT_CATALOGUE = Path(__file__).parent / "data" / "prices.toml"


class PriceError(ValueError):
    """No price for a machine / GPU / region, or a malformed catalogue."""


@dataclass(frozen=True)
class MachinePrice:
    machine_type: str
    region: str  # "*" matches every region
    on_demand: float
    spot: float
    gpu_type: str | None = None  # bundled GPU, if any
    gpu_count: int = 0
    own_hardware: bool = False  # "local": free, attached GPUs included


@dataclass(frozen=True)
class GpuPrice:
    gpu_type: str
    region: str
    on_demand: float | None
    spot: float | None
    aliases: tuple[str, ...] = ()
    bundled_only: bool = False


@dataclass(frozen=True)
class Quote:
    """The hourly price of one machine configuration, split into its parts."""

    machine_type: str
    region: str
    spot: bool
    gpu_type: str | None
    gpu_count: int
    machine_per_hour: float
    gpus_per_hour: float

    @property
    def per_hour(self) -> float:
        return self.machine_per_hour + self.gpus_per_hour


@dataclass(frozen=True)
class PriceCatalogue:
    date: str
    currency: str
    default_region: str
    machines: tuple[MachinePrice, ...]
    gpus: tuple[GpuPrice, ...]
    source: str = ""

    def canonical_gpu(self, gpu_type: str | None) -> str | None:
        """The catalogue's name for `gpu_type` (aliases like "T4" resolve), or None."""
        if not gpu_type:
            return None
        key = gpu_type.strip().lower()
        for g in self.gpus:
            if key == g.gpu_type or key in g.aliases:
                return g.gpu_type
        known = sorted({g.gpu_type for g in self.gpus} | {a for g in self.gpus for a in g.aliases})
        raise PriceError(
            f"unknown GPU type {gpu_type!r}; the price catalogue knows: {', '.join(known)}"
        )

    def _machine(self, machine_type: str, region: str) -> MachinePrice:
        exact = [m for m in self.machines if m.machine_type == machine_type and m.region == region]
        wild = [m for m in self.machines if m.machine_type == machine_type and m.region == "*"]
        if exact or wild:
            return (exact or wild)[0]
        regions = sorted({m.region for m in self.machines if m.machine_type == machine_type})
        if regions:
            raise PriceError(
                f"no price for machine type {machine_type!r} in region {region!r}; "
                f"priced regions: {', '.join(regions)}"
            )
        known = sorted({m.machine_type for m in self.machines})
        raise PriceError(
            f"unknown machine type {machine_type!r}; the price catalogue knows: {', '.join(known)}"
        )

    def quote(
        self,
        machine_type: str,
        gpu_type: str | None = None,
        gpu_count: int = 0,
        spot: bool = False,
        region: str | None = None,
    ) -> Quote:
        """Price one machine configuration; raises `PriceError` naming what is missing."""
        region = region or self.default_region
        m = self._machine(machine_type, region)
        gpu = self.canonical_gpu(gpu_type) if gpu_count else None
        machine_rate = m.spot if spot else m.on_demand
        if m.own_hardware:
            return Quote(machine_type, region, spot, gpu, gpu_count, 0.0, 0.0)
        if m.gpu_type is not None:
            if gpu is not None and (gpu != m.gpu_type or gpu_count != m.gpu_count):
                raise PriceError(
                    f"machine type {machine_type!r} comes with {m.gpu_count} x {m.gpu_type}; "
                    f"got gpu_type={gpu_type!r}, gpu_count={gpu_count}"
                )
            return Quote(machine_type, region, spot, m.gpu_type, m.gpu_count, machine_rate, 0.0)
        if gpu is None:
            return Quote(machine_type, region, spot, None, 0, machine_rate, 0.0)
        g = self._gpu(gpu, region)
        rate = g.spot if spot else g.on_demand
        if g.bundled_only or rate is None:
            raise PriceError(
                f"GPU {gpu!r} cannot be attached to {machine_type!r}; it comes bundled with "
                + ", ".join(sorted({x.machine_type for x in self.machines if x.gpu_type == gpu}))
            )
        return Quote(machine_type, region, spot, gpu, gpu_count, machine_rate, rate * gpu_count)

    def _gpu(self, gpu: str, region: str) -> GpuPrice:
        for g in self.gpus:
            if g.gpu_type == gpu and g.region in (region, "*"):
                return g
        regions = sorted({g.region for g in self.gpus if g.gpu_type == gpu})
        raise PriceError(
            f"no price for GPU {gpu!r} in region {region!r}; priced regions: {', '.join(regions)}"
        )

    def price_per_hour(
        self,
        machine_type: str,
        gpu_type: str | None = None,
        gpu_count: int = 0,
        spot: bool = False,
        region: str | None = None,
    ) -> float:
        return self.quote(machine_type, gpu_type, gpu_count, spot, region).per_hour


def parse_catalogue(doc: Mapping[str, Any], source: str = "<catalogue>") -> PriceCatalogue:
    """Build a catalogue from parsed TOML; errors name the file, section index and key."""

    def need(entry: Mapping[str, Any], key: str, where: str) -> Any:
        if key not in entry:
            raise PriceError(f"{source}: {where}: missing key {key!r}")
        return entry[key]

    machines = []
    for i, e in enumerate(doc.get("machine", [])):
        where = f"machine[{i}]"
        machines.append(
            MachinePrice(
                machine_type=str(need(e, "type", where)),
                region=str(e.get("region", "*")),
                on_demand=float(need(e, "on_demand", where)),
                spot=float(e.get("spot", need(e, "on_demand", where))),
                gpu_type=e.get("gpu_type") or None,
                gpu_count=int(e.get("gpu_count", 0)),
                own_hardware=bool(e.get("own_hardware", False)),
            )
        )
    gpus = []
    for i, e in enumerate(doc.get("gpu", [])):
        where = f"gpu[{i}]"
        bundled = bool(e.get("bundled_only", False))
        gpus.append(
            GpuPrice(
                gpu_type=str(need(e, "type", where)).lower(),
                region=str(e.get("region", "*")),
                on_demand=None if bundled else float(need(e, "on_demand", where)),
                spot=None if bundled else float(e.get("spot", need(e, "on_demand", where))),
                aliases=tuple(str(a).lower() for a in e.get("aliases", ())),
                bundled_only=bundled,
            )
        )
    if not machines:
        raise PriceError(f"{source}: no [[machine]] entries")
    return PriceCatalogue(
        date=str(doc.get("date", "")),
        currency=str(doc.get("currency", "USD")),
        default_region=str(doc.get("default_region", "us-central1")),
        machines=tuple(machines),
        gpus=tuple(gpus),
        source=str(doc.get("source", "")),
    )


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime: float) -> PriceCatalogue:
    with open(path, "rb") as fh:
        try:
            doc = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise PriceError(f"{path}: not valid TOML: {exc}") from exc
    return parse_catalogue(doc, source=path)


def load_catalogue(path: str | Path | None = None) -> PriceCatalogue:
    """The price catalogue at `path` (default: `NSBI_PRICES` or the shipped prices.toml).

    Re-read when the file changes, so editing prices.toml takes effect without a restart.
    """
    p = Path(path or get_settings().prices or DEFAULT_CATALOGUE)
    if not p.is_file():
        raise PriceError(f"price catalogue {p} not found")
    return _load(str(p), p.stat().st_mtime)


def region_of_zone(zone: str | None) -> str | None:
    """GCE zone -> region ("us-central1-a" -> "us-central1"); None stays None."""
    if not zone:
        return None
    parts = zone.rsplit("-", 1)
    return parts[0] if len(parts) == 2 and len(parts[1]) == 1 else zone


def hours_between(start: datetime | None, end: datetime | None) -> float:
    """Billed hours from `start` to `end` (0 if it never started or ends before it starts)."""
    if start is None or end is None:
        return 0.0
    return max((end - start).total_seconds(), 0.0) / 3600.0


def accrued_cost(price_per_hour: float, start: datetime | None, end: datetime | None) -> float:
    """Cost of one attempt: duration x the price recorded at launch."""
    return price_per_hour * hours_between(start, end)


@dataclass(frozen=True)
class JobEstimate:
    name: str
    kind: str
    hours: float
    gpu_hours: float
    price_per_hour: float
    cost: float
    task: str | None = None  # the ratio task of a train job (the estimate's breakdown)


@dataclass(frozen=True)
class Estimate:
    """What a campaign should cost before it is launched (no retries or preemptions counted)."""

    machine_hours: float
    gpu_hours: float
    cost: float
    currency: str
    catalogue_date: str
    per_job: tuple[JobEstimate, ...]
