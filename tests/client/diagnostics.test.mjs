// Unit tests for the client's path diagnostics (client/diagnostics.js): no browser, no server.
import { test } from "node:test";
import assert from "node:assert/strict";
import { describePath, mediaTotals } from "../../client/diagnostics.js";

// A getStats() report: a Map of id -> stats object.
const report = (...stats) => new Map(stats.map((s) => [s.id, s]));
const transport = { id: "T", type: "transport", selectedCandidatePairId: "P" };
const pair = { id: "P", type: "candidate-pair", localCandidateId: "L", remoteCandidateId: "R", state: "succeeded", currentRoundTripTime: 0.0234, availableOutgoingBitrate: 1_500_000 };
const remote = (protocol) => ({ id: "R", type: "remote-candidate", candidateType: "host", protocol, address: "203.0.113.7", port: protocol === "tcp" ? 7881 : 3478 });

test("direct UDP, direct TCP and the relay are told apart", () => {
  const udp = describePath(report(transport, pair, { id: "L", type: "local-candidate", candidateType: "host", protocol: "udp" }, remote("udp")));
  assert.deepEqual(
    { transport: udp.transport, label: udp.label, server: udp.server, rttMs: udp.rttMs, outKbps: udp.outKbps },
    { transport: "udp", label: "direct UDP", server: "203.0.113.7:3478", rttMs: 23, outKbps: 1500 },
  );
  const tcp = describePath(report(transport, pair, { id: "L", type: "local-candidate", candidateType: "host", protocol: "tcp" }, remote("tcp")));
  assert.equal(tcp.transport, "tcp");
  assert.equal(tcp.label, "direct TCP");
  assert.equal(tcp.server, "203.0.113.7:7881");
  const relay = describePath(report(transport, pair, {
    id: "L", type: "local-candidate", candidateType: "relay", protocol: "udp", relayProtocol: "tls", url: "turns:relay.example:443?transport=tcp",
  }, remote("udp")));
  assert.equal(relay.transport, "relay");
  assert.equal(relay.relayProtocol, "tls");
  assert.equal(relay.label, "relay over TLS (turns:relay.example:443?transport=tcp)");
});

test("no selected pair yet is null; a nominated pair stands in for transport stats", () => {
  assert.equal(describePath(report({ ...transport, selectedCandidatePairId: undefined })), null);
  const p = describePath(report({ ...pair, nominated: true }, { id: "L", type: "local-candidate", candidateType: "host", protocol: "tcp" }, remote("tcp")));
  assert.equal(p.transport, "tcp");
});

test("media totals add up inbound and outbound streams", () => {
  assert.deepEqual(mediaTotals(report(
    { id: "a", type: "inbound-rtp", packetsReceived: 10, packetsLost: 2, framesDecoded: 3 },
    { id: "b", type: "inbound-rtp", packetsReceived: 5, packetsLost: -1 },
    { id: "c", type: "outbound-rtp", packetsSent: 7 },
  )), { packetsIn: 15, packetsLost: 2, framesDecoded: 3, packetsOut: 7 });
});
