// Control room page: a map of hot spots and units, a board sorted by urgency and a feed of the
// latest events, kept live by Server-Sent Events from the worker (/api/stream).
// Plain ES module, no build step; Leaflet (vendored) is loaded before it as the global `L`.

const STATES = {
  covered: { label: "Covered now", tag: "COVERED", meaning: "a unit is there now" },
  at_risk: { label: "At risk", tag: "AT RISK", meaning: "short, little time left" },
  gap: { label: "Gap", tag: "GAP", meaning: "window ended short" },
  pending: { label: "Due", tag: "DUE", meaning: "in a window, minutes still owed" },
  met: { label: "Met", tag: "MET", meaning: "this window's minutes done" },
  idle: { label: "No window", tag: "NO WINDOW", meaning: "outside any patrol window" },
  unknown: { label: "No data", tag: "NO DATA", meaning: "its worker is not answering" },
};
// Drawn on the map (SVG attributes); the board and labels use the same colours from style.css.
const STATE_STYLE = {
  covered: { color: "#34d399", fillOpacity: 0.45, dashArray: null },
  at_risk: { color: "#fbbf24", fillOpacity: 0.45, dashArray: "10 6" },
  gap: { color: "#f87171", fillOpacity: 0.45, dashArray: "3 6" },
  pending: { color: "#c4b5fd", fillOpacity: 0.25, dashArray: null },
  met: { color: "#60a5fa", fillOpacity: 0.3, dashArray: null },
  idle: { color: "#8391a7", fillOpacity: 0.1, dashArray: null },
  unknown: { color: "#8391a7", fillOpacity: 0.05, dashArray: "1 8" },
};
const UNIT_TYPES = {
  police: "POL",
  pcso: "PCSO",
  outreach: "OUT",
  security: "SEC",
  unknown: "?",
};
const FEED_LIMIT = 50;
const WATCHDOG_MS = 6000; // the server sends state about every second
const MAX_RETRY_MS = 15000;

const control = {
  ready: false,
  connected: false,
  lastStateAt: 0,
  stateCount: 0,
  error: null,
};
window.hotspotControlRoom = control;

const token = new URLSearchParams(location.search).get("token");

function apiUrl(path, query = {}) {
  const url = new URL(path, document.baseURI);
  for (const [key, value] of Object.entries(query)) url.searchParams.set(key, String(value));
  if (token) url.searchParams.set("token", token);
  return url.toString();
}

