"""What the uplink sends, and how: the event types it takes from the journal and the WATS call each becomes."""

from __future__ import annotations

from ...events.model import EventType

REPORT_TYPES = (EventType.TEST_RESULT.value, EventType.INSPECTION_RESULT.value)
#: What the uplink sends; every other type stays out of its way (the subscriber never even decodes them).
SENT_TYPES = (*REPORT_TYPES, EventType.ASSET_COUNTERS.value, EventType.ASSET_STATE_CHANGED.value,
              EventType.ASSET_FAULT.value, EventType.ASSET_MAINTENANCE.value, EventType.ASSET_CALIBRATION.value,
              EventType.MATERIAL_INSTALLED.value)
#: What the uplink does with each event type it sends (docs/wats-uplink.md): ``cfx samples`` and ``status`` say it,
#: and a test holds its keys equal to SENT_TYPES and to what ``WatsSink.handle`` dispatches.
ROUTES = {
    "test.result": "POST /api/Report/WSJF", "inspection.result": "POST /api/Report/WSJF",
    "asset.counters": "PUT /api/Asset/SetRunningCount + SetTotalCount", "asset.state_changed": "PUT /api/Asset/State",
    "asset.fault": "POST /api/Asset/Message", "asset.maintenance": "POST /api/Asset/Maintenance",
    "asset.calibration": "POST /api/Asset/Calibration",
    "material.installed": "POST /api/Production/AddChildUnit (components with a serial number)",
}
#: Absolute values: a later event replaces an earlier one, so an earlier one must never be sent after it.
LATEST_WINS = (EventType.ASSET_COUNTERS.value, EventType.ASSET_STATE_CHANGED.value)
