// Connection diagnostics: which path media takes to the server (direct UDP, direct TCP, or the
// TURN relay, and over what) and how it fares, for participants and district IT staff. Reads
// RTCPeerConnection.getStats() only. The browser chooses the path itself: the server's UDP
// candidate ranks first, its TCP candidate next, the relay (from `welcome.ice_servers`) last.
// Self-contained: it renders its own collapsible panel, styled inline.

/**
 * The selected path from a getStats() report (a Map-like of stats objects), or null before one is chosen.
 * @param {{forEach: (f: (s: any) => void) => void}} report
 */
export function describePath(report) {
  const byId = new Map();
  /** @type {Map<string, any>} */
  const seen = byId;
  report.forEach((/** @type {any} */ s) => seen.set(s.id, s));
  let pair = null;
  for (const s of byId.values()) {
    if (s.type === "transport" && s.selectedCandidatePairId) pair = byId.get(s.selectedCandidatePairId) ?? pair;
  }
  // Browsers without transport stats mark the pair in use instead.
  if (!pair) {
    for (const s of byId.values()) {
      if (s.type === "candidate-pair" && s.state === "succeeded" && (s.nominated || s.selected)) pair = s;
    }
  }
  if (!pair) return null;
  const local = byId.get(pair.localCandidateId) ?? {};
  const remote = byId.get(pair.remoteCandidateId) ?? {};
  const relayed = local.candidateType === "relay" || remote.candidateType === "relay";
  const transport = relayed ? "relay" : (local.protocol ?? remote.protocol ?? "udp");
  const relayProtocol = relayed ? (local.relayProtocol ?? local.protocol ?? "udp") : null;
  const label = relayed
    ? `relay over ${relayProtocol.toUpperCase()}${local.url ? ` (${local.url})` : ""}`
    : `direct ${transport.toUpperCase()}`;
  return {
    transport, // "udp" | "tcp" | "relay"
    relayProtocol, // "udp" | "tcp" | "tls" | null
    label,
    server: remote.address != null ? `${remote.address}:${remote.port}` : null,
    localType: local.candidateType ?? null,
    rttMs: pair.currentRoundTripTime != null ? Math.round(pair.currentRoundTripTime * 1000) : null,
    outKbps: pair.availableOutgoingBitrate != null ? Math.round(pair.availableOutgoingBitrate / 1000) : null,
  };
}

/**
 * Media totals from a getStats() report: packets in and lost, frames decoded.
 * @param {{forEach: (f: (s: any) => void) => void}} report
 */
export function mediaTotals(report) {
  let packetsIn = 0;
  let packetsLost = 0;
  let framesDecoded = 0;
  let packetsOut = 0;
  report.forEach((/** @type {any} */ s) => {
    if (s.type === "inbound-rtp") {
      packetsIn += s.packetsReceived ?? 0;
      packetsLost += Math.max(0, s.packetsLost ?? 0);
      framesDecoded += s.framesDecoded ?? 0;
    } else if (s.type === "outbound-rtp") {
      packetsOut += s.packetsSent ?? 0;
    }
  });
  return { packetsIn, packetsLost, framesDecoded, packetsOut };
}

function panel() {
  let el = document.getElementById("diagnostics");
  if (el) return el;
  el = document.createElement("details");
  el.id = "diagnostics";
  // In the control bar when the page has one (it must not cover the bar's buttons, least of
  // all on a phone); the details open upwards from it. Elsewhere, a corner of the page.
  const bar = document.getElementById("controlbar");
  el.style.cssText = (bar ? "position:relative;margin-left:auto;align-self:center;color:#111;" : "position:fixed;right:.5rem;bottom:.5rem;z-index:10;")
    + "max-width:22rem;padding:.3rem .6rem;background:rgba(255,255,255,.95);border:1px solid #ccd;border-radius:6px;font-size:.8rem";
  const summary = document.createElement("summary");
  summary.textContent = "Connection";
  const path = document.createElement("span");
  path.id = "diag-path";
  path.style.marginLeft = ".4rem";
  summary.append(path);
  const list = document.createElement("dl");
  list.id = "diag-details";
  list.style.cssText = "display:grid;grid-template-columns:auto 1fr;gap:0 .6rem;margin:.3rem 0 0"
    + (bar ? ";position:absolute;right:0;bottom:100%;min-width:16rem;padding:.4rem .6rem;background:white;border:1px solid #ccd;border-radius:6px" : "");
  el.append(summary, list);
  (bar ?? document.body).append(el);
  return el;
}

/**
 * @param {ReturnType<typeof describePath>} path @param {ReturnType<typeof mediaTotals>} totals
 * @param {string} state
 */
function render(path, totals, state) {
  const el = panel();
  const label = path ? path.label : state === "failed" ? "no path: media blocked" : "connecting…";
  const span = /** @type {HTMLElement} */ (el.querySelector("#diag-path"));
  span.textContent = label;
  span.dataset.transport = path?.transport ?? "";
  const rows = [
    ["Path", label],
    ["Server", path?.server ?? "–"],
    ["Round trip", path?.rttMs != null ? `${path.rttMs} ms` : "–"],
    ["Send estimate", path?.outKbps != null ? `${path.outKbps} kbit/s` : "–"],
    ["Packets in", `${totals.packetsIn} (${totals.packetsLost} lost)`],
    ["Packets out", String(totals.packetsOut)],
    ["Frames decoded", String(totals.framesDecoded)],
    ["ICE state", state],
  ];
  const list = /** @type {HTMLElement} */ (el.querySelector("#diag-details"));
  // Update by key: the panel may be open while it refreshes.
  for (const [name, value] of rows) {
    let dd = /** @type {HTMLElement|null} */ (list.querySelector(`dd[data-key="${name}"]`));
    if (!dd) {
      const dt = document.createElement("dt");
      dt.textContent = name;
      dd = document.createElement("dd");
      dd.dataset.key = name;
      dd.style.margin = "0";
      list.append(dt, dd);
    }
    if (dd.textContent !== value) dd.textContent = value;
  }
}

/**
 * Shows `pc`'s path in the panel, refreshed every `everyMs` until the connection closes.
 * @param {RTCPeerConnection} pc
 */
export function watchPath(pc, everyMs = 2000) {
  const tick = async () => {
    if (pc.connectionState === "closed") {
      clearInterval(timer);
      return;
    }
    try {
      const report = await pc.getStats();
      render(describePath(report), mediaTotals(report), pc.iceConnectionState);
    } catch {
      // A closing connection may refuse stats; the next tick stops.
    }
  };
  const timer = setInterval(tick, everyMs);
  pc.addEventListener("iceconnectionstatechange", tick);
  tick();
  return () => clearInterval(timer);
}
