"""A local metric projection, so that metres never come from degrees (shapely is planar).

Equirectangular about a reference point, scaled by the WGS 84 metres per degree of latitude and of
longitude at the reference latitude. Within a few kilometres of the reference point (hot spot scale)
distances are accurate to well under 0.1 %. Used for the exit buffer (docs/interface.md,
Semantics: exit: left).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely

_A = 6_378_137.0
_E2 = 6.694379990141317e-3

FloatArray = npt.NDArray[np.float64]


def metres_per_degree(lat: float) -> tuple[float, float]:
    """``(metres per degree of longitude, metres per degree of latitude)`` on WGS 84 at ``lat``."""
    phi = math.radians(lat)
    w = 1.0 - _E2 * math.sin(phi) ** 2
    meridional = _A * (1.0 - _E2) / w**1.5
    prime_vertical = _A / math.sqrt(w)
    return (
        math.radians(1.0) * prime_vertical * math.cos(phi),
        math.radians(1.0) * meridional,
    )


@dataclass(frozen=True, slots=True)
class LocalProjection:
    """Lon/lat (degrees) to ``x`` east / ``y`` north in metres from ``(lon0, lat0)``."""

    lon0: float
    lat0: float
    #: ``metres_per_degree(lat0)``, made once (the exit buffer measures on every ping that
    #: leaves a hot spot)
    kx: float = field(init=False, repr=False, compare=False)
    ky: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        kx, ky = metres_per_degree(self.lat0)
        object.__setattr__(self, "kx", kx)
        object.__setattr__(self, "ky", ky)

    @classmethod
    def centred_on(cls, geometry: Any) -> LocalProjection:
        """The projection about the centre of ``geometry``'s lon/lat bounding box."""
        xmin, ymin, xmax, ymax = shapely.bounds(geometry)
        return cls((xmin + xmax) / 2.0, (ymin + ymax) / 2.0)

    def to_metres(self, lons: npt.ArrayLike, lats: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Vectorised: arrays (or scalars) of lon and lat in degrees to x and y in metres."""
        x = (np.asarray(lons, dtype=np.float64) - self.lon0) * self.kx
        y = (np.asarray(lats, dtype=np.float64) - self.lat0) * self.ky
        return x, y

    def point_to_metres(self, lon: float, lat: float) -> tuple[float, float]:
        """``to_metres`` of one point, without numpy's per-call cost (the same floats)."""
        return (lon - self.lon0) * self.kx, (lat - self.lat0) * self.ky

    def project_geometry(self, geometry: Any) -> Any:
        """A copy of a lon/lat shapely geometry with its coordinates in metres."""
        kx, ky = self.kx, self.ky
        offset: FloatArray = np.array([self.lon0, self.lat0], dtype=np.float64)
        scale: FloatArray = np.array([kx, ky], dtype=np.float64)

        def transform(coords: FloatArray) -> FloatArray:
            return (coords - offset) * scale

        return shapely.transform(geometry, transform)