async function getJson(path, query) {
  const response = await fetch(apiUrl(path, query), {
    headers: { Accept: "application/json" },
    cache: "no-store",
  });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------
// Small DOM helpers (text only: names come from files and must never be parsed as HTML).

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "style") Object.assign(el.style, value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const $ = (id) => document.getElementById(id);

function cssToken(value) {
  return String(value).replace(/[^A-Za-z0-9_-]/g, "_");
}

function knownState(state) {
  return Object.hasOwn(STATES, state) ? state : "unknown";
}

function setStateClass(el, prefix, state) {
  if (!el) return;
  for (const name of [...el.classList]) {
    if (name.startsWith(prefix)) el.classList.remove(name);
  }
  el.classList.add(prefix + state);
}

// ---------------------------------------------------------------------------------------------
// Time: everything shown in the hot spots' time zone.

let timeZone = "Europe/London";
let fmt = makeFormatters(timeZone);

function makeFormatters(zone) {
  const make = (options) => {
    try {
      return new Intl.DateTimeFormat("en-GB", { timeZone: zone, hourCycle: "h23", ...options });
    } catch {
      return new Intl.DateTimeFormat("en-GB", { hourCycle: "h23", ...options });
    }
  };
  return {
    hm: make({ hour: "2-digit", minute: "2-digit" }),
    hms: make({ hour: "2-digit", minute: "2-digit", second: "2-digit" }),
    day: make({ weekday: "short", day: "numeric", month: "short" }),
    zone: make({ timeZoneName: "short" }),
  };
}

function parseTs(value) {
  if (value === null || value === undefined) return null;
  const ms = typeof value === "number" ? value * 1000 : Date.parse(value);
  return Number.isFinite(ms) ? ms : null;
}

function hm(value) {
  const ms = parseTs(value);
  return ms === null ? "--:--" : fmt.hm.format(ms);
}

function hms(value) {
  const ms = parseTs(value);
  return ms === null ? "--:--:--" : fmt.hms.format(ms);
}

function zoneName(ms) {
  const part = fmt.zone.formatToParts(ms).find((p) => p.type === "timeZoneName");
  return part ? part.value : timeZone;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return s < 600 ? `${m} min ${s % 60} s` : `${m} min`;
  const hours = Math.floor(m / 60);
  return `${hours} h ${m % 60} min`;
}

function coarse(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
  return seconds < 60 ? "<1 min" : minutesText(seconds / 60);
}

function minutesText(minutes) {
  if (!Number.isFinite(minutes)) return "–";
  if (minutes > 0 && minutes < 1) return "<1 min";
  const m = Math.floor(minutes);
  return m >= 60 ? `${Math.floor(m / 60)} h ${m % 60} min` : `${m} min`;
}

function roundMinutes(minutes) {
  // Never overstate coverage: whole minutes done, rounded down.
  return Number.isFinite(minutes) ? Math.floor(minutes + 1e-9) : 0;
}

// ---------------------------------------------------------------------------------------------
// Model

const model = {
  config: null,
  now: null,
  hotspots: new Map(), // id -> latest item (geometry kept from /api/hotspots)
  order: [], // ids, most urgent first
  units: new Map(),
  feed: [], // {key, kind, event}, oldest first
  feedKeys: new Set(),
};

function unitLabel(type) {
  return UNIT_TYPES[type] || String(type || "?").slice(0, 4).toUpperCase();
}

function hotspotName(id) {
  const item = model.hotspots.get(id);
  return item && item.name ? `${id} ${item.name}` : String(id);
}

// ---------------------------------------------------------------------------------------------
// Map

let map = null;
let tileLayer = null;
let tileUrl;
const polygons = new Map(); // id -> {layer, geometryKey, tip}
const markers = new Map(); // unit_id -> {marker, el}
let fitted = false;

function initMap() {
  map = L.map("map", {
    zoomSnap: 0.25,
    attributionControl: true,
    preferCanvas: false,
    worldCopyJump: false,
  });
  map.attributionControl.setPrefix(false);
  L.control.scale({ imperial: false, maxWidth: 160 }).addTo(map);
  // Units above hot spot labels: a unit is never hidden behind a label.
  map.getPane("tooltipPane").style.zIndex = 590;
  const FitControl = L.Control.extend({
    options: { position: "topright" },
    onAdd() {
      const button = h("button", { class: "map-button", type: "button", title: "Show every hot spot" }, "All hot spots");
      L.DomEvent.disableClickPropagation(button);
      button.addEventListener("click", () => fitAll());
      return button;
    },
  });
  new FitControl().addTo(map);
  map.setView([0, 0], 2); // until the hot spots arrive
  // The map pane changes size with the banner and the window: keep Leaflet's idea of it right.
  new ResizeObserver(() => map.invalidateSize({ pan: false })).observe($("map"));
}

function applyTiles(config) {
  const url = config.tile_url || null;
  if (url === tileUrl) return;
  tileUrl = url;
  if (tileLayer) {
    tileLayer.remove();
    tileLayer = null;
  }
  document.body.classList.toggle("no-tiles", !url);
  if (url) {
    tileLayer = L.tileLayer(url, {
      attribution: config.tile_attribution || "",
      maxZoom: 20,
    }).addTo(map);
  }
}

function toLatLngs(geometry) {
  const ring = (r) => r.map(([lon, lat]) => [lat, lon]);
  if (!geometry || !Array.isArray(geometry.coordinates)) return null;
  if (geometry.type === "Polygon") return geometry.coordinates.map(ring);
  if (geometry.type === "MultiPolygon") return geometry.coordinates.map((poly) => poly.map(ring));
  return null;
}

function drawHotspots(items) {
  const seen = new Set();
  for (const item of items) {
    seen.add(item.id);
    const state = knownState(item.state);
    const geometryKey = JSON.stringify(item.geometry);
    let entry = polygons.get(item.id);
    if (entry && entry.geometryKey !== geometryKey) {
      entry.layer.remove();
      entry.tooltip.remove();
      entry = undefined;
    }
    if (!entry) {
      const latlngs = toLatLngs(item.geometry);
      if (!latlngs) continue;
      const layer = L.polygon(latlngs, {
        ...pathStyle(state),
        weight: 3,
        className: `hs-poly hs-${cssToken(item.id)} state-${state}`,
      });
      layer.on("click", () => focusHotspot(item.id));
      layer.addTo(map);
      layer.getElement()?.setAttribute("data-hotspot-id", item.id);
      // The label sits just above the shape, so units inside it stay visible.
      const bounds = layer.getBounds();
      const tip = h("span", { class: "hs-tip-text" });
      const tooltip = L.tooltip({
        permanent: true,
        direction: "top",
        className: `hs-tip state-${state}`,
        opacity: 1,
        offset: [0, -2],
      })
        .setLatLng([bounds.getNorth(), bounds.getCenter().lng])
        .setContent(tip)
        .addTo(map);
      entry = { layer, geometryKey, tip, tooltip, state: null };
      polygons.set(item.id, entry);
    }
    styleHotspot(item);
  }
  for (const [id, entry] of polygons) {
    if (!seen.has(id)) {
      entry.layer.remove();
      entry.tooltip.remove();
      polygons.delete(id);
    }
  }
  if (!fitted && polygons.size) {
    fitAll();
    fitted = true;
  }
}

function pathStyle(state) {
  const s = STATE_STYLE[state];
  return { color: s.color, fillColor: s.color, fillOpacity: s.fillOpacity, dashArray: s.dashArray };
}

function styleHotspot(item) {
  const entry = polygons.get(item.id);
  if (!entry) return false;
  const state = knownState(item.state);
  if (entry.state !== state) {
    entry.layer.setStyle(pathStyle(state));
    // Leaflet applies className only at creation: keep the state class on the element current.
    setStateClass(entry.layer.getElement(), "state-", state);
    setStateClass(entry.tooltip.getElement(), "state-", state);
    entry.tooltip.options.className = `hs-tip state-${state}`;
    entry.state = state;
  }
  entry.tip.replaceChildren(
    h("b", {}, item.id),
    " ",
    h("span", { class: "hs-tip-state" }, STATES[state].tag),
  );
  return true;
}

function fitAll() {
  const layers = [...polygons.values()].map((e) => e.layer);
  if (!layers.length) return;
  map.fitBounds(L.featureGroup(layers).getBounds(), { padding: [40, 40], maxZoom: 17 });
}

function focusHotspot(id) {
  const entry = polygons.get(id);
  if (entry) map.fitBounds(entry.layer.getBounds(), { padding: [80, 80], maxZoom: 18 });
  for (const row of document.querySelectorAll(".row.selected")) row.classList.remove("selected");
  document.querySelector(`.row[data-hotspot-id="${CSS.escape(id)}"]`)?.classList.add("selected");
}

function drawUnits(units) {
  const seen = new Set();
  for (const unit of units) {
    if (!Number.isFinite(unit.lat) || !Number.isFinite(unit.lon)) continue;
    seen.add(unit.unit_id);
    let entry = markers.get(unit.unit_id);
    if (!entry) {
      const el = h("div", { class: "unit-chip" });
      const icon = L.divIcon({
        className: "unit-marker",
        html: el,
        iconSize: [14, 14],
        iconAnchor: [7, 7],
      });
      const marker = L.marker([unit.lat, unit.lon], {
        icon,
        keyboard: false,
        title: unit.unit_id,
        riseOnHover: true,
      }).addTo(map);
      entry = { marker, el };
      markers.set(unit.unit_id, entry);
    }
    const root = entry.marker.getElement();
    if (root) {
      root.dataset.unitId = unit.unit_id;
      root.dataset.unitType = unit.unit_type || "unknown";
      setStateClass(root, "type-", cssToken(unit.unit_type || "unknown"));
      root.classList.toggle("stale", Boolean(unit.stale));
    }
    const ll = entry.marker.getLatLng();
    if (ll.lat !== unit.lat || ll.lng !== unit.lon) entry.marker.setLatLng([unit.lat, unit.lon]);
    entry.marker.setZIndexOffset(unit.stale ? -1000 : 1000);
    entry.el.replaceChildren(
      h("span", { class: "unit-type" }, unitLabel(unit.unit_type)),
      h("span", { class: "unit-id" }, unit.unit_id),
      h("span", { class: "unit-age" }, unit.stale ? `stale ${duration(unit.age_s)}` : duration(unit.age_s)),
    );
  }
  for (const [id, entry] of markers) {
    if (!seen.has(id)) {
      entry.marker.remove();
      markers.delete(id);
    }
  }
}

// A line from each hot spot at risk to each unit suggested for it (Leaflet takes [lat, lon]).
const suggestionLines = new Map(); // hotspot id -> {key, group}

function drawSuggestions(items) {
  const seen = new Set();
  for (const item of items) {
    const units = item.state === "at_risk" && item.suggestion ? item.suggestion.units || [] : [];
    const poly = polygons.get(item.id);
    if (!units.length || !poly) continue;
    const centre = poly.layer.getBounds().getCenter();
    const ends = units
      .map((u) => ({ u, at: model.units.get(u.unit_id) }))
      .filter(({ at }) => at && Number.isFinite(at.lat) && Number.isFinite(at.lon));
    const key = JSON.stringify(ends.map(({ u, at }) => [u.unit_id, u.busy, at.lat, at.lon]));
    seen.add(item.id);
    const held = suggestionLines.get(item.id);
    if (held && held.key === key) continue;
    if (held) held.group.remove();
    const group = L.layerGroup(
      ends.map(({ u, at }) =>
        L.polyline([centre, [at.lat, at.lon]], {
          className: `suggestion-line hs-${cssToken(item.id)}${u.busy ? " busy" : ""}`,
          color: "#fbbf24",
          weight: 2,
          dashArray: u.busy ? "2 6" : "6 4",
          interactive: false,
        }),
      ),
    ).addTo(map);
    suggestionLines.set(item.id, { key, group });
  }
  for (const [id, held] of suggestionLines) {
    if (!seen.has(id)) {
      held.group.remove();
      suggestionLines.delete(id);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Board

function sortByUrgency(items) {
  return [...items].sort((a, b) => {
    const ua = Number.isFinite(a.urgency) ? a.urgency : -Infinity;
    const ub = Number.isFinite(b.urgency) ? b.urgency : -Infinity;
    if (ub !== ua) return ub - ua;
    return String(a.id) < String(b.id) ? -1 : String(a.id) > String(b.id) ? 1 : 0;
  });
}

const rows = new Map(); // id -> li

function renderBoard(items) {
  const board = $("board");
  const sorted = sortByUrgency(items);
  const seen = new Set();
  sorted.forEach((item, index) => {
    seen.add(item.id);
    let row = rows.get(item.id);
    if (!row) {
      row = h("li", { class: "row", tabindex: "0", dataset: { hotspotId: item.id } });
      row.addEventListener("click", () => focusHotspot(item.id));
      row.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") focusHotspot(item.id);
      });
      rows.set(item.id, row);
    }
    fillRow(row, item);
    if (board.children[index] !== row) board.insertBefore(row, board.children[index] || null);
  });
  for (const [id, row] of rows) {
    if (!seen.has(id)) {
      row.remove();
      rows.delete(id);
    }
  }
  if (!sorted.length) board.replaceChildren(h("li", { class: "empty" }, "No hot spots loaded."));
  else board.querySelector(":scope > .empty")?.remove();
}

function fillRow(row, item) {
  const state = knownState(item.state);
  row.dataset.state = state;
  setStateClass(row, "state-", state);
  const win = item.window;
  const nowMs = parseTs(model.now);
  const present = Array.isArray(item.present) ? item.present : [];
  const eligible = win && Array.isArray(win.unit_types) ? new Set(win.unit_types) : null;

  const title = h(
    "div",
    { class: "row-title" },
    h("span", { class: "hs-id" }, item.id),
    h("span", { class: "hs-name" }, item.name || ""),
  );

  const parts = [title];
  if (win) {
    const required = Number(win.required_minutes) || 0;
    const covered = Number(win.covered_minutes) || 0;
    const done = roundMinutes(covered);
    const short = Math.max(0, required - covered);
    const pct = required > 0 ? Math.min(100, (covered / required) * 100) : 100;
    const left = Number(win.minutes_left);
    const ended = !(left > 0);
    const who = eligible ? [...eligible].join(" / ") : "any unit";
    parts.push(
      h(
        "div",
        { class: "row-window" },
        h("span", { class: "win-times" }, `${hm(win.start)}–${hm(win.end)}`),
        h("span", { class: "win-who" }, who),
        h(
          "span",
          { class: "win-left" },
          ended ? `ended ${hm(win.end)}` : `${minutesText(left)} left`,
        ),
      ),
      h(
        "div",
        { class: "row-progress" },
        h(
          "div",
          {
            class: "bar",
            role: "progressbar",
            "aria-valuemin": "0",
            "aria-valuemax": String(required),
            "aria-valuenow": String(done),
          },
          h("span", { class: "bar-fill", style: { width: `${pct}%` } }),
        ),
        h("span", { class: "mins" }, h("b", {}, String(done)), ` / ${required} min`),
        short > 0 && !ended && short > left
          ? h("span", { class: "warn" }, `needs ${Math.ceil(short)} min more, only ${minutesText(left)} left`)
          : null,
      ),
    );
  } else {
    const next = item.next_window;
    const nextStart = next ? parseTs(next.start) : null;
    const sameDay =
      nextStart !== null && nowMs !== null && fmt.day.format(nextStart) === fmt.day.format(nowMs);
    const when =
      nextStart === null ? null : sameDay ? hm(next.start) : `${fmt.day.format(nextStart)} ${hm(next.start)}`;
    parts.push(
      h(
        "div",
        { class: "row-window muted" },
        when
          ? `No patrol window now · next ${when}–${hm(next.end)}, ${Number(next.required_minutes) || 0} min required`
          : "No patrol window now",
      ),
    );
  }

  if (present.length) {
    parts.push(
      h(
        "ul",
        { class: "row-present" },
        present.map((p) => {
          const since = parseTs(p.enter_ts);
          const counts = !eligible || eligible.has(p.unit_type);
          return h(
            "li",
            {
              class: `present-unit type-${cssToken(p.unit_type || "unknown")}${counts ? "" : " not-counted"}`,
              title: counts ? null : "this unit type does not count for this window",
            },
            h("span", { class: "unit-type" }, unitLabel(p.unit_type)),
            ` ${p.unit_id}`,
            h(
              "span",
              { class: "since" },
              ` since ${hm(p.enter_ts)}` +
                (since !== null && nowMs !== null ? ` (${coarse((nowMs - since) / 1000)})` : ""),
            ),
            counts ? null : h("span", { class: "nc" }, " not counted"),
          );
        }),
      ),
    );
  } else if (win) {
    parts.push(h("div", { class: "row-present muted" }, "Nobody there"));
  }

  const suggested = state === "at_risk" && item.suggestion ? item.suggestion.units || [] : null;
  if (suggested) {
    parts.push(
      suggested.length
        ? h(
            "div",
            { class: "row-suggested" },
            h("span", { class: "suggested-label" }, "Send:"),
            h(
              "ol",
              { class: "suggested-units", "aria-label": "Suggested units" },
              suggested.map((u) =>
              h(
                "li",
                {
                  class: `suggested-unit type-${cssToken(u.unit_type || "unknown")}${u.busy ? " busy" : ""}`,
                  dataset: { unitId: u.unit_id },
                  title: `last fix ${duration(u.fix_age_s)} ago${u.busy ? "; busy in another hot spot still short" : ""}`,
                },
                h("span", { class: "unit-type" }, unitLabel(u.unit_type)),
                ` ${u.unit_id}`,
                h("span", { class: "dist" }, ` ${Math.round(u.distance_m)} m (~${Math.max(1, Math.ceil(u.eta_minutes))} min)`),
                u.busy ? h("span", { class: "busy-tag" }, " busy") : null,
              ),
              ),
            ),
          )
        : h("div", { class: "row-suggested muted" }, "No eligible unit with a recent fix"),
    );
  }

  row.replaceChildren(
    h("div", { class: "badge" }, STATES[state].tag),
    h("div", { class: "row-main" }, parts),
  );
  row.setAttribute("aria-label", `${item.id} ${item.name || ""}: ${STATES[state].label}`);
}

// ---------------------------------------------------------------------------------------------
// Units list

function renderUnits(units) {
  const list = $("units");
  const sorted = [...units].sort(
    (a, b) => Number(a.stale) - Number(b.stale) || String(a.unit_id).localeCompare(String(b.unit_id)),
  );
  const live = sorted.filter((u) => !u.stale).length;
  $("units-count").textContent = units.length ? `${live} reporting, ${units.length - live} stale` : "";
  if (!sorted.length) {
    list.replaceChildren(h("li", { class: "empty" }, "No units reporting yet."));
    return;
  }
  list.replaceChildren(
    ...sorted.map((u) => {
      const where = Object.keys(u.present_in || {});
      return h(
        "li",
        {
          class: `unit type-${cssToken(u.unit_type || "unknown")}${u.stale ? " stale" : ""}`,
          dataset: { unitId: u.unit_id },
        },
        h("span", { class: "unit-type" }, unitLabel(u.unit_type)),
        h("span", { class: "unit-id" }, u.unit_id),
        h("span", { class: "unit-where" }, where.length ? where.join(", ") : "–"),
        h(
          "span",
          { class: "unit-age" },
          u.stale ? `stale, ${duration(u.age_s)}` : `fix ${duration(u.age_s)} ago`,
        ),
      );
    }),
  );
}

// ---------------------------------------------------------------------------------------------
// Feed

function feedKey(item) {
  const e = item.event || {};
  const id = e.event_id || e.alert_id;
  return id ? `${item.kind}:${id}` : `${item.kind}:${JSON.stringify(e)}`;
}

function addFeed(items, { replace = false } = {}) {
  if (replace) {
    const fresh = [];
    const keys = new Set();
    for (const item of items) {
      const key = feedKey(item);
      if (!keys.has(key)) {
        keys.add(key);
        fresh.push({ ...item, key });
      }
    }
    // keep anything the stream delivered that the snapshot did not have yet
    for (const old of model.feed) {
      if (!keys.has(old.key) && old.viaStream) {
        keys.add(old.key);
        fresh.push(old);
      }
    }
    model.feed = fresh;
    model.feedKeys = keys;
  } else {
    for (const item of items) {
      const key = feedKey(item);
      if (model.feedKeys.has(key)) continue;
      model.feedKeys.add(key);
      model.feed.push({ ...item, key, viaStream: true });
    }
  }
  while (model.feed.length > FEED_LIMIT) model.feedKeys.delete(model.feed.shift().key);
  renderFeed();
}

function describe(item) {
  const e = item.event || {};
  const where = hotspotName(e.hotspot_id);
  const who = `${e.unit_id} (${e.unit_type || "unknown"})`;
  if (item.kind === "geofence") {
    if (e.type === "enter") return { tag: "ENTER", ts: e.ts, text: `${who} entered ${where}` };
    const why = { left: "left", signal_lost: "signal lost", hotspot_removed: "hot spot removed" };
    return {
      tag: "EXIT",
      ts: e.ts,
      text: `${who} left ${where}${e.reason && e.reason !== "left" ? ` — ${why[e.reason] || e.reason}` : ""}`,
    };
  }
  if (item.kind === "dwell") {
    return {
      tag: "VISIT",
      ts: e.exit_ts,
      text: `${who} at ${where}: ${duration(e.duration_s)} (${hm(e.enter_ts)}–${hm(e.exit_ts)})`,
    };
  }
  if (item.kind === "alert") {
    const mins = `${roundMinutes(e.covered_minutes)} of ${e.required_minutes} min`;
    const win = `${hm(e.window_start)}–${hm(e.window_end)}`;
    switch (e.type) {
      case "met":
        return { tag: "MET", ts: e.ts, text: `${where}: requirement met, ${mins} (window ${win})` };
      case "at_risk":
        return {
          tag: "AT RISK",
          ts: e.ts,
          text: `${where}: ${mins} done, window ends ${hm(e.window_end)} — send someone`,
        };
      case "gap":
        return { tag: "GAP", ts: e.ts, text: `${where}: window ${win} ended with ${mins}` };
      case "co_patrol": {
        const units = (e.unit_ids || [])
          .map((u, i) => `${u}${e.unit_types && e.unit_types[i] ? ` (${e.unit_types[i]})` : ""}`)
          .join(" + ");
        return {
          tag: "CO-PATROL",
          ts: e.ts,
          text: `${where}: ${units} patrolling together — services must stay separate`,
        };
      }
      default:
        return { tag: String(e.type || "ALERT").toUpperCase(), ts: e.ts, text: where };
    }
  }
  return { tag: String(item.kind || "EVENT").toUpperCase(), ts: e.ts, text: where };
}

function renderFeed() {
  const list = $("feed");
  if (!model.feed.length) {
    list.replaceChildren(h("li", { class: "empty" }, "No events yet."));
    return;
  }
  list.replaceChildren(
    ...[...model.feed].reverse().map((item) => {
      const d = describe(item);
      const type = cssToken(item.event?.type || item.kind);
      return h(
        "li",
        { class: `feed-item kind-${cssToken(item.kind)} type-${type}` },
        h("time", { class: "feed-time" }, hms(d.ts)),
        h("span", { class: "feed-tag" }, d.tag),
        h("span", { class: "feed-text" }, d.text),
      );
    }),
  );
}

// ---------------------------------------------------------------------------------------------
// Header: clock, summary, legend, connection

function renderHeader() {
  const nowMs = parseTs(model.now);
  $("clock").textContent = nowMs === null ? "--:--:--" : `${fmt.day.format(nowMs)} ${fmt.hms.format(nowMs)}`;
  if (nowMs !== null) $("clock").setAttribute("datetime", new Date(nowMs).toISOString());
  $("tz").textContent = nowMs === null ? timeZone : zoneName(nowMs);

  const counts = {};
  for (const item of model.hotspots.values()) {
    const state = knownState(item.state);
    counts[state] = (counts[state] || 0) + 1;
  }
  $("summary").replaceChildren(
    ...Object.keys(STATES)
      .filter((s) => counts[s])
      .map((s) => h("span", { class: `pill state-${s}` }, h("b", {}, String(counts[s])), ` ${STATES[s].label}`)),
  );
  const urgent = (counts.at_risk || 0) + (counts.gap || 0);
  document.title = `${urgent ? `(${urgent}) ` : ""}Hot spot patrols · control room`;
}

function renderLegend() {
  const staleAfter = model.config && Number(model.config.stale_after_s);
  $("legend").replaceChildren(
    ...Object.entries(STATES)
      .filter(([state]) => state !== "unknown")
      .map(([state, s]) =>
      h(
        "li",
        { class: `state-${state}` },
        h("span", { class: "swatch" }),
        h("b", {}, s.label),
        h("span", { class: "meaning" }, ` ${s.meaning}`),
      ),
    ),
    h(
      "li",
      { class: "legend-stale" },
      h("span", { class: "swatch unit" }),
      h("b", {}, "Grey unit"),
      h("span", { class: "meaning" }, staleAfter ? ` no fix for ${coarse(staleAfter)}` : " no recent fix"),
    ),
  );
}

let lastStateWallClock = null;

function setConnection(status) {
  const body = document.body;
  control.connected = status === "live";
  body.classList.toggle("connecting", status === "connecting");
  body.classList.toggle("disconnected", status === "reconnecting");
  const conn = $("conn");
  conn.className = `conn conn-${status}`;
  conn.textContent = { live: "● Live", connecting: "Connecting…", reconnecting: "Reconnecting…" }[status];
  const banner = $("banner");
  if (status === "reconnecting") {
    const asOf = model.now ? ` Showing the picture as of ${hms(model.now)}.` : "";
    banner.textContent = `Connection to the worker lost — reconnecting…${asOf}`;
    banner.hidden = false;
  } else {
    banner.hidden = true;
  }
}

// ---------------------------------------------------------------------------------------------
// Data flow

function applyConfig(config) {
  model.config = config;
  if (config.timezone && config.timezone !== timeZone) {
    timeZone = config.timezone;
    fmt = makeFormatters(timeZone);
  }
  $("clock-label").textContent = config.clock === "event" ? "Event time" : "Live";
  applyTiles(config);
  renderLegend();
}

function applyHotspots(payload) {
  const items = payload.hotspots || [];
  const fresh = new Map();
  for (const item of items) fresh.set(item.id, item);
  model.hotspots = fresh;
  if (payload.now !== undefined) model.now = payload.now;
  showUnreachable(payload.unreachable);
  drawHotspots(items);
  drawSuggestions(items);
  renderBoard(items);
  renderHeader();
}

function showUnreachable(peers) {
  const el = $("partial");
  const list = Array.isArray(peers) ? peers : [];
  el.hidden = list.length === 0;
  el.textContent = list.length
    ? `${list.length} worker${list.length > 1 ? "s" : ""} not answering — part of the picture is missing (${list.join(", ")})`
    : "";
}

function applyState(payload) {
  model.now = payload.now ?? model.now;
  showUnreachable(payload.unreachable);
  const items = payload.hotspots || [];
  const known = model.hotspots;
  const fresh = new Map();
  let changed = items.length !== known.size;
  for (const item of items) {
    const old = known.get(item.id);
    if (!old) changed = true;
    fresh.set(item.id, { ...item, geometry: item.geometry ?? old?.geometry });
    styleHotspot(item);
  }
  // A hot spot set that differs from the one drawn: fetch the geometry again.
  if (changed) scheduleResync();
  model.hotspots = fresh;
  renderBoard(items);
  const units = payload.units || [];
  model.units = new Map(units.map((u) => [u.unit_id, u]));
  drawUnits(units);
  drawSuggestions(items);
  renderUnits(units);
  renderHeader();
  lastStateWallClock = Date.now();
  control.lastStateAt = lastStateWallClock;
  control.stateCount += 1;
  control.ready = true;
}

async function loadSnapshot() {
  const [config, hotspots, events] = await Promise.all([
    getJson("api/config"),
    getJson("api/hotspots"),
    getJson("api/events", { limit: FEED_LIMIT }),
  ]);
  applyConfig(config);
  applyHotspots(hotspots);
  addFeed(events.events || [], { replace: true });
}

let resyncing = null;
function scheduleResync() {
  if (resyncing) return;
  resyncing = loadSnapshot()
    .catch((err) => {
      control.error = String(err);
    })
    .finally(() => {
      resyncing = null;
    });
}

let source = null;
let interrupted = false; // set by any stream error: refetch everything once it is back
let retryMs = 1000;
let retryTimer = null;

function connect() {
  clearTimeout(retryTimer);
  if (source) source.close();
  const es = new EventSource(apiUrl("api/stream"));
  source = es;
  es.addEventListener("open", () => {
    if (source !== es) return;
    retryMs = 1000;
    lastStateWallClock = Date.now();
    setConnection("live");
    // After an interruption the worker may have restarted with another file: refetch all.
    if (interrupted) scheduleResync();
    interrupted = false;
  });
  es.addEventListener("state", (message) => {
    if (source !== es) return;
    if (!control.connected) setConnection("live");
    applyState(JSON.parse(message.data));
  });
  es.addEventListener("feed", (message) => {
    if (source !== es) return;
    const item = JSON.parse(message.data);
    addFeed([item]);
    if (item.kind === "alert" && item.event && item.event.hotspot_id) flashRow(item.event.hotspot_id);
  });
  es.addEventListener("error", () => {
    if (source !== es) return;
    interrupted = true;
    setConnection("reconnecting");
    if (es.readyState === EventSource.CLOSED) {
      // The browser gave up (e.g. an HTTP error while the worker was starting): retry ourselves.
      retryTimer = setTimeout(connect, retryMs);
      retryMs = Math.min(MAX_RETRY_MS, retryMs * 2);
    }
  });
}

function flashRow(id) {
  const row = rows.get(id);
  if (!row) return;
  row.classList.remove("flash");
  void row.offsetWidth; // restart the animation
  row.classList.add("flash");
}

function watchdog() {
  // A connection that is open but silent (a half-open socket, a stuck proxy) is no connection.
  if (control.connected && lastStateWallClock && Date.now() - lastStateWallClock > WATCHDOG_MS) {
    interrupted = true;
    setConnection("reconnecting");
    connect();
  }
}

async function boot() {
  if (!window.L) {
    control.error = "Leaflet did not load";
    document.body.classList.add("failed");
    $("banner").textContent = "The map library did not load (static/vendor/leaflet/leaflet.js).";
    $("banner").hidden = false;
    return;
  }
  setConnection("connecting");
  renderLegend();
  initMap();
  let delay = 1000;
  for (;;) {
    try {
      await loadSnapshot();
      break;
    } catch (err) {
      control.error = String(err);
      setConnection("reconnecting");
      await sleep(delay);
      delay = Math.min(MAX_RETRY_MS, delay * 2);
    }
  }
  connect();
  setInterval(watchdog, 1000);
}

boot();
