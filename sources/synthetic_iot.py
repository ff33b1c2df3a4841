"""Synthetic IoT telemetry: sensors reporting temperature, humidity and battery that drift plausibly.

Devices report round robin (record `index` is device `index % population`). Each reading is a function of
the device's own parameters (drawn from the seed) and the reading's timestamp: temperature follows a daily
cycle plus a slow wander and a little noise, humidity moves against temperature, the battery drains
steadily and is replaced when low (a sawtooth over days). Because the drift follows the timestamp, it is
continuous across restarts on the real clock, and fixed by `start_time`.

The records carry the fields the processor's generic mapping reads by default (`id`, `username`, `text`,
`timestamp`): `username` repeats `device_id`, `text` is a one-line summary.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sources.synthetic_base import Draws, Timestamps, chunked, encode_json, uuid_text

DEFAULT_DEVICES = 100
_DAY_S = 86_400.0
_TAU = 2 * math.pi
_LOW_BATTERY_PCT = 15.0
# A battery is replaced at this level, so a reading never shows an empty one.
_BATTERY_REPLACED_AT_PCT = 5.0
_MODELS = ["TH-200", "TH-210", "EnviroSense 3", "AirNode Mini"]
_FIRMWARE = ["2.3.9", "2.4.0", "2.4.1"]
# (site, typical indoor temperature in °C, typical relative humidity in %)
_SITES: list[tuple[str, float, float]] = [
    ("warehouse-hamburg-2", 14.0, 62.0),
    ("office-berlin-3", 21.5, 41.0),
    ("greenhouse-almeria-1", 27.0, 78.0),
    ("datacenter-dublin-1", 19.0, 35.0),
    ("cold-store-rotterdam", 4.0, 85.0),
    ("school-lyon-7", 20.5, 47.0),
]


@dataclass(frozen=True, slots=True)
class _Device:
    device_id: str
    model: str
    firmware: str
    site: str
    base_c: float
    daily_amplitude_c: float
    phase: float
    wander_c: float
    wander_period_s: float
    base_humidity: float
    battery_cycle_s: float
    battery_offset: float
    rssi_dbm: float


def _device(seed: int, number: int) -> _Device:
    rng = random.Random(f"{seed}:device:{number}")
    site, base_c, base_humidity = rng.choice(_SITES)
    return _Device(
        device_id=f"sensor-{number:05d}",
        model=rng.choice(_MODELS),
        firmware=rng.choice(_FIRMWARE),
        site=site,
        base_c=base_c + rng.uniform(-1.5, 1.5),
        daily_amplitude_c=rng.uniform(0.3, 3.0),
        phase=rng.uniform(0, _TAU),
        wander_c=rng.uniform(0.2, 1.2),
        wander_period_s=rng.uniform(3, 11) * 3600,
        base_humidity=base_humidity + rng.uniform(-5, 5),
        battery_cycle_s=rng.uniform(5, 30) * _DAY_S,
        battery_offset=rng.random(),
        rssi_dbm=rng.uniform(-85, -45),
    )


class IotKind:
    """Synthetic sensor readings: events for index = start, start + 1, ..."""

    def __init__(self, seed: int, population: int, timestamps: Timestamps) -> None:
        self.seed = seed
        self.population = population or DEFAULT_DEVICES
        self._timestamps = timestamps
        self._devices: dict[int, _Device] = {}

    def _make(self, draws: Draws, index: int) -> dict[str, Any]:
        number, reading = index % self.population, index // self.population
        device = self._devices.get(number)
        if device is None:
            device = self._devices[number] = _device(self.seed, number)
        epoch_ms = self._timestamps.epoch_ms(index)
        t = epoch_ms / 1000
        temperature = (
            device.base_c
            + device.daily_amplitude_c * math.sin(_TAU * t / _DAY_S + device.phase)
            + device.wander_c * math.sin(_TAU * t / device.wander_period_s + device.phase)
            + draws.gauss(0.1)
        )
        humidity = device.base_humidity - 1.6 * (temperature - device.base_c) + draws.gauss(0.6)
        humidity = min(99.0, max(1.0, humidity))
        drained = (t / device.battery_cycle_s + device.battery_offset) % 1.0
        battery = 100.0 - (100.0 - _BATTERY_REPLACED_AT_PCT) * drained
        temperature, humidity, battery = round(temperature, 2), round(humidity, 1), round(battery, 1)
        return {
            "id": uuid_text(draws),
            "timestamp": self._timestamps.iso(epoch_ms),
            "device_id": device.device_id,
            "username": device.device_id,
            "seq": reading,
            "model": device.model,
            "firmware": device.firmware,
            "site": device.site,
            "temperature_c": temperature,
            "humidity_pct": humidity,
            "battery_pct": battery,
            "rssi_dbm": round(device.rssi_dbm + draws.gauss(2.0)),
            "status": "low_battery" if battery < _LOW_BATTERY_PCT else "ok",
            "text": f"{device.device_id} at {device.site}: {temperature:.1f} °C, {humidity:.0f} % RH, battery {battery:.0f} %",
        }

    def events(self, start: int) -> Iterator[dict[str, Any]]:
        return chunked(self.seed, start, self._make)

    def encode(self, event: dict[str, Any]) -> bytes:
        return encode_json(event).encode()
